//! The process's memory, as the kernel reports it in `/proc/self/status` (Linux; zeros
//! elsewhere).
//!
//! Used for `/debug/vars` `memstats` (rqlite shows Go's runtime.MemStats there) and
//! `sqlraft_process_resident_memory_bytes`. There is no garbage collector and the allocator
//! keeps no statistics, so only what the kernel knows is reported; the mapping to Go's names
//! is in `docs/design/metrics.md`.

/// Bytes, from `/proc/self/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// VmRSS: resident memory.
    pub rss: u64,
    /// VmHWM: the most resident memory so far.
    pub peak_rss: u64,
    /// RssAnon: resident anonymous memory (the heap and thread stacks in use).
    pub rss_anon: u64,
    /// VmSize: the whole address space.
    pub virtual_size: u64,
    /// VmData: data and anonymous mappings (what the allocator obtained).
    pub data: u64,
    /// VmStk: the main thread's stack.
    pub stack: u64,
}

/// What SQLite itself holds, in bytes, for every connection of the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SqliteMemory {
    /// Everything SQLite allocated: page caches, schemas, prepared statements.
    pub used: u64,
    /// Of that, the page caches: the database's own pages held in memory (issue 12's memory
    /// goal counts RSS without them).
    pub page_cache: u64,
}

/// SQLite's own counters (`sqlite3_status64`; with no page-cache buffer configured, every
/// page-cache allocation is counted as "overflow").
pub fn sqlite_memory() -> SqliteMemory {
    let read = |op| {
        let (mut cur, mut hi) = (0i64, 0i64);
        // SAFETY: sqlite3_status64 only writes the two out-parameters; both are valid.
        let rc = unsafe { rusqlite::ffi::sqlite3_status64(op, &mut cur, &mut hi, 0) };
        if rc == rusqlite::ffi::SQLITE_OK {
            u64::try_from(cur).unwrap_or(0)
        } else {
            0
        }
    };
    SqliteMemory {
        used: read(rusqlite::ffi::SQLITE_STATUS_MEMORY_USED),
        page_cache: read(rusqlite::ffi::SQLITE_STATUS_PAGECACHE_OVERFLOW),
    }
}

/// Reads the current figures; a field the kernel does not report is 0.
pub fn memory() -> Memory {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| parse(&s))
        .unwrap_or_default()
}

/// Parses `/proc/<pid>/status` (`VmRSS:     1234 kB` lines).
pub fn parse(status: &str) -> Memory {
    let mut m = Memory::default();
    for line in status.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let field = match key {
            "VmRSS" => &mut m.rss,
            "VmHWM" => &mut m.peak_rss,
            "RssAnon" => &mut m.rss_anon,
            "VmSize" => &mut m.virtual_size,
            "VmData" => &mut m.data,
            "VmStk" => &mut m.stack,
            _ => continue,
        };
        let mut words = rest.split_whitespace();
        let n: u64 = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let unit = match words.next() {
            Some("kB") => 1024,
            _ => 1,
        };
        *field = n.saturating_mul(unit);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kilobyte_lines_become_bytes() {
        let m = parse("Name:\tsqlraftd\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\nRssAnon:\t 512 kB\nVmStk:\t132 kB\nbogus\n");
        assert_eq!(m.rss, 1 << 20);
        assert_eq!(m.peak_rss, 2 << 20);
        assert_eq!(m.rss_anon, 512 << 10);
        assert_eq!(m.stack, 132 << 10);
        assert_eq!(m.virtual_size, 0);
    }

    #[test]
    fn this_process_has_resident_memory() {
        if cfg!(target_os = "linux") {
            assert!(memory().rss > 0);
        }
    }
}

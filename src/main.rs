//! `sqlraftd`: argv -> Config -> tracing -> Node::start -> signal -> shutdown.

use std::alloc::{GlobalAlloc, Layout};
use std::process::ExitCode;

use sqlraft::config::Config;

// Request handling allocates many small short-lived objects; mimalloc handles that pattern
// with less contention than glibc's malloc (measured: docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: Allocator = Allocator;

// mimalloc's `mi_option_set`, `mi_malloc`, `mi_zalloc` and `mi_realloc`, declared here: the
// `mimalloc` crate exposes options only behind a feature that pulls in another crate, and its
// allocator calls only the aligned entry points. The symbols are in the mimalloc it links.
extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    fn mi_malloc(size: usize) -> *mut std::ffi::c_void;
    fn mi_zalloc(size: usize) -> *mut std::ffi::c_void;
    fn mi_realloc(p: *mut std::ffi::c_void, newsize: usize) -> *mut std::ffi::c_void;
}

/// mimalloc, asked for a plain block whenever that is aligned enough, as Rust's `System`
/// allocator asks `malloc`. `mimalloc::MiMalloc` calls `mi_malloc_aligned` for every
/// allocation, and mimalloc v3 serves that from its free list only when the next free block
/// happens to be aligned and its page has one; otherwise it over-allocates by the alignment,
/// into the next size class (so the right class's pages are never made). Measured (issue 12, callgrind, one node, `weak` point reads):
/// ~10 allocations per read took that path.
struct Allocator;

/// `mi_malloc`'s guaranteed alignment for blocks of at least this size (`MI_MAX_ALIGN_SIZE`,
/// mimalloc's `types.h`: blocks are two machine words apart on 64-bit targets); smaller blocks
/// are aligned to their size rounded up to a word.
const MI_MAX_ALIGN_SIZE: usize = 16;

fn plain(align: usize, size: usize) -> bool {
    align <= MI_MAX_ALIGN_SIZE && align <= size
}

// SAFETY: every block comes from mimalloc, through `mi_malloc`/`mi_zalloc`/`mi_realloc` only
// when `plain` holds (then the block is aligned to at least `align`, see MI_MAX_ALIGN_SIZE)
// and through `MiMalloc` otherwise; mimalloc frees and reallocates blocks of both kinds.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            mi_malloc(layout.size()).cast()
        } else {
            mimalloc::MiMalloc.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            mi_zalloc(layout.size()).cast()
        } else {
            mimalloc::MiMalloc.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        mimalloc::MiMalloc.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(layout.align(), new_size) {
            mi_realloc(ptr.cast(), new_size).cast()
        } else {
            mimalloc::MiMalloc.realloc(ptr, layout, new_size)
        }
    }
}

/// `mi_option_purge_delay` in the bundled mimalloc v3 (`mimalloc.h`, enum `mi_option_e`).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Freed memory goes back to the OS at once instead of after mimalloc's default 10 ms delay:
/// a delayed purge only runs when the same thread allocates or frees again, so memory freed
/// by a thread that then went idle (a large request's body, a read pool thread) stayed
/// resident. Measured (issue 12, `scripts/memory.sh`): a refused 1-million-statement request
/// left the leader 50% larger, now 1%; no throughput change within noise.
/// An operator's own `MIMALLOC_PURGE_DELAY` wins.
fn return_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: plain setter of a process-wide option; any value is valid for this option
    // (0 = purge immediately), and it may be called at any time from any thread.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}
use sqlraft::node::Node;

/// Sets up the log on stderr: the filter from `-log-level`/`-raft-log-level` or the
/// environment, text or JSON lines, colours only when a person is watching a terminal.
fn init_tracing(cfg: &Config) -> Result<(), String> {
    use std::io::IsTerminal;
    let env = ["SQLRAFT_LOG", "RUST_LOG"]
        .iter()
        .find_map(|k| std::env::var(k).ok());
    let directives = cfg.log.filter(&cfg.raft.log_level, env.as_deref());
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .map_err(|e| format!("invalid log filter {directives:?}: {e}"))?;
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log.format == "json" {
        // One flat object per line: what log shippers index without a parsing rule.
        fmt.json().flatten_event(true).init();
    } else {
        // Escape codes in a file or a pipe are noise for whoever reads it later.
        let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        fmt.with_ansi(ansi).init();
    }
    Ok(())
}

/// The first thing an operator needs: where the API is and how to reach it with the shell
/// (and which address other nodes `-join`).
fn banner(node: &Node) -> String {
    let me = node.info();
    let (host, port) = sqlraft::config::split_host_port(&me.api_addr)
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .unwrap_or_else(|| (me.api_addr.clone(), String::new()));
    let scheme = if me.api_https { " -s https" } else { "" };
    format!(
        "sqlraftd {} listening: HTTP API {}, Raft {} (other nodes -join this), connect with: sqlraft -H {host} -p {port}{scheme}",
        sqlraft::VERSION,
        me.api_url(),
        me.raft_addr,
    )
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn main() -> ExitCode {
    return_freed_memory_promptly();
    let cfg = match Config::load(std::env::args(), |p| std::fs::read_to_string(p)) {
        Ok(c) => c,
        Err(sqlraft::config::ConfigError::Args(e))
            if e.kind() == clap::error::ErrorKind::DisplayHelp =>
        {
            print!("{}", sqlraft::config::help());
            return ExitCode::SUCCESS;
        }
        Err(sqlraft::config::ConfigError::Args(e)) => {
            // Version goes to stdout with success; usage errors to stderr.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
        Err(e) => {
            eprintln!("sqlraftd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_tracing(&cfg) {
        eprintln!("sqlraftd: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sqlraftd: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let node = match Node::start(cfg).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("sqlraftd: {e}");
                return ExitCode::FAILURE;
            }
        };
        // One structured line that scripts and tests read the bound addresses from.
        println!(
            "{{\"event\":\"started\",\"node_id\":{},\"http_addr\":\"{}\",\"raft_addr\":\"{}\",\"api_adv_addr\":{},\"raft_adv_addr\":{}}}",
            serde_json::Value::from(node.info().id.clone()),
            node.http_addr(),
            node.raft_addr(),
            serde_json::Value::from(node.info().api_addr.clone()),
            serde_json::Value::from(node.info().raft_addr.clone()),
        );
        tracing::info!("{}", banner(&node));
        // A node that cannot become part of a cluster (join attempts used up, bootstrap
        // timeout) exits with an error, as rqlited does; it served its API meanwhile.
        let code = tokio::select! {
            _ = wait_for_signal() => ExitCode::SUCCESS,
            r = async {
                match node.formed().await {
                    Err(e) => e,
                    // Part of a cluster: from here only a signal stops the node.
                    Ok(()) => std::future::pending().await,
                }
            } => {
                eprintln!("sqlraftd: {r}");
                ExitCode::FAILURE
            }
        };
        tracing::info!("shutting down");
        node.shutdown().await;
        code
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every block the allocator hands out is aligned as asked, whichever path served it, and
    /// keeps its bytes through a reallocation that crosses size classes and paths.
    #[test]
    fn blocks_are_aligned_and_keep_their_bytes() {
        let a = Allocator;
        for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [
                1usize, 3, 8, 12, 16, 24, 40, 48, 100, 1000, 1024, 5000, 70_000,
            ] {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // Many at once, so blocks come from the middle of pages, not just the first.
                let blocks: Vec<*mut u8> = (0..64)
                    .map(|i| {
                        // SAFETY: non-zero size; the block is freed below with this layout.
                        let p = unsafe {
                            if i % 2 == 0 {
                                a.alloc(layout)
                            } else {
                                a.alloc_zeroed(layout)
                            }
                        };
                        assert!(!p.is_null(), "size {size} align {align}");
                        assert_eq!(p as usize % align, 0, "size {size} align {align}");
                        if i % 2 == 1 {
                            // SAFETY: `size` bytes were just allocated at `p`.
                            let zeroed = unsafe { std::slice::from_raw_parts(p, size) };
                            assert!(zeroed.iter().all(|b| *b == 0), "size {size}");
                        }
                        // SAFETY: as above.
                        unsafe { std::ptr::write_bytes(p, 0xA5, size) };
                        p
                    })
                    .collect();
                for p in blocks {
                    let grown = size * 3 + 7;
                    // SAFETY: `p` came from `a` with `layout`; `grown` is non-zero.
                    let q = unsafe { a.realloc(p, layout, grown) };
                    assert!(!q.is_null());
                    assert_eq!(
                        q as usize % align,
                        0,
                        "realloc {size} -> {grown} align {align}"
                    );
                    // SAFETY: the first `size` bytes were copied to the grown block.
                    let kept = unsafe { std::slice::from_raw_parts(q, size) };
                    assert!(kept.iter().all(|b| *b == 0xA5), "realloc {size} -> {grown}");
                    let grown_layout = Layout::from_size_align(grown, align).unwrap();
                    // Shrunk below the alignment, the block must still be aligned as asked
                    // (a plain `mi_realloc` to 8 bytes may move it to an 8-byte block).
                    let small = size.min(1 + size % 8);
                    // SAFETY: `q` is the live block of `grown_layout`; `small` is non-zero.
                    let r = unsafe { a.realloc(q, grown_layout, small) };
                    assert!(!r.is_null());
                    assert_eq!(
                        r as usize % align,
                        0,
                        "realloc {grown} -> {small} align {align}"
                    );
                    // SAFETY: the first `small` bytes were kept.
                    let kept = unsafe { std::slice::from_raw_parts(r, small) };
                    assert!(
                        kept.iter().all(|b| *b == 0xA5),
                        "realloc {grown} -> {small}"
                    );
                    let small_layout = Layout::from_size_align(small, align).unwrap();
                    // SAFETY: `r` is the live block of `small_layout`.
                    unsafe { a.dealloc(r, small_layout) };
                }
            }
        }
    }
}

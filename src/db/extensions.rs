//! The operator's SQLite extensions (`-extensions-path`), gathered at start.
//!
//! Owns: copying the given files, the files of the given directories, and the files of the
//! given zip archives into one directory of the node's (`<data>/extensions`, emptied at every
//! start, as rqlite does), so every connection loads the same files for the life of the
//! process even if the originals change.
//! Does not: load them (`conn.rs` does, into every connection, through the C API only).

use std::path::{Path, PathBuf};

use super::DbError;

/// Gathers the extensions of `sources` into `dir` and returns their files, sorted by name.
/// Hidden files (`.name`) and subdirectories of a directory are skipped; a zip archive with
/// subdirectories is refused (as rqlite refuses it). A name given twice is an error: one
/// file would silently replace the other.
pub fn stage(sources: &[PathBuf], dir: &Path) -> Result<Vec<PathBuf>, DbError> {
    let io = |p: &Path, e: std::io::Error| DbError::Io(format!("{}: {e}", p.display()));
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut staged = Vec::new();
    let mut add = |name: &str, from: &mut dyn std::io::Read| -> Result<(), DbError> {
        let to = dir.join(name);
        if to.exists() {
            return Err(DbError::Io(format!(
                "-extensions-path: two extensions are named {name}"
            )));
        }
        let mut f = std::fs::File::create(&to).map_err(|e| io(&to, e))?;
        std::io::copy(from, &mut f).map_err(|e| io(&to, e))?;
        staged.push(to);
        Ok(())
    };
    for src in sources {
        let meta = std::fs::metadata(src)
            .map_err(|e| DbError::Io(format!("-extensions-path: {}: {e}", src.display())))?;
        if meta.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(src)
                .map_err(|e| io(src, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && !hidden(p))
                .collect();
            files.sort();
            for f in files {
                let name = file_name(&f)?;
                let mut r = std::fs::File::open(&f).map_err(|e| io(&f, e))?;
                add(&name, &mut r)?;
            }
        } else if is_zip(src) {
            let file = std::fs::File::open(src).map_err(|e| io(src, e))?;
            let bad = |e: zip::result::ZipError| {
                DbError::Io(format!("-extensions-path: {}: {e}", src.display()))
            };
            let mut archive = zip::ZipArchive::new(file).map_err(bad)?;
            for i in 0..archive.len() {
                let mut entry = archive.by_index(i).map_err(bad)?;
                let name = entry.name().to_string();
                if entry.is_dir() || name.contains('/') || name.contains('\\') {
                    return Err(DbError::Io(format!(
                        "-extensions-path: {}: the zip archive has subdirectories ({name}); \
                         put the extension files at its top level",
                        src.display()
                    )));
                }
                if name.starts_with('.') {
                    continue;
                }
                add(&name, &mut entry)?;
            }
        } else {
            let name = file_name(src)?;
            let mut r = std::fs::File::open(src).map_err(|e| io(src, e))?;
            add(&name, &mut r)?;
        }
    }
    staged.sort();
    Ok(staged)
}

/// The names `/status` reports (`extensions.names`, `store.sqlite3.extensions`).
pub fn names(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect()
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn file_name(p: &Path) -> Result<String, DbError> {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| DbError::Io(format!("-extensions-path: {} names no file", p.display())))
}

/// A zip archive starts with a local file header (or, when empty, the end record).
fn is_zip(p: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && (magic == *b"PK\x03\x04" || magic == *b"PK\x05\x06")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn files_directories_and_zips_are_gathered_in_one_directory() {
        // Steps: a lone file, a directory (with a hidden file and a subdirectory, skipped),
        // a zip archive; all staged by name, sorted; then a zip with a subdirectory refused.
        let t = tempfile::tempdir().unwrap();
        let lone = t.path().join("one.so");
        std::fs::write(&lone, b"1").unwrap();
        let d = t.path().join("dir");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("two.so"), b"2").unwrap();
        std::fs::write(d.join(".hidden"), b"h").unwrap();
        let z = t.path().join("ext.zip");
        let mut w = zip::ZipWriter::new(std::fs::File::create(&z).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        w.start_file("three.so", opts).unwrap();
        w.write_all(b"3").unwrap();
        w.finish().unwrap();
        let out = t.path().join("staged");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("stale.so"), b"old").unwrap();
        let staged = stage(&[lone, d, z], &out).unwrap();
        assert_eq!(names(&staged), ["one.so", "three.so", "two.so"]);
        assert_eq!(std::fs::read(out.join("three.so")).unwrap(), b"3");
        assert!(!out.join("stale.so").exists(), "staging starts empty");

        let bad = t.path().join("bad.zip");
        let mut w = zip::ZipWriter::new(std::fs::File::create(&bad).unwrap());
        w.start_file("lib/four.so", opts).unwrap();
        w.write_all(b"4").unwrap();
        w.finish().unwrap();
        let e = stage(&[bad], &out).unwrap_err().to_string();
        assert!(e.contains("subdirectories"), "{e}");
        assert!(stage(&[t.path().join("nope.so")], &out).is_err());
    }
}

//! `-extensions-path`: a SQLite extension compiled here from C source is loaded at start on
//! every connection of every node, from a file, a directory or a zip archive, while SQL's
//! own `load_extension()` stays refused.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{url_encode, TestCluster};

/// A loadable extension with one function, `rot13(text)`.
const ROT13_C: &str = r#"
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

static void rot13(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const unsigned char *in = sqlite3_value_text(argv[0]);
  int n = sqlite3_value_bytes(argv[0]);
  char *out;
  int i;
  (void)argc;
  if (in == 0) { sqlite3_result_null(ctx); return; }
  out = sqlite3_malloc(n + 1);
  if (out == 0) { sqlite3_result_error_nomem(ctx); return; }
  for (i = 0; i < n; i++) {
    unsigned char c = in[i];
    if (c >= 'a' && c <= 'z') c = 'a' + (c - 'a' + 13) % 26;
    else if (c >= 'A' && c <= 'Z') c = 'A' + (c - 'A' + 13) % 26;
    out[i] = (char)c;
  }
  out[n] = 0;
  sqlite3_result_text(ctx, out, n, sqlite3_free);
}

int sqlite3_extension_init(sqlite3 *db, char **err, const sqlite3_api_routines *api) {
  SQLITE_EXTENSION_INIT2(api);
  (void)err;
  return sqlite3_create_function(db, "rot13", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, 0,
                                 rot13, 0, 0);
}
"#;

/// The directory holding `sqlite3ext.h`: the bundled SQLite's (build.rs passes it on), else
/// the system's (Debian's libsqlite3-dev).
fn sqlite_include_dir() -> PathBuf {
    if let Some(dir) = option_env!("SQLRAFT_SQLITE3_INCLUDE") {
        if Path::new(dir).join("sqlite3ext.h").is_file() {
            return PathBuf::from(dir);
        }
    }
    for dir in ["/usr/include", "/usr/local/include"] {
        if Path::new(dir).join("sqlite3ext.h").is_file() {
            return PathBuf::from(dir);
        }
    }
    panic!("sqlite3ext.h not found: neither libsqlite3-sys's include directory nor /usr/include")
}

/// Compiles the extension into `dir/rot13.so` with the system C compiler.
fn build_rot13(dir: &Path) -> PathBuf {
    let src = dir.join("rot13.c");
    std::fs::write(&src, ROT13_C).expect("write C source");
    let out = dir.join("rot13.so");
    let r = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-I"])
        .arg(sqlite_include_dir())
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .output()
        .expect("run cc");
    assert!(
        r.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_extension_built_from_c_runs_on_every_node_and_sql_cannot_load_one() {
    // Steps: compile rot13.so; give node 0 the file, node 1 a directory holding it, node 2 a
    // zip of it; form the cluster; call rot13() through each node (a local read, so each
    // node's own reader runs it), write with it through a follower (every node's writer
    // applies it) and read the row back everywhere; SQL's load_extension() is refused;
    // /status and the shell's .extensions list it.
    let work = tempfile::tempdir().expect("tempdir");
    let so = build_rot13(work.path());
    let dir = work.path().join("dir");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(&so, dir.join("rot13.so")).expect("copy");
    let zip_path = work.path().join("ext.zip");
    {
        let mut w = zip::ZipWriter::new(std::fs::File::create(&zip_path).expect("zip"));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        w.start_file("rot13.so", opts).expect("zip entry");
        w.write_all(&std::fs::read(&so).expect("read .so"))
            .expect("zip write");
        w.finish().expect("zip finish");
    }
    let sources = [so.clone(), dir.clone(), zip_path.clone()];
    let c = TestCluster::start_with(3, |i, cfg| {
        cfg.db.extensions_path = vec![sources[i].clone()];
    })
    .await;
    let l = c.leader().await;
    for i in 0..3 {
        assert_eq!(
            c.client(i)
                .query_values("SELECT rot13('Hello')", "none")
                .await,
            serde_json::json!([["Uryyb"]]),
            "node {i}"
        );
    }
    let f = c.followers().await[0];
    c.client(l)
        .execute_ok(r#"["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"]"#)
        .await;
    c.client(f)
        .execute_ok(r#"["INSERT INTO t(v) VALUES(rot13('sqlraft'))"]"#)
        .await;
    c.wait_all_see("SELECT v FROM t", &serde_json::json!([["fdyensg"]]))
        .await;

    // Clients cannot load code: the SQL function stays off on readers and the writer.
    let sql = format!("SELECT load_extension('{}')", so.display());
    let read = c
        .client(l)
        .get(&format!("/db/query?level=none&q={}", url_encode(&sql)))
        .await;
    let write = c
        .client(l)
        .post_json("/db/execute", &serde_json::json!([sql]).to_string())
        .await;
    for r in [read, write] {
        assert_eq!(
            r.json()["results"][0]["error"],
            "not authorized",
            "{}",
            r.text()
        );
    }

    for i in 0..3 {
        let st = c.client(i).get("/status").await.json();
        assert_eq!(st["extensions"]["names"], serde_json::json!(["rot13.so"]));
        assert_eq!(
            st["store"]["sqlite3"]["extensions"],
            serde_json::json!(["rot13.so"])
        );
    }
    let api = c.node(l).info().api_addr.clone();
    let port = api.rsplit_once(':').expect("port").1;
    let out = Command::new(env!("CARGO_BIN_EXE_sqlraft"))
        .args(["-p", port, "-e", ".extensions"])
        .output()
        .expect("run the shell");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "rot13.so");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_broken_extension_stops_the_start_with_its_name() {
    // Steps: a path that does not exist, then a file that is not a shared library: each start
    // fails, naming the file.
    let work = tempfile::tempdir().expect("tempdir");
    let bogus = work.path().join("bogus.so");
    std::fs::write(&bogus, b"not a library").expect("write");
    for (path, why) in [
        (work.path().join("missing.so"), "missing.so"),
        (bogus, "bogus.so"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = crate::harness::test_config(dir.path());
        cfg.db.extensions_path = vec![path];
        let e = match sqlraft::node::Node::start(cfg).await {
            Ok(n) => {
                n.shutdown().await;
                panic!("started with a bad extension")
            }
            Err(e) => e.to_string(),
        };
        assert!(e.contains(why), "{e}");
    }
}

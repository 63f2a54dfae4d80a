//! The `sqlraft` shell, driven through a pseudo-terminal against real nodes.

use std::path::Path;
use std::process::Command;

use rexpect::session::{spawn_command, PtySession};

use crate::harness::{TestCluster, TestNode};

/// Starts the shell on a pty with its own history file.
fn shell(args: &[&str], history: &Path) -> PtySession {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sqlraft"));
    cmd.args(args)
        .env("SQLRAFT_HISTFILE", history)
        .env_remove("SQLRAFT_HOST")
        .env_remove("RQLITE_HOST");
    spawn_command(cmd, Some(20_000)).expect("spawn sqlraft")
}

fn port_of(addr: &str) -> String {
    addr.rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .expect("port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_runs_sql_and_every_dot_command() {
    // Steps: a node; the shell connects; SQL (one-line and multi-line), an error, then every
    // dot command that applies to one node; `.exit`; a second shell sees the history.
    let node = TestNode::start().await;
    let addr = node.node.as_ref().unwrap().info().api_addr.clone();
    let port = port_of(&addr);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let prompt = format!("127.0.0.1:{port}> ");
    tokio::task::spawn_blocking(move || {
        let hist = d.join("history");
        let f = |name: &str| d.join(name).to_string_lossy().into_owned();
        let mut p = shell(&["-H", "127.0.0.1", "-p", &port], &hist);
        p.exp_string("Connected to").unwrap();
        p.exp_string(&prompt).unwrap();
        let run = |p: &mut PtySession, line: &str, expect: &str| {
            p.send_line(line).unwrap();
            if !expect.is_empty() {
                p.exp_string(expect)
                    .unwrap_or_else(|e| panic!("{line}: expected {expect:?}: {e}"));
            }
            p.exp_string(&prompt)
                .unwrap_or_else(|e| panic!("{line}: no prompt: {e}"));
        };
        run(
            &mut p,
            "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT)",
            "0 row affected",
        );
        // Multi-line: the statement runs once `;` ends it.
        p.send_line("INSERT INTO people(name)").unwrap();
        p.exp_string(">   ").unwrap();
        run(&mut p, "VALUES('alice'), ('bob');", "2 rows affected");
        run(&mut p, "SELECT * FROM people", "| 2  | bob   |");
        run(&mut p, "SELECT * FROM nosuch", "ERR! no such table: nosuch");
        run(&mut p, ".tables", "| people |");
        run(&mut p, "CREATE INDEX people_name ON people(name)", "");
        run(&mut p, ".schema", "CREATE TABLE people");
        run(&mut p, ".indexes", "CREATE INDEX people_name");
        run(&mut p, ".nodes", "leader: true");
        run(&mut p, ".leader", "api_addr");
        run(&mut p, ".status", "store:");
        run(&mut p, ".ready", "ready");
        run(&mut p, ".expvar", "http:");
        run(&mut p, ".timer on", "");
        run(&mut p, "SELECT COUNT(*) FROM people", "Run Time:");
        run(&mut p, ".timer off", "");
        run(&mut p, ".consistency strong", "");
        run(&mut p, ".consistency", "strong");
        run(&mut p, ".changes off", "");
        run(&mut p, ".changes on", "");
        run(&mut p, ".blobarray on", "");
        run(&mut p, ".mode csv", "");
        run(&mut p, "SELECT name FROM people ORDER BY id", "alice");
        run(&mut p, ".mode json", "");
        run(
            &mut p,
            "SELECT name FROM people WHERE id=1",
            "\"name\": \"alice\"",
        );
        run(&mut p, ".mode line", "");
        run(&mut p, "SELECT name FROM people WHERE id=2", "name = bob");
        run(&mut p, ".mode column", "");
        run(
            &mut p,
            &format!(".backup {}", f("b.sqlite")),
            "backup file written",
        );
        run(
            &mut p,
            &format!(".dump {} people", f("d.sql")),
            "written successfully",
        );
        run(&mut p, ".snapshot", "");
        run(
            &mut p,
            &format!(".sysdump {}", f("sys.txt")),
            "written successfully",
        );
        run(&mut p, ".show", "consistency: strong");
        run(&mut p, ".stepdown", "");
        run(&mut p, ".remove 99", "");
        run(&mut p, "DELETE FROM people", "2 rows affected");
        run(
            &mut p,
            &format!(".restore {}", f("b.sqlite")),
            "restored successfully",
        );
        run(&mut p, "SELECT COUNT(*) FROM people", "| 2        |");
        std::fs::write(
            d.join("more.sql"),
            "INSERT INTO people(name) VALUES('carol');\nINSERT INTO people(name) VALUES('dave');\n",
        )
        .unwrap();
        run(&mut p, &format!(".read {}", f("more.sql")), "");
        run(&mut p, &format!(".output {}", f("out.txt")), "");
        run(&mut p, "SELECT COUNT(*) FROM people", "");
        run(&mut p, ".output", "");
        run(
            &mut p,
            &format!(".boot {}", f("b.sqlite")),
            "booted successfully",
        );
        run(&mut p, ".nosuchcommand", "ERR! unknown command");
        // Ctrl-C abandons a half-typed statement and the shell goes on.
        p.send("SELECT 'never").unwrap();
        p.send_control('c').unwrap();
        p.exp_string(&prompt).unwrap();
        run(&mut p, ".help", ".stepdown [NODEID]");
        p.send_line(".exit").unwrap();
        p.exp_string("bye~").unwrap();
        p.exp_eof().unwrap();
        assert!(std::fs::read(d.join("b.sqlite"))
            .unwrap()
            .starts_with(b"SQLite format 3\0"));
        assert!(std::fs::read_to_string(d.join("d.sql"))
            .unwrap()
            .contains("INSERT INTO \"people\""));
        assert!(std::fs::read_to_string(d.join("out.txt"))
            .unwrap()
            .contains("| 4        |"));
        assert!(std::fs::read_to_string(d.join("sys.txt"))
            .unwrap()
            .contains("\"store\""));

        // History survives a restart: Up shows the last command typed before.
        let mut p = shell(&["-H", "127.0.0.1", "-p", &port], &hist);
        p.exp_string(&prompt).unwrap();
        // Ctrl-P: previous history entry (the Up arrow's escape sequence depends on the terminal).
        p.send_control('p').unwrap();
        p.exp_string(".exit").unwrap();
        p.send_control('c').unwrap();
        p.exp_string(&prompt).unwrap();
        p.send_control('d').unwrap();
        p.exp_string("bye~").unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_sql_and_dash_e_run_and_report_errors_in_the_exit_status() {
    let node = TestNode::start().await;
    let port = port_of(&node.node.as_ref().unwrap().info().api_addr);
    let bin = env!("CARGO_BIN_EXE_sqlraft");
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = Command::new(bin)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let ok = run(
        &["-p", &port],
        "CREATE TABLE t (v);\nINSERT INTO t VALUES(1);\nSELECT v FROM t;\n",
    );
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("| 1 |"));
    let bad = run(&["-p", &port], "SELECT * FROM nosuch;\n");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("ERR! no such table: nosuch"));
    let e = run(&["-p", &port, "-e", "SELECT COUNT(*) FROM t"], "");
    assert!(e.status.success(), "{e:?}");
    assert!(String::from_utf8_lossy(&e.stdout).contains("| 1        |"));
    let unreachable = run(&["-p", "1", "-e", "SELECT 1"], "");
    assert!(!unreachable.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_fails_over_to_an_alternative_host() {
    // Steps: a 3-node cluster; the shell talks to node 1 with node 2 as alternative; node 1
    // stops; the next statement goes to node 2, and the shell says so.
    let mut c = TestCluster::start(3).await;
    let a1 = c.node(0).info().api_addr.clone();
    let a2 = c.node(1).info().api_addr.clone();
    c.client(0)
        .execute_ok(r#"["CREATE TABLE t (v)", "INSERT INTO t VALUES(7)"]"#)
        .await;
    c.wait_all_see("SELECT COUNT(*) FROM t", &serde_json::json!([[1]]))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let hist = dir.path().join("h");
    let mut p = tokio::task::spawn_blocking({
        let (a1, hist) = (a1.clone(), hist.clone());
        move || {
            let mut p = shell(&["-H", "127.0.0.1", "-p", &port_of(&a1), "-a", &a2], &hist);
            p.exp_string("Connected to").unwrap();
            p
        }
    })
    .await
    .unwrap();
    c.stop(0).await;
    c.wait_for_leader_among(&[1, 2]).await;
    tokio::task::spawn_blocking(move || {
        p.send_line("SELECT v FROM t").unwrap();
        p.exp_string("unreachable, switching to").unwrap();
        p.exp_string("| 7 |").unwrap();
        p.send_line(".exit").unwrap();
        p.exp_string("bye~").unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_talks_https_with_a_ca_and_basic_auth() {
    // Steps: a node serving HTTPS with a test CA and -auth; the shell trusts the CA and logs
    // in; a wrong password is refused with a clear error and the shell goes on.
    use crate::tls::{https_config, Ca};
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new("shell test CA");
    let ca_path = ca.write(pki.path(), "ca.pem");
    let id = ca.issue(pki.path(), "node");
    let auth = pki.path().join("auth.json");
    // `*` may ask /readyz (the harness waits on it); everything else needs admin.
    let users = r#"[{"username":"admin","password":"secret","perms":["all"]},{"username":"*","perms":["ready"]}]"#;
    std::fs::write(&auth, users).unwrap();
    let node = TestNode::start_with(|cfg| {
        https_config(cfg, &id);
        cfg.auth = Some(auth.clone());
    })
    .await;
    let port = port_of(&node.node.as_ref().unwrap().info().api_addr);
    let hist = pki.path().join("h");
    let ca_s = ca_path.to_string_lossy().into_owned();
    tokio::task::spawn_blocking(move || {
        let prompt = format!("127.0.0.1:{port}> ");
        let mut p = shell(
            &[
                "-H",
                "127.0.0.1",
                "-p",
                &port,
                "-s",
                "https",
                "-c",
                &ca_s,
                "-u",
                "admin:secret",
            ],
            &hist,
        );
        p.exp_string("Connected to https://").unwrap();
        p.exp_string(&prompt).unwrap();
        p.send_line("CREATE TABLE secure (v)").unwrap();
        p.exp_string("0 row affected").unwrap();
        p.exp_string(&prompt).unwrap();
        p.send_line(".exit").unwrap();
        p.exp_string("bye~").unwrap();
        let mut p = shell(
            &[
                "-H",
                "127.0.0.1",
                "-p",
                &port,
                "-s",
                "https",
                "-c",
                &ca_s,
                "-u",
                "admin:wrong",
            ],
            &hist,
        );
        p.exp_string(&prompt).unwrap();
        p.send_line("SELECT 1").unwrap();
        p.exp_string("ERR! unauthorized").unwrap();
        p.exp_string(&prompt).unwrap();
        p.send_line(".exit").unwrap();
        p.exp_string("bye~").unwrap();
    })
    .await
    .unwrap();
}

/// How a terminal delivers pasted text: wrapped in bracketed-paste markers (the shell turns
/// the mode on), or as a plain burst of keystrokes (terminals without the mode, typed-ahead
/// input). Lines end with `\r`, the Enter key's byte.
#[derive(Debug, Clone, Copy)]
enum Paste {
    Bracketed,
    Burst,
}

impl Paste {
    fn wrap(self, lines: &[&str]) -> String {
        let body: String = lines.iter().map(|l| format!("{l}\r")).collect();
        match self {
            Paste::Bracketed => format!("\x1b[200~{body}\x1b[201~"),
            Paste::Burst => body,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasted_lines_run_as_if_typed() {
    // Steps: a node with a table; the shell; for each way a terminal delivers a paste
    // (bracketed, raw burst): paste one statement split over two lines, see its rows; paste a
    // script of several statements and a dot command, see every result in order; then a
    // typed line runs on its own, proving nothing of the paste was left half-read.
    let node = TestNode::start().await;
    node.client
        .execute_ok(r#"["CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT)", "INSERT INTO foo(name) VALUES('fiona')"]"#)
        .await;
    let port = port_of(&node.node.as_ref().unwrap().info().api_addr);
    let dir = tempfile::tempdir().unwrap();
    let hist = dir.path().join("h");
    tokio::task::spawn_blocking(move || {
        let prompt = format!("127.0.0.1:{port}> ");
        let mut p = shell(&["-H", "127.0.0.1", "-p", &port], &hist);
        p.exp_string(&prompt).unwrap();
        let paste = |p: &mut PtySession, how: Paste, lines: &[&str]| {
            p.send(&how.wrap(lines)).unwrap();
            p.flush().unwrap();
        };
        for how in [Paste::Bracketed, Paste::Burst] {
            let t = format!("{how:?}").to_lowercase();
            let want = |p: &mut PtySession, text: &str| {
                p.exp_string(text)
                    .unwrap_or_else(|e| panic!("{how:?} paste: expected {text:?}: {e}"));
            };

            paste(&mut p, how, &["SELECT id,", "  name FROM foo;"]);
            want(&mut p, "| 1  | fiona |");
            want(&mut p, &prompt);

            paste(
                &mut p,
                how,
                &[
                    &format!("CREATE TABLE {t} (id INTEGER PRIMARY KEY, name TEXT);"),
                    &format!("INSERT INTO {t}(name) VALUES('a'),"),
                    "  ('b');",
                    ".tables",
                    &format!("SELECT name FROM {t} ORDER BY id DESC;"),
                ],
            );
            want(&mut p, "2 rows affected");
            want(&mut p, &format!("| {t:<9} |"));
            want(&mut p, "| b    |");
            want(&mut p, "| a    |");
            want(&mut p, &prompt);

            // Typed after the paste: runs alone, at the first prompt (no statement pending).
            p.send_line(&format!("SELECT 'after {t}' AS v")).unwrap();
            want(&mut p, &format!("| after {t} |"));
            want(&mut p, &prompt);
        }
        p.send_line(".exit").unwrap();
        p.exp_string("bye~").unwrap();
    })
    .await
    .unwrap();
}

/// Runs the shell to completion with `args` and nothing on standard input.
fn run_shell(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sqlraft"))
        .args(args)
        .env_remove("SQLRAFT_HOST")
        .env_remove("RQLITE_HOST")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run sqlraft")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_help_ready_and_errors_that_say_what_to_do() {
    // Steps: -h and --help print the grouped help; `.ready` answers in one word; a port
    // nobody listens on, the node's Raft port, and an HTTPS node without its CA each get a
    // message naming the cause and the fix.
    for flag in ["-h", "--help"] {
        let out = run_shell(&[flag]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{flag}: {out:?}");
        for want in [
            "-H, --host",
            "Connection:",
            "TLS:",
            "-c, --ca-cert",
            "[default: 4001]",
        ] {
            assert!(text.contains(want), "{flag}: {want:?} missing:\n{text}");
        }
    }

    let node = TestNode::start().await;
    let info = node.node.as_ref().unwrap().info().clone();
    let port = port_of(&info.api_addr);
    let out = run_shell(&["-p", &port, "-e", ".ready"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\n");

    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    // A node still trying to join a dead address is up but not ready.
    let tmp = tempfile::tempdir().unwrap();
    let joining = crate::harness::Proc::spawn(
        tmp.path(),
        &[
            "-join",
            &format!("127.0.0.1:{dead}"),
            "-join-attempts",
            "1000",
        ],
    );
    let out = run_shell(&["-p", &port_of(&joining.http_addr), "-e", ".ready"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("not ready\n"), "{text}");
    drop(joining);
    let out = run_shell(&["-H", "127.0.0.1", "-p", &dead, "-e", "SELECT 1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "ERR! cannot connect to http://127.0.0.1:{dead}: connection refused (is sqlraftd running? is the port right?)"
        )),
        "{err}"
    );

    let raft_port = port_of(&info.raft_addr);
    let out = run_shell(&["-H", "127.0.0.1", "-p", &raft_port, "-e", "SELECT 1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ERR! ") && err.contains("Raft port") && err.contains("HTTP API port"),
        "{err}"
    );

    use crate::tls::{https_config, Ca};
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new("shell errors CA");
    let id = ca.issue(pki.path(), "node");
    let https = TestNode::start_with(|cfg| https_config(cfg, &id)).await;
    let https_port = port_of(&https.node.as_ref().unwrap().info().api_addr);
    let out = run_shell(&[
        "-H",
        "127.0.0.1",
        "-p",
        &https_port,
        "-s",
        "https",
        "-e",
        "SELECT 1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not trusted")
            && err.contains("-c/--ca-cert")
            && err.contains("-i/--insecure"),
        "{err}"
    );
    // Plain HTTP to the HTTPS port: the node says so itself (400), and the shell passes it on.
    let out = run_shell(&["-H", "127.0.0.1", "-p", &https_port, "-e", "SELECT 1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HTTPS"), "{err}");
}

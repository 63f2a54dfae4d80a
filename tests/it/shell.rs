//! The `sqlraft` shell, driven through a pseudo-terminal against real nodes.

use std::path::Path;
use std::process::Command;

use rexpect::session::{spawn_command, PtySession};

use crate::harness::{TestCluster, TestNode};

/// Starts the shell on a pty with its own history file, in the history file's directory (so
/// that files a script names are found there).
fn shell(args: &[&str], history: &Path) -> PtySession {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sqlraft"));
    cmd.args(args)
        .env("SQLRAFT_HISTFILE", history)
        .env_remove("SQLRAFT_HOST")
        .env_remove("RQLITE_HOST");
    if let Some(dir) = history.parent() {
        cmd.current_dir(dir);
    }
    spawn_command(cmd, Some(20_000)).expect("spawn sqlraft")
}

fn port_of(addr: &str) -> String {
    addr.rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .expect("port")
}

/// The shell talking to a node on 127.0.0.1, and the prompt it shows.
struct Shell {
    pty: PtySession,
    prompt: String,
}

impl Shell {
    /// Starts the shell against 127.0.0.1:`port` (plus `extra` flags), and waits for
    /// `greeting` (unless empty) and the first prompt.
    fn start(port: &str, extra: &[&str], history: &Path, greeting: &str) -> Self {
        let args = [&["-H", "127.0.0.1", "-p", port], extra].concat();
        let mut sh = Shell {
            pty: shell(&args, history),
            prompt: format!("127.0.0.1:{port}> "),
        };
        if !greeting.is_empty() {
            sh.expect(greeting);
        }
        sh.expect_prompt();
        sh
    }

    fn expect(&mut self, text: &str) {
        if let Err(e) = self.pty.exp_string(text) {
            panic!("expected {text:?}: {e}");
        }
    }

    fn expect_prompt(&mut self) {
        let prompt = self.prompt.clone();
        self.expect(&prompt);
    }

    /// Types `line`, then waits for `expect` (unless empty) and the next prompt.
    fn run(&mut self, line: &str, expect: &str) {
        self.pty.send_line(line).unwrap();
        if !expect.is_empty() {
            self.expect(expect);
        }
        self.expect_prompt();
    }

    /// Runs each line of `script` as [`Shell::run`] does.
    fn run_all(&mut self, script: &[(&str, &str)]) {
        for (line, expect) in script {
            self.run(line, expect);
        }
    }

    /// `.exit`: the shell says goodbye and ends.
    fn exit(mut self) {
        self.pty.send_line(".exit").unwrap();
        self.expect("bye~");
        self.pty.exp_eof().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_runs_sql_and_every_dot_command() {
    // Steps: a node; the shell connects; SQL (one-line and multi-line), an error, then every
    // dot command that applies to one node; `.exit`; a second shell sees the history.
    let node = TestNode::start().await;
    let port = port_of(&node.node.as_ref().unwrap().info().api_addr);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let hist = d.join("history");
        let mut sh = Shell::start(&port, &[], &hist, "Connected to");
        sh.run(
            "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT)",
            "0 row affected",
        );
        // Multi-line: the statement runs once `;` ends it.
        sh.pty.send_line("INSERT INTO people(name)").unwrap();
        sh.expect(">   ");
        std::fs::write(
            d.join("more.sql"),
            "INSERT INTO people(name) VALUES('carol');\nINSERT INTO people(name) VALUES('dave');\n",
        )
        .unwrap();
        sh.run_all(&[
            ("VALUES('alice'), ('bob');", "2 rows affected"),
            ("SELECT * FROM people", "| 2  | bob   |"),
            ("SELECT * FROM nosuch", "ERR! no such table: nosuch"),
            (".tables", "| people |"),
            ("CREATE INDEX people_name ON people(name)", ""),
            (".schema", "CREATE TABLE people"),
            (".indexes", "CREATE INDEX people_name"),
            (".nodes", "leader: true"),
            (".leader", "api_addr"),
            (".status", "store:"),
            (".ready", "ready"),
            (".expvar", "http:"),
            (".timer on", ""),
            ("SELECT COUNT(*) FROM people", "Run Time:"),
            (".timer off", ""),
            (".consistency strong", ""),
            (".consistency", "strong"),
            (".changes off", ""),
            (".changes on", ""),
            (".blobarray on", ""),
            (".mode csv", ""),
            ("SELECT name FROM people ORDER BY id", "alice"),
            (".mode json", ""),
            ("SELECT name FROM people WHERE id=1", "\"name\": \"alice\""),
            (".mode line", ""),
            ("SELECT name FROM people WHERE id=2", "name = bob"),
            (".mode column", ""),
            (".backup b.sqlite", "backup file written"),
            (".dump d.sql people", "written successfully"),
            (".snapshot", ""),
            (".sysdump sys.txt", "written successfully"),
            (".show", "consistency: strong"),
            (".stepdown", ""),
            (".remove 99", ""),
            ("DELETE FROM people", "2 rows affected"),
            (".restore b.sqlite", "restored successfully"),
            ("SELECT COUNT(*) FROM people", "| 2        |"),
            (".read more.sql", ""),
            (".output out.txt", ""),
            ("SELECT COUNT(*) FROM people", ""),
            (".output", ""),
            (".boot b.sqlite", "booted successfully"),
            (".nosuchcommand", "ERR! unknown command"),
        ]);
        // Ctrl-C abandons a half-typed statement and the shell goes on.
        sh.pty.send("SELECT 'never").unwrap();
        sh.pty.send_control('c').unwrap();
        sh.expect_prompt();
        // rqlite's wording (golden 4755): a write's error is `Error:`, a query's `ERR!`. What
        // follows a line's last `;` runs too, as rqlite sends the whole line.
        sh.run_all(&[
            ("SELEC 1", "Error: near \"SELEC\": syntax error"),
            (
                "INSERT INTO nosuch VALUES(1)",
                "Error: no such table: nosuch",
            ),
            ("SELECT 1 AS one; SELECT 2 AS two", "| two |"),
        ]);
        // An unfinished statement never traps the user: a dot command drops it.
        sh.pty.send_line("SELECT 3 +").unwrap();
        sh.expect(">   ");
        sh.run(".tables", "ERR! unfinished statement dropped: SELECT 3 +");
        sh.run(".help", ".stepdown [NODEID]");
        sh.exit();
        let read = |name: &str| std::fs::read(d.join(name)).unwrap();
        assert!(read("b.sqlite").starts_with(b"SQLite format 3\0"));
        for (name, want) in [
            ("d.sql", "INSERT INTO \"people\""),
            ("out.txt", "| 4        |"),
            ("sys.txt", "\"store\""),
        ] {
            assert!(
                String::from_utf8_lossy(&read(name)).contains(want),
                "{name}"
            );
        }

        // History survives a restart: Up shows the last command typed before.
        let mut sh = Shell::start(&port, &[], &hist, "");
        // Ctrl-P: previous history entry (the Up arrow's escape sequence depends on the terminal).
        sh.pty.send_control('p').unwrap();
        sh.expect(".exit");
        sh.pty.send_control('c').unwrap();
        sh.expect_prompt();
        sh.pty.send_control('d').unwrap();
        sh.expect("bye~");

        // `quit` without a dot leaves, even in the middle of an unfinished statement.
        let mut sh = Shell::start(&port, &[], &hist, "");
        sh.pty.send_line("SELECT 'open").unwrap();
        sh.expect(">   ");
        sh.pty.send_line("QUIT").unwrap();
        sh.expect("bye~");
        sh.pty.exp_eof().unwrap();
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
    // A script's lines without `;` each run on their own, as rqlite's shell runs them; a
    // dot command may follow a line's last `;`.
    let lines = run(
        &["-p", &port],
        "INSERT INTO t VALUES(2)\nINSERT INTO t VALUES(3)\nSELECT COUNT(*) FROM t\n",
    );
    assert!(lines.status.success(), "{lines:?}");
    assert!(String::from_utf8_lossy(&lines.stdout).contains("| 3        |"));
    let dot = run(&["-p", &port, "-e", "SELECT 5 AS five; .tables"], "");
    assert!(dot.status.success(), "{dot:?}");
    let out = String::from_utf8_lossy(&dot.stdout);
    assert!(
        out.contains("| five |") && out.contains("| name |"),
        "{out}"
    );
    // `.status KEY` shows that key only; `.dump` takes `a, b` as two tables; a malformed -u
    // is refused before anything is sent (all as rqlite's shell does).
    let key = run(&["-p", &port, "-e", ".status http"], "");
    let out = String::from_utf8_lossy(&key.stdout);
    assert!(
        key.status.success() && out.contains("http:") && !out.contains("build:"),
        "{out}"
    );
    let dump = std::env::temp_dir().join(format!("sqlraft-shell-dump-{port}.sql"));
    let d = dump.to_string_lossy().to_string();
    let r = run(&["-p", &port], "CREATE TABLE u (v);\n");
    assert!(r.status.success(), "{r:?}");
    let r = run(&["-p", &port, "-e", &format!(".dump {d} t, u")], "");
    assert!(r.status.success(), "{r:?}");
    let text = std::fs::read_to_string(&dump).unwrap();
    let _ = std::fs::remove_file(&dump);
    assert!(
        text.contains("CREATE TABLE t") && text.contains("CREATE TABLE u"),
        "{text}"
    );
    let bad_u = run(&["-p", &port, "-u", "nocolon", "-e", "SELECT 1"], "");
    assert!(!bad_u.status.success());
    assert!(
        String::from_utf8_lossy(&bad_u.stderr).contains("invalid Basic Auth credentials format")
    );
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
    let mut sh = tokio::task::spawn_blocking(move || {
        Shell::start(&port_of(&a1), &["-a", &a2], &hist, "Connected to")
    })
    .await
    .unwrap();
    c.stop(0).await;
    c.wait_for_leader_among(&[1, 2]).await;
    tokio::task::spawn_blocking(move || {
        sh.pty.send_line("SELECT v FROM t").unwrap();
        sh.expect("unreachable, switching to");
        sh.expect("| 7 |");
        sh.exit();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_talks_https_with_a_ca_and_basic_auth() {
    // Steps: a node serving HTTPS with a test CA and -auth; the shell trusts the CA and logs
    // in; a wrong password is refused with a clear error and the shell goes on.
    use crate::tls::{https_config, Ca};
    let ca = Ca::new("shell test CA");
    let id = ca.issue("node");
    let auth = ca.dir().join("auth.json");
    // `*` may ask /readyz (the harness waits on it); everything else needs admin.
    let users = r#"[{"username":"admin","password":"secret","perms":["all"]},{"username":"*","perms":["ready"]}]"#;
    std::fs::write(&auth, users).unwrap();
    let node = TestNode::start_with(|cfg| {
        https_config(cfg, &id);
        cfg.auth = Some(auth.clone());
    })
    .await;
    let port = port_of(&node.node.as_ref().unwrap().info().api_addr);
    let hist = ca.dir().join("h");
    let ca_s = ca.cert.to_string_lossy().into_owned();
    tokio::task::spawn_blocking(move || {
        let as_user = |creds: &str, greeting: &str| {
            let tls = ["-s", "https", "-c", &ca_s, "-u", creds];
            Shell::start(&port, &tls, &hist, greeting)
        };
        let mut sh = as_user("admin:secret", "Connected to https://");
        sh.run("CREATE TABLE secure (v)", "0 row affected");
        sh.exit();
        let mut sh = as_user("admin:wrong", "");
        sh.run("SELECT 1", "ERR! unauthorized");
        sh.exit();
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
        let mut sh = Shell::start(&port, &[], &hist, "");
        for how in [Paste::Bracketed, Paste::Burst] {
            let t = format!("{how:?}").to_lowercase();
            let mut paste = |lines: &[&str], want: &[&str]| {
                sh.pty.send(&how.wrap(lines)).unwrap();
                sh.pty.flush().unwrap();
                for text in want {
                    sh.expect(text);
                }
                sh.expect_prompt();
            };
            paste(&["SELECT id,", "  name FROM foo;"], &["| 1  | fiona |"]);
            paste(
                &[
                    &format!("CREATE TABLE {t} (id INTEGER PRIMARY KEY, name TEXT);"),
                    &format!("INSERT INTO {t}(name) VALUES('a'),"),
                    "  ('b');",
                    ".tables",
                    &format!("SELECT name FROM {t} ORDER BY id DESC;"),
                ],
                &[
                    "2 rows affected",
                    &format!("| {t:<9} |"),
                    "| b    |",
                    "| a    |",
                ],
            );
            // Typed after the paste: runs alone, at the first prompt (no statement pending).
            sh.run(
                &format!("SELECT 'after {t}' AS v"),
                &format!("| after {t} |"),
            );
        }
        sh.exit();
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
    let ca = Ca::new("shell errors CA");
    let id = ca.issue("node");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_begin_commit_and_rollback_map_to_interactive_transactions() {
    // Steps: a node; in the shell, BEGIN opens a transaction (the prompt shows [tx]); an
    // insert is visible inside; COMMIT applies it; BEGIN ... ROLLBACK discards another; the
    // node's data shows only the committed row; COMMIT without a transaction is an error.
    let node = TestNode::start().await;
    node.client
        .execute_ok(r#"["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"]"#)
        .await;
    let port = port_of(&node.node.as_ref().unwrap().info().api_addr);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let hist = d.join("history");
        let mut sh = Shell::start(&port, &[], &hist, "Connected to");
        let plain = sh.prompt.clone();
        sh.pty.send_line("BEGIN").unwrap();
        sh.expect("transaction ");
        sh.prompt = format!("127.0.0.1:{port} [tx]> ");
        sh.expect_prompt();
        sh.run_all(&[
            ("INSERT INTO t(v) VALUES('kept')", "1 row affected"),
            ("SELECT count(*) FROM t", "| 1 "),
        ]);
        sh.pty.send_line("COMMIT").unwrap();
        sh.expect("committed at index");
        sh.prompt = plain.clone();
        sh.expect_prompt();
        sh.pty.send_line("BEGIN TRANSACTION;").unwrap();
        sh.prompt = format!("127.0.0.1:{port} [tx]> ");
        sh.expect_prompt();
        sh.run("INSERT INTO t(v) VALUES('dropped')", "1 row affected");
        sh.pty.send_line("ROLLBACK").unwrap();
        sh.expect("rolled back");
        sh.prompt = plain;
        sh.expect_prompt();
        sh.run_all(&[
            ("SELECT v FROM t", "kept"),
            ("COMMIT", "Error: no transaction is open"),
        ]);
        sh.exit();
    })
    .await
    .unwrap();
    assert_eq!(
        node.client.query_values("SELECT v FROM t", "strong").await,
        serde_json::json!([["kept"]])
    );
}

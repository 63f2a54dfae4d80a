//! `sqlraft`, the interactive shell: SQL in, tidy tables out, dot commands for the cluster.
//!
//! Owns: argument parsing, the read-eval-print loop (line editing and history through
//! rustyline), statement splitting, and the dot commands. Talks to a node only over its public
//! HTTP API (`client.rs`); renders results in `format.rs`.

mod client;
mod commands;
mod format;
mod tx;

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use client::{Client, ClientOptions};
use format::Mode;

/// Command-line options, named as rqlite's shell names them (short `-H`, long `--host`).
#[derive(Debug, Parser)]
#[command(
    name = "sqlraft",
    version = crate::VERSION,
    about = "Interactive shell for sqlraft (and rqlite)",
    after_help = "Without -e and with standard input not a terminal, the shell runs what it \
                  reads there line by line, as typed lines run, and exits: 0 if every \
                  statement succeeded, 1 if any failed (each failure is printed on standard \
                  error: ERR! ... for a SELECT or PRAGMA, Error: ... for anything else).",
    disable_help_flag = true,
    disable_version_flag = true
)]
pub struct Args {
    /// Node host, or SQLRAFT_HOST / RQLITE_HOST ([scheme://]host[:port]) [default: 127.0.0.1]
    #[arg(short = 'H', long = "host", help_heading = "Connection")]
    host: Option<String>,
    /// Node HTTP API port (not its Raft port) [default: 4001]
    #[arg(short = 'p', long = "port", help_heading = "Connection")]
    port: Option<u16>,
    /// http or https [default: http]
    #[arg(short = 's', long = "scheme", help_heading = "Connection")]
    scheme: Option<String>,
    /// Basic auth credentials, user:password
    #[arg(short = 'u', long = "user", help_heading = "Connection")]
    user: Option<String>,
    /// Other nodes to fail over to, host:port,...
    #[arg(
        short = 'a',
        long = "alternatives",
        value_delimiter = ',',
        help_heading = "Connection"
    )]
    alternatives: Vec<String>,
    /// HTTP timeout (Go duration)
    #[arg(
        short = 't',
        long = "http-timeout",
        default_value = "30s",
        help_heading = "Connection"
    )]
    http_timeout: String,
    /// PEM CA certificate to trust for HTTPS
    #[arg(short = 'c', long = "ca-cert", help_heading = "TLS")]
    ca_cert: Option<PathBuf>,
    /// Do not verify the node's certificate
    #[arg(short = 'i', long = "insecure", help_heading = "TLS")]
    insecure: bool,
    /// PEM client certificate for mutual TLS (with -k)
    #[arg(short = 'd', long = "client-cert", help_heading = "TLS")]
    client_cert: Option<PathBuf>,
    /// PEM client key for mutual TLS
    #[arg(short = 'k', long = "client-key", help_heading = "TLS")]
    client_key: Option<PathBuf>,
    /// Run these statements (or dot commands) and exit
    #[arg(short = 'e', long = "execute")]
    execute: Option<String>,
    /// Print help (rqlite's shell: -h, --help)
    #[arg(short = 'h', long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Print the version (rqlite's shell spells it -v)
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
}

/// What the loop keeps between commands (`.show` prints it).
pub struct Session {
    pub client: Client,
    pub mode: Mode,
    pub timer: bool,
    pub changes: bool,
    pub blob_array: bool,
    pub consistency: String,
    pub output: Option<std::fs::File>,
    /// The interactive transaction open on the node (`BEGIN`), if any.
    pub tx: Option<String>,
}

impl Session {
    /// Writes to the current output (stdout, or the `.output` file).
    pub fn out(&mut self, text: &str) {
        match &mut self.output {
            Some(f) => {
                let _ = f.write_all(text.as_bytes());
            }
            None => {
                print!("{text}");
                let _ = std::io::stdout().flush();
            }
        }
    }
}

/// Where the node is: flags win over `SQLRAFT_HOST`/`RQLITE_HOST` (`[scheme://]host[:port]`).
fn endpoint(a: &Args) -> (String, String, u16) {
    let env = std::env::var("SQLRAFT_HOST")
        .or_else(|_| std::env::var("RQLITE_HOST"))
        .ok();
    let (mut scheme, mut host, mut port) = ("http".to_string(), "127.0.0.1".to_string(), 4001u16);
    if let Some(e) = env.filter(|e| !e.is_empty()) {
        let rest = match e.split_once("://") {
            Some((s, r)) => {
                scheme = s.to_string();
                r.to_string()
            }
            None => e,
        };
        match rest.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => {
                host = h.to_string();
                port = p.parse().unwrap_or(4001);
            }
            _ => host = rest,
        }
    }
    (
        a.scheme.clone().unwrap_or(scheme),
        a.host.clone().unwrap_or(host),
        a.port.unwrap_or(port),
    )
}

/// Splits input into complete statements at `;` outside quotes and comments; returns the
/// statements and the unfinished rest.
pub fn split_statements(input: &str) -> (Vec<String>, String) {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' | '`' => {
                    quote = Some(c);
                    cur.push(c);
                }
                '[' => {
                    quote = Some(']');
                    cur.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    // A line comment: keep it out of the statement.
                    for n in chars.by_ref() {
                        if n == '\n' {
                            cur.push('\n');
                            break;
                        }
                    }
                }
                ';' => {
                    let s = cur.trim();
                    if !s.is_empty() {
                        out.push(s.to_string());
                    }
                    cur.clear();
                }
                _ => cur.push(c),
            },
        }
    }
    (out, cur)
}

/// Runs one line of input that is complete (a dot command, or SQL). Returns false on `.exit`.
/// Errors are printed, never fatal; `ok` records whether everything succeeded.
fn run_line(s: &mut Session, line: &str, ok: &mut bool) -> bool {
    let line = line.trim();
    if line.is_empty() {
        return true;
    }
    if line.starts_with('.') || is_exit(line) {
        match commands::dot(s, line) {
            Ok(commands::Flow::Continue) => true,
            Ok(commands::Flow::Exit) => false,
            Err(e) => {
                *ok = false;
                eprintln!("ERR! {e}");
                true
            }
        }
    } else {
        if let Err(e) = commands::sql(s, line) {
            *ok = false;
            report(line, &e);
        }
        true
    }
}

/// Prints a statement's error as rqlite's shell does: `ERR!` for what it sends as a query
/// (text starting with SELECT or PRAGMA), `Error:` for everything it sends as a write.
fn report(stmt: &str, e: &str) {
    let first = stmt
        .split(|c: char| !c.is_ascii_alphabetic())
        .find(|w| !w.is_empty())
        .unwrap_or_default();
    if first.eq_ignore_ascii_case("SELECT") || first.eq_ignore_ascii_case("PRAGMA") {
        eprintln!("ERR! {e}");
    } else {
        eprintln!("Error: {e}");
    }
}

/// `.exit`, `.quit`, `exit` or `quit`, in any case: rqlite's shell leaves on each.
fn is_exit(line: &str) -> bool {
    [".exit", ".quit", "exit", "quit"]
        .iter()
        .any(|w| line.trim().trim_end_matches(';').eq_ignore_ascii_case(w))
}

/// The shell's entry point.
pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if args.user.as_deref().is_some_and(|u| !u.contains(':')) {
        // As rqlite's shell: a malformed -u is refused before anything is sent.
        eprintln!("ERR! invalid Basic Auth credentials format (use -u user:password)");
        return ExitCode::FAILURE;
    }
    let timeout = crate::duration::parse(&args.http_timeout).unwrap_or(Duration::from_secs(30));
    let (scheme, host, port) = endpoint(&args);
    let opts = ClientOptions {
        scheme,
        hosts: std::iter::once(format!("{host}:{port}"))
            .chain(args.alternatives.iter().cloned())
            .collect(),
        user: args.user.clone(),
        ca_cert: args.ca_cert.clone(),
        client_cert: args.client_cert.clone(),
        client_key: args.client_key.clone(),
        insecure: args.insecure,
        timeout,
    };
    let client = match Client::new(opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ERR! {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut s = Session {
        client,
        mode: Mode::Column,
        timer: false,
        changes: true,
        blob_array: false,
        consistency: "weak".into(),
        output: None,
        tx: None,
    };
    let mut ok = true;

    // Non-interactive: -e, or SQL piped in.
    if let Some(cmds) = args.execute.clone() {
        run_lines(&mut s, &cmds, &mut ok);
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    if !std::io::stdin().is_terminal() {
        let mut input = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut input) {
            eprintln!("ERR! reading standard input: {e}");
            return ExitCode::FAILURE;
        }
        run_lines(&mut s, &input, &mut ok);
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    interactive(&mut s, &mut ok);
    ExitCode::SUCCESS
}

/// Runs input given at once (piped in, or `-e`) line by line, exactly as typed lines run:
/// what rqlite's shell does with a script, where each line is a statement of its own.
pub fn run_lines(s: &mut Session, input: &str, ok: &mut bool) {
    let mut pending = String::new();
    for line in input.lines() {
        if pending.is_empty() && line.trim().is_empty() {
            continue;
        }
        if !typed_line(s, line, &mut pending, ok) {
            return;
        }
    }
    if !pending.trim().is_empty() {
        run_line(s, pending.trim(), ok);
    }
}

/// Runs a SQL file (`.read`): dot commands one per line, SQL split at `;`, as sqlite3 does.
pub fn run_script(s: &mut Session, input: &str, ok: &mut bool) {
    let mut pending = String::new();
    for line in input.lines() {
        if pending.trim().is_empty() && line.trim_start().starts_with('.') {
            if !run_line(s, line, ok) {
                return;
            }
            continue;
        }
        pending.push_str(line);
        pending.push('\n');
        let (stmts, rest) = split_statements(&pending);
        for st in stmts {
            run_line(s, &st, ok);
        }
        pending = rest;
    }
    if !pending.trim().is_empty() {
        run_line(s, pending.trim(), ok);
    }
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("SQLRAFT_HISTFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".sqlraft_history")))
}

/// The line editor, set up so that pasted text is read exactly as if it were typed.
///
/// Two things in rustyline's defaults lose pasted lines, both fixed here at the input layer
/// rather than patched over in the statement logic:
/// * rustyline reads the terminal through a 1 KiB buffer that, without its `buffer-redux`
///   feature (turned on in Cargo.toml), is dropped when `readline` returns: everything a burst
///   of lines (a paste from a terminal without bracketed paste, typed-ahead input) carried
///   after the first line was lost;
/// * a bracketed paste (`ESC[200~ ... ESC[201~`) is inserted as one edit buffer containing
///   newlines that runs only when Enter is pressed again, and then as a single "line".
///   Binding the paste markers to nothing makes the pasted characters plain keystrokes: each
///   newline accepts its line, and the rest of the paste waits in the kept buffer for the next
///   prompt.
fn line_editor() -> rustyline::Result<rustyline::DefaultEditor> {
    use rustyline::{Cmd, KeyCode, KeyEvent, Modifiers};
    let mut rl = rustyline::DefaultEditor::new()?;
    for marker in [KeyCode::BracketedPasteStart, KeyCode::BracketedPasteEnd] {
        rl.bind_sequence(KeyEvent(marker, Modifiers::NONE), Cmd::Noop);
    }
    Ok(rl)
}

fn interactive(s: &mut Session, ok: &mut bool) {
    use rustyline::error::ReadlineError;
    let mut rl = match line_editor() {
        Ok(rl) => rl,
        Err(e) => {
            eprintln!("ERR! cannot start line editing: {e}");
            return;
        }
    };
    let history = history_path();
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    println!("Welcome to the sqlraft CLI.\nEnter \".help\" for usage hints.");
    match s.client.version() {
        Ok(v) => println!(
            "Connected to {} running version {v}",
            s.client.current_url()
        ),
        // The reason names the URL it tried.
        Err(e) => println!("Not connected: {e}"),
    }
    let mut pending = String::new();
    'read: loop {
        let prompt = if pending.is_empty() && s.tx.is_some() {
            format!("{} [tx]> ", s.client.current_host())
        } else if pending.is_empty() {
            format!("{}> ", s.client.current_host())
        } else {
            format!(
                "{}>   ",
                " ".repeat(s.client.current_host().len().saturating_sub(2))
            )
        };
        match rl.readline(&prompt) {
            Ok(input) => {
                // One edit buffer can still hold several lines (a history entry recalled
                // from an older version's file, a newline inserted by a key binding): each
                // runs as the typed line it stands for.
                for line in input.split('\n') {
                    if pending.is_empty() && line.trim().is_empty() {
                        continue;
                    }
                    let _ = rl.add_history_entry(line);
                    if !typed_line(s, line, &mut pending, ok) {
                        break 'read;
                    }
                }
            }
            // Ctrl-C abandons the line being typed.
            Err(ReadlineError::Interrupted) => pending.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("ERR! {e}");
                break;
            }
        }
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    println!("bye~");
}

/// Handles one line as typed at the prompt, given the statement begun on earlier lines
/// (`pending`). Returns false on `.exit`.
fn typed_line(s: &mut Session, line: &str, pending: &mut String, ok: &mut bool) -> bool {
    let trimmed = line.trim();
    if !pending.is_empty() {
        // An unfinished statement never traps the user: an exit leaves, and a dot command
        // drops the statement. (SQL never goes on with a line starting with `.` and a
        // letter, except inside a string literal left open, which this gives up.)
        if is_exit(trimmed) {
            return false;
        }
        let dot_command =
            trimmed.starts_with('.') && trimmed[1..].starts_with(|c: char| c.is_ascii_alphabetic());
        if dot_command {
            eprintln!("ERR! unfinished statement dropped: {}", pending.trim());
            *ok = false;
            pending.clear();
        }
    }
    if pending.is_empty() && (trimmed.starts_with('.') || is_exit(trimmed)) {
        return run_line(s, trimmed, ok);
    }
    if pending.is_empty() && !trimmed.contains(';') && single_line_sql(trimmed) {
        run_alone(s, trimmed, pending, ok);
        return true;
    }
    pending.push_str(line);
    pending.push('\n');
    let (stmts, rest) = split_statements(pending);
    let ended = !stmts.is_empty();
    for st in stmts {
        run_line(s, &st, ok);
    }
    pending.clear();
    let rest = rest.trim();
    if ended && (rest.starts_with('.') || is_exit(rest)) {
        // `-e "SELECT 1; .tables"`: a dot command after the line's last `;`.
        return run_line(s, rest, ok);
    }
    if ended && single_line_sql(rest) {
        // What follows this line's last `;` is a statement of its own (`SELECT 1; SELECT 2`):
        // rqlite's shell sends the whole line, so it runs too.
        run_alone(s, rest, pending, ok);
    } else if !rest.is_empty() {
        *pending = format!("{rest}\n");
    }
    true
}

/// A line without `;` runs at once, as in rqlite's shell, unless SQLite says the statement
/// is not finished yet: then it starts a multi-line statement (`pending`).
fn run_alone(s: &mut Session, stmt: &str, pending: &mut String, ok: &mut bool) {
    if stmt.is_empty() {
        return;
    }
    match commands::sql(s, stmt) {
        Ok(()) => {}
        Err(e) if e == "incomplete input" => *pending = format!("{stmt}\n"),
        Err(e) => {
            *ok = false;
            report(stmt, &e);
        }
    }
}

/// rqlite's shell runs a line without `;` at once; a line that opens a quote or a
/// parenthesis it does not close waits for more.
fn single_line_sql(line: &str) -> bool {
    let (_, rest) = split_statements(&format!("{line};"));
    rest.trim().is_empty() && line.matches('(').count() <= line.matches(')').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        let (s, rest) =
            split_statements("INSERT INTO t VALUES('a;b'); -- c;\nSELECT \"x;y\" FROM t; SELECT");
        assert_eq!(
            s,
            vec!["INSERT INTO t VALUES('a;b')", "SELECT \"x;y\" FROM t"]
        );
        assert_eq!(rest.trim(), "SELECT");
    }

    #[test]
    fn one_line_sql_runs_without_semicolon_unless_unfinished() {
        assert!(single_line_sql("SELECT 1"));
        assert!(!single_line_sql("SELECT 'unterminated"));
        assert!(!single_line_sql("CREATE TABLE t (a,"));
    }
}

//! Where results go and what they look like.
//!
//! One directory per test process (a "session"): `$SQLRAFT_FAULTS_RESULTS` if set, else
//! `<cargo target tmp dir>/faults/<unix time>-<pid>`. In it, one directory per scenario
//! (`history.jsonl`, `verdict.txt`, `node<N>.log`) and `summary.tsv`, one row per scenario,
//! appended as scenarios finish.

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

pub fn session_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = match std::env::var_os("SQLRAFT_FAULTS_RESULTS") {
            Some(d) => PathBuf::from(d),
            None => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                    .join("faults")
                    .join(format!("{secs}-{}", std::process::id()))
            }
        };
        std::fs::create_dir_all(&dir).expect("create results dir");
        println!("fault suite results: {}", dir.display());
        dir
    })
}

/// A fresh directory for one scenario's results.
pub fn scenario_dir(name: &str) -> PathBuf {
    let d = session_dir().join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scenario dir");
    d
}

/// One row of the summary table.
pub struct Row {
    pub scenario: String,
    pub nemesis: String,
    pub nodes: usize,
    pub bank: String,
    pub register: String,
    pub set: String,
    pub converged: String,
    pub leaderless_s: Option<f64>,
    pub longest_leaderless_s: Option<f64>,
    pub longest_no_write_s: Option<f64>,
    pub term_delta: Option<i64>,
    pub verdict: String,
}

const HEADER: &str = "scenario\tnemesis\tnodes\tbank\tregister\tset\tconverged\tleaderless_s\tlongest_leaderless_s\tlongest_no_write_s\tterm_delta\tverdict";

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
}

/// Appends `row` to the session's `summary.tsv`.
pub fn append(row: &Row) {
    let path = session_dir().join("summary.tsv");
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("summary.tsv");
    if new {
        let _ = writeln!(f, "{HEADER}");
    }
    let _ = writeln!(
        f,
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        row.scenario,
        row.nemesis,
        row.nodes,
        row.bank,
        row.register,
        row.set,
        row.converged,
        secs(row.leaderless_s),
        secs(row.longest_leaderless_s),
        secs(row.longest_no_write_s),
        opt(row.term_delta),
        row.verdict
    );
}

/// Writes the one-line verdict (and details below it) of a scenario.
pub fn write_verdict(dir: &std::path::Path, line: &str, details: &[String]) {
    let mut text = format!("{line}\n");
    for d in details {
        text.push_str(d);
        text.push('\n');
    }
    let _ = std::fs::write(dir.join("verdict.txt"), text);
}

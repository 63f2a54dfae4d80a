//! Rewriting non-deterministic SQL before it enters the Raft log.
//!
//! Owns: replacing `RANDOM()`, `RANDOMBLOB(N)` and `'now'` in date/time functions with
//! literals chosen once, on the node that received the request, so every node applies the
//! same values; and detecting `RETURNING` so such writes answer query-shaped.
//! Does not: re-serialise SQL. Only the replaced spans change; everything else (quoting,
//! spacing, comments) is kept byte for byte, unlike rqlite, which re-prints the parsed tree.

use std::time::{SystemTime, UNIX_EPOCH};

use super::lexer::{tokenize, Kind, Token};
use crate::command::Statement;

/// Which rewrites to apply (rqlite's `norwrandom`, `norwtime` and `noparse` turn them off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewriteOpts {
    pub random: bool,
    pub time: bool,
    /// With `false` nothing is looked at: no rewriting and no `RETURNING` detection.
    pub parse: bool,
}

impl Default for RewriteOpts {
    fn default() -> Self {
        Self {
            random: true,
            time: true,
            parse: true,
        }
    }
}

/// Larger `RANDOMBLOB(N)` calls are left alone: the literal would be twice N bytes of SQL
/// in every log entry, and a client asking for megabytes of noise per row is better served
/// by a bound blob parameter.
const MAX_RANDOMBLOB: u64 = 1 << 20;

const TIME_FUNCTIONS: [&str; 7] = [
    "date",
    "time",
    "datetime",
    "julianday",
    "unixepoch",
    "timediff",
    "strftime",
];

/// Rewrites `stmt.sql` in place and sets `force_query` when a `RETURNING` clause is found.
/// Returns whether the SQL was changed.
pub fn rewrite(stmt: &mut Statement, opts: &RewriteOpts) -> bool {
    if !opts.parse {
        return false;
    }
    // Fast path: the tokenizer is only needed when one of the words can be present.
    let lower = stmt.sql.to_ascii_lowercase();
    let maybe_random = opts.random && lower.contains("random");
    let maybe_now = opts.time && lower.contains("now");
    let maybe_returning = lower.contains("returning");
    if !(maybe_random || maybe_now || maybe_returning) {
        return false;
    }
    let sql = stmt.sql.as_str();
    let tokens = tokenize(sql);
    if maybe_returning && has_returning(sql, &tokens) {
        stmt.force_query = true;
    }
    let mut edits = Vec::new();
    if maybe_random {
        random_edits(sql, &tokens, &mut edits);
    }
    if maybe_now {
        now_edits(sql, &tokens, &julian_day_now(), &mut edits);
    }
    if edits.is_empty() {
        return false;
    }
    stmt.sql = apply(sql, edits);
    true
}

/// What `/db/sql` shows of one statement: the text as it would enter the log, or the syntax
/// error SQLite's own parser reports for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Analysis {
    Rewritten(String),
    SyntaxError(String),
}

/// How `stmt` would be rewritten by [`rewrite`] (`/db/sql`, rqlite 9.4). Syntax is checked
/// by preparing every statement of the text on an empty in-memory database, so only SQLite's
/// parser decides; a statement that is valid but names tables this scratch database lacks is
/// fine. Nothing is executed.
pub fn analyze(sql: &str, opts: &RewriteOpts) -> Analysis {
    if let Some(e) = syntax_error(sql) {
        return Analysis::SyntaxError(e);
    }
    let mut stmt = Statement::new(sql);
    rewrite(&mut stmt, opts);
    Analysis::Rewritten(stmt.sql)
}

fn syntax_error(sql: &str) -> Option<String> {
    use rusqlite::fallible_iterator::FallibleIterator;
    let conn = rusqlite::Connection::open_in_memory().ok()?;
    let mut batch = rusqlite::Batch::new(&conn, sql);
    loop {
        match batch.next() {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(e) => {
                let msg = super::exec::message(&e);
                // Errors about names (no such table, column, function) come from the
                // scratch database's emptiness, not from the statement.
                let syntax = msg.contains("syntax error")
                    || msg.starts_with("incomplete input")
                    || msg.starts_with("unrecognized token");
                return syntax.then_some(msg);
            }
        }
    }
}

/// A replacement of the bytes `start..end`.
struct Edit {
    start: usize,
    end: usize,
    text: String,
}

fn apply(sql: &str, mut edits: Vec<Edit>) -> String {
    edits.sort_by_key(|e| e.start);
    let mut out = String::with_capacity(sql.len() + 32 * edits.len());
    let mut pos = 0;
    for e in edits {
        // Edits never overlap (a call is replaced whole, a 'now' only outside calls we
        // replace), but skip defensively rather than corrupt the text.
        if e.start < pos {
            continue;
        }
        out.push_str(&sql[pos..e.start]);
        out.push_str(&e.text);
        pos = e.end;
    }
    out.push_str(&sql[pos..]);
    out
}

/// `RETURNING` is only valid at the top level of an INSERT/UPDATE/DELETE/REPLACE, so it
/// counts only outside parentheses and after such a keyword in the same statement: a column
/// named `returning` in a SELECT or a CREATE TABLE does not make a statement a query.
fn has_returning(sql: &str, tokens: &[Token]) -> bool {
    let mut depth = 0usize;
    let mut dml = false;
    for t in tokens {
        match t.kind {
            Kind::Punct(b'(') => depth += 1,
            Kind::Punct(b')') => depth = depth.saturating_sub(1),
            Kind::Punct(b';') => {
                depth = 0;
                dml = false;
            }
            Kind::Word if depth == 0 => {
                let w = t.text(sql);
                if ["insert", "update", "delete", "replace"]
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k))
                {
                    dml = true;
                } else if dml && w.eq_ignore_ascii_case("returning") {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// Tracks whether a token lies inside an `ORDER BY` clause, where rqlite leaves `RANDOM()`
/// alone (`ORDER BY RANDOM()` is how clients shuffle, and it changes no data).
struct OrderByTracker {
    depth: usize,
    /// The paren depth of the open `ORDER BY`, if any.
    open_at: Option<usize>,
}

impl OrderByTracker {
    fn new() -> Self {
        Self {
            depth: 0,
            open_at: None,
        }
    }

    fn step(&mut self, sql: &str, tokens: &[Token], i: usize) {
        let t = &tokens[i];
        match t.kind {
            Kind::Punct(b'(') => self.depth += 1,
            Kind::Punct(b')') => {
                self.depth = self.depth.saturating_sub(1);
                if self.open_at.is_some_and(|d| self.depth < d) {
                    self.open_at = None;
                }
            }
            Kind::Punct(b';') => {
                self.depth = 0;
                self.open_at = None;
            }
            Kind::Word => {
                if self.open_at.is_none()
                    && t.is_word(sql, "order")
                    && tokens.get(i + 1).is_some_and(|n| n.is_word(sql, "by"))
                {
                    self.open_at = Some(self.depth);
                } else if self.open_at == Some(self.depth) && t.is_word(sql, "limit") {
                    self.open_at = None;
                }
            }
            _ => {}
        }
    }

    fn inside(&self) -> bool {
        self.open_at.is_some()
    }
}

fn is_call(sql: &str, tokens: &[Token], i: usize, name: &str) -> bool {
    tokens[i].is_word(sql, name)
        && tokens.get(i + 1).is_some_and(|t| t.is_punct(b'('))
        && !(i > 0 && tokens[i - 1].is_punct(b'.'))
}

fn random_edits(sql: &str, tokens: &[Token], edits: &mut Vec<Edit>) {
    let mut order = OrderByTracker::new();
    let mut i = 0;
    while i < tokens.len() {
        order.step(sql, tokens, i);
        if !order.inside() {
            if is_call(sql, tokens, i, "random")
                && tokens.get(i + 2).is_some_and(|t| t.is_punct(b')'))
            {
                // rqlite uses Go's rand.Int63: never negative, so `x-RANDOM()` cannot turn
                // into the comment `x--123`.
                let v = fastrand::i64(0..=i64::MAX);
                edits.push(Edit {
                    start: tokens[i].start,
                    end: tokens[i + 2].end,
                    text: v.to_string(),
                });
                // The tokens of the replaced call hold no parentheses that matter to the
                // tracker: `(` and `)` balance.
                i += 3;
                continue;
            }
            if is_call(sql, tokens, i, "randomblob") {
                if let (Some(n), Some(close)) = (tokens.get(i + 2), tokens.get(i + 3)) {
                    if n.kind == Kind::Number && close.is_punct(b')') {
                        if let Some(len) = blob_len(n.text(sql)) {
                            edits.push(Edit {
                                start: tokens[i].start,
                                end: close.end,
                                text: random_blob_literal(len),
                            });
                            i += 4;
                            continue;
                        }
                    }
                }
            }
        }
        i += 1;
    }
}

/// The byte count SQLite's `randomblob(N)` would produce for an integer literal N (at least
/// one byte), or `None` when N is not a plain integer or is over the cap.
fn blob_len(text: &str) -> Option<u64> {
    let n: u64 = if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()?
    } else {
        text.parse().ok()?
    };
    let n = n.max(1);
    (n <= MAX_RANDOMBLOB).then_some(n)
}

fn random_blob_literal(len: u64) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(3 + 2 * len as usize);
    s.push_str("x'");
    for _ in 0..len {
        let b = fastrand::u8(..);
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s.push('\'');
    s
}

/// Replaces every `'now'` that is a whole argument of a date/time function call.
fn now_edits(sql: &str, tokens: &[Token], jd: &str, edits: &mut Vec<Edit>) {
    for i in 0..tokens.len() {
        if !TIME_FUNCTIONS.iter().any(|f| is_call(sql, tokens, i, f)) {
            continue;
        }
        // Walk the argument list of this call; nested calls are handled by their own pass.
        let mut depth = 0usize;
        for j in (i + 1)..tokens.len() {
            let t = &tokens[j];
            match t.kind {
                Kind::Punct(b'(') => depth += 1,
                Kind::Punct(b')') => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                Kind::Punct(b';') => break,
                Kind::Str if depth == 1 => {
                    let whole_arg = tokens[j - 1].is_punct(b'(') || tokens[j - 1].is_punct(b',');
                    let ends_arg = tokens
                        .get(j + 1)
                        .is_some_and(|n| n.is_punct(b',') || n.is_punct(b')'));
                    if whole_arg
                        && ends_arg
                        && t.name(sql).is_some_and(|v| v.eq_ignore_ascii_case("now"))
                    {
                        edits.push(Edit {
                            start: t.start,
                            end: t.end,
                            text: jd.to_string(),
                        });
                    }
                }
                _ => {}
            }
        }
    }
}

/// The current time as a Julian day number. SQLite keeps time to the millisecond, so the
/// value is computed from whole milliseconds and printed with enough digits (9 decimals,
/// ~0.1 ms) that SQLite recovers exactly that millisecond.
fn julian_day_now() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as f64)
        .unwrap_or(0.0);
    julian_day_from_unix_ms(ms)
}

fn julian_day_from_unix_ms(ms: f64) -> String {
    // 2440587.5 is the Julian day of the Unix epoch.
    format!("{:.9}", 2_440_587.5 + ms / 86_400_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(sql: &str) -> Statement {
        rw_with(sql, RewriteOpts::default())
    }

    fn rw_with(sql: &str, opts: RewriteOpts) -> Statement {
        let mut s = Statement::new(sql);
        rewrite(&mut s, &opts);
        s
    }

    /// Replaces digits runs by `N` so rewritten SQL can be compared.
    fn shape(sql: &str) -> String {
        let mut out = String::new();
        let mut in_num = false;
        for c in sql.chars() {
            if c.is_ascii_digit() || (in_num && c == '.') {
                if !in_num {
                    out.push('N');
                }
                in_num = true;
            } else {
                in_num = false;
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn random_call_becomes_a_non_negative_integer_literal() {
        let s = rw("INSERT INTO foo(id, v) VALUES(1, random())");
        assert_eq!(shape(&s.sql), "INSERT INTO foo(id, v) VALUES(N, N)");
        let lit = s
            .sql
            .trim_end_matches(')')
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        assert!(lit.parse::<i64>().is_ok_and(|v| v >= 0), "{lit}");
        assert!(!s.force_query);
        let s = rw("SELECT x-RANDOM ( ) FROM t");
        assert_eq!(shape(&s.sql), "SELECT x-N FROM t");
    }

    #[test]
    fn random_in_order_by_is_kept() {
        let s = rw("SELECT random() FROM t ORDER BY random() LIMIT random()");
        assert_eq!(shape(&s.sql), "SELECT N FROM t ORDER BY random() LIMIT N");
        let s = rw("SELECT group_concat(x ORDER BY random()), random() FROM t");
        assert_eq!(
            shape(&s.sql),
            "SELECT group_concat(x ORDER BY random()), N FROM t"
        );
        let s = rw(
            "INSERT INTO t SELECT * FROM (SELECT a FROM s ORDER BY random()) WHERE b < random()",
        );
        assert_eq!(
            shape(&s.sql),
            "INSERT INTO t SELECT * FROM (SELECT a FROM s ORDER BY random()) WHERE b < N"
        );
    }

    #[test]
    fn randomblob_becomes_a_blob_literal_of_n_bytes() {
        let s = rw("INSERT INTO t VALUES(hex(RANDOMBLOB(16)), randomblob(0))");
        let hex: Vec<&str> = s
            .sql
            .split("x'")
            .skip(1)
            .map(|p| p.split('\'').next().unwrap_or(""))
            .collect();
        assert_eq!(hex.len(), 2, "{}", s.sql);
        assert_eq!(hex[0].len(), 32);
        assert_eq!(hex[1].len(), 2);
        assert!(hex.iter().all(|h| h.chars().all(|c| c.is_ascii_hexdigit())));
        assert!(s.sql.starts_with("INSERT INTO t VALUES(hex(x'"));
        // Not an integer literal: left alone.
        assert_eq!(rw("SELECT randomblob(?)").sql, "SELECT randomblob(?)");
        assert_eq!(
            rw("SELECT randomblob(99999999999)").sql,
            "SELECT randomblob(99999999999)"
        );
    }

    #[test]
    fn strings_comments_and_identifiers_are_never_rewritten() {
        for sql in [
            "SELECT 'random()', \"random\", 'now' -- random() now\n FROM t",
            "SELECT t.random() /* random() */",
            "SELECT date(x) FROM \"now\"",
            "SELECT x FROM t WHERE v = 'now'",
        ] {
            assert_eq!(rw(sql).sql, sql);
        }
    }

    #[test]
    fn now_in_time_functions_becomes_a_julian_day() {
        let s = rw("INSERT INTO t VALUES(datetime('now'), date('NOW', '+1 day'), strftime('%s','now'), time(x), 'now')");
        assert_eq!(
            shape(&s.sql),
            "INSERT INTO t VALUES(datetime(N), date(N, '+N day'), strftime('%s',N), time(x), 'now')"
        );
        let s = rw("SELECT julianday('now'), unixepoch( 'now' ), timediff('now', date(  'now'))");
        assert_eq!(
            shape(&s.sql),
            "SELECT julianday(N), unixepoch( N ), timediff(N, date(  N))"
        );
    }

    #[test]
    fn julian_day_keeps_millisecond_precision() {
        assert_eq!(julian_day_from_unix_ms(0.0), "2440587.500000000");
        // 2026-02-13T10:42:13.307Z
        let ms = 1_770_979_333_307.0;
        let jd: f64 = julian_day_from_unix_ms(ms).parse().unwrap_or(0.0);
        // SQLite: iJD = (sqlite3_int64)(r*86400000.0 + 0.5), unix ms = iJD - 210866760000000.
        let back = (jd * 86_400_000.0 + 0.5).floor() - 210_866_760_000_000.0;
        assert_eq!(back, ms);
    }

    #[test]
    fn returning_sets_force_query() {
        assert!(rw("INSERT INTO foo(id,name) VALUES(?,?) RETURNING id, name").force_query);
        assert!(rw("update foo set x=1 returning *").force_query);
        assert!(rw("WITH c AS (SELECT 1) DELETE FROM foo WHERE id IN c RETURNING id").force_query);
        assert!(!rw("CREATE TABLE r (returning INTEGER)").force_query);
        assert!(!rw("SELECT returning FROM r").force_query);
        assert!(!rw("INSERT INTO foo VALUES('RETURNING')").force_query);
        assert!(!rw("INSERT INTO foo VALUES(1); SELECT returning FROM r").force_query);
    }

    #[test]
    fn opt_outs() {
        // Each one turned off on its own.
        const SQL: &str = "INSERT INTO foo VALUES(random(), datetime('now')) RETURNING *";
        let on = RewriteOpts::default();
        let noparse = rw_with(SQL, RewriteOpts { parse: false, ..on });
        assert_eq!(noparse.sql, SQL);
        assert!(!noparse.force_query);
        let norandom = rw_with(
            SQL,
            RewriteOpts {
                random: false,
                ..on
            },
        );
        assert_eq!(
            shape(&norandom.sql),
            "INSERT INTO foo VALUES(random(), datetime(N)) RETURNING *"
        );
        let notime = rw_with(SQL, RewriteOpts { time: false, ..on });
        assert_eq!(
            shape(&notime.sql),
            "INSERT INTO foo VALUES(N, datetime('now')) RETURNING *"
        );
        assert!(notime.force_query);
    }

    #[test]
    fn rewritten_sql_runs_in_sqlite() -> rusqlite::Result<()> {
        let conn = rusqlite::Connection::open_in_memory()?;
        let s = rw("SELECT random(), length(randomblob(5)), datetime('now') > '2020', unixepoch('now') > 1600000000");
        let (a, b, c, d): (i64, i64, bool, bool) = conn.query_row(&s.sql, [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        assert!(a >= 0);
        assert_eq!((b, c, d), (5, true, true));
        Ok(())
    }
}

#[cfg(test)]
mod analyze_tests {
    use super::*;

    #[test]
    fn analysis_shows_the_rewrite_or_the_syntax_error() {
        let o = RewriteOpts::default();
        let Analysis::Rewritten(r) = analyze("INSERT INTO foo VALUES(RANDOM())", &o) else {
            panic!("not rewritten")
        };
        assert!(!r.contains("RANDOM()"), "{r}");
        // A valid statement naming tables the scratch database lacks is not an error.
        assert_eq!(
            analyze("SELECT * FROM foo ORDER BY RANDOM()", &o),
            Analysis::Rewritten("SELECT * FROM foo ORDER BY RANDOM()".into())
        );
        let off = RewriteOpts { random: false, ..o };
        assert_eq!(
            analyze("INSERT INTO foo VALUES(RANDOM())", &off),
            Analysis::Rewritten("INSERT INTO foo VALUES(RANDOM())".into())
        );
        assert!(matches!(
            analyze("SLECT * FORM foo", &o),
            Analysis::SyntaxError(e) if e.contains("syntax error")
        ));
    }
}

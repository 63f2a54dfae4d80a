//! Query-string parsing and validation, as rqlite does it before routing.
//!
//! Owns: Go-compatible query decoding (`url.ParseQuery`), Go duration and integer parsing, and
//! the typed view of every query parameter rqlite reads.
//! Does not: apply defaults that depend on the endpoint (forward timeout, linearizable
//! timeout); the handlers do.
//!
//! rqlite rejects a bad query string with 400 and a plain-text message before it looks at the
//! path, so [`parse`] returns errors whose `Display` is that exact message.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::store::ReadLevel;

/// Why a query string was rejected. `Display` is the exact body rqlite sends (the HTTP layer
/// appends the newline that Go's `http.Error` adds).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// The query string itself does not decode; Go's `url.ParseQuery` message, e.g.
    /// `invalid URL escape "%zz"` or `invalid semicolon separator in query`.
    #[error("{0}")]
    Malformed(String),
    #[error("freshness_strict requires freshness")]
    FreshnessStrictWithoutFreshness,
    #[error("{0} is not a valid duration")]
    InvalidDuration(&'static str),
    #[error("{0} is not a valid integer")]
    InvalidInteger(&'static str),
    /// `q=` present but empty.
    #[error("query parameter not set")]
    EmptyQuery,
}

/// `/db/backup` format from `fmt` (any case, as rqlite 9.1.3+ reads it; anything else is
/// binary).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackupFormat {
    #[default]
    Binary,
    Sql,
    Delete,
}

/// Every query parameter rqlite reads, typed. Flags are presence-only: `?pretty=false` still
/// sets `pretty`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryParams {
    pub pretty: bool,
    pub timings: bool,
    pub transaction: bool,
    pub associative: bool,
    pub blob_array: bool,
    pub queue: bool,
    pub wait: bool,
    pub redirect: bool,
    pub raft_index: bool,
    pub noparse: bool,
    pub norwrandom: bool,
    pub norwtime: bool,
    pub noleader: bool,
    pub nonvoters: bool,
    pub sync: bool,
    pub freshness_strict: bool,
    pub qualify_columns: bool,
    pub vacuum: bool,
    pub compress: bool,
    pub bypass: bool,
    /// Negative Go durations are valid input; they are clamped to zero here.
    pub timeout: Option<Duration>,
    pub freshness: Option<Duration>,
    pub db_timeout: Option<Duration>,
    pub linearizable_timeout: Option<Duration>,
    pub retries: Option<i64>,
    pub trailing_logs: Option<i64>,
    /// Read-your-writes: the log index a read must see applied (sqlraft's, not rqlite's).
    pub min_index: Option<u64>,
    pub level: ReadLevel,
    /// `GET /db/query` statement; never `Some("")` (that is rejected).
    pub q: Option<String>,
    /// `/db/backup` format, raw; see [`QueryParams::backup_format`].
    pub fmt: Option<String>,
    /// `/db/backup?fmt=sql&tables=a,b`: trimmed, empty names dropped; `None` if none remain.
    pub tables: Option<Vec<String>>,
    /// `/status?key=` and `/debug/vars?key=`.
    pub key: Option<String>,
    /// `/nodes?ver=`.
    pub ver: Option<String>,
    /// Every key with its first value, for anything not typed above. A BTreeMap: a request
    /// carries a handful of keys, and SipHash made a lookup cost more than the comparisons
    /// (issue 12's read profile).
    pub raw: BTreeMap<String, String>,
}

impl QueryParams {
    pub fn backup_format(&self) -> BackupFormat {
        match self.fmt.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("sql") => BackupFormat::Sql,
            Some("delete") => BackupFormat::Delete,
            _ => BackupFormat::Binary,
        }
    }

    /// The first value of `key`, if present (`""` for a bare `?key`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.raw.get(key).map(String::as_str)
    }

    pub fn has(&self, key: &str) -> bool {
        self.raw.contains_key(key)
    }
}

/// Parses and validates a raw query string (without the `?`), in rqlite v8.43.3's order:
/// decoding, `freshness_strict` without `freshness`, durations (`timeout`, `freshness`,
/// `db_timeout`, `linearizable_timeout`), integers (`retries`, `trailing_logs`), then `q=`.
pub fn parse(raw_query: Option<&str>) -> Result<QueryParams, ParamError> {
    let raw = parse_query(raw_query.unwrap_or(""))?;
    let mut p = QueryParams::default();
    // One pass over the few keys a request carries, instead of a lookup for each of the ~35
    // names below; the values to check are kept and checked afterwards, in rqlite's order.
    let (mut timeout, mut freshness, mut db_timeout, mut linearizable_timeout) =
        (None, None, None, None);
    let (mut retries, mut trailing_logs, mut min_index, mut tables) = (None, None, None, None);
    for (k, v) in &raw {
        let v = v.as_str();
        match k.as_str() {
            "pretty" => p.pretty = true,
            "timings" => p.timings = true,
            "transaction" => p.transaction = true,
            "associative" => p.associative = true,
            "blob_array" => p.blob_array = true,
            "queue" => p.queue = true,
            "wait" => p.wait = true,
            "redirect" => p.redirect = true,
            "raft_index" => p.raft_index = true,
            "noparse" => p.noparse = true,
            "norwrandom" => p.norwrandom = true,
            "norwtime" => p.norwtime = true,
            "noleader" => p.noleader = true,
            "nonvoters" => p.nonvoters = true,
            "sync" => p.sync = true,
            "freshness_strict" => p.freshness_strict = true,
            "qualify_columns" => p.qualify_columns = true,
            "vacuum" => p.vacuum = true,
            "compress" => p.compress = true,
            "bypass" => p.bypass = true,
            "timeout" => timeout = Some(v),
            "freshness" => freshness = Some(v),
            "db_timeout" => db_timeout = Some(v),
            "linearizable_timeout" => linearizable_timeout = Some(v),
            "retries" => retries = Some(v),
            "trailing_logs" => trailing_logs = Some(v),
            "min_index" => min_index = Some(v),
            "level" => p.level = ReadLevel::from_param(v),
            "q" => p.q = Some(v.to_string()),
            "fmt" => p.fmt = Some(v.to_string()),
            "tables" => tables = Some(v),
            "key" => p.key = Some(v.to_string()),
            "ver" => p.ver = Some(v.to_string()),
            _ => {}
        }
    }

    if p.freshness_strict && freshness.is_none() {
        return Err(ParamError::FreshnessStrictWithoutFreshness);
    }
    let duration = |k: &'static str, v: Option<&str>| -> Result<Option<Duration>, ParamError> {
        v.map(|v| parse_go_duration(v).ok_or(ParamError::InvalidDuration(k)))
            .transpose()
    };
    p.timeout = duration("timeout", timeout)?;
    p.freshness = duration("freshness", freshness)?;
    p.db_timeout = duration("db_timeout", db_timeout)?;
    p.linearizable_timeout = duration("linearizable_timeout", linearizable_timeout)?;
    // Rust's i64 parser accepts what Go's strconv.Atoi does: optional sign, digits.
    let integer = |k: &'static str, v: Option<&str>| -> Result<Option<i64>, ParamError> {
        v.map(|v| v.parse::<i64>().map_err(|_| ParamError::InvalidInteger(k)))
            .transpose()
    };
    p.retries = integer("retries", retries)?;
    p.trailing_logs = integer("trailing_logs", trailing_logs)?;
    // A log index: a non-negative integer.
    p.min_index = min_index
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| ParamError::InvalidInteger("min_index"))
        })
        .transpose()?;
    if p.q.as_deref() == Some("") {
        return Err(ParamError::EmptyQuery);
    }
    p.tables = tables.and_then(|t| {
        let names: Vec<String> = t
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        (!names.is_empty()).then_some(names)
    });
    p.raw = raw;
    Ok(p)
}

/// Go's `url.ParseQuery`, keeping only the first value of each key. Like Go, it decodes every
/// pair and reports the first escape error, except that a later `;` error replaces it.
fn parse_query(query: &str) -> Result<BTreeMap<String, String>, ParamError> {
    let mut map = BTreeMap::new();
    let mut err: Option<String> = None;
    for pair in query.split('&') {
        if pair.contains(';') {
            err = Some("invalid semicolon separator in query".to_string());
            continue;
        }
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = query_unescape(k).and_then(|k| query_unescape(v).map(|v| (k, v)));
        match decoded {
            Ok((k, v)) => {
                map.entry(k).or_insert(v);
            }
            Err(e) => {
                err.get_or_insert(e);
            }
        }
    }
    match err {
        Some(e) => Err(ParamError::Malformed(e)),
        None => Ok(map),
    }
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte. The result is made a Rust string
/// lossily (Go keeps invalid UTF-8; nothing rqlite reads can use it).
fn query_unescape(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = b.get(i + 1).and_then(|c| (*c as char).to_digit(16));
                let lo = b.get(i + 2).and_then(|c| (*c as char).to_digit(16));
                match (hi, lo) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        let end = (i + 3).min(b.len());
                        return Err(format!("invalid URL escape {}", go_quote(&b[i..end])));
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Go's `strconv.Quote`, close enough for the few bytes of an escape error.
fn go_quote(b: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{b}' => out.push_str("\\v"),
                c if (c as u32) < 0x80 && (c.is_ascii_control()) => {
                    out.push_str(&format!("\\x{:02x}", c as u32));
                }
                c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out.push('"');
    out
}

/// Go's `time.ParseDuration`, with a negative result clamped to zero (Go accepts negative
/// durations; nothing here can wait a negative time). `None` means Go would reject it.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let ns = crate::duration::parse_nanos(s)?;
    Some(Duration::from_nanos(u64::try_from(ns).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str) -> Result<QueryParams, ParamError> {
        parse(Some(q))
    }

    fn msg(q: &str) -> String {
        match p(q) {
            Ok(_) => "ok".to_string(),
            Err(e) => e.to_string(),
        }
    }

    /// Each query string is refused with its message.
    fn refused(cases: &[(&str, &str)]) {
        for (q, want) in cases {
            assert_eq!(msg(q), *want, "{q:?}");
        }
    }

    #[test]
    fn go_durations() {
        let d = |s| crate::duration::parse_nanos(s);
        assert_eq!(d("0"), Some(0));
        assert_eq!(d("-0"), Some(0));
        assert_eq!(d("+0"), Some(0));
        assert_eq!(d("1ns"), Some(1));
        assert_eq!(d("500ms"), Some(500_000_000));
        assert_eq!(d("2s"), Some(2_000_000_000));
        assert_eq!(d("1m30s"), Some(90_000_000_000));
        assert_eq!(d("1h30m"), Some(5_400_000_000_000));
        assert_eq!(d("1.5h"), Some(5_400_000_000_000));
        assert_eq!(d(".5s"), Some(500_000_000));
        assert_eq!(d("1.s"), Some(1_000_000_000));
        assert_eq!(d("3us"), Some(3_000));
        assert_eq!(d("3µs"), Some(3_000));
        assert_eq!(d("3μs"), Some(3_000));
        assert_eq!(d("1.000000001s"), Some(1_000_000_001));
        assert_eq!(d("-1.5s"), Some(-1_500_000_000));
        assert_eq!(d("2562047h47m16.854775807s"), Some(i64::MAX));
        assert_eq!(d("-2562047h47m16.854775808s"), Some(i64::MIN));
        assert_eq!(d("2562047h47m16.854775808s"), None);
        assert_eq!(d("9223372036854775807ns"), Some(i64::MAX));
        assert_eq!(d("9223372036854775808ns"), None);
        for bad in [
            "", "5", "00", "-", "+", ".", ".s", "1x", "abc", "1h-2m", "1 s", "s", "1S", "1sec",
            "3mu",
        ] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
        assert_eq!(parse_go_duration("-1s"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("5"), None);
    }

    #[test]
    fn invalid_durations_c19_c20_c22_c107() {
        assert_eq!(msg("timeout=5"), "timeout is not a valid duration");
        assert_eq!(
            msg("db_timeout=abc&q=SELECT%201"),
            "db_timeout is not a valid duration"
        );
        assert_eq!(
            msg("level=none&freshness=1x&q=SELECT%201"),
            "freshness is not a valid duration"
        );
        assert_eq!(
            msg("level=linearizable&linearizable_timeout=bad&q=SELECT%201"),
            "linearizable_timeout is not a valid duration"
        );
        // A bare key has the value "", which is not a duration.
        assert_eq!(msg("timeout"), "timeout is not a valid duration");
    }

    #[test]
    fn freshness_strict_requires_freshness_c21() {
        assert_eq!(
            msg("level=none&freshness_strict&q=SELECT%201"),
            "freshness_strict requires freshness"
        );
        // rqlite checks this before the durations.
        assert_eq!(
            msg("timeout=bad&freshness_strict"),
            "freshness_strict requires freshness"
        );
        let qp = p("level=none&freshness=1ns&freshness_strict").unwrap();
        assert!(qp.freshness_strict);
        assert_eq!(qp.freshness, Some(Duration::from_nanos(1)));
    }

    #[test]
    fn check_order_durations_then_integers_then_q() {
        assert_eq!(
            msg("retries=x&timeout=bad"),
            "timeout is not a valid duration"
        );
        assert_eq!(
            msg("linearizable_timeout=bad&timeout=bad"),
            "timeout is not a valid duration"
        );
        assert_eq!(msg("q=&retries=x"), "retries is not a valid integer");
        assert_eq!(
            msg("trailing_logs=x&retries=y"),
            "retries is not a valid integer"
        );
    }

    #[test]
    fn min_index_is_a_non_negative_integer() {
        refused(&[
            ("min_index=x", "min_index is not a valid integer"),
            ("min_index=-1", "min_index is not a valid integer"),
            ("min_index=1.5", "min_index is not a valid integer"),
            ("min_index=", "min_index is not a valid integer"),
        ]);
        assert_eq!(p("min_index=42").unwrap().min_index, Some(42));
        assert_eq!(p("q=x").unwrap().min_index, None);
    }

    #[test]
    fn empty_q_c23_and_absent_q_c24() {
        assert_eq!(msg("q="), "query parameter not set");
        assert_eq!(msg("q"), "query parameter not set");
        assert_eq!(p("").unwrap().q, None);
        assert_eq!(parse(None).unwrap(), QueryParams::default());
    }

    #[test]
    fn invalid_integers_c25_c169() {
        refused(&[
            ("retries=x", "retries is not a valid integer"),
            ("trailing_logs=x", "trailing_logs is not a valid integer"),
            ("retries=1.5", "retries is not a valid integer"),
            ("retries=", "retries is not a valid integer"),
            // `+` is a space in a query string, and Atoi rejects " 5".
            ("retries=+5", "retries is not a valid integer"),
        ]);
        let qp = p("retries=-3&trailing_logs=%2B5").unwrap();
        assert_eq!(qp.retries, Some(-3));
        assert_eq!(qp.trailing_logs, Some(5));
    }

    #[test]
    fn flags_are_presence_only() {
        let qp = p("pretty=false&transaction=false&timings&queue=0&wait=no").unwrap();
        assert!(qp.pretty && qp.transaction && qp.timings && qp.queue && qp.wait);
        assert!(!qp.associative && !qp.redirect);
        let qp = p("associative&blob_array&redirect&raft_index&noparse&norwrandom&norwtime&noleader&nonvoters&sync&qualify_columns&vacuum&compress&bypass").unwrap();
        assert!(qp.associative && qp.blob_array && qp.redirect && qp.raft_index);
        assert!(qp.noparse && qp.norwrandom && qp.norwtime && qp.noleader && qp.nonvoters);
        assert!(qp.sync && qp.qualify_columns && qp.vacuum && qp.compress && qp.bypass);
    }

    #[test]
    fn keys_are_case_sensitive_and_first_value_wins() {
        let qp = p("PRETTY&q=SELECT%201&q=SELECT%202").unwrap();
        assert!(!qp.pretty);
        assert_eq!(qp.q.as_deref(), Some("SELECT 1"));
        assert!(qp.has("PRETTY"));
        // An invalid later value for a repeated key is not looked at.
        assert!(p("timeout=1s&timeout=bad").is_ok());
    }

    #[test]
    fn decoding_plus_and_percent() {
        let qp = p("q=SELECT+*+FROM+foo%20WHERE%20id%3D1&key=store").unwrap();
        assert_eq!(qp.q.as_deref(), Some("SELECT * FROM foo WHERE id=1"));
        assert_eq!(qp.key.as_deref(), Some("store"));
        let qp = p("&&q=a%2Bb&").unwrap();
        assert_eq!(qp.q.as_deref(), Some("a+b"));
        let qp = p("q=%C3%A9").unwrap();
        assert_eq!(qp.q.as_deref(), Some("é"));
        let qp = p("q=a=b").unwrap();
        assert_eq!(qp.q.as_deref(), Some("a=b"));
    }

    #[test]
    fn malformed_query_strings_are_rejected_like_go() {
        refused(&[
            ("q=100%", "invalid URL escape \"%\""),
            ("q=%zz", "invalid URL escape \"%zz\""),
            ("q=%4", "invalid URL escape \"%4\""),
            ("q=%a%", "invalid URL escape \"%a%\""),
            ("pretty;timings", "invalid semicolon separator in query"),
            // The first escape error is kept; a later semicolon error replaces it.
            ("a=%zz&b=%yy", "invalid URL escape \"%zz\""),
            ("a=%zz&b;c", "invalid semicolon separator in query"),
            ("a;b&c=%zz", "invalid semicolon separator in query"),
        ]);
    }

    #[test]
    fn levels() {
        let lvl = |q: &str| p(q).unwrap().level;
        assert_eq!(lvl(""), ReadLevel::Weak);
        assert_eq!(lvl("level=none"), ReadLevel::None);
        assert_eq!(lvl("level=NONE"), ReadLevel::None);
        assert_eq!(lvl("level=weak"), ReadLevel::Weak);
        assert_eq!(lvl("level=Strong"), ReadLevel::Strong);
        assert_eq!(lvl("level=linearizable"), ReadLevel::Linearizable);
        assert_eq!(lvl("level=auto"), ReadLevel::Auto);
        assert_eq!(lvl("level=bogus"), ReadLevel::Weak);
        assert_eq!(lvl("level"), ReadLevel::Weak);
    }

    #[test]
    fn typed_values() {
        let qp = p("timeout=2s&db_timeout=10ms&linearizable_timeout=1m&freshness=1.5s").unwrap();
        assert_eq!(qp.timeout, Some(Duration::from_secs(2)));
        assert_eq!(qp.db_timeout, Some(Duration::from_millis(10)));
        assert_eq!(qp.linearizable_timeout, Some(Duration::from_secs(60)));
        assert_eq!(qp.freshness, Some(Duration::from_millis(1500)));
        assert_eq!(p("timeout=-5s").unwrap().timeout, Some(Duration::ZERO));
        let qp = p("fmt=sql&tables=a,%20b%20,,c&ver=2").unwrap();
        assert_eq!(qp.backup_format(), BackupFormat::Sql);
        assert_eq!(
            qp.tables,
            Some(vec!["a".to_string(), "b".to_string(), "c".to_string()])
        );
        assert_eq!(qp.ver.as_deref(), Some("2"));
        assert_eq!(p("tables=,").unwrap().tables, None);
        assert_eq!(
            p("fmt=delete").unwrap().backup_format(),
            BackupFormat::Delete
        );
        // rqlite 9.1.3 made the format case-insensitive (8.x answered a binary copy).
        assert_eq!(p("fmt=SQL").unwrap().backup_format(), BackupFormat::Sql);
        assert_eq!(p("fmt=xml").unwrap().backup_format(), BackupFormat::Binary);
        assert_eq!(p("").unwrap().backup_format(), BackupFormat::Binary);
    }
}

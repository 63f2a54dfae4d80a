//! A JSON writer that produces the same bytes as Go's `encoding/json`.
//!
//! Owns: the value tree for HTTP responses, compact (`json.Marshal`) and pretty
//! (`json.MarshalIndent(v, "", "    ")`) output, and rqlite's per-statement result objects and
//! top-level response envelope.
//! Does not: pick status codes or headers, or decide which options an endpoint uses.
//!
//! Clients and golden tests compare response bytes, so serde_json's output (different string
//! escaping, float formatting) is not good enough here.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;

use crate::command::{Outcome, Rows, StmtResult, Value};

/// Bytes reserved for a rendered document at first: a point read's answer fits, so it is
/// written without growing the buffer four or five times.
const OUTPUT_START: usize = 256;

/// A JSON value. Objects keep insertion order: Go structs have a fixed field order, and Go
/// maps are written sorted (use [`Json::sorted`] for those).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    /// NaN and infinities are written as `null` (Go would fail the whole response).
    Float(f64),
    Str(String),
    /// A string made from raw bytes, as Go writes a `string` holding them: each byte of an
    /// invalid UTF-8 sequence becomes `\ufffd`.
    Bytes(Vec<u8>),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// An object built the way Go writes a `map[string]T`: keys sorted bytewise, and a
    /// repeated key keeps its last value.
    pub fn sorted<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Json)>) -> Json {
        let map: BTreeMap<String, Json> = pairs.into_iter().map(|(k, v)| (k.into(), v)).collect();
        Json::Obj(map.into_iter().collect())
    }

    /// `json.Marshal`.
    pub fn to_compact(&self) -> String {
        let mut out = String::with_capacity(OUTPUT_START);
        self.write(&mut out, None);
        out
    }

    /// `json.MarshalIndent(v, "", "    ")`.
    pub fn to_pretty(&self) -> String {
        let mut out = String::with_capacity(OUTPUT_START);
        self.write(&mut out, Some(0));
        out
    }

    /// Compact or pretty, as the `pretty` query flag asks.
    pub fn render(&self, pretty: bool) -> String {
        if pretty {
            self.to_pretty()
        } else {
            self.to_compact()
        }
    }

    fn write_scalar(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Json::Uint(u) => {
                let _ = write!(out, "{u}");
            }
            Json::Float(f) => write_float(out, *f),
            Json::Str(s) => write_string(out, s),
            Json::Bytes(b) => write_bytes_string(out, b),
            // Containers are handled by the callers.
            Json::Arr(_) | Json::Obj(_) => {}
        }
    }

    /// Compact when `level` is `None`; else pretty at that indentation depth, mirroring
    /// json.Indent: `"key": value`, empty containers stay `[]`/`{}`, no trailing newline.
    fn write(&self, out: &mut String, level: Option<usize>) {
        let inner = level.map(|l| l + 1);
        match self {
            Json::Arr(items) => write_items(out, ('[', ']'), level, items, |out, item| {
                item.write(out, inner);
            }),
            Json::Obj(fields) => write_items(out, ('{', '}'), level, fields, |out, (k, v)| {
                write_string(out, k);
                out.push_str(if level.is_some() { ": " } else { ":" });
                v.write(out, inner);
            }),
            _ => self.write_scalar(out),
        }
    }
}

/// A container's items, comma-separated; when pretty, each on a line of its own one level in,
/// and the closing bracket on a line at the container's `level`.
fn write_items<T>(
    out: &mut String,
    (open, close): (char, char),
    level: Option<usize>,
    items: &[T],
    mut write_item: impl FnMut(&mut String, &T),
) {
    out.push(open);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        newline_indent(out, level.map(|l| l + 1));
        write_item(out, item);
    }
    if !items.is_empty() {
        newline_indent(out, level);
    }
    out.push(close);
}

/// Pretty output's line break and indentation; nothing when compact (`None`).
fn newline_indent(out: &mut String, level: Option<usize>) {
    let Some(level) = level else {
        return;
    };
    out.push('\n');
    for _ in 0..level {
        out.push_str("    ");
    }
}

/// Go's float64 encoding: shortest round-trip digits; exponent form only below 1e-6 or from
/// 1e21 up, with a signed, unpadded exponent (`1e-7`, `1e+21`).
fn write_float(out: &mut String, f: f64) {
    if !f.is_finite() {
        out.push_str("null");
        return;
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Rust's `{:e}` is shortest round-trip too, but writes `1e300` where Go writes `1e+300`.
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => {
                let _ = write!(out, "{mantissa}e+{exp}");
            }
            _ => out.push_str(&s),
        }
    } else {
        // Display never uses an exponent and prints `1.0` as `1`, like Go's 'f' format.
        let _ = write!(out, "{f}");
    }
}

/// A quoted string escaped as Go does with HTML escaping on (rqlite marshals through
/// `json.Marshal`, which re-escapes `<`, `>`, `&` even in pre-encoded output).
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    write_string_body(out, s);
    out.push('"');
}

fn write_string_body(out: &mut String, s: &str) {
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc: Option<&str> = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '<' => Some("\\u003c"),
            '>' => Some("\\u003e"),
            '&' => Some("\\u0026"),
            '\u{2028}' => Some("\\u2028"),
            '\u{2029}' => Some("\\u2029"),
            // Go writes `\ufffd` for bytes that are not UTF-8. Our `Value::Text` is a Rust
            // string, so such bytes arrive here already replaced by U+FFFD; escaping every U+FFFD
            // keeps those responses byte-identical to rqlite's (golden C120) and is the same
            // string to any JSON reader.
            '\u{fffd}' => Some("\\ufffd"),
            c if (c as u32) < 0x20 => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
}

fn write_bytes_string(out: &mut String, b: &[u8]) {
    out.push('"');
    for chunk in b.utf8_chunks() {
        write_string_body(out, chunk.valid());
        for _ in chunk.invalid() {
            out.push_str("\\ufffd");
        }
    }
    out.push('"');
}

/// How per-statement results are shaped; set by the endpoint and its query flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderOpts {
    /// `associative`: query results as `{"types":{..},"rows":[{..}]}`. rqlite honours it on
    /// `/db/query` and `/db/request` only, never on `/db/execute` (golden C60, C63).
    pub associative: bool,
    /// `blob_array`: BLOBs as arrays of byte values instead of base64.
    pub blob_array: bool,
    /// `timings`: include each statement's nonzero `time`.
    pub timings: bool,
    /// Execute-shaped results gain `"rows":null` (`/db/request?associative` only, C131).
    pub exec_rows_null: bool,
    /// `qualify_columns` (rqlite 10, `/db/query` and `/db/request`): column names as
    /// `table.column` where SQLite knows the column's table.
    pub qualify_columns: bool,
}

/// One result value as rqlite writes it.
pub fn value_json(v: &Value, blob_array: bool) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Int(i) => Json::Int(*i),
        Value::Real(f) => Json::Float(*f),
        Value::Text(s) => Json::Str(s.clone()),
        Value::Bool(b) => Json::Bool(*b),
        Value::Blob(b) if blob_array => {
            Json::Arr(b.iter().map(|x| Json::Int(i64::from(*x))).collect())
        }
        Value::Blob(b) => Json::Str(base64::engine::general_purpose::STANDARD.encode(b)),
    }
}

/// One statement's result object, exactly as rqlite shapes it (zero/empty fields omitted).
pub fn result_json(r: &StmtResult, o: &RenderOpts) -> Json {
    let time = (o.timings && r.time != 0.0).then_some(r.time);
    match &r.outcome {
        Outcome::Exec {
            last_insert_id,
            rows_affected,
        } => {
            let mut f = Vec::with_capacity(4);
            if *last_insert_id != 0 {
                f.push(("last_insert_id".to_string(), Json::Int(*last_insert_id)));
            }
            if *rows_affected != 0 {
                f.push(("rows_affected".to_string(), Json::Int(*rows_affected)));
            }
            if let Some(t) = time {
                f.push(("time".to_string(), Json::Float(t)));
            }
            if o.exec_rows_null {
                f.push(("rows".to_string(), Json::Null));
            }
            Json::Obj(f)
        }
        Outcome::Rows(rows) => {
            let qualified;
            let columns = if o.qualify_columns {
                qualified = rows.qualified_columns();
                &qualified
            } else {
                &rows.columns
            };
            if o.associative {
                associative_rows_json(rows, columns, time, o.blob_array)
            } else {
                rows_json(rows, columns, time, o.blob_array)
            }
        }
        // rqlite never sets a time on a failed statement.
        Outcome::Error(msg) => Json::Obj(vec![("error".to_string(), Json::Str(msg.clone()))]),
    }
}

/// [`result_json`] for `/db/query`, where rqlite differs in one case: with `associative`, a
/// failed statement is `{"rows":[],"error":..}` (its associative-rows struct never omits
/// `rows`), while `/db/request` writes `{"error":..}`. Not covered by the golden transcripts;
/// taken from rqlite v8.43.3's `command/encoding/json.go`.
pub fn query_result_json(r: &StmtResult, o: &RenderOpts) -> Json {
    match &r.outcome {
        Outcome::Error(msg) if o.associative => Json::Obj(vec![
            ("rows".to_string(), Json::Arr(Vec::new())),
            ("error".to_string(), Json::Str(msg.clone())),
        ]),
        _ => result_json(r, o),
    }
}

/// `columns` are the names to write: `rows.columns`, or their qualified form.
fn rows_json(rows: &Rows, columns: &[String], time: Option<f64>, blob_array: bool) -> Json {
    let mut f = Vec::with_capacity(4);
    if !columns.is_empty() {
        f.push((
            "columns".to_string(),
            Json::Arr(columns.iter().cloned().map(Json::Str).collect()),
        ));
    }
    if !rows.types.is_empty() {
        f.push((
            "types".to_string(),
            Json::Arr(rows.types.iter().cloned().map(Json::Str).collect()),
        ));
    }
    if !rows.values.is_empty() {
        let values = rows
            .values
            .iter()
            .map(|row| Json::Arr(row.iter().map(|v| value_json(v, blob_array)).collect()))
            .collect();
        f.push(("values".to_string(), Json::Arr(values)));
    }
    if let Some(t) = time {
        f.push(("time".to_string(), Json::Float(t)));
    }
    Json::Obj(f)
}

// Go builds these from maps: keys sorted, a repeated column name keeps its last value.
fn associative_rows_json(
    rows: &Rows,
    columns: &[String],
    time: Option<f64>,
    blob_array: bool,
) -> Json {
    let mut f = Vec::with_capacity(3);
    let types: Vec<(String, Json)> = columns
        .iter()
        .zip(&rows.types)
        .map(|(c, t)| (c.clone(), Json::Str(t.clone())))
        .collect();
    if !types.is_empty() {
        f.push(("types".to_string(), Json::sorted(types)));
    }
    let objs = rows
        .values
        .iter()
        .map(|row| {
            Json::sorted(columns.iter().enumerate().map(|(i, c)| {
                let v = row.get(i).map_or(Json::Null, |v| value_json(v, blob_array));
                (c.clone(), v)
            }))
        })
        .collect();
    f.push(("rows".to_string(), Json::Arr(objs)));
    if let Some(t) = time {
        f.push(("time".to_string(), Json::Float(t)));
    }
    Json::Obj(f)
}

/// All statements' result objects, in statement order.
pub fn results_json(results: &[StmtResult], o: &RenderOpts) -> Vec<Json> {
    results.iter().map(|r| result_json(r, o)).collect()
}

/// The top-level response of the data endpoints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Envelope {
    /// Always written, `[]` when empty. (rqlite can also put a top-level `error` here with a
    /// 200; sqlraft answers such failures with a status code instead.)
    pub results: Vec<Json>,
    /// Whole-request seconds (`timings`); omitted when `None` or zero.
    pub time: Option<f64>,
    /// Queued writes; omitted when `None` or zero.
    pub sequence_number: Option<i64>,
    /// `raft_index` flag; omitted when `None` or zero (reads not through the log).
    pub raft_index: Option<u64>,
}

impl Envelope {
    /// `{"results":[..],"time":..,"sequence_number":..,"raft_index":..}` in that key order.
    /// Consumes the envelope: its results move into the tree instead of being copied.
    pub fn into_json(self) -> Json {
        let mut f = vec![("results".to_string(), Json::Arr(self.results))];
        if let Some(t) = self.time.filter(|t| *t != 0.0) {
            f.push(("time".to_string(), Json::Float(t)));
        }
        if let Some(n) = self.sequence_number.filter(|n| *n != 0) {
            f.push(("sequence_number".to_string(), Json::Int(n)));
        }
        if let Some(n) = self.raft_index.filter(|n| *n != 0) {
            f.push(("raft_index".to_string(), Json::Uint(n)));
        }
        Json::Obj(f)
    }
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;

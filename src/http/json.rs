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
        let mut out = String::new();
        self.write(&mut out, None);
        out
    }

    /// `json.MarshalIndent(v, "", "    ")`.
    pub fn to_pretty(&self) -> String {
        let mut out = String::new();
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
    pub fn to_json(&self) -> Json {
        let mut f = vec![("results".to_string(), Json::Arr(self.results.clone()))];
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
mod tests {
    use super::*;

    fn exec(lid: i64, ra: i64, time: f64) -> StmtResult {
        StmtResult {
            outcome: Outcome::Exec {
                last_insert_id: lid,
                rows_affected: ra,
            },
            time,
        }
    }

    fn rows(columns: &[&str], types: &[&str], values: Vec<Vec<Value>>, time: f64) -> StmtResult {
        StmtResult {
            outcome: Outcome::Rows(Rows {
                columns: columns.iter().map(|s| s.to_string()).collect(),
                types: types.iter().map(|s| s.to_string()).collect(),
                values,
                tables: Vec::new(),
            }),
            time,
        }
    }

    fn err(msg: &str) -> StmtResult {
        StmtResult {
            outcome: Outcome::Error(msg.to_string()),
            time: 0.0,
        }
    }

    fn envelope(results: &[StmtResult], o: &RenderOpts) -> Envelope {
        Envelope {
            results: results_json(results, o),
            ..Envelope::default()
        }
    }

    /// Checks a body against rqlite's, whose length is the golden response's Content-Length.
    fn assert_golden(body: String, want: &str, content_length: usize) {
        assert_eq!(body, want);
        assert_eq!(body.len(), content_length);
    }

    fn float(f: f64) -> String {
        Json::Float(f).to_compact()
    }

    #[test]
    fn floats_are_formatted_like_go() {
        assert_eq!(float(1.0), "1");
        assert_eq!(float(2.5), "2.5");
        assert_eq!(float(1e-7), "1e-7");
        assert_eq!(float(1e300), "1e+300");
        assert_eq!(float(1.5e-10), "1.5e-10");
        assert_eq!(float(1e21), "1e+21");
        assert_eq!(float(-1e21), "-1e+21");
        assert_eq!(float(1e20), "100000000000000000000");
        assert_eq!(float(123456789012.5), "123456789012.5");
        assert_eq!(float(1e-6), "0.000001");
        assert_eq!(float(9.99e-7), "9.99e-7");
        assert_eq!(float(0.1), "0.1");
        assert_eq!(float(0.0), "0");
        assert_eq!(float(-0.0), "-0");
        assert_eq!(float(1700000000.5), "1700000000.5");
        assert_eq!(float(2.2250738585072014e-308), "2.2250738585072014e-308");
        assert_eq!(float(f64::NAN), "null");
        assert_eq!(float(f64::INFINITY), "null");
    }

    #[test]
    fn strings_are_escaped_like_go_with_html_escaping() {
        let s = Json::Str("a\"b\\c\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}<>&\u{2028}\u{2029}é☃😀".into());
        assert_eq!(
            s.to_compact(),
            r#""a\"b\\c\n\r\t\b\f\u0000\u001f"#.to_string()
                + "\u{7f}"
                + r#"\u003c\u003e\u0026\u2028\u2029"#
                + "é☃😀\""
        );
    }

    #[test]
    fn raw_bytes_replace_each_invalid_byte_with_an_escape() {
        assert_eq!(Json::Bytes(vec![0, 0xff]).to_compact(), r#""\u0000\ufffd""#);
        assert_eq!(
            Json::Bytes(vec![0xca, 0xfe]).to_compact(),
            r#""\ufffd\ufffd""#
        );
        assert_eq!(
            Json::Bytes(vec![b'a', 0xe2, 0x82, b'b']).to_compact(),
            r#""a\ufffd\ufffdb""#
        );
        assert_eq!(Json::Bytes("ok ☃".into()).to_compact(), "\"ok ☃\"");
    }

    #[test]
    fn lossy_text_matches_golden_c120_row_10() {
        let text = String::from_utf8_lossy(&[0, 0xff]).into_owned();
        assert_eq!(Json::Str(text).to_compact(), r#""\u0000\ufffd""#);
    }

    #[test]
    fn sorted_objects_keep_the_last_duplicate() {
        let j = Json::sorted([
            ("b", Json::Int(1)),
            ("a", Json::Int(2)),
            ("b", Json::Int(3)),
        ]);
        assert_eq!(j.to_compact(), r#"{"a":2,"b":3}"#);
    }

    #[test]
    fn ddl_and_zero_fields_are_omitted_c26_c68() {
        let o = RenderOpts::default();
        assert_eq!(
            envelope(&[exec(0, 0, 0.0)], &o).to_json().to_compact(),
            r#"{"results":[{}]}"#
        );
        assert_eq!(
            envelope(&[exec(99, 0, 0.0)], &o).to_json().to_compact(),
            r#"{"results":[{"last_insert_id":99}]}"#
        );
    }

    #[test]
    fn timings_shape_c28() {
        let o = RenderOpts {
            timings: true,
            ..RenderOpts::default()
        };
        let mut env = envelope(&[exec(2, 1, 0.00012), exec(2, 1, 2.5e-7)], &o);
        env.time = Some(0.0015);
        assert_eq!(
            env.to_json().to_compact(),
            r#"{"results":[{"last_insert_id":2,"rows_affected":1,"time":0.00012},{"last_insert_id":2,"rows_affected":1,"time":2.5e-7}],"time":0.0015}"#
        );
        // Without the flag, stored times are not written.
        let o = RenderOpts::default();
        assert_eq!(
            envelope(&[exec(2, 1, 0.00012)], &o).to_json().to_compact(),
            r#"{"results":[{"last_insert_id":2,"rows_affected":1}]}"#
        );
    }

    #[test]
    fn pretty_execute_c29() {
        let env = envelope(&[exec(3, 1, 0.0)], &RenderOpts::default());
        let out = env.to_json().to_pretty();
        assert_eq!(
            out,
            "{\n    \"results\": [\n        {\n            \"last_insert_id\": 3,\n            \"rows_affected\": 1\n        }\n    ]\n}"
        );
        assert_eq!(out.len(), 110);
    }

    #[test]
    fn pretty_query_with_timings_c86() {
        let o = RenderOpts {
            timings: true,
            ..RenderOpts::default()
        };
        let mut env = envelope(
            &[rows(&["id"], &["integer"], vec![vec![Value::Int(1)]], 0.5)],
            &o,
        );
        env.time = Some(0.25);
        let want = r#"{
    "results": [
        {
            "columns": [
                "id"
            ],
            "types": [
                "integer"
            ],
            "values": [
                [
                    1
                ]
            ],
            "time": 0.5
        }
    ],
    "time": 0.25
}"#;
        assert_eq!(env.to_json().to_pretty(), want);
    }

    #[test]
    fn pretty_associative_empty_result_c145() {
        let o = RenderOpts {
            associative: true,
            exec_rows_null: true,
            ..RenderOpts::default()
        };
        let env = envelope(
            &[rows(&["id", "name"], &["integer", "text"], vec![], 0.0)],
            &o,
        );
        let out = env.to_json().to_pretty();
        let want = r#"{
    "results": [
        {
            "types": {
                "id": "integer",
                "name": "text"
            },
            "rows": []
        }
    ]
}"#;
        assert_eq!(out, want);
        assert_eq!(out.len(), 171);
    }

    #[test]
    fn empty_containers_in_pretty_output() {
        let j = Json::Obj(vec![
            ("a".into(), Json::Arr(vec![])),
            ("b".into(), Json::Obj(vec![])),
        ]);
        assert_eq!(j.to_pretty(), "{\n    \"a\": [],\n    \"b\": {}\n}");
        assert_eq!(Json::Arr(vec![]).to_pretty(), "[]");
        assert_eq!(
            Envelope::default().to_json().to_pretty(),
            "{\n    \"results\": []\n}"
        );
    }

    #[test]
    fn all_value_kinds_c120_row_1_and_2() {
        let r = rows(
            &["id", "i", "r", "t", "b", "d"],
            &["integer", "integer", "real", "text", "blob", "date"],
            vec![
                vec![
                    Value::Int(1),
                    Value::Int(9007199254740993),
                    Value::Real(1.0),
                    Value::Text("héllo ☃ 日本 😀 \"q\"".into()),
                    Value::Blob(vec![0xde, 0xad, 0xbe, 0xef]),
                    Value::Null,
                ],
                vec![
                    Value::Int(3),
                    Value::Int(i64::MIN),
                    Value::Real(1e-7),
                    Value::Null,
                    Value::Null,
                    Value::Text("2024-01-02T00:00:00Z".into()),
                ],
                vec![
                    Value::Int(4),
                    Value::Null,
                    Value::Real(1e300),
                    Value::Bool(true),
                    Value::Bool(false),
                    Value::Real(123456789012.5),
                ],
            ],
            0.0,
        );
        let env = envelope(&[r], &RenderOpts::default());
        assert_eq!(
            env.to_json().to_compact(),
            r#"{"results":[{"columns":["id","i","r","t","b","d"],"types":["integer","integer","real","text","blob","date"],"values":[[1,9007199254740993,1,"héllo ☃ 日本 😀 \"q\"","3q2+7w==",null],[3,-9223372036854775808,1e-7,null,null,"2024-01-02T00:00:00Z"],[4,null,1e+300,true,false,123456789012.5]]}]}"#
        );
    }

    #[test]
    fn blob_array_c122() {
        let o = RenderOpts {
            blob_array: true,
            ..RenderOpts::default()
        };
        let r = rows(
            &["id", "b", "nt"],
            &["integer", "blob", ""],
            vec![
                vec![
                    Value::Int(1),
                    Value::Blob(vec![222, 173, 190, 239]),
                    Value::Null,
                ],
                vec![
                    Value::Int(10),
                    Value::Null,
                    Value::Text(String::from_utf8_lossy(&[0, 0xff]).into_owned()),
                ],
                vec![Value::Int(11), Value::Blob(vec![1, 2, 3]), Value::Null],
                vec![Value::Int(12), Value::Blob(vec![202, 254]), Value::Null],
            ],
            0.0,
        );
        assert_golden(
            envelope(&[r], &o).to_json().to_compact(),
            r#"{"results":[{"columns":["id","b","nt"],"types":["integer","blob",""],"values":[[1,[222,173,190,239],null],[10,null,"\u0000\ufffd"],[11,[1,2,3],null],[12,[202,254],null]]}]}"#,
            172,
        );
    }

    #[test]
    fn associative_blob_array_sorted_keys_c123() {
        let o = RenderOpts {
            associative: true,
            blob_array: true,
            ..RenderOpts::default()
        };
        let r = rows(
            &["id", "b"],
            &["integer", "blob"],
            vec![vec![Value::Int(1), Value::Blob(vec![222, 173, 190, 239])]],
            0.0,
        );
        assert_golden(
            envelope(&[r], &o).to_json().to_compact(),
            r#"{"results":[{"types":{"b":"blob","id":"integer"},"rows":[{"b":[222,173,190,239],"id":1}]}]}"#,
            91,
        );
    }

    #[test]
    fn expressions_without_decltype_c124() {
        let r = rows(
            &[
                "COUNT(*)",
                "x'00'",
                "1.5",
                "NULL",
                "'txt'",
                "1=1",
                "2.0",
                "1e-7",
                "9007199254740993",
                "CAST(1 AS REAL)",
            ],
            &[
                "integer", "text", "real", "", "text", "integer", "real", "real", "integer", "real",
            ],
            vec![vec![
                Value::Int(1),
                Value::Text("\u{0}".into()),
                Value::Real(1.5),
                Value::Null,
                Value::Text("txt".into()),
                Value::Int(1),
                Value::Real(2.0),
                Value::Real(1e-7),
                Value::Int(9007199254740993),
                Value::Real(1.0),
            ]],
            0.0,
        );
        assert_golden(
            envelope(&[r], &RenderOpts::default())
                .to_json()
                .to_compact(),
            r#"{"results":[{"columns":["COUNT(*)","x'00'","1.5","NULL","'txt'","1=1","2.0","1e-7","9007199254740993","CAST(1 AS REAL)"],"types":["integer","text","real","","text","integer","real","real","integer","real"],"values":[[1,"\u0000",1.5,null,"txt",1,2,1e-7,9007199254740993,1]]}]}"#,
            275,
        );
    }

    #[test]
    fn request_associative_mixed_c131() {
        let o = RenderOpts {
            associative: true,
            exec_rows_null: true,
            ..RenderOpts::default()
        };
        let results = [
            exec(401, 1, 0.0),
            rows(
                &["id", "name"],
                &["integer", "text"],
                vec![
                    vec![Value::Int(1), Value::Text("fiona".into())],
                    vec![Value::Int(401), Value::Text("declan".into())],
                ],
                0.0,
            ),
            err("no such table: bar"),
        ];
        assert_golden(
            envelope(&results, &o).to_json().to_compact(),
            r#"{"results":[{"last_insert_id":401,"rows_affected":1,"rows":null},{"types":{"id":"integer","name":"text"},"rows":[{"id":1,"name":"fiona"},{"id":401,"name":"declan"}]},{"error":"no such table: bar"}]}"#,
            198,
        );
    }

    #[test]
    fn associative_query_endpoint_error_keeps_rows() {
        let o = RenderOpts {
            associative: true,
            ..RenderOpts::default()
        };
        assert_eq!(
            query_result_json(&err("no such table: bar"), &o).to_compact(),
            r#"{"rows":[],"error":"no such table: bar"}"#
        );
        assert_eq!(
            result_json(&err("no such table: bar"), &o).to_compact(),
            r#"{"error":"no such table: bar"}"#
        );
        let plain = RenderOpts::default();
        assert_eq!(
            query_result_json(&err("no such table: bar"), &plain).to_compact(),
            r#"{"error":"no such table: bar"}"#
        );
    }

    #[test]
    fn associative_duplicate_columns_keep_the_last() {
        let o = RenderOpts {
            associative: true,
            ..RenderOpts::default()
        };
        let r = rows(
            &["a", "a"],
            &["integer", "text"],
            vec![vec![Value::Int(1), Value::Text("x".into())]],
            0.0,
        );
        assert_eq!(
            result_json(&r, &o).to_compact(),
            r#"{"types":{"a":"text"},"rows":[{"a":"x"}]}"#
        );
    }

    #[test]
    fn empty_query_results_omit_values_c62_c83_c84() {
        let r = rows(&["id", "name"], &["integer", "text"], vec![], 0.0);
        assert_eq!(
            result_json(&r, &RenderOpts::default()).to_compact(),
            r#"{"columns":["id","name"],"types":["integer","text"]}"#
        );
        let o = RenderOpts {
            associative: true,
            ..RenderOpts::default()
        };
        assert_eq!(
            result_json(&r, &o).to_compact(),
            r#"{"types":{"id":"integer","name":"text"},"rows":[]}"#
        );
    }

    #[test]
    fn errors_never_carry_time_c52() {
        let mut e = err("near \"VALUS\": syntax error");
        e.time = 0.1;
        let o = RenderOpts {
            timings: true,
            ..RenderOpts::default()
        };
        assert_eq!(
            envelope(&[e], &o).to_json().to_compact(),
            r#"{"results":[{"error":"near \"VALUS\": syntax error"}]}"#
        );
    }

    #[test]
    fn envelope_optional_fields_c64_c70_c78_c108() {
        let base = envelope(&[exec(96, 1, 0.0)], &RenderOpts::default());
        let with_index = Envelope {
            raft_index: Some(30),
            ..base.clone()
        };
        assert_eq!(
            with_index.to_json().to_compact(),
            r#"{"results":[{"last_insert_id":96,"rows_affected":1}],"raft_index":30}"#
        );
        let zero_index = Envelope {
            raft_index: Some(0),
            ..base
        };
        assert_eq!(
            zero_index.to_json().to_compact(),
            r#"{"results":[{"last_insert_id":96,"rows_affected":1}]}"#
        );
        let queued = Envelope {
            sequence_number: Some(1795694753569549507),
            ..Envelope::default()
        };
        assert_eq!(
            queued.to_json().to_compact(),
            r#"{"results":[],"sequence_number":1795694753569549507}"#
        );
        let all = Envelope {
            results: vec![],
            time: Some(0.5),
            sequence_number: Some(7),
            raft_index: Some(9),
        };
        assert_eq!(
            all.to_json().to_compact(),
            r#"{"results":[],"time":0.5,"sequence_number":7,"raft_index":9}"#
        );
    }

    #[test]
    fn returning_on_execute_is_query_shaped_c59() {
        let results = [
            rows(
                &["id", "name"],
                &["integer", "text"],
                vec![vec![Value::Int(90), Value::Text("ret".into())]],
                0.0,
            ),
            exec(91, 1, 0.0),
        ];
        assert_golden(
            envelope(&results, &RenderOpts::default())
                .to_json()
                .to_compact(),
            r#"{"results":[{"columns":["id","name"],"types":["integer","text"],"values":[[90,"ret"]]},{"last_insert_id":91,"rows_affected":1}]}"#,
            128,
        );
    }

    #[test]
    fn pretty_node_object_c164_shape() {
        let j = Json::Obj(vec![
            ("id".into(), Json::Str("1".into())),
            ("voter".into(), Json::Bool(true)),
            ("time".into(), Json::Float(0.0002)),
        ]);
        assert_eq!(
            j.to_pretty(),
            "{\n    \"id\": \"1\",\n    \"voter\": true,\n    \"time\": 0.0002\n}"
        );
    }
}

//! SQLite values as rqlite's clients see them.
//!
//! Owns: the conversions rqlite inherits from its driver (mattn/go-sqlite3) and its own
//! `normalizeRowValues`: time columns to RFC 3339 text, `BOOLEAN` integers to booleans,
//! blobs in text-like columns to strings, invalid UTF-8 to U+FFFD the way Go's JSON
//! encoder does it; and the `types` back-fill for columns without a declared type.
//! Does not: encode JSON (base64 and `blob_array` are the HTTP layer's business).

use rusqlite::types::ValueRef;

use super::datetime;
use crate::command::Value;

/// Converts one column value. `decl` is the lower-cased declared type (`""` for none).
/// Fails only where Go fails: a time that `MarshalText` refuses (year outside 0..=9999).
pub(crate) fn convert(v: ValueRef<'_>, decl: &str) -> Result<Value, String> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) if is_time_decl(decl) => {
            Value::Text(datetime::marshal_text(&datetime::from_integer(i))?)
        }
        ValueRef::Integer(i) if decl == "boolean" => Value::Bool(i > 0),
        ValueRef::Integer(i) => Value::Int(i),
        // The driver never converts a REAL, not even in a TIMESTAMP column.
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) if is_time_decl(decl) => {
            Value::Text(datetime::marshal_text(&datetime::from_text(t))?)
        }
        ValueRef::Text(t) => Value::Text(go_string(t)),
        ValueRef::Blob(b) if is_text_decl(decl) => Value::Text(go_string(b)),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    })
}

/// The type name rqlite back-fills for a column without a declared type, from the value in
/// the first row (a NULL gives `""`).
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "",
        Value::Int(_) => "integer",
        Value::Real(_) => "real",
        Value::Text(_) => "text",
        Value::Blob(_) => "blob",
        Value::Bool(_) => "boolean",
    }
}

/// Fills the empty entries of `types` from the first row.
pub(crate) fn backfill_types(types: &mut [String], first_row: Option<&Vec<Value>>) {
    let Some(row) = first_row else {
        return;
    };
    for (t, v) in types.iter_mut().zip(row) {
        if t.is_empty() {
            *t = type_name(v).to_string();
        }
    }
}

/// go-sqlite3 turns these declared types into `time.Time` (exact match, lower-cased).
fn is_time_decl(decl: &str) -> bool {
    matches!(decl, "date" | "datetime" | "timestamp")
}

/// rqlite's `isTextType`: a BLOB read from such a column is returned as a string.
fn is_text_decl(decl: &str) -> bool {
    const PREFIXES: [&str; 7] = [
        "varchar",
        "varying character",
        "nchar",
        "native character",
        "nvarchar",
        "clob",
        "character",
    ];
    matches!(decl, "" | "text" | "json") || PREFIXES.iter().any(|p| decl.starts_with(p))
}

/// Bytes as Go's JSON encoder prints a string holding them: valid UTF-8 is kept, and every
/// byte that does not start a valid sequence becomes one U+FFFD (Rust's `from_utf8_lossy`
/// would merge some of them).
pub(crate) fn go_string(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                out.push('\u{FFFD}');
                bytes = rest.get(1..).unwrap_or_default();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_string_replaces_each_bad_byte() {
        assert_eq!(go_string(b"\x00\xff"), "\u{0}\u{FFFD}");
        assert_eq!(go_string(b"\xca\xfe"), "\u{FFFD}\u{FFFD}");
        assert_eq!(go_string(b"a\xe2\x82b"), "a\u{FFFD}\u{FFFD}b");
        assert_eq!(go_string("héllo ☃".as_bytes()), "héllo ☃");
        assert_eq!(go_string(b""), "");
    }

    #[test]
    fn text_like_declared_types() {
        for t in [
            "",
            "text",
            "json",
            "varchar(20)",
            "nvarchar",
            "clob",
            "character(3)",
            "nchar(2)",
        ] {
            assert!(is_text_decl(t), "{t}");
        }
        for t in ["blob", "mytype", "integer", "numeric", "boolean", "texts"] {
            assert!(!is_text_decl(t), "{t}");
        }
    }

    #[test]
    fn conversions_by_declared_type() {
        let c = |v, d| convert(v, d).unwrap_or(Value::Text("ERR".into()));
        assert_eq!(c(ValueRef::Integer(2), "boolean"), Value::Bool(true));
        assert_eq!(c(ValueRef::Integer(0), "boolean"), Value::Bool(false));
        assert_eq!(c(ValueRef::Integer(-1), "boolean"), Value::Bool(false));
        assert_eq!(
            c(ValueRef::Text(b"true"), "boolean"),
            Value::Text("true".into())
        );
        assert_eq!(
            c(ValueRef::Real(1700000000.5), "timestamp"),
            Value::Real(1700000000.5)
        );
        assert_eq!(c(ValueRef::Integer(5), "int"), Value::Int(5));
        assert_eq!(c(ValueRef::Blob(b"\x01"), "blob"), Value::Blob(vec![1]));
        assert_eq!(c(ValueRef::Blob(b"\x01"), "mytype"), Value::Blob(vec![1]));
        assert_eq!(c(ValueRef::Blob(b"\x01"), ""), Value::Text("\u{1}".into()));
        assert!(convert(ValueRef::Integer(300_000_000_000), "date").is_err());
    }
}

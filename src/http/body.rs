//! Request bodies of `/db/execute`, `/db/query` (POST) and `/db/request`.
//!
//! Owns: turning a body into statements with typed parameters, and the exact 400 messages for
//! bodies that cannot be turned.
//! Does not: read the body off the wire, or classify or rewrite SQL.
//!
//! rqlite decodes the body as a stream (Go's `json.Decoder`), checking each statement as it
//! arrives, so which error a broken body gets depends on what comes first: `[123, garbage`
//! is `invalid request`, not `invalid JSON body`, and nothing after the closing `]` is read.
//! A small hand-written parser reproduces that order; it also keeps numbers as written, so
//! integers stay exact and the `unsupported type 256` message can quote the literal.

use crate::command::{Param, Statement};

/// Why a body was rejected. `Display` is the exact body rqlite sends with its 400 (the HTTP
/// layer appends the newline that Go's `http.Error` adds).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Malformed JSON, including an empty body and a truncated array.
    #[error("invalid JSON body")]
    InvalidJson,
    /// Well-formed JSON of the wrong shape: not an array, an element that is neither a string
    /// nor an array, an empty element array, or a first item that is not a string.
    #[error("invalid request")]
    InvalidRequest,
    /// The array is empty.
    #[error("no statements")]
    NoStatements,
    /// A parameter value rqlite cannot bind; the text after `unsupported type ` is what Go
    /// prints: a Go type name (`string`, `map[string]interface {}`) or a number's literal.
    #[error("unsupported type {0}")]
    UnsupportedType(String),
    /// A number too large for a float64, e.g. `1e400`.
    #[error("invalid number {0}")]
    InvalidNumber(String),
    /// More statements than one request may carry (`-http-max-statements`): the request is
    /// refused before it costs anything more (413).
    #[error("too many statements in one request: more than {0} (-http-max-statements)")]
    TooManyStatements(usize),
}

/// Parses a request body into statements.
///
/// With `allow_plain_text` (`/db/execute`, `POST /db/query`) and a content type starting with
/// `text/plain` (case-sensitive, as in rqlite), the whole body is one statement. Otherwise the
/// content type is ignored and the body must be a JSON array whose elements are `"SQL"`,
/// `["SQL", p1, p2, ...]` (positional) or `["SQL", {"name": v, ...}]` (named, key without its
/// `:`/`@`/`$` prefix).
///
/// Parameters:
/// - integer literal that fits an i64 → `Int`; any other number → `Real`;
/// - `true`/`false` → `Bool`; `null` → `Null`;
/// - string → `Text`, except `x'hex'`/`X'hex'` (surrounding whitespace allowed, even number of
///   hex digits, `x''` is an empty blob) → `Blob`;
/// - array of integers 0..=255 → `Blob` (`[]` is an empty blob).
///
/// Several values may follow the SQL, freely mixing maps and plain values. Plain values are
/// positional in order. Map entries are named; when a name repeats (several maps), the last
/// value wins, which is what rqlite's binding ends up doing (golden C32). A map entry with an
/// empty key is positional, as in rqlite.
///
/// Statements whose SQL is `""` are dropped (rqlite skips them when executing), so
/// `[""]` gives `Ok(vec![])`: rqlite answers it with `{"results":[]}`, not `no statements`.
/// The same holds for an empty `text/plain` body.
pub fn parse_statements(
    body: &[u8],
    content_type: Option<&str>,
    allow_plain_text: bool,
    max_statements: usize,
) -> Result<Vec<Statement>, BodyError> {
    if allow_plain_text && content_type.is_some_and(|ct| ct.starts_with("text/plain")) {
        let sql = lossy_utf8(body);
        return Ok(if sql.is_empty() {
            Vec::new()
        } else {
            vec![Statement::new(sql)]
        });
    }
    parse_json_statements(body, max_statements)
}

// Mirrors rqlite's ParseRequest: Token for the opening `[`, then per element either a string
// token, or an inner array decoded item by item and checked once it is closed.
fn parse_json_statements(body: &[u8], max: usize) -> Result<Vec<Statement>, BodyError> {
    let mut p = Parser { b: body, pos: 0 };
    match p.peek() {
        Some(b'[') => p.pos += 1,
        Some(b'{') => return Err(BodyError::InvalidRequest),
        None | Some(b']' | b'}' | b',' | b':') => return Err(BodyError::InvalidJson),
        Some(_) => {
            p.value(0)?;
            return Err(BodyError::InvalidRequest);
        }
    }

    let mut stmts = Vec::new();
    let mut elements = 0usize;
    loop {
        match p.peek() {
            // The closing bracket; nothing after it is read.
            Some(b']') => break,
            None | Some(b'}') => return Err(BodyError::InvalidJson),
            Some(_) => {}
        }
        if elements > 0 {
            p.expect_comma()?;
        }
        elements += 1;
        if elements > max {
            return Err(BodyError::TooManyStatements(max));
        }
        match p.peek() {
            None | Some(b']' | b'}' | b',' | b':') => return Err(BodyError::InvalidJson),
            Some(b'{') => return Err(BodyError::InvalidRequest),
            Some(b'[') => {
                p.pos += 1;
                let items = p.array_items(1)?;
                let stmt = statement_from_items(items)?;
                if !stmt.sql.is_empty() {
                    stmts.push(stmt);
                }
            }
            Some(_) => match p.value(0)? {
                GoValue::Str(sql) => {
                    if !sql.is_empty() {
                        stmts.push(Statement::new(sql));
                    }
                }
                _ => return Err(BodyError::InvalidRequest),
            },
        }
    }
    if elements == 0 {
        return Err(BodyError::NoStatements);
    }
    Ok(stmts)
}

fn statement_from_items(items: Vec<GoValue>) -> Result<Statement, BodyError> {
    let mut items = items.into_iter();
    let mut stmt = match items.next() {
        Some(GoValue::Str(sql)) => Statement::new(sql),
        _ => return Err(BodyError::InvalidRequest),
    };
    for item in items {
        match item {
            GoValue::Object(fields) => {
                for (name, v) in fields {
                    let param = make_param(v)?;
                    if name.is_empty() {
                        stmt.positional.push(param);
                    } else if let Some(slot) = stmt.named.iter_mut().find(|(n, _)| *n == name) {
                        slot.1 = param;
                    } else {
                        stmt.named.push((name, param));
                    }
                }
            }
            other => stmt.positional.push(make_param(other)?),
        }
    }
    Ok(stmt)
}

// rqlite's makeParameter.
fn make_param(v: GoValue) -> Result<Param, BodyError> {
    Ok(match v {
        GoValue::Null => Param::Null,
        GoValue::Bool(b) => Param::Bool(b),
        GoValue::Number(lit) => match lit.parse::<i64>() {
            Ok(i) => Param::Int(i),
            Err(_) => match lit.parse::<f64>() {
                Ok(f) if f.is_finite() => Param::Real(f),
                _ => return Err(BodyError::InvalidNumber(lit)),
            },
        },
        GoValue::Str(s) => match parse_hex_blob(&s) {
            Some(b) => Param::Blob(b),
            None => Param::Text(s),
        },
        GoValue::Array(elems) => {
            let mut bytes = Vec::with_capacity(elems.len());
            for e in elems {
                match e {
                    GoValue::Number(lit) => {
                        match lit.parse::<i64>().ok().and_then(|i| u8::try_from(i).ok()) {
                            Some(b) => bytes.push(b),
                            None => return Err(BodyError::UnsupportedType(lit)),
                        }
                    }
                    other => return Err(BodyError::UnsupportedType(other.go_type().to_string())),
                }
            }
            Param::Blob(bytes)
        }
        GoValue::Object(_) => {
            return Err(BodyError::UnsupportedType(
                GoValue::Object(Vec::new()).go_type().to_string(),
            ))
        }
    })
}

/// rqlite's `db.ParseHex`: an SQLite blob literal `x'..'`/`X'..'`, whitespace-trimmed.
fn parse_hex_blob(s: &str) -> Option<Vec<u8>> {
    let t = s.trim().as_bytes();
    if t.len() < 3 || !matches!(t[0], b'x' | b'X') || t[1] != b'\'' || t[t.len() - 1] != b'\'' {
        return None;
    }
    let pairs = t[2..t.len() - 1].chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    pairs
        .map(|pair| Some((hex_digit(pair[0])? << 4) | hex_digit(pair[1])?))
        .collect()
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Bytes to a string the way Go's JSON decoder does it: each byte that is not part of valid
/// UTF-8 becomes U+FFFD.
fn lossy_utf8(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        out.push_str(chunk.valid());
        for _ in chunk.invalid() {
            out.push('\u{fffd}');
        }
    }
    out
}

/// What Go's `json.Decoder` (with `UseNumber`) yields for `any`.
#[derive(Debug, Clone, PartialEq)]
enum GoValue {
    Null,
    Bool(bool),
    /// The literal as written (Go's `json.Number`).
    Number(String),
    Str(String),
    Array(Vec<GoValue>),
    /// A Go map: a repeated key keeps its last value.
    Object(Vec<(String, GoValue)>),
}

impl GoValue {
    /// Go's `%T` of the decoded value.
    fn go_type(&self) -> &'static str {
        match self {
            GoValue::Null => "<nil>",
            GoValue::Bool(_) => "bool",
            GoValue::Number(_) => "json.Number",
            GoValue::Str(_) => "string",
            GoValue::Array(_) => "[]interface {}",
            GoValue::Object(_) => "map[string]interface {}",
        }
    }
}

// Go allows 10000; recursion that deep could overflow a small thread stack. Anything this
// nested is an unsupported parameter anyway, so only the error message can differ.
const MAX_DEPTH: usize = 500;

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    /// The next non-whitespace byte, not consumed.
    fn peek(&mut self) -> Option<u8> {
        while let Some(&c) = self.b.get(self.pos) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.pos += 1;
            } else {
                return Some(c);
            }
        }
        None
    }

    fn expect_comma(&mut self) -> Result<(), BodyError> {
        if self.peek() == Some(b',') {
            self.pos += 1;
            Ok(())
        } else {
            Err(BodyError::InvalidJson)
        }
    }

    /// Items of an array whose `[` has been consumed, through its `]`.
    fn array_items(&mut self, depth: usize) -> Result<Vec<GoValue>, BodyError> {
        let mut items = Vec::new();
        loop {
            match self.peek() {
                Some(b']') => {
                    self.pos += 1;
                    return Ok(items);
                }
                None | Some(b'}') => return Err(BodyError::InvalidJson),
                Some(_) => {}
            }
            if !items.is_empty() {
                self.expect_comma()?;
            }
            items.push(self.value(depth)?);
        }
    }

    /// One complete JSON value; any syntax error is `InvalidJson`.
    fn value(&mut self, depth: usize) -> Result<GoValue, BodyError> {
        if depth > MAX_DEPTH {
            return Err(BodyError::InvalidJson);
        }
        match self.peek().ok_or(BodyError::InvalidJson)? {
            b'[' => {
                self.pos += 1;
                Ok(GoValue::Array(self.array_items(depth + 1)?))
            }
            b'{' => {
                self.pos += 1;
                self.object(depth + 1)
            }
            b'"' => Ok(GoValue::Str(self.string()?)),
            b't' => self.literal(b"true", GoValue::Bool(true)),
            b'f' => self.literal(b"false", GoValue::Bool(false)),
            b'n' => self.literal(b"null", GoValue::Null),
            b'-' | b'0'..=b'9' => Ok(GoValue::Number(self.number()?)),
            _ => Err(BodyError::InvalidJson),
        }
    }

    fn object(&mut self, depth: usize) -> Result<GoValue, BodyError> {
        let mut fields: Vec<(String, GoValue)> = Vec::new();
        let mut first = true;
        loop {
            match self.peek() {
                Some(b'}') if first => {
                    self.pos += 1;
                    return Ok(GoValue::Object(fields));
                }
                Some(b'"') if first => {}
                Some(b',') if !first => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(GoValue::Object(fields));
                }
                _ => return Err(BodyError::InvalidJson),
            }
            first = false;
            if self.peek() != Some(b'"') {
                return Err(BodyError::InvalidJson);
            }
            let key = self.string()?;
            if self.peek() != Some(b':') {
                return Err(BodyError::InvalidJson);
            }
            self.pos += 1;
            let v = self.value(depth)?;
            match fields.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = v,
                None => fields.push((key, v)),
            }
        }
    }

    fn literal(&mut self, lit: &[u8], v: GoValue) -> Result<GoValue, BodyError> {
        if self.b[self.pos..].starts_with(lit) {
            self.pos += lit.len();
            Ok(v)
        } else {
            Err(BodyError::InvalidJson)
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, returned as written.
    fn number(&mut self) -> Result<String, BodyError> {
        let start = self.pos;
        let digits = |p: &mut Self| -> usize {
            let s = p.pos;
            while p.b.get(p.pos).is_some_and(u8::is_ascii_digit) {
                p.pos += 1;
            }
            p.pos - s
        };
        if self.b.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.b.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(BodyError::InvalidJson),
        }
        if self.b.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if digits(self) == 0 {
                return Err(BodyError::InvalidJson);
            }
        }
        if matches!(self.b.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.b.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(BodyError::InvalidJson);
            }
        }
        // Only ASCII was consumed.
        Ok(String::from_utf8_lossy(&self.b[start..self.pos]).into_owned())
    }

    /// A string whose opening quote is next; unescaped as Go's decoder does (bad surrogates
    /// and bytes that are not UTF-8 become U+FFFD).
    fn string(&mut self) -> Result<String, BodyError> {
        self.pos += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let c = *self.b.get(self.pos).ok_or(BodyError::InvalidJson)?;
            self.pos += 1;
            match c {
                b'"' => return Ok(lossy_utf8(&out)),
                b'\\' => {
                    let e = *self.b.get(self.pos).ok_or(BodyError::InvalidJson)?;
                    self.pos += 1;
                    let simple = match e {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let ch = self.unicode_escape()?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            continue;
                        }
                        _ => return Err(BodyError::InvalidJson),
                    };
                    out.push(simple);
                }
                c if c < 0x20 => return Err(BodyError::InvalidJson),
                c => out.push(c),
            }
        }
    }

    /// After `\u`: four hex digits, combined with a following `\uXXXX` low surrogate when
    /// they form a pair.
    fn unicode_escape(&mut self) -> Result<char, BodyError> {
        let first = self.hex4(self.pos).ok_or(BodyError::InvalidJson)?;
        self.pos += 4;
        if !(0xd800..0xe000).contains(&first) {
            return Ok(char::from_u32(first).unwrap_or('\u{fffd}'));
        }
        if (0xd800..0xdc00).contains(&first)
            && self.b.get(self.pos) == Some(&b'\\')
            && self.b.get(self.pos + 1) == Some(&b'u')
        {
            if let Some(second) = self.hex4(self.pos + 2) {
                if (0xdc00..0xe000).contains(&second) {
                    self.pos += 6;
                    let cp = 0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00);
                    return Ok(char::from_u32(cp).unwrap_or('\u{fffd}'));
                }
            }
        }
        Ok('\u{fffd}')
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let s = self.b.get(at..at + 4)?;
        s.iter()
            .try_fold(0u32, |acc, c| Some(acc * 16 + u32::from(hex_digit(*c)?)))
    }
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;

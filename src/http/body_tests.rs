//! Tests of `body.rs`.

#[test]
fn a_statement_count_over_the_limit_is_refused_while_parsing() {
    let body = br#"["x","x","x"]"#;
    assert_eq!(
        super::parse_statements(body, None, false, 3).map(|v| v.len()),
        Ok(3)
    );
    assert_eq!(
        super::parse_statements(body, None, false, 2),
        Err(super::BodyError::TooManyStatements(2))
    );
}

use super::*;

fn json(body: &str) -> Result<Vec<Statement>, BodyError> {
    parse_statements(body.as_bytes(), Some("application/json"), true, usize::MAX)
}

fn err(body: &str) -> String {
    match json(body) {
        Ok(s) => format!("ok: {s:?}"),
        Err(e) => e.to_string(),
    }
}

/// Each body is refused with its message.
fn refused(cases: &[(&str, &str)]) {
    for (body, want) in cases {
        assert_eq!(err(body), *want, "{body:?}");
    }
}

fn one(body: &str) -> Statement {
    let mut stmts = json(body).unwrap();
    assert_eq!(stmts.len(), 1, "{body}");
    stmts.remove(0)
}

fn stmt(sql: &str, positional: Vec<Param>, named: Vec<(&str, Param)>) -> Statement {
    Statement {
        sql: sql.to_string(),
        positional,
        named: named.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        force_query: false,
    }
}

#[test]
fn plain_strings_c26() {
    let s = json(r#"["CREATE TABLE foo (id INTEGER NOT NULL PRIMARY KEY, name TEXT)"]"#).unwrap();
    assert_eq!(
        s,
        vec![Statement::new(
            "CREATE TABLE foo (id INTEGER NOT NULL PRIMARY KEY, name TEXT)"
        )]
    );
}

#[test]
fn positional_c27_c33_c35_c51() {
    assert_eq!(
        one(r#"[["INSERT INTO foo(name) VALUES(?)", "fiona"]]"#),
        stmt(
            "INSERT INTO foo(name) VALUES(?)",
            vec![Param::Text("fiona".into())],
            vec![]
        )
    );
    assert_eq!(
        one(r#"[["INSERT INTO foo(name) VALUES(?)", "a", "b"]]"#).positional,
        vec![Param::Text("a".into()), Param::Text("b".into())]
    );
    assert_eq!(
        one(r#"[["INSERT INTO foo(id,name) VALUES(?2,?1)", "nnn", 60]]"#).positional,
        vec![Param::Text("nnn".into()), Param::Int(60)]
    );
    let s = json(
            r#"[["INSERT INTO foo(id,name) VALUES(?,?)", 70, true], ["INSERT INTO foo(id,name) VALUES(?,?)", 71, 2.5], ["INSERT INTO foo(id,name) VALUES(?,?)", 72, null]]"#,
        )
        .unwrap();
    assert_eq!(s[0].positional, vec![Param::Int(70), Param::Bool(true)]);
    assert_eq!(s[1].positional, vec![Param::Int(71), Param::Real(2.5)]);
    assert_eq!(s[2].positional, vec![Param::Int(72), Param::Null]);
}

#[test]
fn mixed_forms_and_sql_only_array() {
    let s = json(r#"["SELECT 1", ["SELECT ?", 1], ["SELECT 2"]]"#).unwrap();
    assert_eq!(
        s,
        vec![
            Statement::new("SELECT 1"),
            stmt("SELECT ?", vec![Param::Int(1)], vec![]),
            Statement::new("SELECT 2"),
        ]
    );
}

#[test]
fn named_c30_c31() {
    assert_eq!(
        one(r#"[["INSERT INTO foo(id,name) VALUES(:id,:name)", {"id":10,"name":"colon"}]]"#),
        stmt(
            "INSERT INTO foo(id,name) VALUES(:id,:name)",
            vec![],
            vec![
                ("id", Param::Int(10)),
                ("name", Param::Text("colon".into()))
            ]
        )
    );
    // A prefixed key is passed through; the store reports the SQLite/driver error.
    assert_eq!(
        one(r#"[["INSERT INTO foo(id,name) VALUES(:id,:name)", {":id":13,":name":"prefixed"}]]"#)
            .named,
        vec![
            (":id".to_string(), Param::Int(13)),
            (":name".to_string(), Param::Text("prefixed".into()))
        ]
    );
}

#[test]
fn several_maps_last_value_wins_c32() {
    assert_eq!(
        one(r#"[["INSERT INTO foo(name) VALUES(:n)", {"n":"m1"}, {"n":"m2"}]]"#).named,
        vec![("n".to_string(), Param::Text("m2".into()))]
    );
    assert_eq!(
        one(r#"[["S", {"a":1}, {"b":2}, {"a":3}]]"#).named,
        vec![
            ("a".to_string(), Param::Int(3)),
            ("b".to_string(), Param::Int(2))
        ]
    );
    // Duplicate keys inside one map: last wins too (a Go map).
    assert_eq!(
        one(r#"[["S", {"a":1, "a":2}]]"#).named,
        vec![("a".to_string(), Param::Int(2))]
    );
}

#[test]
fn maps_and_plain_values_mix() {
    assert_eq!(
        one(r#"[["S", 1, {"a":2, "":3}, 4]]"#),
        stmt(
            "S",
            vec![Param::Int(1), Param::Int(3), Param::Int(4)],
            vec![("a", Param::Int(2))]
        )
    );
}

#[test]
fn text_plain_is_one_statement_c36_c37_c88() {
    let body = b"INSERT INTO foo(name) VALUES('tp1'); INSERT INTO foo(name) VALUES('tp2')";
    assert_eq!(
        parse_statements(body, Some("text/plain"), true, usize::MAX).unwrap(),
        vec![Statement::new(
            "INSERT INTO foo(name) VALUES('tp1'); INSERT INTO foo(name) VALUES('tp2')"
        )]
    );
    let body = br#"["INSERT INTO foo(name) VALUES('tpj')"]"#;
    assert_eq!(
        parse_statements(body, Some("text/plain; charset=utf-8"), true, usize::MAX).unwrap(),
        vec![Statement::new(r#"["INSERT INTO foo(name) VALUES('tpj')"]"#)]
    );
    assert_eq!(
        parse_statements(b"", Some("text/plain"), true, usize::MAX).unwrap(),
        vec![]
    );
    // Prefix match is case-sensitive, like rqlite's strings.HasPrefix.
    assert_eq!(
        parse_statements(b"SELECT 1", Some("Text/Plain"), true, usize::MAX),
        Err(BodyError::InvalidJson)
    );
}

#[test]
fn text_plain_on_request_endpoint_is_json_c139() {
    assert_eq!(
        parse_statements(b"SELECT 1", Some("text/plain"), false, usize::MAX),
        Err(BodyError::InvalidJson)
    );
}

#[test]
fn no_content_type_is_json_c38() {
    assert_eq!(
        parse_statements(
            br#"["INSERT INTO foo(name) VALUES('noct')"]"#,
            None,
            true,
            usize::MAX
        )
        .unwrap(),
        vec![Statement::new("INSERT INTO foo(name) VALUES('noct')")]
    );
}

#[test]
fn shape_errors_c39_to_c46_c140_c141() {
    refused(&[
        ("[]", "no statements"),
        (" [ ] ", "no statements"),
        ("", "invalid JSON body"),
        ("  \n", "invalid JSON body"),
        (r#"{"a":1}"#, "invalid request"),
        (r#""SELECT 1""#, "invalid request"),
        (r#"["SELECT 1""#, "invalid JSON body"),
        ("[123]", "invalid request"),
        (r#"[[1, "x"]]"#, "invalid request"),
        ("[[]]", "invalid request"),
        ("nope", "invalid JSON body"),
        ("[", "invalid JSON body"),
    ]);
}

#[test]
fn empty_string_statements_are_skipped_c47() {
    assert_eq!(
        json(r#"["", "INSERT INTO foo(name) VALUES('afterempty')"]"#).unwrap(),
        vec![Statement::new("INSERT INTO foo(name) VALUES('afterempty')")]
    );
    assert_eq!(json(r#"[""]"#).unwrap(), vec![]);
    assert_eq!(json(r#"[["", 1]]"#).unwrap(), vec![]);
    // Parameters are still checked.
    assert_eq!(err(r#"[["", [1,256]]]"#), "unsupported type 256");
}

#[test]
fn unsupported_types_c48_c49_c50() {
    assert_eq!(
        err(r#"[["INSERT INTO foo(name) VALUES(?)", {"n": {"x":1}}]]"#),
        "unsupported type map[string]interface {}"
    );
    assert_eq!(
        err(r#"[["INSERT INTO foo(name) VALUES(?)", ["a","b"]]]"#),
        "unsupported type string"
    );
    assert_eq!(
        err(r#"[["INSERT INTO foo(name) VALUES(?)", [1,256]]]"#),
        "unsupported type 256"
    );
    assert_eq!(err(r#"[["S", [-1]]]"#), "unsupported type -1");
    assert_eq!(err(r#"[["S", [1.5]]]"#), "unsupported type 1.5");
    assert_eq!(err(r#"[["S", [1e2]]]"#), "unsupported type 1e2");
    assert_eq!(err(r#"[["S", [true]]]"#), "unsupported type bool");
    assert_eq!(err(r#"[["S", [null]]]"#), "unsupported type <nil>");
    assert_eq!(err(r#"[["S", [[1]]]]"#), "unsupported type []interface {}");
    assert_eq!(
        err(r#"[["S", [{}]]]"#),
        "unsupported type map[string]interface {}"
    );
    assert_eq!(
        err(r#"[["S", {"n": {}}]]"#),
        "unsupported type map[string]interface {}"
    );
    assert_eq!(err(r#"[["S", 1e400]]"#), "invalid number 1e400");
    assert_eq!(err(r#"[["S", -1e400]]"#), "invalid number -1e400");
}

#[test]
fn numbers_keep_integers_exact() {
    let p = one(
            r#"[["S", 9007199254740993, 9223372036854775807, -9223372036854775808, 9223372036854775808, 1.0, 1e2, -0, 1e-7, 1e-400]]"#,
        )
        .positional;
    assert_eq!(
        p,
        vec![
            Param::Int(9007199254740993),
            Param::Int(i64::MAX),
            Param::Int(i64::MIN),
            Param::Real(9223372036854775808.0),
            Param::Real(1.0),
            Param::Real(100.0),
            Param::Int(0),
            Param::Real(1e-7),
            Param::Real(0.0),
        ]
    );
}

#[test]
fn blobs_from_hex_strings_and_byte_arrays_c119_c128() {
    let p = one(r#"[["S", "x'CAFE'", "X'cafe'", [1,2,3], [], "x''", " x'00ff' ", [0, 255]]]"#)
        .positional;
    assert_eq!(
        p,
        vec![
            Param::Blob(vec![0xca, 0xfe]),
            Param::Blob(vec![0xca, 0xfe]),
            Param::Blob(vec![1, 2, 3]),
            Param::Blob(vec![]),
            Param::Blob(vec![]),
            Param::Blob(vec![0, 0xff]),
            Param::Blob(vec![0, 255]),
        ]
    );
    // Not blob literals: odd digits, bad digits, missing quote, wrong prefix.
    for s in ["x'ABC'", "x'zz'", "x'AB", "y'AB'", "x'", "xAB'", "'AB'"] {
        let body = format!(r#"[["S", "{s}"]]"#);
        assert_eq!(
            one(&body).positional,
            vec![Param::Text(s.to_string())],
            "{s}"
        );
    }
}

#[test]
fn strings_are_unescaped_like_go() {
    let p = one(r#"[["S", "a\"b\\c\/\b\f\n\r\t\u00e9\u2603\ud83d\ude00", "\ud800x", "\udc00", "\ud800\u0041"]]"#)
            .positional;
    assert_eq!(
        p,
        vec![
            Param::Text("a\"b\\c/\u{8}\u{c}\n\r\té☃😀".into()),
            Param::Text("\u{fffd}x".into()),
            Param::Text("\u{fffd}".into()),
            Param::Text("\u{fffd}A".into()),
        ]
    );
    // Raw bytes that are not UTF-8: one U+FFFD per byte, as Go.
    let body = b"[[\"S\", \"a\xe2\x82b\xff\"]]";
    assert_eq!(
        parse_statements(body, None, false, usize::MAX).unwrap()[0].positional,
        vec![Param::Text("a\u{fffd}\u{fffd}b\u{fffd}".into())]
    );
    assert_eq!(one("[\"h\u{e9}llo \u{2603}\"]").sql, "héllo ☃");
}

#[test]
fn syntax_errors_are_invalid_json() {
    for body in [
        r#"["a" "b"]"#,
        r#"["a",]"#,
        r#"[,"a"]"#,
        r#"["a"}"#,
        r#"[}"#,
        r#"[["a",]]"#,
        r#"[["a" 1]]"#,
        r#"[["a", 01]]"#,
        r#"[["a", 1.]]"#,
        r#"[["a", -]]"#,
        r#"[["a", .5]]"#,
        r#"[["a", tru]]"#,
        r#"[["a", {"k" 1}]]"#,
        r#"[["a", {"k":1,}]]"#,
        r#"[["a", {,}]]"#,
        r#"[["a", "\x"]]"#,
        r#"[["a", "\u12"]]"#,
        "[\"a\nb\"]",
        r#"["a"x]"#,
        r#"[1.]"#,
        "]",
        ",",
        ":",
        "}",
    ] {
        assert_eq!(err(body), "invalid JSON body", "{body}");
    }
}

#[test]
fn errors_are_reported_in_stream_order() {
    // The bad element comes before the syntax error, so rqlite reports it first.
    refused(&[
        ("[123, garbage", "invalid request"),
        ("[12x]", "invalid request"),
        ("[01]", "invalid request"),
        ("[null]", "invalid request"),
        ("[true]", "invalid request"),
        (r#"[{"a":1]"#, "invalid request"),
        (r#"[["S", [256]], garbage"#, "unsupported type 256"),
        (r#"[["S", [256], garbage]]"#, "invalid JSON body"),
        ("123 garbage", "invalid request"),
        ("{garbage", "invalid request"),
    ]);
    // Nothing after the closing bracket is read, as in rqlite.
    assert_eq!(
        json(r#"["SELECT 1"] trailing"#).unwrap(),
        vec![Statement::new("SELECT 1")]
    );
}

#[test]
fn deep_nesting_does_not_overflow() {
    let body = format!("[[\"S\", {}{}]]", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(err(&body), "invalid JSON body");
}

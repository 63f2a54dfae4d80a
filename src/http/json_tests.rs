//! Tests of `json.rs`.

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
        envelope(&[exec(0, 0, 0.0)], &o).into_json().to_compact(),
        r#"{"results":[{}]}"#
    );
    assert_eq!(
        envelope(&[exec(99, 0, 0.0)], &o).into_json().to_compact(),
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
        env.into_json().to_compact(),
        r#"{"results":[{"last_insert_id":2,"rows_affected":1,"time":0.00012},{"last_insert_id":2,"rows_affected":1,"time":2.5e-7}],"time":0.0015}"#
    );
    // Without the flag, stored times are not written.
    let o = RenderOpts::default();
    assert_eq!(
        envelope(&[exec(2, 1, 0.00012)], &o)
            .into_json()
            .to_compact(),
        r#"{"results":[{"last_insert_id":2,"rows_affected":1}]}"#
    );
}

#[test]
fn pretty_execute_c29() {
    let env = envelope(&[exec(3, 1, 0.0)], &RenderOpts::default());
    let out = env.into_json().to_pretty();
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
    assert_eq!(env.into_json().to_pretty(), want);
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
    let out = env.into_json().to_pretty();
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
        Envelope::default().into_json().to_pretty(),
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
        env.into_json().to_compact(),
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
        envelope(&[r], &o).into_json().to_compact(),
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
        envelope(&[r], &o).into_json().to_compact(),
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
            .into_json()
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
        envelope(&results, &o).into_json().to_compact(),
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
        envelope(&[e], &o).into_json().to_compact(),
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
        with_index.into_json().to_compact(),
        r#"{"results":[{"last_insert_id":96,"rows_affected":1}],"raft_index":30}"#
    );
    let zero_index = Envelope {
        raft_index: Some(0),
        ..base
    };
    assert_eq!(
        zero_index.into_json().to_compact(),
        r#"{"results":[{"last_insert_id":96,"rows_affected":1}]}"#
    );
    let queued = Envelope {
        sequence_number: Some(1795694753569549507),
        ..Envelope::default()
    };
    assert_eq!(
        queued.into_json().to_compact(),
        r#"{"results":[],"sequence_number":1795694753569549507}"#
    );
    let all = Envelope {
        results: vec![],
        time: Some(0.5),
        sequence_number: Some(7),
        raft_index: Some(9),
    };
    assert_eq!(
        all.into_json().to_compact(),
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
            .into_json()
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

//! The JSON rqlite's CDC consumers read: an envelope
//! `{"service_id", "node_id", "payload": [...]}` whose payload items are one log entry each,
//! `{"index", "commit_timestamp", "events": [{"op", "table", "new_row_id"/"old_row_id",
//! "before", "after"}]}`. Row images are objects keyed by column name (keys sorted, as Go
//! writes maps); values are typed as SQLite stored them (integers, reals, text, blobs as
//! base64, null).

use crate::command::Value;
use crate::db::capture::RowChange;
use crate::http::json::{value_json, Json};

/// One payload item, encoded once when queued.
pub fn payload_item(index: u64, ts_ms: u64, changes: &[RowChange]) -> Vec<u8> {
    let events = changes.iter().map(event).collect();
    Json::Obj(vec![
        ("index".into(), Json::Uint(index)),
        ("commit_timestamp".into(), Json::Uint(ts_ms)),
        ("events".into(), Json::Arr(events)),
    ])
    .to_compact()
    .into_bytes()
}

fn event(c: &RowChange) -> Json {
    let mut o = vec![
        ("op".to_string(), Json::Str(c.op.name().into())),
        ("table".to_string(), Json::Str(c.table.clone())),
    ];
    if let Some(id) = c.new_row_id {
        o.push(("new_row_id".into(), Json::Int(id)));
    }
    if let Some(id) = c.old_row_id {
        o.push(("old_row_id".into(), Json::Int(id)));
    }
    let image = |values: &Vec<Value>| -> Option<Json> {
        let cols = c.columns.as_ref()?;
        (cols.len() == values.len()).then(|| {
            // A nameless column is a VIRTUAL generated one (see `db::capture`): not stored.
            Json::sorted(
                cols.iter()
                    .zip(values)
                    .filter(|(k, _)| !k.is_empty())
                    .map(|(k, v)| (k.clone(), value_json(v, false))),
            )
        })
    };
    let mut mismatch = false;
    for (key, values) in [("before", &c.before), ("after", &c.after)] {
        if let Some(values) = values {
            match image(values) {
                Some(j) => o.push((key.into(), j)),
                None => mismatch = true,
            }
        }
    }
    if mismatch {
        o.push((
            "error".into(),
            Json::Str("mismatched column names and row column count".into()),
        ));
    }
    Json::Obj(o)
}

/// A request body: the envelope around already-encoded payload items.
pub fn envelope<'a>(
    service_id: &str,
    node_id: &str,
    items: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(b'{');
    if !service_id.is_empty() {
        out.extend_from_slice(b"\"service_id\":");
        out.extend_from_slice(Json::Str(service_id.into()).to_compact().as_bytes());
        out.push(b',');
    }
    out.extend_from_slice(b"\"node_id\":");
    out.extend_from_slice(Json::Str(node_id.into()).to_compact().as_bytes());
    out.extend_from_slice(b",\"payload\":[");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::db::capture::Op;

    #[test]
    fn items_and_envelopes_have_rqlites_shape() {
        let cols: Arc<[String]> = Arc::from(vec!["name".to_string(), "id".to_string()]);
        let changes = vec![
            RowChange {
                op: Op::Update,
                table: "foo".into(),
                old_row_id: Some(1),
                new_row_id: Some(1),
                before: Some(vec![Value::Text("a".into()), Value::Int(1)]),
                after: Some(vec![Value::Blob(vec![1, 2]), Value::Int(1)]),
                columns: Some(cols),
            },
            RowChange {
                op: Op::Delete,
                table: "bar".into(),
                old_row_id: Some(7),
                new_row_id: None,
                before: None,
                after: None,
                columns: None,
            },
        ];
        let item = payload_item(42, 1700, &changes);
        let body = envelope("svc", "n1", [item.as_slice()]);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"service_id": "svc", "node_id": "n1", "payload": [{
            "index": 42, "commit_timestamp": 1700, "events": [
                {"op": "UPDATE", "table": "foo", "new_row_id": 1, "old_row_id": 1,
                 "before": {"id": 1, "name": "a"}, "after": {"id": 1, "name": "AQI="}},
                {"op": "DELETE", "table": "bar", "old_row_id": 7}
            ]}]})
        );
        let empty = envelope("", "n1", std::iter::empty());
        assert_eq!(empty, br#"{"node_id":"n1","payload":[]}"#);
    }
}

//! Requests as the workload clients send them, and how their replies become outcomes (see
//! `history.rs` for what ok / fail / info mean).

use serde_json::Value;

use crate::history::Outcome;

/// A reply, classified.
#[derive(Debug, Clone)]
pub struct Reply {
    pub outcome: Outcome,
    pub status: Option<u16>,
    /// The JSON body of a 200.
    pub body: Value,
    pub error: Option<String>,
}

impl Reply {
    fn new(outcome: Outcome, status: Option<u16>, body: Value, error: Option<String>) -> Self {
        Self {
            outcome,
            status,
            body,
            error,
        }
    }

    /// The `results` array of the body.
    pub fn results(&self) -> &[Value] {
        self.body["results"].as_array().map_or(&[], Vec::as_slice)
    }
}

/// Classifies a transport error: nothing was sent if the connection could not be made.
fn transport(e: reqwest::Error) -> Reply {
    let outcome = if e.is_connect() {
        Outcome::Fail
    } else {
        Outcome::Info
    };
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    };
    Reply::new(outcome, None, Value::Null, Some(format!("{kind}: {e}")))
}

/// Classifies a non-200 status.
fn by_status(status: u16, text: String) -> Reply {
    let outcome = match status {
        // rqlite's contract: 503 = not applied (no leader, leader unreachable).
        503 => Outcome::Fail,
        // 4xx: refused before anything ran.
        400..=499 => Outcome::Fail,
        // 504 = outcome unknown; any other 5xx could be anything.
        _ => Outcome::Info,
    };
    Reply::new(
        outcome,
        Some(status),
        Value::Null,
        Some(text.trim().to_string()),
    )
}

/// A 200 body: a top-level `error` is "not leader" (forwarding impossible: nothing ran) or
/// something like a timeout (unknown); an `error` in any statement result means the request
/// failed (with `?transaction` the whole request rolled back).
fn by_body(body: Value, write: bool) -> Reply {
    if let Some(e) = body.get("error").and_then(Value::as_str) {
        let outcome = if !write || e.contains("not leader") {
            Outcome::Fail
        } else {
            Outcome::Info
        };
        let e = e.to_string();
        return Reply::new(outcome, Some(200), body, Some(e));
    }
    let err = body["results"].as_array().and_then(|rs| {
        rs.iter()
            .find_map(|r| r.get("error").and_then(Value::as_str).map(str::to_string))
    });
    match err {
        Some(e) => Reply::new(Outcome::Fail, Some(200), body, Some(e)),
        None => Reply::new(Outcome::Ok, Some(200), body, None),
    }
}

async fn finish(r: Result<reqwest::Response, reqwest::Error>, write: bool) -> Reply {
    let r = match r {
        Ok(r) => r,
        Err(e) => return transport(e),
    };
    let status = r.status().as_u16();
    let bytes = match r.bytes().await {
        Ok(b) => b,
        // The status arrived but the body did not: for a 200 the outcome is known only if
        // the status says so, and a write's 200 means it was applied.
        Err(e) => {
            let mut rep = transport(e);
            rep.status = Some(status);
            return rep;
        }
    };
    if status != 200 {
        return by_status(status, String::from_utf8_lossy(&bytes).into_owned());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) => by_body(v, write),
        Err(e) => Reply::new(
            Outcome::Info,
            Some(200),
            Value::Null,
            Some(format!("200 with a body that is not JSON ({e})")),
        ),
    }
}

/// `POST {base}/db/execute{query}` with a JSON array of statements.
pub async fn execute(http: &reqwest::Client, base: &str, query: &str, stmts: &Value) -> Reply {
    let r = http
        .post(format!("{base}/db/execute{query}"))
        .header("Content-Type", "application/json")
        .body(stmts.to_string())
        .send()
        .await;
    finish(r, true).await
}

/// `POST {base}/db/query?level=...` with a JSON array of statements.
pub async fn query(http: &reqwest::Client, base: &str, level: &str, stmts: &Value) -> Reply {
    let r = http
        .post(format!("{base}/db/query?level={level}"))
        .header("Content-Type", "application/json")
        .body(stmts.to_string())
        .send()
        .await;
    finish(r, false).await
}

/// The `values` rows of result `i` of a reply.
pub fn rows(reply: &Reply, i: usize) -> Vec<Vec<Value>> {
    reply
        .results()
        .get(i)
        .and_then(|r| r["values"].as_array())
        .map(|rows| {
            rows.iter()
                .map(|row| row.as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

/// `rows_affected` of each result of a reply.
pub fn rows_affected(reply: &Reply) -> Vec<i64> {
    reply
        .results()
        .iter()
        .map(|r| r["rows_affected"].as_i64().unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(
            by_status(503, "leader not found".into()).outcome,
            Outcome::Fail
        );
        assert_eq!(by_status(504, "unknown".into()).outcome, Outcome::Info);
        assert_eq!(by_status(500, "boom".into()).outcome, Outcome::Info);
        assert_eq!(by_status(400, "bad".into()).outcome, Outcome::Fail);
    }

    #[test]
    fn bodies_map_to_outcomes() {
        let ok = json!({"results": [{"rows_affected": 1}]});
        assert_eq!(by_body(ok, true).outcome, Outcome::Ok);
        let sql = json!({"results": [{"rows_affected": 1}, {"error": "UNIQUE constraint failed"}]});
        assert_eq!(by_body(sql, true).outcome, Outcome::Fail);
        let timeout = json!({"error": "timeout waiting for commit"});
        assert_eq!(by_body(timeout.clone(), true).outcome, Outcome::Info);
        assert_eq!(by_body(timeout, false).outcome, Outcome::Fail);
        let nl = json!({"error": "not leader"});
        assert_eq!(by_body(nl, true).outcome, Outcome::Fail);
    }
}

//! `BEGIN` / `COMMIT` / `ROLLBACK` in the shell: an interactive transaction on the node
//! (`/db/tx`). While one is open, SQL typed at the prompt goes to its `/request` endpoint and
//! the prompt says so; a 404 or 409 means the node ended it (expired, conflict, leader
//! change), and the shell forgets it.

use serde_json::{json, Value};

use super::Session;

/// What a typed statement asks of the transaction, when it is transaction control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Begin,
    Commit,
    Rollback,
}

/// `BEGIN [DEFERRED|IMMEDIATE|EXCLUSIVE] [TRANSACTION]`, `COMMIT|END [TRANSACTION]`,
/// `ROLLBACK [TRANSACTION]`, as whole statements (`ROLLBACK TO` a savepoint is not one: it
/// goes to the node, which refuses it inside a transaction).
pub fn control(stmt: &str) -> Option<Control> {
    let words: Vec<String> = stmt
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let (first, rest) = words.split_first()?;
    let rest = match rest {
        [r @ .., "TRANSACTION"] => r,
        r => r,
    };
    match (*first, rest) {
        ("BEGIN", [] | ["DEFERRED" | "IMMEDIATE" | "EXCLUSIVE"]) => Some(Control::Begin),
        ("COMMIT" | "END", []) => Some(Control::Commit),
        ("ROLLBACK", []) => Some(Control::Rollback),
        _ => None,
    }
}

/// POSTs to a transaction endpoint; a 404 or 409 ends the shell's transaction.
pub fn post(s: &mut Session, path: &str, body: &Value) -> Result<Value, String> {
    let r = s.client.send(
        "POST",
        path,
        Some((body.to_string().into_bytes(), "application/json")),
    )?;
    match r.status {
        200..=299 => {
            serde_json::from_slice(&r.body).map_err(|e| format!("bad JSON from node: {e}"))
        }
        404 | 409 => {
            s.tx = None;
            Err(format!("{} (the transaction has ended)", r.text().trim()))
        }
        401 => Err("unauthorized (check -u user:password)".into()),
        st => Err(format!("HTTP {st}: {}", r.text().trim())),
    }
}

/// Runs a transaction-control statement.
pub fn run(s: &mut Session, c: Control) -> Result<(), String> {
    match (c, s.tx.clone()) {
        (Control::Begin, Some(_)) => {
            Err("a transaction is already open (COMMIT or ROLLBACK it first)".into())
        }
        (Control::Begin, None) => {
            let r = post(s, "/db/tx", &json!(null))?;
            let id = r["id"].as_str().ok_or("no transaction id in the answer")?;
            s.tx = Some(id.to_string());
            let index = r["index"].as_u64().unwrap_or(0);
            s.out(&format!(
                "transaction {id} open, reading as of index {index}\n"
            ));
            Ok(())
        }
        (_, None) => Err("no transaction is open (BEGIN starts one)".into()),
        (Control::Commit, Some(id)) => {
            let r = post(s, &format!("/db/tx/{id}/commit"), &json!(null))?;
            s.tx = None;
            let index = r["raft_index"].as_u64().unwrap_or(0);
            s.out(&format!("committed at index {index}\n"));
            Ok(())
        }
        (Control::Rollback, Some(id)) => {
            post(s, &format!("/db/tx/{id}/rollback"), &json!(null))?;
            s.tx = None;
            s.out("rolled back\n");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_control_is_recognized_as_whole_statements() {
        assert_eq!(control("begin"), Some(Control::Begin));
        assert_eq!(
            control("BEGIN IMMEDIATE TRANSACTION;"),
            Some(Control::Begin)
        );
        assert_eq!(control("end transaction"), Some(Control::Commit));
        assert_eq!(control("COMMIT"), Some(Control::Commit));
        assert_eq!(control("rollback"), Some(Control::Rollback));
        assert_eq!(control("ROLLBACK TO sp"), None);
        assert_eq!(control("SELECT 1"), None);
        assert_eq!(control("BEGIN foo"), None);
    }
}

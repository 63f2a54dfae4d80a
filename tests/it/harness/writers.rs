//! Writers that keep inserting rows through every node of a cluster while nodes fail, and
//! record what they were told ([`insert`], [`WriteLog`]).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Client;

/// What writers were told about their INSERTs.
#[derive(Default)]
pub struct WriteLog {
    /// 200 with rows_affected 1: the row must exist afterwards.
    pub acked: BTreeSet<i64>,
    /// 503 "leader ... unreachable" from a node that tried to forward: the error that says
    /// nothing was applied and the client may retry. Each with the body it came with.
    pub refused: Vec<(i64, String)>,
}

/// Writer `w`: inserts rows `w * 1_000_000 + i` into `t(id, w)` through `clients`, moving
/// to the next node on any failure, until `stop`.
pub async fn insert(
    w: i64,
    clients: Vec<Client>,
    log: Arc<Mutex<WriteLog>>,
    stop: Arc<AtomicBool>,
) {
    let mut node = w as usize % clients.len();
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let id = w * 1_000_000 + i;
        let body = format!(r#"[["INSERT INTO t(id, w) VALUES(?, ?)", {id}, {w}]]"#);
        match clients[node].try_post_json("/db/execute", &body).await {
            Ok(r) if r.status == 200 && r.text().contains(r#""rows_affected":1"#) => {
                log.lock().unwrap().acked.insert(id);
                continue;
            }
            Ok(r) if r.status == 503 && r.text().contains("unreachable") => {
                log.lock().unwrap().refused.push((id, r.text()));
            }
            _ => {}
        }
        node = (node + 1) % clients.len();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! The internode wire: bincode bodies over HTTP/2 to the peer's Raft listener: cleartext with
//! prior knowledge, or TLS (ALPN `h2`, see [`crate::tls::node_client_config`]) when
//! node-to-node TLS is on. One pooled client per node; it multiplexes every peer's streams.
//!
//! Every body starts with a 2-byte little-endian wire version; a peer refuses versions it does
//! not know instead of misreading them.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The version of the internode encoding.
/// 3: query results carry each column's table (`qualify_columns`).
/// 4: reads carry `min_index`; followers ask the leader for a ReadIndex.
/// 5: openraft 0.10's Raft messages (errors changed shape); snapshots travel as
/// `SnapshotChunk`s.
pub const WIRE_VERSION: u16 = 5;

/// Why an internode call failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Could not connect, or the peer refused the request before processing it: nothing
    /// happened there.
    #[error("{addr} unreachable: {msg}")]
    Unreachable { addr: String, msg: String },
    /// The request may have reached the peer, but the connection broke before an answer:
    /// the outcome of the call is unknown.
    #[error("{addr}: connection lost before an answer: {msg}")]
    Interrupted { addr: String, msg: String },
    /// No answer in time: the call's deadline passed, or the connection's keep-alive found
    /// the peer silent first (a paused process). The outcome of the call is unknown.
    #[error("{addr}: no answer after {:.1}s", .waited.as_secs_f64())]
    Timeout { addr: String, waited: Duration },
    /// The peer answered something we cannot decode, or failed unexpectedly.
    #[error("{addr}: {msg}")]
    Protocol { addr: String, msg: String },
    /// The peer refused the request before processing it (e.g. 413: too large): nothing
    /// happened there.
    #[error("{addr} refused the request: {msg}")]
    Refused {
        addr: String,
        status: u16,
        msg: String,
    },
}

pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    let mut out = WIRE_VERSION.to_le_bytes().to_vec();
    bincode::serialize_into(&mut out, v).map_err(|e| e.to_string())?;
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    if b.len() < 2 {
        return Err("short internode message".into());
    }
    let v = u16::from_le_bytes([b[0], b[1]]);
    if v != WIRE_VERSION {
        return Err(format!(
            "internode wire version {v} not supported (this node speaks {WIRE_VERSION})"
        ));
    }
    bincode::deserialize(&b[2..]).map_err(|e| format!("bad internode message: {e}"))
}

/// The pooled client for all internode calls of one node.
#[derive(Clone, Debug)]
pub struct Transport {
    http: reqwest::Client,
    /// "http" or "https".
    scheme: &'static str,
    /// How long a connection to a peer may take (`-cluster-connect-timeout`).
    connect_timeout: Duration,
}

impl Transport {
    /// A client; with `tls`, every call uses HTTPS with that config.
    pub fn new(
        connect_timeout: Duration,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder();
        let scheme = match tls {
            Some(c) => {
                builder = builder.use_preconfigured_tls((*c).clone());
                "https"
            }
            None => "http",
        };
        let http = builder
            .http2_prior_knowledge()
            .connect_timeout(connect_timeout)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .http2_keep_alive_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            scheme,
            connect_timeout,
        })
    }

    /// `-cluster-connect-timeout`, as `/status` reports it (rqlite's `http.cluster.timeout`).
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// "https" when internode traffic is TLS, else "http".
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// POSTs `req` to `http(s)://<addr><path>` and decodes the answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, TransportError> {
        let proto = |msg: String| TransportError::Protocol {
            addr: addr.to_string(),
            msg,
        };
        let body = encode(req).map_err(proto)?;
        let started = Instant::now();
        let sent = self
            .http
            .post(format!("{}://{addr}{path}", self.scheme))
            .header("Content-Type", "application/x-sqlraft")
            .body(body)
            .timeout(timeout)
            .send()
            .await;
        let lost = |e: reqwest::Error| -> TransportError {
            let addr = addr.to_string();
            if e.is_timeout() {
                TransportError::Timeout {
                    addr,
                    waited: started.elapsed(),
                }
            } else if e.is_connect() {
                TransportError::Unreachable {
                    addr,
                    msg: error_chain(&e),
                }
            } else {
                TransportError::Interrupted {
                    addr,
                    msg: error_chain(&e),
                }
            }
        };
        let resp = sent.map_err(lost)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(lost)?;
        if !status.is_success() {
            let msg = format!("{status}: {}", String::from_utf8_lossy(&bytes).trim());
            // The internode service refuses (4xx, 503) before it processes anything.
            if status.is_client_error() {
                return Err(TransportError::Refused {
                    addr: addr.to_string(),
                    status: status.as_u16(),
                    msg,
                });
            }
            if status.as_u16() == 503 {
                return Err(TransportError::Unreachable {
                    addr: addr.to_string(),
                    msg,
                });
            }
            return Err(proto(msg));
        }
        decode(&bytes).map_err(proto)
    }
}

/// The message of an error and its sources, e.g. `error sending request: connection refused`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that takes the connection and never answers: the error says how long the call
    /// really waited (it once printed the deadline it was given, which a paused peer's
    /// keep-alive can cut short).
    #[tokio::test]
    async fn a_silent_peer_times_out_with_the_time_actually_waited() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = listener.accept().await {
                conns.push(c);
            }
        });
        let t = Transport::new(Duration::from_secs(1), None).unwrap();
        let r: Result<u8, _> = t.call(&addr, "/x", &1u8, Duration::from_millis(300)).await;
        match r {
            Err(e @ TransportError::Timeout { .. }) => {
                let msg = e.to_string();
                let secs: f64 = msg
                    .strip_prefix(&format!("{addr}: no answer after "))
                    .and_then(|s| s.strip_suffix('s'))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected message: {msg}"));
                assert!((0.3..5.0).contains(&secs), "{msg}");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        held.abort();
    }
}

//! `-disco-mode etcd-kv`: the leader key in etcd (v3 API, gRPC).
//!
//! Owns: the key `/<disco-key>/leader` and its compare-and-set operations, the connection to
//! etcd (made lazily, kept and reused), and the config rqlite reads from `-disco-config`.
//! Does not: decide when to create, replace or report (the root crate's bootstrap loop does).
//!
//! CAS is etcd's transaction: create is `If Version(key) == 0 Then Put` (as rqlite does), and
//! replace is `If ModRevision(key) == version Then Put`, where `version` is the mod revision
//! that `get` returned.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, KvClient, TlsOptions, Txn, TxnOp};
use serde::{Deserialize, Deserializer};

use crate::{DiscoStatus, DiscoveryError, LeaderKey, LeaderRecord, StatusCell, Versioned};

const MODE: &str = "etcd-kv";

/// Bound on every call (connecting included) when the config sets no `dial-timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// gRPC keepalive timeout when only `dial-keep-alive-time` is set (grpc-go's default).
const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// rqlite's etcd `-disco-config`: the JSON form of etcd's Go `clientv3.Config`.
///
/// Durations are numbers of **milliseconds** (`"dial-timeout": 30000` is 30 s). Unknown keys are
/// refused. Accepted but without effect here (etcd-client has no equivalent, and sqlraft's
/// callers retry by themselves): `auto-sync-interval`, `reject-old-cluster`,
/// `max-unary-retries`, `backoff-wait-between`, `backoff-jitter-fraction`,
/// `MaxCallSendMsgSize`, `MaxCallRecvMsgSize`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EtcdConfig {
    /// `http://host:port`, `https://host:port` or bare `host:port` (plain HTTP).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// etcd user; empty means no authentication.
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// Bound on connecting, and on every call (default [`DEFAULT_TIMEOUT`]).
    #[serde(default, deserialize_with = "millis")]
    pub dial_timeout: Option<Duration>,
    /// HTTP/2 keepalive ping interval; unset means no pings.
    #[serde(default, deserialize_with = "millis")]
    pub dial_keep_alive_time: Option<Duration>,
    /// How long a keepalive ping may go unanswered before the connection is dropped.
    #[serde(default, deserialize_with = "millis")]
    pub dial_keep_alive_timeout: Option<Duration>,
    /// Send keepalive pings even when no call is in flight.
    #[serde(default)]
    pub permit_without_stream: bool,
    #[serde(default, deserialize_with = "millis")]
    pub auto_sync_interval: Option<Duration>,
    #[serde(default)]
    pub reject_old_cluster: bool,
    #[serde(default)]
    pub max_unary_retries: Option<u64>,
    #[serde(default, deserialize_with = "millis")]
    pub backoff_wait_between: Option<Duration>,
    #[serde(default)]
    pub backoff_jitter_fraction: Option<f64>,
    // Untagged in Go's struct, so Go's JSON names them by their field names.
    #[serde(default, rename = "MaxCallSendMsgSize")]
    pub max_call_send_msg_size: Option<u64>,
    #[serde(default, rename = "MaxCallRecvMsgSize")]
    pub max_call_recv_msg_size: Option<u64>,
}

impl Default for EtcdConfig {
    /// What rqlite uses without `-disco-config`: one local etcd.
    fn default() -> Self {
        Self {
            endpoints: vec!["localhost:2379".to_string()],
            username: String::new(),
            password: String::new(),
            dial_timeout: None,
            dial_keep_alive_time: None,
            dial_keep_alive_timeout: None,
            permit_without_stream: false,
            auto_sync_interval: None,
            reject_old_cluster: false,
            max_unary_retries: None,
            backoff_wait_between: None,
            backoff_jitter_fraction: None,
            max_call_send_msg_size: None,
            max_call_recv_msg_size: None,
        }
    }
}

impl EtcdConfig {
    /// Parses the `-disco-config` JSON (environment expansion, if any, is the caller's).
    pub fn from_json(json: &str) -> Result<Self, DiscoveryError> {
        serde_json::from_str(json).map_err(|e| DiscoveryError::Config(format!("{MODE}: {e}")))
    }
}

/// Go durations are integers; a non-positive one means "not set" there, and here.
fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Ok(Option::<i64>::deserialize(d)?
        .and_then(|ms| u64::try_from(ms).ok())
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis))
}

/// The etcd leader key.
pub struct Etcd {
    endpoints: Vec<String>,
    options: ConnectOptions,
    /// `options` without credentials, for an etcd whose auth is off (see [`Etcd::client`]).
    anonymous: Option<ConnectOptions>,
    key: String,
    timeout: Duration,
    /// Connected on first use and kept: etcd being down when the node starts is not an error
    /// of the constructor, and a kept client reconnects by itself.
    client: tokio::sync::Mutex<Option<Client>>,
    status: StatusCell,
}

impl fmt::Debug for Etcd {
    // By hand: the connect options carry the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .field("key", &self.key)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Etcd {
    /// Checks the config and prepares a client for the key `/<disco_key>/leader`. It does not
    /// contact etcd: the first call connects (within that call's time bound).
    pub fn connect(cfg: EtcdConfig, disco_key: &str) -> Result<Etcd, DiscoveryError> {
        if disco_key.is_empty() {
            return Err(DiscoveryError::Config(format!(
                "{MODE}: empty discovery key"
            )));
        }
        let endpoints: Vec<String> = cfg
            .endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(DiscoveryError::Config(format!("{MODE}: no endpoints")));
        }
        let mut https = 0;
        for e in &endpoints {
            match e.split_once("://") {
                Some(("https", _)) => https += 1,
                Some(("http", _)) | None => {}
                Some((scheme, _)) => {
                    return Err(DiscoveryError::Config(format!(
                        "{MODE}: endpoint {e:?}: scheme {scheme:?} is not http or https"
                    )))
                }
            }
        }
        // etcd-client applies one TLS setting to every endpoint.
        if https != 0 && https != endpoints.len() {
            return Err(DiscoveryError::Config(format!(
                "{MODE}: endpoints mix http and https, which is not supported: {endpoints:?}"
            )));
        }

        let timeout = cfg.dial_timeout.unwrap_or(DEFAULT_TIMEOUT);
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            // A member cut off from its cluster's leader answers at once instead of hanging.
            .with_require_leader(true);
        if https > 0 {
            options = options.with_tls(TlsOptions::new().with_native_roots());
        }
        if let Some(interval) = cfg.dial_keep_alive_time {
            let t = cfg
                .dial_keep_alive_timeout
                .unwrap_or(DEFAULT_KEEP_ALIVE_TIMEOUT);
            options = options
                .with_keep_alive(interval, t)
                .with_keep_alive_while_idle(cfg.permit_without_stream);
        }
        // Go's clientv3 authenticates only when both are set.
        let mut anonymous = None;
        if !cfg.username.is_empty() && !cfg.password.is_empty() {
            anonymous = Some(options.clone());
            // Tokens expire (etcd's default simple token lives 5 minutes): get a new one when
            // etcd says so instead of failing every call after that.
            options = options
                .with_user(cfg.username, cfg.password)
                .with_auto_token_refresh(true);
        }

        let key = format!("/{disco_key}/leader");
        Ok(Etcd {
            status: StatusCell::new(MODE, key.clone()),
            endpoints,
            options,
            anonymous,
            key,
            timeout,
            client: tokio::sync::Mutex::new(None),
        })
    }

    /// Replaces the bound on each call (connecting included).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.options = self.options.with_connect_timeout(timeout);
        self
    }

    /// The etcd key, `/<disco-key>/leader`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Deletes the leader key (an operator's way out of a stale key); `true` if it existed.
    pub async fn delete(&self) -> Result<bool, DiscoveryError> {
        let key = self.key.clone();
        let r = self
            .call("delete", |mut kv| async move { kv.delete(key, None).await })
            .await;
        let r = r.map(|resp| resp.deleted() > 0);
        self.status.record(&r, None);
        r
    }

    /// The shared client, connecting first if needed.
    async fn client(&self) -> Result<Client, DiscoveryError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = match (
            Client::connect(&self.endpoints, Some(self.options.clone())).await,
            &self.anonymous,
        ) {
            (Ok(c), _) => c,
            // Credentials for an etcd whose auth is off: Go's clientv3 (so rqlite) carries on
            // without them, and so do we.
            (Err(etcd_client::Error::GRpcStatus(s)), Some(anonymous))
                if s.message().contains("authentication is not enabled") =>
            {
                Client::connect(&self.endpoints, Some(anonymous.clone()))
                    .await
                    .map_err(|e| self.error("connect", e))?
            }
            (Err(e), _) => return Err(self.error("connect", e)),
        };
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs one KV operation within the time bound.
    async fn call<T, F, Fut>(&self, op: &str, f: F) -> Result<T, DiscoveryError>
    where
        F: FnOnce(KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let run = async {
            let client = self.client().await?;
            f(client.kv_client()).await.map_err(|e| self.error(op, e))
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(DiscoveryError::Unavailable {
                mode: MODE,
                msg: format!(
                    "{op} {}: no answer from {:?} within {:?}",
                    self.key, self.endpoints, self.timeout
                ),
            }),
        }
    }

    fn error(&self, op: &str, e: etcd_client::Error) -> DiscoveryError {
        match e {
            // Only reachable with endpoints that pass our checks but not tonic's URI parser.
            etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => {
                DiscoveryError::Config(format!("{MODE}: endpoints {:?}: {e}", self.endpoints))
            }
            e => DiscoveryError::Unavailable {
                mode: MODE,
                msg: format!("{op} {}: {e}", self.key),
            },
        }
    }

    /// Commits `If <cmp> Then Put(record)`; `true` if the comparison held.
    async fn put_if(
        &self,
        op: &str,
        cmp: Compare,
        record: &LeaderRecord,
    ) -> Result<bool, DiscoveryError> {
        let txn =
            Txn::new()
                .when([cmp])
                .and_then([TxnOp::put(self.key.as_str(), record.encode(), None)]);
        self.call(op, |mut kv| async move { kv.txn(txn).await })
            .await
            .map(|resp| resp.succeeded())
    }
}

impl LeaderKey for Etcd {
    async fn get(&self) -> Result<Option<Versioned>, DiscoveryError> {
        let key = self.key.clone();
        let r = self
            .call("get", |mut kv| async move { kv.get(key, None).await })
            .await
            .and_then(|resp| {
                let Some(kv) = resp.kvs().first() else {
                    return Ok(None);
                };
                let protocol = |msg: String| DiscoveryError::Protocol {
                    mode: MODE,
                    msg: format!("{}: {msg}", self.key),
                };
                let record = LeaderRecord::decode(kv.value()).map_err(protocol)?;
                let version = u64::try_from(kv.mod_revision()).map_err(|_| {
                    protocol(format!("negative mod revision {}", kv.mod_revision()))
                })?;
                Ok(Some(Versioned { record, version }))
            });
        let seen = r
            .as_ref()
            .ok()
            .map(|v| v.iter().map(|v| v.record.addr.clone()).collect());
        self.status.record(&r, seen);
        r
    }

    async fn create(&self, record: &LeaderRecord) -> Result<bool, DiscoveryError> {
        // Version is 0 exactly when the key does not exist (or was deleted).
        let r = self
            .put_if(
                "create",
                Compare::version(self.key.as_str(), CompareOp::Equal, 0),
                record,
            )
            .await;
        self.status.record(&r, None);
        r
    }

    async fn replace(&self, version: u64, record: &LeaderRecord) -> Result<bool, DiscoveryError> {
        // No etcd revision exceeds i64::MAX, so such a version cannot be current.
        let r = match i64::try_from(version) {
            Ok(rev) => {
                self.put_if(
                    "replace",
                    Compare::mod_revision(self.key.as_str(), CompareOp::Equal, rev),
                    record,
                )
                .await
            }
            Err(_) => Ok(false),
        };
        self.status.record(&r, None);
        r
    }

    async fn set(&self, record: &LeaderRecord) -> Result<(), DiscoveryError> {
        let (key, value) = (self.key.clone(), record.encode());
        let r = self
            .call(
                "set",
                |mut kv| async move { kv.put(key, value, None).await },
            )
            .await
            .map(|_| ());
        self.status.record(&r, None);
        r
    }

    fn status(&self) -> DiscoStatus {
        self.status.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rqlite-disco-clients' example etcd config.
    const RQLITE_EXAMPLE: &str = r#"
{
	"endpoints": ["http://1.2.3.4:8080", "https://5.6.7.8"],
	"auto-sync-interval": 10000,
	"dial-timeout": 30000,
	"dial-keep-alive-timeout": 900000,
	"username": "me",
	"password": "my password",
	"reject-old-cluster": true
}
"#;

    #[test]
    fn parses_rqlite_example_config() {
        let c = EtcdConfig::from_json(RQLITE_EXAMPLE).unwrap();
        assert_eq!(c.endpoints, vec!["http://1.2.3.4:8080", "https://5.6.7.8"]);
        assert_eq!(c.auto_sync_interval, Some(Duration::from_secs(10)));
        assert_eq!(c.dial_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.dial_keep_alive_timeout, Some(Duration::from_secs(900)));
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("me", "my password")
        );
        assert!(c.reject_old_cluster);
    }

    #[test]
    fn parses_spec_example_and_every_documented_key() {
        let c = EtcdConfig::from_json(
            r#"{"endpoints":["http://1.2.3.4:2379"],"auto-sync-interval":10000,"dial-timeout":30000,
                "dial-keep-alive-time":5000,"dial-keep-alive-timeout":900000,"username":"","password":"",
                "reject-old-cluster":true,"permit-without-stream":true,"max-unary-retries":3,
                "backoff-wait-between":25,"backoff-jitter-fraction":0.1,
                "MaxCallSendMsgSize":1048576,"MaxCallRecvMsgSize":0}"#,
        )
        .unwrap();
        assert_eq!(c.dial_keep_alive_time, Some(Duration::from_secs(5)));
        assert!(c.permit_without_stream);
        assert_eq!(c.max_unary_retries, Some(3));
        // Zero means "unset", as in Go.
        let c = EtcdConfig::from_json(r#"{"endpoints":["a:1"],"dial-timeout":0}"#).unwrap();
        assert_eq!(c.dial_timeout, None);
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        let e = EtcdConfig::from_json(r#"{"endpoints":["a:1"],"dial_timeout":5}"#).unwrap_err();
        assert!(
            matches!(&e, DiscoveryError::Config(m) if m.contains("dial_timeout")),
            "{e}"
        );
        assert!(EtcdConfig::from_json(r#"{"endpoints":"a:1"}"#).is_err());
        assert!(EtcdConfig::from_json(r#"{"dial-timeout":"30s"}"#).is_err());
        assert!(EtcdConfig::from_json("not json").is_err());
    }

    #[test]
    fn connect_checks_the_config_without_network() {
        let cfg = |eps: &[&str]| EtcdConfig {
            endpoints: eps.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let e = Etcd::connect(cfg(&["127.0.0.1:1"]), "rqlite").unwrap();
        assert_eq!(e.key(), "/rqlite/leader");
        assert_eq!(e.status().mode, "etcd-kv");
        assert_eq!(e.status().target, "/rqlite/leader");
        assert_eq!(e.timeout, DEFAULT_TIMEOUT);
        for bad in [
            &[][..],
            &[" "],
            &["ftp://h:1"],
            &["http://a:1", "https://b:1"],
        ] {
            assert!(
                matches!(Etcd::connect(cfg(bad), "k"), Err(DiscoveryError::Config(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            Etcd::connect(cfg(&["a:1"]), ""),
            Err(DiscoveryError::Config(_))
        ));
        assert_eq!(EtcdConfig::default().endpoints, vec!["localhost:2379"]);
    }

    #[test]
    fn dial_timeout_bounds_each_call() {
        let c = EtcdConfig::from_json(r#"{"endpoints":["a:1"],"dial-timeout":1500}"#).unwrap();
        assert_eq!(
            Etcd::connect(c, "k").unwrap().timeout,
            Duration::from_millis(1500)
        );
    }
}

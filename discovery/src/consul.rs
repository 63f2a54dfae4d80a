//! `-disco-mode consul-kv`: the leader key in Consul's KV store, over its HTTP API.
//!
//! Owns: the key `<disco-key>/leader`, its compare-and-set operations (Consul's `?cas=`), one
//! pooled HTTP client, and the config rqlite reads from `-disco-config`. Does not: decide when
//! to create, replace or report (the root crate's bootstrap loop does).
//!
//! Consul's KV API as used here: `GET /v1/kv/<key>` answers 200 with
//! `[{"Key","Value":<base64>,"CreateIndex","ModifyIndex",..}]` or 404; `PUT /v1/kv/<key>` with
//! the raw value as body answers `true`/`false`; `?cas=0` writes only if the key is absent and
//! `?cas=<ModifyIndex>` only if it is unchanged. A record's version is its `ModifyIndex`.
//!
//! TLS (`"scheme": "https"`) uses rustls: the system roots, or the CA from `ca_file`, `ca_path`
//! or `ca_pem` (the first set, as Consul's Go client); a client certificate from
//! `cert_file`/`key_file` or `cert_pem`/`key_pem`; `insecure_skip_verify`; and
//! `tls_config.address` as the server name to verify. Not supported: `unix://` addresses, and
//! the `CONSUL_HTTP_*` environment variables (the root crate owns the environment).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use base64::Engine as _;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

use crate::{DiscoStatus, DiscoveryError, LeaderKey, LeaderRecord, StatusCell, Versioned};

mod tls;

const MODE: &str = "consul-kv";

/// Bound on every call (connecting included).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Consul's Go client default when no address is given.
const DEFAULT_ADDRESS: &str = "127.0.0.1:8500";

/// rqlite's Consul `-disco-config`. Unknown keys are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulConfig {
    /// `host:port` of the Consul agent, without a scheme (default `127.0.0.1:8500`).
    #[serde(default)]
    pub address: String,
    /// `http` (default) or `https`. Early rqlite releases spelled the key `schema`.
    #[serde(default, alias = "schema")]
    pub scheme: String,
    /// Sent as `?dc=`; empty means the agent's own datacenter.
    #[serde(default)]
    pub datacenter: String,
    /// HTTP basic auth, for a proxy in front of Consul.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// ACL token, sent as `X-Consul-Token`.
    #[serde(default)]
    pub token: String,
    /// File holding the ACL token; read once, when the client is made, and preferred to
    /// `token` when it is not blank (as Consul's Go client does).
    #[serde(default)]
    pub token_file: String,
    /// Enterprise namespace, sent as `?ns=`.
    #[serde(default)]
    pub namespace: String,
    /// Enterprise admin partition, sent as `?partition=`.
    #[serde(default)]
    pub partition: String,
    /// Used only with `"scheme": "https"`.
    #[serde(default)]
    pub tls_config: Option<ConsulTls>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
}

/// TLS settings. The `*_pem` values are PEM text or, as Go's JSON encodes byte slices (and
/// so as rqlite reads them), base64 of the PEM text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulTls {
    /// Server name to verify (a port, if any, is dropped); default: the host of `address`.
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub ca_file: String,
    /// A directory of PEM files (searched recursively).
    #[serde(default)]
    pub ca_path: String,
    #[serde(default)]
    pub ca_pem: String,
    #[serde(default)]
    pub cert_file: String,
    #[serde(default)]
    pub cert_pem: String,
    #[serde(default)]
    pub key_file: String,
    #[serde(default)]
    pub key_pem: String,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

impl ConsulConfig {
    /// Parses the `-disco-config` JSON (environment expansion, if any, is the caller's).
    pub fn from_json(json: &str) -> Result<Self, DiscoveryError> {
        let cfg: ConsulConfig = serde_json::from_str(json).map_err(|e| config(e.to_string()))?;
        // rqlite refuses this too: the scheme has its own key.
        if cfg.address.starts_with("http") {
            return Err(config("address should not contain HTTP or HTTPS".into()));
        }
        Ok(cfg)
    }
}

fn config(msg: String) -> DiscoveryError {
    DiscoveryError::Config(format!("{MODE}: {msg}"))
}

/// One entry of a KV read, as Consul answers it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KvEntry {
    key: String,
    /// Base64; `null` for an empty value.
    value: Option<String>,
    modify_index: u64,
}

/// The Consul leader key.
pub struct Consul {
    http: reqwest::Client,
    /// `<scheme>://<host>/v1/kv/<key>` with `dc`, `ns` and `partition` already in the query.
    url: Url,
    key: String,
    token: Option<String>,
    basic_auth: Option<BasicAuth>,
    timeout: Duration,
    status: StatusCell,
}

impl fmt::Debug for Consul {
    // By hand: the token and the basic-auth password stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consul")
            .field("url", &self.url.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Consul {
    /// Checks the config, reads the token and TLS files it names, and builds the client for
    /// the key `<disco_key>/leader`. It does not contact Consul.
    pub fn new(cfg: ConsulConfig, disco_key: &str) -> Result<Consul, DiscoveryError> {
        if disco_key.is_empty() {
            return Err(config("empty discovery key".into()));
        }
        if cfg.address.starts_with("http") {
            return Err(config("address should not contain HTTP or HTTPS".into()));
        }
        if cfg.address.starts_with("unix://") {
            return Err(config("unix socket addresses are not supported".into()));
        }
        let address = if cfg.address.is_empty() {
            DEFAULT_ADDRESS
        } else {
            cfg.address.as_str()
        };
        let https = match cfg.scheme.as_str() {
            "" | "http" => false,
            "https" => true,
            other => return Err(config(format!("scheme {other:?} is not http or https"))),
        };
        let scheme = if https { "https" } else { "http" };
        let mut url = Url::parse(&format!("{scheme}://{address}/"))
            .map_err(|e| config(format!("address {address:?}: {e}")))?;
        if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
            return Err(config(format!("address {address:?} is not host:port")));
        }

        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(DEFAULT_TIMEOUT);
        if https {
            let tls = cfg.tls_config.clone().unwrap_or_default();
            builder = tls::configure(builder, &tls)?;
            let server_name = tls::host_of(&tls.address);
            if !server_name.is_empty() && Some(server_name) != url.host_str() {
                // Verify the certificate against `server_name` while still connecting to
                // `address`: the URL names the server, the resolver override routes it.
                let addrs: Vec<SocketAddr> = address
                    .to_socket_addrs()
                    .map_err(|e| config(format!("address {address:?}: {e}")))?
                    .collect();
                builder = builder.resolve_to_addrs(server_name, &addrs);
                url.set_host(Some(server_name))
                    .map_err(|e| config(format!("tls_config.address {:?}: {e}", tls.address)))?;
            }
        } else {
            // Plain HTTP: do not read the system certificate store for nothing.
            builder = builder.tls_built_in_root_certs(false);
        }
        let http = builder
            .build()
            .map_err(|e| config(format!("HTTP client: {e}")))?;

        let key = format!("{disco_key}/leader");
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|_| config(format!("address {address:?}")))?;
            path.clear().extend(["v1", "kv"]);
            // Consul's Go client drops one leading '/' from keys.
            path.extend(key.strip_prefix('/').unwrap_or(&key).split('/'));
        }
        for (param, value) in [
            ("dc", &cfg.datacenter),
            ("ns", &cfg.namespace),
            ("partition", &cfg.partition),
        ] {
            if !value.is_empty() {
                url.query_pairs_mut().append_pair(param, value);
            }
        }

        let mut token = cfg.token.clone();
        if !cfg.token_file.is_empty() {
            let t = std::fs::read_to_string(&cfg.token_file)
                .map_err(|e| config(format!("token_file {:?}: {e}", cfg.token_file)))?;
            if !t.trim().is_empty() {
                token = t.trim().to_string();
            }
        }

        Ok(Consul {
            http,
            url,
            status: StatusCell::new(MODE, key.clone()),
            key,
            token: Some(token).filter(|t| !t.is_empty()),
            basic_auth: cfg.basic_auth,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Replaces the bound on each call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The Consul key, `<disco-key>/leader`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The URL of the key (without `?cas=`), for diagnostics.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// Deletes the leader key (an operator's way out of a stale key). Consul answers `true`
    /// whether or not the key existed.
    pub async fn delete(&self) -> Result<bool, DiscoveryError> {
        let r = match self.send("delete", Method::DELETE, None, None).await {
            Ok((StatusCode::OK, body)) => self.parse_bool(&body),
            Ok((status, body)) => Err(self.http_error("delete", status, &body)),
            Err(e) => Err(e),
        };
        self.status.record(&r, None);
        r
    }

    /// One request within the time bound; the status and body on any HTTP answer.
    async fn send(
        &self,
        op: &str,
        method: Method,
        cas: Option<u64>,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>), DiscoveryError> {
        let mut url = self.url.clone();
        if let Some(cas) = cas {
            url.query_pairs_mut().append_pair("cas", &cas.to_string());
        }
        let mut req = self.http.request(method, url).timeout(self.timeout);
        if let Some(t) = &self.token {
            req = req.header("X-Consul-Token", t);
        }
        if let Some(a) = &self.basic_auth {
            req = req.basic_auth(&a.username, Some(&a.password));
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let unavailable = |e: reqwest::Error| {
            let why = if e.is_timeout() {
                format!("no answer within {:?}", self.timeout)
            } else {
                full_chain(&e)
            };
            DiscoveryError::Unavailable {
                mode: MODE,
                msg: format!("{op} {}: {why}", self.key),
            }
        };
        let resp = req.send().await.map_err(unavailable)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(unavailable)?;
        Ok((status, body.to_vec()))
    }

    fn http_error(&self, op: &str, status: StatusCode, body: &[u8]) -> DiscoveryError {
        let text = String::from_utf8_lossy(body);
        let text: String = text.trim().chars().take(200).collect();
        DiscoveryError::Unavailable {
            mode: MODE,
            msg: format!("{op} {}: HTTP {status}: {text}", self.key),
        }
    }

    fn protocol(&self, msg: String) -> DiscoveryError {
        DiscoveryError::Protocol {
            mode: MODE,
            msg: format!("{}: {msg}", self.key),
        }
    }

    fn parse_bool(&self, body: &[u8]) -> Result<bool, DiscoveryError> {
        match body.trim_ascii() {
            b"true" => Ok(true),
            b"false" => Ok(false),
            other => Err(self.protocol(format!(
                "expected true or false, got {:?}",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    /// `PUT` the record, with `?cas=` when given; Consul's `true`/`false`.
    async fn put(
        &self,
        op: &str,
        cas: Option<u64>,
        record: &LeaderRecord,
    ) -> Result<bool, DiscoveryError> {
        match self
            .send(op, Method::PUT, cas, Some(record.encode()))
            .await?
        {
            (StatusCode::OK, body) => self.parse_bool(&body),
            (status, body) => Err(self.http_error(op, status, &body)),
        }
    }

    fn parse_entry(&self, body: &[u8]) -> Result<Versioned, DiscoveryError> {
        let entries: Vec<KvEntry> = serde_json::from_slice(body)
            .map_err(|e| self.protocol(format!("KV answer is not Consul's JSON: {e}")))?;
        let entry = entries
            .into_iter()
            .find(|e| e.key == self.key.strip_prefix('/').unwrap_or(&self.key))
            .ok_or_else(|| self.protocol("KV answer does not hold the key".into()))?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(entry.value.unwrap_or_default())
            .map_err(|e| self.protocol(format!("value is not base64: {e}")))?;
        let record = LeaderRecord::decode(&raw).map_err(|m| self.protocol(m))?;
        Ok(Versioned {
            record,
            version: entry.modify_index,
        })
    }
}

impl LeaderKey for Consul {
    async fn get(&self) -> Result<Option<Versioned>, DiscoveryError> {
        let r = match self.send("get", Method::GET, None, None).await {
            Ok((StatusCode::NOT_FOUND, _)) => Ok(None),
            Ok((StatusCode::OK, body)) => self.parse_entry(&body).map(Some),
            Ok((status, body)) => Err(self.http_error("get", status, &body)),
            Err(e) => Err(e),
        };
        let seen = r
            .as_ref()
            .ok()
            .map(|v| v.iter().map(|v| v.record.addr.clone()).collect());
        self.status.record(&r, seen);
        r
    }

    async fn create(&self, record: &LeaderRecord) -> Result<bool, DiscoveryError> {
        // cas=0: Consul writes only if the key does not exist.
        let r = self.put("create", Some(0), record).await;
        self.status.record(&r, None);
        r
    }

    async fn replace(&self, version: u64, record: &LeaderRecord) -> Result<bool, DiscoveryError> {
        let r = self.put("replace", Some(version), record).await;
        self.status.record(&r, None);
        r
    }

    async fn set(&self, record: &LeaderRecord) -> Result<(), DiscoveryError> {
        let r = match self.put("set", None, record).await {
            Ok(true) => Ok(()),
            // A plain PUT answers false only when Consul refused the write.
            Ok(false) => Err(DiscoveryError::Unavailable {
                mode: MODE,
                msg: format!("set {}: Consul answered false", self.key),
            }),
            Err(e) => Err(e),
        };
        self.status.record(&r, None);
        r
    }

    fn status(&self) -> DiscoStatus {
        self.status.get()
    }
}

/// reqwest's top-level message ("error sending request") hides the cause; show the chain.
fn full_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// rqlite-disco-clients' example Consul config.
    const RQLITE_EXAMPLE: &str = r#"
{
	"address": "1.2.3.4:8500",
	"scheme": "https",
	"datacenter": "my_dc",
	"basic_auth": {
		"username": "me",
		"password": "my password"
	},
	"token": "my_token",
	"token_file": "my_token_file",
	"namespace": "my_namespace",
	"partition": "my_partition",
	"tls_config": {
		"insecure_skip_verify": true
	}
}
"#;

    /// The spec's (rqlite docs') full form, every key present.
    const FULL: &str = r#"{"address":"1.2.3.4:8500","scheme":"https","datacenter":"dc","basic_auth":{"username":"","password":""},"token":"","token_file":"","namespace":"","partition":"","tls_config":{"address":"","ca_file":"","ca_path":"","ca_pem":"","cert_file":"","cert_pem":"","key_file":"","key_pem":"","insecure_skip_verify":true}}"#;

    #[test]
    fn parses_rqlite_example_config() {
        let c = ConsulConfig::from_json(RQLITE_EXAMPLE).unwrap();
        assert_eq!(c.address, "1.2.3.4:8500");
        assert_eq!(c.scheme, "https");
        assert_eq!(c.datacenter, "my_dc");
        assert_eq!(
            c.basic_auth,
            Some(BasicAuth {
                username: "me".into(),
                password: "my password".into()
            })
        );
        assert_eq!(
            (c.token.as_str(), c.token_file.as_str()),
            ("my_token", "my_token_file")
        );
        assert_eq!(
            (c.namespace.as_str(), c.partition.as_str()),
            ("my_namespace", "my_partition")
        );
        assert!(c.tls_config.unwrap().insecure_skip_verify);
    }

    #[test]
    fn parses_full_form_and_refuses_unknown_keys() {
        let c = ConsulConfig::from_json(FULL).unwrap();
        assert_eq!(
            c.tls_config.as_ref().map(|t| t.insecure_skip_verify),
            Some(true)
        );
        assert_eq!(
            ConsulConfig::from_json(r#"{"schema":"https"}"#)
                .unwrap()
                .scheme,
            "https"
        );
        for bad in [
            r#"{"adress":"a:1"}"#,
            r#"{"tls_config":{"verify":false}}"#,
            r#"{"basic_auth":{"user":"x"}}"#,
            r#"{"address":"http://1.2.3.4"}"#,
            r#"{"address":5}"#,
        ] {
            assert!(
                matches!(ConsulConfig::from_json(bad), Err(DiscoveryError::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn builds_the_key_url_with_query_params() {
        let cfg = ConsulConfig {
            address: "127.0.0.1:8501".into(),
            datacenter: "dc 2".into(),
            namespace: "ns".into(),
            partition: "p".into(),
            ..Default::default()
        };
        let c = Consul::new(cfg, "my key").unwrap();
        assert_eq!(c.key(), "my key/leader");
        assert_eq!(
            c.url(),
            "http://127.0.0.1:8501/v1/kv/my%20key/leader?dc=dc+2&ns=ns&partition=p"
        );
        assert_eq!(c.status().mode, "consul-kv");
        assert_eq!(c.status().target, "my key/leader");
        let c = Consul::new(ConsulConfig::default(), "rqlite").unwrap();
        assert_eq!(c.url(), "http://127.0.0.1:8500/v1/kv/rqlite/leader");
    }

    #[test]
    fn new_refuses_bad_configs() {
        let with = |f: fn(&mut ConsulConfig)| {
            let mut c = ConsulConfig::default();
            f(&mut c);
            Consul::new(c, "k")
        };
        assert!(matches!(
            with(|c| c.scheme = "ftp".into()),
            Err(DiscoveryError::Config(_))
        ));
        assert!(matches!(
            with(|c| c.address = "https://h:1".into()),
            Err(DiscoveryError::Config(_))
        ));
        assert!(matches!(
            with(|c| c.address = "unix:///tmp/consul.sock".into()),
            Err(DiscoveryError::Config(_))
        ));
        assert!(matches!(
            with(|c| c.address = "h:1/x".into()),
            Err(DiscoveryError::Config(_))
        ));
        assert!(matches!(
            with(|c| c.token_file = "/nonexistent/token".into()),
            Err(DiscoveryError::Config(_))
        ));
        let tls = |t: ConsulTls| ConsulConfig {
            scheme: "https".into(),
            tls_config: Some(t),
            ..Default::default()
        };
        for t in [
            ConsulTls {
                ca_file: "/nonexistent/ca.pem".into(),
                ..Default::default()
            },
            ConsulTls {
                ca_pem: "not pem, not base64!".into(),
                ..Default::default()
            },
            ConsulTls {
                ca_pem: "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n".into(),
                ..Default::default()
            },
            ConsulTls {
                cert_pem: "-----BEGIN CERTIFICATE-----".into(),
                ..Default::default()
            },
        ] {
            assert!(
                matches!(
                    Consul::new(tls(t.clone()), "k"),
                    Err(DiscoveryError::Config(_))
                ),
                "{t:?}"
            );
        }
        assert!(matches!(
            Consul::new(ConsulConfig::default(), ""),
            Err(DiscoveryError::Config(_))
        ));
    }

    #[test]
    fn https_with_insecure_and_server_name() {
        let cfg = ConsulConfig {
            address: "127.0.0.1:8501".into(),
            scheme: "https".into(),
            tls_config: Some(ConsulTls {
                address: "consul.example:8501".into(),
                insecure_skip_verify: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = Consul::new(cfg, "rqlite").unwrap();
        // The URL names the server; the resolver override still dials 127.0.0.1:8501.
        assert_eq!(c.url(), "https://consul.example:8501/v1/kv/rqlite/leader");
    }

    #[test]
    fn token_file_wins_over_token_when_not_blank() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  from-file\n").unwrap();
        let cfg = |file: &Path| ConsulConfig {
            token: "inline".into(),
            token_file: file.display().to_string(),
            ..Default::default()
        };
        assert_eq!(
            Consul::new(cfg(&path), "k").unwrap().token.as_deref(),
            Some("from-file")
        );
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(
            Consul::new(cfg(&path), "k").unwrap().token.as_deref(),
            Some("inline")
        );
    }
}

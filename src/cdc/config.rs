//! `-cdc-config`: rqlite's keys and defaults, plus sqlraft's `retain` and `queue_max_bytes`.
//!
//! The flag takes an endpoint URL, `stdout`, inline JSON, or the path of a JSON file; `$VAR`s
//! in JSON are expanded by the caller (`config`), as for `-disco-config`. Durations are Go
//! strings (`"200ms"`) or integer nanoseconds (what rqlite's Go decoder takes); the retry
//! policy is `"linear"`/`"exponential"` or rqlite's 0/1. Unknown keys are refused, naming the
//! key, so a typo never silently falls back to a default.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// POSTed to this `http://` or `https://` URL.
    Http(String),
    /// Printed to standard output, one envelope per line.
    Stdout,
}

/// How the wait between attempts grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Always `transmit_min_backoff`.
    Linear,
    /// Doubles from `transmit_min_backoff` up to `transmit_max_backoff`.
    Exponential,
}

/// `tls`: how the webhook's server is verified and how this node proves who it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookTls {
    pub ca_cert_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    pub server_name: Option<String>,
}

/// Delivered events kept for `GET /cdc` readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retain {
    /// Keep delivered events at most this long (zero: delete them once delivered).
    pub max_age: Duration,
    /// Keep at most this many bytes of delivered events (oldest deleted first).
    pub max_bytes: u64,
}

/// The validated CDC settings.
#[derive(Debug, Clone)]
pub struct CdcConfig {
    pub endpoint: Endpoint,
    pub service_id: String,
    pub row_ids_only: bool,
    /// Only tables whose name this matches (anywhere in the name, as Go's `MatchString`).
    pub table_filter: Option<regex::Regex>,
    pub tls: WebhookTls,
    /// Log entries (payload items) per request at most.
    pub max_batch_size: usize,
    /// How long a partial batch waits for more before it is sent.
    pub max_batch_delay: Duration,
    /// How often the leader records delivery progress when nothing else does.
    pub high_watermark_interval: Duration,
    pub transmit_timeout: Duration,
    /// Attempts after the first before a batch is given up; `None`: forever.
    pub transmit_max_retries: Option<u64>,
    pub transmit_retry_policy: RetryPolicy,
    pub transmit_min_backoff: Duration,
    pub transmit_max_backoff: Duration,
    pub retain: Retain,
    /// Undelivered events kept at most (bytes); past it new events are dropped and counted,
    /// never writes blocked.
    pub queue_max_bytes: u64,
}

pub const DEFAULT_MAX_BATCH_SIZE: usize = 10;
pub const DEFAULT_MAX_BATCH_DELAY: Duration = Duration::from_millis(200);
pub const DEFAULT_HIGH_WATERMARK_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_TRANSMIT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MIN_BACKOFF: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);
pub const DEFAULT_QUEUE_MAX_BYTES: u64 = 1 << 30;

impl CdcConfig {
    /// Defaults for `endpoint`.
    pub fn with_endpoint(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            service_id: String::new(),
            row_ids_only: false,
            table_filter: None,
            tls: WebhookTls::default(),
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            max_batch_delay: DEFAULT_MAX_BATCH_DELAY,
            high_watermark_interval: DEFAULT_HIGH_WATERMARK_INTERVAL,
            transmit_timeout: DEFAULT_TRANSMIT_TIMEOUT,
            transmit_max_retries: None,
            transmit_retry_policy: RetryPolicy::Linear,
            transmit_min_backoff: DEFAULT_MIN_BACKOFF,
            transmit_max_backoff: DEFAULT_MAX_BACKOFF,
            retain: Retain::default(),
            queue_max_bytes: DEFAULT_QUEUE_MAX_BYTES,
        }
    }

    /// The flag's value when it is not JSON: an endpoint URL or `stdout`. `None`: it should
    /// be read as JSON (inline or a file).
    pub fn from_endpoint(text: &str) -> Option<Result<Self, String>> {
        let t = text.trim();
        if t == "stdout" {
            return Some(Ok(Self::with_endpoint(Endpoint::Stdout)));
        }
        if t.starts_with("http://") || t.starts_with("https://") {
            return Some(endpoint(t).map(Self::with_endpoint));
        }
        None
    }

    /// Parses the JSON form. Errors name the key.
    pub fn parse_json(text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let Value::Object(mut m) = v else {
            return Err("must be a JSON object".into());
        };
        let ep = match m.remove("endpoint") {
            Some(Value::String(s)) => endpoint(&s)?,
            Some(_) => return Err("\"endpoint\" must be a string".into()),
            None => return Err("\"endpoint\" is required (a URL, or \"stdout\")".into()),
        };
        let mut c = Self::with_endpoint(ep);
        if let Some(v) = m.remove("service_id") {
            c.service_id = string(&v, "service_id")?;
        }
        if let Some(v) = m.remove("row_ids_only") {
            c.row_ids_only = boolean(&v, "row_ids_only")?;
        }
        if let Some(v) = m.remove("table_filter") {
            let re = string(&v, "table_filter")?;
            if !re.is_empty() {
                c.table_filter = Some(regex::Regex::new(&re).map_err(|e| {
                    format!("\"table_filter\" is not a valid regular expression: {e}")
                })?);
            }
        }
        if let Some(v) = m.remove("tls") {
            c.tls = tls(v)?;
        }
        // rqlite: a size or delay of zero or less means the default.
        if let Some(v) = m.remove("max_batch_size") {
            let n = integer(&v, "max_batch_size")?;
            if n > 0 {
                c.max_batch_size = n as usize;
            }
        }
        let durations: [(&str, &mut Duration); 5] = [
            ("max_batch_delay", &mut c.max_batch_delay),
            ("high_watermark_interval", &mut c.high_watermark_interval),
            ("transmit_timeout", &mut c.transmit_timeout),
            ("transmit_min_backoff", &mut c.transmit_min_backoff),
            ("transmit_max_backoff", &mut c.transmit_max_backoff),
        ];
        for (key, slot) in durations {
            if let Some(v) = m.remove(key) {
                let d = duration(&v, key)?;
                if !d.is_zero() {
                    *slot = d;
                }
            }
        }
        if let Some(v) = m.remove("transmit_max_retries") {
            c.transmit_max_retries = match v {
                Value::Null => None,
                v => {
                    let n = integer(&v, "transmit_max_retries")?;
                    // rqlite: a negative count retries forever.
                    (n >= 0).then_some(n as u64)
                }
            };
        }
        if let Some(v) = m.remove("transmit_retry_policy") {
            c.transmit_retry_policy =
                match &v {
                    Value::String(s) if s.eq_ignore_ascii_case("linear") => RetryPolicy::Linear,
                    Value::String(s) if s.eq_ignore_ascii_case("exponential") => {
                        RetryPolicy::Exponential
                    }
                    Value::Number(n) if n.as_u64() == Some(0) => RetryPolicy::Linear,
                    Value::Number(n) if n.as_u64() == Some(1) => RetryPolicy::Exponential,
                    _ => return Err(
                        "\"transmit_retry_policy\" must be \"linear\" or \"exponential\" (or 0, 1)"
                            .into(),
                    ),
                };
        }
        if c.transmit_max_backoff < c.transmit_min_backoff {
            return Err(
                "\"transmit_max_backoff\" must not be below \"transmit_min_backoff\"".into(),
            );
        }
        if let Some(v) = m.remove("retain") {
            c.retain = retain(v)?;
        }
        if let Some(v) = m.remove("queue_max_bytes") {
            let n = integer(&v, "queue_max_bytes")?;
            if n <= 0 {
                return Err("\"queue_max_bytes\" must be positive".into());
            }
            c.queue_max_bytes = n as u64;
        }
        refuse_unknown(&m, "")?;
        Ok(c)
    }

    /// Whether changes to `table` are captured.
    pub fn captures(&self, table: &str) -> bool {
        self.table_filter
            .as_ref()
            .is_none_or(|re| re.is_match(table))
    }
}

fn refuse_unknown(m: &Map<String, Value>, within: &str) -> Result<(), String> {
    match m.keys().next() {
        Some(k) => Err(format!("unknown key \"{within}{k}\"")),
        None => Ok(()),
    }
}

fn endpoint(s: &str) -> Result<Endpoint, String> {
    if s == "stdout" {
        return Ok(Endpoint::Stdout);
    }
    let url = reqwest::Url::parse(s).map_err(|e| format!("\"endpoint\" {s:?}: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host_str().is_some() => Ok(Endpoint::Http(s.to_string())),
        _ => Err(format!(
            "\"endpoint\" {s:?} must be an http:// or https:// URL, or \"stdout\""
        )),
    }
}

fn string(v: &Value, key: &str) -> Result<String, String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("\"{key}\" must be a string"))
}

fn boolean(v: &Value, key: &str) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("\"{key}\" must be true or false"))
}

fn integer(v: &Value, key: &str) -> Result<i64, String> {
    v.as_i64()
        .ok_or_else(|| format!("\"{key}\" must be an integer"))
}

fn duration(v: &Value, key: &str) -> Result<Duration, String> {
    let bad = || format!("\"{key}\" must be a duration (\"200ms\", \"5s\") or integer nanoseconds");
    match v {
        Value::String(s) => crate::duration::parse(s).ok_or_else(bad),
        Value::Number(n) => n.as_u64().map(Duration::from_nanos).ok_or_else(bad),
        _ => Err(bad()),
    }
}

fn tls(v: Value) -> Result<WebhookTls, String> {
    let Value::Object(mut m) = v else {
        return Err("\"tls\" must be an object".into());
    };
    let mut path = |key: &str| -> Result<Option<PathBuf>, String> {
        match m.remove(key) {
            None => Ok(None),
            Some(v) => {
                let s = string(&v, &format!("tls.{key}"))?;
                Ok((!s.is_empty()).then(|| PathBuf::from(s)))
            }
        }
    };
    let t = WebhookTls {
        ca_cert_file: path("ca_cert_file")?,
        cert_file: path("cert_file")?,
        key_file: path("key_file")?,
        insecure_skip_verify: false,
        server_name: None,
    };
    let mut t = t;
    if let Some(v) = m.remove("insecure_skip_verify") {
        t.insecure_skip_verify = boolean(&v, "tls.insecure_skip_verify")?;
    }
    if let Some(v) = m.remove("server_name") {
        let s = string(&v, "tls.server_name")?;
        t.server_name = (!s.is_empty()).then_some(s);
    }
    if t.cert_file.is_some() != t.key_file.is_some() {
        return Err("\"tls.cert_file\" and \"tls.key_file\" go together".into());
    }
    refuse_unknown(&m, "tls.")?;
    Ok(t)
}

fn retain(v: Value) -> Result<Retain, String> {
    let Value::Object(mut m) = v else {
        return Err("\"retain\" must be an object with \"max_age\" and/or \"max_bytes\"".into());
    };
    let mut r = Retain::default();
    if let Some(v) = m.remove("max_age") {
        r.max_age = duration(&v, "retain.max_age")?;
    }
    if let Some(v) = m.remove("max_bytes") {
        let n = integer(&v, "retain.max_bytes")?;
        if n < 0 {
            return Err("\"retain.max_bytes\" must not be negative".into());
        }
        r.max_bytes = n as u64;
    }
    if !r.max_age.is_zero() && r.max_bytes == 0 {
        // Age alone would let a busy cluster keep unbounded history.
        r.max_bytes = 256 << 20;
    }
    refuse_unknown(&m, "retain.")?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_url_or_stdout_takes_rqlites_defaults() {
        let c = CdcConfig::from_endpoint("http://localhost:8000/cdc")
            .unwrap()
            .unwrap();
        assert_eq!(
            c.endpoint,
            Endpoint::Http("http://localhost:8000/cdc".into())
        );
        assert_eq!(c.max_batch_size, 10);
        assert_eq!(c.max_batch_delay, Duration::from_millis(200));
        assert_eq!(c.transmit_max_retries, None);
        let c = CdcConfig::from_endpoint("stdout").unwrap().unwrap();
        assert_eq!(c.endpoint, Endpoint::Stdout);
        assert!(CdcConfig::from_endpoint("/etc/cdc.json").is_none());
        assert!(CdcConfig::from_endpoint("{\"endpoint\":\"stdout\"}").is_none());
    }

    #[test]
    fn every_rqlite_key_is_read() {
        let c = CdcConfig::parse_json(
            r#"{"endpoint": "https://hooks.example.com/x", "service_id": "svc",
                "row_ids_only": true, "table_filter": "^(foo|bar)$",
                "max_batch_size": 50, "max_batch_delay": "1s",
                "high_watermark_interval": 2000000000, "transmit_timeout": "3s",
                "transmit_max_retries": 4, "transmit_retry_policy": 1,
                "transmit_min_backoff": "100ms", "transmit_max_backoff": "2s",
                "tls": {"ca_cert_file": "/ca.pem", "cert_file": "/c.pem", "key_file": "/k.pem",
                        "insecure_skip_verify": true, "server_name": "hooks"},
                "retain": {"max_age": "1h", "max_bytes": 1048576},
                "queue_max_bytes": 1000000}"#,
        )
        .unwrap();
        assert_eq!(c.service_id, "svc");
        assert!(c.row_ids_only);
        assert!(c.captures("foo") && c.captures("bar") && !c.captures("foobar"));
        assert_eq!(c.max_batch_size, 50);
        assert_eq!(c.max_batch_delay, Duration::from_secs(1));
        assert_eq!(c.high_watermark_interval, Duration::from_secs(2));
        assert_eq!(c.transmit_timeout, Duration::from_secs(3));
        assert_eq!(c.transmit_max_retries, Some(4));
        assert_eq!(c.transmit_retry_policy, RetryPolicy::Exponential);
        assert_eq!(c.transmit_min_backoff, Duration::from_millis(100));
        assert_eq!(c.transmit_max_backoff, Duration::from_secs(2));
        assert_eq!(
            c.tls.ca_cert_file.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
        assert!(c.tls.insecure_skip_verify);
        assert_eq!(c.tls.server_name.as_deref(), Some("hooks"));
        assert_eq!(c.retain.max_age, Duration::from_secs(3600));
        assert_eq!(c.retain.max_bytes, 1 << 20);
        assert_eq!(c.queue_max_bytes, 1_000_000);
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        for (json, key) in [
            (r#"{}"#, "endpoint"),
            (r#"{"endpoint": "ftp://x"}"#, "endpoint"),
            (
                r#"{"endpoint": "stdout", "table_filter": "("}"#,
                "table_filter",
            ),
            (
                r#"{"endpoint": "stdout", "max_batch_delay": "soon"}"#,
                "max_batch_delay",
            ),
            (
                r#"{"endpoint": "stdout", "transmit_retry_policy": "sometimes"}"#,
                "transmit_retry_policy",
            ),
            (
                r#"{"endpoint": "stdout", "max_batch_sz": 3}"#,
                "max_batch_sz",
            ),
            (
                r#"{"endpoint": "stdout", "tls": {"cafile": "x"}}"#,
                "tls.cafile",
            ),
            (
                r#"{"endpoint": "stdout", "tls": {"cert_file": "x"}}"#,
                "tls.cert_file",
            ),
            (
                r#"{"endpoint": "stdout", "retain": {"max_age": "x"}}"#,
                "retain.max_age",
            ),
        ] {
            let e = CdcConfig::parse_json(json).unwrap_err();
            assert!(e.contains(key), "{json}: {e}");
        }
    }
}

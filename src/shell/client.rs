//! The shell's HTTP client: basic auth, HTTPS options, and failover to `-a` alternatives when
//! the current host stops answering.

use std::path::PathBuf;
use std::time::Duration;

/// How to reach the node(s).
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub scheme: String,
    /// `host:port`, the first one tried first.
    pub hosts: Vec<String>,
    pub user: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub insecure: bool,
    pub timeout: Duration,
}

/// An answer: status, body, and the `X-Rqlite-Version` header.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub version: Option<String>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct Client {
    http: reqwest::blocking::Client,
    opts: ClientOptions,
    current: usize,
}

fn read(path: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

impl Client {
    pub fn new(opts: ClientOptions) -> Result<Self, String> {
        if opts.scheme != "http" && opts.scheme != "https" {
            return Err(format!("scheme must be http or https, not {}", opts.scheme));
        }
        let mut b = reqwest::blocking::Client::builder()
            .timeout(opts.timeout)
            .use_rustls_tls();
        if let Some(ca) = &opts.ca_cert {
            let cert = reqwest::Certificate::from_pem(&read(ca)?)
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            b = b.add_root_certificate(cert);
        }
        if let (Some(cert), Some(key)) = (&opts.client_cert, &opts.client_key) {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("client certificate: {e}"))?;
            b = b.identity(id);
        }
        if opts.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        let http = b.build().map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            opts,
            current: 0,
        })
    }

    pub fn current_host(&self) -> &str {
        &self.opts.hosts[self.current]
    }

    pub fn current_url(&self) -> String {
        format!("{}://{}", self.opts.scheme, self.current_host())
    }

    /// Sends a request to the current host; if it cannot be reached, tries the alternatives in
    /// turn (and says so), keeping the first that answers.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<Reply, String> {
        let mut last_err = String::new();
        for _ in 0..self.opts.hosts.len() {
            let url = format!("{}{path}", self.current_url());
            let method =
                reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
            let mut rb = self.authed(self.http.request(method, &url));
            if let Some((b, ct)) = &body {
                rb = rb.header("Content-Type", *ct).body(b.clone());
            }
            match rb.send() {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let version = r
                        .headers()
                        .get("x-rqlite-version")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let body = r.bytes().map_err(|e| e.to_string())?.to_vec();
                    return Ok(Reply {
                        status,
                        body,
                        version,
                    });
                }
                Err(e) if e.is_connect() || e.is_timeout() => {
                    last_err = format!("{}: {e}", self.current_host());
                    if self.opts.hosts.len() > 1 {
                        let from = self.current_host().to_string();
                        self.current = (self.current + 1) % self.opts.hosts.len();
                        eprintln!(
                            "Host {from} unreachable, switching to {}",
                            self.current_host()
                        );
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Err(format!("no host answered: {last_err}"))
    }

    /// Adds `-u user:password` as Basic auth.
    fn authed(&self, rb: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        match &self.opts.user {
            Some(user) => {
                let (u, p) = user.split_once(':').unwrap_or((user.as_str(), ""));
                rb.basic_auth(u, Some(p))
            }
            None => rb,
        }
    }

    /// A GET to another node's API (`.sysdump`), with this client's credentials and TLS
    /// settings; no failover.
    pub fn get_url(&self, url: &str) -> Result<Reply, String> {
        let r = self
            .authed(self.http.get(url))
            .send()
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let body = r.bytes().map_err(|e| e.to_string())?.to_vec();
        Ok(Reply {
            status,
            body,
            version: None,
        })
    }

    /// Like `send`, but anything but a 2xx is an error with the server's words.
    pub fn ok(
        &mut self,
        method: &str,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<Reply, String> {
        let r = self.send(method, path, body)?;
        match r.status {
            200..=299 => Ok(r),
            401 => Err("unauthorized (check -u user:password)".into()),
            s => {
                let t = r.text();
                Err(if t.trim().is_empty() {
                    format!("HTTP {s}")
                } else {
                    t.trim().to_string()
                })
            }
        }
    }

    pub fn get_json(&mut self, path: &str) -> Result<serde_json::Value, String> {
        let r = self.ok("GET", path, None)?;
        serde_json::from_slice(&r.body).map_err(|e| format!("bad JSON from node: {e}"))
    }

    pub fn post_json(
        &mut self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let r = self.ok(
            "POST",
            path,
            Some((body.to_string().into_bytes(), "application/json")),
        )?;
        serde_json::from_slice(&r.body).map_err(|e| format!("bad JSON from node: {e}"))
    }

    /// The node's version, from its `X-Rqlite-Version` header.
    pub fn version(&mut self) -> Result<String, String> {
        let r = self.send("GET", "/readyz?noleader", None)?;
        Ok(r.version.unwrap_or_else(|| "unknown".into()))
    }
}

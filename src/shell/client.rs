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
        let mut tried = Vec::new();
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
                    // Every answer of rqlite's (and sqlraft's) API carries the version
                    // header; a 404 without it comes from something else on that port, most
                    // likely the node's Raft port.
                    if version.is_none() && status == 404 {
                        return Err(not_the_api(&self.current_url()));
                    }
                    // A TLS listener's answer to plain HTTP (sqlraft's and Go's both say
                    // "Client sent an HTTP request to an HTTPS server").
                    if version.is_none() && status == 400 && self.opts.scheme == "http" {
                        let said = r.text().unwrap_or_default();
                        if said.contains("HTTPS") {
                            return Err(format!(
                                "{} serves HTTPS ({}): pass -s https (and -c/--ca-cert CA_FILE if \
                                 its certificate is from a private CA)",
                                self.current_url(),
                                said.trim()
                            ));
                        }
                        return Err(format!("HTTP 400: {}", said.trim()));
                    }
                    let body = r
                        .bytes()
                        .map_err(|e| describe(&e, &self.current_url(), &self.opts))?
                        .to_vec();
                    return Ok(Reply {
                        status,
                        body,
                        version,
                    });
                }
                Err(e) if e.is_connect() || e.is_timeout() => {
                    last_err = describe(&e, &self.current_url(), &self.opts);
                    tried.push(self.current_host().to_string());
                    if self.opts.hosts.len() > 1 {
                        let from = self.current_host().to_string();
                        self.current = (self.current + 1) % self.opts.hosts.len();
                        eprintln!(
                            "Host {from} unreachable, switching to {}",
                            self.current_host()
                        );
                    }
                }
                Err(e) => return Err(describe(&e, &self.current_url(), &self.opts)),
            }
        }
        Err(if tried.len() > 1 {
            format!(
                "no host answered (tried {}); last: {last_err}",
                tried.join(", ")
            )
        } else {
            last_err
        })
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
            .map_err(|e| describe(&e, url, &self.opts))?;
        let status = r.status().as_u16();
        let body = r
            .bytes()
            .map_err(|e| describe(&e, url, &self.opts))?
            .to_vec();
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

/// What went wrong reaching `url`, in the terms of what to do about it: the first minutes
/// with a shell are mostly a wrong port, a node not started yet, or TLS settings.
fn describe(e: &reqwest::Error, url: &str, opts: &ClientOptions) -> String {
    let base = url
        .find("://")
        .and_then(|i| url[i + 3..].find('/').map(|j| &url[..i + 3 + j]))
        .unwrap_or(url);
    let causes = causes(e);
    let io_kind = causes
        .iter()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    let tls = causes
        .iter()
        .find_map(|c| c.downcast_ref::<rustls::Error>());
    let detail = causes
        .last()
        .map(|c| c.to_string())
        .unwrap_or_else(|| e.to_string());
    if io_kind == Some(std::io::ErrorKind::ConnectionRefused) {
        return format!(
            "cannot connect to {base}: connection refused (is sqlraftd running? is the port right?)"
        );
    }
    if e.is_timeout() {
        return format!(
            "no answer from {base} within {:?} (a busy or unreachable node; -t/--http-timeout sets the wait)",
            opts.timeout
        );
    }
    if let Some(t) = tls {
        use rustls::{CertificateError, Error as TlsError};
        return match t {
            TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => format!(
                "cannot connect to {base}: the node's certificate is not for this host name \
                 ({t}): connect with -H NAME using a name the certificate lists, or pass \
                 -i/--insecure to skip verification"
            ),
            TlsError::InvalidCertificate(_) => format!(
                "cannot connect to {base}: the node's certificate is not trusted ({t}): pass \
                 -c/--ca-cert FILE with the CA certificate that signed it, or -i/--insecure to \
                 skip verification"
            ),
            TlsError::InvalidMessage(_) | TlsError::InappropriateMessage { .. } => format!(
                "cannot connect to {base}: no TLS there ({t}): if the node serves plain HTTP, \
                 leave out -s https"
            ),
            _ => format!("cannot connect to {base}: TLS failed: {t}"),
        };
    }
    if e.is_connect() {
        return format!("cannot connect to {base}: {detail}");
    }
    // Connected, but no HTTP answer came back.
    let https_hint = if opts.scheme == "http" {
        " If the node serves HTTPS, pass -s https."
    } else {
        ""
    };
    format!(
        "{base} did not answer like an HTTP API ({detail}).{https_hint} If this is the node's \
         Raft port, connect to its HTTP API port instead (-http-addr, 4001 by default)."
    )
}

/// The answer of something that is not the HTTP API (see [`Client::send`]).
fn not_the_api(base: &str) -> String {
    format!(
        "{base} is not a sqlraft or rqlite HTTP API (it answered 404 without the API's version \
         header): this looks like the node's Raft port; connect to its HTTP API port instead \
         (-http-addr, 4001 by default)"
    )
}

/// The chain of causes, including the error an `io::Error` wraps (its `source()` skips it).
fn causes(e: &reqwest::Error) -> Vec<&(dyn std::error::Error + 'static)> {
    let mut out: Vec<&(dyn std::error::Error + 'static)> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = next {
        out.push(c);
        next = match c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner),
            None => c.source(),
        };
    }
    out
}

//! TLS for both listeners and the internode client: rustls (ring provider) only.
//!
//! * [`api_server_config`]: HTTPS on the API (`-http-cert/-http-key`), optionally requiring a
//!   client certificate signed by `-http-ca-cert` (`-http-verify-client`).
//! * [`node_server_config`]: TLS on the internode listener (`-node-cert/-node-key`), optionally
//!   requiring other nodes to present a certificate signed by `-node-ca-cert`
//!   (`-node-verify-client`).
//! * Both listeners can also require a given Common Name in the client certificate's subject
//!   (`-http-verify-common-name`, `-node-verify-common-name`; rqlite 10.2): a certificate
//!   from the right CA with another name is refused during the handshake, and the listener's
//!   one log line for the failed handshake names both.
//! * [`node_client_config`]: the internode client. Trusts `-node-ca-cert` (else the system
//!   roots), presents the node certificate (mutual TLS), accepts any certificate with
//!   `-node-no-verify`, and expects `-node-verify-server-name` instead of the peer address's host
//!   when set.
//!
//! # Reload
//!
//! Certificates and keys (server side and the client certificate a node presents) are re-read
//! when their files' modification time changes, without a restart: the files are checked at
//! most once a second, during a handshake. A pair that fails to load (half-written files, a key
//! that does not match the certificate) is logged and the previous pair stays in use. CA bundles
//! are read once at startup: changing them needs a restart.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::ServerCertVerifier;
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};

mod verify;

use verify::{FixedName, NoVerify, RequireCommonName};

/// How often certificate files are checked for changes, at most.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// A TLS setup error: names the file or flag at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

fn err(msg: impl Into<String>) -> TlsError {
    TlsError(msg.into())
}

/// The process's crypto provider: ring.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file (a chain: leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("{}: bad PEM certificate: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(err(format!(
            "{}: no PEM certificate (\"BEGIN CERTIFICATE\") found",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        err(format!(
            "{}: no usable PEM private key found: {e}",
            path.display()
        ))
    })
}

/// Reads a CA bundle into a root store.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots
            .add(c)
            .map_err(|e| err(format!("{}: bad CA certificate: {e}", path.display())))?;
    }
    Ok(roots)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| err(format!("cannot read {}: {e}", path.display())))
}

/// Loads a certificate chain and its key, and checks that they belong together.
fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = load_certs(cert)?;
    let der = load_key(key)?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| err(format!("{}: unsupported private key: {e}", key.display())))?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) => Ok(Arc::new(ck)),
        // The public key of an unusual certificate could not be compared: let the handshake
        // tell.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(Arc::new(ck)),
        Err(e) => Err(err(format!(
            "{} does not match the certificate {}: {e}",
            key.display(),
            cert.display()
        ))),
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A certificate and key pair that is re-read when its files change (checked at most once a
/// second, when a handshake asks for it).
pub struct ReloadingKey {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<KeyState>,
}

struct KeyState {
    current: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl fmt::Debug for ReloadingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingKey")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

impl ReloadingKey {
    /// Loads the pair now; an error here is a startup error.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let stamps = (mtime(cert), mtime(key));
        let current = load_pair(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            state: Mutex::new(KeyState {
                current,
                stamps,
                checked: Instant::now(),
            }),
        }))
    }

    /// The current pair, re-read first if the files changed since the last look.
    pub fn get(&self) -> Arc<CertifiedKey> {
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if st.checked.elapsed() >= RELOAD_CHECK {
            st.checked = Instant::now();
            let stamps = (mtime(&self.cert), mtime(&self.key));
            if stamps != st.stamps {
                match load_pair(&self.cert, &self.key) {
                    Ok(ck) => {
                        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                        st.current = ck;
                        st.stamps = stamps;
                    }
                    // Possibly half-written: keep the old pair and look again next time.
                    Err(e) => tracing::warn!(
                        error = %e,
                        "TLS certificate changed but could not be loaded; keeping the previous one"
                    ),
                }
            }
        }
        st.current.clone()
    }
}

impl ResolvesServerCert for ReloadingKey {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl ResolvesClientCert for ReloadingKey {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A server config for `cert`/`key`; with `client_ca`, client certificates signed by it are
/// required.
fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    common_name: Option<(&str, &'static str)>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let resolver = ReloadingKey::load(cert, key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(format!("TLS setup: {e}")))?;
    let builder = match client_ca {
        Some(ca) => {
            let roots = Arc::new(load_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| err(format!("{}: {e}", ca.display())))?;
            match common_name {
                Some((name, flag)) => {
                    builder.with_client_cert_verifier(Arc::new(RequireCommonName {
                        inner: verifier,
                        name: name.to_string(),
                        flag,
                    }))
                }
                None => builder.with_client_cert_verifier(verifier),
            }
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A listener's TLS config from its flags, or None without a certificate. `verify` requires
/// client certificates signed by `ca`; `needs_ca` is the error when `ca` is missing.
fn listener_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    verify: bool,
    ca: Option<&Path>,
    needs_ca: &'static str,
    common_name: Option<(&str, &'static str)>,
) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    let (Some(cert), Some(key)) = (cert, key) else {
        if let Some((_, flag)) = common_name {
            return Err(err(format!(
                "-{flag} needs TLS with client verification on that listener"
            )));
        }
        return Ok(None);
    };
    let ca = if verify {
        Some(ca.ok_or_else(|| err(needs_ca))?)
    } else {
        None
    };
    server_config(cert, key, ca, common_name).map(Some)
}

/// The API listener's TLS config, or None for plain HTTP.
pub fn api_server_config(tls: &crate::config::Tls) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    listener_config(
        tls.http_cert.as_deref(),
        tls.http_key.as_deref(),
        tls.http_verify_client,
        tls.http_ca_cert.as_deref(),
        "-http-verify-client needs -http-ca-cert (the CA that signs client certificates)",
        tls.http_verify_common_name
            .as_deref()
            .map(|n| (n, "http-verify-common-name")),
    )
}

/// The internode listener's TLS config, or None for cleartext.
pub fn node_server_config(tls: &crate::config::Tls) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    listener_config(
        tls.node_cert.as_deref(),
        tls.node_key.as_deref(),
        tls.node_verify_client,
        tls.node_ca_cert.as_deref(),
        "-node-verify-client needs -node-ca-cert (the CA that signs node certificates)",
        tls.node_verify_common_name
            .as_deref()
            .map(|n| (n, "node-verify-common-name")),
    )
}

/// The internode client's TLS config, or None when node-to-node TLS is off (`-node-cert` not
/// set).
pub fn node_client_config(tls: &crate::config::Tls) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    let (Some(cert), Some(key)) = (&tls.node_cert, &tls.node_key) else {
        return Ok(None);
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(format!("TLS setup: {e}")))?;
    let verifier = server_verifier(
        tls.node_no_verify,
        || match &tls.node_ca_cert {
            Some(ca) => load_roots(ca),
            None => system_roots(),
        },
        tls.node_verify_server_name.as_deref(),
        ("node CA", "-node-verify-server-name"),
    )?;
    let resolver = ReloadingKey::load(cert, key)?;
    let mut c = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(resolver);
    c.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some(Arc::new(c)))
}

/// How a client checks a server's certificate: not at all (`no_verify`), or against `roots`,
/// for `server_name` when given instead of the host it dialled. `names` say which settings
/// to blame in errors (the CA's, the server name's).
fn server_verifier(
    no_verify: bool,
    roots: impl FnOnce() -> Result<RootCertStore, TlsError>,
    server_name: Option<&str>,
    (ca_setting, name_setting): (&str, &str),
) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    if no_verify {
        return Ok(Arc::new(NoVerify(provider())));
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots()?), provider())
        .build()
        .map_err(|e| err(format!("{ca_setting}: {e}")))?;
    Ok(match server_name {
        Some(name) => {
            let name = ServerName::try_from(name.to_string())
                .map_err(|e| err(format!("{name_setting} {name:?}: not a valid name: {e}")))?;
            Arc::new(FixedName {
                inner: webpki,
                name,
            })
        }
        None => webpki,
    })
}

/// The CDC webhook client's TLS config for an `https://` endpoint (`-cdc-config`'s `tls`): the server verified against
/// `ca_cert_file` (else the system's roots) unless `insecure_skip_verify`, checked for
/// `server_name` when set instead of the URL's host; a client certificate when given.
pub fn webhook_client_config(
    t: &crate::cdc::config::WebhookTls,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(format!("TLS setup: {e}")))?;
    let verifier = server_verifier(
        t.insecure_skip_verify,
        || {
            match &t.ca_cert_file {
            Some(ca) => load_roots(ca),
            None => system_roots().map_err(|_| {
                err("CDC tls: no system CA certificates found: set tls.ca_cert_file (or insecure_skip_verify)")
            }),
        }
        },
        t.server_name.as_deref(),
        ("CDC tls.ca_cert_file", "CDC tls.server_name"),
    )?;
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let c = match (&t.cert_file, &t.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| err(format!("CDC tls.cert_file/key_file: {e}")))?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(c))
}

/// The operating system's trust store.
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "loading system CA certificates");
    }
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(err(
            "no system CA certificates found: set -node-ca-cert (or -node-no-verify)",
        ));
    }
    Ok(roots)
}

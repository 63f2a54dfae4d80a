//! TLS for the Consul client: rqlite's `tls_config` turned into reqwest (rustls) settings.
//!
//! Owns: reading the CA, client certificate and key that `tls_config` names, and the server
//! name to verify. Does not: make requests.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use reqwest::{Certificate, Identity};

use super::{config, ConsulTls};
use crate::DiscoveryError;

/// The host of `host[:port]` or `[v6]:port`.
pub(super) fn host_of(addr: &str) -> &str {
    let addr = addr.trim();
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((host, _)) if !host.contains(':') => host,
        _ => addr,
    }
}

/// PEM text, or base64 of it (Go's JSON form of a byte slice).
fn pem_value(field: &str, v: &str) -> Result<Vec<u8>, DiscoveryError> {
    let v = v.trim();
    if v.starts_with("-----BEGIN") {
        return Ok(v.as_bytes().to_vec());
    }
    base64::engine::general_purpose::STANDARD
        .decode(v)
        .map_err(|e| {
            config(format!(
                "tls_config.{field} is neither PEM nor base64 of PEM: {e}"
            ))
        })
}

fn read(field: &str, path: &Path) -> Result<Vec<u8>, DiscoveryError> {
    std::fs::read(path).map_err(|e| config(format!("tls_config.{field} {}: {e}", path.display())))
}

fn certificates(what: &str, pem: &[u8]) -> Result<Vec<Certificate>, DiscoveryError> {
    match Certificate::from_pem_bundle(pem) {
        Ok(c) if !c.is_empty() => Ok(c),
        Ok(_) => Err(config(format!("{what}: no PEM certificate found"))),
        Err(e) => Err(config(format!("{what}: {e}"))),
    }
}

/// Every file under `dir`, depth first, in name order.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>, DiscoveryError> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&d)
            .and_then(|it| it.map(|e| e.map(|e| e.path())).collect())
            .map_err(|e| config(format!("tls_config.ca_path {}: {e}", d.display())))?;
        entries.sort();
        for p in entries {
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    Ok(out)
}

pub(super) fn configure(
    mut b: reqwest::ClientBuilder,
    tls: &ConsulTls,
) -> Result<reqwest::ClientBuilder, DiscoveryError> {
    let cas = if !tls.ca_file.is_empty() {
        certificates(
            "tls_config.ca_file",
            &read("ca_file", Path::new(&tls.ca_file))?,
        )?
    } else if !tls.ca_path.is_empty() {
        let mut all = Vec::new();
        for f in files_under(Path::new(&tls.ca_path))? {
            all.extend(certificates(
                &format!("tls_config.ca_path {}", f.display()),
                &read("ca_path", &f)?,
            )?);
        }
        if all.is_empty() {
            return Err(config(format!(
                "tls_config.ca_path {:?}: no certificate files",
                tls.ca_path
            )));
        }
        all
    } else if !tls.ca_pem.is_empty() {
        certificates("tls_config.ca_pem", &pem_value("ca_pem", &tls.ca_pem)?)?
    } else {
        Vec::new()
    };
    if !cas.is_empty() {
        // A configured CA replaces the system roots, as in Consul's Go client.
        b = b.tls_built_in_root_certs(false);
        for c in cas {
            b = b.add_root_certificate(c);
        }
    }

    let pair = match (
        tls.cert_file.is_empty(),
        tls.key_file.is_empty(),
        tls.cert_pem.is_empty(),
        tls.key_pem.is_empty(),
    ) {
        (false, false, _, _) => Some((
            read("cert_file", Path::new(&tls.cert_file))?,
            read("key_file", Path::new(&tls.key_file))?,
        )),
        (true, true, false, false) => Some((
            pem_value("cert_pem", &tls.cert_pem)?,
            pem_value("key_pem", &tls.key_pem)?,
        )),
        (true, true, true, true) => None,
        _ => {
            return Err(config(
                "tls_config: a client certificate needs both its cert and its key".into(),
            ))
        }
    };
    if let Some((mut pem, key)) = pair {
        pem.push(b'\n');
        pem.extend_from_slice(&key);
        let id = Identity::from_pem(&pem)
            .map_err(|e| config(format!("tls_config client certificate: {e}")))?;
        b = b.identity(id);
    }
    if tls.insecure_skip_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_ports() {
        assert_eq!(host_of("consul.example:8501"), "consul.example");
        assert_eq!(host_of("consul.example"), "consul.example");
        assert_eq!(host_of("[::1]:8501"), "::1");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(host_of(""), "");
    }

    #[test]
    fn pem_values_may_be_base64_as_go_encodes_bytes() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
        assert_eq!(pem_value("ca_pem", &b64).unwrap(), pem.as_bytes());
        assert_eq!(pem_value("ca_pem", pem).unwrap(), pem.trim().as_bytes());
    }
}

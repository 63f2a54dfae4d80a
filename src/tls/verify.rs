//! Certificate verifiers beyond webpki's defaults: a fixed server name
//! (`-node-verify-server-name`), no verification (`-node-no-verify`), and a required client
//! Common Name (`-http-verify-common-name`, `-node-verify-common-name`).

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Verifies the server's certificate for a configured name instead of the name the client
/// connected to (`-node-verify-server-name`).
#[derive(Debug)]
pub(super) struct FixedName {
    pub(super) inner: Arc<WebPkiServerVerifier>,
    pub(super) name: ServerName<'static>,
}

impl ServerCertVerifier for FixedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts any server certificate (`-node-no-verify`); handshake signatures are still checked,
/// so the peer must hold the key of the certificate it shows.
#[derive(Debug)]
pub(super) struct NoVerify(pub(super) Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Client certificate verification that also requires a Common Name in the leaf's subject
/// (`-http-verify-common-name`, `-node-verify-common-name`), compared exactly, as rqlite
/// compares Go's `Subject.CommonName` (the last CN attribute when there are several).
#[derive(Debug)]
pub(super) struct RequireCommonName {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    pub(super) name: String,
    pub(super) flag: &'static str,
}

/// Why a certificate was refused: the message of the handshake failure's log line.
#[derive(Debug)]
struct WrongCommonName(String);

impl fmt::Display for WrongCommonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WrongCommonName {}

impl ClientCertVerifier for RequireCommonName {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // The chain first: only a certificate from the CA gets its name looked at.
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cn = subject_common_name(end_entity.as_ref());
        if cn.as_deref() == Some(self.name.as_str()) {
            return Ok(verified);
        }
        let shown = cn.map_or_else(
            || "no Common Name".to_string(),
            |c| format!("Common Name {c:?}"),
        );
        Err(rustls::Error::Other(rustls::OtherError(Arc::new(
            WrongCommonName(format!(
                "client certificate refused: it has {shown}, -{} requires {:?}",
                self.flag, self.name
            )),
        ))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// One DER element: its tag, its contents and what follows it.
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The last Common Name (OID 2.5.4.3) of a certificate's subject. Only called on
/// certificates the CA's chain check accepted, so the structure is X.509's.
fn subject_common_name(cert: &[u8]) -> Option<String> {
    const SEQ: u8 = 0x30;
    let (SEQ, cert, _) = der(cert)? else {
        return None;
    };
    let (SEQ, tbs, _) = der(cert)? else {
        return None;
    };
    // [0] version (optional), serial, signature algorithm, issuer, validity, then subject.
    let (tag, _, mut rest) = der(tbs)?;
    if tag == 0xa0 {
        rest = der(rest)?.2;
    }
    for _ in 0..3 {
        rest = der(rest)?.2;
    }
    let (SEQ, mut rdns, _) = der(rest)? else {
        return None;
    };
    let mut cn = None;
    while !rdns.is_empty() {
        let (_set, mut attrs, next) = der(rdns)?;
        rdns = next;
        while !attrs.is_empty() {
            let (_seq, atv, next) = der(attrs)?;
            attrs = next;
            let (_oid_tag, oid, value) = der(atv)?;
            if oid == [0x55, 0x04, 0x03] {
                let (tag, v, _) = der(value)?;
                cn = Some(match tag {
                    // BMPString: UTF-16, big-endian.
                    0x1e => String::from_utf16_lossy(
                        &v.chunks(2)
                            .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                            .collect::<Vec<_>>(),
                    ),
                    _ => String::from_utf8_lossy(v).into_owned(),
                });
            }
        }
    }
    cn
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(names: &[&str]) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "sqlraft tests");
        for n in names {
            p.distinguished_name.push(rcgen::DnType::CommonName, *n);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_subject_common_name_is_read_from_the_certificate() {
        assert_eq!(
            subject_common_name(&cert_with(&["node-1"])).as_deref(),
            Some("node-1")
        );
        assert_eq!(
            subject_common_name(&cert_with(&["ünïcode name"])).as_deref(),
            Some("ünïcode name")
        );
        assert_eq!(subject_common_name(&cert_with(&[])), None);
        assert_eq!(subject_common_name(b"\x30\x03\x02\x01"), None);
    }
}

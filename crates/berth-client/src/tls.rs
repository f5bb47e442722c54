//! TLS for registries: the trusted roots (the bundled web roots plus `--ca-cert`), and a
//! certificate verifier that also accepts a self-signed certificate given with
//! `--ca-cert` when the server presents exactly that certificate.
//!
//! A certificate made by a plain `openssl req -x509` is a CA certificate (`CA:TRUE`).
//! Used as a server's own certificate, webpki refuses it as an end-entity certificate
//! (`CaUsedAsEndEntity`), while Go clients such as skopeo accept it once it is trusted.
//! [`PinningVerifier`] runs the usual webpki verification first; only when that fails
//! does it accept a server certificate that is byte for byte one of the certificates the
//! user gave, and then still checks that it names the host (its validity dates are the
//! user's choice, as with any pinned certificate). The handshake signatures are always
//! verified with the certificate's key, so a server must hold its private key.
//!
//! This module knows nothing about registries; [`crate::registry::Clients`] uses it to
//! build its HTTP client.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;

use crate::error::{ClientError, Result};

/// Reads every PEM certificate of the files given with `--ca-cert`.
pub fn read_certificates(paths: &[std::path::PathBuf]) -> Result<Vec<CertificateDer<'static>>> {
    let mut out = Vec::new();
    for path in paths {
        let pem = std::fs::read(path).map_err(|e| {
            ClientError::Usage(format!(
                "cannot read CA certificate {}: {e}",
                path.display()
            ))
        })?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| {
                ClientError::Usage(format!(
                    "{} holds no usable PEM certificate: {e}",
                    path.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(ClientError::Usage(format!(
                "{} holds no PEM certificate",
                path.display()
            )));
        }
        out.extend(certs);
    }
    Ok(out)
}

/// A rustls client configuration trusting the web roots and `extra` (as roots, and as
/// pinned server certificates), speaking HTTP/2 and HTTP/1.1.
pub fn client_config(extra: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // A certificate that cannot be a trust anchor may still be pinned below.
    let (_added, _ignored) = roots.add_parsable_certificates(extra.iter().cloned());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ClientError::Usage(format!("cannot build the TLS verifier: {e}")))?;
    let verifier = PinningVerifier {
        webpki,
        pinned: extra.to_vec(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Usage(format!("cannot configure TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// webpki verification, falling back to accepting a pinned certificate (see the module
/// documentation).
#[derive(Debug)]
pub struct PinningVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let refused = match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(ok) => return Ok(ok),
            Err(e) => e,
        };
        if !self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Err(refused);
        }
        // The exact certificate the user trusts; it must still be for this host.
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_name(&parsed, server_name)?;
        tracing::debug!(server = ?server_name, webpki = %refused, "accepted the pinned --ca-cert certificate");
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// True when an error means that a plain-HTTP request reached a TLS server: the answer
/// is a TLS record, which hyper reports as an invalid HTTP version.
pub fn is_tls_answer_to_http(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.to_string().contains("invalid HTTP version parsed") {
            return true;
        }
        cur = c.source();
    }
    false
}

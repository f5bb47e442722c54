//! The cipher limits of the TLS phase (`berth-bench tls`, part `limits`): how fast one core
//! seals TLS records with each crypto provider rustls can run on (ring and aws-lc-rs), for
//! AES-128-GCM and AES-256-GCM, measured two ways:
//!
//! - **AEAD**: the provider's own AES-GCM sealing 16 KiB records in place, nothing else;
//! - **rustls records**: a rustls connection handshaken in memory, its plaintext written
//!   in 64 KiB pieces and its sealed records drained into memory. This is what a server's
//!   TLS layer does per byte besides the socket: the copy of the plaintext into each
//!   record's own buffer, the record's allocation and the sealing.
//!
//! Berth's server seals with [`server_provider`] on this CPU; the other provider's rows
//! show what the choice buys.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, ensure, Context, Result};
use rustls::crypto::CryptoProvider;
use rustls::{CipherSuite, ClientConnection, Connection, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The crypto library whose AES-GCM is measured (`berth_tls::AeadImpl`).
pub use berth_tls::AeadImpl as Provider;

/// The library Berth's TLS listener seals records with on this CPU.
pub fn server_provider() -> Provider {
    Provider::for_this_cpu()
}

/// `provider` offering only `suite`, so a handshake must choose it.
fn only(provider: Provider, suite: CipherSuite) -> Result<CryptoProvider> {
    let mut p = provider.provider();
    p.cipher_suites.retain(|s| s.suite() == suite);
    ensure!(
        !p.cipher_suites.is_empty(),
        "{} has no {suite:?}",
        provider.name()
    );
    Ok(p)
}

/// One-core AEAD sealing of `total` bytes in 16 KiB records (the TLS record size) with
/// `provider`'s AES-128-GCM or AES-256-GCM, in bytes per second. Each record's plaintext
/// is copied from `data` first, as a TLS layer must.
pub fn aead_seal(provider: Provider, aes256: bool, data: &[u8], total: u64) -> Result<f64> {
    // ring and aws-lc-rs share the AEAD interface (aws-lc-rs follows ring's), but not
    // its types: one body, instantiated for each crate.
    macro_rules! seal {
        ($aead:path) => {{
            use $aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
            let alg = if aes256 { &AES_256_GCM } else { &AES_128_GCM };
            let key = LessSafeKey::new(
                UnboundKey::new(alg, &data[..alg.key_len()]).map_err(|_| anyhow!("AEAD key"))?,
            );
            let mut record = vec![0u8; 16 << 10];
            let mut done = 0u64;
            let mut seq = 0u64;
            let t = Instant::now();
            while done < total {
                let off = (done % (data.len() - record.len()) as u64) as usize;
                let len = record.len();
                record.copy_from_slice(&data[off..off + len]);
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&seq.to_be_bytes());
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from([23u8, 3, 3, 0x40, 0x11]),
                        &mut record,
                    )
                    .map_err(|_| anyhow!("AEAD seal"))?;
                let _ = std::hint::black_box(tag);
                seq += 1;
                done += record.len() as u64;
            }
            Ok(done as f64 / t.elapsed().as_secs_f64())
        }};
    }
    ensure!(
        data.len() > 16 << 10,
        "the AEAD probe needs more than 16 KiB of data"
    );
    match provider {
        Provider::Ring => seal!(ring::aead),
        Provider::AwsLc => seal!(aws_lc_rs::aead),
    }
}

/// A rustls server and client on `provider` with only `suite`, handshaken in memory with
/// the certificate `cert` (trusted by the client as its only root) and its `key`.
fn connected_pair(
    provider: Provider,
    suite: CipherSuite,
    cert: &Path,
    key: &Path,
) -> Result<(ServerConnection, ClientConnection)> {
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let mut roots = rustls::RootCertStore::empty();
    for c in &certs {
        roots.add(c.clone())?;
    }
    let key = PrivateKeyDer::from_pem_file(key)?;
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(only(provider, suite)?))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(only(provider, suite)?))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut s = Connection::Server(ServerConnection::new(Arc::new(server))?);
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
    let mut c = Connection::Client(ClientConnection::new(Arc::new(client), name)?);
    let mut wire = Vec::new();
    for _ in 0..10 {
        if !s.is_handshaking() && !c.is_handshaking() {
            break;
        }
        move_records(&mut c, &mut s, &mut wire)?;
        move_records(&mut s, &mut c, &mut wire)?;
    }
    ensure!(
        !s.is_handshaking() && !c.is_handshaking(),
        "in-memory handshake did not finish"
    );
    ensure!(
        s.negotiated_cipher_suite().map(|x| x.suite()) == Some(suite),
        "in-memory handshake chose {:?}",
        s.negotiated_cipher_suite()
    );
    match (s, c) {
        (Connection::Server(s), Connection::Client(c)) => Ok((s, c)),
        _ => Err(anyhow!("in-memory pair changed sides")),
    }
}

/// Moves what `from` has to send into `to`, and lets `to` process it.
fn move_records(from: &mut Connection, to: &mut Connection, wire: &mut Vec<u8>) -> Result<()> {
    wire.clear();
    while from.wants_write() {
        from.write_tls(wire)?;
    }
    let mut rd = &wire[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd)?;
        to.process_new_packets()?;
    }
    Ok(())
}

/// One-core sealing of `total` bytes through rustls' record layer on `provider` with
/// `suite`: 64 KiB writes of plaintext, each followed by draining the sealed records
/// into a reused buffer (a server's socket write, without the socket), in bytes per
/// second of plaintext.
pub fn record_seal(
    provider: Provider,
    suite: CipherSuite,
    cert: &Path,
    key: &Path,
    data: &[u8],
    total: u64,
) -> Result<f64> {
    const PIECE: usize = 64 << 10;
    ensure!(
        data.len() > PIECE,
        "the record probe needs more than 64 KiB of data"
    );
    let (mut s, _c) = connected_pair(provider, suite, cert, key)?;
    let mut sink = Vec::with_capacity(2 * PIECE);
    let mut done = 0u64;
    let t = Instant::now();
    while done < total {
        let off = (done % (data.len() - PIECE) as u64) as usize;
        let mut piece = &data[off..off + PIECE];
        while !piece.is_empty() {
            let n = s.writer().write(piece).context("rustls write")?;
            piece = &piece[n..];
            done += n as u64;
            while s.wants_write() {
                s.write_tls(&mut sink).context("rustls write_tls")?;
            }
            sink.clear();
        }
    }
    Ok(done as f64 / t.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aead_probes_run_on_both_providers() {
        let data = crate::data::random_bytes(3, 1 << 20);
        for p in Provider::ALL {
            assert!(aead_seal(p, false, &data, 4 << 20).unwrap() > 0.0, "{p:?}");
            assert!(aead_seal(p, true, &data, 4 << 20).unwrap() > 0.0, "{p:?}");
        }
    }

    #[test]
    fn a_provider_can_be_narrowed_to_one_suite() {
        for p in Provider::ALL {
            let one = only(p, CipherSuite::TLS13_AES_128_GCM_SHA256).unwrap();
            assert_eq!(one.cipher_suites.len(), 1);
        }
    }
}

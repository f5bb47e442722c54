//! A TLS 1.3 server connection whose records the application seals and opens itself.
//!
//! rustls runs the handshake ([`Handshake`], over its unbuffered API) and then hands over
//! the traffic keys and a [`KernelConnection`] that derives the next keys on a key update
//! (what kTLS set-ups do). [`Session`] is the record layer's protocol from there on, with
//! no I/O of its own: application data in and out, `close_notify`, the peer's alerts, and
//! key updates both ways (the peer's, and ours before the cipher suite's confidentiality
//! limit, RFC 8446 §5.5). Records are sealed and opened in place ([`RecordKey`]).

use std::ops::Range;
use std::sync::Arc;

use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{ProtocolVersion, ServerConfig, SupportedCipherSuite};

use crate::record::{ContentType, RecordError, RecordKey, HEADER, TAG};
use crate::AeadImpl;

/// Room one control record (a key update or an alert) takes in an output buffer.
pub const CONTROL_RECORD: usize = HEADER + 5 + 1 + TAG;

/// Records sealed before the confidentiality limit at which a key update is sent (the
/// limit, not the margin, is what must never be passed).
const KEY_UPDATE_MARGIN: u64 = 1 << 16;

/// Handshake bytes a peer may leave unfinished between records (a key update is 5).
const MAX_HANDSHAKE_BUF: usize = 1 << 10;

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS record: {0}")]
    Record(#[from] RecordError),
    #[error("the peer closed the connection during the handshake")]
    ClosedInHandshake,
    #[error("the negotiated protocol is not TLS 1.3 with AES-GCM")]
    Unsupported,
    #[error("the peer sent a fatal alert ({0})")]
    PeerAlert(u8),
    #[error("unexpected message from the peer: {0}")]
    Unexpected(&'static str),
}

impl SessionError {
    /// The alert a failure is reported to the peer with (RFC 8446 §6.2), if any.
    pub fn alert(&self) -> Option<u8> {
        match self {
            SessionError::Record(RecordError::BadRecordMac) => Some(20),
            SessionError::Record(RecordError::Malformed(_)) => Some(50),
            SessionError::Unexpected(_) => Some(10),
            _ => None,
        }
    }
}

/// Whether the ClientHello at the start of `received` (the client's first bytes) lists
/// TLS 1.3 in its `supported_versions` extension. rustls' view of a ClientHello does not
/// show the versions, and a client can offer TLS 1.3 suites while enabling only TLS 1.2
/// (rustls' own client does). `false` when the message is not whole in its first record
/// or does not parse.
pub fn offers_tls13(received: &[u8]) -> bool {
    client_hello_versions(received).is_some_and(|v| v.chunks_exact(2).any(|p| p == [3, 4]))
}

/// The `supported_versions` list of the ClientHello in the first record of `buf`.
fn client_hello_versions(buf: &[u8]) -> Option<&[u8]> {
    /// Splits `n` bytes off the front of `b`.
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Some(head)
    }
    fn len(b: &mut &[u8], n: usize) -> Option<usize> {
        Some(
            take(b, n)?
                .iter()
                .fold(0usize, |acc, x| acc << 8 | *x as usize),
        )
    }
    let mut b = buf;
    // Record header: handshake (22), version, length.
    let header = take(&mut b, HEADER)?;
    if header[0] != 22 {
        return None;
    }
    let record = u16::from_be_bytes([header[3], header[4]]) as usize;
    let mut b = take(&mut b, record)?;
    // Handshake header: ClientHello (1), 24-bit length: whole in this record.
    if take(&mut b, 1)? != [1] {
        return None;
    }
    let body = len(&mut b, 3)?;
    let mut b = take(&mut b, body)?;
    take(&mut b, 2 + 32)?; // legacy_version, random
    let n = len(&mut b, 1)?;
    take(&mut b, n)?; // legacy_session_id
    let n = len(&mut b, 2)?;
    take(&mut b, n)?; // cipher_suites
    let n = len(&mut b, 1)?;
    take(&mut b, n)?; // legacy_compression_methods
    let n = len(&mut b, 2)?;
    let mut exts = take(&mut b, n)?;
    while !exts.is_empty() {
        let typ = len(&mut exts, 2)?;
        let n = len(&mut exts, 2)?;
        let mut data = take(&mut exts, n)?;
        if typ == 43 {
            let n = len(&mut data, 1)?;
            return take(&mut data, n);
        }
    }
    None
}

/// Whether the handshake needs more bytes from the peer, or is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    NeedMore,
    Done,
}

/// Appends a handshake record rustls has ready to `outgoing`.
fn encode(
    data: &mut rustls::unbuffered::EncodeTlsData<'_, ServerConnectionData>,
    outgoing: &mut Vec<u8>,
) -> Result<(), SessionError> {
    let at = outgoing.len();
    let need = match data.encode(&mut []) {
        Err(EncodeError::InsufficientSize(e)) => e.required_size,
        _ => 0,
    };
    outgoing.resize(at + need, 0);
    if need > 0 {
        data.encode(&mut outgoing[at..])
            .map_err(|_| SessionError::Unexpected("handshake encoding"))?;
    }
    Ok(())
}

/// A server handshake driven over byte buffers.
pub struct Handshake {
    conn: UnbufferedServerConnection,
    early: Vec<u8>,
}

impl Handshake {
    /// A handshake with `config`, which must have `enable_secret_extraction` set.
    pub fn new(config: Arc<ServerConfig>) -> Result<Handshake, SessionError> {
        Ok(Handshake {
            conn: UnbufferedServerConnection::new(config)?,
            early: Vec::new(),
        })
    }

    /// Processes the peer's bytes in `incoming`, removing those it consumed (the
    /// remainder is an unfinished record), and appends what must be sent to `outgoing`.
    /// All of `outgoing` must reach the peer before more is read; on an error it holds
    /// the alert that tells the peer why.
    pub fn advance(
        &mut self,
        incoming: &mut Vec<u8>,
        outgoing: &mut Vec<u8>,
    ) -> Result<Progress, SessionError> {
        loop {
            let UnbufferedStatus { mut discard, state } = self.conn.process_tls_records(incoming);
            let progress = match state {
                Err(e) => {
                    incoming.drain(..discard);
                    // The alert rustls queued for the failure, for the peer.
                    while let UnbufferedStatus {
                        state: Ok(ConnectionState::EncodeTlsData(mut data)),
                        ..
                    } = self.conn.process_tls_records(&mut [])
                    {
                        encode(&mut data, outgoing)?;
                    }
                    return Err(e.into());
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    encode(&mut data, outgoing)?;
                    None
                }
                // The caller sends `outgoing` before it reads again.
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    data.done();
                    None
                }
                Ok(ConnectionState::BlockedHandshake) => Some(Progress::NeedMore),
                Ok(ConnectionState::WriteTraffic(_)) => Some(Progress::Done),
                // Application data that came with the client's Finished.
                Ok(ConnectionState::ReadTraffic(mut data)) => {
                    while let Some(record) = data.next_record() {
                        let record = record?;
                        discard += record.discard;
                        self.early.extend_from_slice(record.payload);
                    }
                    None
                }
                Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                    return Err(SessionError::ClosedInHandshake)
                }
                Ok(_) => return Err(SessionError::Unexpected("early data")),
            };
            incoming.drain(..discard);
            if let Some(p) = progress {
                return Ok(p);
            }
        }
    }

    /// The protocol agreed by ALPN.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The record layer from here on, sealing and opening with `aead`'s code; refused
    /// unless TLS 1.3 with AES-GCM was negotiated.
    pub fn into_session(self, aead: AeadImpl) -> Result<Session, SessionError> {
        let (secrets, kernel) = self.conn.dangerous_into_kernel_connection()?;
        if kernel.protocol_version() != ProtocolVersion::TLSv1_3 {
            return Err(SessionError::Unsupported);
        }
        let SupportedCipherSuite::Tls13(suite) = kernel.negotiated_cipher_suite() else {
            return Err(SessionError::Unsupported);
        };
        let limit = suite.common.confidentiality_limit;
        let key = |(seq, secrets): &(u64, rustls::ConnectionTrafficSecrets)| {
            RecordKey::new(aead, secrets, *seq).map_err(|e| match e {
                RecordError::UnsupportedSuite => SessionError::Unsupported,
                e => e.into(),
            })
        };
        let (tx, rx) = (key(&secrets.tx)?, key(&secrets.rx)?);
        Ok(Session {
            kernel,
            aead,
            tx,
            rx,
            rekey_at: limit.saturating_sub(KEY_UPDATE_MARGIN),
            limit,
            handshake: Vec::new(),
            update_owed: false,
            early: self.early,
        })
    }
}

/// What a record from the peer held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// Application data, at this range of the record.
    Data(Range<usize>),
    /// A control message, handled (a key update, a `user_canceled` warning).
    Control,
    /// `close_notify`: the peer sends nothing more.
    Closed,
}

/// The record layer of an established TLS 1.3 server connection.
pub struct Session {
    kernel: KernelConnection<ServerConnectionData>,
    aead: AeadImpl,
    tx: RecordKey,
    rx: RecordKey,
    /// The sending sequence number from which a key update is sent.
    rekey_at: u64,
    /// The records one key may seal (the suite's confidentiality limit).
    limit: u64,
    /// Handshake bytes of an unfinished message.
    handshake: Vec<u8>,
    /// The peer asked for our key update; it goes before our next record.
    update_owed: bool,
    early: Vec<u8>,
}

impl Session {
    /// Application data the peer sent during the handshake, opened by rustls.
    pub fn take_early_data(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.early)
    }

    /// Opens a whole record (see [`crate::record::record_len`]) where it lies.
    pub fn open(&mut self, record: &mut [u8]) -> Result<Opened, SessionError> {
        let (typ, range) = self.rx.open(record)?;
        match typ {
            ContentType::ApplicationData => {
                if !self.handshake.is_empty() {
                    return Err(SessionError::Unexpected("data inside a handshake message"));
                }
                Ok(Opened::Data(range))
            }
            ContentType::Alert => match record[range] {
                [_, 0] => Ok(Opened::Closed),
                // user_canceled: a warning, the close follows.
                [_, 90] => Ok(Opened::Control),
                [_, desc] => Err(SessionError::PeerAlert(desc)),
                _ => Err(SessionError::Unexpected("malformed alert")),
            },
            ContentType::Handshake => {
                if range.is_empty() || self.handshake.len() + range.len() > MAX_HANDSHAKE_BUF {
                    return Err(SessionError::Unexpected("handshake message size"));
                }
                self.handshake.extend_from_slice(&record[range]);
                self.on_handshake()?;
                Ok(Opened::Control)
            }
        }
    }

    /// Handles the complete handshake messages received; only key updates may come.
    fn on_handshake(&mut self) -> Result<(), SessionError> {
        while self.handshake.len() >= 4 {
            let len =
                u32::from_be_bytes([0, self.handshake[1], self.handshake[2], self.handshake[3]])
                    as usize;
            if self.handshake.len() < 4 + len {
                return Ok(());
            }
            // KeyUpdate (24), one byte: update_not_requested (0) or update_requested (1).
            let requested = match (self.handshake[0], len, self.handshake.get(4)) {
                (24, 1, Some(0)) => false,
                (24, 1, Some(1)) => true,
                _ => {
                    return Err(SessionError::Unexpected(
                        "handshake message after the handshake",
                    ))
                }
            };
            // A key update ends its record: what follows is under the next key.
            if self.handshake.len() > 5 {
                return Err(SessionError::Unexpected("data after a key update"));
            }
            self.handshake.clear();
            let (seq, secrets) = self.kernel.update_rx_secret()?;
            self.rx = RecordKey::new(self.aead, &secrets, seq)?;
            self.update_owed |= requested;
        }
        Ok(())
    }

    /// Whether a key update must be sealed ([`Session::seal_owed`]) before more
    /// application data.
    pub fn owes_control(&self) -> bool {
        self.update_owed || self.tx.seq() >= self.rekey_at
    }

    /// Seals what must precede the next application data into `out` (at least
    /// [`CONTROL_RECORD`] bytes): our key update, when the peer asked for one or the
    /// key nears its limit. Returns the bytes written (none when nothing is owed).
    pub fn seal_owed(&mut self, out: &mut [u8]) -> Result<usize, SessionError> {
        if !self.owes_control() {
            return Ok(0);
        }
        // KeyUpdate, update_not_requested: the peer's keys may stay.
        let n = self.seal_control(out, ContentType::Handshake, &[24, 0, 0, 1, 0])?;
        let (seq, secrets) = self.kernel.update_tx_secret()?;
        self.tx = RecordKey::new(self.aead, &secrets, seq)?;
        self.update_owed = false;
        Ok(n)
    }

    /// Seals application data in place: `record[HEADER..HEADER + len]` holds it (at most
    /// [`crate::record::MAX_PLAINTEXT`]). Returns the record's length. Call
    /// [`Session::seal_owed`] first whenever [`Session::owes_control`].
    pub fn seal(&mut self, record: &mut [u8], len: usize) -> Result<usize, SessionError> {
        if self.update_owed || self.tx.seq() >= self.limit {
            return Err(SessionError::Unexpected("a key update is owed"));
        }
        Ok(self.tx.seal(record, len, ContentType::ApplicationData)?)
    }

    /// Seals a `close_notify` alert into `out`; returns its length.
    pub fn seal_close_notify(&mut self, out: &mut [u8]) -> Result<usize, SessionError> {
        self.seal_control(out, ContentType::Alert, &[1, 0])
    }

    /// Seals a fatal alert into `out`; returns its length.
    pub fn seal_alert(&mut self, out: &mut [u8], description: u8) -> Result<usize, SessionError> {
        self.seal_control(out, ContentType::Alert, &[2, description])
    }

    fn seal_control(
        &mut self,
        out: &mut [u8],
        typ: ContentType,
        msg: &[u8],
    ) -> Result<usize, SessionError> {
        let slot = out
            .get_mut(HEADER..HEADER + msg.len())
            .ok_or(RecordError::NoRoom(msg.len()))?;
        slot.copy_from_slice(msg);
        Ok(self.tx.seal(out, msg.len(), typ)?)
    }

    #[cfg(test)]
    fn set_rekey_at(&mut self, seq: u64) {
        self.rekey_at = seq;
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::record::{record_len, MAX_PLAINTEXT, OVERHEAD};

    /// A self-signed server config and a client config trusting it, both limited to
    /// `suite` (TLS 1.3).
    fn configs(suite: rustls::CipherSuite) -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
        configs_with(suite, false)
    }

    /// [`configs`]; with `retry`, the client's first key share is for a group the server
    /// does not take, so the server answers with a HelloRetryRequest.
    fn configs_with(
        suite: rustls::CipherSuite,
        retry: bool,
    ) -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
        use rustls::pki_types::pem::PemObject;
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
            ])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "extendedKeyUsage=serverAuth"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let der = rustls::pki_types::CertificateDer::from_pem_file(&cert).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
        let mut provider = provider_with(AeadImpl::AwsLc);
        provider.cipher_suites.retain(|s| s.suite() == suite);
        let mut server_provider = provider.clone();
        if retry {
            use rustls::crypto::aws_lc_rs::kx_group::{SECP384R1, X25519};
            server_provider.kx_groups = vec![X25519];
            provider.kx_groups = vec![SECP384R1, X25519];
        }
        let provider = Arc::new(provider);
        let mut server = ServerConfig::builder_with_provider(Arc::new(server_provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        server.enable_secret_extraction = true;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        (Arc::new(server), Arc::new(client))
    }

    use crate::provider_with;

    /// A client and a session after a handshake in memory; `early` is written by the
    /// client as soon as it may, so it rides with its Finished.
    fn connect(
        suite: rustls::CipherSuite,
        aead: AeadImpl,
        early: &[u8],
    ) -> (rustls::ClientConnection, Session, Vec<u8>) {
        connect_with(configs(suite), aead, early)
    }

    fn connect_with(
        (server, client): (Arc<ServerConfig>, Arc<rustls::ClientConfig>),
        aead: AeadImpl,
        early: &[u8],
    ) -> (rustls::ClientConnection, Session, Vec<u8>) {
        let mut client =
            rustls::ClientConnection::new(client, "localhost".try_into().unwrap()).unwrap();
        let mut hs = Handshake::new(server).unwrap();
        let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
        let mut wrote_early = false;
        loop {
            if !client.is_handshaking() && !wrote_early {
                client.writer().write_all(early).unwrap();
                wrote_early = true;
            }
            while client.wants_write() {
                client.write_tls(&mut to_server).unwrap();
            }
            let progress = hs.advance(&mut to_server, &mut to_client).unwrap();
            let mut rest = &to_client[..];
            while !rest.is_empty() {
                client.read_tls(&mut rest).unwrap();
                client.process_new_packets().unwrap();
            }
            to_client.clear();
            if progress == Progress::Done && wrote_early && !client.wants_write() {
                break;
            }
        }
        assert_eq!(hs.alpn_protocol(), Some(&b"http/1.1"[..]));
        let session = hs.into_session(aead).unwrap();
        // Bytes the handshake did not consume: records for the session.
        (client, session, to_server)
    }

    /// Opens every whole record in `wire`, collecting application data.
    fn open_all(session: &mut Session, wire: &mut Vec<u8>) -> (Vec<u8>, Vec<Opened>) {
        let (mut data, mut events) = (Vec::new(), Vec::new());
        while let Some(len) = record_len(wire).unwrap() {
            if wire.len() < len {
                break;
            }
            let mut record: Vec<u8> = wire.drain(..len).collect();
            let opened = session.open(&mut record).unwrap();
            if let Opened::Data(r) = &opened {
                data.extend_from_slice(&record[r.clone()]);
            }
            events.push(opened);
        }
        (data, events)
    }

    /// Seals `data` in records as a server would, into wire bytes.
    fn seal_all(session: &mut Session, data: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        for chunk in data.chunks(MAX_PLAINTEXT) {
            let mut owed = [0u8; CONTROL_RECORD];
            let n = session.seal_owed(&mut owed).unwrap();
            wire.extend_from_slice(&owed[..n]);
            let mut rec = vec![0u8; chunk.len() + OVERHEAD];
            rec[HEADER..HEADER + chunk.len()].copy_from_slice(chunk);
            let n = session.seal(&mut rec, chunk.len()).unwrap();
            wire.extend_from_slice(&rec[..n]);
        }
        wire
    }

    fn client_reads(client: &mut rustls::ClientConnection, wire: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        let mut rest = wire;
        while !rest.is_empty() {
            client.read_tls(&mut rest).unwrap();
            client.process_new_packets().unwrap();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match client.reader().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        got
    }

    fn client_sends(client: &mut rustls::ClientConnection, data: &[u8]) -> Vec<u8> {
        client.writer().write_all(data).unwrap();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        wire
    }

    #[test]
    fn data_flows_both_ways_with_rustls_on_the_other_end() {
        use rustls::CipherSuite as S;
        for suite in [S::TLS13_AES_128_GCM_SHA256, S::TLS13_AES_256_GCM_SHA384] {
            for aead in AeadImpl::ALL {
                let (mut client, mut session, mut rest) =
                    connect(suite, aead, b"GET / HTTP/1.1\r\n\r\n");
                // The request that came with the client's Finished.
                let mut early = session.take_early_data();
                early.extend(open_all(&mut session, &mut rest).0);
                assert_eq!(early, b"GET / HTTP/1.1\r\n\r\n");
                let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
                let wire = seal_all(&mut session, &body);
                assert_eq!(client_reads(&mut client, &wire), body);
                let mut wire = client_sends(&mut client, b"next request");
                assert_eq!(open_all(&mut session, &mut wire).0, b"next request");
            }
        }
    }

    #[test]
    fn a_hello_retry_request_is_part_of_the_handshake() {
        let configs = configs_with(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256, true);
        let (mut client, mut session, mut rest) = connect_with(configs, AeadImpl::Ring, b"hi");
        assert_eq!(
            client.handshake_kind(),
            Some(rustls::HandshakeKind::FullWithHelloRetryRequest)
        );
        let mut early = session.take_early_data();
        early.extend(open_all(&mut session, &mut rest).0);
        assert_eq!(early, b"hi");
        let wire = seal_all(&mut session, b"after a retry");
        assert_eq!(client_reads(&mut client, &wire), b"after a retry");
    }

    #[test]
    fn key_updates_either_way_keep_the_stream_going() {
        let (mut client, mut session, mut rest) = connect(
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
            AeadImpl::Ring,
            b"x",
        );
        open_all(&mut session, &mut rest);
        // The client updates its keys and asks for ours (rustls sets update_requested).
        client.refresh_traffic_keys().unwrap();
        let mut wire = client_sends(&mut client, b"after the client's update");
        let (data, events) = open_all(&mut session, &mut wire);
        assert_eq!(data, b"after the client's update");
        assert!(events.contains(&Opened::Control));
        assert!(
            session.owes_control(),
            "the client asked for our key update"
        );
        let wire = seal_all(&mut session, b"after ours");
        assert!(!session.owes_control());
        assert_eq!(client_reads(&mut client, &wire), b"after ours");
        // Ours near the confidentiality limit: sent unasked, before the next record.
        session.set_rekey_at(session.tx.seq());
        let before = session.tx.seq();
        let wire = seal_all(&mut session, b"under a fresh key");
        assert_eq!(
            session.tx.seq(),
            1,
            "a new key numbers its records from zero"
        );
        assert!(before > 0);
        session.set_rekey_at(u64::MAX);
        assert_eq!(client_reads(&mut client, &wire), b"under a fresh key");
        let mut wire = client_sends(&mut client, b"still fine");
        assert_eq!(open_all(&mut session, &mut wire).0, b"still fine");
    }

    #[test]
    fn close_notify_either_way() {
        let (mut client, mut session, mut rest) = connect(
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
            AeadImpl::AwsLc,
            b"x",
        );
        open_all(&mut session, &mut rest);
        client.send_close_notify();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        assert_eq!(open_all(&mut session, &mut wire).1, vec![Opened::Closed]);
        let mut out = [0u8; CONTROL_RECORD];
        let n = session.seal_close_notify(&mut out).unwrap();
        client.read_tls(&mut &out[..n]).unwrap();
        let state = client.process_new_packets().unwrap();
        assert!(state.peer_has_closed());
    }

    #[test]
    fn a_forged_record_fails_with_bad_record_mac() {
        let (mut client, mut session, mut rest) = connect(
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
            AeadImpl::AwsLc,
            b"x",
        );
        open_all(&mut session, &mut rest);
        let mut wire = client_sends(&mut client, b"tampered");
        let last = wire.len() - 1;
        wire[last] ^= 0x80;
        let err = session.open(&mut wire).unwrap_err();
        assert_eq!(err.alert(), Some(20), "{err}");
        let mut out = [0u8; CONTROL_RECORD];
        let n = session.seal_alert(&mut out, 20).unwrap();
        client.read_tls(&mut &out[..n]).unwrap();
        assert!(
            client.process_new_packets().is_err(),
            "the client sees the alert"
        );
    }

    /// The ClientHello a rustls client sends with `versions` enabled.
    fn client_hello(versions: &[&'static rustls::SupportedProtocolVersion]) -> Vec<u8> {
        let (_, client) = configs(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(provider_with(AeadImpl::AwsLc)))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
        config.alpn_protocols = client.alpn_protocols.clone();
        let mut c =
            rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap())
                .unwrap();
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        wire
    }

    #[test]
    fn the_versions_a_client_hello_offers_are_read() {
        use rustls::version::{TLS12, TLS13};
        assert!(offers_tls13(&client_hello(&[&TLS13, &TLS12])));
        assert!(offers_tls13(&client_hello(&[&TLS13])));
        // TLS 1.2 only (rustls still lists its TLS 1.3 suites).
        let tls12 = client_hello(&[&TLS12]);
        assert!(!offers_tls13(&tls12));
        // Cut short, or not a handshake record: not known to offer it.
        let full = client_hello(&[&TLS13]);
        assert!(!offers_tls13(&full[..full.len() - 1]));
        assert!(!offers_tls13(&full[..3]));
        let mut other = full.clone();
        other[0] = 23;
        assert!(!offers_tls13(&other));
    }

    #[test]
    fn a_failed_handshake_leaves_the_alert_to_send() {
        let (server, client) = configs(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let mut client = (*client).clone();
        client.alpn_protocols = vec![b"h2".to_vec()];
        let mut client =
            rustls::ClientConnection::new(Arc::new(client), "localhost".try_into().unwrap())
                .unwrap();
        let mut hs = Handshake::new(server).unwrap();
        let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
        while client.wants_write() {
            client.write_tls(&mut to_server).unwrap();
        }
        assert!(hs.advance(&mut to_server, &mut to_client).is_err());
        // The ServerHello, then the alert under the handshake keys: the client learns why.
        let mut rest = &to_client[..];
        let err = loop {
            assert!(!rest.is_empty(), "no alert reached the client");
            client.read_tls(&mut rest).unwrap();
            if let Err(e) = client.process_new_packets() {
                break e;
            }
        };
        assert_eq!(
            err,
            rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)
        );
    }

    #[test]
    fn only_tls13_aes_gcm_becomes_a_session() {
        let (server, client) = configs(rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
        let mut client =
            rustls::ClientConnection::new(client, "localhost".try_into().unwrap()).unwrap();
        let mut hs = Handshake::new(server).unwrap();
        let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
        while client.is_handshaking() {
            while client.wants_write() {
                client.write_tls(&mut to_server).unwrap();
            }
            hs.advance(&mut to_server, &mut to_client).unwrap();
            let mut rest = &to_client[..];
            while !rest.is_empty() {
                client.read_tls(&mut rest).unwrap();
                client.process_new_packets().unwrap();
            }
            to_client.clear();
        }
        while client.wants_write() {
            client.write_tls(&mut to_server).unwrap();
        }
        assert_eq!(
            hs.advance(&mut to_server, &mut to_client).unwrap(),
            Progress::Done
        );
        assert!(matches!(
            hs.into_session(AeadImpl::Ring),
            Err(SessionError::Unsupported)
        ));
    }
}

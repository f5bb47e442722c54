//! The accept loop: plain TCP or TLS (rustls, HTTP/2 by ALPN), HTTP/1.1 and HTTP/2 by
//! hyper's auto builder, the client address attached to every request, and graceful
//! shutdown that lets in-flight requests finish.
//!
//! It also bounds what a client can hold without doing work ([`Limits`]):
//! - **Connections**: at most `max_connections` at once (lowered to what the open-file
//!   limit allows). At the limit the loop stops accepting, so new connections wait in the
//!   kernel's listen backlog instead of failing, and it logs once per episode.
//! - **Header timeout**: a connection must send its first request head within
//!   `header_timeout` of being accepted, and an HTTP/1 head must complete within
//!   `header_timeout` of its first byte. hyper's own `header_read_timeout` is not used: its
//!   clock starts when a connection begins waiting for a head, so it would also close idle
//!   keep-alive connections at the header timeout, and it does not cover the auto
//!   builder's protocol detection.
//! - **Idle timeout**: a connection with no request in flight (a request is in flight
//!   from its parsed head until its response body has been handed to the socket) is
//!   closed after `idle_timeout`, HTTP/2 included.
//! - **Body idle timeout**: a request body that sends nothing for `body_idle_timeout`
//!   while the handler waits for it ends with an error, so a stalled upload releases its
//!   session (keeping the bytes received) and its HTTP/1 connection is closed.
//!
//! HTTP/2 is set for bulk transfer ([`H2_STREAM_WINDOW`], [`H2_CONNECTION_WINDOW`],
//! [`H2_MAX_FRAME_SIZE`]) with a stated stream limit ([`H2_MAX_CONCURRENT_STREAMS`]) and a
//! bounded send buffer per stream ([`H2_SEND_BUF`]).
//!
//! TLS runs on rustls: aws-lc-rs for the handshake, the AES-GCM of aws-lc or ring
//! (whichever is faster on this CPU, `berth_tls::AeadImpl`) for the records, the
//! server's own cipher preference ([`tls_provider`]) and stateless session tickets. A
//! client that offers TLS 1.3 with AES-GCM for HTTP/1.x gets its records sealed by the
//! server itself after rustls' handshake ([`takes_own_records`],
//! [`crate::zerocopy::RecordStream`]), so that blob bytes are read straight into the
//! records. The kernel's TLS offload (kTLS, then `sendfile` under TLS) is not used: the
//! kernels this was measured on lack it (`CONFIG_TLS` unset), so every TLS byte is sealed
//! in user space.
//!
//! Each connection's task watches its [`Activity`] (requests in flight, the first byte
//! read while idle) and, when a deadline passes, starts a graceful shutdown of the
//! connection and drops it if it has not closed [`CLOSE_GRACE`] later.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use berth_tls::AeadImpl;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulConnection;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::zerocopy::{CopyBudget, RecordStream, SendfileStream, ZeroCopy, COPY_BUDGET};

/// The peer address of a request, inserted as a request extension.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS certificate {path}: {message}")]
    Cert { path: String, message: String },
    #[error("cannot read TLS private key {path}: {message}")]
    Key { path: String, message: String },
    #[error("TLS configuration is invalid: {0}")]
    Config(String),
}

/// Builds a rustls acceptor from PEM files, offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let aead = AeadImpl::for_this_cpu();
    tracing::info!(
        aead = aead.name(),
        "TLS records sealed by the faster AES-GCM on this CPU"
    );
    Ok(TlsAcceptor::from(Arc::new(server_config(cert, key, aead)?)))
}

/// The listener's rustls configuration, its records sealed by `aead`.
fn server_config(
    cert: &Path,
    key: &Path,
    aead: AeadImpl,
) -> Result<rustls::ServerConfig, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.display().to_string(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert.display().to_string(),
            message: "no certificate found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        message: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(tls_provider(aead)))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The server's order of cipher suites decides, not the client's (see `tls_provider`),
    // unless the client prefers ChaCha20-Poly1305 (`TlsConfigs`).
    config.ignore_client_order = true;
    // Stateless session tickets (TLS 1.3 resumption): a client that reconnects (a node
    // pulling the next image of a rollout) skips the certificate signature and key
    // exchange, and the server keeps no per-client session state. The ticket key is made
    // at start and rotated by rustls; a restart only costs clients one full handshake.
    config.ticketer =
        rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(config)
}

/// The crypto of the TLS listener: rustls' aws-lc-rs provider for the handshake (key
/// exchange, certificate signatures, session tickets), with the cipher suites of `aead`
/// (the library that seals records faster on this CPU, [`AeadImpl::for_this_cpu`]),
/// reordered by [`suite_rank`]: AES-128-GCM first, as Go's TLS (containerd, Docker,
/// Distribution) prefers. Both AES key sizes are sound; AES-128 does 10 rounds per block
/// to AES-256's 14, and a registry's TLS cost is mostly bulk encryption.
fn tls_provider(aead: AeadImpl) -> rustls::crypto::CryptoProvider {
    let mut provider = berth_tls::provider_with(aead);
    provider
        .cipher_suites
        .sort_by_key(|s| suite_rank(s.suite()));
    provider
}

/// The server configurations of a TLS listener: the same certificate, ticket key and
/// cipher suites, differing in whose order of suites decides and in what the handshake
/// leads to.
#[derive(Clone)]
struct TlsConfigs {
    /// The server's ([`tls_provider`]): for clients that prefer an AES-GCM suite.
    server_order: Arc<rustls::ServerConfig>,
    /// The client's: for clients that prefer ChaCha20-Poly1305, as clients without AES
    /// instructions do (small ARM boards), for which AES-GCM in software is slow and not
    /// constant-time. Go's TLS server makes the same exception.
    client_order: Arc<rustls::ServerConfig>,
    /// For HTTP/1.x clients that offer TLS 1.3 with AES-GCM (see [`takes_own_records`]):
    /// TLS 1.3 and its AES-GCM suites only, HTTP/1.1 by ALPN, and the traffic keys handed
    /// over after the handshake, for the server to seal records itself
    /// ([`crate::zerocopy::RecordStream`]).
    own_records: Arc<rustls::ServerConfig>,
    /// Whose AES-GCM seals the records the server seals itself: the library whose
    /// suites the configurations carry (`tls_acceptor` chose it the same way).
    aead: AeadImpl,
}

impl TlsConfigs {
    fn new(acceptor: &TlsAcceptor) -> Result<TlsConfigs, TlsError> {
        let server_order = acceptor.config().clone();
        let mut client_order = (*server_order).clone();
        client_order.ignore_client_order = false;
        let mut provider = (**server_order.crypto_provider()).clone();
        provider
            .cipher_suites
            .retain(|s| is_tls13_aes_gcm(s.suite()));
        let mut own_records = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(server_order.cert_resolver.clone());
        own_records.alpn_protocols = vec![b"http/1.1".to_vec()];
        own_records.ignore_client_order = true;
        // One ticket key for all: a ticket from one route resumes on the other.
        own_records.ticketer = server_order.ticketer.clone();
        own_records.send_tls13_tickets = server_order.send_tls13_tickets;
        own_records.enable_secret_extraction = true;
        Ok(TlsConfigs {
            server_order,
            client_order: Arc::new(client_order),
            own_records: Arc::new(own_records),
            aead: AeadImpl::for_this_cpu(),
        })
    }

    /// The configuration for a client offering `suites`, in its order.
    fn for_client(&self, suites: &[rustls::CipherSuite]) -> Arc<rustls::ServerConfig> {
        if prefers_chacha(suites) {
            self.client_order.clone()
        } else {
            self.server_order.clone()
        }
    }
}

/// Whether the server seals this client's records itself: it offers TLS 1.3 (`received`
/// is its ClientHello, see [`berth_tls::session::offers_tls13`]) with AES-GCM (which the
/// server's order then picks), does not prefer ChaCha20-Poly1305, and does not offer
/// HTTP/2 (whose frames hyper builds in its own buffers, so there is no copy to save).
/// Such a client gets a TLS 1.3-only handshake.
fn takes_own_records(hello: &rustls::server::ClientHello<'_>, received: &[u8]) -> bool {
    let suites = hello.cipher_suites();
    let h2 = hello.alpn().is_some_and(|mut p| p.any(|p| p == b"h2"));
    !h2 && !prefers_chacha(suites)
        && berth_tls::session::offers_tls13(received)
        && suites.iter().any(|s| is_tls13_aes_gcm(*s))
}

/// The suites whose records the server can seal itself.
fn is_tls13_aes_gcm(suite: rustls::CipherSuite) -> bool {
    use rustls::CipherSuite as S;
    matches!(
        suite,
        S::TLS13_AES_128_GCM_SHA256 | S::TLS13_AES_256_GCM_SHA384
    )
}

/// Whether a client lists ChaCha20-Poly1305 before every AES-GCM suite.
fn prefers_chacha(suites: &[rustls::CipherSuite]) -> bool {
    suites
        .iter()
        .find(|s| suite_rank(**s) < 2 || is_chacha(**s))
        .is_some_and(|s| is_chacha(*s))
}

fn is_chacha(suite: rustls::CipherSuite) -> bool {
    use rustls::CipherSuite as S;
    matches!(
        suite,
        S::TLS13_CHACHA20_POLY1305_SHA256
            | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
    )
}

/// `AsyncWrite` for a wrapper whose writes go straight to its `inner` stream:
/// `write_through!([generics] Type)`.
macro_rules! write_through {
    ([$($g:tt)*] $t:ty) => {
        impl<$($g)*> AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.get_mut().inner).poll_flush(cx)
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
            }
        }
    };
}

/// An established TLS connection: rustls', or one whose records the server seals itself.
enum TlsIo {
    Rustls(Box<tokio_rustls::server::TlsStream<Replay>>),
    Own(Box<RecordStream>),
}

/// TLS handshake of an accepted connection: reads the ClientHello, picks the
/// configuration for the client's offer, and completes the handshake, by rustls' stream
/// or, for the connections of [`takes_own_records`], by rustls' unbuffered handshake
/// before the server's own record layer takes over.
async fn tls_handshake(
    configs: &TlsConfigs,
    mut stream: tokio::net::TcpStream,
    zero_copy: &ZeroCopy,
) -> io::Result<TlsIo> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The ClientHello, read by rustls' acceptor from a copy of the bytes received.
    let mut received = Vec::with_capacity(4096);
    let mut fed = 0;
    let mut acceptor = rustls::server::Acceptor::default();
    let hello = loop {
        if stream.read_buf(&mut received).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        while fed < received.len() {
            fed += acceptor.read_tls(&mut &received[fed..])?;
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => break accepted,
            Ok(None) => {}
            Err((e, mut alert)) => {
                // Tell the client why, as rustls' own acceptor does.
                let mut wire = Vec::new();
                if alert.write_all(&mut wire).is_ok() {
                    let _ = stream.write_all(&wire).await;
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    };
    if !takes_own_records(&hello.client_hello(), &received) {
        let config = configs.for_client(hello.client_hello().cipher_suites());
        let replay = Replay {
            prefix: received,
            at: 0,
            inner: stream,
        };
        let tls = TlsAcceptor::from(config).accept(replay).await?;
        return Ok(TlsIo::Rustls(Box::new(tls)));
    }
    let invalid =
        |e: berth_tls::session::SessionError| io::Error::new(io::ErrorKind::InvalidData, e);
    let mut handshake =
        berth_tls::session::Handshake::new(configs.own_records.clone()).map_err(invalid)?;
    let mut outgoing = Vec::new();
    loop {
        let progress = handshake.advance(&mut received, &mut outgoing);
        stream.write_all(&outgoing).await?;
        let progress = progress.map_err(invalid)?;
        outgoing.clear();
        if progress == berth_tls::session::Progress::Done {
            break;
        }
        if stream.read_buf(&mut received).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    let session = handshake.into_session(configs.aead).map_err(invalid)?;
    Ok(TlsIo::Own(Box::new(RecordStream::new(
        stream,
        zero_copy.clone(),
        session,
        received,
    ))))
}

/// A TCP stream that first yields bytes already read from it (the ClientHello, read
/// before the handshake's configuration was chosen).
struct Replay {
    prefix: Vec<u8>,
    at: usize,
    inner: tokio::net::TcpStream,
}

impl AsyncRead for Replay {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let k = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + k]);
            this.at += k;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

write_through!([] Replay);

impl AsyncRead for TlsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TlsIo::Rustls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            TlsIo::Own(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TlsIo::Rustls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            TlsIo::Own(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TlsIo::Rustls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            TlsIo::Own(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            TlsIo::Rustls(s) => s.is_write_vectored(),
            TlsIo::Own(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TlsIo::Rustls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            TlsIo::Own(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TlsIo::Rustls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            TlsIo::Own(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The server's preference among cipher suites of one TLS version (lower first): AES-128-GCM,
/// AES-256-GCM, then the rest (ChaCha20-Poly1305) in the provider's order.
fn suite_rank(suite: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite as S;
    match suite {
        S::TLS13_AES_128_GCM_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384
        | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    }
}

/// The timeouts and the connection limit the accept loop enforces (from the
/// `header_timeout`, `idle_timeout`, `body_idle_timeout` and `max_connections` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A new connection must deliver its first request head within this long (TLS
    /// handshake included), and an HTTP/1 request head, once its first byte arrives.
    pub header_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// A request body that delivers no byte for this long, while the server waits for
    /// it, ends with an error (an upload keeps what it received and stays resumable).
    pub body_idle_timeout: Duration,
    /// Connections open at once; more wait in the listen backlog until one closes.
    pub max_connections: usize,
}

impl Limits {
    /// The limits `config` sets.
    pub fn from_config(config: &crate::Config) -> Limits {
        Limits {
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            body_idle_timeout: config.body_idle_timeout,
            max_connections: config.max_connections.get(),
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::from_config(&crate::Config::default())
    }
}

/// Streams one HTTP/2 connection may have open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
/// Pull clients open a few in parallel (containerd and Docker 3 layers, skopeo 6); 100 is
/// what RFC 9113 recommends as the least, and bounds the handlers one connection can hold.
/// A client past the limit queues its requests until streams end (HTTP/2 clients must).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 100;

/// The receive window of each HTTP/2 stream (`SETTINGS_INITIAL_WINDOW_SIZE`): what a
/// client may send on one upload before the server acknowledges it. hyper's 1 MiB caps an
/// upload at 1 MiB per round trip (80 MB/s at 12 ms); 4 MiB is Go's HTTP/2 client's value.
pub const H2_STREAM_WINDOW: u32 = 4 << 20;

/// The receive window of an HTTP/2 connection, all its streams together: bounds the
/// upload bytes one connection can have in the server's memory unread, while two streams
/// still both get their full window.
pub const H2_CONNECTION_WINDOW: u32 = 8 << 20;

/// The largest HTTP/2 frame the server accepts (`SETTINGS_MAX_FRAME_SIZE`): 64 KiB DATA
/// frames carry an upload with a quarter of the frame headers and wake-ups of the
/// 16 KiB default. (What the server sends is sized by the client's own setting.)
pub const H2_MAX_FRAME_SIZE: u32 = 64 << 10;

/// What one HTTP/2 stream may have queued for sending (hyper's `max_send_buf_size`; its
/// default is 400 KiB): two [`crate::zerocopy::PAGED_FRAME`]s, one being framed and
/// encrypted while the next is read. A rollout's clients open several streams each, and
/// every stream of a slow or congested connection held up to the default: this bounds
/// the fan-out's memory (docs/benchmarks.md, TLS section).
pub const H2_SEND_BUF: usize = 128 << 10;

/// The most a TLS connection's HTTP/1 buffers hold (hyper's `max_buf_size`, for reading
/// and writing; its default is about 400 KiB). Response bodies wait in the write buffer
/// until the TLS layer takes them, so this bounds what a slow reader's connection holds
/// beside rustls' own 64 KiB: a blob body's frames are [`crate::zerocopy::PAGED_FRAME`]
/// long, so one frame is queued while one is encrypted. Request heads up to this size
/// are accepted. (Plain connections, and TLS ones whose records the server seals, queue
/// blob bodies only as placeholders, which take no memory.)
pub const TLS_WRITE_BUF: usize = 64 << 10;

/// File descriptors kept back from connections for the database, blob and upload files,
/// logs and the listener itself.
const FD_RESERVE: u64 = 256;

/// Descriptors one connection may hold at once: its socket and the blob or upload file
/// it is sending or receiving.
const FDS_PER_CONNECTION: u64 = 2;

/// The connection limit that fits in `open_files` descriptors (the soft
/// `RLIMIT_NOFILE`; `None` is unlimited): `configured`, or less when each connection's
/// descriptors and the reserve would not fit. Never below one.
pub fn connection_cap(configured: usize, open_files: Option<u64>) -> usize {
    let fit = open_files.map_or(u64::MAX, |n| {
        n.saturating_sub(FD_RESERVE) / FDS_PER_CONNECTION
    });
    let fit = usize::try_from(fit).unwrap_or(usize::MAX);
    // The semaphore that counts connections holds at most this many permits.
    configured
        .min(fit)
        .min(tokio::sync::Semaphore::MAX_PERMITS)
        .min(u32::MAX as usize)
        .max(1)
}

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit, so that
/// the connection limit, not the descriptor table, bounds how many clients are served,
/// and returns the soft limit in force afterwards (`None`: unlimited).
pub fn raise_open_files_limit() -> std::io::Result<Option<u64>> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )?;
    }
    Ok(getrlimit(Resource::Nofile).current)
}

/// The soft limit on open files now in force (`None`: unlimited).
fn open_files_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// How long a connection whose deadline passed may take to close gracefully (an idle
/// HTTP/1 connection closes at once, HTTP/2 sends GOAWAY) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What one connection is doing, as its deadlines need it: shared by the connection's
/// task, its requests and its socket wrapper.
struct Activity {
    /// When the connection was accepted.
    accepted: Instant,
    state: Mutex<ActivityState>,
    /// Set while no request is in flight and no byte has been read since the last one
    /// ended: the socket wrapper checks it on every read, and takes the lock only when
    /// the first byte of a new request arrives.
    awaiting_byte: AtomicBool,
    /// Woken when the connection is to close at once (see [`Activity::close_when_idle`]).
    /// Requests starting and ending do not wake it: see [`Activity::next_check`].
    changed: Notify,
}

#[derive(Debug)]
struct ActivityState {
    in_flight: usize,
    /// Requests whose head has been read, in all.
    requests: u64,
    /// Since when no request has been in flight.
    idle_since: Instant,
    /// When the first byte after `idle_since` was read: an HTTP/1 head has begun.
    first_byte: Option<Instant>,
    /// The connection speaks HTTP/2 (its requests say so).
    h2: bool,
    /// A request body timed out: close once no request is in flight.
    close: bool,
}

impl Activity {
    fn new() -> Arc<Activity> {
        let now = Instant::now();
        Arc::new(Activity {
            accepted: now,
            state: Mutex::new(ActivityState {
                in_flight: 0,
                requests: 0,
                idle_since: now,
                first_byte: None,
                h2: false,
                close: false,
            }),
            awaiting_byte: AtomicBool::new(true),
            changed: Notify::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes were read from the connection.
    fn on_read(&self) {
        if self.awaiting_byte.swap(false, Ordering::AcqRel) {
            let mut st = self.state();
            if st.in_flight == 0 && st.first_byte.is_none() {
                st.first_byte = Some(Instant::now());
            }
        }
    }

    /// A request head was read; the request is in flight until the guard drops.
    fn request_started(self: &Arc<Activity>, h2: bool) -> InFlight {
        let mut st = self.state();
        st.in_flight += 1;
        st.requests += 1;
        st.h2 |= h2;
        self.awaiting_byte.store(false, Ordering::Release);
        drop(st);
        InFlight(self.clone())
    }

    fn request_ended(&self) {
        let mut st = self.state();
        st.in_flight = st.in_flight.saturating_sub(1);
        if st.in_flight == 0 {
            st.idle_since = Instant::now();
            st.first_byte = None;
            self.awaiting_byte.store(true, Ordering::Release);
            if st.close {
                // The connection is to close now that it is idle: the one deadline an
                // event moves earlier than `next_check` allows for.
                drop(st);
                self.changed.notify_one();
            }
        }
    }

    /// A request body timed out: the connection is closed once it is idle.
    fn close_when_idle(&self) {
        self.state().close = true;
        self.changed.notify_one();
    }

    /// When the connection is to be closed, if nothing happens before; `None` while a
    /// request is in flight.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let st = self.state();
        if st.in_flight > 0 {
            None
        } else if st.close {
            Some(st.idle_since)
        } else if st.requests == 0 {
            Some(self.accepted + limits.header_timeout)
        } else if st.h2 {
            // HTTP/2 reads frames while idle (pings, window updates): only requests count.
            Some(st.idle_since + limits.idle_timeout)
        } else {
            match st.first_byte {
                Some(t) => Some(t + limits.header_timeout),
                None => Some(st.idle_since + limits.idle_timeout),
            }
        }
    }

    /// When the connection's task should look at the deadline next. Requests starting
    /// and ending do not wake the task (two wake-ups and two timer registrations per
    /// request cost a tenth of a small request's CPU): instead it never sleeps longer than
    /// the shorter timeout. Every deadline an event at or after `now` can set is at least
    /// that far after the event (a request that ends at `t` sets `t + idle_timeout`, a
    /// first byte at `t` sets `t + header_timeout`), so looking again by then never
    /// misses one, and a connection is still closed exactly at its deadline.
    fn next_check(&self, limits: &Limits, now: Instant) -> Instant {
        let horizon = now + limits.header_timeout.min(limits.idle_timeout);
        self.deadline(limits).map_or(horizon, |d| d.min(horizon))
    }

    /// Why the connection is being closed, for the log.
    fn reason(&self) -> &'static str {
        let st = self.state();
        if st.close {
            "request body timed out"
        } else if st.requests == 0 || (!st.h2 && st.first_byte.is_some()) {
            "request head not received within header_timeout"
        } else {
            "idle for idle_timeout"
        }
    }
}

/// A request in flight on its connection (see [`Activity`]), until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A connection's byte stream, reporting reads to its [`Activity`]. Writes pass through
/// unchanged (vectored ones too: [`crate::zerocopy`] recognises its placeholders by
/// address).
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.on_read();
        }
        res
    }
}

write_through!([S: AsyncWrite + Unpin] Watched<S>);

/// The error a request body ends with after `body_idle_timeout` without a byte.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0:?}")]
pub struct BodyIdleTimeout(pub Duration);

/// A request body that fails with [`BodyIdleTimeout`] when its reader has waited that
/// long for the next frame. Time the reader spends elsewhere (writing to disk) does not
/// count.
struct IdleTimeoutBody<B> {
    inner: B,
    timeout: Duration,
    /// Allocated the first time the reader has to wait.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The sleep runs for the current wait.
    armed: bool,
    timed_out: bool,
    /// Told on a timeout if the connection is to close (HTTP/1: the rest of the body
    /// would otherwise be read as the next request).
    activity: Option<Arc<Activity>>,
}

impl<B> http_body::Body for IdleTimeoutBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = Instant::now() + this.timeout;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !this.armed {
            sleep.as_mut().reset(deadline);
            this.armed = true;
        }
        if std::future::Future::poll(sleep.as_mut(), cx).is_ready() {
            this.timed_out = true;
            if let Some(a) = &this.activity {
                a.close_when_idle();
            }
            return Poll::Ready(Some(Err(Box::new(BodyIdleTimeout(this.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request in flight until hyper drops it (after its
/// last byte is handed over, or when the connection ends).
struct TrackedBody {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the accept loop tells its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Run,
    /// Finish the requests in flight, then close.
    Drain,
    /// Close now: the drain time is over.
    Abort,
}

/// Runs one connection to its end: closes it when [`Activity::deadline`] passes, and
/// follows the server's [`Stop`].
async fn drive<C>(
    conn: C,
    activity: Arc<Activity>,
    limits: Limits,
    mut stop: watch::Receiver<Stop>,
    peer: SocketAddr,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    tokio::pin!(conn);
    // When a graceful shutdown of the connection was started.
    let mut closing: Option<Instant> = None;
    loop {
        if *stop.borrow_and_update() == Stop::Abort {
            return;
        }
        if *stop.borrow() == Stop::Drain && closing.is_none() {
            conn.as_mut().graceful_shutdown();
            closing = Some(Instant::now());
        }
        let wake = match closing {
            Some(t) => t + CLOSE_GRACE,
            None => activity.next_check(&limits, Instant::now()),
        };
        let sleep = tokio::time::sleep_until(wake);
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                return;
            }
            () = sleep => {
                if closing.is_some() {
                    tracing::debug!(%peer, "connection did not close gracefully; dropping it");
                    return;
                }
                // The deadline may have moved while the sleep was being set up.
                if activity.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(%peer, reason = activity.reason(), "closing connection");
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now());
                }
            }
            () = activity.changed.notified() => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then waits up to `drain` for open
/// connections to finish their requests, enforcing `limits` throughout.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    transfer: crate::config::BlobTransfer,
    limits: Limits,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let tls = tls
        .as_ref()
        .map(TlsConfigs::new)
        .transpose()
        .map_err(io::Error::other)?;
    let mut builder = Builder::new(TokioExecutor::new());
    // Queue body buffers instead of copying them into one: needed by zero-copy bodies
    // (see `zerocopy`), and one copy fewer for every response.
    builder.http1().writev(true);
    builder
        .http2()
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_frame_size(H2_MAX_FRAME_SIZE)
        .max_send_buf_size(H2_SEND_BUF);
    let copy_budget = CopyBudget::new(COPY_BUDGET);
    let max = connection_cap(limits.max_connections, open_files_limit());
    if max < limits.max_connections {
        tracing::warn!(
            max_connections = limits.max_connections,
            open_files = ?open_files_limit(),
            "the open-file limit allows {max} connections, fewer than max_connections = {}",
            limits.max_connections
        );
    }
    let limits = Limits {
        max_connections: max,
        ..limits
    };
    let permits = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(Stop::Run);
    // Whether the limit was reached and has not cleared yet (one warning per episode).
    let mut at_limit = false;
    // The current back-off after failed accepts (out of descriptors and the like).
    let mut accept_backoff: Option<Duration> = None;
    tokio::pin!(shutdown);
    loop {
        if at_limit && permits.available_permits() >= (max / 10).max(1) {
            at_limit = false;
            tracing::info!("connection limit {max} cleared; accepting connections again");
        }
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !at_limit {
                    at_limit = true;
                    tracing::warn!(
                        max_connections = max,
                        "connection limit {max} reached; new connections wait"
                    );
                }
                tokio::select! {
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    if accept_backoff.take().is_some() {
                        tracing::info!("accepting connections again");
                    }
                    a
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off (up to a second)
                    // instead of spinning, and warn once per episode.
                    let wait = match accept_backoff {
                        None => {
                            tracing::warn!(error = %e, "accept failed; backing off until it succeeds");
                            Duration::from_millis(10)
                        }
                        Some(w) => {
                            tracing::debug!(error = %e, "accept failed again");
                            (w * 2).min(Duration::from_secs(1))
                        }
                    };
                    accept_backoff = Some(wait);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let app = app.clone();
        // Plain TCP connections send blobs by placeholders (sendfile or copy); TLS ones
        // do when the server seals their records itself, known after the handshake.
        let zero_copy = ZeroCopy::default();
        let request_zero_copy = Arc::new(std::sync::OnceLock::new());
        if tls.is_none() {
            let _ = request_zero_copy.set(zero_copy.clone());
        }
        let zero_copy_after_handshake = request_zero_copy.clone();
        let service_activity = activity.clone();
        let body_idle_timeout = limits.body_idle_timeout;
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let h2 = req.version() >= hyper::Version::HTTP_2;
                let in_flight = service_activity.request_started(h2);
                req.extensions_mut().insert(ClientAddr(peer));
                if let Some(z) = request_zero_copy.get() {
                    req.extensions_mut().insert(ZeroCopy::clone(z));
                }
                // A stalled HTTP/2 stream is reset on its own; an HTTP/1 connection
                // cannot be reused after an unfinished body.
                let activity = (!h2).then(|| service_activity.clone());
                let req = req.map(|inner| {
                    axum::body::Body::new(IdleTimeoutBody {
                        inner,
                        timeout: body_idle_timeout,
                        sleep: None,
                        armed: false,
                        timed_out: false,
                        activity,
                    })
                });
                let app = app.clone();
                async move {
                    let res = app.oneshot(req).await?;
                    Ok::<_, std::convert::Infallible>(res.map(|inner| TrackedBody {
                        inner,
                        _in_flight: in_flight,
                    }))
                }
            });
        let builder = builder.clone();
        let stop = stop_rx.clone();
        match &tls {
            None => {
                let stream = SendfileStream::new(
                    stream,
                    zero_copy,
                    transfer.for_peer(peer.ip()),
                    &copy_budget,
                );
                let io = Watched {
                    inner: stream,
                    activity: activity.clone(),
                };
                tokio::spawn(async move {
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(io), service)
                        .into_owned();
                    drive(conn, activity, limits, stop, peer).await;
                    drop(permit);
                });
            }
            Some(configs) => {
                let configs = configs.clone();
                let mut builder = builder;
                builder.http1().max_buf_size(TLS_WRITE_BUF);
                tokio::spawn(async move {
                    // The handshake counts against the time to the first request head.
                    let tls_stream = match tokio::time::timeout_at(
                        activity.accepted + limits.header_timeout,
                        tls_handshake(&configs, stream, &zero_copy),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let own_records = matches!(tls_stream, TlsIo::Own(_));
                    tracing::debug!(%peer, own_records, "TLS handshake done");
                    if own_records {
                        let _ = zero_copy_after_handshake.set(zero_copy);
                    }
                    let io = Watched {
                        inner: tls_stream,
                        activity: activity.clone(),
                    };
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(io), service)
                        .into_owned();
                    drive(conn, activity, limits, stop, peer).await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    // Every connection holds a permit until its task ends: all permits back means all
    // connections closed.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = stop_tx.send(Stop::Drain);
    if tokio::time::timeout(drain, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after {drain:?}; closing them");
        let _ = stop_tx.send(Stop::Abort);
        let _ = tokio::time::timeout(CLOSE_GRACE, permits.acquire_many(all)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            body_idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }

    /// A self-signed P-256 certificate for 127.0.0.1 and its key, made by `openssl`.
    fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "extendedKeyUsage=serverAuth", "-keyout"])
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
        (cert, key)
    }

    /// The certificate `cert` as a client's only root.
    fn roots_of(cert: &Path) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(cert).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        roots
    }

    /// Moves every TLS byte `from` has to send into `to`, and the plaintext `to` can then
    /// read into `got`.
    fn pass(from: &mut rustls::Connection, to: &mut rustls::Connection, got: &mut Vec<u8>) {
        use std::io::Read;
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).unwrap();
        }
        let mut rd = &wire[..];
        while !rd.is_empty() {
            to.read_tls(&mut rd).unwrap();
            to.process_new_packets().unwrap();
            // WouldBlock once it is all read.
            let _ = to.reader().read_to_end(got);
        }
    }

    /// Runs a TLS handshake between `server` and a client on `client` in memory, and
    /// returns the server's side.
    fn handshake(
        server: Arc<rustls::ServerConfig>,
        client: rustls::ClientConfig,
    ) -> rustls::ServerConnection {
        let mut s = rustls::Connection::Server(rustls::ServerConnection::new(server).unwrap());
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut c = rustls::Connection::Client(
            rustls::ClientConnection::new(Arc::new(client), name).unwrap(),
        );
        for _ in 0..10 {
            pass(&mut c, &mut s, &mut Vec::new());
            pass(&mut s, &mut c, &mut Vec::new());
        }
        assert!(!s.is_handshaking() && !c.is_handshaking());
        match s {
            rustls::Connection::Server(s) => s,
            rustls::Connection::Client(_) => unreachable!(),
        }
    }

    /// A client configuration trusting `cert`, offering `alpn`, its suites in `suites`'
    /// order (all of them when empty) and only TLS 1.2 when `tls12`.
    fn client_config(
        cert: &Path,
        alpn: &[&[u8]],
        suites: &[rustls::CipherSuite],
        tls12: bool,
    ) -> rustls::ClientConfig {
        let mut provider = berth_tls::provider_with(AeadImpl::Ring);
        if !suites.is_empty() {
            let all = std::mem::take(&mut provider.cipher_suites);
            provider.cipher_suites = suites
                .iter()
                .filter_map(|want| all.iter().find(|s| s.suite() == *want).copied())
                .collect();
        }
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots_of(cert))
            .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        c
    }

    /// A TLS connection over loopback: the server's side after [`tls_handshake`] (with
    /// the queue its placeholders go through), and the client's.
    async fn tls_pair(
        configs: &TlsConfigs,
        client: impl Into<Arc<rustls::ClientConfig>>,
    ) -> (
        TlsIo,
        ZeroCopy,
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = client.into();
        let connect = tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
            tokio_rustls::TlsConnector::from(client)
                .connect(name, tcp)
                .await
                .unwrap()
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let zero_copy = ZeroCopy::default();
        let server = tls_handshake(configs, tcp, &zero_copy).await.unwrap();
        (server, zero_copy, connect.await.unwrap())
    }

    fn test_configs(dir: &Path) -> (TlsConfigs, std::path::PathBuf) {
        let (cert, key) = self_signed(dir);
        let configs = TlsConfigs::new(&tls_acceptor(&cert, &key).unwrap()).unwrap();
        (configs, cert)
    }

    #[tokio::test]
    async fn tls13_http1_clients_get_records_the_server_seals_itself() {
        use rustls::CipherSuite as S;
        let dir = tempfile::tempdir().unwrap();
        let (configs, cert) = test_configs(dir.path());
        let h1: &[&[u8]] = &[b"http/1.1"];
        let both: &[&[u8]] = &[b"h2", b"http/1.1"];
        let chacha_first = [
            S::TLS13_CHACHA20_POLY1305_SHA256,
            S::TLS13_AES_128_GCM_SHA256,
        ];
        let aes256 = [S::TLS13_AES_256_GCM_SHA384];
        // (ALPN, suites, TLS 1.2 only, own records?)
        type Case<'a> = (&'a [&'a [u8]], &'a [S], bool, bool);
        let cases: [Case; 6] = [
            (h1, &[], false, true),
            (&[], &[], false, true),
            (h1, &aes256, false, true),
            (both, &[], false, false),
            (h1, &chacha_first, false, false),
            (h1, &[], true, false),
        ];
        for (alpn, suites, tls12, own) in cases {
            let client = client_config(&cert, alpn, suites, tls12);
            let (server, _, client) = tls_pair(&configs, client).await;
            assert_eq!(
                matches!(server, TlsIo::Own(_)),
                own,
                "ALPN {alpn:?}, suites {suites:?}, TLS 1.2 only {tls12}"
            );
            let (_, conn) = client.get_ref();
            let want_alpn = if alpn.is_empty() {
                None
            } else if alpn.len() == 2 {
                Some(&b"h2"[..])
            } else {
                Some(&b"http/1.1"[..])
            };
            assert_eq!(conn.alpn_protocol(), want_alpn);
        }
        // A client reconnecting with the ticket of its last connection resumes.
        let client = Arc::new(client_config(&cert, h1, &[], false));
        for kind in [rustls::HandshakeKind::Full, rustls::HandshakeKind::Resumed] {
            let (server, _, mut client) = tls_pair(&configs, client.clone()).await;
            assert!(matches!(server, TlsIo::Own(_)));
            // The tickets come after the handshake: read until the server closes.
            drop(server);
            let mut rest = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut client, &mut rest).await;
            assert_eq!(client.get_ref().1.handshake_kind(), Some(kind));
        }
    }

    /// Heads and bodies of placeholders (from a cached file and from one read off the
    /// disk) reach a rustls client whole, with a slow reader too; the client's upload and
    /// its key update reach the server; `shutdown` ends the stream with `close_notify`.
    #[tokio::test]
    async fn records_sealed_by_the_server_carry_placeholders_and_key_updates() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let (configs, cert) = test_configs(dir.path());
        let content: Vec<u8> = (0..5 * 16384 + 4321).map(|i| (i % 251) as u8).collect();
        for cold in [false, true] {
            for slow in [false, true] {
                let client = client_config(&cert, &[b"http/1.1"], &[], false);
                let (server, zero_copy, mut client) = tls_pair(&configs, client).await;
                let TlsIo::Own(mut server) = server else {
                    panic!("not sealed by the server");
                };
                // The client uploads, updating its keys (and asking for the server's)
                // half-way.
                let upload: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
                client.write_all(&upload[..100_000]).await.unwrap();
                client.get_mut().1.refresh_traffic_keys().unwrap();
                client.write_all(&upload[100_000..]).await.unwrap();
                client.flush().await.unwrap();
                let mut got = vec![0u8; upload.len()];
                server.read_exact(&mut got).await.unwrap();
                assert!(got == upload, "upload differs");
                let reader = tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = vec![0u8; 8192];
                    loop {
                        let n = client.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                        if slow {
                            tokio::time::sleep(Duration::from_micros(300)).await;
                        }
                    }
                    got
                });
                let file = crate::zerocopy::file_of(&content, cold);
                let head = b"HTTP/1.1 200 OK\r\n\r\n";
                let len = content.len() as u64;
                crate::zerocopy::write_two_bodies(&mut *server, &zero_copy, head, file, len, 7)
                    .await;
                server.write_all(b"TAIL").await.unwrap();
                server.shutdown().await.unwrap();
                // The client's read ends cleanly: close_notify, not a cut connection.
                let got = reader.await.unwrap();
                let mut want = head.to_vec();
                want.extend_from_slice(&content[7..]);
                want.extend_from_slice(&content);
                want.extend_from_slice(b"TAIL");
                assert_eq!(got.len(), want.len(), "cold {cold}, slow {slow}");
                assert!(got == want, "cold {cold}, slow {slow}: bytes differ");
                assert!(zero_copy.is_empty());
            }
        }
    }

    /// A record that fails authentication ends the connection with an error, and the
    /// client gets a `bad_record_mac` alert.
    #[tokio::test]
    async fn a_forged_record_is_refused_with_an_alert() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let (configs, cert) = test_configs(dir.path());
        let client = client_config(&cert, &[b"http/1.1"], &[], false);
        let (server, _, client) = tls_pair(&configs, client).await;
        let TlsIo::Own(mut server) = server else {
            panic!("not sealed by the server");
        };
        let (mut tcp, _) = client.into_inner();
        // A well-formed header, 40 bytes of garbage where a sealed record goes.
        let mut forged = vec![23u8, 3, 3, 0, 40];
        forged.extend_from_slice(&[0x5a; 40]);
        tcp.write_all(&forged).await.unwrap();
        let mut buf = [0u8; 64];
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        // What reaches the client is one sealed record: the alert.
        let mut alert = [0u8; 5];
        tcp.read_exact(&mut alert).await.unwrap();
        assert_eq!(alert[..3], [23, 3, 3]);
    }

    #[test]
    fn the_server_prefers_aes_128_gcm_in_both_tls_versions() {
        for aead in [AeadImpl::AwsLc, AeadImpl::Ring] {
            let p = tls_provider(aead);
            for v in [&rustls::version::TLS13, &rustls::version::TLS12] {
                let first = p.cipher_suites.iter().find(|s| s.version() == v).unwrap();
                assert!(
                    format!("{:?}", first.suite()).contains("AES_128_GCM"),
                    "{aead:?} {v:?}: {:?}",
                    first.suite()
                );
            }
            // Nothing is dropped by the reordering or the swap.
            let all = rustls::crypto::aws_lc_rs::default_provider().cipher_suites;
            let mut names: Vec<_> = p.cipher_suites.iter().map(|s| s.suite()).collect();
            let mut want: Vec<_> = all.iter().map(|s| s.suite()).collect();
            names.sort_by_key(|s| u16::from(*s));
            want.sort_by_key(|s| u16::from(*s));
            assert_eq!(names, want, "{aead:?}");
        }
    }

    /// Records sealed by either library's suites reach a client on the other's, in both
    /// TLS versions and both directions, and the server signs with aws-lc-rs either way.
    #[test]
    fn records_sealed_by_either_aead_reach_a_client_on_the_other() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        let roots = roots_of(&cert);
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for (aead, client_provider) in [
            (
                AeadImpl::Ring,
                rustls::crypto::aws_lc_rs::default_provider(),
            ),
            (AeadImpl::AwsLc, rustls::crypto::ring::default_provider()),
        ] {
            for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
                let server = Arc::new(server_config(&cert, &key, aead).unwrap());
                let client =
                    rustls::ClientConfig::builder_with_provider(Arc::new(client_provider.clone()))
                        .with_protocol_versions(&[version])
                        .unwrap()
                        .with_root_certificates(roots.clone())
                        .with_no_client_auth();
                let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let mut c = rustls::Connection::Client(
                    rustls::ClientConnection::new(Arc::new(client), name).unwrap(),
                );
                let mut s =
                    rustls::Connection::Server(rustls::ServerConnection::new(server).unwrap());
                c.writer().write_all(b"GET /v2/ HTTP/1.1\r\n\r\n").unwrap();
                let (mut got_s, mut got_c) = (Vec::new(), Vec::new());
                let mut sent = 0;
                for _ in 0..50 {
                    pass(&mut c, &mut s, &mut got_s);
                    if !s.is_handshaking() {
                        // rustls takes what fits in its 64 KiB send buffer.
                        sent += s.writer().write(&payload[sent..]).unwrap();
                    }
                    pass(&mut s, &mut c, &mut got_c);
                    if got_c.len() >= payload.len() {
                        break;
                    }
                }
                assert_eq!(got_s, b"GET /v2/ HTTP/1.1\r\n\r\n", "{aead:?} {version:?}");
                assert!(got_c == payload, "{aead:?} {version:?}");
                assert_eq!(s.protocol_version(), Some(version.version));
                let suite = s.negotiated_cipher_suite().unwrap().suite();
                assert!(format!("{suite:?}").contains("AES_128_GCM"), "{suite:?}");
            }
        }
    }

    #[test]
    fn a_client_preferring_aes_256_gets_aes_128_gcm_and_a_ticket() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        let server = tls_acceptor(&cert, &key).unwrap().config().clone();
        assert_eq!(server.alpn_protocols, [&b"h2"[..], b"http/1.1"]);
        let roots = roots_of(&cert);
        // rustls' own client order (also OpenSSL's and curl's): AES-256-GCM first.
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        assert_eq!(
            provider.cipher_suites[0].suite(),
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
        );
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let conn = handshake(server.clone(), client);
        assert_eq!(
            conn.negotiated_cipher_suite().map(|s| s.suite()),
            Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
        assert!(server.ticketer.enabled(), "stateless session tickets");
    }

    #[test]
    fn a_client_preferring_chacha20_keeps_it() {
        use rustls::CipherSuite as S;
        assert!(prefers_chacha(&[
            S::TLS13_CHACHA20_POLY1305_SHA256,
            S::TLS13_AES_128_GCM_SHA256
        ]));
        // Unknown values before it (GREASE, signalling suites) do not count.
        assert!(prefers_chacha(&[
            S::Unknown(0x0a0a),
            S::TLS_EMPTY_RENEGOTIATION_INFO_SCSV,
            S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        ]));
        assert!(!prefers_chacha(&[
            S::TLS13_AES_256_GCM_SHA384,
            S::TLS13_CHACHA20_POLY1305_SHA256
        ]));
        assert!(!prefers_chacha(&[]));

        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        let configs = TlsConfigs::new(&tls_acceptor(&cert, &key).unwrap()).unwrap();
        let roots = roots_of(&cert);
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider
            .cipher_suites
            .sort_by_key(|s| !is_chacha(s.suite()));
        let offered: Vec<_> = provider.cipher_suites.iter().map(|s| s.suite()).collect();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let conn = handshake(configs.for_client(&offered), client);
        assert_eq!(
            conn.negotiated_cipher_suite().map(|s| s.suite()),
            Some(S::TLS13_CHACHA20_POLY1305_SHA256)
        );
    }

    #[test]
    fn the_connection_limit_fits_the_open_file_limit() {
        assert_eq!(connection_cap(4096, None), 4096);
        assert_eq!(connection_cap(4096, Some(1 << 20)), 4096);
        // (1024 - 256 reserved) / 2 descriptors per connection.
        assert_eq!(connection_cap(4096, Some(1024)), 384);
        assert_eq!(connection_cap(100, Some(1024)), 100);
        assert_eq!(connection_cap(4096, Some(10)), 1, "never zero");
        assert!(connection_cap(usize::MAX, None) <= Semaphore::MAX_PERMITS);
    }

    #[test]
    fn raising_the_open_file_limit_reaches_the_hard_limit() {
        let soft = raise_open_files_limit().unwrap();
        let now = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(soft, now.current);
        assert_eq!(now.current, now.maximum);
    }

    #[tokio::test]
    async fn deadlines_follow_what_the_connection_does() {
        let l = limits();
        let a = Activity::new();
        let t0 = a.accepted;
        // No request yet: the first head is due within the header timeout.
        assert_eq!(a.deadline(&l), Some(t0 + l.header_timeout));
        let req = a.request_started(false);
        assert_eq!(a.deadline(&l), None, "a request is in flight");
        drop(req);
        let idle = a.state().idle_since;
        assert!(idle >= t0);
        assert_eq!(a.deadline(&l), Some(idle + l.idle_timeout));
        assert_eq!(a.reason(), "idle for idle_timeout");
        // The first byte of the next HTTP/1 head starts the header clock; later bytes
        // do not move it.
        a.on_read();
        let byte = a.state().first_byte.unwrap();
        assert!(byte >= idle);
        a.on_read();
        assert_eq!(a.deadline(&l), Some(byte + l.header_timeout));
        assert_eq!(
            a.reason(),
            "request head not received within header_timeout"
        );
        // A timed-out body closes the connection as soon as it is idle.
        let req = a.request_started(false);
        a.close_when_idle();
        assert_eq!(a.deadline(&l), None);
        drop(req);
        assert_eq!(a.deadline(&l), Some(a.state().idle_since));
        assert_eq!(a.reason(), "request body timed out");
    }

    #[tokio::test]
    async fn no_event_sets_a_deadline_before_the_next_check() {
        let l = Limits {
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            ..limits()
        };
        let a = Activity::new();
        let now = Instant::now();
        // A fresh connection: its own deadline comes first.
        assert_eq!(a.next_check(&l, now), a.accepted + l.header_timeout);
        // In flight: no deadline, so the task looks again after the shorter timeout.
        let req = a.request_started(false);
        let now = Instant::now();
        let check = a.next_check(&l, now);
        assert_eq!(check, now + l.header_timeout);
        // Whatever happens after `now` sets a deadline no earlier than that check.
        drop(req);
        assert!(a.deadline(&l).unwrap() >= check);
        a.on_read();
        assert!(a.deadline(&l).unwrap() >= check);
    }

    #[tokio::test]
    async fn a_connection_marked_to_close_wakes_its_task_when_it_becomes_idle() {
        let a = Activity::new();
        let req = a.request_started(false);
        a.close_when_idle();
        // Consume the wake-up of the mark itself; the next one must come from the end
        // of the request.
        a.changed.notified().await;
        let woken = {
            let a = a.clone();
            tokio::spawn(async move { a.changed.notified().await })
        };
        tokio::task::yield_now().await;
        drop(req);
        tokio::time::timeout(Duration::from_secs(5), woken)
            .await
            .expect("woken when the last request ended")
            .unwrap();
    }

    #[tokio::test]
    async fn http2_bytes_while_idle_do_not_start_the_header_clock() {
        let l = limits();
        let a = Activity::new();
        drop(a.request_started(true));
        let idle = a.state().idle_since;
        a.on_read();
        assert_eq!(a.deadline(&l), Some(idle + l.idle_timeout));
        assert_eq!(a.reason(), "idle for idle_timeout");
    }

    /// A body whose frames come from a channel, so the test decides when bytes arrive.
    struct Chan(tokio::sync::mpsc::Receiver<Bytes>);

    impl http_body::Body for Chan {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
            self.get_mut()
                .0
                .poll_recv(cx)
                .map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    async fn next_frame<B: http_body::Body + Unpin>(
        body: &mut B,
    ) -> Option<Result<Frame<B::Data>, B::Error>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
    }

    #[tokio::test]
    async fn a_body_times_out_only_after_waiting_that_long_for_one_frame() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let activity = Activity::new();
        let mut body = IdleTimeoutBody {
            inner: Chan(rx),
            timeout: Duration::from_millis(300),
            sleep: None,
            armed: false,
            timed_out: false,
            activity: Some(activity.clone()),
        };
        // Frames every 100ms never trip a 300ms timeout, however long the body lasts.
        let sender = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                tx.send(Bytes::from_static(b"x")).await.unwrap();
            }
            // Then the sender stalls, keeping the body open.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        for _ in 0..5 {
            let frame = next_frame(&mut body).await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"x"));
        }
        let waiting = Instant::now();
        let err = next_frame(&mut body).await.unwrap().unwrap_err();
        let waited = waiting.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        assert!(err.downcast_ref::<BodyIdleTimeout>().is_some(), "{err}");
        assert!(
            next_frame(&mut body).await.is_none(),
            "the body ends after the error"
        );
        assert!(activity.state().close, "the HTTP/1 connection is to close");
        sender.abort();
    }
}

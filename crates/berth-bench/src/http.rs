//! A minimal HTTP/1.1 client for load generation.
//!
//! One keep-alive connection per worker, no connection pool, no redirects; TLS (rustls)
//! when given a connector, for the TLS rows ([`crate::tls`]). A
//! general-purpose client (hyper with its pool, or reqwest) costs several times more CPU
//! per request, and on a 2-core machine every microsecond the load generator spends is
//! taken from the server under test. Responses are parsed with `httparse`; bodies are
//! discarded or collected straight from the read buffer.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A connection's byte stream: plain TCP or TLS over it.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<BufReader<TcpStream>>>),
}

/// The socket reads under a TLS client: rustls asks its transport for at most 4 KiB at a
/// time (its receive buffer grows in 4 KiB steps and shrinks after every record), which
/// on a socket is four or five `read` calls per 16 KiB record. A buffer between them
/// turns those into one large `read` per this many bytes, and costs one copy in memory.
const TLS_SOCKET_READ: usize = 256 << 10;

impl Io {
    /// Connects to `addr`, with a TLS handshake (server name: the address) when
    /// `tls` is given.
    pub async fn connect(addr: SocketAddr, tls: Option<&TlsConnector>) -> Result<Io> {
        let s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_nodelay(true)?;
        match tls {
            None => Ok(Io::Plain(s)),
            Some(c) => {
                let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
                let t = c
                    .connect(name, BufReader::with_capacity(TLS_SOCKET_READ, s))
                    .await
                    .with_context(|| format!("TLS handshake with {addr}"))?;
                Ok(Io::Tls(Box::new(t)))
            }
        }
    }

    /// The protocol the server chose by ALPN (`None` on plain TCP or without ALPN).
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Io::Plain(_) => None,
            Io::Tls(t) => t.get_ref().1.alpn_protocol(),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Where a response body goes.
pub enum Sink<'a> {
    /// Counted and dropped.
    Discard,
    /// Appended to the vector.
    Collect(&'a mut Vec<u8>),
}

impl Sink<'_> {
    fn take(&mut self, bytes: &[u8]) {
        match self {
            Sink::Discard => {}
            Sink::Collect(v) => v.extend_from_slice(bytes),
        }
    }
}

/// Status, the headers the harness reads, and how many body bytes arrived.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 connection, reopened when the server closes it.
pub struct Conn {
    addr: SocketAddr,
    host: String,
    tls: Option<TlsConnector>,
    stream: Option<Io>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// How the body of a response is delimited.
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

impl Conn {
    /// A connection to `addr` (opened on first use) with a read buffer of `buf_size`.
    pub fn new(addr: SocketAddr, buf_size: usize) -> Conn {
        Conn {
            addr,
            host: addr.to_string(),
            tls: None,
            stream: None,
            buf: vec![0; buf_size.max(16 << 10)],
            start: 0,
            end: 0,
        }
    }

    /// The same over TLS (an HTTP/1.1 connector: its ALPN must not offer `h2`).
    pub fn with_tls(addr: SocketAddr, buf_size: usize, tls: TlsConnector) -> Conn {
        Conn {
            tls: Some(tls),
            ..Conn::new(addr, buf_size)
        }
    }

    /// Builds the request head: `method path`, `Host`, `extra` headers and, when `body`
    /// is given, its `Content-Length`.
    pub fn head(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: Option<u64>,
    ) -> Vec<u8> {
        let mut h = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: berth-bench\r\n",
            self.host
        );
        for (k, v) in extra {
            h.push_str(k);
            h.push_str(": ");
            h.push_str(v);
            h.push_str("\r\n");
        }
        if let Some(len) = body {
            h.push_str(&format!("Content-Length: {len}\r\n"));
        }
        h.push_str("\r\n");
        h.into_bytes()
    }

    async fn connect(&mut self) -> Result<()> {
        self.stream = Some(Io::connect(self.addr, self.tls.as_ref()).await?);
        self.start = 0;
        self.end = 0;
        Ok(())
    }

    /// Sends `method path` with `extra` headers and `body`, and reads the response.
    /// Methods that carry a body (`POST`, `PUT`, `PATCH`) always send `Content-Length`.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: &[u8],
        sink: Sink<'_>,
    ) -> Result<Response> {
        let with_body = matches!(method, "POST" | "PUT" | "PATCH") || !body.is_empty();
        let head = self.head(method, path, extra, with_body.then_some(body.len() as u64));
        self.exchange(&head, body, method == "HEAD", sink).await
    }

    /// Sends a request whose `len`-byte body is produced piece by piece by `fill` (4 MiB
    /// at a time), so that a body larger than memory can be sent; reads the response.
    pub async fn send_generated(
        &mut self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        len: u64,
        mut fill: impl FnMut(&mut [u8]),
        sink: Sink<'_>,
    ) -> Result<Response> {
        let head = self.head(method, path, extra, Some(len));
        if self.stream.is_none() {
            self.connect().await?;
        }
        let s = self.stream.as_mut().context("not connected")?;
        s.write_all(&head).await?;
        let mut buf = vec![0u8; 4 << 20];
        let mut left = len;
        while left > 0 {
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            fill(&mut buf[..n]);
            s.write_all(&buf[..n]).await?;
            left -= n as u64;
        }
        s.flush().await?;
        match self.read_head().await {
            Ok(Some(r)) => self.finish(r, false, sink).await,
            Ok(None) => bail!("server closed the connection without answering"),
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    /// Writes a prepared request head and body, and reads the response. A request on a
    /// reused connection that the server had already closed is retried once when it is
    /// safe to (no body).
    pub async fn exchange(
        &mut self,
        head: &[u8],
        body: &[u8],
        is_head: bool,
        sink: Sink<'_>,
    ) -> Result<Response> {
        let reused = self.stream.is_some();
        if !reused {
            self.connect().await?;
        }
        match self.write_request(head, body).await {
            Ok(()) => {}
            Err(_) if reused && body.is_empty() => {
                self.connect().await?;
                self.write_request(head, body).await?;
            }
            Err(e) => return Err(e),
        }
        match self.read_head().await {
            Ok(Some(r)) => self.finish(r, is_head, sink).await,
            Ok(None) if reused && body.is_empty() => {
                self.connect().await?;
                self.write_request(head, body).await?;
                match self.read_head().await? {
                    Some(r) => self.finish(r, is_head, sink).await,
                    None => bail!("server closed the connection without answering"),
                }
            }
            Ok(None) => bail!("server closed the connection without answering"),
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    async fn write_request(&mut self, head: &[u8], body: &[u8]) -> Result<()> {
        let s = self.stream.as_mut().context("not connected")?;
        if body.len() <= 64 << 10 {
            // One write for small requests: one segment, one syscall.
            let mut all = Vec::with_capacity(head.len() + body.len());
            all.extend_from_slice(head);
            all.extend_from_slice(body);
            s.write_all(&all).await?;
        } else {
            s.write_all(head).await?;
            s.write_all(body).await?;
        }
        // A TLS stream may hold the last record until flushed.
        s.flush().await?;
        Ok(())
    }

    /// Reads more bytes into the buffer; returns how many (0 at end of stream).
    async fn fill(&mut self) -> Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                let n = self.buf.len();
                self.buf.resize(n * 2, 0);
            }
        }
        let s = self.stream.as_mut().context("not connected")?;
        let n = s.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// Parses the status line and headers; `None` when the connection closed first.
    async fn read_head(&mut self) -> Result<Option<(Response, Framing, bool)>> {
        loop {
            if self.end > self.start {
                let mut hdrs = [httparse::EMPTY_HEADER; 48];
                let mut resp = httparse::Response::new(&mut hdrs);
                if let httparse::Status::Complete(n) =
                    resp.parse(&self.buf[self.start..self.end])?
                {
                    let status = resp.code.unwrap_or(0);
                    let mut headers = Vec::with_capacity(resp.headers.len());
                    let mut framing = Framing::UntilClose;
                    let mut close = resp.version == Some(0);
                    for h in resp.headers.iter() {
                        let name = h.name.to_ascii_lowercase();
                        let value = String::from_utf8_lossy(h.value).into_owned();
                        match name.as_str() {
                            "content-length" if !matches!(framing, Framing::Chunked) => {
                                framing = Framing::Length(
                                    value.trim().parse().context("bad Content-Length")?,
                                );
                            }
                            "transfer-encoding"
                                if value.to_ascii_lowercase().contains("chunked") =>
                            {
                                framing = Framing::Chunked
                            }
                            "connection" if value.eq_ignore_ascii_case("close") => close = true,
                            _ => {}
                        }
                        headers.push((name, value));
                    }
                    self.start += n;
                    let r = Response {
                        status,
                        headers,
                        body_len: 0,
                    };
                    return Ok(Some((r, framing, close)));
                }
            }
            if self.fill().await? == 0 {
                if self.end == self.start {
                    self.stream = None;
                    return Ok(None);
                }
                bail!("connection closed in the middle of a response head");
            }
        }
    }

    async fn finish(
        &mut self,
        (mut r, framing, close): (Response, Framing, bool),
        is_head: bool,
        mut sink: Sink<'_>,
    ) -> Result<Response> {
        let framing = if is_head || r.status < 200 || r.status == 204 || r.status == 304 {
            Framing::None
        } else {
            framing
        };
        let result = match framing {
            Framing::None => Ok(0),
            Framing::Length(n) => self.body_exact(n, &mut sink).await.map(|()| n),
            Framing::Chunked => self.body_chunked(&mut sink).await,
            Framing::UntilClose => self.body_to_close(&mut sink).await,
        };
        match result {
            Ok(n) => r.body_len = n,
            Err(e) => {
                self.stream = None;
                return Err(e);
            }
        }
        if close || matches!(framing, Framing::UntilClose) {
            self.stream = None;
        }
        Ok(r)
    }

    async fn body_exact(&mut self, mut n: u64, sink: &mut Sink<'_>) -> Result<()> {
        while n > 0 {
            if self.start == self.end && self.fill().await? == 0 {
                bail!("connection closed with {n} body bytes missing");
            }
            let take = (self.end - self.start).min(usize::try_from(n).unwrap_or(usize::MAX));
            sink.take(&self.buf[self.start..self.start + take]);
            self.start += take;
            n -= take as u64;
        }
        Ok(())
    }

    async fn line(&mut self) -> Result<String> {
        loop {
            if let Some(i) = self.buf[self.start..self.end]
                .windows(2)
                .position(|w| w == b"\r\n")
            {
                let line =
                    String::from_utf8_lossy(&self.buf[self.start..self.start + i]).into_owned();
                self.start += i + 2;
                return Ok(line);
            }
            if self.fill().await? == 0 {
                bail!("connection closed inside a chunked body");
            }
        }
    }

    async fn body_chunked(&mut self, sink: &mut Sink<'_>) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let line = self.line().await?;
            let size_hex = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_hex, 16)
                .with_context(|| format!("bad chunk size {line:?}"))?;
            if size == 0 {
                // Trailers, then the empty line.
                while !self.line().await?.is_empty() {}
                return Ok(total);
            }
            self.body_exact(size, sink).await?;
            total += size;
            if !self.line().await?.is_empty() {
                bail!("chunk not followed by CRLF");
            }
        }
    }

    async fn body_to_close(&mut self, sink: &mut Sink<'_>) -> Result<u64> {
        let mut total = 0u64;
        loop {
            if self.start < self.end {
                sink.take(&self.buf[self.start..self.end]);
                total += (self.end - self.start) as u64;
                self.start = self.end;
            }
            if self.fill().await? == 0 {
                return Ok(total);
            }
        }
    }
}

/// The path (and query) of a `Location` or `Link` target, absolute or not.
pub fn path_of(location: &str) -> &str {
    match location.find("://") {
        Some(i) => {
            let rest = &location[i + 3..];
            rest.find('/').map(|j| &rest[j..]).unwrap_or("/")
        }
        None => location,
    }
}

/// `location` with `key=value` added to its query.
pub fn with_query(location: &str, key: &str, value: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}{key}={value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            path_of("http://127.0.0.1:5000/v2/a/blobs/uploads/x?s=1"),
            "/v2/a/blobs/uploads/x?s=1"
        );
        assert_eq!(path_of("/v2/a/blobs/uploads/x"), "/v2/a/blobs/uploads/x");
        assert_eq!(
            with_query("/u?s=1", "digest", "sha256:ab"),
            "/u?s=1&digest=sha256:ab"
        );
        assert_eq!(
            with_query("/u", "digest", "sha256:ab"),
            "/u?digest=sha256:ab"
        );
    }

    /// A tiny server that answers with a fixed chunked response, then closes.
    #[tokio::test]
    async fn reads_chunked_and_length_bodies() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")
                .await
                .unwrap();
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 201 Created\r\nLocation: /x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await
                .unwrap();
        });
        let mut c = Conn::new(addr, 16 << 10);
        let mut body = Vec::new();
        let r = c
            .send("GET", "/a", &[], b"", Sink::Collect(&mut body))
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.body_len, body.as_slice()),
            (200, 5, &b"abcde"[..])
        );
        let r = c
            .send("PUT", "/b", &[], b"zz", Sink::Discard)
            .await
            .unwrap();
        assert_eq!((r.status, r.header("location")), (201, Some("/x")));
        server.await.unwrap();
    }
}

//! The workloads of issue 6, each against one registry at `addr`, speaking only the
//! OCI Distribution API that every registry implements (no Berth extensions), so that
//! both servers do the same work for the same requests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sha2::Digest as _;

use crate::data;
use crate::http::{path_of, with_query, Conn, Response, Sink};

pub(crate) const OCTETS: (&str, &str) = ("Content-Type", "application/octet-stream");
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// What real clients (containerd, skopeo) send when fetching a manifest.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

pub(crate) fn check(r: &Response, want: u16, what: &str, body: &[u8]) -> Result<()> {
    if r.status != want {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
        bail!("{what}: HTTP {} (wanted {want}): {text}", r.status);
    }
    Ok(())
}

pub(crate) fn location(r: &Response, what: &str) -> Result<String> {
    Ok(path_of(
        r.header("location")
            .with_context(|| format!("{what}: no Location header"))?,
    )
    .to_owned())
}

/// `POST /v2/<repo>/blobs/uploads/`: opens a session; returns its location path.
pub(crate) async fn upload_start(c: &mut Conn, repo: &str, body: &mut Vec<u8>) -> Result<String> {
    body.clear();
    let r = c
        .send(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            b"",
            Sink::Collect(body),
        )
        .await?;
    check(&r, 202, "starting an upload", body)?;
    location(&r, "starting an upload")
}

/// Monolithic push as the OCI spec defines it: `POST`, then one `PUT ?digest=` with the
/// whole blob as its body. (Distribution 2.8 ignores a single `POST ?digest=`.)
pub async fn push_monolithic(
    addr: SocketAddr,
    repo: &str,
    blob: &[u8],
    digest: &str,
) -> Result<()> {
    let mut c = Conn::new(addr, 64 << 10);
    let mut body = Vec::new();
    let loc = upload_start(&mut c, repo, &mut body).await?;
    body.clear();
    let r = c
        .send(
            "PUT",
            &with_query(&loc, "digest", digest),
            &[OCTETS],
            blob,
            Sink::Collect(&mut body),
        )
        .await?;
    check(&r, 201, "monolithic PUT", &body)
}

/// Chunked push: `POST`, one `PATCH` with `Content-Range` per `chunk` bytes (following
/// the `Location` the server returns each time), then `PUT ?digest=` with no body.
pub async fn push_chunked(
    addr: SocketAddr,
    repo: &str,
    blob: &[u8],
    digest: &str,
    chunk: usize,
) -> Result<()> {
    let mut c = Conn::new(addr, 64 << 10);
    let mut body = Vec::new();
    let mut loc = upload_start(&mut c, repo, &mut body).await?;
    let mut at = 0usize;
    for part in blob.chunks(chunk.max(1)) {
        let range = format!("{}-{}", at, at + part.len() - 1);
        body.clear();
        let r = c
            .send(
                "PATCH",
                &loc,
                &[OCTETS, ("Content-Range", &range)],
                part,
                Sink::Collect(&mut body),
            )
            .await?;
        check(&r, 202, "PATCH of a chunk", &body)?;
        loc = location(&r, "PATCH of a chunk")?;
        at += part.len();
    }
    body.clear();
    let r = c
        .send(
            "PUT",
            &with_query(&loc, "digest", digest),
            &[],
            b"",
            Sink::Collect(&mut body),
        )
        .await?;
    check(&r, 201, "closing PUT", &body)
}

/// Pulls a blob of `size` bytes whole (`range` `None`) or as consecutive ranged `GET`s of
/// `range` bytes on one connection. With `verify`, the bytes are hashed (costs client CPU).
///
/// Pulls use a blocking socket on their own thread, reading 1 MiB at a time exactly like
/// the loopback probe ([`crate::limits::loopback_tcp`]) they are compared with, so that
/// "share of loopback" measures the server and not the load generator's event loop.
pub async fn pull(
    addr: SocketAddr,
    repo: &str,
    digest: &str,
    size: u64,
    range: Option<u64>,
    verify: bool,
) -> Result<u64> {
    let path = format!("/v2/{repo}/blobs/{digest}");
    let digest = digest.to_owned();
    tokio::task::spawn_blocking(move || pull_blocking(addr, &path, &digest, size, range, verify))
        .await
        .context("pull thread")?
}

fn pull_blocking(
    addr: SocketAddr,
    path: &str,
    digest: &str,
    size: u64,
    range: Option<u64>,
    verify: bool,
) -> Result<u64> {
    let mut c = BlockingConn::connect(addr)?;
    let mut hasher = sha2::Sha256::new();
    let mut sink = |b: &[u8]| {
        if verify {
            hasher.update(b);
        }
    };
    let mut got = 0u64;
    match range {
        None => {
            let (status, n) = c.get(path, None, &mut sink)?;
            ensure!(status == 200, "blob GET: HTTP {status} (wanted 200)");
            got = n;
        }
        Some(step) => {
            while got < size {
                let end = (got + step.max(1)).min(size) - 1;
                let range = format!("bytes={got}-{end}");
                let (status, n) = c.get(path, Some(&range), &mut sink)?;
                ensure!(status == 206, "ranged blob GET: HTTP {status} (wanted 206)");
                ensure!(
                    n == end - got + 1,
                    "ranged GET returned {n} bytes for {range}"
                );
                got += n;
            }
        }
    }
    ensure!(got == size, "pulled {got} bytes of a {size}-byte blob");
    if verify {
        let d = format!("sha256:{}", hex::encode(hasher.finalize()));
        ensure!(d == digest, "pulled bytes hash to {d}, not {digest}");
    }
    Ok(got)
}

/// A blocking HTTP/1.1 keep-alive connection for `GET`s with a `Content-Length` body.
struct BlockingConn {
    stream: std::net::TcpStream,
    host: String,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl BlockingConn {
    fn connect(addr: SocketAddr) -> Result<BlockingConn> {
        let stream =
            std::net::TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(BlockingConn {
            stream,
            host: addr.to_string(),
            buf: vec![0; 1 << 20],
            start: 0,
            end: 0,
        })
    }

    /// `GET path` (with an optional `Range`); the body goes to `sink`. Returns the status
    /// and the body length.
    fn get(
        &mut self,
        path: &str,
        range: Option<&str>,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<(u16, u64)> {
        use std::io::{Read, Write};
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: berth-bench\r\n",
            self.host
        );
        if let Some(r) = range {
            req.push_str(&format!("Range: {r}\r\n"));
        }
        req.push_str("\r\n");
        self.stream.write_all(req.as_bytes())?;
        // Head.
        let (status, len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = resp.parse(&self.buf[self.start..self.end])? {
                let status = resp.code.context("response without a status")?;
                let len = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .context("response without a Content-Length")?;
                self.start += n;
                break (status, len);
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            ensure!(self.end < self.buf.len(), "response head too large");
            let n = self.stream.read(&mut self.buf[self.end..])?;
            ensure!(n > 0, "server closed the connection without answering");
            self.end += n;
        };
        // Body: what is buffered, then 1 MiB reads straight from the socket.
        let mut left = len;
        let buffered = ((self.end - self.start) as u64).min(left) as usize;
        sink(&self.buf[self.start..self.start + buffered]);
        self.start += buffered;
        left -= buffered as u64;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = self.stream.read(&mut self.buf[..want])?;
            ensure!(
                n > 0,
                "connection closed {left} bytes before the end of the body"
            );
            sink(&self.buf[..n]);
            left -= n as u64;
        }
        Ok((status, len))
    }
}

/// `DELETE` of a blob (cleanup between rounds, not measured).
pub async fn delete_blob(addr: SocketAddr, repo: &str, digest: &str) -> Result<()> {
    let mut c = Conn::new(addr, 64 << 10);
    let mut body = Vec::new();
    let r = c
        .send(
            "DELETE",
            &format!("/v2/{repo}/blobs/{digest}"),
            &[],
            b"",
            Sink::Collect(&mut body),
        )
        .await?;
    check(&r, 202, "blob DELETE", &body)
}

/// Pushes every blob of `blobs` (monolithic, `POST` + `PUT`) with `parallel` clients,
/// each on its own connection taking the next blob from a shared counter.
pub async fn small_blobs(
    addr: SocketAddr,
    repo: &str,
    blobs: Arc<Vec<(Vec<u8>, String)>>,
    parallel: usize,
) -> Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..parallel.max(1) {
        let (blobs, next, repo) = (blobs.clone(), next.clone(), repo.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::new(addr, 64 << 10);
            let mut body = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some((blob, digest)) = blobs.get(i) else {
                    return Ok::<(), anyhow::Error>(());
                };
                let loc = upload_start(&mut c, &repo, &mut body).await?;
                body.clear();
                let r = c
                    .send(
                        "PUT",
                        &with_query(&loc, "digest", digest),
                        &[OCTETS],
                        blob,
                        Sink::Collect(&mut body),
                    )
                    .await?;
                check(&r, 201, "small blob PUT", &body)?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Pushes one blob if the registry does not have it in `repo` yet.
async fn ensure_blob(c: &mut Conn, repo: &str, blob: &[u8], digest: &str) -> Result<()> {
    let r = c
        .send(
            "HEAD",
            &format!("/v2/{repo}/blobs/{digest}"),
            &[],
            b"",
            Sink::Discard,
        )
        .await?;
    if r.status == 200 {
        return Ok(());
    }
    let mut body = Vec::new();
    let loc = upload_start(c, repo, &mut body).await?;
    body.clear();
    let r = c
        .send(
            "PUT",
            &with_query(&loc, "digest", digest),
            &[OCTETS],
            blob,
            Sink::Collect(&mut body),
        )
        .await?;
    check(&r, 201, "blob PUT", &body)
}

/// Pushes a small single-platform image (config and three 1 KiB layers) to `repo` and
/// returns its manifest, ready to be tagged with [`put_manifest`].
pub async fn setup_image(addr: SocketAddr, repo: &str, seed: u64) -> Result<Vec<u8>> {
    let mut c = Conn::new(addr, 64 << 10);
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#;
    let cd = data::digest(config);
    ensure_blob(&mut c, repo, config, &cd).await?;
    let mut layers = Vec::new();
    for i in 0..3 {
        let blob = data::random_bytes(seed * 10 + i, 1024);
        let d = data::digest(&blob);
        ensure_blob(&mut c, repo, &blob, &d).await?;
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d,
            "size": blob.len(),
        }));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": layers,
        "annotations": {"org.opencontainers.image.title": "berth-bench"},
    });
    Ok(serde_json::to_vec(&manifest)?)
}

/// `PUT /v2/<repo>/manifests/<reference>`.
pub async fn put_manifest(
    c: &mut Conn,
    repo: &str,
    reference: &str,
    manifest: &[u8],
) -> Result<()> {
    let mut body = Vec::new();
    let r = c
        .send(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", OCI_MANIFEST)],
            manifest,
            Sink::Collect(&mut body),
        )
        .await?;
    check(&r, 201, "manifest PUT", &body)
}

/// Tags `manifest` in `repo` as `t00000`..: `count` tag PUTs by `parallel` clients.
pub async fn setup_tags(
    addr: SocketAddr,
    repo: &str,
    manifest: Arc<Vec<u8>>,
    count: u64,
    parallel: usize,
) -> Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..parallel.max(1) {
        let (next, repo, manifest) = (next.clone(), repo.to_owned(), manifest.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::new(addr, 64 << 10);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<(), anyhow::Error>(());
                }
                put_manifest(&mut c, &repo, &tag_name(i), &manifest).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Zero-padded so that lexical order (the order the spec requires) is numeric order.
pub fn tag_name(i: u64) -> String {
    format!("t{i:05}")
}

/// Latencies of the requests one [`manifest_get`] run made, in microseconds.
pub struct LoadResult {
    pub requests: u64,
    pub latencies_us: Vec<u32>,
}

/// `conns` connections each `GET` `path` in a closed loop until `duration` has passed
/// or `max_requests` were sent in all; every response must be 200 with `expect_len`
/// body bytes.
pub async fn manifest_get(
    addr: SocketAddr,
    path: &str,
    conns: usize,
    duration: Duration,
    max_requests: u64,
    expect_len: u64,
) -> Result<LoadResult> {
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..conns.max(1) {
        let (sent, path) = (sent.clone(), path.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::new(addr, 64 << 10);
            let head = c.head("GET", &path, &[("Accept", ACCEPT_MANIFESTS)], None);
            let mut lat = Vec::with_capacity(1 << 16);
            while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < max_requests {
                let t = Instant::now();
                let r = c.exchange(&head, b"", false, Sink::Discard).await?;
                let us = t.elapsed().as_micros();
                if r.status != 200 || r.body_len != expect_len {
                    bail!(
                        "manifest GET: HTTP {} with {} bytes (wanted 200 with {expect_len})",
                        r.status,
                        r.body_len
                    );
                }
                lat.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
            Ok::<Vec<u32>, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_unstable();
    Ok(LoadResult {
        requests: all.len() as u64,
        latencies_us: all,
    })
}

/// The value at quantile `q` of sorted `v`.
pub fn quantile(v: &[u32], q: f64) -> u32 {
    if v.is_empty() {
        return 0;
    }
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

#[derive(serde::Deserialize)]
struct TagList {
    tags: Option<Vec<String>>,
}

/// Totals of [`tag_walks`].
pub struct Walks {
    pub walks: u64,
    pub pages: u64,
    pub tags: u64,
}

/// Lists every tag of `repo` by following `Link` headers from `?n=<page>`, as clients
/// do, until `duration` has passed or `max_walks` full listings were made (at least
/// one). Each listing must return `expect` distinct tags.
pub async fn tag_walks(
    addr: SocketAddr,
    repo: &str,
    page: u64,
    duration: Duration,
    max_walks: u64,
    expect: u64,
) -> Result<Walks> {
    let mut c = Conn::new(addr, 256 << 10);
    let start = Instant::now();
    let mut w = Walks {
        walks: 0,
        pages: 0,
        tags: 0,
    };
    let mut body = Vec::new();
    while w.walks == 0 || (start.elapsed() < duration && w.walks < max_walks) {
        let mut next = Some(format!("/v2/{repo}/tags/list?n={page}"));
        let mut seen = 0u64;
        let mut last: Option<String> = None;
        while let Some(path) = next.take() {
            body.clear();
            let r = c
                .send("GET", &path, &[], b"", Sink::Collect(&mut body))
                .await?;
            check(&r, 200, "tags list", &body)?;
            let list: TagList = serde_json::from_slice(&body).context("tags list is not JSON")?;
            let tags = list.tags.unwrap_or_default();
            if let (Some(prev), Some(first)) = (&last, tags.first()) {
                ensure!(
                    first > prev,
                    "tags list page starts at {first:?}, not after {prev:?}"
                );
            }
            seen += tags.len() as u64;
            last = tags.last().cloned().or(last);
            w.pages += 1;
            ensure!(w.pages < 10_000_000, "runaway pagination");
            next = r.header("link").and_then(link_target).map(str::to_owned);
        }
        ensure!(
            seen == expect,
            "a full tags listing returned {seen} tags, not {expect}"
        );
        w.tags += seen;
        w.walks += 1;
    }
    Ok(w)
}

/// The target of `<...>; rel="next"`.
fn link_target(link: &str) -> Option<&str> {
    let start = link.find('<')? + 1;
    let end = start + link[start..].find('>')?;
    Some(path_of(&link[start..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(
            link_target("</v2/a/tags/list?last=t1&n=2>; rel=\"next\""),
            Some("/v2/a/tags/list?last=t1&n=2")
        );
        assert_eq!(
            link_target("<http://h:1/v2/x?n=1>; rel=\"next\""),
            Some("/v2/x?n=1")
        );
        assert_eq!(tag_name(42), "t00042");
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 0.5), 51);
        assert_eq!(quantile(&[], 0.5), 0);
    }
}

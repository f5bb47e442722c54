//! Zero-copy blob responses (`sendfile`) on plain-TCP HTTP/1.x connections, and blob
//! bytes read straight into TLS records on TLS 1.3 HTTP/1.x ones ([`tls`]).
//!
//! hyper owns the socket writes and takes a response body as a stream of byte buffers,
//! so a file cannot be handed to it directly. Instead a blob body yields *placeholder*
//! frames: slices of one process-wide, never-written buffer ([`placeholder`]) that stand
//! for "the next N bytes of the file at the front of this connection's queue". The
//! connection's stream ([`SendfileStream`]) recognises a placeholder slice by its address
//! when hyper writes it and calls `sendfile(2)` for that many bytes instead, so the blob
//! goes from the page cache to the socket without passing through user space.
//!
//! A connection can instead copy ([`Transfer::Copy`], chosen for loopback clients by
//! `blob_transfer = "auto"`): the same placeholders are served by `pread` into a buffer
//! lent for the body from the server's [`CopyBudget`] and a `write`. On loopback the receiver's half of the TCP path
//! runs in the sender's kernel, and `sendfile`'s page-sized fragments make that half cost
//! more than the copy saves: copying was both faster and cheaper there (docs/benchmarks.md).
//!
//! Invariants that keep this safe:
//! - Placeholders are produced only for requests that carry this connection's
//!   [`ZeroCopy`] extension, which the listener attaches only to plain-TCP connections
//!   and to TLS connections whose records the server seals itself ([`RecordStream`],
//!   decided after the handshake, before any request), and only for HTTP/1.x requests
//!   (an h2c request's bytes would be framed, not written as they are). Other TLS
//!   connections never get it.
//! - hyper is set to queue body buffers (`writev`), never to copy them into its own
//!   buffer, so every placeholder byte reaches [`SendfileStream`] or [`RecordStream`]
//!   unchanged.
//! - Bodies are written in order on one connection, so a FIFO of (file, offset,
//!   remaining) is enough to map placeholder bytes to file bytes; a body registers its
//!   file when hyper first polls it, which is after its head is queued.
//! - A placeholder write with no file queued, or a file shorter than promised, is an
//!   I/O error: the connection is closed and no placeholder byte is ever sent.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

mod tls;
pub use tls::RecordStream;

/// Size of the placeholder buffer, hence of one body frame.
const FRAME: usize = 1 << 20;

/// Blobs smaller than this are served by reading them (a `sendfile` saves nothing there).
pub const MIN_ZERO_COPY: u64 = 64 << 10;

/// The placeholder buffer: a unique heap range of zeros that nothing ever reads.
/// (`calloc`-backed, so its pages are never touched and cost no memory.)
fn placeholder() -> &'static [u8] {
    static BUF: OnceLock<&'static [u8]> = OnceLock::new();
    BUF.get_or_init(|| Box::leak(vec![0u8; FRAME].into_boxed_slice()))
}

fn is_placeholder(buf: &[u8]) -> bool {
    let base = placeholder().as_ptr() as usize;
    let p = buf.as_ptr() as usize;
    !buf.is_empty() && p >= base && p + buf.len() <= base + FRAME
}

/// A file whose bytes are still to be sent on a connection.
struct Pending {
    file: std::fs::File,
    offset: u64,
    remaining: u64,
}

/// The zero-copy queue of one connection (plain TCP, or TLS with records the server
/// seals); a request extension.
#[derive(Clone, Default)]
pub struct ZeroCopy(Arc<Mutex<VecDeque<Pending>>>);

impl ZeroCopy {
    /// Whether no body is waiting to be sent.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.queue().is_empty()
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A response body sending `len` bytes of `file` from `offset` by `sendfile`; the
    /// file must hold `offset + len` bytes. An empty body queues nothing.
    pub fn body(&self, file: std::fs::File, offset: u64, len: u64) -> ZeroCopyBody {
        ZeroCopyBody {
            conn: self.clone(),
            file: (len > 0).then_some(Pending {
                file,
                offset,
                remaining: len,
            }),
            left: len,
        }
    }
}

/// A body of placeholder frames standing for a file's bytes.
pub struct ZeroCopyBody {
    conn: ZeroCopy,
    /// The file, until the first poll queues it on the connection.
    file: Option<Pending>,
    left: u64,
}

impl http_body::Body for ZeroCopyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(p) = this.file.take() {
            this.conn.queue().push_back(p);
        }
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let n = this.left.min(FRAME as u64) as usize;
        this.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            &placeholder()[..n],
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0 && self.file.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// Size of one frame of a [`PagedBody`]: four full TLS records.
pub const PAGED_FRAME: usize = 64 << 10;

/// A blob body for connections that cannot take placeholders (TLS, HTTP/2): the file
/// read with `pread` in [`PAGED_FRAME`]-sized frames, from the page cache on the
/// connection's worker (`RWF_NOWAIT`, as [`Transfer::Copy`] does), on the blocking pool
/// only when the bytes must come from the disk. A `tokio::fs::File` stream instead sends
/// every read to the blocking pool and copies twice (into the file's own buffer, kept
/// while the connection lives, then into the frame); and small frames keep what a slow
/// client's connection holds small (the listener also caps a TLS connection's HTTP/1
/// write buffer, see `listener::TLS_WRITE_BUF`).
pub struct PagedBody {
    file: Arc<std::fs::File>,
    offset: u64,
    left: u64,
    /// A read waiting for the disk on the blocking pool: the frame and the bytes read.
    reading: Option<DiskRead>,
}

/// A frame read from the disk on the blocking pool: the frame and the bytes read.
type DiskRead = tokio::task::JoinHandle<io::Result<(Vec<u8>, usize)>>;

impl PagedBody {
    /// A body of `len` bytes of `file` from `offset`; the file must hold them.
    pub fn new(file: std::fs::File, offset: u64, len: u64) -> PagedBody {
        PagedBody {
            file: Arc::new(file),
            offset,
            left: len,
            reading: None,
        }
    }

    fn next(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        loop {
            if let Some(read) = self.reading.as_mut() {
                let got = ready!(std::future::Future::poll(Pin::new(read), cx));
                self.reading = None;
                let (buf, k) = got.map_err(io::Error::other)??;
                return Poll::Ready(self.advance(buf, k));
            }
            if self.left == 0 {
                return Poll::Ready(Ok(None));
            }
            let n = self.left.min(PAGED_FRAME as u64) as usize;
            let mut buf = FRAMES.take();
            match read_cached(&self.file, &mut buf[..n], self.offset)? {
                Some(k) => return Poll::Ready(self.advance(buf, k)),
                None => {
                    let (file, offset) = (self.file.clone(), self.offset);
                    self.reading = Some(tokio::task::spawn_blocking(move || {
                        let k = rustix::io::pread(&*file, &mut buf[..n], offset)?;
                        Ok((buf, k))
                    }));
                }
            }
        }
    }

    /// The frame of the first `len` bytes of `buf`, just read.
    fn advance(&mut self, buf: Vec<u8>, len: usize) -> io::Result<Option<Bytes>> {
        if len == 0 {
            self.left = 0;
            FRAMES.give_back(buf);
            return Err(short_file());
        }
        self.offset += len as u64;
        self.left -= len as u64;
        Ok(Some(Bytes::from_owner(PooledFrame {
            buf,
            len,
            pool: &FRAMES,
        })))
    }
}

/// Frame buffers of [`PagedBody`] kept for reuse: a frame goes back to the pool when the
/// connection drops its last reference, after the bytes are handed to TLS or HTTP/2. A
/// fresh 64 KiB allocation per frame was zeroed (`memset`) and, when the allocator had
/// given the memory back to the system, page-faulted in again: about 5 % of the server's
/// CPU in a TLS blob GET (docs/benchmarks.md, TLS profiles).
static FRAMES: FramePool = FramePool::new(FRAME_POOL, PAGED_FRAME);

/// Frames the pool keeps at most (4 MiB); more in flight are allocated and freed.
const FRAME_POOL: usize = 64;

/// A bounded stack of buffers of one length.
struct FramePool {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
    len: usize,
}

impl FramePool {
    const fn new(keep: usize, len: usize) -> FramePool {
        FramePool {
            free: Mutex::new(Vec::new()),
            keep,
            len,
        }
    }

    fn free(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A buffer of the pool's length; its bytes are whatever it last held.
    fn take(&self) -> Vec<u8> {
        self.free().pop().unwrap_or_else(|| vec![0u8; self.len])
    }

    fn give_back(&self, buf: Vec<u8>) {
        if buf.len() == self.len {
            let mut free = self.free();
            if free.len() < self.keep {
                free.push(buf);
            }
        }
    }
}

/// The owner of a frame's bytes inside its [`Bytes`]: the first `len` bytes of `buf`,
/// which goes back to `pool` when dropped.
struct PooledFrame {
    buf: Vec<u8>,
    len: usize,
    pool: &'static FramePool,
}

impl AsRef<[u8]> for PooledFrame {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PooledFrame {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

impl http_body::Body for PagedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match ready!(self.get_mut().next(cx)) {
            Ok(Some(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0 && self.reading.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// How a connection sends the file bytes that placeholders stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// `sendfile(2)`: no copy through user space.
    Sendfile,
    /// `pread` into a buffer lent from a [`CopyBudget`], then `write`; `sendfile` for a
    /// body that starts while the budget is spent.
    Copy,
}

/// Memory that the copy buffers of all [`Transfer::Copy`] connections of one server may
/// hold at once (one [`COPY_BUF`] per connection sending a blob). A connection that finds the
/// budget spent sends with `sendfile` until its current body ends, so memory stays
/// bounded however many clients pull at once.
#[derive(Clone)]
pub struct CopyBudget(Arc<std::sync::atomic::AtomicUsize>);

/// Size of one connection's copy buffer: one placeholder frame, so that one `pread` and
/// (socket buffer permitting) one `write` move a whole frame.
const COPY_BUF: usize = FRAME;

/// Copy buffers held at once by default: 16 connections copying, 16 MiB in all.
pub const COPY_BUDGET: usize = 16 * COPY_BUF;

impl CopyBudget {
    pub fn new(bytes: usize) -> CopyBudget {
        CopyBudget(Arc::new(std::sync::atomic::AtomicUsize::new(bytes)))
    }

    /// A copy buffer, if the budget has room for one.
    fn take(&self) -> Option<CopyBuf> {
        use std::sync::atomic::Ordering;
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(COPY_BUF)
            })
            .ok()?;
        Some(CopyBuf {
            // Zeroed by the allocator (untouched pages until read into).
            bytes: vec![0; COPY_BUF],
            budget: self.clone(),
        })
    }
}

/// A copy buffer counted against a [`CopyBudget`] until dropped.
struct CopyBuf {
    bytes: Vec<u8>,
    budget: CopyBudget,
}

impl Drop for CopyBuf {
    fn drop(&mut self) {
        self.budget
            .0
            .fetch_add(COPY_BUF, std::sync::atomic::Ordering::AcqRel);
    }
}

/// How the body being sent on a [`Transfer::Copy`] connection goes out.
enum CopyBody {
    /// No body in progress: no buffer held (idle keep-alive connections cost nothing).
    Idle,
    /// Copying through a buffer taken from the budget for this body, given back when its
    /// last bytes are sent.
    Copying(CopyBuf),
    /// The buffer is away on the blocking pool, being filled from the disk: the bytes were
    /// not in the page cache, and waiting for the disk on this worker would stall every
    /// other connection it serves.
    Reading(tokio::task::JoinHandle<(CopyBuf, io::Result<usize>)>),
    /// By `sendfile`: the budget was spent when the body started.
    Sendfile,
}

/// The state of a [`Transfer::Copy`] connection: its body, and the bytes of it read into
/// the buffer but not yet sent (`start..end`).
struct Staged {
    budget: CopyBudget,
    body: CopyBody,
    start: usize,
    end: usize,
    /// The staged bytes are the last of their body.
    last: bool,
}

/// Blob bytes a connection sends before it lets the other tasks of its worker run.
/// Without it a fast reader keeps the socket writable, and the connection's task goes on
/// for tokio's whole budget (128 socket polls: up to 128 MiB, tens of milliseconds) while
/// requests on other connections of that worker wait.
const FAIR_SHARE: usize = 4 << 20;

/// A connection's turn at sending blob bytes: after [`FAIR_SHARE`] bytes it yields once.
#[derive(Default)]
struct FairShare {
    /// Blob bytes sent since this connection last yielded to the scheduler.
    since_yield: usize,
    /// The yield under way once [`FAIR_SHARE`] bytes went out.
    yielding: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

impl FairShare {
    /// Ready when the connection may send more blob bytes.
    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.since_yield >= FAIR_SHARE {
            let yielding = self
                .yielding
                .get_or_insert_with(|| Box::pin(tokio::task::yield_now()));
            ready!(yielding.as_mut().poll(cx));
            self.yielding = None;
            self.since_yield = 0;
        }
        Poll::Ready(())
    }

    fn sent(&mut self, n: usize) {
        self.since_yield += n;
    }
}

/// Reads from the page cache only: `None` when the bytes are not all there yet and the
/// read would wait for the disk (`RWF_NOWAIT`; a short count when only the first part is
/// cached). Filesystems without `RWF_NOWAIT` get a plain `pread`.
fn read_cached(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<Option<usize>> {
    read_cached_into(file, &mut [io::IoSliceMut::new(buf)], offset)
}

/// [`read_cached`] into several buffers, filled in order by one `preadv2`.
fn read_cached_into(
    file: &std::fs::File,
    bufs: &mut [io::IoSliceMut<'_>],
    offset: u64,
) -> io::Result<Option<usize>> {
    let nowait = rustix::io::ReadWriteFlags::NOWAIT;
    match rustix::io::preadv2(file, bufs, offset, nowait) {
        Ok(n) => Ok(Some(n)),
        Err(rustix::io::Errno::AGAIN) => Ok(None),
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::INVAL) => {
            Ok(Some(rustix::io::preadv(file, bufs, offset)?))
        }
        Err(e) => Err(e.into()),
    }
}

/// A file that ends before the size its blob was recorded with.
fn short_file() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "blob file is shorter than its recorded size",
    )
}

/// Placeholder bytes written with no file queued for them: never sent as they are.
fn no_queued_file() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "zero-copy body bytes without a queued file",
    )
}

/// The error for a state [`SendfileStream::poll_copy`] leaves before it can be seen.
fn buffer_away() -> io::Error {
    io::Error::other("copy buffer still away on a read")
}

impl Staged {
    /// Sends the copy buffer to the blocking pool to be filled with `count` bytes of `file`
    /// at `offset`; [`SendfileStream::poll_copy`] picks it up when the read is done.
    fn read_from_disk(&mut self, file: std::fs::File, offset: u64, count: usize) -> io::Result<()> {
        let CopyBody::Copying(mut buf) = std::mem::replace(&mut self.body, CopyBody::Idle) else {
            return Err(buffer_away());
        };
        self.body = CopyBody::Reading(tokio::task::spawn_blocking(move || {
            let n =
                rustix::io::pread(&file, &mut buf.bytes[..count], offset).map_err(io::Error::from);
            (buf, n)
        }));
        Ok(())
    }
}

/// A plain TCP stream that turns placeholder writes into `sendfile` (or copies).
pub struct SendfileStream {
    inner: TcpStream,
    conn: ZeroCopy,
    staged: Option<Staged>,
    fair: FairShare,
}

impl SendfileStream {
    /// `budget` bounds the copy buffers of [`Transfer::Copy`] connections.
    pub fn new(
        inner: TcpStream,
        conn: ZeroCopy,
        transfer: Transfer,
        budget: &CopyBudget,
    ) -> SendfileStream {
        SendfileStream {
            inner,
            conn,
            fair: FairShare::default(),
            staged: (transfer == Transfer::Copy).then(|| Staged {
                budget: budget.clone(),
                body: CopyBody::Idle,
                start: 0,
                end: 0,
                last: false,
            }),
        }
    }

    /// Sends up to `want` bytes of the file at the front of the queue.
    fn poll_placeholder(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        ready!(self.fair.poll_turn(cx));
        let sent = if self.staged.is_some() {
            ready!(self.poll_copy(cx, want))
        } else {
            ready!(self.poll_sendfile(cx, want)).map(|(n, _)| n)
        };
        if let Ok(n) = sent {
            self.fair.sent(n);
        }
        Poll::Ready(sent)
    }

    /// Sends up to `want` bytes of the file at the front of the queue with `sendfile`;
    /// the count, and whether that was the file's last byte.
    fn poll_sendfile(
        &mut self,
        cx: &mut Context<'_>,
        want: usize,
    ) -> Poll<io::Result<(usize, bool)>> {
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            let mut queue = self.conn.queue();
            let Some(front) = queue.front_mut() else {
                return Poll::Ready(Err(no_queued_file()));
            };
            let count = (want as u64).min(front.remaining) as usize;
            let inner = &self.inner;
            let result = inner.try_io(Interest::WRITABLE, || {
                let mut offset = front.offset;
                let n = rustix::fs::sendfile(inner, &front.file, Some(&mut offset), count)?;
                Ok(n)
            });
            match result {
                Ok(0) => return Poll::Ready(Err(short_file())),
                Ok(n) => {
                    front.offset += n as u64;
                    front.remaining -= n as u64;
                    let last = front.remaining == 0;
                    if last {
                        queue.pop_front();
                    }
                    return Poll::Ready(Ok((n, last)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// [`Transfer::Copy`]: sends up to `want` bytes of the file at the front of the queue,
    /// read into the connection's buffer first. Bytes read but not yet sent stay staged
    /// and go out first on the next call (hyper offers the unsent rest of the same
    /// placeholder again, so there are never more staged bytes than it offers).
    fn poll_copy(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            let Some(st) = self.staged.as_mut() else {
                return Poll::Ready(Err(io::Error::other("copy transfer without a buffer")));
            };
            if let CopyBody::Idle = st.body {
                // A new body: a buffer if the budget allows, else sendfile for all of it.
                st.body = match st.budget.take() {
                    Some(buf) => CopyBody::Copying(buf),
                    None => CopyBody::Sendfile,
                };
            }
            let mut from_disk = None;
            if let CopyBody::Reading(read) = &mut st.body {
                let (buf, n) = ready!(std::future::Future::poll(Pin::new(read), cx))
                    .map_err(io::Error::other)?;
                st.body = CopyBody::Copying(buf);
                from_disk = Some(n?);
            }
            let buf = match &mut st.body {
                CopyBody::Copying(buf) => buf,
                CopyBody::Reading(_) => return Poll::Ready(Err(buffer_away())),
                CopyBody::Idle | CopyBody::Sendfile => {
                    let (n, last) = ready!(self.poll_sendfile(cx, want))?;
                    if let (true, Some(st)) = (last, self.staged.as_mut()) {
                        st.body = CopyBody::Idle;
                    }
                    return Poll::Ready(Ok(n));
                }
            };
            if st.start == st.end {
                let mut queue = self.conn.queue();
                let Some(front) = queue.front_mut() else {
                    return Poll::Ready(Err(no_queued_file()));
                };
                let count = (want as u64).min(front.remaining).min(COPY_BUF as u64) as usize;
                let n = match from_disk {
                    Some(n) => n,
                    None => {
                        match read_cached(&front.file, &mut buf.bytes[..count], front.offset)? {
                            Some(n) => n,
                            None => {
                                // Not cached: read on the blocking pool, then come back here.
                                let file = front.file.try_clone()?;
                                let offset = front.offset;
                                drop(queue);
                                st.read_from_disk(file, offset, count)?;
                                continue;
                            }
                        }
                    }
                };
                if n == 0 {
                    return Poll::Ready(Err(short_file()));
                }
                front.offset += n as u64;
                front.remaining -= n as u64;
                st.last = front.remaining == 0;
                if st.last {
                    queue.pop_front();
                }
                st.start = 0;
                st.end = n;
            }
            let len = (st.end - st.start).min(want);
            match self.inner.try_write(&buf.bytes[st.start..st.start + len]) {
                Ok(n) => {
                    st.start += n;
                    if st.last && st.start == st.end {
                        st.body = CopyBody::Idle;
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for SendfileStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if is_placeholder(buf) {
            this.poll_placeholder(cx, buf.len())
        } else {
            Pin::new(&mut this.inner).poll_write(cx, buf)
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Real bytes up to the first placeholder go out in one writev; a placeholder at
        // the front goes out by sendfile. Either way the caller advances by what was sent.
        let first = bufs
            .iter()
            .position(|b| !b.is_empty())
            .unwrap_or(bufs.len());
        let bufs = &bufs[first..];
        match bufs.iter().position(|b| is_placeholder(b)) {
            Some(0) => this.poll_placeholder(cx, bufs[0].len()),
            Some(k) => Pin::new(&mut this.inner).poll_write_vectored(cx, &bufs[..k]),
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A file holding `content`; with `cold`, out of the page cache, so that reading it
/// waits for the disk.
#[cfg(test)]
pub(crate) fn file_of(content: &[u8], cold: bool) -> std::fs::File {
    use std::io::Write;
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(content).unwrap();
    if cold {
        f.sync_all().unwrap();
        // Eviction can lag while the freshly written pages are still being handed
        // around the kernel's per-CPU lists: ask again until they are gone.
        let mut probe = [0u8; 4096];
        let at = content.len() as u64 * 2 / 3;
        let evicted = (0..100).any(|_| {
            rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
            let gone = read_cached(&f, &mut probe, at).unwrap().is_none();
            if !gone {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            gone
        });
        assert!(
            evicted,
            "the file stays cached: the cold path would not run"
        );
    }
    f
}

/// Writes `head`, then two bodies of placeholders as hyper would, pipelined: bytes
/// `skip..` of `file` (`len` bytes long), then all of it. Real bytes before a placeholder
/// must go out alone, as hyper's `writev` would see them.
#[cfg(test)]
pub(crate) async fn write_two_bodies<S: AsyncWrite + Unpin>(
    s: &mut S,
    conn: &ZeroCopy,
    head: &[u8],
    file: std::fs::File,
    len: u64,
    skip: u64,
) {
    let mut first = std::pin::pin!(conn.body(file.try_clone().unwrap(), skip, len - skip));
    let mut second = std::pin::pin!(conn.body(file, 0, len));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut frames = Vec::new();
    for b in [&mut first, &mut second] {
        while let Poll::Ready(Some(Ok(frame))) = http_body::Body::poll_frame(b.as_mut(), &mut cx) {
            frames.push(frame.into_data().unwrap());
        }
    }
    let n = futures_util::future::poll_fn(|cx| {
        Pin::new(&mut *s).poll_write_vectored(cx, &[IoSlice::new(head), IoSlice::new(&frames[0])])
    })
    .await
    .unwrap();
    assert_eq!(n, head.len());
    for frame in &frames {
        let mut sent = 0;
        while sent < frame.len() {
            let rest = &frame[sent..];
            let n = futures_util::future::poll_fn(|cx| {
                Pin::new(&mut *s).poll_write_vectored(cx, &[IoSlice::new(b""), IoSlice::new(rest)])
            })
            .await
            .unwrap();
            assert!(n > 0);
            sent += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn placeholders_are_recognised_by_address_only() {
        let p = placeholder();
        assert!(is_placeholder(&p[..10]));
        assert!(is_placeholder(&p[FRAME - 1..]));
        assert!(!is_placeholder(&p[..0]));
        let zeros = vec![0u8; 10];
        assert!(!is_placeholder(&zeros));
    }

    #[tokio::test]
    async fn placeholder_bytes_become_file_bytes_and_real_bytes_pass_through() {
        // Copy with a spent budget sends by sendfile; with one frame of budget, by copy.
        for (transfer, budget) in [
            (Transfer::Sendfile, COPY_BUDGET),
            (Transfer::Copy, COPY_BUDGET),
            (Transfer::Copy, COPY_BUF),
            (Transfer::Copy, 0),
        ] {
            for slow_reader in [false, true] {
                for cold in [false, true] {
                    placeholders_become_file_bytes(
                        transfer,
                        &CopyBudget::new(budget),
                        slow_reader,
                        cold,
                    )
                    .await;
                }
            }
        }
    }

    fn budget_left(b: &CopyBudget) -> usize {
        b.0.load(std::sync::atomic::Ordering::Acquire)
    }

    /// With `slow_reader`, the socket buffer fills up and writes are partial, so the copy
    /// path has to carry read-but-unsent bytes from one call to the next. With `cold`, the
    /// file is evicted from the page cache first, so the copy path reads it on the blocking
    /// pool.
    async fn placeholders_become_file_bytes(
        transfer: Transfer,
        budget: &CopyBudget,
        slow_reader: bool,
        cold: bool,
    ) {
        let before = budget_left(budget);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 50_000];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break got;
                }
                got.extend_from_slice(&buf[..n]);
                if slow_reader {
                    tokio::time::sleep(std::time::Duration::from_micros(200)).await;
                }
            }
        });
        let content: Vec<u8> = (0..3 * FRAME + 123).map(|i| (i % 251) as u8).collect();
        let f = file_of(&content, cold);
        let conn = ZeroCopy::default();
        let mut s = SendfileStream::new(
            TcpStream::connect(addr).await.unwrap(),
            conn.clone(),
            transfer,
            budget,
        );
        write_two_bodies(&mut s, &conn, b"HEAD", f, content.len() as u64, 5).await;
        if let Some(st) = &s.staged {
            assert!(
                matches!(st.body, CopyBody::Idle),
                "the copy buffer or the sendfile fallback outlived its bodies"
            );
        }
        assert_eq!(budget_left(budget), before, "budget not given back");
        s.write_all(b"TAIL").await.unwrap();
        s.shutdown().await.unwrap();
        drop(s);
        let got = reader.await.unwrap();
        let mut want = b"HEAD".to_vec();
        want.extend_from_slice(&content[5..]);
        want.extend_from_slice(&content);
        want.extend_from_slice(b"TAIL");
        assert_eq!(got.len(), want.len(), "{transfer:?}");
        assert!(got == want, "{transfer:?}: bytes differ");
        assert!(conn.queue().is_empty());
    }

    /// A fast reader never fills the socket, so only the fair share makes a long body
    /// give the worker back: at most [`FAIR_SHARE`] bytes (plus the frame under way) go
    /// out between two yields, and every byte still arrives.
    #[tokio::test]
    async fn a_long_body_yields_after_each_fair_share() {
        for transfer in [Transfer::Sendfile, Transfer::Copy] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let reader = std::thread::spawn(move || {
                let (mut s, _) = listener.accept().unwrap();
                let mut got = Vec::new();
                std::io::Read::read_to_end(&mut s, &mut got).unwrap();
                got
            });
            let content: Vec<u8> = (0..3 * FAIR_SHARE + 7).map(|i| (i % 253) as u8).collect();
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(&content).unwrap();
            let conn = ZeroCopy::default();
            let mut s = SendfileStream::new(
                TcpStream::connect(addr).await.unwrap(),
                conn.clone(),
                transfer,
                &CopyBudget::new(COPY_BUDGET),
            );
            let mut body = std::pin::pin!(conn.body(f, 0, content.len() as u64));
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let mut yields = 0;
            while let Poll::Ready(Some(Ok(frame))) =
                http_body::Body::poll_frame(body.as_mut(), &mut cx)
            {
                let frame = frame.into_data().unwrap();
                let mut sent = 0;
                while sent < frame.len() {
                    let rest = &frame[sent..];
                    let before = s.fair.since_yield;
                    let n = futures_util::future::poll_fn(|cx| {
                        Pin::new(&mut s).poll_write_vectored(cx, &[IoSlice::new(rest)])
                    })
                    .await
                    .unwrap();
                    if s.fair.since_yield < before {
                        yields += 1;
                    }
                    assert!(s.fair.since_yield <= FAIR_SHARE + FRAME, "{transfer:?}");
                    sent += n;
                }
            }
            assert!(yields >= 2, "{transfer:?}: {yields} yields");
            s.shutdown().await.unwrap();
            drop(s);
            assert!(
                reader.join().unwrap() == content,
                "{transfer:?}: bytes differ"
            );
        }
    }

    #[test]
    fn the_copy_budget_counts_buffers_until_dropped() {
        let budget = CopyBudget::new(2 * COPY_BUF);
        let a = budget.take().unwrap();
        let b = budget.take().unwrap();
        assert!(budget.take().is_none());
        assert_eq!(a.bytes.len(), COPY_BUF);
        drop(a);
        let c = budget.take().unwrap();
        assert!(budget.take().is_none());
        drop((b, c));
        assert_eq!(budget_left(&budget), 2 * COPY_BUF);
    }

    /// Every frame of a body, or its error.
    async fn frames<B: http_body::Body<Data = Bytes> + Unpin>(
        mut body: B,
    ) -> Result<Vec<Bytes>, B::Error> {
        let mut out = Vec::new();
        while let Some(f) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            if let Ok(d) = f?.into_data() {
                out.push(d);
            }
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_paged_body_sends_the_range_in_frames_of_at_most_64_kib() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        let body = PagedBody::new(f, 1000, 200_000);
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(200_000));
        let got = frames(body).await.unwrap();
        assert!(got.iter().all(|b| !b.is_empty() && b.len() <= PAGED_FRAME));
        assert!(got.len() >= 200_000 / PAGED_FRAME);
        assert_eq!(got.concat(), &data[1000..201_000]);
    }

    #[test]
    fn a_sent_frame_goes_back_to_the_pool_and_is_reused() {
        static POOL: FramePool = FramePool::new(1, PAGED_FRAME);
        let mut buf = POOL.take();
        assert_eq!(buf.len(), PAGED_FRAME);
        buf[..3].copy_from_slice(b"abc");
        let addr = buf.as_ptr();
        let frame = Bytes::from_owner(PooledFrame {
            buf,
            len: 3,
            pool: &POOL,
        });
        let clone = frame.slice(1..);
        assert_eq!(&frame[..], b"abc");
        drop(frame);
        assert!(POOL.free().is_empty(), "a clone still holds the frame");
        assert_eq!(&clone[..], b"bc");
        drop(clone);
        let again = POOL.take();
        assert_eq!(again.as_ptr(), addr, "the same buffer, not a new one");
        // The pool keeps at most what it was made for.
        POOL.give_back(again);
        POOL.give_back(vec![0u8; PAGED_FRAME]);
        assert_eq!(POOL.free().len(), 1);
        // Buffers of another length are not pooled.
        POOL.free().clear();
        POOL.give_back(vec![0u8; 10]);
        assert!(POOL.free().is_empty());
    }

    #[tokio::test]
    async fn a_paged_body_of_a_short_file_ends_in_an_error_not_zeros() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[9u8; 1000]).unwrap();
        let err = frames(PagedBody::new(f, 0, 5000)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn an_empty_body_queues_nothing() {
        let conn = ZeroCopy::default();
        let mut body = std::pin::pin!(conn.body(tempfile::tempfile().unwrap(), 0, 0));
        assert!(http_body::Body::is_end_stream(&*body));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(
            http_body::Body::poll_frame(body.as_mut(), &mut cx),
            Poll::Ready(None)
        ));
        assert!(conn.queue().is_empty());
    }

    #[tokio::test]
    async fn a_placeholder_without_a_file_is_an_error_not_zeros() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _accept = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        });
        for transfer in [Transfer::Sendfile, Transfer::Copy] {
            let mut s = SendfileStream::new(
                TcpStream::connect(addr).await.unwrap(),
                ZeroCopy::default(),
                transfer,
                &CopyBudget::new(COPY_BUDGET),
            );
            let err = s.write(&placeholder()[..100]).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        }
    }
}

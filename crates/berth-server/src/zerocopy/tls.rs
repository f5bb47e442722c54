//! TLS 1.3 HTTP/1.1 connections whose records the server seals itself.
//!
//! Over rustls, a blob byte is copied three times in user space and the kernel: from the
//! page cache into a frame ([`super::PagedBody`]), from the frame into rustls' record
//! buffer, and from there into the socket. A [`RecordStream`] takes blob bodies as
//! placeholders (as [`super::SendfileStream`] does) and reads the file straight into the
//! payload slots of its records, one `preadv` for up to [`OUT_RECORDS`] records, then
//! seals them where they lie ([`berth_tls::session::Session`]): the middle copy is gone.
//! Other bytes (heads, small bodies) are copied into records as rustls would.
//!
//! The listener hands a connection here only when its handshake (run by rustls) agreed
//! on TLS 1.3 with AES-GCM and HTTP/1.x; the placeholders' invariants of
//! [`super::ZeroCopy`] hold as on plain TCP. Buffers are held only while bytes are in
//! them: an idle connection keeps none.

use std::future::Future;
use std::io::{self, IoSlice, IoSliceMut};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use berth_tls::record::{record_len, HEADER, MAX_PLAINTEXT, MAX_RECORD, OVERHEAD};
use berth_tls::session::{Opened, Session, SessionError, CONTROL_RECORD};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{
    is_placeholder, no_queued_file, read_cached_into, short_file, FairShare, FramePool, ZeroCopy,
};

/// Records sealed into one output buffer (and sent by one `write`): 64 KiB of plaintext,
/// like [`super::PAGED_FRAME`].
pub const OUT_RECORDS: usize = 4;

/// Room for one full record.
const RECORD: usize = MAX_PLAINTEXT + OVERHEAD;

/// An output buffer: a key update owed, then [`OUT_RECORDS`] full records.
const OUT_BUF: usize = CONTROL_RECORD + OUT_RECORDS * RECORD;

/// Bytes read from the socket at most at once; holds at least one whole record.
const IN_BUF: usize = 64 << 10;
const _: () = assert!(IN_BUF >= MAX_RECORD);

/// Output buffers kept for reuse (4 MiB); more in flight are allocated and freed.
static OUT_BUFS: FramePool = FramePool::new(64, OUT_BUF);
/// Input buffers kept for reuse.
static IN_BUFS: FramePool = FramePool::new(64, IN_BUF);

/// A TLS 1.3 connection after its handshake, sealing and opening its own records.
pub struct RecordStream {
    tcp: TcpStream,
    conn: ZeroCopy,
    session: Session,
    /// Sealed records not yet sent: `out[sent..filled]`; no buffer when empty.
    out: Option<Vec<u8>>,
    sent: usize,
    filled: usize,
    /// A buffer away on the blocking pool, being filled from the disk.
    reading: Option<DiskRead>,
    /// Bytes received: opened plaintext not yet read at `plain`, then records from
    /// `next` to `received`; no buffer when all is consumed.
    input: Option<Vec<u8>>,
    plain: std::ops::Range<usize>,
    next: usize,
    received: usize,
    /// The peer sent `close_notify`.
    read_closed: bool,
    /// We sent `close_notify`.
    write_closed: bool,
    fair: FairShare,
}

/// A read of placeholder bytes from the disk on the blocking pool: it gives back the
/// buffer and what the read returned; its records start at `at`.
struct DiskRead {
    task: tokio::task::JoinHandle<(Vec<u8>, io::Result<usize>)>,
    at: usize,
}

impl RecordStream {
    /// The connection after its handshake. What the client sent with the end of its
    /// handshake is read first: the application data rustls already opened (`session`'s
    /// early data), then `records`, the bytes the handshake left unprocessed.
    pub fn new(tcp: TcpStream, conn: ZeroCopy, mut session: Session, records: Vec<u8>) -> Self {
        let early = session.take_early_data();
        let mut stream = RecordStream {
            tcp,
            conn,
            session,
            out: None,
            sent: 0,
            filled: 0,
            reading: None,
            input: None,
            plain: 0..0,
            next: 0,
            received: 0,
            read_closed: false,
            write_closed: false,
            fair: FairShare::default(),
        };
        let carried = early.len() + records.len();
        if carried > 0 {
            let mut buf = IN_BUFS.take();
            if buf.len() < carried {
                buf.resize(carried, 0);
            }
            buf[..early.len()].copy_from_slice(&early);
            buf[early.len()..carried].copy_from_slice(&records);
            stream.plain = 0..early.len();
            stream.next = early.len();
            stream.received = carried;
            stream.input = Some(buf);
        }
        stream
    }

    // ---- reading ----

    /// Opens the next whole record in the input, if there is one.
    fn open_next(&mut self) -> Result<bool, SessionError> {
        let Some(input) = self.input.as_mut() else {
            return Ok(false);
        };
        let rest = &input[self.next..self.received];
        let Some(len) = record_len(rest)? else {
            return Ok(false);
        };
        if rest.len() < len {
            return Ok(false);
        }
        let at = self.next;
        self.next += len;
        match self.session.open(&mut input[at..at + len])? {
            Opened::Data(r) => self.plain = at + r.start..at + r.end,
            Opened::Control => {}
            Opened::Closed => self.read_closed = true,
        }
        Ok(true)
    }

    /// Makes room for more input: moves an unfinished record to the front, or gives the
    /// buffer back when nothing is left in it.
    fn compact(&mut self) {
        if self.next == self.received {
            if let Some(buf) = self.input.take() {
                IN_BUFS.give_back(buf);
            }
            self.next = 0;
            self.received = 0;
        } else if let Some(buf) = self.input.as_mut() {
            buf.copy_within(self.next..self.received, 0);
            self.received -= self.next;
            self.next = 0;
        }
        self.plain = 0..0;
    }

    /// Reports a failure to the peer with its alert, when that cannot cut into a record
    /// being sent, and turns it into an I/O error.
    fn fail(&mut self, e: SessionError) -> io::Error {
        if let (Some(alert), true) = (e.alert(), self.sent == self.filled) {
            let mut rec = [0u8; CONTROL_RECORD];
            if let Ok(n) = self.session.seal_alert(&mut rec, alert) {
                let _ = self.tcp.try_write(&rec[..n]);
            }
        }
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    // ---- writing ----

    /// Sends the sealed records; ready when all are sent (the buffer goes back).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.filled {
            let Some(out) = self.out.as_ref() else {
                break;
            };
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &out[self.sent..self.filled]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        if let Some(out) = self.out.take() {
            OUT_BUFS.give_back(out);
        }
        self.sent = 0;
        self.filled = 0;
        Poll::Ready(Ok(()))
    }

    /// Starts writing what was staged, without waiting.
    fn push(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.poll_drain(cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Ok(()),
        }
    }

    /// Seals real bytes from `bufs` (up to the first placeholder) into records.
    fn write_copied(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let (mut out, mut at) = start_out(&mut self.session)?;
        let mut taken = 0;
        let mut slices = bufs
            .iter()
            .map(|b| &b[..])
            .take_while(|b| !is_placeholder(b));
        let mut current: &[u8] = &[];
        for _ in 0..OUT_RECORDS {
            let mut len = 0;
            while len < MAX_PLAINTEXT {
                if current.is_empty() {
                    match slices.next() {
                        Some(s) => current = s,
                        None => break,
                    }
                    continue;
                }
                let k = current.len().min(MAX_PLAINTEXT - len);
                let slot = at + HEADER + len;
                out[slot..slot + k].copy_from_slice(&current[..k]);
                current = &current[k..];
                len += k;
            }
            if len == 0 {
                break;
            }
            at += self
                .session
                .seal(&mut out[at..], len)
                .map_err(io::Error::other)?;
            taken += len;
        }
        self.stage(out, at);
        self.push(cx)?;
        Ok(taken)
    }

    fn stage(&mut self, out: Vec<u8>, filled: usize) {
        self.out = Some(out);
        self.sent = 0;
        self.filled = filled;
    }

    /// Reads up to `want` placeholder bytes of the file at the front of the queue into
    /// records and seals them.
    fn poll_placeholder(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if let Some(read) = self.reading.as_mut() {
            let (out, n) = ready!(Pin::new(&mut read.task).poll(cx)).map_err(io::Error::other)?;
            let at = read.at;
            self.reading = None;
            let n = self.advance_queue(n?)?;
            return Poll::Ready(self.seal_read(cx, out, at, n));
        }
        ready!(self.fair.poll_turn(cx));
        let mut queue = self.conn.queue();
        let Some(front) = queue.front_mut() else {
            return Poll::Ready(Err(no_queued_file()));
        };
        let total = (want as u64)
            .min(front.remaining)
            .min((OUT_RECORDS * MAX_PLAINTEXT) as u64) as usize;
        // After the queue is known to hold a file: a key update sealed into the buffer
        // must be sent.
        let (mut out, at) = start_out(&mut self.session)?;
        let cached = read_cached_into(
            &front.file,
            &mut payload_slots(&mut out, at, total),
            front.offset,
        )?;
        let Some(n) = cached else {
            // Not in the page cache: read on the blocking pool, then come back.
            let file = front.file.try_clone()?;
            let offset = front.offset;
            drop(queue);
            let task = tokio::task::spawn_blocking(move || {
                let mut out = out;
                let n = rustix::io::preadv(&file, &mut payload_slots(&mut out, at, total), offset)
                    .map_err(io::Error::from);
                (out, n)
            });
            self.reading = Some(DiskRead { task, at });
            return self.poll_placeholder(cx, want);
        };
        drop(queue);
        let n = self.advance_queue(n)?;
        Poll::Ready(self.seal_read(cx, out, at, n))
    }

    /// Moves the front file of the queue on by `n` bytes just read.
    fn advance_queue(&mut self, n: usize) -> io::Result<usize> {
        if n == 0 {
            return Err(short_file());
        }
        let mut queue = self.conn.queue();
        let Some(front) = queue.front_mut() else {
            return Err(io::Error::other("zero-copy file left the queue"));
        };
        front.offset += n as u64;
        front.remaining -= n as u64;
        if front.remaining == 0 {
            queue.pop_front();
        }
        Ok(n)
    }

    /// Seals the `n` bytes read into the payload slots from `at` (full records, then the
    /// rest), and stages them.
    fn seal_read(
        &mut self,
        cx: &mut Context<'_>,
        mut out: Vec<u8>,
        mut at: usize,
        n: usize,
    ) -> io::Result<usize> {
        let mut left = n;
        while left > 0 {
            let len = left.min(MAX_PLAINTEXT);
            at += self
                .session
                .seal(&mut out[at..], len)
                .map_err(io::Error::other)?;
            left -= len;
        }
        self.stage(out, at);
        self.fair.sent(n);
        self.push(cx)?;
        Ok(n)
    }
}

/// An empty output buffer with the key update `session` owes (if any) sealed at its
/// front; where the next record goes.
fn start_out(session: &mut Session) -> io::Result<(Vec<u8>, usize)> {
    let mut out = OUT_BUFS.take();
    let at = session.seal_owed(&mut out).map_err(io::Error::other)?;
    Ok((out, at))
}

/// The payload slots for `total` bytes (at most [`OUT_RECORDS`] records' worth) in
/// consecutive records from `at` in `out`: full records, then the rest.
fn payload_slots(out: &mut [u8], at: usize, total: usize) -> Vec<IoSliceMut<'_>> {
    out[at..]
        .chunks_mut(RECORD)
        .zip((0..total).step_by(MAX_PLAINTEXT))
        .map(|(record, start)| {
            let len = (total - start).min(MAX_PLAINTEXT);
            IoSliceMut::new(&mut record[HEADER..HEADER + len])
        })
        .collect()
}

impl AsyncRead for RecordStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.plain.is_empty() {
                if let Some(input) = this.input.as_ref() {
                    let k = this.plain.len().min(buf.remaining());
                    buf.put_slice(&input[this.plain.start..this.plain.start + k]);
                    this.plain.start += k;
                    return Poll::Ready(Ok(()));
                }
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            match this.open_next() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => return Poll::Ready(Err(this.fail(e))),
            }
            this.compact();
            // Wait for bytes before taking a buffer: an idle connection holds none.
            ready!(this.tcp.poll_read_ready(cx))?;
            let input = this.input.get_or_insert_with(|| IN_BUFS.take());
            match this.tcp.try_read(&mut input[this.received..]) {
                Ok(0) => {
                    // The peer closed without close_notify: the end of what it sent
                    // (HTTP/1.1 frames its messages), unless a record was cut short.
                    if this.received > this.next {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                    this.compact();
                    return Poll::Ready(Ok(()));
                }
                Ok(n) => this.received += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for RecordStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let first = bufs
            .iter()
            .position(|b| !b.is_empty())
            .unwrap_or(bufs.len());
        let bufs = &bufs[first..];
        if bufs.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // A read from the disk in flight holds the buffer: finish it first.
        if this.reading.is_none() {
            ready!(this.poll_drain(cx))?;
        }
        if is_placeholder(&bufs[0]) || this.reading.is_some() {
            this.poll_placeholder(cx, bufs[0].len())
        } else {
            Poll::Ready(this.write_copied(cx, bufs))
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if !this.write_closed {
            this.write_closed = true;
            let mut out = OUT_BUFS.take();
            let n = this
                .session
                .seal_close_notify(&mut out)
                .map_err(io::Error::other)?;
            this.stage(out, n);
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

impl Drop for RecordStream {
    fn drop(&mut self) {
        if let Some(b) = self.out.take() {
            OUT_BUFS.give_back(b);
        }
        if let Some(b) = self.input.take() {
            IN_BUFS.give_back(b);
        }
    }
}

//! One structured log line per request (method, path, status, bytes, duration), and
//! the request metrics.
//!
//! Bytes are the body bytes actually received and sent, counted as the bodies stream
//! through [`CountedBody`], never read from `Content-Length`: most responses (JSON,
//! errors, streamed blobs) and chunked uploads carry none, and a client that hangs up
//! mid-body did not receive what the header promised. The line is therefore written, and
//! the request counted, when the response body ends or is dropped, not when its head is
//! ready; its duration runs until then too. A zero-copy blob body yields placeholder
//! frames of the lengths the connection sends with `sendfile`, so they count as sent.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use bytes::{Buf, Bytes};
use http_body::{Frame, SizeHint};

use crate::error::ErrorLabel;
use crate::metrics::RouteLabel;
use crate::AppState;

/// Bytes seen by a [`CountedBody`], shared with whoever reads them afterwards.
#[derive(Debug, Default, Clone)]
pub struct ByteCount(Arc<AtomicU64>);

impl ByteCount {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

/// A body that counts the data bytes passing through it (into `shared` too, when given,
/// for whoever reads them later), and runs `done` with the count once, when the body
/// ends or is dropped (whichever comes first).
pub struct CountedBody<F: FnOnce(u64) + Send + 'static> {
    inner: Body,
    seen: u64,
    shared: Option<ByteCount>,
    done: Option<F>,
}

impl<F: FnOnce(u64) + Send + 'static> CountedBody<F> {
    pub fn new(inner: Body, shared: Option<ByteCount>, done: Option<F>) -> CountedBody<F> {
        CountedBody {
            inner,
            seen: 0,
            shared,
            done,
        }
    }

    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            done(self.seen);
        }
    }
}

impl<F: FnOnce(u64) + Send + 'static> Drop for CountedBody<F> {
    fn drop(&mut self) {
        self.finish();
    }
}

// The callback is only ever moved out and called, never borrowed across a poll, so the
// body is `Unpin` whatever the callback is.
impl<F: FnOnce(u64) + Send + 'static> Unpin for CountedBody<F> {}

impl<F: FnOnce(u64) + Send + 'static> http_body::Body for CountedBody<F> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.remaining() as u64;
                    this.seen += n;
                    if let Some(shared) = &this.shared {
                        shared.add(n);
                    }
                }
                // Finish before the last bytes are written, so that a client that reads
                // the response and then asks for the metrics sees this request in them.
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(_) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the access log line and the request metrics need once the body is done.
struct Finished {
    state: AppState,
    method: Method,
    path: String,
    status: u16,
    route: &'static str,
    code: Option<&'static str>,
    start: Instant,
    /// `None` for a request without a body.
    bytes_in: Option<ByteCount>,
}

impl Finished {
    fn record(self, bytes_out: u64) {
        let elapsed = self.start.elapsed();
        let bytes_in = self.bytes_in.as_ref().map_or(0, ByteCount::get);
        let method = self.method;
        self.state.metrics.request(
            self.route,
            method.as_str(),
            self.status,
            elapsed,
            bytes_in,
            bytes_out,
        );
        if let Some(code) = self.code {
            self.state.metrics.error(code);
        }
        tracing::info!(
            target: "berth::access",
            %method,
            path = %self.path,
            status = self.status,
            bytes_in,
            bytes_out,
            micros = elapsed.as_micros() as u64,
            "request"
        );
    }
}

fn route_of(resp: &Response, path: &str) -> &'static str {
    resp.extensions()
        .get::<RouteLabel>()
        .map(|r| r.0)
        .unwrap_or(match path {
            "/v2" | "/v2/" => "base",
            "/token" => "token",
            "/metrics" => "metrics",
            _ => "other",
        })
}

/// The one middleware: resolves the client address, then logs and counts every request
/// once its response body is done, and adds the API version header to every response.
pub async fn log_request(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    crate::routes::resolve_client(&state, &mut req);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // A request without a body (most of them) is not wrapped: nothing to count.
    let (req, bytes_in) = if http_body::Body::is_end_stream(req.body()) {
        (req, None)
    } else {
        let bytes_in = ByteCount::default();
        let (parts, body) = req.into_parts();
        let counted = CountedBody::<fn(u64)>::new(body, Some(bytes_in.clone()), None);
        (
            Request::from_parts(parts, Body::new(counted)),
            Some(bytes_in),
        )
    };
    let mut resp = next.run(req).await;
    crate::routes::add_api_version(&mut resp);
    let finished = Finished {
        status: resp.status().as_u16(),
        route: route_of(&resp, &path),
        code: resp.extensions().get::<ErrorLabel>().map(|c| c.0),
        state,
        method,
        path,
        start,
        bytes_in,
    };
    // An empty body (HEAD, 201, 202...) is done already: nothing to wrap.
    if http_body::Body::is_end_stream(resp.body()) {
        finished.record(0);
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let counted = CountedBody::new(body, None, Some(move |n: u64| finished.record(n)));
    Response::from_parts(parts, Body::new(counted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::sync::Mutex;

    #[tokio::test]
    async fn counts_streamed_bytes_and_finishes_once() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::from_static(b"streamed ")),
            Ok(Bytes::from_static(b"world")),
        ];
        let inner = Body::from_stream(futures_util::stream::iter(chunks));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let count = ByteCount::default();
        let body = CountedBody::new(
            inner,
            Some(count.clone()),
            Some(move |n: u64| s.lock().unwrap().push(n)),
        );
        let mut stream = Body::new(body).into_data_stream();
        let mut read = 0;
        while let Some(chunk) = stream.next().await {
            read += chunk.unwrap().len();
        }
        drop(stream);
        assert_eq!(read, 20);
        assert_eq!(count.get(), 20);
        assert_eq!(*seen.lock().unwrap(), vec![20]);
    }

    #[tokio::test]
    async fn a_body_dropped_midway_reports_what_was_sent() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"0123456789")),
            Ok(Bytes::from_static(b"rest")),
        ];
        let inner = Body::from_stream(futures_util::stream::iter(chunks));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let body = CountedBody::new(inner, None, Some(move |n: u64| s.lock().unwrap().push(n)));
        let mut stream = Body::new(body).into_data_stream();
        assert_eq!(stream.next().await.unwrap().unwrap().len(), 10);
        drop(stream);
        assert_eq!(*seen.lock().unwrap(), vec![10]);
    }
}

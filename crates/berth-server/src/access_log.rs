//! One structured log line per request: method, path, status, bytes, duration.

use std::time::Instant;

use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

/// Middleware that logs every request once it has a response.
pub async fn log_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let bytes_in = content_length(req.headers());
    let resp = next.run(req).await;
    let bytes_out = content_length(resp.headers());
    tracing::info!(
        target: "berth::access",
        %method,
        %path,
        status = resp.status().as_u16(),
        bytes_in,
        bytes_out,
        micros = start.elapsed().as_micros() as u64,
        "request"
    );
    resp
}

fn content_length(h: &axum::http::HeaderMap) -> u64 {
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

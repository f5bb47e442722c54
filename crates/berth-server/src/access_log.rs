//! One structured log line per request (method, path, status, bytes, duration), and
//! the request metrics.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ErrorLabel;
use crate::metrics::RouteLabel;
use crate::AppState;

/// Middleware that logs and counts every request once it has a response.
pub async fn log_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let bytes_in = content_length(req.headers());
    let resp = next.run(req).await;
    let bytes_out = content_length(resp.headers());
    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    let route = resp
        .extensions()
        .get::<RouteLabel>()
        .map(|r| r.0)
        .unwrap_or(match path.as_str() {
            "/v2" | "/v2/" => "base",
            "/token" => "token",
            "/metrics" => "metrics",
            _ => "other",
        });
    state
        .metrics
        .request(route, method.as_str(), status, elapsed, bytes_in, bytes_out);
    if let Some(code) = resp.extensions().get::<ErrorLabel>() {
        state.metrics.error(code.0);
    }
    tracing::info!(
        target: "berth::access",
        %method,
        %path,
        status,
        bytes_in,
        bytes_out,
        micros = elapsed.as_micros() as u64,
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

//! Probes for load balancers and Kubernetes: `GET /healthz` (the process serves HTTP)
//! and `GET /readyz` (its database answers, so requests can succeed). Neither needs an
//! account nor says more than a short reason: a probe must work before any login, and
//! must not tell strangers how the registry is built.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// How long `/readyz` waits for the database: probes usually time out after a second.
const READY_TIMEOUT: Duration = Duration::from_millis(800);

/// `GET /healthz`: 200 `ok` whenever the process serves requests at all.
pub(super) async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// `GET /readyz`: 200 `ready` when the metadata database answers within
/// [`READY_TIMEOUT`], else 503 with the reason in plain text.
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    match state.registry.ready(READY_TIMEOUT).await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

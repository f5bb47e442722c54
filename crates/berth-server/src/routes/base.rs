//! `GET /v2/`: the API version check. With accounts, it also tells a client without
//! credentials where to get a token (this is how `docker login` probes a registry).

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::{client_ip, error_response};
use crate::auth::Principal;
use crate::AppState;

pub async fn version_check(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let client = client_ip(&parts.extensions);
    let host = parts.headers.get(header::HOST);
    match state.auth.authenticate(&parts.headers, client).await {
        Ok(Principal::Anonymous { .. }) => error_response(
            &state,
            state
                .auth
                .challenge(None, None, "authentication required")
                .into(),
            host,
            false,
        ),
        Ok(_) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            "{}",
        )
            .into_response(),
        Err(e) => error_response(&state, e.into(), host, false),
    }
}

//! `GET /v2/`: the API version check.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

pub async fn version_check() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        "{}",
    )
        .into_response()
}

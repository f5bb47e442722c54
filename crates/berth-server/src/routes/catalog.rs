//! `/v2/_catalog`: repository names in lexical order, paginated like tags.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{next_link, page, set, Req};
use crate::error::ApiResult;
use crate::registry::AppState;

/// Page size when the client does not ask for one (Distribution's default too).
const DEFAULT_PAGE: usize = 1000;

pub async fn list(state: &AppState, req: Req) -> ApiResult {
    let mut p = page(&req.query, Some(DEFAULT_PAGE))?;
    let want = p.n.unwrap_or(DEFAULT_PAGE);
    p.n = Some(want.saturating_add(1));
    let mut repos = state.meta.repositories(&p).await?;
    let more = repos.len() > want;
    repos.truncate(want);
    let body = serde_json::json!({ "repositories": repos }).to_string();
    let mut r: Response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if let (true, Some(last)) = (more, repos.last()) {
        set(&mut r, "link", next_link("/v2/_catalog", last, want));
    }
    Ok(r)
}

//! `/v2/<name>/tags/list`: tags in lexical order, paginated with `n`, `last` and `Link`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_oci::RepoName;

use super::{next_link, page, set, Req};
use crate::error::ApiResult;
use crate::AppState;

pub async fn list(state: &AppState, name: &RepoName, req: Req) -> ApiResult {
    let mut p = page(&req.query, None)?;
    let want = p.n;
    // Ask for one more than requested to know whether a next page exists.
    p.n = want.map(|n| n.saturating_add(1));
    let mut tags = state.registry.tags(name, &p).await?;
    let more = want.is_some_and(|n| tags.len() > n);
    if let Some(n) = want {
        tags.truncate(n);
    }
    let body = serde_json::json!({ "name": name.as_str(), "tags": tags }).to_string();
    let mut r: Response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if let (true, Some(n), Some(last)) = (more, want, tags.last()) {
        set(
            &mut r,
            "link",
            next_link(&format!("/v2/{name}/tags/list"), last, n),
        );
    }
    Ok(r)
}

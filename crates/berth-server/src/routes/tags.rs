//! `/v2/<name>/tags/list`: tags in lexical order, paginated with `n`, `last` and `Link`.
//!
//! Tags that only attach artifacts on registries without the referrers API (cosign v2's
//! `sha256-<hex>.sig`/`.att`/`.sbom`, the referrers tag schema's `sha256-<hex>`) are left
//! out unless the query says `all=true`; the next page's `Link` keeps the choice.
//!
//! With `all=true`, the first page (no `last`) also lists the tags the publish gate holds
//! until their manifest is signed, beside `tags`, as
//! `"pending": [{"tag", "digest", "since", "waiting": "signature"}]` (`since` in RFC 3339):
//! they are not tags yet (a pull by them is `MANIFEST_UNKNOWN`), so they are not in
//! `tags`, and clients that do not know the field ignore it.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_meta::TagListing;
use berth_oci::RepoName;

use super::{next_link, page, set, Query, Req};
use crate::error::ApiResult;
use crate::service::RegistryError;
use crate::AppState;

/// Reads the `all` parameter: `true`/`1` lists hidden tags too.
fn listing(query: &Query) -> ApiResult<TagListing> {
    match query.get("all") {
        None | Some("false" | "0" | "") => Ok(TagListing::Visible),
        Some("true" | "1") => Ok(TagListing::All),
        Some(v) => Err(RegistryError::ParameterInvalid(format!(
            "all={v:?} is neither true nor false"
        ))
        .into()),
    }
}

pub async fn list(state: &AppState, name: &RepoName, req: Req) -> ApiResult {
    let mut p = page(&req.query, None)?;
    let listing = listing(&req.query)?;
    let want = p.n;
    // Ask for one more than requested to know whether a next page exists.
    p.n = want.map(|n| n.saturating_add(1));
    let mut tags = state.registry.tag_list(name, &p, listing).await?;
    let more = want.is_some_and(|n| tags.len() > n);
    if let Some(n) = want {
        tags.truncate(n);
    }
    let mut body = serde_json::json!({ "name": name.as_str(), "tags": tags });
    if listing == TagListing::All && p.last.is_none() {
        let pending: Vec<serde_json::Value> = state
            .registry
            .pending_tags(name)
            .await?
            .into_iter()
            .map(|t| {
                serde_json::json!({
                    "tag": t.tag,
                    "digest": t.digest.to_string(),
                    "since": berth_oci::time::rfc3339(t.since),
                    "waiting": "signature",
                })
            })
            .collect();
        body["pending"] = pending.into();
    }
    let body = body.to_string();
    let mut r: Response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if let (true, Some(n), Some(last)) = (more, want, tags.last()) {
        let mut link = next_link(&format!("/v2/{name}/tags/list"), last, n);
        if listing == TagListing::All {
            // `next_link` ends with `>; rel="next"`; the parameter goes before the `>`.
            if let Some(at) = link.find(">;") {
                link.insert_str(at, "&all=true");
            }
        }
        set(&mut r, "link", link);
    }
    Ok(r)
}

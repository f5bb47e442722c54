//! `/v2/_catalog`: repository names in lexical order, paginated like tags.
//!
//! The catalog lists only what the caller may pull. A bearer token must carry the
//! `registry:catalog:*` scope (as Distribution requires), and then lists what both the
//! token and its account allow.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use berth_auth::Action;

use super::{next_link, page, set, Req};
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::AppState;

/// Page size when the client does not ask for one (Distribution's default too).
const DEFAULT_PAGE: usize = 1000;

/// Lists only what the caller may pull: every page is filled from as many store pages
/// as it takes, so filtering never shortens a page that has a successor.
pub async fn list(state: &AppState, req: Req) -> ApiResult {
    if let Principal::Token { claims, .. } = &req.principal {
        if !claims.allows_catalog() {
            return Err(state
                .auth
                .challenge(
                    Some("registry:catalog:*"),
                    Some("insufficient_scope"),
                    "the token does not allow listing the catalog",
                )
                .into());
        }
    }
    // A catalog token lists what its account may pull now; everyone else what they may.
    let visible = |repo: &str| match &req.principal {
        Principal::Token { grants, public, .. } => {
            public.iter().any(|p| p.matches(repo))
                || berth_auth::grant::actions_on(grants.iter(), repo).allows(Action::Pull)
        }
        p => p.may(repo, Action::Pull),
    };
    let p = page(&req.query, Some(DEFAULT_PAGE))?;
    let want = p.n.unwrap_or(DEFAULT_PAGE);
    let mut repos: Vec<String> = Vec::new();
    let mut last = p.last.clone();
    let batch = want.saturating_add(1).max(100);
    loop {
        let chunk = state
            .registry
            .repositories(&berth_meta::Page {
                last: last.clone(),
                n: Some(batch),
            })
            .await?;
        let exhausted = chunk.len() < batch;
        last = chunk.last().cloned();
        repos.extend(chunk.into_iter().filter(|r| visible(r)));
        if repos.len() > want || exhausted {
            break;
        }
    }
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

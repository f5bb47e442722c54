//! The stale-base API (JSON): the images whose base tag has moved since they were built,
//! with the base's old and new digests, how long ago it moved and the tags to rebuild.
//! Only images the caller may pull, on bases the caller may pull (the base's digests
//! are news about the base's repository). A bearer token lists what its account may
//! pull when it carries the `registry:catalog:*` scope, as the catalog does.
//!
//! - `GET /api/v1/stale[?repo=PATTERN]`, `PATTERN` a repository name with `*` for any
//!   characters (`team/*`).

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use berth_auth::{Action, Pattern};

use super::{client_ip, error_response, Query};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::service::RegistryError;
use crate::AppState;

pub async fn list(State(state): State<AppState>, req: Request) -> Response {
    let (req, _) = req.into_parts();
    let result: ApiResult<Response> = async {
        let query = Query::parse(req.uri.query());
        let pattern = query
            .get("repo")
            .map(Pattern::parse)
            .transpose()
            .map_err(|e| RegistryError::ParameterInvalid(e.to_string()))?;
        let p = state
            .auth
            .authenticate(&req.headers, client_ip(&req.extensions))
            .await?;
        // As the catalog: a token with the `registry:catalog:*` scope (what `berth
        // stale` asks for) sees what its account may pull now; everyone else what they may.
        let may_pull = |repo: &str| match &p {
            Principal::Token {
                claims,
                grants,
                public,
            } if claims.allows_catalog() => {
                public.iter().any(|pat| pat.matches(repo))
                    || berth_auth::grant::actions_on(grants.iter(), repo).allows(Action::Pull)
            }
            p => p.may(repo, Action::Pull),
        };
        let stale = state
            .registry
            .stale_images(|repo, base| {
                pattern.as_ref().is_none_or(|pat| pat.matches(repo))
                    && may_pull(repo)
                    && may_pull(base)
            })
            .await?;
        let now = berth_oci::time::now();
        let images: Vec<serde_json::Value> = stale
            .iter()
            .map(|s| {
                serde_json::json!({
                    "repository": s.repo,
                    "digest": s.digest.to_string(),
                    "tags": s.tags,
                    "base": {
                        "name": format!("{}:{}", s.base.repo, s.base.tag),
                        "repository": s.base.repo,
                        "tag": s.base.tag,
                        "declared": s.base.declared,
                        "built_on": s.base.digest.to_string(),
                        "now": s.base_now.to_string(),
                        "moved_at": berth_oci::time::rfc3339(s.base_moved_at),
                        "moved_seconds_ago": now.saturating_sub(s.base_moved_at).max(0),
                    },
                })
            })
            .collect();
        Ok((
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "images": images }).to_string(),
        )
            .into_response())
    }
    .await;
    result.unwrap_or_else(|e: ApiError| {
        error_response(&state, e, req.headers.get(header::HOST), false)
    })
}

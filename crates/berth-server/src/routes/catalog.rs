//! `/v2/_catalog`: repository names in lexical order, paginated like tags.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use berth_auth::{Action, Grant, Pattern};

use super::{next_link, page, set, Req};
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::registry::AppState;

/// What the caller of the catalog may see.
enum Visibility {
    All,
    Some {
        grants: Vec<Grant>,
        public: std::sync::Arc<Vec<Pattern>>,
    },
}

impl Visibility {
    async fn of(state: &AppState, principal: &Principal) -> ApiResult<Visibility> {
        Ok(match principal {
            Principal::Open => Visibility::All,
            Principal::Anonymous { public } => Visibility::Some {
                grants: Vec::new(),
                public: public.clone(),
            },
            Principal::Account { grants, public, .. } => Visibility::Some {
                grants: grants.as_ref().clone(),
                public: public.clone(),
            },
            // A token names its account; the catalog shows what that account may pull.
            Principal::Token { claims } => Visibility::Some {
                grants: state.auth.grants_of(&claims.sub).await?,
                public: state.auth.public().await?,
            },
        })
    }

    fn may_pull(&self, repo: &str) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Some { grants, public } => {
                public.iter().any(|p| p.matches(repo))
                    || berth_auth::grant::actions_on(grants.iter(), repo).allows(Action::Pull)
            }
        }
    }
}

/// Page size when the client does not ask for one (Distribution's default too).
const DEFAULT_PAGE: usize = 1000;

/// Lists only what the caller may pull: every page is filled from as many store pages
/// as it takes, so filtering never shortens a page that has a successor.
pub async fn list(state: &AppState, req: Req) -> ApiResult {
    let p = page(&req.query, Some(DEFAULT_PAGE))?;
    let want = p.n.unwrap_or(DEFAULT_PAGE);
    let visible = Visibility::of(state, &req.principal).await?;
    let mut repos: Vec<String> = Vec::new();
    let mut last = p.last.clone();
    let batch = want.saturating_add(1).max(100);
    loop {
        let chunk = state
            .meta
            .repositories(&berth_meta::Page {
                last: last.clone(),
                n: Some(batch),
            })
            .await?;
        let exhausted = chunk.len() < batch;
        last = chunk.last().cloned();
        repos.extend(chunk.into_iter().filter(|r| visible.may_pull(r)));
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

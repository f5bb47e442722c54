//! The stats API (JSON): downloads and inspections of a repository grouped by day,
//! version, platform or client, downloads by account (administrators of the repository
//! only), and the most downloaded repositories. Only repositories the caller may pull.
//! What a download and an inspection are is decided in [`crate::analytics`].
//!
//! - `GET /api/v1/stats/repositories/<name>?by=version|platform|client|day|account&since=7d`
//! - `GET /api/v1/stats/top?since=7d&n=10`
//!
//! A repository's answer also carries `vulnerabilities`: for each tag (cosign and
//! referrers-schema tags left out), the counts by severity of its image's scan, or of
//! each platform image's for an index ([`crate::scanning::TagScan`]).

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use berth_auth::Action;
use berth_meta::GroupBy;
use berth_oci::RepoName;

use super::{client_ip, error_response, Query};
use crate::auth::AuthError;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::service::RegistryError;
use crate::AppState;

fn since_hour(query: &Query) -> ApiResult<i64> {
    let since = match query.get("since") {
        Some(s) => crate::config::parse_duration(s).map_err(RegistryError::ParameterInvalid)?,
        None => std::time::Duration::from_secs(30 * 86400),
    };
    let since = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    Ok(berth_oci::time::now().saturating_sub(since).max(0) / 3600)
}

async fn principal(state: &AppState, req: &axum::http::request::Parts) -> ApiResult<Principal> {
    Ok(state
        .auth
        .authenticate(&req.headers, client_ip(&req.extensions))
        .await?)
}

fn json(v: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

pub async fn repository(State(state): State<AppState>, req: Request) -> Response {
    let (req, _) = req.into_parts();
    let result = async {
        let name = req
            .uri
            .path()
            .strip_prefix("/api/v1/stats/repositories/")
            .unwrap_or("")
            .to_owned();
        let repo = RepoName::parse(&name)?;
        let query = Query::parse(req.uri.query());
        let p = principal(&state, &req).await?;
        if !p.may(repo.as_str(), Action::Pull) {
            let e = match p {
                Principal::Account { .. } => {
                    AuthError::Denied(format!("you may not pull {repo}, so not see its numbers"))
                }
                _ => state.auth.challenge(Some(&format!("repository:{repo}:pull")), None, "authentication required"),
            };
            return Err(e.into());
        }
        let by_name = query.get("by").unwrap_or("day");
        let by = match by_name {
            "version" => Some(GroupBy::Version),
            "platform" => Some(GroupBy::Platform),
            "client" => Some(GroupBy::Client),
            "day" => Some(GroupBy::Day),
            "account" => None,
            other => {
                return Err(RegistryError::ParameterInvalid(format!(
                    "by={other:?}: use version, platform, client, day or account"
                ))
                .into())
            }
        };
        // Who pulled what names customers: administrators of the repository only.
        if by.is_none() && !p.may(repo.as_str(), Action::Admin) {
            let e = match p {
                Principal::Account { .. } | Principal::Token { .. } => AuthError::Denied(format!(
                    "downloads by account of {repo} are for its administrators"
                )),
                _ => state.auth.challenge(
                    Some(&format!("repository:{repo}:*")),
                    None,
                    "authentication required",
                ),
            };
            return Err(e.into());
        }
        let since = since_hour(&query)?;
        // Answer with everything counted so far, not only what the last flush wrote.
        state.analytics.flush(false).await?;
        let stats = state.analytics.stats();
        let (groups, inspections) = match by {
            Some(by) => {
                let groups: Vec<serde_json::Value> = stats
                    .downloads(repo.as_str(), since, by)
                    .await?
                    .iter()
                    .map(|(k, n)| serde_json::json!({"key": k, "downloads": n}))
                    .collect();
                let inspections = stats.inspections(repo.as_str(), since, by).await?;
                (groups, inspections)
            }
            None => {
                let rows = stats.downloads_by_account(repo.as_str(), since).await?;
                let inspections = stats
                    .inspections(repo.as_str(), since, GroupBy::Version)
                    .await?;
                (by_account(&rows), inspections)
            }
        };
        let total: u64 = groups.iter().filter_map(|g| g["downloads"].as_u64()).sum();
        let inspected: u64 = inspections.iter().map(|(_, n)| n).sum();
        let bytes = stats.bytes_served(repo.as_str(), since).await?;
        let requests = stats.requests(repo.as_str(), since).await?;
        let all: u64 = requests.iter().map(|(_, n)| n).sum();
        let errors: u64 = requests.iter().filter(|(k, _)| k.class >= 4).map(|(_, n)| n).sum();
        let mut by_code = serde_json::Map::new();
        for (k, n) in requests.iter().filter(|(k, _)| !k.code.is_empty()) {
            let e = by_code.entry(k.code.clone()).or_insert(serde_json::json!(0));
            *e = serde_json::json!(e.as_u64().unwrap_or(0) + n);
        }
        let by_route: Vec<serde_json::Value> = requests
            .iter()
            .map(|(k, n)| serde_json::json!({"route": k.route, "status_class": format!("{}xx", k.class), "code": k.code, "requests": n}))
            .collect();
        let usage = state.registry.repository_usage(&repo).await?;
        let mut tags = state.registry.tag_details(&repo).await?;
        tags.retain(|t| !berth_meta::artifact_tags::is_hidden(&t.tag));
        let vulnerabilities = state.scanner.tag_scans(repo.as_str(), &tags).await?;
        Ok(json(serde_json::json!({
            "repository": repo.as_str(),
            "storage": usage,
            "vulnerabilities": {
                "scan_on_push": state.scanner.rules().scans_on_push(repo.as_str()),
                "tags": vulnerabilities,
            },
            "by": by_name,
            "since_hour": since,
            "total": total,
            "bytes_served": bytes,
            "groups": groups,
            "inspections": {
                "total": inspected,
                "groups": inspections.iter().map(|(k, n)| serde_json::json!({"key": k, "inspections": n})).collect::<Vec<_>>(),
            },
            "requests": {
                "total": all,
                "errors": errors,
                "error_rate": if all == 0 { 0.0 } else { errors as f64 / all as f64 },
                "errors_by_code": by_code,
                "by_route": by_route,
            },
        })))
    }
    .await;
    result.unwrap_or_else(|e: ApiError| {
        error_response(&state, e, req.headers.get(header::HOST), false)
    })
}

/// Groups `(account, version, downloads)` rows (sorted by account) into one group per
/// account: `{"key": account, "downloads": n, "versions": [{"version", "downloads"}]}`.
fn by_account(rows: &[(String, String, u64)]) -> Vec<serde_json::Value> {
    let mut groups: Vec<serde_json::Value> = Vec::new();
    for (account, version, n) in rows {
        let entry = serde_json::json!({"version": version, "downloads": n});
        match groups.last_mut() {
            Some(g) if g["key"] == account.as_str() => {
                g["downloads"] = serde_json::json!(g["downloads"].as_u64().unwrap_or(0) + n);
                if let Some(v) = g["versions"].as_array_mut() {
                    v.push(entry);
                }
            }
            _ => groups
                .push(serde_json::json!({"key": account, "downloads": n, "versions": [entry]})),
        }
    }
    groups
}

pub async fn top(State(state): State<AppState>, req: Request) -> Response {
    let (req, _) = req.into_parts();
    let result = async {
        let query = Query::parse(req.uri.query());
        let p = principal(&state, &req).await?;
        let n: usize = query
            .get("n")
            .and_then(|v| v.parse().ok())
            .unwrap_or(10)
            .min(1000);
        let since = since_hour(&query)?;
        state.analytics.flush(false).await?;
        // Ask for more than n, since some may be hidden from this caller.
        let all = state
            .analytics
            .stats()
            .top_repositories(since, n.saturating_mul(10).max(100))
            .await?;
        let visible: Vec<serde_json::Value> = all
            .into_iter()
            .filter(|(r, _)| p.may(r, Action::Pull))
            .take(n)
            .map(|(r, d)| serde_json::json!({"repository": r, "downloads": d}))
            .collect();
        Ok(json(
            serde_json::json!({ "since_hour": since, "repositories": visible }),
        ))
    }
    .await;
    result.unwrap_or_else(|e: ApiError| {
        error_response(&state, e, req.headers.get(header::HOST), false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_rows_group_by_account() {
        let row = |a: &str, v: &str, n: u64| (a.to_owned(), v.to_owned(), n);
        let groups = by_account(&[
            row("", "1.0", 2),
            row("carol", "1.0", 1),
            row("carol", "2.0", 4),
        ]);
        assert_eq!(
            serde_json::Value::Array(groups),
            serde_json::json!([
                {"key": "", "downloads": 2, "versions": [{"version": "1.0", "downloads": 2}]},
                {"key": "carol", "downloads": 5, "versions": [
                    {"version": "1.0", "downloads": 1}, {"version": "2.0", "downloads": 4}]},
            ])
        );
    }
}

//! `/v2/<name>/referrers/<digest>`: the manifests whose `subject` is a digest, as an
//! OCI image index, optionally filtered by `artifactType`. The manifests cosign v2 keeps
//! under `sha256-<hex>.sig`, `.att` and `.sbom` are listed too (the store indexes those
//! tags), each as a descriptor with its `artifactType` or, lacking one, its config's
//! media type, as the spec asks.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_oci::media_types as mt;
use berth_oci::RepoName;

use super::{set, Req};
use crate::error::ApiResult;
use crate::service::parse_digest;
use crate::AppState;

pub async fn list(state: &AppState, name: &RepoName, raw: &str, req: Req) -> ApiResult {
    let subject = parse_digest(raw)?;
    let filter = req.query.get("artifactType").filter(|s| !s.is_empty());
    // A mirror repository first caches what its upstream lists.
    state.registry.mirror_referrers(name, &subject).await?;
    let referrers = state.registry.referrers(name, &subject, filter).await?;
    let manifests: Vec<serde_json::Value> = referrers
        .into_iter()
        .map(|r| {
            let mut d = serde_json::json!({
                "mediaType": r.media_type,
                "digest": r.digest.to_string(),
                "size": r.size,
            });
            if let Some(a) = r.artifact_type {
                d["artifactType"] = a.into();
            }
            if let Ok(serde_json::Value::Object(a)) =
                serde_json::from_str::<serde_json::Value>(&r.annotations_json)
            {
                d["annotations"] = serde_json::Value::Object(a);
            }
            d
        })
        .collect();
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mt::OCI_INDEX,
        "manifests": manifests,
    })
    .to_string();
    let mut r: Response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, mt::OCI_INDEX)],
        body,
    )
        .into_response();
    if filter.is_some() {
        set(&mut r, "oci-filters-applied", "artifactType");
    }
    Ok(r)
}

//! The dashboard at `/ui/`: server-rendered HTML with inline SVG charts, no scripts and
//! no external assets, so it works offline and is embedded in the binary. It follows the
//! account rules: a viewer sees only repositories they may pull (log in at `/ui/login`,
//! HTTP Basic), and only administrators of a repository see its downloads by account.
//!
//! Each tag shows its trust: signed (with the fingerprints of the keys that verify it),
//! unsigned, or waiting for a signature (the publish gate holds it), and the types of the
//! attestations attached to it; the repository page lists the signatures and
//! attestations with their formats and key fingerprints. Without a trust rule the server
//! has no key to verify with, so attached signatures are shown as not verified.
//!
//! Each image (each platform of an index) links its tarball download ("Download for
//! air-gapped install", `/api/v1/export/<name>:<tag>?platform=`), which the browser
//! fetches with the viewer's Basic credentials.
//!
//! Sizes are what a pull moves: an image's size is the sum of its config and layers, and
//! an index's is given per platform (each child's blobs), never the size of the JSON.
//!
//! Pages are `maud` templates: checked at compile time, and every value written into
//! them is escaped unless wrapped in `PreEscaped` (only the constant style sheet and
//! already-rendered markup are). `maud` was chosen over `askama` for the leaner build:
//! one proc-macro crate over `syn` (already in the tree), where `askama`'s derive adds a
//! template parser (`winnow`) and its own config reader, and the markup stays in Rust
//! beside the data it shows.

use axum::extract::{Request, State};
use std::collections::HashMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use berth_auth::Action;
use berth_meta::GroupBy;
use berth_oci::time::{date, now};
use berth_oci::{ParsedManifest, RepoName};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::client_ip;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::service::{ArtifactKind, Fetch, TrustOverview};
use crate::AppState;

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2433;background:#f6f7f9}
header{background:#1d2433;color:#fff;padding:12px 24px}header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:16px 24px;max-width:1100px}table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e3e6ea;vertical-align:top}th{background:#eef0f3}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}.card{background:#fff;padding:10px 16px;border:1px solid #e3e6ea}
.card b{display:block;font-size:22px}.charts{display:grid;grid-template-columns:1fr 1fr;gap:16px}
section{background:#fff;border:1px solid #e3e6ea;padding:10px 14px;margin:12px 0}h2{font-size:15px;margin:4px 0 8px}
code{font-size:12px}.muted{color:#6b7280}
#tags{table-layout:fixed}#tags td{overflow-wrap:anywhere;word-break:break-word}
#tags col.tag{width:18%}#tags col.digest{width:13%}#tags col.kind{width:7%}#tags col.platforms{width:16%}
#tags col.annotations{width:14%}#tags col.trust{width:12%}#tags col.vulns{width:10%}#tags col.updated{width:8%}
.sev{display:inline-block;min-width:1.4em;padding:0 4px;margin:0 2px 2px 0;border-radius:3px;color:#fff;text-align:center;font-size:.85em}
.sev.critical{background:#7f1d1d}.sev.high{background:#dc2626}.sev.medium{background:#d97706}.sev.low{background:#4d7c0f}.sev.unknown{background:#6b7280}.clean{color:#166534}
.signed{color:#166534}.unsigned{color:#991b1b}.waiting{color:#92400e}.stale{color:#92400e;font-size:.85em}
code.pull{display:block;margin-top:4px;padding:2px 4px;background:#eef0f3;user-select:all;cursor:text}";

fn human_bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

/// A coordinate with one decimal, as the charts write them.
fn c(v: f64) -> String {
    format!("{v:.1}")
}

// SVG elements are written with explicit end tags (`line ... {}`): in HTML, inline SVG
// is foreign content, where `<line>` without `/>` or `</line>` would swallow the
// elements after it.

/// A line chart of `points` (label, value) as inline SVG.
pub fn line_chart(points: &[(String, u64)]) -> Markup {
    let (w, h, pad) = (520.0, 180.0, 30.0);
    let max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1);
    let n = points.len().max(2) as f64 - 1.0;
    let xy = |i: usize, v: u64| {
        (
            pad + (w - 2.0 * pad) * i as f64 / n,
            h - pad - (h - 2.0 * pad) * v as f64 / max as f64,
        )
    };
    let path: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (x, y) = xy(i, p.1);
            format!("{},{}", c(x), c(y))
        })
        .collect();
    html! {
        svg class="chart line" role="img" aria-label="downloads per day"
            viewBox={ "0 0 " (w) " " (h) } width="100%" {
            line x1=(pad) y1=(h - pad) x2=(w - pad) y2=(h - pad) stroke="#9ca3af" {}
            text x="2" y=(pad) font-size="10" { (max) }
            polyline fill="none" stroke="#2563eb" stroke-width="2" points=(path.join(" ")) {}
            @for (i, (label, v)) in points.iter().enumerate() {
                @let (x, y) = xy(i, *v);
                circle cx=(c(x)) cy=(c(y)) r="2.5" fill="#2563eb" { title { (label) " " (v) } }
            }
            @if let (Some(first), Some(last)) = (points.first(), points.last()) {
                text x=(pad) y=(h - 8.0) font-size="10" { (first.0) }
                text x=(w - pad) y=(h - 8.0) font-size="10" text-anchor="end" { (last.0) }
            }
        }
    }
}

/// A horizontal bar chart of shares as inline SVG.
pub fn bar_chart(label: &str, items: &[(String, u64)]) -> Markup {
    let total = items.iter().map(|i| i.1).sum::<u64>().max(1) as f64;
    let row = 24.0;
    let h = row * items.len().max(1) as f64 + 6.0;
    html! {
        svg class="chart bar" role="img" aria-label=(label) viewBox={ "0 0 520 " (h) } width="100%" {
            @if items.is_empty() {
                text x="4" y="18" font-size="12" fill="#6b7280" { "no downloads yet" }
            }
            @for (i, (k, v)) in items.iter().enumerate() {
                @let y = 4.0 + row * i as f64;
                @let width = 300.0 * *v as f64 / total;
                text x="0" y=(y + 13.0) font-size="12" { (if k.is_empty() { "(unknown)" } else { k }) }
                rect class="bar" x="150" y=(y) width=(c(width)) height="16" fill="#10b981" {}
                text x=(c(156.0 + width)) y=(y + 13.0) font-size="12" class="value" {
                    (v) " (" (format!("{:.0}", 100.0 * *v as f64 / total)) "%)"
                }
            }
        }
    }
}

fn page(title: &str, body: Markup) -> Response {
    let html = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · Berth" }
                meta name="viewport" content="width=device-width";
                style { (PreEscaped(STYLE)) }
            }
            body {
                header { a href="/ui/" { "Berth" } " " span.muted { "registry dashboard" } }
                main { (body) }
            }
        }
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html.into_string(),
    )
        .into_response()
}

async fn viewer(state: &AppState, req: &axum::http::request::Parts) -> Result<Principal, Response> {
    state
        .auth
        .authenticate(&req.headers, client_ip(&req.extensions))
        .await
        .map_err(|_| basic_challenge())
}

fn basic_challenge() -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        "log in to see this registry's dashboard",
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Berth dashboard\", charset=\"UTF-8\""),
    );
    r
}

/// `GET /ui/login`: asks the browser for credentials, then goes back to the dashboard.
pub async fn login(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    match viewer(&state, &parts).await {
        Ok(Principal::Account { .. }) | Ok(Principal::Open) => Redirect::to("/ui/").into_response(),
        _ => basic_challenge(),
    }
}

/// `GET /ui/`: the repositories the viewer may pull.
pub async fn index(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let p = match viewer(&state, &parts).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let repos = match state.registry.repository_summaries().await {
        Ok(r) => r,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let anonymous = matches!(p, Principal::Anonymous { .. });
    // Storage housekeeping is the registry administrators' concern.
    let gc = p.may("*", Action::Admin).then(|| state.registry.last_gc());
    // Usage and quotas, for the same administrators (one read per repository's rows).
    let usage = match &gc {
        Some(_) => match state.registry.usage().await {
            Ok(u) => Some(u),
            Err(e) => return ApiError::from(e).into_response(),
        },
        None => None,
    };
    let body = html! {
        @if let Some(last) = &gc {
            div.cards #gc {
                div.card {
                    "Garbage collection"
                    @match last {
                        Some(r) => {
                            b { (human_bytes(r.bytes_freed)) " freed" }
                            (r.blobs_deleted) " blobs, " (r.manifests_deleted) " manifests, "
                            (r.tags_deleted) " expired tags, "
                            (r.duration_ms) " ms, " (date(r.started_at))
                        }
                        None => { b { "no run yet" } "since the server started" }
                    }
                }
                @if let Some(u) = &usage {
                    div.card #usage {
                        "Storage"
                        b { (human_bytes(u.stored_bytes)) " stored" }
                        (u.stored_blobs) " distinct blobs"
                        @for r in u.repositories.iter().filter(|r| r.limit.is_some()) {
                            @let limit = r.limit.unwrap_or(0);
                            br;
                            (r.repository) ": " (human_bytes(r.bytes)) " of " (human_bytes(limit))
                            " (" (r.bytes.saturating_mul(100).checked_div(limit).unwrap_or(100)) "%)"
                        }
                    }
                }
            }
        }
        @if gc.is_some() {
            p { a href="/ui/admin" { "Administration" } ": accounts, storage, garbage collection, webhooks, replication, audit log" }
        }
        h1 { "Repositories" }
        @if anonymous {
            p.muted { "Showing public repositories. " a href="/ui/login" { "Log in" } " to see yours." }
        }
        table #repositories {
            tr { th { "Repository" } th { "Tags" } th { "Size" } th { "Last push" } }
            @for r in repos.iter().filter(|r| p.may(&r.name, Action::Pull)) {
                tr {
                    td { a href={ "/ui/r/" (r.name) } { (r.name) } }
                    td { (r.tags) }
                    td { (human_bytes(r.size)) }
                    td { (r.last_push.map(date).unwrap_or_else(|| "never".into())) }
                }
            }
        }
    };
    page("Repositories", body)
}

/// How many audit entries the admin page reads (its GC runs are found among them).
const ADMIN_AUDIT_ROWS: usize = 500;

/// `GET /ui/admin`: accounts, storage housekeeping, webhooks, replication (the status
/// of `GET /api/v1/admin/replication`) and the audit log, for administrators
/// of the whole registry. It only shows: changes go through `berth admin` (on the data
/// directory or `--registry`) or the admin API, which keeps the dashboard free of forms
/// that Basic credentials would let another site submit.
pub async fn admin(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let p = match viewer(&state, &parts).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if !p.may("*", Action::Admin) {
        return match p {
            Principal::Anonymous { .. } => basic_challenge(),
            _ => (
                StatusCode::FORBIDDEN,
                "the admin page needs an account with admin on *",
            )
                .into_response(),
        };
    }
    let admin = state.auth.admin(p.name(), client_ip(&parts.extensions));
    let (accounts, audit) = match (
        admin.list().await,
        admin.audit_log(0, ADMIN_AUDIT_ROWS).await,
    ) {
        (Ok(a), Ok(l)) => (a, l),
        (Err(e), _) | (_, Err(e)) => return ApiError::from(e).into_response(),
    };
    let public = admin.public_list().await.unwrap_or_default();
    let usage = match state.registry.usage().await {
        Ok(u) => u,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let hooks = match state.webhooks.report().await {
        Ok(r) => r,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let replication = match state.replication.report().await {
        Ok(r) => r,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let last = state.registry.last_gc();
    let gc_runs: Vec<_> = audit.iter().filter(|e| e.action == "gc").take(10).collect();
    let body = html! {
        h1 { "Administration" }
        div.cards #housekeeping {
            div.card {
                "Last garbage collection"
                @match &last {
                    Some(r) => {
                        b { (human_bytes(r.bytes_freed)) " freed" }
                        (r.blobs_deleted) " blobs, " (r.manifests_deleted) " manifests, "
                        (r.duration_ms) " ms, " (date(r.started_at))
                    }
                    None => { b { "no run yet" } "since the server started" }
                }
            }
            div.card {
                "Accounts"
                b { (accounts.len()) }
                (accounts.iter().filter(|a| a.kind == "robot").count()) " robots, "
                (accounts.iter().filter(|a| a.disabled).count()) " disabled"
            }
        }
        section #accounts {
            h2 { "Accounts" }
            table {
                tr { th { "Name" } th { "Kind" } th { "State" } th { "Expires" } th { "Grants" } }
                @for a in &accounts {
                    tr {
                        td { (a.name) }
                        td { (a.kind) }
                        td { @if a.disabled { "disabled" } @else { "active" } }
                        td { (a.expires_at.map(date).unwrap_or_else(|| "never".into())) }
                        td { @for g in &a.grants { code { (g) } " " } }
                    }
                }
            }
            p.muted { "Public (anonymous pull): "
                @if public.is_empty() { "none" }
                @for pat in &public { code { (pat) } " " } }
            p.muted { "Change accounts with " code { "berth admin --registry HOST user|robot|grant|public ..." }
                " or the admin API (" code { "/api/v1/admin/" } ")." }
        }
        section #storage {
            h2 { "Storage: " (human_bytes(usage.stored_bytes)) " in " (usage.stored_blobs) " distinct blobs" }
            table {
                tr { th { "Repository" } th { "Bytes" } th { "Blobs" } th { "Manifests" } th { "Quota" } }
                @for r in &usage.repositories {
                    tr {
                        td { (r.repository) }
                        td { (human_bytes(r.bytes)) }
                        td { (r.blobs) }
                        td { (r.manifests) }
                        td {
                            @match r.limit {
                                Some(l) => { (human_bytes(l)) " (" (r.bytes.saturating_mul(100).checked_div(l).unwrap_or(100)) "% used)" }
                                None => { "none" }
                            }
                        }
                    }
                }
            }
        }
        section #gc-runs {
            h2 { "Garbage collection runs" }
            @if gc_runs.is_empty() { p.muted { "None recorded yet." } }
            @else {
                table {
                    tr { th { "When" } th { "By" } th { "What" } }
                    @for e in &gc_runs {
                        tr { td { (date(e.at)) } td { (e.actor) } td { (e.detail) } }
                    }
                }
            }
        }
        section #webhooks {
            h2 { "Events: webhooks" }
            @if hooks.webhooks.is_empty() && hooks.unconfigured.is_empty() {
                p.muted { "No webhook configured (" code { "[[webhook]]" } " in berth.toml)." }
            } @else {
                table {
                    tr { th { "Hook" } th { "URL" } th { "Pending" } th { "Failing" } th { "Dead" } th { "Last success" } th { "Last error" } }
                    @for h in hooks.webhooks.iter().chain(&hooks.unconfigured) {
                        tr {
                            td { (h.name) }
                            td { (h.url.as_deref().unwrap_or("(no longer configured)")) }
                            td { (h.pending) }
                            td { (h.failing) }
                            td { (h.dead) }
                            td { (h.last_success.as_deref().unwrap_or("never")) }
                            td { (h.last_error.as_deref().unwrap_or("")) }
                        }
                    }
                }
                p.muted { "Retry a hook's deliveries with " code { "berth admin webhooks --redeliver NAME" } "." }
            }
        }
        section #replication {
            h2 { "Replication" }
            @if replication.rules.is_empty() && replication.unconfigured.is_empty() {
                p.muted { "No replication rule configured (" code { "[[replication]]" } " in berth.toml)." }
            } @else {
                table {
                    tr { th { "Rule" } th { "Target" } th { "Queued" } th { "Lag" } th { "Failing" } th { "Dead" } th { "Copied" } th { "Failures" } th { "Last success" } th { "Last error" } }
                    @for r in replication.rules.iter().chain(&replication.unconfigured) {
                        tr.rule {
                            td { (r.name) }
                            td {
                                (r.url.as_deref().unwrap_or("(no longer configured)"))
                                @if let Some(ns) = &r.namespace { " into " code { (ns) } }
                            }
                            td { (r.pending) }
                            td {
                                @match r.lag_seconds {
                                    Some(s) => { (s) " s" @if let Some(t) = &r.oldest_pending { br; span.muted { "since " (t) } } }
                                    None => { "none" }
                                }
                            }
                            td { (r.failing) }
                            td { (r.dead) }
                            td { (r.copied) }
                            td { (r.failures) }
                            td { (r.last_success.as_deref().unwrap_or("never")) }
                            td {
                                (r.last_error.as_deref().unwrap_or(""))
                                @if let Some(t) = &r.last_failure { br; span.muted { "at " (t) } }
                            }
                        }
                    }
                }
                @if !replication.failing.is_empty() {
                    h2 { "Failing changes" }
                    table {
                        tr { th { "Rule" } th { "Change" } th { "Attempts" } th { "Next attempt" } th { "Last error" } }
                        @for f in replication.failing.iter().take(20) {
                            tr {
                                td { (f.rule) }
                                td { (f.operation) " " code { (f.repository) ":" (f.reference) } }
                                td { (f.attempts) }
                                td { @if f.dead { "given up" } @else { (f.next_attempt.as_deref().unwrap_or("")) } }
                                td { (f.last_error.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
                p.muted { "Status as JSON: " code { "berth admin replication status" } " or " code { "/api/v1/admin/replication" }
                    "; a full sync: " code { "berth admin replicate --rule NAME --all" } "." }
            }
        }
        section #audit {
            h2 { "Audit log (newest first)" }
            table {
                tr { th { "When" } th { "Actor" } th { "Action" } th { "Target" } th { "Detail" } th { "Client" } }
                @for e in audit.iter().take(50) {
                    tr {
                        td { (date(e.at)) } td { (e.actor) } td { (e.action) }
                        td { (e.target) } td { (e.detail) } td { (e.client) }
                    }
                }
            }
        }
    };
    page("Administration", body)
}

/// `GET /ui/r/<name>`: downloads over time, version/platform/client shares, error rate
/// and every tag with its digest, platforms, size and annotations.
pub async fn repository(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let p = match viewer(&state, &parts).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let raw = parts
        .uri
        .path()
        .strip_prefix("/ui/r/")
        .unwrap_or("")
        .trim_end_matches('/');
    let Ok(repo) = RepoName::parse(raw) else {
        return (StatusCode::NOT_FOUND, "no such repository").into_response();
    };
    if !p.may(repo.as_str(), Action::Pull) {
        return match p {
            Principal::Anonymous { .. } => basic_challenge(),
            _ => (StatusCode::FORBIDDEN, "you may not pull this repository").into_response(),
        };
    }
    // The pull command names the registry as the browser reached it.
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("REGISTRY")
        .to_owned();
    let admin = p.may(repo.as_str(), Action::Admin);
    // Tags whose base tag moved get a hint; only bases the viewer may pull are named.
    let stale = match state
        .registry
        .stale_images(|r, base| r == repo.as_str() && p.may(base, Action::Pull))
        .await
    {
        Ok(s) => s,
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    match render_repository(&state, &repo, &host, admin, &stale).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// What one tag's manifest holds: its kind, and (platform, bytes a pull moves) per image.
async fn tag_sizes(
    state: &AppState,
    repo: &RepoName,
    m: &berth_meta::StoredManifest,
    parsed: Option<&ParsedManifest>,
    children: &mut HashMap<String, u64>,
) -> (&'static str, Vec<(String, u64)>) {
    match parsed {
        Some(pm) if pm.kind.is_index() => {
            let mut sizes = Vec::new();
            for d in &pm.manifests {
                let digest = d.digest.to_string();
                // Children shared by several tags are read once per page.
                let size = match children.get(&digest) {
                    Some(n) => *n,
                    None => {
                        let accept = [d.media_type.clone()];
                        // Sizes are metadata: read as a check, which the trust policy
                        // allows to a viewer of the dashboard (it serves no content).
                        let check = Fetch::Check { may_push: true };
                        let n = match state
                            .registry
                            .fetch_manifest(repo, &digest, &accept, check)
                            .await
                        {
                            Ok((_, child)) => {
                                ParsedManifest::parse(&child.content, Some(&child.media_type))
                                    .map(|c| c.required_blobs().map(|b| b.size).sum::<u64>())
                                    .unwrap_or(0)
                            }
                            // A child this registry does not hold (an index pushed with
                            // some platforms elsewhere) moves nothing from here.
                            Err(_) => 0,
                        };
                        children.insert(digest, n);
                        n
                    }
                };
                let platform = d
                    .platform
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "unknown".into());
                sizes.push((platform, size));
            }
            ("index", sizes)
        }
        Some(pm) => (
            "image",
            vec![(
                m.platform.clone().unwrap_or_default(),
                pm.required_blobs().map(|d| d.size).sum::<u64>(),
            )],
        ),
        None => ("?", Vec::new()),
    }
}

/// The tarball download of one platform of a tag (`/api/v1/export/...`), for images
/// only: an artifact (a chart, a signature) cannot be loaded, and an index entry of no
/// real platform (BuildKit's `unknown/unknown` attestations) is no image.
fn download_link(
    repo: &RepoName,
    tag: &str,
    kind: &str,
    parsed: Option<&ParsedManifest>,
    digest: &berth_oci::Digest,
    platform: &str,
) -> Option<String> {
    let base = format!("{}{}:{tag}", super::export::PREFIX, repo.as_str());
    match (kind, parsed) {
        ("index", _) if platform.is_empty() || platform.starts_with("unknown") => None,
        ("index", _) => Some(format!("{base}?platform={platform}")),
        ("image", Some(pm)) if berth_oci::archive::check_image(pm, digest).is_ok() => {
            Some(if platform.is_empty() {
                base
            } else {
                format!("{base}?platform={platform}")
            })
        }
        _ => None,
    }
}

async fn render_repository(
    state: &AppState,
    repo: &RepoName,
    host: &str,
    admin: bool,
    stale: &[berth_meta::bases::StaleImage],
) -> Result<Response, ApiError> {
    state.analytics.flush(false).await?;
    let stats = state.analytics.stats();
    let since = (now() - 30 * 86400) / 3600;
    let by_day = stats.downloads(repo.as_str(), since, GroupBy::Day).await?;
    let versions = stats
        .downloads(repo.as_str(), since, GroupBy::Version)
        .await?;
    let platforms = stats
        .downloads(repo.as_str(), since, GroupBy::Platform)
        .await?;
    let clients = stats
        .downloads(repo.as_str(), since, GroupBy::Client)
        .await?;
    let inspections: u64 = stats
        .inspections(repo.as_str(), since, GroupBy::Version)
        .await?
        .iter()
        .map(|(_, n)| n)
        .sum();
    let accounts = if admin {
        Some(stats.downloads_by_account(repo.as_str(), since).await?)
    } else {
        None
    };
    let requests = stats.requests(repo.as_str(), since).await?;
    let bytes = stats.bytes_served(repo.as_str(), since).await?;
    let tags = state.registry.tag_details(repo).await?;
    let digests: Vec<_> = tags.iter().map(|t| t.manifest.digest.clone()).collect();
    let trust = state.registry.trust_overview(repo, &digests).await?;
    let scans = state.scanner.tag_scans(repo.as_str(), &tags).await?;

    // Every day of the last 30, zeros included.
    let days: Vec<(String, u64)> = (0..30)
        .rev()
        .map(|i| {
            let d = date(now() - i * 86400);
            let n = by_day
                .iter()
                .find(|(k, _)| *k == d)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            (d, n)
        })
        .collect();
    let total: u64 = versions.iter().map(|(_, n)| n).sum();
    let all: u64 = requests.iter().map(|(_, n)| n).sum();
    let errors: u64 = requests
        .iter()
        .filter(|(k, _)| k.class >= 4)
        .map(|(_, n)| n)
        .sum();
    let rate = if all == 0 {
        0.0
    } else {
        100.0 * errors as f64 / all as f64
    };
    let codes: Vec<_> = requests
        .iter()
        .filter(|(k, _)| !k.code.is_empty())
        .collect();
    let mut children = HashMap::new();
    let mut tag_rows = Vec::with_capacity(tags.len());
    for t in &tags {
        let m = &t.manifest;
        let parsed = ParsedManifest::parse(&m.content, Some(&m.media_type)).ok();
        let (kind, sizes) = tag_sizes(state, repo, m, parsed.as_ref(), &mut children).await;
        let digest = m.digest.to_string();
        let short: String = digest.chars().take(19).collect();
        let pull = format!("docker pull {host}/{}:{}", repo.as_str(), t.tag);
        tag_rows.push(html! {
            tr.tag {
                td { b { (t.tag) } code.pull title="pull command" { (pull) } }
                td { code title=(digest) { (short) } }
                td { (kind) }
                td.sizes {
                    @for (platform, size) in &sizes {
                        div {
                            @if !platform.is_empty() { (platform) " " }
                            span.size { (human_bytes(*size)) }
                            @if let Some(href) = download_link(repo, &t.tag, kind, parsed.as_ref(), &m.digest, platform) {
                                " " a.download href=(href) title="a docker-archive tarball for docker load / podman load" {
                                    "Download for air-gapped install"
                                }
                            }
                        }
                    }
                }
                td {
                    @for (k, v) in parsed.iter().flat_map(|pm| &pm.annotations) {
                        div { code { (k) "=" (v) } }
                    }
                }
                td.trust { (trust_cell(&trust, &m.digest)) }
                td.vulns { (vulnerability_cell(scans.iter().find(|s| s.tag == t.tag))) }
                td {
                    (date(t.updated_at))
                    @if let Some(s) = stale.iter().find(|s| s.digest == m.digest) {
                        div.stale title=(format!("built on {}, {}:{} is now {} (since {})", s.base.digest, s.base.repo, s.base.tag, s.base_now, date(s.base_moved_at))) {
                            "base moved: " (s.base.repo) ":" (s.base.tag)
                        }
                    }
                }
            }
        });
    }
    for p in &trust.pending {
        let digest = p.digest.to_string();
        let short: String = digest.chars().take(19).collect();
        tag_rows.push(html! {
            tr.tag.pending {
                td { b { (p.tag) } }
                td { code title=(digest) { (short) } }
                td.muted { "-" }
                td.muted { "-" }
                td.muted { "not visible to pulls or the tags list" }
                td.trust { span.waiting { "waiting for signature" } }
                td.muted { "-" }
                td { (date(p.since)) }
            }
        });
    }
    let body = html! {
        h1 { (repo.as_str()) }
        div.cards {
            div.card { "Downloads (30 days)" b #downloads-total { (total) } }
            div.card {
                "Inspections (30 days)" b #inspections-total { (inspections) }
                span.muted { "metadata only: an index alone or a HEAD" }
            }
            div.card { "Bytes served" b { (human_bytes(bytes)) } }
            div.card {
                "Error rate" b #error-rate { (format!("{rate:.1}")) "%" }
                span.muted { (errors) " of " (all) " requests" }
            }
        }
        section { h2 { "Downloads per day" } (line_chart(&days)) }
        div.charts {
            section #versions { h2 { "Versions" } (bar_chart("versions", &versions)) }
            section #platforms { h2 { "Platforms" } (bar_chart("platforms", &platforms)) }
            section #clients { h2 { "Clients" } (bar_chart("clients", &clients)) }
            section {
                h2 { "Errors by code" }
                ul {
                    @for (k, n) in &codes {
                        li { code { (k.code) } " on " (k.route) ": " (n) }
                    }
                    @if codes.is_empty() {
                        li.muted { "none" }
                    }
                }
            }
        }
        @if let Some(accounts) = &accounts {
            section #accounts {
                h2 { "Downloads by account" } span.muted { "administrators only" }
                table {
                    tr { th { "Account" } th { "Version" } th { "Downloads" } }
                    @for (account, version, n) in accounts {
                        tr {
                            td { (if account.is_empty() { "(anonymous)" } else { account }) }
                            td { (if version.is_empty() { "(unknown)" } else { version }) }
                            td { (n) }
                        }
                    }
                    @if accounts.is_empty() {
                        tr { td.muted colspan="3" { "no downloads yet" } }
                    }
                }
            }
        }
        section {
            h2 { "Tags" }
            table #tags {
                colgroup {
                    col.tag; col.digest; col.kind; col.platforms; col.annotations; col.trust;
                    col.vulns; col.updated;
                }
                tr {
                    th { "Tag" } th { "Digest" } th { "Kind" } th { "Size per platform" }
                    th { "Annotations" } th { "Trust" } th { "Vulnerabilities" } th { "Updated" }
                }
                @for row in tag_rows { (row) }
            }
        }
        (signatures_section(&trust, &tags))
    };
    Ok(page(repo.as_str(), body))
}

/// A tag's vulnerability counts with severity colours (an index shows its worst
/// platform's), or where its scan stands.
fn vulnerability_cell(scan: Option<&crate::scanning::TagScan>) -> Markup {
    let Some(scan) = scan else {
        return html! { span.muted { "-" } };
    };
    if let Some(c) = scan.counts {
        let db = scan
            .images
            .iter()
            .find_map(|i| i.db_imported.clone())
            .unwrap_or_default();
        return html! {
            @if c.total() == 0 {
                span.clean title=(format!("database of {db}")) { "none known" }
            } @else {
                span title=(format!("{} known vulnerabilities (database of {db})", c.total())) {
                    @for (class, n) in [("critical", c.critical), ("high", c.high), ("medium", c.medium), ("low", c.low), ("unknown", c.unknown)] {
                        @if n > 0 {
                            span class=(format!("sev {class}")) title=(class) { (n) }
                        }
                    }
                }
            }
        };
    }
    let first = scan.images.first();
    match first.map(|i| i.state) {
        Some("pending") => html! { span.muted { "scanning" } },
        Some("failed") => {
            html! { span.unsigned title=(first.and_then(|i| i.error.clone()).unwrap_or_default()) { "scan failed" } }
        }
        Some("skipped") => html! { span.muted { "not an image" } },
        _ => html! { span.muted { "not scanned" } },
    }
}

/// The first 16 hex digits of a key fingerprint, enough to tell keys apart on a page.
fn short_key(fingerprint: &str) -> String {
    fingerprint.chars().take(16).collect()
}

/// Whether an attached artifact is a signature (not an attestation).
fn is_signature(a: &crate::service::AttachedArtifact) -> bool {
    match a.kind {
        ArtifactKind::LegacySignature => true,
        ArtifactKind::LegacyAttestation => false,
        ArtifactKind::Bundle => a
            .predicate_type
            .as_deref()
            .is_none_or(|p| p == berth_trust::intoto::COSIGN_SIGN_PREDICATE),
    }
}

/// One tag's trust: signed by which keys, unsigned, or signatures the server cannot
/// verify (no trust rule), then the attestation types attached.
fn trust_cell(trust: &TrustOverview, digest: &berth_oci::Digest) -> Markup {
    let attached = trust
        .artifacts
        .get(digest)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let attestations: Vec<&str> = attached
        .iter()
        .filter(|a| !is_signature(a))
        .map(|a| a.predicate_type.as_deref().unwrap_or("attestation"))
        .collect();
    let keys = trust.signed.get(digest);
    html! {
        @if trust.required {
            @match keys.filter(|k| !k.is_empty()) {
                Some(keys) => {
                    span.signed { "signed" }
                    @for k in keys { div { code title=(k) { (short_key(k)) } } }
                }
                None => span.unsigned { "unsigned" },
            }
        } @else if attached.iter().any(is_signature) {
            span.muted title="no trust policy names a key for this repository" { "signature attached (not verified)" }
        } @else {
            span.unsigned { "unsigned" }
        }
        @for a in &attestations { div { code { (a) } } }
    }
}

/// The signatures and attestations of the repository's tagged manifests, with their
/// format and the fingerprints of the keys that verify them.
fn signatures_section(trust: &TrustOverview, tags: &[berth_meta::TagDetail]) -> Markup {
    let mut subjects: Vec<_> = trust.artifacts.iter().collect();
    subjects.sort_by(|a, b| a.0.cmp(b.0));
    html! {
        section #signatures {
            h2 { "Signatures and attestations" }
            table {
                tr { th { "Of" } th { "Artifact" } th { "Format" } th { "Type" } th { "Key fingerprint" } }
                @for (subject, artifacts) in &subjects {
                    @for a in artifacts.iter() {
                        tr {
                            td {
                                code title=(subject.to_string()) { (subject.to_string().chars().take(19).collect::<String>()) }
                                @for t in tags.iter().filter(|t| &t.manifest.digest == *subject) {
                                    " " b { (t.tag) }
                                }
                            }
                            td { code title=(a.digest.to_string()) { (a.digest.to_string().chars().take(19).collect::<String>()) } }
                            td { (match a.kind {
                                ArtifactKind::Bundle => "Sigstore bundle (cosign v3)",
                                ArtifactKind::LegacySignature => "simple signing (cosign v2 .sig)",
                                ArtifactKind::LegacyAttestation => "DSSE (cosign v2 .att)",
                            }) }
                            td { (if is_signature(a) { "signature" } else { a.predicate_type.as_deref().unwrap_or("attestation") }) }
                            td {
                                @if a.keys.is_empty() {
                                    span.muted { (if trust.required { "no required key verifies it" } else { "not verified (no trust policy)" }) }
                                }
                                @for k in &a.keys { div { code { (k) } } }
                            }
                        }
                    }
                }
                @if subjects.is_empty() {
                    tr { td.muted colspan="5" { "no signatures or attestations" } }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_are_linked_for_images_only() {
        let repo = RepoName::parse("team/app").unwrap();
        let d: berth_oci::Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        assert_eq!(
            download_link(&repo, "1", "index", None, &d, "linux/arm64").as_deref(),
            Some("/api/v1/export/team/app:1?platform=linux/arm64")
        );
        assert_eq!(
            download_link(&repo, "1", "index", None, &d, "unknown/unknown"),
            None
        );
        let image = |config: &str| {
            ParsedManifest::parse(
                format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"{config}","digest":"{d}","size":2}},"layers":[]}}"#).as_bytes(),
                None,
            )
            .unwrap()
        };
        let img = image(berth_oci::media_types::OCI_CONFIG);
        assert_eq!(
            download_link(&repo, "1", "image", Some(&img), &d, "").as_deref(),
            Some("/api/v1/export/team/app:1")
        );
        let chart = image("application/vnd.cncf.helm.config.v1+json");
        assert_eq!(
            download_link(&repo, "1", "image", Some(&chart), &d, ""),
            None
        );
    }

    #[test]
    fn charts_escape_and_count() {
        let svg = bar_chart("versions", &[("1.0.0".into(), 3), ("<b>".into(), 1)]).into_string();
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("75%") && svg.contains("&lt;b&gt;"), "{svg}");
        assert!(svg.contains("class=\"chart bar\""));
        let empty = bar_chart("clients", &[]).into_string();
        assert!(empty.contains("no downloads yet"));
        let line = line_chart(&[("a".into(), 0), ("b".into(), 5), ("c\"".into(), 2)]).into_string();
        assert_eq!(line.matches("<circle").count(), 3);
        assert_eq!(line.matches("</circle>").count(), 3);
        assert!(
            line.contains("<polyline") && line.contains("</line>"),
            "{line}"
        );
        assert!(
            line.contains("points=\"30.0,150.0 260.0,30.0 490.0,102.0\""),
            "{line}"
        );
        assert!(line.contains("c&quot;"), "{line}");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}

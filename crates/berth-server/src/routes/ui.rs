//! The dashboard at `/ui/`: server-rendered HTML with inline SVG charts, no scripts and
//! no external assets, so it works offline and is embedded in the binary. It follows the
//! account rules: a viewer sees only repositories they may pull (log in at `/ui/login`,
//! HTTP Basic).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use berth_auth::Action;
use berth_meta::GroupBy;
use berth_oci::{ParsedManifest, RepoName};

use berth_oci::time::date;

use super::client_ip;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::AppState;

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2433;background:#f6f7f9}
header{background:#1d2433;color:#fff;padding:12px 24px}header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:16px 24px;max-width:1100px}table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e3e6ea;vertical-align:top}th{background:#eef0f3}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}.card{background:#fff;padding:10px 16px;border:1px solid #e3e6ea}
.card b{display:block;font-size:22px}.charts{display:grid;grid-template-columns:1fr 1fr;gap:16px}
section{background:#fff;border:1px solid #e3e6ea;padding:10px 14px;margin:12px 0}h2{font-size:15px;margin:4px 0 8px}
code{font-size:12px}.muted{color:#6b7280}";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A line chart of `points` (label, value) as inline SVG.
pub fn line_chart(points: &[(String, u64)]) -> String {
    let (w, h, pad) = (520.0, 180.0, 30.0);
    let max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1) as f64;
    let n = points.len().max(2) as f64 - 1.0;
    let xy = |i: usize, v: u64| {
        (
            pad + (w - 2.0 * pad) * i as f64 / n,
            h - pad - (h - 2.0 * pad) * v as f64 / max,
        )
    };
    let path: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (x, y) = xy(i, p.1);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let mut svg = format!(
        "<svg class=\"chart line\" role=\"img\" aria-label=\"downloads per day\" viewBox=\"0 0 {w} {h}\" width=\"100%\">\
         <line x1=\"{pad}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#9ca3af\"/>\
         <text x=\"2\" y=\"{pad}\" font-size=\"10\">{max}</text>\
         <polyline fill=\"none\" stroke=\"#2563eb\" stroke-width=\"2\" points=\"{pts}\"/>",
        y0 = h - pad,
        x1 = w - pad,
        max = max as u64,
        pts = path.join(" ")
    );
    for (i, p) in points.iter().enumerate() {
        let (x, y) = xy(i, p.1);
        let _ = write!(svg, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"#2563eb\"><title>{} {}</title></circle>", esc(&p.0), p.1);
    }
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        let _ = write!(
            svg,
            "<text x=\"{pad}\" y=\"{}\" font-size=\"10\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            h - 8.0,
            esc(&first.0),
            w - pad,
            h - 8.0,
            esc(&last.0)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A horizontal bar chart of shares as inline SVG.
pub fn bar_chart(label: &str, items: &[(String, u64)]) -> String {
    let total: u64 = items.iter().map(|i| i.1).sum::<u64>().max(1);
    let row = 24.0;
    let h = row * items.len().max(1) as f64 + 6.0;
    let mut svg = format!(
        "<svg class=\"chart bar\" role=\"img\" aria-label=\"{}\" viewBox=\"0 0 520 {h}\" width=\"100%\">",
        esc(label)
    );
    if items.is_empty() {
        svg.push_str(
            "<text x=\"4\" y=\"18\" font-size=\"12\" fill=\"#6b7280\">no downloads yet</text>",
        );
    }
    for (i, (k, v)) in items.iter().enumerate() {
        let y = 4.0 + row * i as f64;
        let width = 300.0 * *v as f64 / total as f64;
        let key = if k.is_empty() { "(unknown)" } else { k };
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{ty}\" font-size=\"12\">{key}</text>\
             <rect class=\"bar\" x=\"150\" y=\"{y}\" width=\"{width:.1}\" height=\"16\" fill=\"#10b981\"/>\
             <text x=\"{tx:.1}\" y=\"{ty}\" font-size=\"12\" class=\"value\">{v} ({pct:.0}%)</text>",
            ty = y + 13.0,
            key = esc(key),
            tx = 156.0 + width,
            pct = 100.0 * *v as f64 / total as f64
        );
    }
    svg.push_str("</svg>");
    svg
}

fn page(title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · Berth</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head>\
         <body><header><a href=\"/ui/\">Berth</a> <span class=\"muted\">registry dashboard</span></header><main>{body}</main></body></html>",
        esc(title)
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
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
    let repos = match state.meta.repository_summaries().await {
        Ok(r) => r,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let mut rows = String::new();
    for r in repos.iter().filter(|r| p.may(&r.name, Action::Pull)) {
        let _ = write!(
            rows,
            "<tr><td><a href=\"/ui/r/{n}\">{n}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.tags,
            human_bytes(r.size),
            r.last_push.map(date).unwrap_or_else(|| "never".into()),
            n = esc(&r.name)
        );
    }
    let login = if matches!(p, Principal::Anonymous { .. }) {
        "<p class=\"muted\">Showing public repositories. <a href=\"/ui/login\">Log in</a> to see yours.</p>"
    } else {
        ""
    };
    page(
        "Repositories",
        &format!(
            "<h1>Repositories</h1>{login}<table id=\"repositories\"><tr><th>Repository</th><th>Tags</th><th>Size</th><th>Last push</th></tr>{rows}</table>"
        ),
    )
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
    match render_repository(&state, &repo).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn render_repository(state: &AppState, repo: &RepoName) -> Result<Response, ApiError> {
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
    let requests = stats.requests(repo.as_str(), since).await?;
    let bytes = stats.bytes_served(repo.as_str(), since).await?;
    let tags = state.meta.tag_details(repo).await?;

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
    let mut codes = String::new();
    for (k, n) in requests.iter().filter(|(k, _)| !k.code.is_empty()) {
        let _ = write!(
            codes,
            "<li><code>{}</code> on {}: {n}</li>",
            esc(&k.code),
            esc(&k.route)
        );
    }
    if codes.is_empty() {
        codes.push_str("<li class=\"muted\">none</li>");
    }
    let mut rows = String::new();
    for t in &tags {
        let m = &t.manifest;
        let parsed = ParsedManifest::parse(&m.content, Some(&m.media_type)).ok();
        let (kind, platforms, size) = match &parsed {
            Some(pm) if pm.kind.is_index() => (
                "index",
                pm.manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                    .collect::<Vec<_>>()
                    .join(", "),
                pm.manifests.iter().map(|d| d.size).sum::<u64>(),
            ),
            Some(pm) => (
                "image",
                m.platform.clone().unwrap_or_default(),
                pm.required_blobs().map(|d| d.size).sum::<u64>(),
            ),
            None => ("?", String::new(), 0),
        };
        let annotations = parsed
            .map(|pm| {
                pm.annotations
                    .iter()
                    .map(|(k, v)| format!("<div><code>{}={}</code></div>", esc(k), esc(v)))
                    .collect::<String>()
            })
            .unwrap_or_default();
        let _ = write!(
            rows,
            "<tr class=\"tag\"><td>{}</td><td><code title=\"{d}\">{short}</code></td><td>{kind}</td><td>{}</td><td>{}</td><td>{annotations}</td><td>{}</td></tr>",
            esc(&t.tag),
            esc(&platforms),
            human_bytes(size),
            date(t.updated_at),
            d = m.digest,
            short = &m.digest.to_string()[..19.min(m.digest.to_string().len())],
        );
    }
    let body = format!(
        "<h1>{name}</h1>\
         <div class=\"cards\"><div class=\"card\">Downloads (30 days)<b id=\"downloads-total\">{total}</b></div>\
         <div class=\"card\">Bytes served<b>{bytes}</b></div>\
         <div class=\"card\">Error rate<b id=\"error-rate\">{rate:.1}%</b><span class=\"muted\">{errors} of {all} requests</span></div></div>\
         <section><h2>Downloads per day</h2>{line}</section>\
         <div class=\"charts\"><section id=\"versions\"><h2>Versions</h2>{v}</section>\
         <section id=\"platforms\"><h2>Platforms</h2>{pl}</section>\
         <section id=\"clients\"><h2>Clients</h2>{c}</section>\
         <section><h2>Errors by code</h2><ul>{codes}</ul></section></div>\
         <section><h2>Tags</h2><table id=\"tags\"><tr><th>Tag</th><th>Digest</th><th>Kind</th><th>Platforms</th><th>Size</th><th>Annotations</th><th>Updated</th></tr>{rows}</table></section>",
        name = esc(repo.as_str()),
        bytes = human_bytes(bytes),
        line = line_chart(&days),
        v = bar_chart("versions", &versions),
        pl = bar_chart("platforms", &platforms),
        c = bar_chart("clients", &clients),
    );
    Ok(page(repo.as_str(), &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_and_helpers() {
        let svg = bar_chart("versions", &[("1.0.0".into(), 3), ("<b>".into(), 1)]);
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("75%") && svg.contains("&lt;b&gt;"));
        let line = line_chart(&[("a".into(), 0), ("b".into(), 5), ("c".into(), 2)]);
        assert_eq!(line.matches("<circle").count(), 3);
        assert!(line.contains("<polyline"));
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(esc("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }
}

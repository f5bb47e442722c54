//! Numbers that mean what they say (issue 18, section 4): downloads apart from
//! inspections, `berth_pulls_total` equal to the stats API, downloads by account for
//! administrators only, bytes counted as they stream, and the dashboard's sizes, layout,
//! pull commands and `/` redirect.

use std::time::Duration;

use base64::Engine as _;
use berth_oci::Digest;
use berth_server::accounts::Admin;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{TestRegistry, OCI_INDEX, OCI_MANIFEST};

const PW: &str = "password-123";

fn basic(user: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{PW}"))
    )
}

/// Pushes an image for `arch` with a config and one layer of `layer_len` bytes; returns
/// its digest, manifest size and the bytes a pull of it moves (config + layer).
async fn image(
    reg: &TestRegistry,
    repo: &str,
    arch: &str,
    tag: &str,
    layer_len: usize,
) -> (Digest, usize, u64) {
    let config =
        json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
            .to_string();
    let layer: Vec<u8> = (0..layer_len).map(|i| (i % 251) as u8).collect();
    let c = reg.push_blob(repo, config.as_bytes()).await;
    let l = reg.push_blob(repo, &layer).await;
    let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l.to_string(), "size": layer_len}]})
    .to_string();
    let r = reg
        .put_manifest(repo, tag, OCI_MANIFEST, m.as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    (
        Digest::sha256(m.as_bytes()),
        m.len(),
        (config.len() + layer_len) as u64,
    )
}

/// Pushes a two-platform index tagged `tag` (version 1.4.0, with a long annotation);
/// returns (amd64 child, arm64 child, amd64 bytes, arm64 bytes).
async fn release(reg: &TestRegistry, repo: &str, tag: &str) -> (Digest, Digest, u64, u64) {
    let (amd, amd_len, amd_bytes) = image(reg, repo, "amd64", "amd64-build", 300_000).await;
    let (arm, arm_len, arm_bytes) = image(reg, repo, "arm64", "arm64-build", 120_000).await;
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "annotations": {
            "org.opencontainers.image.version": "1.4.0",
            "org.opencontainers.image.source": "https://git.example.com/a-rather-long-organisation-name/an-even-longer-repository-name-for-the-service/tree/0123456789abcdef0123456789abcdef01234567",
        },
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd.to_string(), "size": amd_len, "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": arm.to_string(), "size": arm_len, "platform": {"os": "linux", "architecture": "arm64"}}]})
    .to_string();
    let r = reg
        .put_manifest(repo, tag, OCI_INDEX, index.as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    (amd, arm, amd_bytes, arm_bytes)
}

/// A manifest request as a client family would send it, answered 200.
async fn fetch(reg: &TestRegistry, method: Method, ua: &str, path: &str, auth: Option<&str>) {
    let mut rb = reg
        .req(method, path)
        .header("user-agent", ua)
        .header("accept", format!("{OCI_INDEX}, {OCI_MANIFEST}"));
    if let Some(a) = auth {
        rb = rb.header("authorization", a);
    }
    let r = rb.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.bytes().await.unwrap();
}

async fn stats(reg: &TestRegistry, repo: &str, by: &str) -> Value {
    let r = reg
        .req(
            Method::GET,
            &format!("/api/v1/stats/repositories/{repo}?by={by}&since=1d"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

fn keyed(v: &Value, field: &str) -> Vec<(String, u64)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["key"].as_str().unwrap().to_owned(),
                g[field].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The value of one sample line (`name{labels} value`), 0 when absent.
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

async fn metrics(reg: &TestRegistry) -> String {
    reg.req(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Regression: `berth inspect`, `skopeo inspect --raw` and a bare `curl` of an index were
/// counted as `index-only` downloads. An index alone, and a HEAD with nothing after it,
/// are inspections; a HEAD then a GET is one download.
#[tokio::test]
async fn metadata_only_fetches_are_inspections_not_downloads() {
    let reg = TestRegistry::start().await;
    let (amd, _, _, _) = release(&reg, "team/app", "1.4").await;
    let (single, _, _) = image(&reg, "team/app", "s390x", "2.0.0", 10).await;

    // berth inspect and curl: the index alone.
    fetch(
        &reg,
        Method::GET,
        "berth/0.1.0",
        "/v2/team/app/manifests/1.4",
        None,
    )
    .await;
    fetch(
        &reg,
        Method::GET,
        "curl/8.5.0",
        "/v2/team/app/manifests/1.4",
        None,
    )
    .await;
    // A client checking for updates: a HEAD and nothing else.
    fetch(
        &reg,
        Method::HEAD,
        "watcher/1",
        "/v2/team/app/manifests/2.0.0",
        None,
    )
    .await;
    // containerd: HEAD of the tag, GET by digest: one download.
    fetch(
        &reg,
        Method::HEAD,
        "containerd/v1.7.2",
        "/v2/team/app/manifests/2.0.0",
        None,
    )
    .await;
    let by_digest = format!("/v2/team/app/manifests/{single}");
    fetch(&reg, Method::GET, "containerd/v1.7.2", &by_digest, None).await;
    // skopeo copy: the index, then its amd64 child: one download.
    fetch(
        &reg,
        Method::GET,
        "skopeo/1.13.3",
        "/v2/team/app/manifests/1.4",
        None,
    )
    .await;
    let child = format!("/v2/team/app/manifests/{amd}");
    fetch(&reg, Method::GET, "skopeo/1.13.3", &child, None).await;

    let v = stats(&reg, "team/app", "platform").await;
    assert_eq!(
        keyed(&v["groups"], "downloads"),
        vec![("linux/amd64".to_owned(), 1), ("linux/s390x".to_owned(), 1)]
    );
    assert_eq!(v["total"], 2);

    // What waited for a follow-up that never came is an inspection once its window
    // ends (here: at shutdown), never a download.
    let dir = reg.stop().await.unwrap();
    let reg = TestRegistry::start_in(dir.path(), berth_server::Config::default()).await;
    let v = stats(&reg, "team/app", "platform").await;
    assert_eq!(v["total"], 2, "{v}");
    assert_eq!(v["inspections"]["total"], 3, "{v}");
    assert_eq!(
        keyed(&v["inspections"]["groups"], "inspections"),
        vec![("index".to_owned(), 2), ("linux/s390x".to_owned(), 1)]
    );
    let v = stats(&reg, "team/app", "client").await;
    assert_eq!(
        keyed(&v["inspections"]["groups"], "inspections"),
        vec![("berth".to_owned(), 1), ("other".to_owned(), 2)]
    );
    let top: Value = reg
        .req(Method::GET, "/api/v1/stats/top")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        top["repositories"][0],
        json!({"repository": "team/app", "downloads": 2})
    );
}

/// Regression: `berth_pulls_total` counted every manifest GET (an index and its child
/// twice) while the stats API counted one download; they disagreed (33 against 24).
/// Both now come from one decision, so after any traffic they are equal.
#[tokio::test]
async fn pulls_metric_equals_the_stats_api() {
    let reg = TestRegistry::start().await;
    let (amd, arm, _, _) = release(&reg, "team/app", "1.4").await;
    let (single, _, _) = image(&reg, "team/lib", "amd64", "3.0.0", 10).await;
    for i in 0..3 {
        let ua = format!("skopeo/1.{i}");
        fetch(&reg, Method::GET, &ua, "/v2/team/app/manifests/1.4", None).await;
        let child = format!(
            "/v2/team/app/manifests/{}",
            if i == 0 { &arm } else { &amd }
        );
        fetch(&reg, Method::GET, &ua, &child, None).await;
    }
    fetch(
        &reg,
        Method::GET,
        "berth/0.1.0",
        "/v2/team/app/manifests/1.4",
        None,
    )
    .await;
    fetch(
        &reg,
        Method::HEAD,
        "docker/27",
        "/v2/team/lib/manifests/3.0.0",
        None,
    )
    .await;
    fetch(
        &reg,
        Method::GET,
        "docker/27",
        &format!("/v2/team/lib/manifests/{single}"),
        None,
    )
    .await;
    fetch(
        &reg,
        Method::GET,
        "Helm/3.14.0",
        "/v2/team/lib/manifests/3.0.0",
        None,
    )
    .await;
    fetch(
        &reg,
        Method::HEAD,
        "curl/8",
        "/v2/team/lib/manifests/3.0.0",
        None,
    )
    .await;
    fetch(
        &reg,
        Method::HEAD,
        "curl/8",
        "/v2/team/lib/manifests/3.0.0",
        None,
    )
    .await;

    let check = |text: &str, api: &[(&str, Value)]| {
        for (repo, v) in api {
            let series = format!("berth_pulls_total{{repository=\"{repo}\"}}");
            assert_eq!(
                Some(sample(text, &series)),
                v["total"].as_u64(),
                "{repo}: {v}\n{text}"
            );
            let series = format!("berth_inspections_total{{repository=\"{repo}\"}}");
            assert_eq!(
                Some(sample(text, &series)),
                v["inspections"]["total"].as_u64(),
                "{repo}: {v}\n{text}"
            );
        }
    };
    let app = stats(&reg, "team/app", "version").await;
    let lib = stats(&reg, "team/lib", "version").await;
    let text = metrics(&reg).await;
    check(
        &text,
        &[("team/app", app.clone()), ("team/lib", lib.clone())],
    );
    assert_eq!(
        (app["total"].as_u64(), lib["total"].as_u64()),
        (Some(3), Some(2))
    );
    // The HEAD replaced by the next HEAD is an inspection already.
    assert_eq!(lib["inspections"]["total"], 1);

    // Still equal once the waiting fetches are settled.
    reg.state.analytics.flush(true).await.unwrap();
    let app = stats(&reg, "team/app", "version").await;
    let lib = stats(&reg, "team/lib", "version").await;
    let text = metrics(&reg).await;
    check(
        &text,
        &[("team/app", app.clone()), ("team/lib", lib.clone())],
    );
    assert_eq!(app["inspections"]["total"], 1);
    assert_eq!(lib["inspections"]["total"], 2);
}

/// Downloads by account: which account pulled which version, for administrators of the
/// repository only (401 without credentials, 403 for others).
#[tokio::test]
async fn downloads_by_account_for_administrators_only() {
    let reg = TestRegistry::start().await;
    let (amd, _, _, _) = release(&reg, "team/app", "1.4").await;
    let admin = Admin::open_dir(reg.data_dir(), "test").unwrap();
    let g = |s: &str| vec![s.parse().unwrap()];
    admin
        .user_add("carol", PW, &g("team/*:pull"))
        .await
        .unwrap();
    admin.user_add("dave", PW, &g("team/*:pull")).await.unwrap();
    admin
        .user_add("boss", PW, &g("team/*:admin"))
        .await
        .unwrap();
    reg.state.auth.invalidate();

    for (user, times) in [("carol", 2), ("dave", 1)] {
        let auth = basic(user);
        for _ in 0..times {
            fetch(
                &reg,
                Method::GET,
                "skopeo/1",
                "/v2/team/app/manifests/1.4",
                Some(&auth),
            )
            .await;
            let child = format!("/v2/team/app/manifests/{amd}");
            fetch(&reg, Method::GET, "skopeo/1", &child, Some(&auth)).await;
        }
    }
    let ask = |who: Option<&str>| {
        let mut rb = reg.req(
            Method::GET,
            "/api/v1/stats/repositories/team/app?by=account&since=1d",
        );
        if let Some(w) = who {
            rb = rb.header("authorization", basic(w));
        }
        rb.send()
    };
    assert_eq!(ask(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        ask(Some("carol")).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    // carol may still see the other groupings of a repository she pulls.
    let r = reg
        .req(
            Method::GET,
            "/api/v1/stats/repositories/team/app?by=version",
        )
        .header("authorization", basic("carol"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let r = ask(Some("boss")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["total"], 3);
    assert_eq!(
        v["groups"],
        json!([
            {"key": "carol", "downloads": 2, "versions": [{"version": "1.4.0", "downloads": 2}]},
            {"key": "dave", "downloads": 1, "versions": [{"version": "1.4.0", "downloads": 1}]},
        ])
    );

    // The dashboard shows the table to administrators only.
    let page = |who: &'static str| {
        reg.req(Method::GET, "/ui/r/team/app")
            .header("authorization", basic(who))
            .send()
    };
    let html = page("boss").await.unwrap().text().await.unwrap();
    let table = html
        .split("id=\"accounts\"")
        .nth(1)
        .expect("an accounts table");
    assert!(
        table.contains("<td>carol</td><td>1.4.0</td><td>2</td>"),
        "{table}"
    );
    let html = page("carol").await.unwrap().text().await.unwrap();
    assert!(!html.contains("id=\"accounts\""));
    assert!(!html.contains("<td>dave</td>"));
}

/// Regression: the access log and the byte metrics read `Content-Length`, so chunked
/// uploads and most responses counted 0 bytes. They count the bytes that streamed.
#[tokio::test]
async fn byte_metrics_count_what_streamed() {
    let reg = TestRegistry::start().await;
    let bytes_in = |t: &str| sample(t, "berth_http_request_bytes_total");
    let bytes_out = |t: &str| sample(t, "berth_http_response_bytes_total");

    // A chunked upload: no Content-Length at all.
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let digest = Digest::sha256(&blob);
    let before = metrics(&reg).await;
    let r = reg
        .req(Method::POST, "/v2/team/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        blob.chunks(30_000).map(|c| Ok(c.to_vec())).collect();
    let r = reg
        .http
        .patch(reg.url(&location))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = reg
        .req(Method::PUT, &format!("{location}{sep}digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let after = metrics(&reg).await;
    assert_eq!(bytes_in(&after) - bytes_in(&before), blob.len() as u64);

    // A ranged download, a whole streamed one, and a JSON answer (no Content-Length
    // in the handler's headers). The first /metrics answer is counted too, once sent.
    let before = metrics(&reg).await;
    let blob_path = format!("/v2/team/app/blobs/{digest}");
    let r = reg
        .req(Method::GET, &blob_path)
        .header("range", "bytes=1000-70999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    let ranged = r.bytes().await.unwrap().len();
    assert_eq!(ranged, 70_000);
    let whole = reg
        .req(Method::GET, &blob_path)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    assert_eq!(whole, blob.len());
    reg.push_image("team/app", "v1", "x").await;
    let before_tags = metrics(&reg).await;
    let tags = reg
        .req(Method::GET, "/v2/team/app/tags/list")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    let after = metrics(&reg).await;
    assert_eq!(
        bytes_out(&after) - bytes_out(&before_tags),
        (tags + before_tags.len()) as u64,
        "the tags list and the /metrics answer before it"
    );
    // Between the first two readings: the range, the whole blob, the first /metrics
    // answer, and the push's small answers (empty bodies).
    assert!(bytes_out(&before_tags) - bytes_out(&before) >= (ranged + whole + before.len()) as u64);
    assert!(
        bytes_out(&before_tags) - bytes_out(&before)
            < (ranged + whole + before.len() + 4096) as u64
    );
}

/// The dashboard: `/` leads to it; an index's size is per platform (its images' blobs,
/// not the index JSON); each tag has a pull command.
#[tokio::test]
async fn dashboard_sizes_pull_commands_and_root_redirect() {
    let reg = TestRegistry::start().await;
    let (_, _, amd_bytes, arm_bytes) = release(&reg, "team/app", "1.4").await;

    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let r = no_redirects.get(reg.url("/")).send().await.unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    assert_eq!(r.headers()["location"], "/ui/");
    let r = reg.req(Method::GET, "/").send().await.unwrap();
    assert_eq!(r.url().path(), "/ui/");
    assert!(r.text().await.unwrap().contains("team/app"));

    let html = reg
        .req(Method::GET, "/ui/r/team/app")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let row = html
        .split("<tr class=\"tag\">")
        .find(|r| r.contains("<b>1.4</b>"))
        .expect("a row for 1.4");
    let human = |n: u64| bytesize::ByteSize(n).display().iec().to_string();
    assert!(
        row.contains(&format!(
            "linux/amd64 <span class=\"size\">{}</span>",
            human(amd_bytes)
        )),
        "{row}"
    );
    assert!(
        row.contains(&format!(
            "linux/arm64 <span class=\"size\">{}</span>",
            human(arm_bytes)
        )),
        "{row}"
    );
    let host = reg.base.trim_start_matches("http://");
    assert!(
        row.contains(&format!("docker pull {host}/team/app:1.4")),
        "{row}"
    );
    assert!(html.contains("id=\"inspections-total\""));
}

/// The tags table fits its card in a 1000 px wide window, long annotations and all
/// (measured by headless Chromium; skipped where it is not installed).
#[tokio::test]
async fn tags_table_fits_its_card_at_1000px() {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    else {
        eprintln!("skipped: no Chromium on PATH");
        return;
    };
    let reg = TestRegistry::start().await;
    release(&reg, "team/app", "1.4").await;
    for i in 0..3 {
        image(
            &reg,
            "team/app",
            "amd64",
            &format!("build-{i}-with-a-long-tag-name"),
            10,
        )
        .await;
    }
    let html = reg
        .req(Method::GET, "/ui/r/team/app")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The page has no scripts of its own; the test adds one that measures.
    let probe = "<script>addEventListener('load',()=>{const t=document.querySelector('#tags');\
        const s=t.closest('section');const over=t.getBoundingClientRect().right-s.getBoundingClientRect().right;\
        const p=document.createElement('p');p.id='probe';p.textContent=(over<=0?'FITS':'OVERFLOW '+over)+' '+innerWidth;\
        document.body.appendChild(p);});</script>";
    let html = html.replace("</body>", &format!("{probe}</body>"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("page.html");
    std::fs::write(&file, html).unwrap();
    // `timeout` bounds the browser's run: no test waits forever.
    let chromium = chromium.to_string();
    let url = format!("file://{}", file.display());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("timeout")
            .args([
                "120",
                &chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--window-size=1000,900",
                "--virtual-time-budget=2000",
                "--dump-dom",
                &url,
            ])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let probe = dom
        .split("<p id=\"probe\">")
        .nth(1)
        .and_then(|p| p.split('<').next())
        .unwrap_or_else(|| {
            panic!(
                "no probe in {dom}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(probe.starts_with("FITS 1000"), "{probe}");
}

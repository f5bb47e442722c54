//! kill -9 in the middle of pushes, restart, and check that every acknowledged object
//! is intact and that nothing partial is visible.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::process::{bytes, client, digest, ServerProcess};

#[derive(Clone, Debug)]
enum Ack {
    Blob {
        repo: String,
        digest: String,
    },
    Tag {
        repo: String,
        tag: String,
        manifest: Vec<u8>,
    },
}

/// Pushes images until an error (the server being killed) stops it.
async fn pusher(base: String, worker: u64, acks: Arc<Mutex<Vec<Ack>>>) {
    let http = client();
    let repo = format!("crash/w{worker}");
    for i in 0u64.. {
        let seed = worker * 1_000_000 + i;
        let config = json!({"architecture":"amd64","os":"linux","seed":seed})
            .to_string()
            .into_bytes();
        let layer = bytes(seed, 256 * 1024 + (seed as usize % 3) * 700_000);
        // Config: monolithic.
        let cd = digest(&config);
        let Ok(r) = http
            .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={cd}"))
            .body(config.clone())
            .send()
            .await
        else {
            return;
        };
        if r.status() != StatusCode::CREATED {
            return;
        }
        acks.lock().unwrap().push(Ack::Blob {
            repo: repo.clone(),
            digest: cd.to_string(),
        });
        // Layer: chunked, in three PATCHes.
        let Ok(r) = http
            .post(format!("{base}/v2/{repo}/blobs/uploads/"))
            .send()
            .await
        else {
            return;
        };
        let Some(mut loc) = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned())
        else {
            return;
        };
        let third = layer.len() / 3;
        for (k, chunk) in layer.chunks(third).enumerate() {
            let start = k * third;
            let Ok(r) = http
                .patch(format!("{base}{loc}"))
                .header(
                    "content-range",
                    format!("{}-{}", start, start + chunk.len() - 1),
                )
                .body(chunk.to_vec())
                .send()
                .await
            else {
                return;
            };
            if r.status() != StatusCode::ACCEPTED {
                return;
            }
            loc = r.headers()["location"].to_str().unwrap().to_owned();
        }
        let ld = digest(&layer);
        let sep = if loc.contains('?') { '&' } else { '?' };
        let Ok(r) = http
            .put(format!("{base}{loc}{sep}digest={ld}"))
            .send()
            .await
        else {
            return;
        };
        if r.status() != StatusCode::CREATED {
            return;
        }
        acks.lock().unwrap().push(Ack::Blob {
            repo: repo.clone(),
            digest: ld.to_string(),
        });
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd.to_string(),"size":config.len()},
            "layers": [{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":ld.to_string(),"size":layer.len()}],
        }))
        .unwrap();
        let tag = format!("t{i}");
        let Ok(r) = http
            .put(format!("{base}/v2/{repo}/manifests/{tag}"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .await
        else {
            return;
        };
        if r.status() != StatusCode::CREATED {
            return;
        }
        acks.lock().unwrap().push(Ack::Tag {
            repo: repo.clone(),
            tag,
            manifest,
        });
    }
}

async fn get_ok(http: &reqwest::Client, url: &str) -> Vec<u8> {
    let r = http.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    r.bytes().await.unwrap().to_vec()
}

/// Every tag of every repository points to a manifest whose blobs are all present and
/// whose bytes hash to their digests.
async fn check_consistency(base: &str) -> usize {
    let http = client();
    let catalog: Value =
        serde_json::from_slice(&get_ok(&http, &format!("{base}/v2/_catalog?n=10000")).await)
            .unwrap();
    let mut checked = 0;
    for repo in catalog["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        let tags: Value =
            serde_json::from_slice(&get_ok(&http, &format!("{base}/v2/{repo}/tags/list")).await)
                .unwrap();
        for tag in tags["tags"].as_array().unwrap() {
            let m = get_ok(
                &http,
                &format!("{base}/v2/{repo}/manifests/{}", tag.as_str().unwrap()),
            )
            .await;
            let v: Value = serde_json::from_slice(&m).unwrap();
            let mut descs = vec![v["config"].clone()];
            descs.extend(v["layers"].as_array().unwrap().iter().cloned());
            for d in descs {
                let want = d["digest"].as_str().unwrap();
                let blob = get_ok(&http, &format!("{base}/v2/{repo}/blobs/{want}")).await;
                assert_eq!(
                    digest(&blob).to_string(),
                    want,
                    "blob of {repo}:{tag} is corrupt"
                );
                assert_eq!(blob.len() as u64, d["size"].as_u64().unwrap());
            }
            checked += 1;
        }
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_pushes_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let acks = Arc::new(Mutex::new(Vec::new()));
    for round in 0..3u64 {
        let mut server = ServerProcess::start(dir.path(), &[]);
        let workers: Vec<_> = (0..4)
            .map(|w| tokio::spawn(pusher(server.base.clone(), round * 10 + w, acks.clone())))
            .collect();
        // Let pushes get going, then kill at a moment that varies per round.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while acks.lock().unwrap().len() < (round as usize + 1) * 12 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "pushes made no progress"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(37 * (round + 1))).await;
        server.kill9();
        for w in workers {
            tokio::time::timeout(Duration::from_secs(60), w)
                .await
                .unwrap()
                .unwrap();
        }

        let server = ServerProcess::start(dir.path(), &[]);
        let http = client();
        let snapshot = acks.lock().unwrap().clone();
        for ack in &snapshot {
            match ack {
                Ack::Blob { repo, digest: d } => {
                    let b = get_ok(&http, &format!("{}/v2/{repo}/blobs/{d}", server.base)).await;
                    assert_eq!(
                        &digest(&b).to_string(),
                        d,
                        "acknowledged blob corrupt after kill -9"
                    );
                }
                Ack::Tag {
                    repo,
                    tag,
                    manifest,
                } => {
                    let m =
                        get_ok(&http, &format!("{}/v2/{repo}/manifests/{tag}", server.base)).await;
                    assert_eq!(&m, manifest, "acknowledged manifest changed after kill -9");
                }
            }
        }
        let checked = check_consistency(&server.base).await;
        assert!(
            checked
                >= snapshot
                    .iter()
                    .filter(|a| matches!(a, Ack::Tag { .. }))
                    .count()
        );
        drop(server);
    }
}

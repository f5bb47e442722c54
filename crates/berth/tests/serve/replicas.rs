//! Two `berth serve` processes over one SeaweedFS bucket and one PostgreSQL database:
//! a replica killed with SIGKILL in the middle of a chunk loses nothing the client had
//! been told was stored, and the client finishes the same upload (same location, same
//! upload id) through the other replica. The other replica-pair checks run in process,
//! in `crates/berth-server/tests/it/replicas.rs`.

use std::path::Path;
use std::time::Duration;

use berth_meta::postgres::testing;
use berth_storage::s3::seaweed::{SeaweedFs, ACCESS_KEY, BUCKET, SECRET_KEY};
use reqwest::StatusCode;

use crate::process::{bytes, client, digest, ServerProcess};

/// Starts one replica over the shared bucket prefix, database and token key.
fn replica(data_dir: &Path, s3: &str, prefix: &str, url: &str, key: &Path) -> ServerProcess {
    ServerProcess::start(
        data_dir,
        &[
            "--storage",
            "s3",
            "--s3-bucket",
            BUCKET,
            "--s3-endpoint",
            s3,
            "--s3-region",
            "us-east-1",
            "--s3-prefix",
            prefix,
            "--database-url",
            url,
            "--token-key-file",
            key.to_str().unwrap(),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_survives_the_sigkill_of_its_replica_and_finishes_on_the_other() {
    let Some(s3) = SeaweedFs::shared() else {
        return;
    };
    s3.ready().await;
    let Some(url) = testing::fresh_url() else {
        return;
    };
    // The child processes inherit the S3 credentials, as from a service manager.
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("token.key");
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).unwrap();
    std::fs::write(&key, k).unwrap();
    let prefix = format!("kill-{}", std::process::id());
    let mut a = replica(&tmp.path().join("a"), &s3.endpoint, &prefix, &url, &key);
    let b = replica(&tmp.path().join("b"), &s3.endpoint, &prefix, &url, &key);
    let http = client();

    // The first chunk fills a multipart part and is acknowledged by A.
    let blob = bytes(15, (12 << 20) + 777);
    let first = 6 << 20;
    let r = http
        .post(format!("{}/v2/team/app/blobs/uploads/", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with('/'), "{location}");
    let r = http
        .patch(format!("{}{location}", a.base))
        .header("content-range", format!("0-{}", first - 1))
        .body(blob[..first].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();

    // The second chunk: half of it streamed to A, which is killed before the rest.
    // The channel holds one piece, so once the last piece is sent the ones before it
    // were taken by the connection: A is in the middle of the request.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|piece| (piece, rx))
    }));
    let second = (3 << 20) + first;
    let in_flight = tokio::spawn({
        let (http, url) = (http.clone(), format!("{}{location}", a.base));
        async move {
            http.patch(url)
                .header("content-range", format!("{first}-{}", second - 1))
                .body(body)
                .send()
                .await
        }
    });
    for piece in blob[first..second].chunks(64 << 10) {
        tx.send(Ok(piece.to_vec())).await.unwrap();
    }
    a.kill9();
    let failed = tokio::time::timeout(Duration::from_secs(30), in_flight)
        .await
        .unwrap()
        .unwrap();
    assert!(failed.is_err(), "the request to the killed replica failed");
    drop(tx);

    // B reports what A had acknowledged: the first chunk, nothing of the torn one.
    let r = http
        .get(format!("{}{location}", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["range"], format!("0-{}", first - 1).as_str());
    // The client resumes from there through B and commits.
    let r = http
        .patch(format!("{}{location}", b.base))
        .header("content-range", format!("{first}-{}", blob.len() - 1))
        .body(blob[first..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "{}",
        r.text().await.unwrap()
    );
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let d = digest(&blob);
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = http
        .put(format!("{}{location}{sep}digest={d}", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let got = http
        .get(format!("{}/v2/team/app/blobs/{d}", b.base))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(digest(&got), d, "the blob is whole");

    // A restarted replica over the same bucket and database serves it too.
    let a = replica(&tmp.path().join("a"), &s3.endpoint, &prefix, &url, &key);
    let r = http
        .head(format!("{}/v2/team/app/blobs/{d}", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-length"],
        blob.len().to_string().as_str()
    );
}

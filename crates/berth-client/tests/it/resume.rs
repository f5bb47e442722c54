//! Resume after a dropped connection: a loopback proxy cuts one connection after N
//! bytes, once, in the upload or the download direction.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use berth_client::{copy_image, open_destination, open_source, Clients, CopyOptions, Location};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::fixtures::*;

/// Which way the proxy counts bytes before cutting.
#[derive(Clone, Copy)]
enum Direction {
    Upload,
    Download,
}

struct CutProxy {
    addr: std::net::SocketAddr,
    cuts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`; if `cut` is given and not yet used, stops after that many bytes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Option<(usize, Arc<AtomicBool>, Arc<AtomicUsize>)>,
) {
    let mut buf = vec![0u8; 16 << 10];
    let mut seen = 0usize;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some((limit, used, cuts)) = &cut {
            if !used.load(Ordering::SeqCst) && seen + n > *limit {
                if used.swap(true, Ordering::SeqCst) {
                    // Another connection took the one cut.
                } else {
                    let keep = limit - seen;
                    let _ = to.write_all(&buf[..keep]).await;
                    cuts.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
        }
        seen += n;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn start_proxy(upstream: std::net::SocketAddr, dir: Direction, limit: usize) -> CutProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let used = Arc::new(AtomicBool::new(false));
    let cuts = Arc::new(AtomicUsize::new(0));
    let c2 = cuts.clone();
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let cut = Some((limit, used.clone(), c2.clone()));
            let (up_cut, down_cut) = match dir {
                Direction::Upload => (cut, None),
                Direction::Download => (None, cut),
            };
            tokio::spawn(async move {
                // When either direction stops, drop both: the connection is gone.
                tokio::select! {
                    _ = pump(cr, sw, up_cut) => {}
                    _ = pump(sr, cw, down_cut) => {}
                }
            });
        }
    });
    CutProxy { addr, cuts, task }
}

fn chunky_clients() -> Clients {
    Clients::new(berth_client::ClientOptions {
        chunk_threshold: 64 << 10,
        chunk_size: 64 << 10,
        ..options()
    })
    .unwrap()
}

async fn copy_loc(c: &Clients, src: &str, dst: &str, retries: u32) -> berth_client::CopyReport {
    let s = open_source(c, &Location::parse(src).unwrap())
        .await
        .unwrap();
    let d = open_destination(c, &Location::parse(dst).unwrap(), s.as_ref()).unwrap();
    let o = CopyOptions {
        jobs: 1,
        retries,
        retry_base: std::time::Duration::from_millis(10),
        ..CopyOptions::default()
    };
    copy_image(s.as_ref(), d.as_ref(), &o, quiet())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_upload_resumes_after_a_dropped_connection() {
    let berth = TestBerth::start().await;
    let dist = TestDistribution::start();
    let tmp = tempfile::tempdir().unwrap();
    let c = chunky_clients();
    // One large (incompressible) layer of ~400 KiB: seven chunks.
    let img = image(80, 1, 400 << 10, "amd64", false);
    push_image(&c.registry(&berth.host()).unwrap(), "big", &img, Some("1")).await;
    let layout = tmp.path().join("l");
    copy_loc(
        &c,
        &format!("{}/big:1", berth.host()),
        &format!("oci:{}:1", layout.display()),
        0,
    )
    .await;

    // Berth reports how much of the cut chunk arrived, so copy-level retries are off: the
    // upload resumes inside the chunked upload. Distribution keeps the offset in a signed
    // Location it cannot update after a cut, so there the blob starts over.
    for (upstream, retries) in [(berth.addr, 0), (dist.addr, 2)] {
        let proxy = start_proxy(upstream, Direction::Upload, 200 << 10).await;
        let r = copy_loc(
            &c,
            &format!("oci:{}:1", layout.display()),
            &format!("{}/resumed:1", proxy.addr),
            retries,
        )
        .await;
        assert_eq!(r.digest, img.manifest.digest);
        assert_eq!(
            proxy.cuts.load(Ordering::SeqCst),
            1,
            "the proxy cut one connection"
        );
        let got = berth_client::index::resolve(&c, &image_ref(&upstream.to_string(), "resumed:1"))
            .await
            .unwrap();
        assert_eq!(got, img.manifest.digest);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn download_resumes_with_a_range_request() {
    let berth = TestBerth::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let c = chunky_clients();
    let img = image(81, 1, 300 << 10, "amd64", false);
    push_image(&c.registry(&berth.host()).unwrap(), "big", &img, Some("1")).await;
    let proxy = start_proxy(berth.addr, Direction::Download, 150 << 10).await;
    let r = copy_loc(
        &c,
        &format!("{}/big:1", proxy.addr),
        &format!("oci:{}:1", tmp.path().join("l").display()),
        0,
    )
    .await;
    assert_eq!(r.digest, img.manifest.digest);
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1);
}

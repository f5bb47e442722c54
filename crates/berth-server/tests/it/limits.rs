//! Timeouts and the connection limit: half-sent requests, idle keep-alive connections
//! (HTTP/1.1 and HTTP/2), stalled upload bodies, and more clients than `max_connections`.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::TestRegistry;

/// A registry with timeouts short enough for tests.
async fn start(max_connections: usize) -> TestRegistry {
    // Hundreds of sockets on both ends of the test live in this one process.
    berth_server::listener::raise_open_files_limit().unwrap();
    TestRegistry::start_with(berth_server::Config {
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(3),
        body_idle_timeout: Duration::from_secs(1),
        max_connections: NonZeroUsize::new(max_connections).unwrap(),
        ..berth_server::Config::default()
    })
    .await
}

fn addr(reg: &TestRegistry) -> String {
    reg.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (end of stream or reset), for at most
/// `limit`; returns what was read and when the stream ended.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the server kept the connection open for {limit:?}"));
    (got, Instant::now())
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body) and returns its head.
async fn read_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    return head;
                }
            }
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before a whole response");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("no response within 5s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_closed_after_the_header_timeout_while_others_are_served() {
    let reg = start(4096).await;
    let addr = addr(&reg);
    let started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /v2/ HT").await.unwrap();
        stalled.push(tokio::spawn(async move {
            read_to_close(&mut s, Duration::from_secs(6)).await.1
        }));
    }
    // Normal requests keep being answered during the flood.
    let mut served = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        let r = tokio::time::timeout(Duration::from_secs(2), reg.req(Method::GET, "/v2/").send())
            .await
            .expect("GET /v2/ not answered within 2s during the flood")
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served >= 10, "only {served} requests served");
    for t in stalled {
        let closed = t.await.unwrap().duration_since(started);
        // Header timeout (1s), the grace to close (1s), and scheduling slack.
        assert!(closed < Duration::from_secs(4), "closed after {closed:?}");
        assert!(
            closed >= Duration::from_millis(900),
            "closed after {closed:?}"
        );
    }
    let r = reg.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let reg = start(4096).await;
    let mut s = TcpStream::connect(addr(&reg)).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n\r\n")
            .await
            .unwrap();
        let head = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let idle = Instant::now();
    let (rest, closed) = read_to_close(&mut s, Duration::from_secs(6)).await;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    let after = closed.duration_since(idle);
    // Idle (3s), not the header timeout (1s): no request had begun.
    assert!(
        after >= Duration::from_millis(2800),
        "closed after {after:?}"
    );
    assert!(after < Duration::from_secs(5), "closed after {after:?}");
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let reg = start(4096).await;
    let tcp = TcpStream::connect(addr(&reg)).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
        Instant::now()
    });
    let req = http::Request::get(format!("{}/v2/", reg.base))
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), resp)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), http::StatusCode::OK);
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        chunk.unwrap();
    }
    let idle = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(6), conn)
        .await
        .expect("the idle HTTP/2 connection stayed open")
        .unwrap();
    let after = closed.duration_since(idle);
    assert!(
        after >= Duration::from_millis(2800),
        "closed after {after:?}"
    );
    assert!(after < Duration::from_secs(5), "closed after {after:?}");
}

#[tokio::test]
async fn a_stalled_upload_body_is_cut_and_stays_resumable() {
    let reg = start(4096).await;
    let r = reg
        .req(Method::POST, "/v2/stall/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();

    let mut s = TcpStream::connect(addr(&reg)).await.unwrap();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: registry\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[7u8; 300]).await.unwrap();
    let stalled = Instant::now();
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    let after = closed.duration_since(stalled);
    // Body idle timeout (1s), the grace to close (1s), and slack.
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );
    assert!(after < Duration::from_secs(4), "closed after {after:?}");

    let r = reg.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["range"], "0-299");
    // The session is free again: the rest can be appended.
    let r = reg
        .req(Method::PATCH, &loc)
        .header("content-range", "300-999")
        .body(vec![7u8; 700])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["range"], "0-999");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_wait_and_are_served_once_others_close() {
    let reg = start(20).await;
    let addr = addr(&reg);
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n\r\n")
            .await
            .unwrap();
        clients.push(tokio::spawn(async move {
            let head = read_response(&mut s).await;
            (head, Instant::now(), s)
        }));
    }
    let mut answered = Vec::new();
    for c in clients {
        let (head, at, s) = c.await.unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        answered.push((at.duration_since(started), s));
    }
    // Twenty are served at once; the other twenty wait in the backlog until the first
    // ones are closed as idle (3s), then are served in turn.
    let early = answered
        .iter()
        .filter(|(at, _)| *at < Duration::from_millis(1500))
        .count();
    assert_eq!(
        early,
        20,
        "{:?}",
        answered.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    let last = answered.iter().map(|a| a.0).max().unwrap();
    assert!(
        last < Duration::from_secs(5),
        "last answered after {last:?}"
    );
    // Once the clients hang up, a newcomer is served at once.
    drop(answered);
    let r = tokio::time::timeout(Duration::from_secs(3), reg.req(Method::GET, "/v2/").send())
        .await
        .expect("a later client was not served")
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// GETs `path` on an HTTP/2 connection (waiting for a free stream first, as clients
/// must), releasing flow-control capacity as the body arrives; the body's length.
async fn h2_get_len(client: h2::client::SendRequest<bytes::Bytes>, base: &str, path: &str) -> u64 {
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get(format!("{base}{path}"))
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), http::StatusCode::OK);
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        n += chunk.len() as u64;
        body.flow_control().release_capacity(chunk.len()).unwrap();
    }
    n
}

#[tokio::test]
async fn http2_states_its_stream_limit_and_serves_more_requests_than_it_in_turn() {
    let reg = TestRegistry::start().await;
    let blob = vec![7u8; 200 << 10];
    let digest = reg.push_blob("h2/limit", &blob).await;
    let path = format!("/v2/h2/limit/blobs/{digest}");
    let tcp = TcpStream::connect(addr(&reg)).await.unwrap();
    let (client, mut conn) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(32 << 20)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let driver = tokio::spawn(async move {
        tokio::select! {
            r = &mut conn => panic!("the connection ended early: {r:?}"),
            _ = done_rx => conn.max_concurrent_send_streams(),
        }
    });
    // One request first: the server's SETTINGS arrive before its response, so the
    // client knows the limit before it opens the rest.
    let first = tokio::time::timeout(
        Duration::from_secs(10),
        h2_get_len(client.clone(), &reg.base, &path),
    )
    .await
    .unwrap();
    assert_eq!(first, blob.len() as u64);
    let want = berth_server::listener::H2_MAX_CONCURRENT_STREAMS as usize * 3 / 2;
    let tasks: Vec<_> = (0..want)
        .map(|_| {
            let (client, base, path) = (client.clone(), reg.base.clone(), path.clone());
            tokio::spawn(async move { h2_get_len(client, &base, &path).await })
        })
        .collect();
    for t in tasks {
        let n = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("every request past the limit is served in turn")
            .unwrap();
        assert_eq!(n, blob.len() as u64);
    }
    done_tx.send(()).unwrap();
    let advertised = driver.await.unwrap();
    assert_eq!(
        advertised,
        berth_server::listener::H2_MAX_CONCURRENT_STREAMS as usize,
        "SETTINGS_MAX_CONCURRENT_STREAMS"
    );
}

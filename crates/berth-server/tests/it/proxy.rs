//! The real client address behind a trusted reverse proxy: forwarding headers from a
//! listed proxy set the address used for lockouts, the audit log and `/metrics`; the
//! same headers from any other peer are ignored. (The test client is on 127.0.0.1, so
//! "trusted" and "not trusted" are 127.0.0.1 listed or not; the rules for other
//! addresses are unit-tested in `berth_auth::proxy`.)

use base64::Engine as _;
use berth_server::accounts::Admin;
use reqwest::{Method, StatusCode};

use crate::common::TestRegistry;

const PW: &str = "password-123";

fn basic(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

async fn with_alice(config: berth_server::Config) -> (TestRegistry, Admin) {
    let reg = TestRegistry::start_with(config).await;
    let admin = Admin::open_dir(reg.data_dir(), "test").unwrap();
    admin
        .user_add("alice", PW, &["team/*:pull".parse().unwrap()])
        .await
        .unwrap();
    reg.state.auth.invalidate();
    (reg, admin)
}

/// A `/token` login as alice, through a "proxy" that says the client is `forwarded`.
async fn login(reg: &TestRegistry, pw: &str, header: (&str, &str)) -> StatusCode {
    reg.req(Method::GET, "/token?service=berth")
        .header("authorization", basic("alice", pw))
        .header(header.0, header.1)
        .send()
        .await
        .unwrap()
        .status()
}

fn trusting_loopback() -> berth_server::Config {
    berth_server::Config {
        trusted_proxies: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_for_lockout_and_audit() {
    let (reg, admin) = with_alice(trusting_loopback()).await;
    let from = |ip: &'static str| ("x-forwarded-for", ip);
    for _ in 0..10 {
        assert_eq!(
            login(&reg, "wrong-guess", from("203.0.113.7")).await,
            StatusCode::UNAUTHORIZED
        );
    }
    // That client is locked out, even with the right password...
    assert_eq!(
        login(&reg, PW, from("203.0.113.7")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // ... while alice behind the same proxy, from elsewhere, logs in.
    assert_eq!(login(&reg, PW, from("203.0.113.8")).await, StatusCode::OK);
    // RFC 7239 `Forwarded` is believed too, and wins over X-Forwarded-For.
    let r = reg
        .req(Method::GET, "/token?service=berth")
        .header("authorization", basic("alice", PW))
        .header("forwarded", "for=\"[2001:db8::5]:4711\";proto=https")
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let log = admin.audit_log(0, 1000).await.unwrap();
    let failed: Vec<_> = log.iter().filter(|e| e.action == "login_failed").collect();
    assert_eq!(failed.len(), 10);
    assert!(
        failed.iter().all(|e| e.client == "203.0.113.7"),
        "{failed:?}"
    );
    assert!(log
        .iter()
        .any(|e| e.action == "login_rate_limited" && e.client == "203.0.113.7"));
    let logins: Vec<&str> = log
        .iter()
        .filter(|e| e.action == "login")
        .map(|e| e.client.as_str())
        .collect();
    assert_eq!(logins, ["203.0.113.8", "2001:db8::5"]);
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let (reg, admin) = with_alice(berth_server::Config::default()).await;
    for i in 0..10 {
        // A client cannot escape its lockout by claiming another address each time.
        let claimed = format!("198.51.100.{i}");
        let r = reg
            .req(Method::GET, "/token?service=berth")
            .header("authorization", basic("alice", "wrong-guess"))
            .header("x-forwarded-for", &claimed)
            .header("forwarded", format!("for={claimed}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        login(&reg, PW, ("x-forwarded-for", "198.51.100.99")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let log = admin.audit_log(0, 1000).await.unwrap();
    assert!(log
        .iter()
        .filter(|e| e.action.starts_with("login"))
        .all(|e| e.client == "127.0.0.1"));
}

#[tokio::test]
async fn metrics_open_applies_to_the_real_client_address() {
    let config = berth_server::Config {
        metrics_open: true,
        ..trusting_loopback()
    };
    let (reg, _admin) = with_alice(config).await;
    let metrics = |xff: Option<&'static str>| {
        let mut rb = reg.req(Method::GET, "/metrics");
        if let Some(v) = xff {
            rb = rb.header("x-forwarded-for", v);
        }
        async move { rb.send().await.unwrap().status() }
    };
    assert_eq!(metrics(None).await, StatusCode::OK, "a loopback client");
    assert_eq!(
        metrics(Some("127.0.0.1")).await,
        StatusCode::OK,
        "a loopback client behind the proxy"
    );
    assert_eq!(
        metrics(Some("203.0.113.9")).await,
        StatusCode::UNAUTHORIZED,
        "a remote client behind the local proxy is not loopback"
    );
}

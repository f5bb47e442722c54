//! Access control: the permission matrix over every endpoint, the token flow, rate
//! limiting, catalog filtering and the audit log.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use berth_auth::token::{Access, Claims, TokenKey};
use berth_auth::Scope;
use berth_oci::Digest;
use berth_server::accounts::Admin;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::{image_manifest, TestRegistry, OCI_MANIFEST};

const PW: &str = "password-123";

fn basic(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A registry with content pushed while open, then the accounts of the matrix.
async fn setup() -> (TestRegistry, Admin, Digest, Digest, String) {
    let reg = TestRegistry::start().await;
    let (_, manifest) = reg.push_image("team/app", "v1", "t").await;
    let (_, pub_manifest) = reg.push_image("pub/lib", "v1", "p").await;
    reg.push_image("other/x", "v1", "o").await;
    let layer = reg.push_blob("team/app", b"a layer").await;
    // An upload session to address the session endpoints.
    let r = reg
        .req(Method::POST, "/v2/team/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let upload = r.headers()["location"].to_str().unwrap().to_owned();

    let admin = Admin::open_dir(reg.data_dir(), "test").unwrap();
    let g = |s: &str| vec![s.parse().unwrap()];
    admin
        .user_add("reader", PW, &g("team/*:pull"))
        .await
        .unwrap();
    admin
        .user_add("writer", PW, &g("team/*:pull,push"))
        .await
        .unwrap();
    admin
        .user_add("deleter", PW, &g("team/*:pull,delete"))
        .await
        .unwrap();
    admin.user_add("boss", PW, &g("*:admin")).await.unwrap();
    admin
        .user_add("outsider", PW, &g("other/*:pull,push"))
        .await
        .unwrap();
    admin
        .user_add("gone", PW, &g("team/*:pull,push"))
        .await
        .unwrap();
    admin.set_disabled("gone", true).await.unwrap();
    admin
        .public_add(&berth_auth::Pattern::parse("pub/*").unwrap())
        .await
        .unwrap();
    // The accounts were changed beside the server: drop what it cached.
    reg.state.auth.invalidate();
    let _ = pub_manifest;
    (reg, admin, manifest, layer, upload)
}

fn server_key(reg: &TestRegistry) -> TokenKey {
    TokenKey::from_bytes(std::fs::read(reg.data_dir().join("token.key")).unwrap()).unwrap()
}

fn claims(sub: &str, scope: &str, exp: u64) -> Claims {
    Claims {
        iss: "berth".into(),
        sub: sub.into(),
        aud: "berth".into(),
        exp,
        nbf: now() - 5,
        iat: now() - 5,
        jti: "t".into(),
        access: vec![Access::from_scope(&Scope::parse(scope).unwrap())],
    }
}

#[tokio::test]
async fn permission_matrix() {
    let (reg, admin, manifest, layer, upload) = setup().await;
    let robot_secret = admin
        .robot_create(
            "oldbot",
            &["team/*:pull,push".parse().unwrap()],
            Some(Duration::from_secs(0)),
        )
        .await
        .unwrap();
    let key = server_key(&reg);
    let forged = TokenKey::from_bytes(vec![9; 32]).unwrap();
    let principals: Vec<(&str, Option<String>)> = vec![
        ("anonymous", None),
        ("reader", Some(basic("reader", PW))),
        ("writer", Some(basic("writer", PW))),
        ("deleter", Some(basic("deleter", PW))),
        ("admin", Some(basic("boss", PW))),
        ("outsider", Some(basic("outsider", PW))),
        ("expired-robot", Some(basic("oldbot", &robot_secret))),
        ("disabled", Some(basic("gone", PW))),
        ("wrong-password", Some(basic("writer", "not the password"))),
        (
            "forged-token",
            Some(format!(
                "Bearer {}",
                forged
                    .sign(&claims(
                        "boss",
                        "repository:team/app:pull,push,delete",
                        now() + 300
                    ))
                    .unwrap()
            )),
        ),
        (
            "other-scope-token",
            Some(format!(
                "Bearer {}",
                key.sign(&claims(
                    "writer",
                    "repository:other/x:pull,push",
                    now() + 300
                ))
                .unwrap()
            )),
        ),
        (
            "expired-token",
            Some(format!(
                "Bearer {}",
                key.sign(&claims(
                    "writer",
                    "repository:team/app:pull,push",
                    now() - 1
                ))
                .unwrap()
            )),
        ),
        (
            "pull-token",
            Some(format!(
                "Bearer {}",
                key.sign(&claims("reader", "repository:team/app:pull", now() + 300))
                    .unwrap()
            )),
        ),
    ];
    // (label, method, path, body, action) on the private repository team/app.
    let cells: Vec<(&str, Method, String, Option<Vec<u8>>)> = vec![
        (
            "get-manifest",
            Method::GET,
            "/v2/team/app/manifests/v1".into(),
            None,
        ),
        (
            "head-manifest",
            Method::HEAD,
            format!("/v2/team/app/manifests/{manifest}"),
            None,
        ),
        (
            "get-blob",
            Method::GET,
            format!("/v2/team/app/blobs/{layer}"),
            None,
        ),
        (
            "head-blob",
            Method::HEAD,
            format!("/v2/team/app/blobs/{layer}"),
            None,
        ),
        ("tags", Method::GET, "/v2/team/app/tags/list".into(), None),
        (
            "stats",
            Method::GET,
            "/api/v1/stats/repositories/team/app?by=version".into(),
            None,
        ),
        (
            "referrers",
            Method::GET,
            format!("/v2/team/app/referrers/{manifest}"),
            None,
        ),
        (
            "start-upload",
            Method::POST,
            "/v2/team/app/blobs/uploads/".into(),
            None,
        ),
        ("upload-status", Method::GET, upload.clone(), None),
        (
            "put-manifest",
            Method::PUT,
            "/v2/team/app/manifests/v2".into(),
            Some(b"{}".to_vec()),
        ),
        (
            "delete-tag",
            Method::DELETE,
            "/v2/team/app/manifests/nonexistent".into(),
            None,
        ),
        (
            "delete-blob",
            Method::DELETE,
            format!("/v2/team/app/blobs/{}", Digest::sha256(b"none")),
            None,
        ),
    ];
    let action = |label: &str| match label {
        "start-upload" | "upload-status" | "put-manifest" => "push",
        "delete-tag" | "delete-blob" => "delete",
        _ => "pull",
    };
    // Expected: A = allowed (anything but 401/403/429), U = 401 (or 429 once an account
    // with bad credentials is locked out after repeated failures), F = 403.
    let expect = |who: &str, act: &str| -> char {
        match (who, act) {
            ("admin", _) => 'A',
            ("reader", "pull") | ("writer", "pull" | "push") | ("deleter", "pull" | "delete") => {
                'A'
            }
            ("pull-token", "pull") => 'A',
            ("reader" | "writer" | "deleter" | "outsider", _) => 'F',
            _ => 'U',
        }
    };
    let mut failures = Vec::new();
    for (who, auth) in &principals {
        for (label, method, path, body) in &cells {
            let mut rb = reg.req(method.clone(), path);
            if let Some(a) = auth {
                rb = rb.header("authorization", a);
            }
            if let Some(b) = body {
                rb = rb.header("content-type", OCI_MANIFEST).body(b.clone());
            }
            let status = rb.send().await.unwrap().status();
            let got = match status {
                StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS => 'U',
                StatusCode::FORBIDDEN => 'F',
                _ => 'A',
            };
            let want = expect(who, action(label));
            if got != want {
                failures.push(format!(
                    "{who:>18} {label:<14} want {want} got {got} ({status})"
                ));
            }
            // No cell leaks existence: a refusal is the same for a repository that does
            // not exist.
            if want != 'A' {
                let ghost = path.replace("team/app", "team/ghost");
                let mut rb = reg.req(method.clone(), &ghost);
                if let Some(a) = auth {
                    rb = rb.header("authorization", a);
                }
                if let Some(b) = body {
                    rb = rb.header("content-type", OCI_MANIFEST).body(b.clone());
                }
                let s2 = rb.send().await.unwrap().status();
                if s2 != status {
                    failures.push(format!(
                        "{who:>18} {label:<14} leaks existence: {status} vs {s2}"
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "permission matrix mismatches:\n{}",
        failures.join("\n")
    );

    // Public repositories: anonymous pull yes, push no.
    let r = reg
        .req(Method::GET, "/v2/pub/lib/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = reg
        .req(Method::POST, "/v2/pub/lib/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The version check asks anonymous callers to log in, and accepts valid credentials.
    let r = reg.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = reg
        .req(Method::GET, "/v2/")
        .header("authorization", basic("reader", PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn token_flow_grants_only_what_is_allowed() {
    let (reg, _admin, _, _, _) = setup().await;
    // The challenge names the realm, the service and the scope.
    let r = reg
        .req(Method::POST, "/v2/team/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let host = reg.base.trim_start_matches("http://");
    assert_eq!(
        r.headers()["www-authenticate"],
        format!("Bearer realm=\"http://{host}/token\",service=\"berth\",scope=\"repository:team/app:pull,push\"").as_str()
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "UNAUTHORIZED");

    let r = reg
        .req(Method::GET, "/token?service=berth&scope=repository:team/app:pull,push,delete&scope=repository:other/x:pull")
        .header("authorization", basic("writer", PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let token = v["token"].as_str().unwrap().to_owned();
    assert_eq!(v["access_token"], v["token"]);
    assert_eq!(v["expires_in"], 300);
    assert!(v["issued_at"].as_str().unwrap().ends_with('Z'));
    let claims = server_key(&reg).verify(&token, "berth", now()).unwrap();
    assert_eq!(claims.sub, "writer");
    assert_eq!(
        claims.access.len(),
        1,
        "nothing on other/x: {:?}",
        claims.access
    );
    assert_eq!(
        claims.access[0].actions,
        ["pull", "push"],
        "delete was not granted"
    );

    // The token pushes.
    let bearer = format!("Bearer {token}");
    let r = reg
        .req(Method::POST, "/v2/team/app/blobs/uploads/")
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // But does not delete: 401 insufficient_scope, so the client asks for a new token.
    let r = reg
        .req(Method::DELETE, "/v2/team/app/manifests/v1")
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("error=\"insufficient_scope\""));

    // Anonymous tokens carry public pulls only.
    let v: Value = reg
        .req(
            Method::GET,
            "/token?scope=repository:pub/lib:pull,push&scope=repository:team/app:pull",
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let claims = server_key(&reg)
        .verify(v["token"].as_str().unwrap(), "berth", now())
        .unwrap();
    assert_eq!(claims.access.len(), 1);
    assert_eq!(claims.access[0].name, "pub/lib");
    assert_eq!(claims.access[0].actions, ["pull"]);

    // The OAuth2 password grant.
    let r = reg
        .req(Method::POST, "/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=password&username=reader&password={PW}&scope=repository%3Ateam%2Fapp%3Apull&service=berth"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert!(v["access_token"].as_str().is_some());
    // Wrong credentials: 401 and no secret echoed back.
    let r = reg
        .req(Method::GET, "/token")
        .header("authorization", basic("reader", "hunter2-wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(!r.text().await.unwrap().contains("hunter2"));
}

#[tokio::test]
async fn failed_logins_are_rate_limited_and_audited() {
    let (reg, admin, _, _, _) = setup().await;
    for _ in 0..10 {
        let r = reg
            .req(Method::GET, "/token")
            .header("authorization", basic("reader", "bad-guess-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Locked out, even with the right password.
    let r = reg
        .req(Method::GET, "/token")
        .header("authorization", basic("reader", PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let r = reg
        .req(Method::GET, "/v2/team/app/tags/list")
        .header("authorization", basic("reader", PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

    // A push is audited with who did it.
    let c = Digest::sha256(b"{}");
    let auth = basic("boss", PW);
    reg.req(
        Method::POST,
        &format!("/v2/team/app/blobs/uploads/?digest={c}"),
    )
    .header("authorization", &auth)
    .body("{}")
    .send()
    .await
    .unwrap();
    let m = image_manifest(&c, 2, &[], None);
    let r = reg
        .req(Method::PUT, "/v2/team/app/manifests/audited")
        .header("authorization", &auth)
        .header("content-type", OCI_MANIFEST)
        .body(m)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let log = admin.audit_log(0, 1000).await.unwrap();
    assert!(
        log.iter()
            .filter(|e| e.action == "login_failed" && e.actor == "reader")
            .count()
            >= 10
    );
    assert!(log.iter().any(|e| e.action == "login_rate_limited"));
    assert!(log
        .iter()
        .any(|e| e.action == "push" && e.actor == "boss" && e.detail.contains("audited")));
    assert!(log
        .iter()
        .all(|e| !e.detail.contains(PW) && !e.detail.contains("bad-guess")));
}

#[tokio::test]
async fn catalog_shows_only_pullable_repositories() {
    let (reg, _admin, _, _, _) = setup().await;
    let list = |auth: Option<String>| {
        let mut rb = reg.req(Method::GET, "/v2/_catalog");
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        async move {
            let v: Value = rb.send().await.unwrap().json().await.unwrap();
            v["repositories"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(None).await, ["pub/lib"]);
    assert_eq!(
        list(Some(basic("reader", PW))).await,
        ["pub/lib", "team/app"]
    );
    assert_eq!(
        list(Some(basic("outsider", PW))).await,
        ["other/x", "pub/lib"]
    );
    assert_eq!(
        list(Some(basic("boss", PW))).await,
        ["other/x", "pub/lib", "team/app"]
    );
    // With a token, the catalog follows the token's account.
    let v: Value = reg
        .req(Method::GET, "/token?scope=registry:catalog:*")
        .header("authorization", basic("outsider", PW))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list(Some(format!("Bearer {}", v["token"].as_str().unwrap()))).await,
        ["other/x", "pub/lib"]
    );
}

/// Polls `probe` until it answers `want`, for at most `limit`; returns how long it took.
async fn until_status(
    limit: Duration,
    want: StatusCode,
    probe: impl Fn() -> reqwest::RequestBuilder,
) -> Duration {
    let start = std::time::Instant::now();
    loop {
        let status = probe().send().await.unwrap().status();
        if status == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "still {status} after {limit:?}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn token_for(reg: &TestRegistry, user: &str, scope: &str) -> String {
    let v: Value = reg
        .req(Method::GET, &format!("/token?scope={scope}"))
        .header("authorization", basic(user, PW))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    format!("Bearer {}", v["token"].as_str().unwrap())
}

#[tokio::test]
async fn revoked_accounts_and_grants_stop_their_tokens_within_a_second() {
    let (reg, admin, _, _, _) = setup().await;
    let writer = token_for(&reg, "writer", "repository:team/app:pull,push").await;
    let reader = token_for(&reg, "reader", "repository:team/app:pull").await;
    let push = |bearer: &str| {
        reg.req(Method::POST, "/v2/team/app/blobs/uploads/")
            .header("authorization", bearer.to_owned())
    };
    let pull = |bearer: &str| {
        reg.req(Method::GET, "/v2/team/app/tags/list")
            .header("authorization", bearer.to_owned())
    };
    assert_eq!(
        push(&writer).send().await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(pull(&reader).send().await.unwrap().status(), StatusCode::OK);

    // A disabled account's live token stops working within the account cache's bound.
    admin.set_disabled("writer", true).await.unwrap();
    let took = until_status(Duration::from_secs(3), StatusCode::UNAUTHORIZED, || {
        push(&writer)
    })
    .await;
    assert!(
        took <= berth_server::auth::ACCOUNT_TTL + Duration::from_millis(500),
        "{took:?}"
    );
    let r = push(&writer).send().await.unwrap();
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));

    // A removed grant stops a token that still carries it.
    admin
        .revoke("reader", &berth_auth::Pattern::parse("team/*").unwrap())
        .await
        .unwrap();
    let took = until_status(Duration::from_secs(3), StatusCode::UNAUTHORIZED, || {
        pull(&reader)
    })
    .await;
    assert!(
        took <= berth_server::auth::ACCOUNT_TTL + Duration::from_millis(500),
        "{took:?}"
    );

    // Basic credentials follow the same bound.
    admin.set_disabled("boss", true).await.unwrap();
    until_status(Duration::from_secs(3), StatusCode::UNAUTHORIZED, || {
        reg.req(Method::GET, "/v2/team/app/tags/list")
            .header("authorization", basic("boss", PW))
    })
    .await;
}

#[tokio::test]
async fn a_token_lists_the_catalog_only_with_the_catalog_scope() {
    let (reg, _admin, _, _, _) = setup().await;
    let repo_only = token_for(&reg, "boss", "repository:team/app:pull").await;
    let r = reg
        .req(Method::GET, "/v2/_catalog")
        .header("authorization", repo_only)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains("scope=\"registry:catalog:*\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    let catalog = token_for(&reg, "reader", "registry:catalog:*").await;
    let v: Value = reg
        .req(Method::GET, "/v2/_catalog")
        .header("authorization", catalog)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["repositories"],
        serde_json::json!(["pub/lib", "team/app"])
    );
}

//! Token and Basic auth against a small fake registry, with credentials from a Docker
//! config file.

use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use berth_client::auth::{Credentials, DockerConfig};
use berth_client::{ClientError, ClientOptions, Clients};
use berth_oci::RepoName;

#[derive(Clone)]
struct Fake {
    addr: std::net::SocketAddr,
    bearer: bool,
    scopes: Arc<Mutex<Vec<String>>>,
}

const USER: &str = "alice";
const PASS: &str = "s3cret";

fn basic_ok(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok())
        == Some(
            Credentials {
                username: USER.into(),
                password: PASS.into(),
            }
            .basic_header()
            .as_str(),
        )
}

async fn token(
    State(f): State<Fake>,
    h: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    if !basic_ok(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let scope: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .collect();
    assert!(q.iter().any(|(k, v)| k == "service" && v == "fake"));
    f.scopes.lock().unwrap().extend(scope);
    axum::Json(serde_json::json!({"token": "good-token"})).into_response()
}

async fn tags(State(f): State<Fake>, h: HeaderMap) -> Response {
    let auth = h.get("authorization").and_then(|v| v.to_str().ok());
    let ok = if f.bearer {
        auth == Some("Bearer good-token")
    } else {
        basic_ok(&h)
    };
    if ok {
        return axum::Json(serde_json::json!({"name": "app", "tags": ["a", "b"]})).into_response();
    }
    let challenge = if f.bearer {
        format!(
            r#"Bearer realm="http://{}/token",service="fake",scope="repository:app:pull""#,
            f.addr
        )
    } else {
        r#"Basic realm="fake""#.to_owned()
    };
    (
        StatusCode::UNAUTHORIZED,
        [("www-authenticate", challenge)],
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
    )
        .into_response()
}

async fn start(bearer: bool) -> Fake {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = Fake {
        addr: listener.local_addr().unwrap(),
        bearer,
        scopes: Arc::default(),
    };
    let app = Router::new()
        .route("/token", get(token))
        .route("/v2/app/tags/list", get(tags))
        .route("/v2/", get(tags))
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    fake
}

fn clients_with(config: &std::path::Path) -> Clients {
    Clients::new(ClientOptions {
        docker_config: Some(config.to_owned()),
        ..crate::fixtures::options()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn token_and_basic_auth_with_docker_config_credentials() {
    for bearer in [true, false] {
        let fake = start(bearer).await;
        let host = fake.addr.to_string();
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.json");
        let repo = RepoName::parse("app").unwrap();

        // No credentials: a clear auth failure.
        let e = clients_with(&cfg)
            .registry(&host)
            .unwrap()
            .tags(&repo)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Auth { .. }), "{e}");
        assert_eq!(e.exit_code(), 4);

        // Wrong credentials: refused too.
        let mut c = DockerConfig::load(&cfg).unwrap();
        c.set_credentials(
            &host,
            &Credentials {
                username: USER.into(),
                password: "wrong".into(),
            },
        );
        c.save().unwrap();
        let e = clients_with(&cfg)
            .registry(&host)
            .unwrap()
            .tags(&repo)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Auth { .. }), "{e}");

        // Right credentials, stored as a base64 auth entry.
        c.set_credentials(
            &host,
            &Credentials {
                username: USER.into(),
                password: PASS.into(),
            },
        );
        c.save().unwrap();
        let text = std::fs::read_to_string(&cfg).unwrap();
        assert!(text.contains(&berth_client::auth::encode_auth(USER, PASS)));
        let reg = clients_with(&cfg).registry(&host).unwrap();
        assert_eq!(reg.tags(&repo).await.unwrap(), ["a", "b"]);
        assert_eq!(reg.tags(&repo).await.unwrap(), ["a", "b"]);
        if bearer {
            // One token fetch for the scope, then the cached token.
            assert_eq!(*fake.scopes.lock().unwrap(), ["repository:app:pull"]);
        }
        reg.ping().await.unwrap();
    }
}

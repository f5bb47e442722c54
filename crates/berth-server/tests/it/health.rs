//! `/healthz` and `/readyz` on the default backend (SQLite); the PostgreSQL outage
//! cases are in `postgres.rs`.

use reqwest::{Method, StatusCode};

use crate::common::TestRegistry;

/// On SQLite both probes answer 200, without any account (its ping is a query of the
/// open file).
#[tokio::test]
async fn probes_answer_on_sqlite() {
    let reg = TestRegistry::start().await;
    for (path, body) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
        let r = reg.req(Method::GET, path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.text().await.unwrap(), body);
    }
}

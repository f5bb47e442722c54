//! HTTP routes: `/v2/` and one dispatcher for every `/v2/<name>/...` resource.
//!
//! Handlers are thin: they read the request, call [`crate::service`], and write the
//! response headers the spec requires. One file per OCI resource.
//!
//! Every `/v2/<name>/...` request goes through [`dispatch`]: the path is parsed into an
//! [`Endpoint`], the caller authenticated, and the action the endpoint needs checked
//! before anything is looked up. The other routes (`/v2/`, `/token`, `/metrics`, the
//! stats API, the scan API, the stale-base API, tarball downloads and the dashboard) each authenticate with the same [`crate::auth::Auth`]
//! and decide what their resource needs; `/healthz` and `/readyz` (probes) need none.

mod admin;
mod admin_accounts;
mod base;
mod blobs;
mod catalog;
mod export;
mod health;
mod manifests;
mod referrers;
mod scan;
mod stale;
mod stats;
mod tags;
mod token;
mod ui;
mod uploads;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use berth_storage::ByteStream;
use futures_util::TryStreamExt;

use std::net::{IpAddr, Ipv4Addr};

use berth_auth::Action;

use crate::auth::{AuthError, Principal};
use crate::backends::META_LOST;
use crate::endpoint::{Endpoint, EndpointError};
use crate::error::{ApiError, ApiResult};
use crate::events::{Actor, Event};
use crate::listener::ClientAddr;
use crate::service::RegistryError;
use crate::AppState;

/// Builds the router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v2", get(base::version_check))
        .route("/v2/", get(base::version_check))
        .route("/v2/{*rest}", any(dispatch))
        .route("/token", get(token::get).post(token::post))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/stats/top", get(stats::top))
        .route("/api/v1/stale", get(stale::list))
        .route("/api/v1/export/{*target}", get(export::get))
        .route("/api/v1/admin/gc", get(admin::gc_runs).post(admin::gc))
        .route("/api/v1/admin/gc/explain/{digest}", get(admin::explain))
        .route("/api/v1/admin/accounts", get(admin_accounts::accounts))
        .route(
            "/api/v1/admin/accounts/{name}",
            axum::routing::patch(admin_accounts::account_change)
                .delete(admin_accounts::account_delete),
        )
        .route(
            "/api/v1/admin/accounts/{name}/grants",
            axum::routing::post(admin_accounts::grant).delete(admin_accounts::revoke),
        )
        .route(
            "/api/v1/admin/users",
            axum::routing::post(admin_accounts::user_add),
        )
        .route(
            "/api/v1/admin/robots",
            axum::routing::post(admin_accounts::robot_create),
        )
        .route(
            "/api/v1/admin/robots/{name}/rotate",
            axum::routing::post(admin_accounts::robot_rotate),
        )
        .route(
            "/api/v1/admin/public",
            get(admin_accounts::public_list)
                .post(admin_accounts::public_add)
                .delete(admin_accounts::public_remove),
        )
        .route("/api/v1/admin/audit", get(admin_accounts::audit))
        .route("/api/v1/admin/usage", get(admin::usage))
        .route("/api/v1/admin/webhooks", get(admin::webhooks))
        .route(
            "/api/v1/admin/scan/rematch",
            axum::routing::post(scan::rematch),
        )
        .route(
            "/api/v1/admin/webhooks/{name}/redeliver",
            axum::routing::post(admin::webhook_redeliver),
        )
        .route(
            "/api/v1/admin/webhooks/{name}/ping",
            axum::routing::post(admin::webhook_ping),
        )
        .route("/api/v1/admin/replication", get(admin::replication))
        .route(
            "/api/v1/admin/replication/{name}/sync",
            axum::routing::post(admin::replication_sync),
        )
        // A browser pointed at the registry lands on the dashboard; temporary, so
        // nothing caches it should `/` ever serve something else.
        .route(
            "/",
            get(|| async { axum::response::Redirect::temporary("/ui/") }),
        )
        .route(
            "/ui",
            get(|| async { axum::response::Redirect::permanent("/ui/") }),
        )
        .route("/ui/", get(ui::index))
        .route("/ui/login", get(ui::login))
        .route("/ui/admin", get(ui::admin))
        .route("/ui/r/{*name}", get(ui::repository))
        .route("/api/v1/stats/repositories/{*name}", get(stats::repository))
        .route("/api/v1/scan/{*target}", get(scan::get))
        .fallback(not_found)
        .with_state(state)
}

/// Says which API every response speaks (the access-log middleware calls it, so one
/// layer does what three did: a layer costs an allocation and a clone per request).
pub fn add_api_version(resp: &mut Response) {
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
}

async fn not_found(req: Request) -> ApiError {
    EndpointError::NoRoute(req.uri().path().to_owned()).into()
}

/// Parsed query string; keys may repeat (`?tag=a&tag=b`).
pub struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Everything a handler may need from the request.
pub struct Req {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Query,
    pub body: Body,
    /// Who is calling (already authorized for the endpoint's main action).
    pub principal: Principal,
    pub client: IpAddr,
    /// The connection's zero-copy queue: plain-TCP HTTP/1.x requests only.
    pub zero_copy: Option<crate::zerocopy::ZeroCopy>,
}

/// The client address of a request, as [`resolve_client`] found it: the peer, or the
/// client a trusted proxy names. Unspecified when served without the listener.
pub fn client_ip(extensions: &axum::http::Extensions) -> IpAddr {
    if let Some(c) = extensions.get::<ResolvedClient>() {
        return c.0;
    }
    extensions
        .get::<ClientAddr>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The client address of a request behind trusted proxies.
#[derive(Debug, Clone, Copy)]
struct ResolvedClient(IpAddr);

/// Finds the real client address once per request (see
/// [`crate::auth::Auth::client_address`]) for [`client_ip`]. Called first by the
/// outermost middleware, [`crate::access_log::log_request`], so the log sees it too.
pub fn resolve_client(state: &AppState, req: &mut Request) {
    if let Some(peer) = req.extensions().get::<ClientAddr>().map(|c| c.0.ip()) {
        let client = state.auth.client_address(peer, req.headers());
        req.extensions_mut().insert(ResolvedClient(client));
    }
}

/// The repository and action an endpoint needs; `None` for the catalog, which filters.
fn required<'a>(
    endpoint: &'a Endpoint,
    method: &Method,
) -> Option<(&'a berth_oci::RepoName, Action)> {
    use Endpoint as E;
    let action = match (endpoint, method) {
        (E::Catalog, _) => return None,
        (E::Manifest { .. } | E::Blob { .. }, &Method::DELETE) => Action::Delete,
        (E::Manifest { .. }, &Method::PUT) => Action::Push,
        (E::UploadStart { .. } | E::Upload { .. }, _) => Action::Push,
        _ => Action::Pull,
    };
    let name = endpoint.repository()?;
    Some((name, action))
}

/// The refusal for a caller without `action` on `repo`. It is decided before anything
/// is looked up, so it never tells whether a private repository exists.
fn deny(
    state: &AppState,
    principal: &Principal,
    repo: &berth_oci::RepoName,
    action: Action,
) -> AuthError {
    let wanted = match action {
        Action::Push => "pull,push",
        a => a.as_str(),
    };
    let scope = format!("repository:{repo}:{wanted}");
    match principal {
        Principal::Account { name, .. } => AuthError::Denied(format!(
            "account {name} may not {action} in repository {repo}"
        )),
        Principal::Token { .. } => state.auth.challenge(
            Some(&scope),
            Some("insufficient_scope"),
            &format!("the token does not allow {action} in repository {repo}"),
        ),
        _ => state.auth.challenge(
            Some(&scope),
            None,
            &format!("authentication required to {action} in repository {repo}"),
        ),
    }
}

impl Req {
    /// The body as a stream of bytes for the blob store.
    pub fn body_stream(self) -> ByteStream {
        Box::pin(self.body.into_data_stream().map_err(std::io::Error::other))
    }

    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Who is making the request, for events and the audit log.
    pub fn actor(&self) -> Actor {
        Actor {
            name: self.principal.name().to_owned(),
            client: self.client,
        }
    }

    /// `?force=true`: skip the tag policy (administrators only).
    pub fn wants_force(&self) -> bool {
        matches!(self.query.get("force"), Some("true" | "1"))
    }
}

fn _assert_send(state: AppState, req: Request) {
    fn is_send<T: Send>(_: T) {}
    is_send(dispatch(State(state), req));
}

async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let rest = path.strip_prefix("/v2/").unwrap_or("");
    let is_head = parts.method == Method::HEAD;
    let endpoint = match Endpoint::parse(rest) {
        Ok(e) => e,
        Err(e) => {
            return error_response(&state, e.into(), parts.headers.get(header::HOST), is_head)
        }
    };
    // containerd's mirror requests (`/v2/library/alpine/...?ns=docker.io`) name the
    // upstream registry in a query; a mirror with that prefix serves them, and access
    // control sees the local name.
    let endpoint = match Query::parse(parts.uri.query()).get("ns") {
        Some(ns) => match endpoint
            .repository()
            .and_then(|n| state.registry.mirrors().local_name(ns, n))
        {
            Some(local) => endpoint.with_repository(local),
            None => endpoint,
        },
        None => endpoint,
    };
    let route = endpoint.route();
    let repo = endpoint.repository().cloned();
    // Writes stop once the metadata database file is gone (reads may still be served).
    if !matches!(parts.method, Method::GET | Method::HEAD) && state.meta_watch.is_lost() {
        let e = ApiError::new(berth_oci::ErrorCode::Unavailable, META_LOST);
        return finish(&state, None, route, error_response(&state, e, None, false)).await;
    }
    let (resp, authorized) = serve_endpoint(&state, endpoint, parts, body, is_head).await;
    // Requests about a repository are counted under it only once access control let
    // them through; refused ones share one bucket.
    let counted = repo.map(|r| authorized.then_some(r));
    finish(&state, counted, route, resp).await
}

/// Labels the response for the metrics layer and, for an endpoint of a repository,
/// reports it (`Some(None)`: refused by access control).
async fn finish(
    state: &AppState,
    counted: Option<Option<berth_oci::RepoName>>,
    route: &'static str,
    mut resp: Response,
) -> Response {
    if let Some(repo) = counted {
        let code = resp
            .extensions()
            .get::<crate::error::ErrorLabel>()
            .map(|c| c.0);
        state
            .events
            .emit(Event::RepositoryRequest {
                repo,
                route,
                status: resp.status().as_u16(),
                code,
            })
            .await;
    }
    resp.extensions_mut()
        .insert(crate::metrics::RouteLabel(route));
    resp
}

/// Authenticates, authorizes and handles one request; also says whether access control
/// let it through.
async fn serve_endpoint(
    state: &AppState,
    endpoint: Endpoint,
    parts: axum::http::request::Parts,
    body: Body,
    is_head: bool,
) -> (Response, bool) {
    let client = client_ip(&parts.extensions);
    let host = parts.headers.get(header::HOST).cloned();
    let principal = match state.auth.authenticate(&parts.headers, client).await {
        Ok(p) => p,
        Err(e) => {
            return (
                error_response(state, e.into(), host.as_ref(), is_head),
                false,
            )
        }
    };
    if let Some((repo, action)) = required(&endpoint, &parts.method) {
        if !principal.may(repo.as_str(), action) {
            let e = deny(state, &principal, repo, action);
            return (
                error_response(state, e.into(), host.as_ref(), is_head),
                false,
            );
        }
    }
    let zero_copy = if parts.version <= axum::http::Version::HTTP_11 {
        parts.extensions.get::<crate::zerocopy::ZeroCopy>().cloned()
    } else {
        None
    };
    let req = Req {
        zero_copy,
        method: parts.method.clone(),
        headers: parts.headers,
        query: Query::parse(parts.uri.query()),
        body,
        principal,
        client,
    };
    let resp = match handle(state, endpoint, req).await {
        Ok(r) => r,
        Err(e) => error_response(state, e, host.as_ref(), is_head),
    };
    (resp, true)
}

/// `GET /metrics`: Prometheus text format. Open on an open registry; once accounts
/// exist it needs an account with `admin` on `*` (it names repositories), from loopback
/// too unless `metrics_open` lets loopback clients (the real client address) in.
async fn metrics(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let client = client_ip(&parts.extensions);
    let host = parts.headers.get(header::HOST);
    let allowed = (state.auth.metrics_open() && client.to_canonical().is_loopback())
        || match state.auth.authenticate(&parts.headers, client).await {
            Ok(Principal::Open) => true,
            Ok(Principal::Account { grants, .. }) => grants
                .iter()
                .any(|g| g.pattern.as_str() == "*" && g.actions.allows(Action::Admin)),
            Ok(_) => false,
            Err(e) => return error_response(&state, e.into(), host, false),
        };
    if !allowed {
        let e = if parts.headers.contains_key(header::AUTHORIZATION) {
            AuthError::Denied("metrics need an account with admin on *".into())
        } else {
            state.auth.challenge(
                None,
                None,
                "metrics need an account with admin on * (or metrics_open = true for loopback clients)",
            )
        };
        return error_response(&state, e.into(), host, false);
    }
    let stored = match state.registry.stored_bytes().await {
        Ok(s) => s,
        Err(e) => return error_response(&state, e.into(), host, false),
    };
    // OpenMetrics for scrapers that ask for it; the Prometheus text format for the rest.
    let openmetrics = parts
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let text = state.metrics.render(stored);
    if openmetrics {
        ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, crate::metrics::TEXT_CONTENT_TYPE)],
            crate::metrics::to_text_format(&text),
        )
            .into_response()
    }
}

async fn handle(state: &AppState, endpoint: Endpoint, req: Req) -> ApiResult {
    use Endpoint as E;
    let m = req.method.clone();
    if !matches!(m, Method::GET | Method::HEAD) {
        if let Some(repo) = endpoint.repository() {
            state.registry.check_writable(repo)?;
        }
    }
    match (endpoint, m) {
        (E::Catalog, Method::GET) => catalog::list(state, req).await,
        (E::Tags { name }, Method::GET) => tags::list(state, &name, req).await,
        (E::Manifest { name, reference }, Method::GET | Method::HEAD) => {
            manifests::get(state, &name, &reference, req).await
        }
        (E::Manifest { name, reference }, Method::PUT) => {
            manifests::put(state, &name, &reference, req).await
        }
        (E::Manifest { name, reference }, Method::DELETE) => {
            manifests::delete(state, &name, &reference, req).await
        }
        (E::Blob { name, digest }, Method::GET | Method::HEAD) => {
            blobs::get(state, &name, &digest, req).await
        }
        (E::Blob { name, digest }, Method::DELETE) => {
            blobs::delete(state, &name, &digest, req).await
        }
        (E::UploadStart { name }, Method::POST) => uploads::start(state, &name, req).await,
        (E::Upload { name, id }, Method::GET) => uploads::status(state, &name, &id).await,
        (E::Upload { name, id }, Method::PATCH) => uploads::patch(state, &name, &id, req).await,
        (E::Upload { name, id }, Method::PUT) => uploads::finish(state, &name, &id, req).await,
        (E::Upload { name, id }, Method::DELETE) => uploads::cancel(state, &name, &id).await,
        (E::Referrers { name, digest }, Method::GET) => {
            referrers::list(state, &name, &digest, req).await
        }
        (e, m) => Err(EndpointError::Method {
            method: m.to_string(),
            route: e.route(),
        }
        .into()),
    }
}

/// Renders an error answer: a Bearer challenge gets its `WWW-Authenticate` header (whose
/// realm depends on the request's `Host`), and HEAD answers carry the status and headers
/// of the error without a body.
pub fn error_response(
    state: &AppState,
    mut e: ApiError,
    host: Option<&HeaderValue>,
    is_head: bool,
) -> Response {
    if let Some(challenge) = e.challenge.take() {
        if let Some(v) = state.auth.www_authenticate(&challenge, host) {
            e.headers.push((header::WWW_AUTHENTICATE, v));
        }
    }
    let mut resp = e.into_response();
    if is_head {
        resp.headers_mut().remove(header::CONTENT_LENGTH);
        *resp.body_mut() = Body::empty();
    }
    resp
}

/// A response with no body and an explicit `Content-Length: 0`.
pub fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

/// Sets a header from a string; values built by this crate are always valid.
pub fn set(resp: &mut Response, name: &'static str, value: impl AsRef<str>) {
    if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
        resp.headers_mut().insert(name, v);
    }
}

/// Parses `n` and `last` for the paginated lists.
pub fn page(query: &Query, default_n: Option<usize>) -> ApiResult<berth_meta::Page> {
    let n = match query.get("n") {
        Some(v) => Some(v.parse::<usize>().map_err(|_| {
            RegistryError::ParameterInvalid(format!("n={v:?} is not a valid number of results"))
        })?),
        None => default_n,
    };
    Ok(berth_meta::Page {
        last: query.get("last").map(str::to_owned),
        n,
    })
}

/// The `Link` header for the next page of a list, RFC 5988 style as Distribution does.
pub fn next_link(path: &str, last: &str, n: usize) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("last", last)
        .append_pair("n", &n.to_string())
        .finish();
    format!("<{path}?{q}>; rel=\"next\"")
}

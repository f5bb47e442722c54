//! Who is calling and what they may do.
//!
//! With no account in the metadata store the registry is open (and, by the start-up
//! check, only on a loopback address unless `--insecure-open`). Once an account exists,
//! every request needs credentials except pulls of public repositories. Credentials are
//! either a bearer token issued by `/token` (the Docker token flow) or HTTP Basic
//! (a user password or a robot secret), which is verified once and then cached briefly.
//!
//! Layers: routes ask [`Auth`] for a [`Principal`] and its actions on a repository; this
//! module reads accounts through [`AccountStore`] and decides with `berth_auth`. It
//! returns [`AuthError`]s, which `crate::error` maps to answers, and reports failed
//! logins as events (the audit log subscribes).
//!
//! Once a registry has had accounts it never falls back to open by itself: the first
//! time the server (or `berth admin`) sees an account it writes a marker file in the
//! data directory ([`crate::accounts::MARKER`]), and while the marker exists a registry
//! with no account is closed (only public pulls), not open. Losing the accounts (a
//! deleted or replaced database) therefore locks the registry instead of opening it.
//!
//! Login answers do not tell which names exist: a login for an unknown, disabled or
//! expired account spends the time of one password verification against a dummy hash,
//! as does a wrong robot secret. Failures are limited per (client address, name), per
//! name and, far more loosely, per address; the client address is the real one behind
//! trusted proxies ([`Auth::client_address`]).
//!
//! Revocation: a token is checked against the account it names on every use (the
//! account's state and grants are cached for [`ACCOUNT_TTL`]), so disabling or deleting
//! an account, or removing a grant, stops its tokens within a second; a token still
//! grants no more than its `access` claim says.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue};
use base64::Engine as _;
use berth_auth::grant::actions_on;
use berth_auth::proxy::TrustedProxies;
use berth_auth::ratelimit::FailureLimiter;
use berth_auth::token::{Access, Claims, TokenKey};
use berth_auth::{Action, Actions, Grant, Pattern, Scope};
use berth_meta::{Account, AccountStore, MetaError};
use sha2::{Digest as _, Sha256};

use crate::events::{Event, Events};

/// A `WWW-Authenticate: Bearer` challenge: the scope the client should ask a token for,
/// and the OAuth error (`invalid_token`, `insufficient_scope`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scope: Option<String>,
    pub error: Option<&'static str>,
}

/// Why a caller was not let in.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No or unusable credentials: answered 401 with a Bearer challenge.
    #[error("{message}")]
    Challenge {
        challenge: Challenge,
        message: String,
    },
    /// Bad credentials where no challenge applies (the token endpoint itself).
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials without the permission.
    #[error("{0}")]
    Denied(String),
    #[error("too many failed logins; try again in a few minutes")]
    RateLimited,
    #[error("{0}")]
    BadRequest(String),
    /// The account store failed; logged, never shown.
    #[error(transparent)]
    Internal(#[from] MetaError),
}

/// How long the account count and public patterns are cached.
const SNAPSHOT_TTL: Duration = Duration::from_secs(1);
/// How long a verified Basic credential (the argon2 check of its secret) is trusted.
/// The account's state and grants are re-read after [`ACCOUNT_TTL`] regardless.
const BASIC_CACHE_TTL: Duration = Duration::from_secs(5);
/// How long an account's state and grants are cached: the bound on how long a disabled
/// account, a deleted one or a removed grant keeps working, for Basic and tokens alike.
pub const ACCOUNT_TTL: Duration = Duration::from_secs(1);
/// Failed logins allowed for one account from one client address in [`FAILURE_WINDOW`]:
/// the lockout a guesser meets.
const MAX_FAILURES_PER_CLIENT_AND_ACCOUNT: usize = 10;
/// Failed logins allowed per account from all addresses together: a bound on guesses
/// spread over many addresses, higher than the one above so that one misconfigured
/// client does not lock its account out for everyone.
const MAX_FAILURES_PER_ACCOUNT: usize = 50;
/// Failed logins allowed per client address over all names: only a bound on password
/// spraying (few guesses for each of many names). Many users (a CI fleet, an office, a
/// proxy not listed in `trusted_proxies`) may share one address, so it is set far above
/// what their honest mistakes reach.
const MAX_FAILURES_PER_ADDRESS: usize = 1_000;
const FAILURE_WINDOW: Duration = Duration::from_secs(300);

/// The caller of a request.
#[derive(Debug, Clone)]
pub enum Principal {
    /// No account exists: the registry is open to everyone.
    Open,
    /// No credentials: only pulls of public repositories.
    Anonymous { public: Arc<Vec<Pattern>> },
    /// HTTP Basic with a valid account.
    Account {
        name: String,
        grants: Arc<Vec<Grant>>,
        public: Arc<Vec<Pattern>>,
    },
    /// A bearer token from `/token`, limited to what its account may still do.
    Token {
        claims: Arc<Claims>,
        /// The account's grants now (empty for an anonymous token).
        grants: Arc<Vec<Grant>>,
        public: Arc<Vec<Pattern>>,
    },
}

impl Principal {
    /// The actions this caller has on repository `repo`.
    pub fn actions_on(&self, repo: &str) -> Actions {
        let public_pull = |public: &[Pattern]| {
            if public.iter().any(|p| p.matches(repo)) {
                Actions::NONE.with(Action::Pull)
            } else {
                Actions::NONE
            }
        };
        match self {
            Principal::Open => Actions::NONE.with(Action::Admin),
            Principal::Anonymous { public } => public_pull(public),
            Principal::Account { grants, public, .. } => {
                actions_on(grants.iter(), repo).union(public_pull(public))
            }
            // A token grants what it says, and no more than its account may do now.
            Principal::Token {
                claims,
                grants,
                public,
            } => claims
                .actions_on(repo)
                .intersect(actions_on(grants.iter(), repo).union(public_pull(public))),
        }
    }

    pub fn may(&self, repo: &str, action: Action) -> bool {
        self.actions_on(repo).allows(action)
    }

    /// The name recorded in logs and the audit log.
    pub fn name(&self) -> &str {
        match self {
            Principal::Open => "open",
            Principal::Anonymous { .. } => "anonymous",
            Principal::Account { name, .. } => name,
            Principal::Token { claims, .. } => &claims.sub,
        }
    }
}

/// Why a login failed (never says which part of the credentials was wrong).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginError {
    Invalid,
    RateLimited,
}

/// A verified credential: when, whose, and the stored secret hash it matched (so that
/// a changed password or a rotated robot secret ends the cached credential as soon as
/// the account is re-read).
type CachedLogin = (Instant, String, Arc<str>);

/// An account's state as last read: when, and, if it may log in, its grants and its
/// stored secret hash.
type CachedAccount = (Instant, Option<(Arc<Vec<Grant>>, Arc<str>)>);

struct Snapshot {
    at: Instant,
    accounts_exist: bool,
    /// No account exists but the accounts marker does: closed, not open.
    accounts_lost: bool,
    public: Arc<Vec<Pattern>>,
}

/// Authentication and authorization state of the server.
pub struct Auth {
    accounts: Arc<dyn AccountStore>,
    key: TokenKey,
    /// HMAC key for the credential cache, so cache keys reveal nothing.
    cache_key: [u8; 32],
    pub service: String,
    realm: Option<String>,
    pub token_ttl: Duration,
    tls: bool,
    snapshot: Mutex<Option<Snapshot>>,
    basic_cache: Mutex<HashMap<[u8; 32], CachedLogin>>,
    account_cache: Mutex<HashMap<String, CachedAccount>>,
    events: Events,
    by_client_and_account: FailureLimiter,
    by_account: FailureLimiter,
    by_address: FailureLimiter,
    trusted_proxies: TrustedProxies,
    metrics_open: bool,
    /// The "accounts enabled" marker file, if this server keeps one.
    marker: Option<PathBuf>,
    /// Whether the marker is known to exist (written or seen by this process).
    marker_present: AtomicBool,
}

fn unix_now() -> u64 {
    u64::try_from(berth_oci::time::now()).unwrap_or(0)
}

/// Grants as stored, parsed; malformed rows are logged and skipped.
fn parse_grants(rows: Vec<berth_meta::StoredGrant>) -> Vec<Grant> {
    rows.into_iter()
        .filter_map(
            |g| match format!("{}:{}", g.pattern, g.actions).parse::<Grant>() {
                Ok(g) => Some(g),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a malformed grant");
                    None
                }
            },
        )
        .collect()
}

impl Auth {
    pub fn new(
        accounts: Arc<dyn AccountStore>,
        key: TokenKey,
        service: String,
        realm: Option<String>,
        token_ttl: Duration,
        tls: bool,
        events: Events,
    ) -> Auth {
        let mut cache_key = [0u8; 32];
        if let Ok(b) = berth_auth::secret::random_bytes(32) {
            cache_key.copy_from_slice(&b);
        }
        Auth {
            accounts,
            key,
            cache_key,
            service,
            realm,
            token_ttl,
            tls,
            snapshot: Mutex::new(None),
            basic_cache: Mutex::new(HashMap::new()),
            account_cache: Mutex::new(HashMap::new()),
            events,
            by_client_and_account: FailureLimiter::new(
                MAX_FAILURES_PER_CLIENT_AND_ACCOUNT,
                FAILURE_WINDOW,
            ),
            by_account: FailureLimiter::new(MAX_FAILURES_PER_ACCOUNT, FAILURE_WINDOW),
            by_address: FailureLimiter::new(MAX_FAILURES_PER_ADDRESS, FAILURE_WINDOW),
            trusted_proxies: TrustedProxies::default(),
            metrics_open: false,
            marker: None,
            marker_present: AtomicBool::new(false),
        }
    }

    /// Believes the forwarding headers of `trusted_proxies` (see
    /// [`Auth::client_address`]); with `metrics_open`, loopback clients read `/metrics`
    /// without credentials once accounts exist.
    pub fn with_network(mut self, trusted_proxies: TrustedProxies, metrics_open: bool) -> Auth {
        self.trusted_proxies = trusted_proxies;
        self.metrics_open = metrics_open;
        self
    }

    /// Keeps the "accounts enabled" marker at `path` (see the module doc).
    pub fn with_accounts_marker(mut self, path: PathBuf) -> Auth {
        self.marker = Some(path);
        self
    }

    /// The client address of a request from `peer` with `headers`: the peer itself,
    /// or, when the peer is a trusted proxy, the client its forwarding headers name.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if self.trusted_proxies.is_empty() {
            return peer;
        }
        let values = |name| {
            headers
                .get_all(name)
                .into_iter()
                .filter_map(|v| v.to_str().ok())
        };
        self.trusted_proxies.client_address(
            peer,
            values(header::FORWARDED),
            values(header::HeaderName::from_static("x-forwarded-for")),
        )
    }

    /// Whether loopback clients read `/metrics` without credentials once accounts exist.
    pub fn metrics_open(&self) -> bool {
        self.metrics_open
    }

    /// Whether the accounts marker exists (remembered once seen).
    fn marker_seen(&self) -> bool {
        let Some(path) = &self.marker else {
            return false;
        };
        if self.marker_present.load(Ordering::Relaxed) {
            return true;
        }
        let present = path.exists();
        if present {
            self.marker_present.store(true, Ordering::Relaxed);
        }
        present
    }

    /// Writes the accounts marker, once, when accounts are seen.
    fn ensure_marker(&self) {
        let Some(path) = &self.marker else {
            return;
        };
        if self.marker_present.load(Ordering::Relaxed) {
            return;
        }
        match crate::accounts::write_marker(path) {
            Ok(()) => self.marker_present.store(true, Ordering::Relaxed),
            Err(e) => tracing::error!(
                path = %path.display(),
                error = %e,
                "cannot write the accounts marker; if the accounts were lost, the registry would become open"
            ),
        }
    }

    pub fn accounts(&self) -> &Arc<dyn AccountStore> {
        &self.accounts
    }

    /// Account administration through this server (the admin API), acting as `actor`
    /// from `client`, keeping this server's accounts marker.
    pub fn admin(&self, actor: &str, client: IpAddr) -> crate::accounts::Admin {
        crate::accounts::Admin::new(self.accounts.clone(), actor)
            .with_marker(self.marker.clone())
            .with_client(client.to_string())
    }

    /// Whether accounts exist, whether they were lost (none, but the marker says there
    /// were), and the public patterns (cached for a second, so that `berth admin`
    /// changes made while the server runs apply almost at once).
    async fn snapshot(&self) -> Result<(bool, bool, Arc<Vec<Pattern>>), AuthError> {
        {
            let s = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = s.as_ref().filter(|s| s.at.elapsed() < SNAPSHOT_TTL) {
                return Ok((s.accounts_exist, s.accounts_lost, s.public.clone()));
            }
        }
        // The marker is looked at before the accounts are counted: `berth admin` writes it
        // only after creating an account, so a marker seen before an empty count means the
        // accounts were lost, not that one is being created at this moment.
        let marker = self.marker_seen();
        let accounts_exist = self.accounts.account_count().await? > 0;
        if accounts_exist {
            self.ensure_marker();
        }
        let accounts_lost = !accounts_exist && marker;
        let was_lost = self
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|s| s.accounts_lost);
        if accounts_lost && !was_lost {
            tracing::error!(
                "no account exists but this registry had accounts ({}): refusing every request that needs one. Create an account with `berth admin user add`, or delete the marker file to make the registry open deliberately",
                self.marker.as_deref().unwrap_or(std::path::Path::new("")).display()
            );
        }
        let public: Vec<Pattern> = self
            .accounts
            .public_patterns()
            .await?
            .iter()
            .filter_map(|p| Pattern::parse(p).ok())
            .collect();
        let public = Arc::new(public);
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Snapshot {
            at: Instant::now(),
            accounts_exist,
            accounts_lost,
            public: public.clone(),
        });
        Ok((accounts_exist, accounts_lost, public))
    }

    /// Whether any account exists (for the start-up safety check).
    pub async fn accounts_exist(&self) -> Result<bool, AuthError> {
        Ok(self.snapshot().await?.0)
    }

    /// Whether the registry is open to everyone: no account exists, and none ever did
    /// (no accounts marker).
    pub async fn is_open(&self) -> Result<bool, AuthError> {
        let (exist, lost, _) = self.snapshot().await?;
        Ok(!exist && !lost)
    }

    /// The accounts marker when it exists but no account does: the registry had
    /// accounts and lost them (the server refuses to start so).
    pub async fn accounts_lost(&self) -> Result<Option<PathBuf>, AuthError> {
        let (_, lost, _) = self.snapshot().await?;
        Ok(self.marker.clone().filter(|_| lost))
    }

    /// Identifies the caller of a registry request.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
    ) -> Result<Principal, AuthError> {
        let (accounts_exist, accounts_lost, public) = self.snapshot().await?;
        if !accounts_exist && !accounts_lost {
            return Ok(Principal::Open);
        }
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(Principal::Anonymous { public });
        };
        if let Some(token) = strip_scheme(value, "bearer") {
            return match self.key.verify(token.trim(), &self.service, unix_now()) {
                Ok(claims) => {
                    let grants = if claims.sub.is_empty() {
                        Arc::new(Vec::new())
                    } else {
                        match self.account(&claims.sub).await? {
                            Some(grants) => grants,
                            None => return Err(self.challenge(
                                None,
                                Some("invalid_token"),
                                "bearer token refused: its account is disabled, expired or deleted",
                            )),
                        }
                    };
                    Ok(Principal::Token {
                        claims: Arc::new(claims),
                        grants,
                        public,
                    })
                }
                Err(e) => {
                    tracing::debug!(error = %e, "bearer token refused");
                    Err(self.challenge(
                        None,
                        Some("invalid_token"),
                        &format!("bearer token refused: {e}"),
                    ))
                }
            };
        }
        if let Some(encoded) = strip_scheme(value, "basic") {
            let (name, secret) = decode_basic(encoded)
                .ok_or_else(|| self.challenge(None, None, "malformed Basic credentials"))?;
            return match self.login(&name, &secret, client).await? {
                Ok((name, grants)) => Ok(Principal::Account {
                    name,
                    grants,
                    public,
                }),
                Err(LoginError::RateLimited) => Err(AuthError::RateLimited),
                Err(LoginError::Invalid) => {
                    Err(self.challenge(None, None, "invalid username or password"))
                }
            };
        }
        Err(self.challenge(None, None, "unsupported Authorization scheme"))
    }

    /// Checks a name and secret, with rate limiting and a short cache. Records
    /// failures in the audit log.
    pub async fn login(
        &self,
        name: &str,
        secret: &str,
        client: IpAddr,
    ) -> Result<Result<(String, Arc<Vec<Grant>>), LoginError>, AuthError> {
        let now = Instant::now();
        let addr_key = client.to_string();
        let pair_key = format!("{client} {name}");
        if self.by_client_and_account.is_blocked(&pair_key, now)
            || self.by_account.is_blocked(name, now)
            || self.by_address.is_blocked(&addr_key, now)
        {
            self.events
                .emit(Event::LoginRateLimited {
                    account: name.to_owned(),
                    client,
                })
                .await;
            return Ok(Err(LoginError::RateLimited));
        }
        let cache_key = self.credential_key(name, secret);
        let verified = {
            let cache = self.basic_cache.lock().unwrap_or_else(|p| p.into_inner());
            cache
                .get(&cache_key)
                .filter(|(at, _, _)| at.elapsed() < BASIC_CACHE_TTL)
                .map(|(_, n, hash)| (n.clone(), hash.clone()))
        };
        if let Some((n, hash)) = verified {
            // The secret was verified moments ago; the account's state is re-read, and
            // the credential holds only while the stored secret is the one it matched.
            if let Some((grants, current)) = self.account_state(&n).await? {
                if current == hash {
                    return Ok(Ok((n, grants)));
                }
            }
        }
        let account = self.accounts.account_get(name).await?;
        let stored = account
            .as_ref()
            .filter(|a| usable(a))
            .map(|a| a.secret_hash.clone());
        let presented = secret.to_owned();
        // argon2 is deliberately slow: keep it off the async workers. Every refusal
        // costs at least one password verification (against a dummy hash when there is
        // no usable password hash), so that its timing does not tell whether the name
        // exists, is disabled or is a robot.
        let ok = tokio::task::spawn_blocking(move || match stored {
            Some(stored) => {
                let ok = berth_auth::secret::verify(&presented, &stored);
                if !ok && !berth_auth::secret::is_password_hash(&stored) {
                    berth_auth::secret::verify_nothing(&presented);
                }
                ok
            }
            None => berth_auth::secret::verify_nothing(&presented),
        })
        .await
        .unwrap_or(false);
        if !ok {
            self.by_client_and_account.record_failure(&pair_key, now);
            self.by_account.record_failure(name, now);
            self.by_address.record_failure(&addr_key, now);
            let why = match &account {
                None => "unknown account",
                Some(a) if a.disabled => "account disabled",
                Some(a) if !usable(a) => "account expired",
                Some(_) => "wrong secret",
            };
            tracing::warn!(account = %name, client = %client, reason = why, "login failed");
            self.events
                .emit(Event::LoginFailed {
                    account: name.to_owned(),
                    reason: why,
                    client,
                })
                .await;
            return Ok(Err(LoginError::Invalid));
        }
        self.by_client_and_account.clear(&pair_key);
        let grants = Arc::new(parse_grants(self.accounts.grants(name).await?));
        let hash: Arc<str> = account
            .as_ref()
            .map(|a| Arc::from(a.secret_hash.as_str()))
            .unwrap_or_else(|| Arc::from(""));
        self.remember_account(name, Some((grants.clone(), hash.clone())));
        let mut cache = self.basic_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.retain(|_, (at, _, _)| at.elapsed() < BASIC_CACHE_TTL);
        }
        cache.insert(cache_key, (Instant::now(), name.to_owned(), hash));
        Ok(Ok((name.to_owned(), grants)))
    }

    /// The grants of account `name` if it may log in now (not disabled, expired or
    /// deleted), cached for [`ACCOUNT_TTL`].
    async fn account(&self, name: &str) -> Result<Option<Arc<Vec<Grant>>>, AuthError> {
        Ok(self.account_state(name).await?.map(|(grants, _)| grants))
    }

    /// [`Auth::account`] with the account's stored secret hash.
    async fn account_state(
        &self,
        name: &str,
    ) -> Result<Option<(Arc<Vec<Grant>>, Arc<str>)>, AuthError> {
        {
            let cache = self.account_cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, state)) = cache.get(name) {
                if at.elapsed() < ACCOUNT_TTL {
                    return Ok(state.clone());
                }
            }
        }
        let state = match self.accounts.account_get(name).await? {
            Some(a) if usable(&a) => Some((
                Arc::new(parse_grants(self.accounts.grants(name).await?)),
                Arc::from(a.secret_hash.as_str()),
            )),
            _ => None,
        };
        self.remember_account(name, state.clone());
        Ok(state)
    }

    fn remember_account(&self, name: &str, state: Option<(Arc<Vec<Grant>>, Arc<str>)>) {
        let mut cache = self.account_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.retain(|_, (at, _)| at.elapsed() < ACCOUNT_TTL);
        }
        cache.insert(name.to_owned(), (Instant::now(), state));
    }

    /// Forgets every cached credential and account state, so that a change made through
    /// this process applies to the next request.
    pub fn invalidate(&self) {
        self.basic_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.account_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn credential_key(&self, name: &str, secret: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_key);
        h.update(name.as_bytes());
        h.update([0u8]);
        h.update(secret.as_bytes());
        h.finalize().into()
    }

    /// Issues a token for `subject` with the requested scopes narrowed to what
    /// `principal` may do.
    pub fn issue(
        &self,
        principal: &Principal,
        scopes: &[Scope],
    ) -> Result<(String, Vec<Scope>), AuthError> {
        let granted: Vec<Scope> = scopes
            .iter()
            .filter_map(|s| match s {
                Scope::Repository { name, actions } => {
                    let have = principal.actions_on(name).intersect(*actions);
                    (!have.is_empty()).then(|| Scope::Repository {
                        name: name.clone(),
                        actions: have,
                    })
                }
                Scope::Catalog => Some(Scope::Catalog),
            })
            .collect();
        let now = unix_now();
        let claims = Claims {
            iss: self.service.clone(),
            sub: match principal {
                Principal::Anonymous { .. } | Principal::Open => String::new(),
                p => p.name().to_owned(),
            },
            aud: self.service.clone(),
            exp: now + self.token_ttl.as_secs(),
            nbf: now,
            iat: now,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            access: granted.iter().map(Access::from_scope).collect(),
        };
        let token = self.key.sign(&claims).map_err(|e| {
            AuthError::Internal(MetaError::Corrupt(format!("cannot sign a token: {e}")))
        })?;
        Ok((token, granted))
    }

    pub async fn public(&self) -> Result<Arc<Vec<Pattern>>, AuthError> {
        Ok(self.snapshot().await?.2)
    }

    /// A 401 with the `WWW-Authenticate: Bearer` challenge Docker clients follow.
    pub fn challenge(
        &self,
        scope: Option<&str>,
        error: Option<&'static str>,
        message: &str,
    ) -> AuthError {
        AuthError::Challenge {
            challenge: Challenge {
                scope: scope.map(str::to_owned),
                error,
            },
            message: message.to_owned(),
        }
    }

    /// The `WWW-Authenticate` value of `challenge`. A configured realm is used as it is;
    /// otherwise the realm is this server's `/token`, made absolute with the request's
    /// `Host`, as clients require.
    pub fn www_authenticate(
        &self,
        challenge: &Challenge,
        host: Option<&HeaderValue>,
    ) -> Option<HeaderValue> {
        let realm = match &self.realm {
            Some(r) => r.clone(),
            None => {
                let host = host.and_then(|v| v.to_str().ok()).filter(|h| {
                    h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
                });
                match host {
                    Some(h) => format!("{}://{h}/token", if self.tls { "https" } else { "http" }),
                    None => "/token".to_owned(),
                }
            }
        };
        let mut v = format!("Bearer realm=\"{realm}\",service=\"{}\"", self.service);
        if let Some(s) = &challenge.scope {
            v.push_str(&format!(",scope=\"{s}\""));
        }
        if let Some(e) = challenge.error {
            v.push_str(&format!(",error=\"{e}\""));
        }
        HeaderValue::from_str(&v).ok()
    }
}

/// Whether an account may log in now.
pub fn usable(a: &Account) -> bool {
    !a.disabled && a.expires_at.is_none_or(|t| (unix_now() as i64) < t)
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.trim().split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// Decodes `Basic base64(name:secret)`.
pub fn decode_basic(encoded: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (n, p) = s.split_once(':')?;
    Some((n.to_owned(), p.to_owned()))
}

/// Reads the token signing key from `path`, creating it (0600, fsync'd) on first start.
pub fn load_or_create_key(path: &std::path::Path) -> Result<TokenKey, std::io::Error> {
    match std::fs::read(path) {
        Ok(bytes) => TokenKey::from_bytes(bytes)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = berth_auth::secret::random_bytes(berth_auth::token::KEY_LEN)
                .map_err(std::io::Error::other)?;
            let tmp = path.with_extension("tmp");
            {
                use std::io::Write;
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create(true).truncate(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, path)?;
            TokenKey::from_bytes(bytes).map_err(std::io::Error::other)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_decoding() {
        let enc = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        assert_eq!(decode_basic(&enc), Some(("alice".into(), "pa:ss".into())));
        assert_eq!(decode_basic("!!"), None);
        assert_eq!(strip_scheme("bearer abc", "Bearer"), Some("abc"));
        assert_eq!(strip_scheme("Basic abc", "Bearer"), None);
    }

    #[test]
    fn principals() {
        let public = Arc::new(vec![Pattern::parse("pub/*").unwrap()]);
        let anon = Principal::Anonymous {
            public: public.clone(),
        };
        assert!(anon.may("pub/x", Action::Pull));
        assert!(!anon.may("pub/x", Action::Push));
        assert!(!anon.may("priv/x", Action::Pull));
        let acct = Principal::Account {
            name: "w".into(),
            grants: Arc::new(vec!["team/*:pull,push".parse().unwrap()]),
            public,
        };
        assert!(acct.may("team/a", Action::Push) && !acct.may("team/a", Action::Delete));
        assert!(acct.may("pub/x", Action::Pull));
        assert!(Principal::Open.may("any", Action::Delete));
    }
}

//! Access control logic, with no I/O beyond reading the system's random source.
//!
//! # Layout
//! - [`action`]: the actions (`pull`, `push`, `delete`, `admin`) and sets of them.
//! - [`grant`]: grants of actions on repository patterns (`team/*:pull,push`) and the
//!   matching rules.
//! - [`scope`]: Docker token scopes (`repository:team/app:pull,push`).
//! - [`secret`]: password hashing (argon2id), robot secrets, constant-time checks.
//! - [`token`]: the signed bearer tokens (JWT, HS256) the token endpoint issues.
//! - [`ratelimit`]: failed-login limiting per account and per client address.
//! - [`proxy`]: the real client address behind trusted reverse proxies.
//!
//! **Architecture Invariant:** this crate decides, it does not store. Accounts and grants
//! live in the metadata store; HTTP challenges are written by the server.

pub mod action;
pub mod grant;
pub mod proxy;
pub mod ratelimit;
pub mod scope;
pub mod secret;
pub mod token;

pub use action::{Action, Actions};
pub use grant::{Grant, Pattern, PatternSet, RepoPatterns};
pub use scope::Scope;

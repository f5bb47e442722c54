//! Release publishing logic, with no I/O: what a CI run is ([`context`]) and which tags it
//! should publish ([`plan`]).
//!
//! # Layout
//! - [`context`]: the CI context (version, branch, pull request, commit) read from flags
//!   or from GitHub Actions / GitLab CI variables, by the rules of docker/metadata-action.
//! - [`plan`]: the tag plan: exact and floating tags of a release (`1.2.3`, `1.2`, `1`,
//!   `latest`), branch/`sha-`/`pr-` tags without a version, templates, and the floating
//!   tags left out because a higher release already holds their range.
//! - [`attest`]: the attestation type of a `--attest` predicate file given without one.
//!
//! **Architecture Invariant:** this crate decides, it does not push: `berth publish` (in
//! the binary) reads the registry's existing versions, asks [`plan::plan`], then pushes.

pub mod attest;
pub mod context;
pub mod plan;

pub use attest::attestation_type;
pub use context::{Context, RefKind};
pub use plan::{plan, released_versions, Plan, PlanOptions, PlannedTag, Skipped};

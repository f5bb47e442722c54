//! Integration tests of the client against Berth (in process) and CNCF Distribution
//! (a child process), with skopeo cross-checks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers panic on failure by design.

mod auth;
mod copy_referrers;
mod fixtures;
mod index_tag;
mod local;
mod referrers;
mod registry_copy;
mod resume;
mod sign;
mod skopeo;
mod verify;

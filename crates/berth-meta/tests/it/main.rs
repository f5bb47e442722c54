//! Integration tests of `berth-meta`: the conformance suite run against every backend
//! built here, and schema upgrades.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
mod upgrade;

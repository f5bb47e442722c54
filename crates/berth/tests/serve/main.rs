//! Tests of the `berth serve` process: crash safety under kill -9, graceful shutdown,
//! configuration, and interoperability with skopeo.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers panic on failure by design.

mod admin_api;
mod auth;
mod crash;
mod dashboard;
mod gc;
mod lifecycle;
mod migrate;
mod numbers;
mod process;
mod publish;
#[cfg(all(feature = "s3", feature = "postgres"))]
mod replicas;
mod replication;
mod scrub;
mod skopeo;
mod webhooks;

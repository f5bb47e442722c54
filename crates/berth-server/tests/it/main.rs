//! Integration tests: the real server on an ephemeral loopback port, spoken to over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers panic on failure by design.

mod analytics;
mod auth;
mod blobs;
mod common;
mod concurrency;
mod faults;
mod gc;
mod hardening;
mod limits;
mod lists;
mod manifests;
mod metrics;
mod numbers;
mod policy;
mod proxy;
#[cfg(feature = "s3")]
mod s3;
mod scrub;
mod startup;
mod trust;
mod uploads;

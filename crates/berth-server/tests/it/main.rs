//! Integration tests: the real server on an ephemeral loopback port, spoken to over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers panic on failure by design.

mod analytics;
mod auth;
mod blobs;
mod common;
mod concurrency;
mod export;
mod faults;
mod gc;
mod hardening;
mod health;
mod lifecycle;
mod limits;
mod lists;
mod manifests;
mod metrics;
mod mirror;
mod numbers;
mod policy;
#[cfg(feature = "postgres")]
mod postgres;
mod proxy;
#[cfg(all(feature = "s3", feature = "postgres"))]
mod replicas;
mod replication;
#[cfg(feature = "s3")]
mod s3;
mod scan;
mod scrub;
mod stale;
mod startup;
mod trust;
mod uploads;
mod webhooks;

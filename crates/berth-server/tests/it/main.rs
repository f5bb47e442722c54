//! Integration tests: the real server on an ephemeral loopback port, spoken to over HTTP.

mod blobs;
mod common;
mod lists;
mod manifests;
mod uploads;

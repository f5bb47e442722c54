//! Integration tests of berth-trust through its public API.
//!
//! - `sigstore_interop`: keys and signatures exchanged with the `sigstore` crate, an
//!   independent implementation of cosign's formats.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers panic on failure by design.

mod sigstore_interop;

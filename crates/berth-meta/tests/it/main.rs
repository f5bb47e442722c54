//! Integration tests of `berth-meta`: the conformance suite run against every backend
//! built here (SQLite, PostgreSQL on a throwaway cluster), what only several replicas
//! over one PostgreSQL database can show, and schema upgrades.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod postgres;
mod suite;
mod upgrade;

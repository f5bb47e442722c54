//! Tests of the `berth serve` process: crash safety under kill -9, graceful shutdown,
//! configuration, and interoperability with skopeo.

mod crash;
mod lifecycle;
mod process;
mod skopeo;

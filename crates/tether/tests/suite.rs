//! Tether's integration tests: the real `tether` binary against real servers on loopback.
//!
//! One crate, so the shared helpers in `support/` are compiled once and the suites link into
//! one binary instead of one each. A suite is a module of `suite/`, and its tests are named
//! after it: `cargo nextest run -p tether -E 'test(/^suite::smuggling::/)'`. The one suite
//! that runs for a minute lives apart in `slow.rs`, so `--test suite` is the quick round.

// Test helpers may unwrap: a failure here is a failed test, with the panic as its report.
#![allow(clippy::unwrap_used)]

#[path = "support/mod.rs"]
mod support;

#[path = "suite/mod.rs"]
mod suite;

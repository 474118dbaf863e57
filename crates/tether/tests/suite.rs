//! Tether's integration tests: the real `tether` binary against real servers on loopback.
//!
//! One crate, so the shared helpers in `support/` are compiled once and the suites link into
//! one binary instead of one each. A suite is a module of `suite/`, and its tests are named
//! after it: `cargo nextest run -p tether -E 'test(/^suite::smuggling::/)'`. The one suite
//! that runs for a minute lives apart in `slow.rs`, so `--test suite` is the quick round.

// Test helpers may unwrap: a failure here is a failed test, with the panic as its report.
#![allow(clippy::unwrap_used)]

mod support {
    pub mod fixture;
    pub mod h1raw;
    pub mod h2raw;
    pub mod redis_common;
}

mod suite {
    mod admin;
    mod affinity;
    mod big_bodies;
    mod dashboard;
    mod demo;
    mod edge;
    mod fault_probe;
    mod h2_floods;
    mod health;
    mod ipv6;
    mod lifecycle;
    mod limits;
    mod proxy;
    mod redis_affinity;
    mod redis_tls_cluster;
    mod smuggling;
    mod sticky_modes;
    mod systemd;
    mod tls;
    mod upstream;
}

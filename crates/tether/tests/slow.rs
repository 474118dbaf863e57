//! Tether's integration tests that take a minute or more, apart from `suite.rs` so the quick
//! round (`cargo nextest run -p tether --test suite`) need not wait for them. The full run
//! (`scripts/test.sh`) runs both.

// Test helpers may unwrap: a failure here is a failed test, with the panic as its report.
#![allow(clippy::unwrap_used)]

mod support {
    // This crate uses only some of the shared helpers the quick suites use.
    #![allow(dead_code)]
    pub mod fixture;
}

mod slow {
    mod reload_under_load;
}

//! Tether's integration tests that take a minute or more, apart from `suite.rs` so the quick
//! round (`cargo nextest run -p tether --test suite`) need not wait for them. The full run
//! (`scripts/test.sh`) runs both.

// Test helpers may unwrap: a failure here is a failed test, with the panic as its report.
#![allow(clippy::unwrap_used)]

// Of the helpers in `support/`, only the fixture; and only part of it.
#[allow(dead_code)]
#[path = "support/fixture.rs"]
mod fixture;

#[path = "slow/mod.rs"]
mod slow;

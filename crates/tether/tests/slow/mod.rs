//! The suites that take a minute or more.

mod reload_under_load;

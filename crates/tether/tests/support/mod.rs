//! Helpers shared by the suites.

pub mod fixture;
pub mod h1raw;
pub mod h2raw;
pub mod redis_common;

//! Tether: an HTTP load balancer whose headline is session affinity done right.
//!
//! The binary (`main.rs`) is a thin CLI over this library:
//! - [`config`]: the TOML file, parsed in two stages and validated with every error reported;
//! - [`snapshot`]: one immutable, lock-free-loaded view of routes, backends and balancers per
//!   configuration generation, reusing per-server runtime state across reloads;
//! - [`proxy`]: the request path (route → affinity → balancer → forward → response);
//! - [`server`]: listeners, connections, graceful shutdown and reload;
//! - [`demo`]: `tether demo`, three demo servers behind a sticky Tether.

pub mod admin;
pub mod clock;
pub mod config;
pub mod control;
pub mod demo;
pub mod health;
pub mod layers;
pub mod metrics;
pub mod proxy;
pub mod rate;
pub mod runtime;
pub mod server;
pub mod snapshot;
pub mod stick;
#[cfg(unix)]
pub mod systemd;
#[cfg(test)]
mod test_support;
pub mod tls;
pub mod upstream;

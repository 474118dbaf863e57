//! Tether: an HTTP load balancer whose headline is session affinity done right.
//!
//! The binary (`main.rs`) is a thin CLI over this library. The modules stand in layers, each
//! using only those below it (the order and a test that keeps it: `src/layers.rs`; the tour:
//! `docs/architecture.md`):
//! - `clock`, `systemd`, `turn`, `header_maps`; `tls`; [`config`]: the TOML file, parsed in two stages and
//!   validated with every error reported;
//! - `metrics`, `rate`, `stick`, `upstream`: what a snapshot is built from;
//! - `snapshot`: one immutable, lock-free-loaded view of routes, backends and balancers per
//!   configuration generation, reusing per-server runtime state across reloads;
//! - `health`, `discovery` (servers found in DNS); [`proxy`]: the request path, in named
//!   phases;
//! - `server`: listeners and client connections; `control`: typed commands; `admin`: the
//!   API and dashboard; [`runtime`]: start, reload, signals and shutdown;
//! - [`demo`]: `tether demo`, three demo servers behind a sticky Tether; [`ctl`]: `tether
//!   servers` and `tether drain`, the admin API from the command line (a client of it, over
//!   HTTP, that uses no other module).

pub(crate) mod admin;
pub(crate) mod clock;
pub mod config;
pub(crate) mod control;
pub mod ctl;
pub mod demo;
pub(crate) mod discovery;
pub(crate) mod header_maps;
pub(crate) mod health;
#[cfg(test)]
mod layers;
pub(crate) mod metrics;
pub mod proxy;
pub(crate) mod rate;
pub mod runtime;
pub(crate) mod server;
pub(crate) mod snapshot;
pub(crate) mod stick;
#[cfg(unix)]
pub(crate) mod systemd;
#[cfg(test)]
mod test_support;
pub mod tls;
pub(crate) mod turn;
pub(crate) mod upstream;

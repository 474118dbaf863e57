//! The quick suites, one module each, named after what they test.

mod admin;
mod affinity;
mod algorithms;
mod big_bodies;
mod cli;
mod dashboard;
mod demo;
mod edge;
mod engine;
mod fault_probe;
mod h2_floods;
mod health;
mod ipv6;
mod lifecycle;
mod limits;
mod proxy;
mod redis_affinity;
mod redis_tls_cluster;
mod routing;
mod server_h1;
mod sessions;
mod smuggling;
mod sticky_modes;
mod systemd;
mod tls;
mod upstream;

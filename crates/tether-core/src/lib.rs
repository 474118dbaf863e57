//! Pure logic of the Tether load balancer: no sockets, no clocks of its own.
//!
//! - [`server`]: per-server runtime state (health, admin state, in-flight) in atomics, and the
//!   RAII guard that counts a request as in flight until its response body ends.
//! - [`balance`]: the balancing algorithms, one per file, each built once from an immutable
//!   server set and asked to pick among the servers the caller says are usable.
//! - [`affinity`]: the authenticated affinity cookie and the expiry policy of a pin.
//! - [`sessions`]: each server's distinct sessions over a sliding window, in 16 KiB of atomics.
//! - [`h1`]: Tether's own HTTP/1.1 codec — request and response heads judged by the framing
//!   policy as they are parsed, body decoding and chunked encoding, the heads Tether writes —
//!   pure, for the engine in the `tether` crate.
//! - [`pool`]: the idle connections to one server (LIFO, capped, expiring, clean ones only).
//! - [`sni`]: the server name of a TLS ClientHello, read without terminating TLS.
//! - [`rng`]: a tiny lock-free, seedable random source shared by the randomised balancers.

pub mod affinity;
pub mod balance;
pub mod conns;
pub mod h1;
pub mod health;
pub mod pool;
pub mod rate;
pub mod retry;
pub mod rng;
pub mod server;
pub mod sessions;
pub mod sni;
pub mod stick;
pub mod throttle;

pub use server::{AdminState, Health, InFlightGuard, ServerState};

//! Test support for Tether's integration tests.
//!
//! Everything here uses real sockets on OS-assigned ports (`127.0.0.1:0`), in the spirit of
//! hyper's own `tests/support`: a behaviour is only tested when it goes through a real proxy.
//!
//! - [`servers`]: upstream servers that behave well ([`EchoServer`]) or badly on purpose
//!   ([`HangServer`], [`ResetServer`], ...), each stoppable and restartable on the same port;
//!   [`RecorderServer`] keeps every byte it receives, for request-smuggling tests.
//! - [`harness`]: runs the real `tether` binary as a child process and reads its JSON logs.
//! - [`config`]: its configuration file, built in code ([`config::Config`]) and written as TOML.
//! - [`wait`]: polling helpers so tests wait for a condition instead of sleeping.
//! - [`browser`]: a real headless Chromium driven over the DevTools Protocol (dashboard tests).
//! - [`redis`]: a real `redis-server` to break on purpose (kill, pause), plain, TLS or a
//!   Redis Cluster, and a RESP client to look inside it.
//! - [`tls`]: a throwaway CA, certificates it signs (expired ones too), and a rustls client
//!   that trusts it; [`tls::Pki`] writes them into a [`ScratchDir`] for a config to name.
//! - [`dns`]: an in-process DNS server whose records a test changes while Tether runs.
//! - [`ScratchDir`]: a temporary directory, removed on drop.
//!
//! Everything that starts a process ([`Tether`], [`redis::RedisServer`], the browser) kills
//! it on drop, also when a test panics first; [`KillOnDrop`] does the same for a process a
//! test starts itself.

pub mod browser;
mod child;
pub mod config;
pub mod dns;
pub mod harness;
pub mod redis;
mod scratch;
pub mod servers;
pub mod tls;
pub mod wait;

pub use child::KillOnDrop;
pub use harness::{CheckOutput, HarnessError, Tether, run_check};
pub use scratch::ScratchDir;
pub use servers::{
    Behaviour, CloseMidResponseServer, Counters, DelayServer, EchoServer, GarbageServer,
    HangServer, RecorderServer, Recording, ResetServer, Server, StatusServer, WebSocketEchoServer,
};
pub use wait::{wait_until, wait_until_async};

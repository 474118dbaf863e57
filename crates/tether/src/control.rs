//! The typed commands that change a running Tether — reload, a server's state or weight,
//! adding or removing a server, flushing a stick table — and their errors. The admin API
//! sends them ([`crate::admin`] maps a [`ControlError`] to an HTTP status); the controller in
//! [`crate::runtime`], the only writer of the configuration, applies them one at a time.

use tether_core::AdminState;
use tokio::sync::oneshot;

use crate::config;

/// The answer to a command: the new configuration generation (or, for a flush, the entries
/// removed), or why nothing changed.
pub type Reply = oneshot::Sender<Result<u64, ControlError>>;

/// A change asked for through the API, applied by the controller.
#[derive(Debug)]
pub enum Command {
    /// Re-read the configuration file.
    Reload(Reply),
    /// Change a server's state and/or weight.
    SetServer {
        /// Backend name.
        backend: String,
        /// Server name.
        server: String,
        /// New state.
        state: Option<AdminState>,
        /// New weight.
        weight: Option<u32>,
        /// The answer.
        reply: Reply,
    },
    /// Add a server at runtime.
    AddServer {
        /// Backend name.
        backend: String,
        /// The server, validated like a config entry.
        server: config::Server,
        /// The answer.
        reply: Reply,
    },
    /// Remove a server at runtime (its in-flight requests finish).
    RemoveServer {
        /// Backend name.
        backend: String,
        /// Server name.
        server: String,
        /// The answer.
        reply: Reply,
    },
    /// Forget every affinity binding of a backend's table.
    FlushSessions {
        /// Backend name.
        backend: String,
        /// The answer: entries removed.
        reply: Reply,
    },
    /// Tell the addresses the listeners are bound to (a question, not a change: the
    /// controller owns the open sockets).
    BoundAddresses(oneshot::Sender<Vec<(String, std::net::SocketAddr)>>),
}

/// Why a command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No backend of that name.
    #[error("no backend {0:?}")]
    NoBackend(String),
    /// No server of that name in the backend.
    #[error("no server {server:?} in backend {backend:?}")]
    NoServer {
        /// Backend name.
        backend: String,
        /// Server name.
        server: String,
    },
    /// A server of that name exists already.
    #[error("server {0:?} already exists")]
    ServerExists(String),
    /// Removing the backend's last server.
    #[error("a backend needs at least one server")]
    LastServer,
    /// Removing a server DNS discovery found, or changing its weight: DNS decides both.
    #[error(
        "server {0:?} comes from DNS discovery: change its DNS records to remove it or change \
         its weight (its state can be set)"
    )]
    Discovered(String),
    /// Flushing a backend that keeps no stick table.
    #[error("this backend keeps no stick table")]
    NoTable,
    /// The configuration file could not be reloaded (the old one keeps serving).
    #[error("{0}")]
    Reload(String),
}

//! hyper's HTTP/2 server settings for a listener's connections, built once per snapshot
//! (HTTP/1.1 is Tether's own: `server::h1`).

use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config;

/// hyper's settings for a listener's HTTP/2 connections: stream, window and reset limits
/// (Envoy's edge values: 100 streams, 64 KiB stream and 1 MiB connection windows).
/// Pending-accept resets bound the "rapid reset" attack (CVE-2023-44487); the header list
/// size bounds CONTINUATION floods.
pub(crate) fn connection_builder(l: &config::Listener) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(l.h2_max_streams)
        .max_header_list_size(u32::try_from(l.limits.max_header_bytes).unwrap_or(u32::MAX))
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(1024));
    b
}

//! hyper's server settings for a listener's connections, built once per snapshot.

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

use crate::config;

/// hyper's settings for a listener's connections: the header timeout and size limits for
/// HTTP/1; stream, window and reset limits for HTTP/2 (Envoy's edge values: 100 streams,
/// 64 KiB stream and 1 MiB connection windows). Pending-accept resets bound the "rapid
/// reset" attack (CVE-2023-44487); the header list size bounds CONTINUATION floods.
pub(crate) fn connection_builder(l: &config::Listener) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(l.header_timeout)
        .keep_alive(true)
        .max_buf_size(l.limits.max_header_bytes.max(8192))
        .max_headers(l.limits.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(l.h2_max_streams)
        .max_header_list_size(u32::try_from(l.limits.max_header_bytes).unwrap_or(u32::MAX))
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(1024));
    b
}

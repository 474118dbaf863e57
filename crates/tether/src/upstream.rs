//! The pooled clients that reach servers: plain or TLS (hyper-rustls over hyper-util's TCP
//! connector), HTTP/1.1 or HTTP/2.
//!
//! An HTTP/1.1 backend shares one client: requests carry the server's address in their URI
//! (which picks the pooled connection) and the client's `Host` as a header. HTTP/2 has no
//! `Host` line of its own: `:authority` comes from the URI, so an HTTP/2 request must carry
//! the client's host there. Each server of an HTTP/2 backend therefore gets its own client
//! whose connector dials that server whatever the URI says (`pinned`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::{
    FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream,
};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::config;

pub mod body;
pub mod h1;
pub mod stream;

use body::ReqBody;

/// A server's response body, from Tether's HTTP/1.1 client or hyper's HTTP/2 one.
#[derive(Debug)]
pub enum ResponseBody {
    H1(h1::ResponseBody),
    H2(hyper::body::Incoming),
}

impl ResponseBody {
    /// A server's header lines not yet in the response's map (HTTP/1.1 only: hyper's
    /// HTTP/2 client puts them there).
    pub fn lines(&self) -> Option<&h1::ServerLines> {
        match self {
            Self::H1(b) => b.lines(),
            Self::H2(_) => None,
        }
    }

    /// Takes the lines [`Self::lines`] shows.
    pub fn take_lines(&mut self) -> Option<h1::ServerLines> {
        match self {
            Self::H1(b) => b.take_lines(),
            Self::H2(_) => None,
        }
    }
}

/// Error of a server's response body.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl http_body::Body for ResponseBody {
    type Data = bytes::Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, BodyError>>> {
        match self.get_mut() {
            ResponseBody::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ResponseBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::H1(b) => b.is_end_stream(),
            ResponseBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ResponseBody::H1(b) => b.size_hint(),
            ResponseBody::H2(b) => b.size_hint(),
        }
    }
}

/// How requests reach one server: Tether's HTTP/1.1 client with the server's connection
/// pool, or (`http2 = true`) the server's own hyper HTTP/2 client.
#[derive(Debug, Clone)]
pub enum ServerClient {
    H1(std::sync::Arc<h1::Origin>),
    H2(Box<UpstreamClient>),
}

/// The data path's client type.
pub type UpstreamClient = Client<Upstream, ReqBody>;

/// What makes two clients interchangeable (a reload keeps a client whose key is unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKey {
    pub connect: Duration,
    pub idle: Duration,
    pub tls: Option<config::UpstreamTls>,
    pub http2: bool,
    /// The server address a per-server client dials.
    pub pinned: Option<String>,
}

impl ClientKey {
    /// The key of `b`'s shared client.
    pub fn of(b: &config::Backend) -> Self {
        Self {
            connect: b.connect_timeout,
            idle: b.idle_timeout,
            tls: b.tls.clone(),
            http2: b.http2,
            pinned: None,
        }
    }
}

/// A connector: hyper-rustls's, optionally pinned to one server's address.
#[derive(Clone, Debug)]
pub struct Upstream {
    inner: HttpsConnector<HttpConnector>,
    pinned: Option<Uri>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Upstream {
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let target = self.pinned.clone().unwrap_or(uri);
        self.inner.call(target)
    }
}

/// A client for `key`; `pinned` (scheme and server address) makes it dial only that server.
pub fn new_client(key: &ClientKey, pinned: Option<Uri>) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(key.connect));
    http.set_nodelay(true);
    http.enforce_http(false);
    let tls_config = key
        .tls
        .as_ref()
        .map_or_else(crate::tls::unused_client_config, |t| (*t.client_config).clone());
    let mut builder = HttpsConnectorBuilder::new().with_tls_config(tls_config).https_or_http();
    let server_name = key.tls.as_ref().and_then(|t| t.server_name.clone());
    if let Some(name) = server_name.and_then(|n| rustls_pki_types::ServerName::try_from(n).ok()) {
        builder = builder.with_server_name_resolver(FixedServerNameResolver::new(name));
    }
    let inner = if key.http2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    };
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(key.idle)
        .http2_only(key.http2)
        .build(Upstream { inner, pinned })
}

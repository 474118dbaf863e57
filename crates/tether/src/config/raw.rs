//! Stage one: the file as written. Plain serde types with `deny_unknown_fields`, so a typo
//! is an error that names the key. Values that need checking (addresses, durations, names
//! that refer to other sections) stay strings wrapped in [`Spanned`] so stage two can report
//! the line they are on. The `error` module turns what serde and the TOML parser report
//! about this stage into errors that name the key as written.

mod error;

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub(super) use error::structural;

/// A string with its position in the file.
pub type S = Spanned<String>;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub grace_period: Option<S>,
    pub access_log: Option<bool>,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub backends: BTreeMap<String, RawBackend>,
    pub secrets: Option<RawSecrets>,
    pub stick_table: Option<RawStickTable>,
    pub admin: Option<RawAdmin>,
    pub request_id: Option<RawRequestId>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequestId {
    pub header: Option<S>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: Option<S>,
    pub token_file: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStickTable {
    pub store: Option<S>,
    pub capacity: Option<Spanned<i64>>,
    pub redis_url: Option<S>,
    pub redis_timeout: Option<S>,
    pub redis_prefix: Option<S>,
    pub redis_cluster: Option<bool>,
    pub redis_ca_file: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: S,
    pub address: S,
    pub mode: Option<S>,
    pub default_backend: Option<S>,
    #[serde(default)]
    pub trusted_proxies: Vec<S>,
    pub timeouts: Option<RawListenerTimeouts>,
    pub limits: Option<RawListenerLimits>,
    pub rate_limit: Option<RawRateLimit>,
    pub tls: Option<RawTls>,
    pub proxy_protocol: Option<bool>,
    pub http2: Option<RawHttp2>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerLimits {
    pub max_header_bytes: Option<Spanned<i64>>,
    pub max_headers: Option<Spanned<i64>>,
    pub max_body_bytes: Option<Spanned<i64>>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_connections_per_ip: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub requests_per_second: Spanned<toml::Value>,
    pub burst: Option<Spanned<i64>>,
    pub key: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<S>,
    pub key: Option<S>,
    #[serde(default)]
    pub certificates: Vec<RawCertPair>,
    pub min_version: Option<S>,
    pub client_ca: Option<S>,
    pub client_auth: Option<S>,
    pub client_crl: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertPair {
    pub cert: S,
    pub key: S,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp2 {
    pub max_concurrent_streams: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTimeouts {
    pub header: Option<S>,
    pub body: Option<S>,
    pub idle: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub sni: Option<S>,
    pub host: Option<S>,
    pub path_prefix: Option<S>,
    pub path_regex: Option<S>,
    pub listeners: Option<Spanned<Vec<String>>>,
    pub methods: Option<Spanned<Vec<String>>>,
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
    pub strip_prefix: Option<S>,
    pub add_prefix: Option<S>,
    pub request_headers: Option<RawHeaderEdits>,
    pub response_headers: Option<RawHeaderEdits>,
    pub backend: Option<S>,
    pub split: Option<Spanned<Vec<RawSplitSide>>>,
    pub sticky_split: Option<bool>,
    pub split_cookie: Option<S>,
    pub redirect: Option<RawRedirect>,
    pub respond: Option<RawRespond>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderEdits {
    pub set: Option<Spanned<BTreeMap<String, String>>>,
    pub add: Option<Spanned<BTreeMap<String, String>>>,
    pub remove: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSplitSide {
    pub backend: S,
    pub weight: Spanned<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    pub location: S,
    pub status: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRespond {
    pub status: Spanned<i64>,
    pub body: Option<S>,
    pub content_type: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub balance: Option<S>,
    pub hash_key: Option<S>,
    pub hash_balance_factor: Option<Spanned<i64>>,
    pub sticky: Option<RawSticky>,
    pub timeouts: Option<RawBackendTimeouts>,
    pub limits: Option<RawBackendLimits>,
    pub health_check: Option<RawHealthCheck>,
    pub on_all_down: Option<S>,
    pub retry: Option<RawRetry>,
    pub outlier: Option<RawOutlier>,
    pub slow_start: Option<S>,
    pub rate_limit: Option<RawRateLimit>,
    pub tls: Option<Spanned<toml::Value>>,
    pub http2: Option<bool>,
    pub send_proxy: Option<S>,
    #[serde(default)]
    pub servers: Vec<RawServer>,
    pub discovery: Option<RawDiscovery>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub dns: Option<S>,
    pub srv: Option<S>,
    pub interval: Option<S>,
    pub nameservers: Option<Vec<S>>,
    pub on_removed: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    #[serde(rename = "type")]
    pub kind: Option<S>,
    pub path: Option<S>,
    pub expect_status: Option<Spanned<toml::Value>>,
    pub expect_body: Option<S>,
    pub host: Option<S>,
    pub interval: Option<S>,
    pub timeout: Option<S>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Option<Spanned<i64>>,
    pub budget_percent: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub consecutive_failures: Option<Spanned<i64>>,
    pub base_ejection: Option<S>,
    pub max_ejection: Option<S>,
    pub max_ejected_percent: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackendLimits {
    pub max_connections_per_server: Option<Spanned<i64>>,
    pub queue_size: Option<Spanned<i64>>,
    pub queue_timeout: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackendTimeouts {
    pub connect: Option<S>,
    pub response: Option<S>,
    pub idle: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    pub mode: Option<S>,
    pub cookie_name: Option<S>,
    pub idle_timeout: Option<S>,
    pub max_lifetime: Option<S>,
    pub same_site: Option<S>,
    pub secure: Option<Spanned<toml::Value>>,
    pub http_only: Option<bool>,
    pub domain: Option<S>,
    pub path: Option<S>,
    pub on_server_down: Option<S>,
    pub on_server_full: Option<S>,
    pub header: Option<S>,
    pub app_cookie: Option<S>,
    pub client_ip_prefix_v4: Option<Spanned<i64>>,
    pub client_ip_prefix_v6: Option<Spanned<i64>>,
    pub max_age: Option<S>,
    pub rebound_header: Option<S>,
    pub max_in_flight_per_session: Option<Spanned<i64>>,
    pub first_pick_window: Option<S>,
    pub first_pick_across_connections: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub name: S,
    pub address: S,
    pub weight: Option<Spanned<i64>>,
    pub backup: Option<bool>,
    pub state: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecrets {
    pub cookie_keys: Option<Spanned<Vec<String>>>,
}

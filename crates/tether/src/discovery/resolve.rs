//! One resolution: a hickory resolver for a backend's `discovery` settings, and the lookups
//! that turn `dns` (A/AAAA) or `srv` (SRV, then the targets' addresses) into [`Found`]
//! servers with the shortest TTL among the records read.
//!
//! The resolver keeps no cache: the task decides when to ask again (every `interval`, or at
//! the TTL when shorter), and a cached answer would hide a change for up to its TTL.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::rdata::SRV;
use hickory_resolver::proto::rr::{Name, RData, Record};
use hickory_resolver::proto::xfer::Protocol;
use tether_core::balance::MAX_WEIGHT;

use super::Found;
use crate::config::{self, DiscoveryLookup};

/// The shortest wait for one DNS answer.
const MIN_TIMEOUT: Duration = Duration::from_millis(500);
/// The longest wait for one DNS answer (two tries per resolution).
const MAX_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a resolution found nothing to use (the backend keeps its last known servers).
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// `/etc/resolv.conf` (or the platform's equivalent) could not be read.
    #[error("cannot read the system's resolver configuration: {0}")]
    SystemConfig(hickory_resolver::ResolveError),
    /// The lookup failed: timeout, SERVFAIL, NXDOMAIN, no records.
    #[error("{0}")]
    Lookup(#[from] hickory_resolver::ResolveError),
    /// SRV records whose targets have no address.
    #[error("no SRV target has an address")]
    NoAddress,
}

/// What one resolution found.
#[derive(Debug)]
pub(super) struct Resolution {
    /// Sorted by name, no name twice.
    pub(super) servers: Vec<Found>,
    /// The shortest TTL of the records read.
    pub(super) ttl: Option<Duration>,
}

/// A resolver for `cfg`: its `nameservers` (UDP, and TCP for truncated answers) or the
/// system's configuration; no cache; A and AAAA asked together.
pub(super) fn resolver(cfg: &config::Discovery) -> Result<TokioResolver, ResolveError> {
    let provider = TokioConnectionProvider::default();
    let mut builder = if cfg.nameservers.is_empty() {
        TokioResolver::builder(provider).map_err(ResolveError::SystemConfig)?
    } else {
        let servers: Vec<NameServerConfig> = cfg
            .nameservers
            .iter()
            .flat_map(|a| [Protocol::Udp, Protocol::Tcp].map(|p| NameServerConfig::new(*a, p)))
            .collect();
        let config = ResolverConfig::from_parts(None, Vec::new(), servers);
        TokioResolver::builder_with_config(config, provider)
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.cache_size = 0;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = cfg.interval.clamp(MIN_TIMEOUT, MAX_TIMEOUT);
    opts.attempts = 2;
    Ok(builder.build())
}

/// Resolves `lookup` once.
pub(super) async fn resolve(
    resolver: &TokioResolver,
    lookup: &DiscoveryLookup,
) -> Result<Resolution, ResolveError> {
    match lookup {
        DiscoveryLookup::Dns { host, port } => {
            let ips = resolver.lookup_ip(host.as_str()).await?;
            let ttl = min_ttl(ips.as_lookup().records());
            let addrs: BTreeSet<SocketAddr> =
                ips.iter().map(|ip| SocketAddr::new(ip, *port)).collect();
            let servers = addrs.into_iter().filter_map(|a| found(a.to_string(), a, 1)).collect();
            Ok(Resolution { servers, ttl })
        }
        DiscoveryLookup::Srv(name) => resolve_srv(resolver, name).await,
    }
}

/// SRV records of `name`, the lowest priority's, each target's address from the answer's
/// additional section or, failing that, its own lookup.
async fn resolve_srv(resolver: &TokioResolver, name: &str) -> Result<Resolution, ResolveError> {
    let srv = resolver.srv_lookup(name).await?;
    let records = srv.as_lookup().records();
    let mut ttl = min_ttl(records);
    let mut servers: BTreeMap<String, Found> = BTreeMap::new();
    for (target, port, weight) in lowest_priority(srv.iter()) {
        let Some((ip, target_ttl)) = target_address(resolver, records, &target).await else {
            continue;
        };
        ttl = shorter(ttl, target_ttl);
        let server_name = format!("{}:{port}", dns_name(&target));
        let Some(f) = found(server_name.clone(), SocketAddr::new(ip, port), weight) else {
            continue;
        };
        // The same target and port twice: the larger weight.
        let kept = servers.entry(server_name).or_insert_with(|| f.clone());
        kept.weight = kept.weight.max(f.weight);
    }
    if servers.is_empty() {
        return Err(ResolveError::NoAddress);
    }
    Ok(Resolution { servers: servers.into_values().collect(), ttl })
}

/// The address of SRV target `target`: from the answer's records when it carries one, else
/// looked up (with that lookup's TTL); `None` when it has none.
async fn target_address(
    resolver: &TokioResolver,
    records: &[Record],
    target: &Name,
) -> Option<(IpAddr, Option<Duration>)> {
    if let Some(ip) = address_in(records, target) {
        return Some((ip, None));
    }
    match resolver.lookup_ip(target.clone()).await {
        Ok(ips) => Some((ips.iter().min()?, min_ttl(ips.as_lookup().records()))),
        Err(e) => {
            tracing::debug!(target = %target, error = %e, "SRV target has no address");
            None
        }
    }
}

/// `(target, port, weight)` of the records with the lowest priority (the others are
/// fallbacks, unused while any of these is published); weights clamped to 1..=256; records
/// whose target is `.` ("no such service here", RFC 2782) left out.
pub(super) fn lowest_priority<'a>(records: impl Iterator<Item = &'a SRV>) -> Vec<(Name, u16, u32)> {
    let records: Vec<&SRV> = records.filter(|r| !r.target().is_root()).collect();
    let Some(lowest) = records.iter().map(|r| r.priority()).min() else { return Vec::new() };
    records
        .into_iter()
        .filter(|r| r.priority() == lowest)
        .map(|r| (r.target().clone(), r.port(), u32::from(r.weight()).clamp(1, MAX_WEIGHT)))
        .collect()
}

/// The lowest address the answer carries for `target` (one per target, stable across
/// resolutions).
fn address_in(records: &[Record], target: &Name) -> Option<IpAddr> {
    records
        .iter()
        .filter(|r| r.name() == target)
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .min()
}

/// `name` in lowercase without its final dot: `app1.internal`.
pub(super) fn dns_name(name: &Name) -> String {
    let text = name.to_lowercase().to_ascii();
    text.strip_suffix('.').unwrap_or(&text).to_owned()
}

/// The shorter of two TTLs, either of which may be unknown.
fn shorter(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn min_ttl(records: &[Record]) -> Option<Duration> {
    records.iter().map(|r| Duration::from_secs(u64::from(r.ttl()))).min()
}

fn found(name: String, address: SocketAddr, weight: u32) -> Option<Found> {
    let address = address.to_string().parse::<http::uri::Authority>().ok()?;
    Some(Found { name, address, weight })
}

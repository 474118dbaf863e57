//! The `[stick_table]` section: the table's capacity and, with `store = "redis"`, where the
//! shared table lives (URL or cluster seeds, TLS roots, timeout, key prefix).

use super::super::raw::RawStickTable;
use super::{Checker, S};
use crate::config::{
    DEFAULT_REDIS_PREFIX, DEFAULT_REDIS_TIMEOUT, DEFAULT_STICK_CAPACITY, RedisStore,
};

pub(super) fn stick_capacity(c: &mut Checker, raw: Option<&RawStickTable>) -> u64 {
    let Some(t) = raw else { return DEFAULT_STICK_CAPACITY };
    match &t.capacity {
        None => DEFAULT_STICK_CAPACITY,
        Some(n) if *n.get_ref() >= 1 => *n.get_ref() as u64,
        Some(n) => {
            c.err("stick_table.capacity", Some(n), "must be at least 1");
            DEFAULT_STICK_CAPACITY
        }
    }
}

/// The Redis store, or `None` for the in-memory table (the default) and on error.
pub(super) fn redis_store(c: &mut Checker, raw: Option<&RawStickTable>) -> Option<RedisStore> {
    let t = raw?;
    if !uses_redis(c, t) {
        return None;
    }
    let Some(url) = &t.redis_url else {
        c.err::<()>(
            "stick_table.redis_url",
            None,
            "store = \"redis\" needs redis_url, e.g. \"redis://127.0.0.1:6379\"",
        );
        return None;
    };
    let cluster = t.redis_cluster.unwrap_or(false);
    let tls = redis_urls(c, url, cluster);
    let ca_pem = t.redis_ca_file.as_ref().and_then(|f| ca_pem(c, f, tls));
    let timeout =
        c.duration("stick_table.redis_timeout", t.redis_timeout.as_ref(), DEFAULT_REDIS_TIMEOUT);
    let prefix = t.redis_prefix.as_ref().map_or(DEFAULT_REDIS_PREFIX.to_owned(), |p| {
        c.name("stick_table.redis_prefix", p);
        p.get_ref().clone()
    });
    Some(RedisStore { url: url.get_ref().trim().to_owned(), timeout, prefix, cluster, ca_pem })
}

/// Whether `store` is `"redis"`. With `"memory"` (the default) every `redis_*` key is an
/// error; any other store is one too.
fn uses_redis(c: &mut Checker, t: &RawStickTable) -> bool {
    match t.store.as_ref().map_or("memory", |s| s.get_ref().as_str()) {
        "memory" => {
            for (key, v) in [
                ("redis_url", &t.redis_url),
                ("redis_timeout", &t.redis_timeout),
                ("redis_prefix", &t.redis_prefix),
                ("redis_ca_file", &t.redis_ca_file),
            ] {
                if let Some(v) = v {
                    c.err(
                        &format!("stick_table.{key}"),
                        Some(v),
                        "only used with store = \"redis\"",
                    );
                }
            }
            false
        }
        "redis" => true,
        other => {
            c.err(
                "stick_table.store",
                t.store.as_ref(),
                format!("unknown value {other:?}; expected one of: memory | redis"),
            );
            false
        }
    }
}

/// Checks `redis_url`: one URL, or with `cluster` the comma-separated seed nodes, all with the
/// same scheme. Returns whether they use TLS (`rediss://`).
fn redis_urls(c: &mut Checker, url: &S, cluster: bool) -> bool {
    let urls: Vec<&str> = url.get_ref().trim().split(',').map(str::trim).collect();
    if urls.len() > 1 && !cluster {
        c.err(
            "stick_table.redis_url",
            Some(url),
            "several URLs are only accepted with redis_cluster = true (they are the cluster's seed nodes)",
        );
    }
    let tls = urls.first().is_some_and(|f| f.starts_with("rediss://"));
    for one in &urls {
        let scheme_ok = one.starts_with("redis://") || one.starts_with("rediss://");
        if !scheme_ok || redis::Client::open(*one).is_err() {
            c.err(
                "stick_table.redis_url",
                Some(url),
                format!(
                    "invalid Redis URL {one:?}; expected redis://[user:password@]host:port[/db] \
                     (rediss:// for TLS)"
                ),
            );
        } else if one.starts_with("rediss://") != tls {
            c.err(
                "stick_table.redis_url",
                Some(url),
                "cluster seed nodes must all use redis:// or all use rediss://",
            );
        }
    }
    tls
}

/// The CA certificate(s) of `redis_ca_file`, which only a TLS URL may name.
fn ca_pem(c: &mut Checker, f: &S, tls: bool) -> Option<Vec<u8>> {
    if !tls {
        c.err("stick_table.redis_ca_file", Some(f), "only used with TLS (a rediss:// redis_url)");
        return None;
    }
    match std::fs::read(f.get_ref()) {
        Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => Some(pem),
        Ok(_) => {
            c.err(
                "stick_table.redis_ca_file",
                Some(f),
                format!("{:?} holds no PEM certificate", f.get_ref()),
            );
            None
        }
        Err(e) => {
            c.err(
                "stick_table.redis_ca_file",
                Some(f),
                format!("cannot read {:?}: {e}", f.get_ref()),
            );
            None
        }
    }
}

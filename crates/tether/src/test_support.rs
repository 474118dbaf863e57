//! Snapshots built from TOML for unit tests, and a waker that counts its wakes.
//!
//! Decision logic (selection, affinity, outlier ejection, reload reuse) reads a
//! [`BackendView`], which only the [`Registry`] builds. These helpers go through the real
//! path — parse, validate, build — so a table test sees exactly what the data path sees,
//! and no socket is opened: clients connect lazily and the listener is never bound.

use std::sync::Arc;

use tether_core::affinity::CookieKeys;

use crate::config::Config;
use crate::snapshot::{BackendView, Registry, Snapshot};

/// Appended to every test config, which needs a listener; it is never bound.
const LISTENER: &str = r#"
[[listeners]]
name = "web"
address = "127.0.0.1:0"
"#;

/// Validates `toml` (top-level keys, backends, routes: anything but the listener) followed
/// by [`LISTENER`].
pub fn config(toml: &str) -> Config {
    let text = format!("{toml}\n{LISTENER}");
    Config::parse_with_env_keys(&text, None).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

/// Cookie keys of 32 repeated bytes, one key per seed; the first signs, all verify.
pub fn keys(seeds: &[u8]) -> Arc<CookieKeys> {
    let raw: Vec<[u8; 32]> = seeds.iter().map(|&s| [s; 32]).collect();
    Arc::new(CookieKeys::from_bytes(&raw).expect("32-byte keys"))
}

/// A first-generation snapshot of `toml`, cookies signed by `keys(&[1])`.
pub fn snapshot(toml: &str) -> Snapshot {
    snapshot_with_keys(toml, &[1])
}

/// A first-generation snapshot of `toml` whose cookie keys are `keys(seeds)`.
pub fn snapshot_with_keys(toml: &str, seeds: &[u8]) -> Snapshot {
    Registry::default().build(config(toml), &keys(seeds))
}

/// The backend called `name`.
pub fn backend<'s>(snap: &'s Snapshot, name: &str) -> &'s BackendView {
    snap.backends.iter().find(|b| &*b.name == name).unwrap_or_else(|| panic!("no backend {name}"))
}

/// `[[backends.BACKEND.servers]]` entries named `names`, each on its own unused port;
/// a name ending in `+backup` is a backup server.
pub fn servers(backend: &str, names: &[&str]) -> String {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (name, backup) = n.strip_suffix("+backup").map_or((*n, false), |n| (n, true));
            format!(
                "[[backends.{backend}.servers]]\nname = \"{name}\"\naddress = \"127.0.0.1:{}\"\n\
                 backup = {backup}\n",
                9001 + i
            )
        })
        .collect()
}

/// A waker that counts how often it was woken: for polling a future by hand.
pub struct CountingWaker(std::sync::atomic::AtomicUsize);

impl CountingWaker {
    /// A new waker, never woken yet, and the handle that reads its count.
    pub fn new() -> (std::task::Waker, Arc<Self>) {
        let counter = Arc::new(Self(std::sync::atomic::AtomicUsize::new(0)));
        (std::task::Waker::from(Arc::clone(&counter)), counter)
    }

    /// How often it was woken.
    pub fn wakes(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

//! One client's first burst converges in cookie mode (`sticky.first_pick_window`).
//!
//! Table modes place a new key by rendezvous hashing, so a client's concurrent first requests
//! agree on a server. Cookie mode has no key until its cookie comes back: a single-page app
//! that fires a dozen API calls on its first load would otherwise get them balanced over every
//! server, with a different cookie each, and keep whichever came last. So the first cookieless
//! request of a client picks a server and a session id, remembers them for the window, and the
//! client's next cookieless requests within it share them — same server, same session, the
//! very same `Set-Cookie`.
//!
//! "One client" is one client connection (an HTTP/2 connection carries the whole burst), except
//! for a connection from `trusted_proxies` — a CDN or front proxy carries many users on one —
//! where it is one forwarded client address and `User-Agent`. With
//! `first_pick_across_connections = true`, one address and `User-Agent` is one client on any
//! connection (off by default: clients behind one NAT address look alike). What is remembered
//! is bounded per backend and expires with the window.

use std::hash::{Hash, Hasher};

use http::{Request, header};

use super::affinity::{First, Outcome, Pin};
use super::select::{self, Tried};
use super::{ConnCtx, headers};
use crate::snapshot::{BackendView, FirstPick, ListenerView, StickyView};
use crate::upstream::body::ClientBody;

/// `pin` (a cookieless request's, no server yet) joined to its client's first pick, or made
/// that first pick: a server chosen now (`key`: the request's `hash_key`) and a new session.
pub fn join(
    (backend, sticky): (&BackendView, &StickyView),
    (listener, ctx): (&ListenerView, &ConnCtx),
    req: &Request<ClientBody>,
    pin: Pin,
    (key, now): (Option<u64>, u32),
) -> Pin {
    let Some(picks) = &sticky.first_picks else { return pin };
    let client = client_key(sticky, listener, ctx, req);
    if let Some(fp) = picks.get(&client) {
        if backend.servers[fp.server].state.accepts_pinned() {
            return Pin {
                server: Some(fp.server),
                outcome: match pin.outcome {
                    Outcome::New => Outcome::Hit,
                    own => own,
                },
                issued_at: fp.issued_at,
                refresh: true,
                session: Some(fp.session),
                first: First::Follows,
                ..pin
            };
        }
    }
    let Ok(pick) = select::choose(backend, Some(&pin), &Tried::default(), key) else { return pin };
    let fp = FirstPick {
        server: pick.server,
        session: super::affinity::new_session_id(),
        issued_at: now,
    };
    picks.insert(client, fp);
    Pin {
        server: Some(fp.server),
        issued_at: now,
        refresh: true,
        session: Some(fp.session),
        first: First::Leads,
        ..pin
    }
}

/// Who the client is, as a hash: its connection, or behind a trusted proxy (or with
/// `first_pick_across_connections`) its address and `User-Agent`.
fn client_key(
    sticky: &StickyView,
    listener: &ListenerView,
    ctx: &ConnCtx,
    req: &Request<ClientBody>,
) -> u64 {
    let trusted = &listener.conn.trusted_proxies;
    let peer = ctx.peer.ip();
    let mut h = std::hash::DefaultHasher::new();
    let by_address = if !trusted.is_empty() && headers::is_trusted(peer, trusted) {
        Some(headers::client_ip(peer, req.headers(), trusted))
    } else {
        sticky.config.first_pick_across_connections.then_some(peer)
    };
    match by_address {
        Some(ip) => {
            ip.hash(&mut h);
            req.headers().get(header::USER_AGENT).map(|v| v.as_bytes()).hash(&mut h);
        }
        None => ctx.id.hash(&mut h),
    }
    h.finish()
}

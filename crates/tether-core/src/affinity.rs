//! Session affinity: the authenticated cookie and the expiry policy of a pin.
//!
//! - [`cookie`]: the token Tether puts in its affinity cookie — versioned, HMAC-SHA256
//!   authenticated, naming the server only by a keyed tag, with issue and refresh times.
//! - [`policy`]: when a pin has expired (idle or absolute) and when its cookie needs a refresh.
//! - [`outcome`]: what affinity did for one request (a metric label and a log field).

pub mod cookie;
pub mod outcome;
pub mod policy;

pub use cookie::{CookieKeys, KeyError, ServerTag, TagIndex, Token, TokenError};
pub use outcome::Outcome;
pub use policy::{Expiry, Verdict};

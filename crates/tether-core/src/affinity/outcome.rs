//! What affinity did for one request: followed a pin, made one, or replaced one.

/// How affinity went for one request (the `outcome` label of `tether_affinity_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Followed a valid pin.
    Hit,
    /// No cookie: a new pin was made.
    New,
    /// The pin had expired (idle or absolute): a new one was made.
    Expired,
    /// The cookie did not verify or named an unknown server: a new pin was made.
    Invalid,
    /// The pinned server could not serve: re-pinned to another.
    Rebound,
    /// The pinned server was full: served elsewhere this once, pin kept.
    Spilled,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::New => "new",
            Outcome::Expired => "expired",
            Outcome::Invalid => "invalid",
            Outcome::Rebound => "rebound",
            Outcome::Spilled => "spilled",
        }
    }
}

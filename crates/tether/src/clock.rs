//! The wall clock, in the units Tether stores: Unix seconds (cookie issue times, stick-table
//! expiry, health transitions, certificate expiry) and milliseconds (slow start). The lowest
//! layer: every other module may read the time from here, none is needed to read it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Unix time in seconds as the `u32` that cookies and stick tables store (saturating in
/// 2106).
pub fn unix_now_u32() -> u32 {
    u32::try_from(unix_now()).unwrap_or(u32::MAX)
}

/// Unix time in milliseconds.
pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Microseconds on a monotonic clock since its first reading in this process: for measuring
/// intervals (response times), never for dates.
pub fn mono_us() -> u64 {
    static START: std::sync::LazyLock<std::time::Instant> =
        std::sync::LazyLock::new(std::time::Instant::now);
    START.elapsed().as_micros() as u64
}

//! TLS with rustls and its ring provider (the only crypto provider in the build).

/// Makes ring the process's default rustls provider, for code that asks rustls for the
/// default (redis-rs's `rediss://` connections). Idempotent.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

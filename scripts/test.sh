#!/usr/bin/env bash
# The project's one test command (README "Run the tests"; CI runs exactly this via .ci/run).
# Installs what the tests need when it is missing, then checks formatting, lints with
# warnings denied, and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

need_apt=()
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (https://rustup.rs)"; exit 1; }
command -v curl >/dev/null || need_apt+=(curl)
# The dashboard tests drive a real headless Chromium (crates/tether-testkit/src/browser.rs);
# they fail, not skip, without one. $TETHER_CHROMIUM may name another Chromium or Chrome.
if [ -z "${TETHER_CHROMIUM:-}" ] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  need_apt+=(chromium)
fi
# The shared stick table's tests start real Redis servers (crates/tether-testkit/src/redis.rs);
# they fail, not skip, without one.
command -v redis-server >/dev/null || need_apt+=(redis-server)
# The TLS and HTTP/2 tests drive Tether with h2load (nghttp2's load client).
command -v h2load >/dev/null || need_apt+=(nghttp2-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${need_apt[*]}"
    # Packages such as redis-server start a system service on install; the tests start their
    # own servers, so keep services from starting (and from failing where there is no init).
    policy_added=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy_added=1
    fi
    status=0
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null || status=$?
    [ "$policy_added" = 1 ] && rm -f /usr/sbin/policy-rc.d
    [ "$status" = 0 ] || { echo "installing ${need_apt[*]} failed"; exit "$status"; }
  else
    echo "missing: ${need_apt[*]} (install them, or run as root on Debian/Ubuntu)"; exit 1
  fi
fi

# A CI run builds once from a fresh clone: incremental caches would only cost disk (they
# grew to tens of GB on a long-lived checkout), so CI builds without them.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo test"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi

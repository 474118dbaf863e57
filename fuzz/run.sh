#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each): bash fuzz/run.sh [SECONDS]
# Installs cargo-fuzz when missing. cargo-fuzz needs nightly flags; on the stable toolchain
# RUSTC_BOOTSTRAP=1 enables them (this project pins no nightly).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
  echo "== fuzz $target for ${secs}s"
  mkdir -p "corpus/$target"
  cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10
done
echo "all fuzz targets ran clean"

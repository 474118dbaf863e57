#!/usr/bin/env bash
# bench/ab.sh - two Tether binaries, interleaved: A, B, A, B, ... through bench/run.sh, then the
# median req/s and CPU per request of each scenario and the B/A ratio. For "does this change
# cost anything?" (a refactor, an engine step): same machine, same run, so drift hits both.
#
#   bench/ab.sh OLD_BINARY NEW_BINARY                  # rr and sticky, layout S, 5 rounds
#   ROUNDS=3 ONLY='rr' LAYOUTS=A bench/ab.sh old new   # any bench/run.sh variable passes through
#
# Build the two binaries first, e.g. `git worktree add /tmp/old REV` and
# `CARGO_TARGET_DIR=target/old cargo build --release -p tether` there.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if ! { [ $# -eq 2 ] && [ -x "$1" ] && [ -x "$2" ]; }; then
  echo "usage: $0 A_BINARY B_BINARY" >&2; exit 2
fi
ROUNDS=${ROUNDS:-5}
OUT=${OUT:-$(mktemp -d /tmp/tether-ab.XXXXXX)}
export BUILD=0 PEERS="" HI_PEERS="" IDLE_PEERS="" PHASES=${PHASES:-load} HICONNS=${HICONNS:-0}
export ONLY=${ONLY:-'rr|sticky'} LAYOUTS=${LAYOUTS:-S} REPS=1 DURATION=${DURATION:-5} WARMUP=${WARMUP:-1}
for round in $(seq 1 "$ROUNDS"); do
  for side in A B; do
    bin=$1; [ "$side" = B ] && bin=$2
    echo "round $round: $side ($bin)" >&2
    TETHER_BIN=$bin WORK="$OUT/$side.$round" bash "$HERE/run.sh" >/dev/null 2>&1 \
      || echo "round $round $side: bench/run.sh failed (see $OUT/$side.$round)" >&2
  done
done
python3 - "$OUT" "$ROUNDS" <<'PY'
import glob, os, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
runs = {}
for side in "AB":
    for raw in glob.glob(os.path.join(out, f"{side}.*", "raw.tsv")):
        for line in open(raw):
            p = line.rstrip("\n").split("\t")
            if len(p) < 5 or p[3] == "FAIL":
                continue
            kv = dict(x.split("=", 1) for x in p[4].split())
            # Keyed by layout too: S and A runs are different populations.
            runs.setdefault((p[0], p[2], side), []).append(kv)
print(f"| layout | scenario | A req/s | B req/s | B/A | A CPU µs/req | B CPU µs/req | B/A | rounds |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for layout, scen in sorted({k[:2] for k in runs}):
    a, b = runs.get((layout, scen, "A"), []), runs.get((layout, scen, "B"), [])
    if not a or not b:
        continue
    med = lambda rs, k: statistics.median(float(r[k]) for r in rs if k in r)
    ra, rb = med(a, "rps"), med(b, "rps")
    ca, cb = med(a, "cpu_us_req"), med(b, "cpu_us_req")
    print(f"| {layout} | {scen} | {ra:.0f} | {rb:.0f} | {rb / ra:.3f} | {ca:.1f} | {cb:.1f} | {cb / ca:.3f} | {min(len(a), len(b))} |")
PY
echo "raw runs: $OUT" >&2

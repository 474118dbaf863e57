#!/usr/bin/env bash
# bench/bigbody.sh - 1 GiB download and upload through Tether, HAProxy and NGINX: RSS growth.
#
# Issue 13's acceptance item: "a 1 GiB upload and download through Tether: RSS growth <= 16 MiB".
# One backend (bench/bigbody_backend.py on 127.0.0.1: GET /big = SIZE bytes with Content-Length,
# POST /upload = read and discard, answer the byte count). For each proxy (one process / one
# worker, as bench/run.sh configures them): start it in front of the backend, one small GET and
# one small POST as warm-up, read its RSS (VmRSS summed over the process tree), then
#   download: curl GET /big -o /dev/null          (status 200, exactly SIZE bytes)
#   upload:   curl -X POST -T sparse-file          (status 200, the backend counted SIZE bytes;
#             -T streams the file with a Content-Length; --data-binary @file would load the whole
#             file into curl's memory and fails with "out of memory" at 1 GiB)
# while sampling the tree's RSS every INTERVAL s; VmHWM is reset (clear_refs) before each transfer
# and read after it, so a peak between two samples is caught too. Peak = max(samples, sum VmHWM).
# Growth = peak - RSS before. PASS when Tether's growth is <= TARGET_MIB in both directions
# (the peers are measured for reference and get the same verdict column).
# Prints a markdown table on stdout (progress on stderr). Exit 0 if every transfer was correct
# and every Tether row passed, 1 otherwise, 2 on a setup error.
#
#   TETHER_BIN=/tmp/bins/new TETHER_BASE_BIN=/tmp/bins/old bench/bigbody.sh
#   SIZE=$((64<<20)) PROXIES=tether bench/bigbody.sh          # smoke test
#
# Everything listens on 127.0.0.1 (backend BASE_PORT+1, proxy BASE_PORT+10). Every process
# started here is stopped by PID on exit; temp files live in a mktemp dir removed on exit
# (KEEP=1 keeps it: configs and logs). The upload file is sparse (no disk used).
# Never builds Tether. Needs curl, python3, haproxy, nginx (apt-get installs the missing ones
# when root and INSTALL=1; a missing peer is skipped with a warning).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

TETHER_BIN=${TETHER_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/tether}
TETHER_BASE_BIN=${TETHER_BASE_BIN:-}  # optional second Tether (e.g. the previous build): own rows
PROXIES=${PROXIES:-"tether haproxy nginx"}
SIZE=${SIZE:-1073741824}              # bytes per transfer (1 GiB)
TARGET_MIB=${TARGET_MIB:-16}          # allowed RSS growth
INTERVAL=${INTERVAL:-0.05}            # RSS sampling period, seconds
CURL_TIMEOUT=${CURL_TIMEOUT:-120}     # per transfer, seconds
BASE_PORT=${BASE_PORT:-18400}         # backend BASE+1, proxy BASE+10
PROXY_CPUS=${PROXY_CPUS-1}            # taskset cpu list of the proxy ("" = no pinning)
LOAD_CPUS=${LOAD_CPUS-0}              # ... of the backend, curl and the sampler
INSTALL=${INSTALL:-1}                 # apt-get install missing haproxy/nginx/curl (root only)
KEEP=${KEEP:-0}                       # 1: keep the work dir

BE=$((BASE_PORT + 1)); PX=$((BASE_PORT + 10))
MIB=1048576

if [ "$(nproc)" -lt 2 ]; then PROXY_CPUS=""; LOAD_CPUS=""; fi
PIN_PX=(); PIN_LD=()  # command prefixes (taskset execs, so $! is the process itself); set_pins
set_pins() {
  PIN_PX=(); PIN_LD=()
  [ -n "$PROXY_CPUS" ] && PIN_PX=(taskset -c "$PROXY_CPUS")
  [ -n "$LOAD_CPUS" ] && PIN_LD=(taskset -c "$LOAD_CPUS")
  return 0
}

WORK=$(mktemp -d /tmp/tether-bigbody.XXXXXX) || exit 2
LOGS=$WORK                            # apt.log goes there

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh" || exit 2              # log, process tracking and cleanup, rss_pids_kb, wait_http...
# the EXIT trap (lib.sh's cleanup) calls this after stopping every process
# shellcheck disable=SC2317  # invoked by the trap
cleanup_extra() { if [ "$KEEP" = 1 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi; }

# ---------------------------------------------------------------- memory
tree_pids() { echo "$1"; descendants "$1"; }

reset_hwm() {        # clear_refs 5: VmHWM := VmRSS (Linux >= 4.0); false if any pid refused
  local p ok=0
  for p in "$@"; do echo 5 2>/dev/null > "/proc/$p/clear_refs" || ok=1; done
  return $ok
}

mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }

# ---------------------------------------------------------------- tools
ensure_tools() {
  local want=() b
  for b in curl:curl python3:python3 taskset:util-linux timeout:coreutils haproxy:haproxy nginx:nginx; do
    case " $PROXIES " in *" ${b%%:*} "*) ;; *) case ${b%%:*} in haproxy|nginx) continue ;; esac ;; esac
    want+=("$b")
  done
  install_tools "${want[@]}"
  for b in curl python3 timeout; do
    command -v "$b" >/dev/null 2>&1 || { log "FATAL: $b missing"; exit 2; }
  done
  if [ -n "$PROXY_CPUS$LOAD_CPUS" ] && ! command -v taskset >/dev/null 2>&1; then
    log "taskset missing: no cpu pinning"; PROXY_CPUS=""; LOAD_CPUS=""
  fi
  set_pins
}

check_tether() {     # $1 binary
  [ -x "$1" ] || { log "FATAL: $1 not found (this script never builds; cargo build --release -p tether)"; exit 2; }
  timeout 10 "$1" --version >/dev/null 2>&1 || { log "FATAL: $1 --version failed"; exit 2; }
}

# ---------------------------------------------------------------- proxy configs
write_tether_conf() { # $1 dir
  cat > "$1/tether.toml" <<EOF
# generated by bench/bigbody.sh $(date -Is)
access_log = false

[[listeners]]
name = "bench"
address = "127.0.0.1:$PX"
default_backend = "app"

[listeners.limits]
max_body_bytes = 0          # unlimited (the default, set explicitly)

[backends.app]
balance = "round_robin"

[[backends.app.servers]]
name = "b1"
address = "127.0.0.1:$BE"
EOF
}

write_haproxy_conf() { # $1 dir (as bench/run.sh: nbthread 1, no log)
  cat > "$1/haproxy.cfg" <<EOF
$(haproxy_http_head 1 1000)
frontend fe
  bind 127.0.0.1:$PX
  default_backend be
backend be
  server s1 127.0.0.1:$BE
EOF
}

write_nginx_conf() { # $1 dir (as bench/run.sh: 1 worker, no access log; streaming both ways)
  local d=$1
  cat > "$d/nginx.conf" <<EOF
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_processes 1;
events { worker_connections 1024; }
http {
  access_log off;
  default_type text/plain;
  keepalive_timeout 300s;
  client_body_temp_path $d/t_body; proxy_temp_path $d/t_proxy;
  fastcgi_temp_path $d/t_fcgi; uwsgi_temp_path $d/t_uwsgi; scgi_temp_path $d/t_scgi;
  upstream up {
    server 127.0.0.1:$BE;
    keepalive 32;
  }
  server {
    listen 127.0.0.1:$PX;
    client_max_body_size 0;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;
      proxy_buffering off;
    }
  }
}
EOF
}

# start_proxy KIND DIR [BIN] -> PROXY_PID
start_proxy() {
  local kind=$1 d=$2 bin=${3:-}
  mkdir -p "$d"
  PROXY_PID=""
  port_free "$PX" || { log "port $PX busy"; return 1; }
  case $kind in
    tether)
      write_tether_conf "$d"
      timeout 10 "$bin" check -c "$d/tether.toml" >"$d/check.log" 2>&1 \
        || { log "tether check failed:"; sed 's/^/    /' "$d/check.log" >&2; return 1; }
      env -u RUST_LOG TETHER_WORKER_THREADS=1 TOKIO_WORKER_THREADS=1 \
        "${PIN_PX[@]}" "$bin" --log-format json --log-level warn run -c "$d/tether.toml" </dev/null >"$d/out.log" 2>&1 &
      ;;
    haproxy)
      write_haproxy_conf "$d"
      "${PIN_PX[@]}" haproxy -db -f "$d/haproxy.cfg" </dev/null >"$d/out.log" 2>&1 &
      ;;
    nginx)
      write_nginx_conf "$d"
      "${PIN_PX[@]}" nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf" </dev/null >"$d/out.log" 2>&1 &
      ;;
  esac
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  wait_http "$PX" 10 "$PROXY_PID" && return 0
  log "$kind did not become ready; last lines of $d/out.log $d/error.log:"
  tail -n 5 "$d/out.log" "$d/error.log" 2>/dev/null | sed 's/^/    /' >&2
  return 1
}

# transfer DIR NAME PIDS... -> TX_OK TX_PEAK_KB TX_TIME TX_NOTE (curl command in CURL_ARGS)
transfer() {
  local d=$1 name=$2; shift 2
  local pids=("$@") w wp hwm_ok=1 out code bytes t hwm samples peak body
  reset_hwm "${pids[@]}" || hwm_ok=0
  "${PIN_LD[@]}" python3 "$HERE/bigbody_backend.py" watch "$INTERVAL" "${pids[@]}" >"$d/$name.watch" 2>&1 &
  w=$!; PIDS+=("$w")
  for _ in $(seq 1 250); do   # until the sampler has taken its first sample (max 5 s)
    [ -s "$d/$name.watch" ] && break; sleep 0.02
  done
  out=$("${PIN_LD[@]}" curl -sS -m "$CURL_TIMEOUT" "${CURL_ARGS[@]}" 2>"$d/$name.curlerr")
  read -r _ hwm < <(rss_pids_kb "${pids[@]}")
  kill -TERM "$w" 2>/dev/null; wait "$w" 2>/dev/null; forget_pid "$w"
  read -r wp samples < <(tail -n 1 "$d/$name.watch")
  [[ ${wp:-x} =~ ^[0-9]+$ ]] || { wp=0; samples=0; }
  read -r code bytes t <<<"$out"
  peak=${wp:-0}
  [ "$hwm_ok" = 1 ] && [ "${hwm:-0}" -gt "$peak" ] && peak=$hwm
  TX_PEAK_KB=$peak; TX_TIME=${t:-?}; TX_OK=1; TX_NOTE=""
  [ "$hwm_ok" = 1 ] || TX_NOTE="no VmHWM reset (samples only)"
  if [ "${code:-000}" != 200 ] || [ "${bytes:-0}" != "$SIZE" ]; then
    TX_OK=0; TX_NOTE="status ${code:-none}, ${bytes:-0} of $SIZE bytes; $(head -c 200 "$d/$name.curlerr" | tr '\n|' '  ')"
  fi
  if [ "$name" = upload ] && [ "$TX_OK" = 1 ]; then
    body=$(tr -d '\r\n' < "$d/upload.body" 2>/dev/null)
    [ "$body" = "$SIZE" ] || { TX_OK=0; TX_NOTE="backend counted '${body}' bytes, not $SIZE"; }
  fi
  log "  $name: status ${code:-none}, ${bytes:-0} B in ${t:-?} s; peak RSS $(mib "$peak") MiB (sampled $(mib "${wp:-0}") in ${samples:-0} samples, VmHWM $(mib "${hwm:-0}"))${TX_NOTE:+; $TX_NOTE}"
}

declare -a ROWS=()
FAILED=0

measure() {          # measure LABEL KIND [BIN]
  local label=$1 kind=$2 bin=${3:-} d before after pids dl_peak ul_peak dl_t ul_t dl_ok ul_ok
  local g_dl g_ul verdict notes=""
  d=$(mktemp -d "$WORK/$kind.XXXXXX")
  log "$label: starting"
  if ! start_proxy "$kind" "$d" "$bin"; then
    ROWS+=("| $label | - | - | - | - | - | - | - | - | NOT RUN (did not start) |")
    [ "$kind" = tether ] && FAILED=1
    stop_pid "$PROXY_PID"; return
  fi
  curl -s -o /dev/null -m 10 "http://127.0.0.1:$PX/" || true
  curl -s -o /dev/null -m 10 -H 'Expect:' --data-binary "@$WORK/small" "http://127.0.0.1:$PX/upload" || true
  sleep 0.5
  mapfile -t pids < <(tree_pids "$PROXY_PID")
  read -r before _ < <(rss_pids_kb "${pids[@]}")
  log "  RSS before: $(mib "$before") MiB (pids ${pids[*]})"

  CURL_ARGS=(-o /dev/null -w '%{http_code} %{size_download} %{time_total}' "http://127.0.0.1:$PX/big")
  transfer "$d" download "${pids[@]}"
  dl_peak=$TX_PEAK_KB; dl_t=$TX_TIME; dl_ok=$TX_OK; [ -n "$TX_NOTE" ] && notes="download: $TX_NOTE"

  CURL_ARGS=(-o "$d/upload.body" -H 'Expect:' -H 'Content-Type: application/octet-stream'
             -X POST -T "$WORK/big" -w '%{http_code} %{size_upload} %{time_total}' "http://127.0.0.1:$PX/upload")
  transfer "$d" upload "${pids[@]}"
  ul_peak=$TX_PEAK_KB; ul_t=$TX_TIME; ul_ok=$TX_OK; [ -n "$TX_NOTE" ] && notes="${notes:+$notes; }upload: $TX_NOTE"

  read -r after _ < <(rss_pids_kb "${pids[@]}")
  stop_pid "$PROXY_PID"

  g_dl=$((dl_peak - before)); g_ul=$((ul_peak - before))
  if [ "$dl_ok" = 1 ] && [ "$ul_ok" = 1 ]; then
    if [ "$g_dl" -le $((TARGET_MIB * 1024)) ] && [ "$g_ul" -le $((TARGET_MIB * 1024)) ]; then
      verdict=PASS
    else
      verdict=FAIL; [ "$kind" = tether ] && FAILED=1
    fi
  else
    verdict="FAIL (transfer)"; FAILED=1
  fi
  [ "$kind" = tether ] || verdict="$verdict (ref)"
  ROWS+=("| $label | $(mib "$before") | $(mib "$dl_peak") | $(mib "$ul_peak") | $(mib "$g_dl") | $(mib "$g_ul") | $(fmt_t "$dl_t") | $(fmt_t "$ul_t") | $(mib "$after") | $verdict${notes:+ — $notes} |")
  log "$label: growth download $(mib "$g_dl") MiB, upload $(mib "$g_ul") MiB: $verdict"
}

fmt_t() {            # "T s (R MiB/s)"
  awk -v t="$1" -v s="$SIZE" -v m="$MIB" 'BEGIN{ if (t+0 > 0) printf "%.2f s (%.0f MiB/s)", t, s/m/t; else printf "%s", t }'
}

# ---------------------------------------------------------------- main
ensure_tools
want_tether=0
case " $PROXIES " in *" tether "*) want_tether=1 ;; esac
[ "$want_tether" = 1 ] && check_tether "$TETHER_BIN"
[ "$want_tether" = 1 ] && [ -n "$TETHER_BASE_BIN" ] && check_tether "$TETHER_BASE_BIN"
for p in $BE $PX; do port_free "$p" || { log "FATAL: port $p busy (BASE_PORT=...)"; exit 2; }; done

truncate -s "$SIZE" "$WORK/big" || exit 2
head -c 4096 /dev/zero > "$WORK/small"

"${PIN_LD[@]}" python3 "$HERE/bigbody_backend.py" serve "$BE" "$SIZE" </dev/null >"$WORK/backend.log" 2>&1 &
BE_PID=$!; PIDS+=("$BE_PID")
wait_http "$BE" 10 "$BE_PID" || { log "FATAL: backend did not start:"; cat "$WORK/backend.log" >&2; exit 2; }
log "backend on 127.0.0.1:$BE (pid $BE_PID); size $SIZE B; proxy cpus '${PROXY_CPUS}', load cpus '${LOAD_CPUS}'"

# the backend alone (no proxy) as a speed reference
t0=$(curl -sS -m "$CURL_TIMEOUT" -o /dev/null -w '%{http_code} %{size_download} %{time_total}' "http://127.0.0.1:$BE/big")
t1=$(curl -sS -m "$CURL_TIMEOUT" -o /dev/null -H 'Expect:' -X POST -T "$WORK/big" -w '%{http_code} %{size_upload} %{time_total}' "http://127.0.0.1:$BE/upload")
log "direct (no proxy): download $t0; upload $t1"
DIRECT="direct (no proxy): download $(fmt_t "${t0##* }"), upload $(fmt_t "${t1##* }")"

for kind in $PROXIES; do
  case $kind in
    tether)
      if [ -n "$TETHER_BASE_BIN" ]; then measure "tether ($(basename "$TETHER_BASE_BIN"))" tether "$TETHER_BASE_BIN"; fi
      measure "tether ($(basename "$TETHER_BIN"))" tether "$TETHER_BIN" ;;
    haproxy|nginx)
      if command -v "$kind" >/dev/null 2>&1; then measure "$kind" "$kind"
      else log "WARNING: $kind missing: no $kind row"; fi ;;
    *) log "unknown proxy '$kind' (tether, haproxy, nginx)" ;;
  esac
done

echo
echo "### ${SIZE}-byte download and upload through each proxy: RSS (MiB)"
echo
echo "Target (issue 13): growth <= $TARGET_MIB MiB. RSS = VmRSS summed over the proxy's processes;"
echo "peak = max of ${INTERVAL}s samples and VmHWM (reset before each transfer). $DIRECT."
echo "$(date -Is), $(nproc) cpus, proxy cpus '${PROXY_CPUS}', load cpus '${LOAD_CPUS}'; haproxy $(haproxy -v 2>/dev/null | awk 'NR==1{print $3}'), $(nginx -v 2>&1 | sed 's/.*: //'); NGINX: proxy_request_buffering off, proxy_buffering off."
echo
echo "| proxy | RSS before | peak download | peak upload | growth download | growth upload | download | upload | RSS after | <= $TARGET_MIB MiB |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
printf '%s\n' "${ROWS[@]}"
exit $FAILED

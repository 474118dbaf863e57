#!/usr/bin/env bash
# bench/tcp.sh - layer 4: Tether `mode = "tcp"` beside HAProxy `mode tcp` and NGINX `stream`,
# on loopback, one run.
#
# One backend: a 1-worker nginx on 127.0.0.1 answering `GET /` with a 6-byte body and serving
# `GET /big` from a SIZE-byte file in the run's temp dir (sendfile). Three L4 relays in front of
# it, each one worker/thread (HAProxy nbthread 1, NGINX worker_processes 1, Tether
# TETHER_WORKER_THREADS=1), default buffers, no access log, each started fresh on 127.0.0.1 for
# every run. Three workloads, per CPU layout and repetition (interleaved, order rotated per rep):
#   conn  many short connections: wrk -H "Connection: close" (CONNS concurrent), so every
#         request is a fresh TCP connection through the relay and a fresh one to the backend;
#         reported as connections/s (= wrk req/s), plus the relay's CPU per connection.
#   xfer  one long transfer: curl GET /big (SIZE bytes, default 2 GiB) through the relay to
#         /dev/null, XFERS transfers per relay start; MB/s = curl's speed_download / 1e6, plus
#         the relay's CPU seconds per GB. Status 200 and exactly SIZE bytes or the run FAILs.
#   idle  memory per idle relayed connection: on a relay started fresh for it (its own start,
#         after conn/xfer's), bench/idle_conns.py opens IDLE_N keep-alive connections through
#         it, one GET each, then leaves them idle; reported as the relay's RSS growth per
#         connection opened (bytes, VmRSS over the process tree: nginx master + worker; lower
#         is better). 50 sampled connections must still answer a second GET afterwards or the
#         run FAILs. No direct row (no relay).
#         IDLE_N is capped by the fd limit (ulimit -n, raised to the hard limit): 2 fds per
#         relayed connection, HAProxy maxconn, NGINX worker_connections.
# A `direct` row (client -> backend, no relay) is conn's and xfer's ceiling. Prints a markdown table with
# medians, spread, x direct and the Tether/HAProxy and Tether/NGINX ratios (bench/tcp_summarize.py).
# Everything listens on 127.0.0.1; every process started here is stopped by PID on exit.
#
#   bench/tcp.sh                  # full: 3 reps x layouts S,A, 2 GiB x 2 per start, 5000 idle, ~13 min
#   QUICK=1 bench/tcp.sh          # smoke: 1 rep, layout A, 3 s wrk, 512 MiB x 3, 2000 idle, ~1-2 min
#   ONLY='tether|haproxy' LAYOUTS=A WORKLOADS=conn bench/tcp.sh    # subset
#   PROFILE='tether|haproxy' WORKLOADS=conn LAYOUTS=A REPS=1 bench/tcp.sh   # + perf of each relay
#       during its measured conn run: $WORK/perf.<layout>.conn.<relay>.<rep>.data
#
# NGINX's stream module: when `nginx -V` shows --with-stream=dynamic, the script looks for
# ngx_stream_module.so (nginx's --modules-path, /usr/lib/nginx/modules; NGINX_STREAM_MODULE=path
# to give one), installs libnginx-mod-stream with apt-get when root and INSTALL=1, and
# `load_module`s it; if it is still missing the nginx column is dropped with a message saying so.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then         # smoke test: numbers are not for publication
  REPS=${REPS:-1}; DURATION=${DURATION:-3}; WARMUP=${WARMUP:-1}; LAYOUTS=${LAYOUTS:-A}
  SIZE=${SIZE:-$((512 << 20))}; XFERS=${XFERS:-3}; QUIET_GATE=${QUIET_GATE:-0}; IDLE_N=${IDLE_N:-2000}
fi
REPS=${REPS:-3}                   # repetitions (outer loop; every relay restarted for each)
DURATION=${DURATION:-10}          # seconds per measured wrk run
WARMUP=${WARMUP:-2}               # seconds of unmeasured wrk before it (0 = none)
CONNS=${CONNS:-50}                # wrk -c (concurrent connections, each closed after 1 request)
THREADS=${THREADS:-1}             # wrk -t
SIZE=${SIZE:-$((2 << 30))}        # bytes of the long transfer (2 GiB)
XFERS=${XFERS:-2}                 # measured transfers per relay start (median over REPS*XFERS)
XFER_TIMEOUT=${XFER_TIMEOUT:-300} # seconds per transfer (a stalled relay FAILs, not hangs)
IDLE_N=${IDLE_N:-5000}            # idle: connections held open through the relay
IDLE_TIMEOUT=${IDLE_TIMEOUT:-300} # idle: seconds for idle_conns.py (open, hold, sample, close)
LAYOUTS=${LAYOUTS:-"S A"}         # S, A, B, U or LG:BE:PX cpu lists (as bench/run.sh)
WORKLOADS=${WORKLOADS:-"conn xfer idle"}
PEERS=${PEERS:-"haproxy nginx"}   # reference relays
TETHER=${TETHER:-1}               # 0: no Tether column (no build)
BUILD=${BUILD:-1}                 # 0: never run cargo; use the binary as it is
ONLY=${ONLY:-}                    # regex on relay names (direct tether haproxy nginx)
PROFILE=${PROFILE:-}              # regex of relay names to profile during conn (perf, as run.sh's PROFILE)
BASE_PORT=${BASE_PORT:-18500}     # backend BASE+1, relay BASE+10
QUIET_GATE=${QUIET_GATE:-1}       # before each run wait until all cpus are mostly idle
QUIET_BUSY=${QUIET_BUSY:-10}      # ... i.e. busy <= this %
QUIET_WAIT=${QUIET_WAIT:-600}     # ... but at most this many seconds (30 s after a first timeout)
INSTALL=${INSTALL:-1}             # apt-get install missing tools / nginx stream module (root only)
NGINX_STREAM_MODULE=${NGINX_STREAM_MODULE:-}  # path of ngx_stream_module.so (default: searched)
TETHER_BIN_GIVEN=${TETHER_BIN:+1}
TETHER_BIN=${TETHER_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/tether}
WORK=${WORK:-$(mktemp -d /tmp/tetherbench-tcp.XXXXXX)}
KEEP_BIG=${KEEP_BIG:-0}           # 1: leave the SIZE-byte file in $WORK (it is sparse anyway)

mkdir -p "$WORK"
RAW="$WORK/raw.tsv"; : > "$RAW"
LOGS="$WORK/logs"; mkdir -p "$LOGS"
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
BE=$((BASE_PORT + 1)); PX=$((BASE_PORT + 10))
# idle holds IDLE_N connections: the client 1 fd each, the relay 2, the backend 1. Every process
# here inherits this shell's soft limit: raise it to the hard one (Tether has no fd setting).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
_hm=$(( $(ulimit -n) / 2 - 100 )); [ $_hm -gt 20100 ] && _hm=20100
HAPROXY_MAXCONN=${HAPROXY_MAXCONN:-$_hm}  # haproxy reserves 2 fds per conn; capped by ulimit -n
NGINX_WORKER_CONNS=18000          # relay and backend nginx: worker_connections (2 per relayed conn)

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh" || exit 1          # log, process tracking and cleanup, accounting, quiet_gate...
# the EXIT trap (lib.sh's cleanup) calls this after stopping every process
# shellcheck disable=SC2317  # invoked by the trap
cleanup_extra() { [ "$KEEP_BIG" = 1 ] || rm -f "$WORK/be/www/big"; }

# ---------------------------------------------------------------- install
ensure_tools() {
  local want b p keep=()
  want=(wrk:wrk nginx:nginx curl:curl taskset:util-linux python3:python3 ss:iproute2 timeout:coreutils)
  [[ " $PEERS " == *" haproxy "* ]] && want+=(haproxy:haproxy)
  install_tools "${want[@]}"
  for b in wrk curl taskset python3 nginx timeout ss; do   # nginx: the backend
    command -v "$b" >/dev/null 2>&1 || { log "FATAL: $b missing"; exit 1; }
  done
  for p in $PEERS; do
    case $p in
      haproxy) command -v haproxy >/dev/null 2>&1 || { log "WARNING: haproxy missing: no haproxy column"; continue; } ;;
      nginx) nginx_stream || continue ;;
      *) log "WARNING: unknown peer $p (haproxy, nginx)"; continue ;;
    esac
    keep+=("$p")
  done
  PEERS="${keep[*]}"
}

# NGINX_LOAD: the load_module line for the stream module ("" when it is built in).
NGINX_LOAD=""
find_stream_module() {
  local mp c
  mp=$(nginx -V 2>&1 | tr ' ' '\n' | sed -n 's/^--modules-path=//p')
  for c in "$NGINX_STREAM_MODULE" "${mp:+$mp/ngx_stream_module.so}" /usr/lib/nginx/modules/ngx_stream_module.so \
           /usr/lib64/nginx/modules/ngx_stream_module.so /usr/share/nginx/modules/ngx_stream_module.so \
           /etc/nginx/modules/ngx_stream_module.so; do
    [ -n "$c" ] && [ -f "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}
nginx_stream() {     # true if nginx can run a stream {} block; sets NGINX_LOAD
  local v mod d
  v=$(nginx -V 2>&1)
  if [[ $v != *--with-stream* ]]; then
    log "WARNING: this nginx has no stream module at all (nginx -V shows no --with-stream): no nginx column"
    return 1
  fi
  if [[ $v == *--with-stream=dynamic* ]]; then
    if ! mod=$(find_stream_module) && can_install; then
      log "nginx's stream module is dynamic and not installed: apt-get install libnginx-mod-stream (log: $LOGS/apt.log)"
      apt_install libnginx-mod-stream || log "apt-get install libnginx-mod-stream failed (see $LOGS/apt.log)"
      mod=$(find_stream_module)
    fi
    if [ -z "${mod:-}" ]; then
      log "WARNING: NGINX column skipped: nginx has --with-stream=dynamic but ngx_stream_module.so was not found"
      log "         (looked in nginx's --modules-path and /usr/lib/nginx/modules). Install it with"
      log "         'apt-get install libnginx-mod-stream' (Debian/Ubuntu, as root) or set NGINX_STREAM_MODULE=/path/ngx_stream_module.so"
      return 1
    fi
    NGINX_LOAD="load_module $mod;"
  fi
  d="$WORK/nginx-t"; mkdir -p "$d"        # does it really load? (version mismatch...)
  write_nginx_conf "$d"
  if ! nginx -t -e "$d/error.log" -p "$d" -c "$d/nginx.conf" >"$d/t.log" 2>&1; then
    log "WARNING: NGINX column skipped: nginx -t fails with the stream config ($NGINX_LOAD):"
    sed 's/^/    /' "$d/t.log" >&2
    return 1
  fi
  log "nginx stream module: ${NGINX_LOAD:-built in}"
}

# ---------------------------------------------------------------- configs
write_backend_conf() { # $1 dir
  mkdir -p "$1/www"
  cat > "$1/nginx.conf" <<EOF
$(nginx_common "$1")
http {
  access_log off;
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 300s;
  keepalive_requests 100000000;
  client_body_temp_path $1/t_body; proxy_temp_path $1/t_proxy;
  fastcgi_temp_path $1/t_fcgi; uwsgi_temp_path $1/t_uwsgi; scgi_temp_path $1/t_scgi;
  server {
    listen 127.0.0.1:$BE backlog=4096;
    root $1/www;
    location = / { default_type text/plain; return 200 "hello\n"; }
    location = /big { }
  }
}
EOF
}

write_nginx_conf() { # $1 dir: NGINX stream relay, 1 worker, default proxy_buffer_size (16k)
  mkdir -p "$1"
  cat > "$1/nginx.conf" <<EOF
$NGINX_LOAD
$(nginx_common "$1")
stream {
  upstream up { server 127.0.0.1:$BE; }
  server {
    listen 127.0.0.1:$PX backlog=4096;
    proxy_pass up;
    proxy_connect_timeout 5s;
    proxy_timeout 300s;
  }
}
EOF
}

write_haproxy_conf() { # $1 dir: HAProxy mode tcp, 1 thread, default bufsize (16k), no log
  mkdir -p "$1"
  cat > "$1/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn $HAPROXY_MAXCONN
defaults
  mode tcp
  timeout connect 5s
  timeout client 300s
  timeout server 300s
frontend fe
  bind 127.0.0.1:$PX
  maxconn $HAPROXY_MAXCONN
  default_backend be
backend be
  balance roundrobin
  server s1 127.0.0.1:$BE
EOF
}

write_tether_conf() { # $1 dir: mode = "tcp" listener (docs/tcp.md), no access log
  mkdir -p "$1"
  cat > "$1/tether.toml" <<EOF
# generated by bench/tcp.sh $(date -Is)
access_log = false

[[listeners]]
name = "l4"
address = "127.0.0.1:$PX"
mode = "tcp"
default_backend = "app"
timeouts.idle = "300s"            # as HAProxy's timeout client/server and NGINX's proxy_timeout

[backends.app]
balance = "round_robin"

[[backends.app.servers]]
name = "s1"
address = "127.0.0.1:$BE"
EOF
}

# start_relay NAME CPUS -> sets RELAY_PID and RELAY_DIR, returns non-zero if not ready
start_relay() {
  local name=$1 cpus=$2 d
  d=$(mktemp -d "$WORK/run.XXXXXX"); RELAY_DIR=$d
  RELAY_PID=""
  port_free "$PX" || { log "port $PX busy"; return 1; }
  case $name in
    haproxy)
      write_haproxy_conf "$d"
      taskset -c "$cpus" haproxy -db -f "$d/haproxy.cfg" >"$d/out.log" 2>&1 & ;;
    nginx)
      write_nginx_conf "$d"
      taskset -c "$cpus" nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf" >"$d/out.log" 2>&1 & ;;
    tether)
      write_tether_conf "$d"
      # one worker thread like nbthread 1 / worker_processes 1 (docs/configuration.md)
      env -u RUST_LOG TETHER_WORKER_THREADS=1 taskset -c "$cpus" "$TETHER_BIN" --log-format json \
        --log-level "${TETHER_LOG_LEVEL:-warn}" run -c "$d/tether.toml" >"$d/out.log" 2>&1 & ;;
    *) log "unknown relay $name"; return 1 ;;
  esac
  RELAY_PID=$!
  PIDS+=("$RELAY_PID")
  wait_http "$PX" 20 "$RELAY_PID" && return 0
  log "$name did not become ready on 127.0.0.1:$PX (see $d/out.log $d/error.log); last lines:"
  tail -n 5 "$d/out.log" "$d/error.log" 2>/dev/null | sed 's/^/    /' >&2
  return 1
}

# ---------------------------------------------------------------- measurements
sanity() {           # $1 port: 30 fresh connections answer "hello", and /big's length is right
  local _ ok=0 len
  for _ in $(seq 1 30); do
    [ "$(curl -s -m 2 -H 'Connection: close' "http://127.0.0.1:$1/")" = hello ] && ok=$((ok + 1))
  done
  len=$(curl -s -m 5 -I "http://127.0.0.1:$1/big" | tr -d '\r' | awk 'tolower($1)=="content-length:"{print $2}')
  [ "$ok" = 30 ] && [ "$len" = "$SIZE" ] && { echo "OK (30/30 fresh connections, /big $len bytes)"; return 0; }
  echo "FAIL ($ok/30 fresh connections answered, /big content-length '${len}')"; return 1
}

# record LAYOUT REP WORKLOAD NAME VALUE CPU_PER_UNIT ERRORS FOREIGN RSS NOTE
record() { local IFS=$'\t'; echo "$*" >> "$RAW"; }

measure_conn() {     # $1 layout $2 rep $3 name $4 pid(s) to account
  local layout=$1 rep=$2 name=$3 pid=$4 lf="$LOGS/$1.conn.$3.$2.txt"
  local args=(-t "$THREADS" -c "$CONNS" --timeout 5s -H "Connection: close")
  local port=$PX; [ "$name" = direct ] && port=$BE
  [ "$WARMUP" != 0 ] && run_wait timeout -k 5 $((WARMUP + 30)) taskset -c "$LG" wrk "${args[@]}" -d "${WARMUP}s" \
    "http://127.0.0.1:$port/" >/dev/null 2>&1
  local c0 c1 o0 o1 s0 s1 p0 p1 w0 w1
  c0=$(cpu_snap); o0=$(ticks_tree "${BE_PID}" ${RELAY_PID:+"$RELAY_PID"}); s0=$(shell_cticks); p0=$(ticks_tree "$pid")
  w0=$(csw_tree "$pid")
  [ "$name" = direct ] || profile_start "$name" "$WORK/perf.$layout.conn.$name.$rep.data" "$pid"
  run_wait timeout -k 5 $((DURATION + 30)) taskset -c "$LG" wrk "${args[@]}" -d "${DURATION}s" --latency \
    -s "$HERE/wrk_report.lua" "http://127.0.0.1:$port/" > "$lf" 2>&1
  c1=$(cpu_snap); o1=$(ticks_tree "${BE_PID}" ${RELAY_PID:+"$RELAY_PID"}); s1=$(shell_cticks); p1=$(ticks_tree "$pid")
  w1=$(csw_tree "$pid")
  profile_stop
  local res rps reqs errs cpu fg
  res=$(grep '^RESULT' "$lf")
  if [ -z "$res" ]; then
    record "$layout" "$rep" conn "$name" FAIL 0 0 0 0 "wrk gave no result"; log "$layout rep$rep conn $name: FAIL (see $lf)"; return
  fi
  rps=$(grep -o ' rps=[0-9.]*' <<<"$res" | cut -d= -f2)
  reqs=$(grep -o 'requests=[0-9]*' <<<"$res" | cut -d= -f2)
  errs=$(grep -o 'err_[a-z]*=[0-9]*' <<<"$res" | awk -F= '{s+=$2} END{print s+0}')
  # non-2xx responses count as errors too (wrk's "Non-2xx or 3xx responses")
  cpu=$(awk -v t=$((p1 - p0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN{printf "%.2f", (n > 0 ? t * 1e6 / hz / n : 0)}')
  fg=$(foreign_pct "$c0" "$c1" "$o0" "$o1" "$s0" "$s1")
  # context switches of the relay per 1000 connections: voluntary (it waited for events) and
  # involuntary (preempted), as run.sh's csw_vol_k / csw_inv_k
  local csw
  csw=$(awk -v a="$w0" -v b="$w1" -v n="$reqs" 'BEGIN{split(a, x, " "); split(b, y, " ");
    k = (n > 0 ? 1000 / n : 0); printf "csw_vol_k=%.1f csw_inv_k=%.1f", (y[1] - x[1]) * k, (y[2] - x[2]) * k}')
  local rss; read -r rss _ < <(rss_kb "$pid")   # VmRSS (kB)
  local st; st=$(steal_pct "$c0" "$c1")
  record "$layout" "$rep" conn "$name" "$rps" "$cpu" "$errs" "$fg" "$rss" \
    "$(grep -o 'p50_us=[0-9]* p90_us=[0-9]* p99_us=[0-9]*' <<<"$res") $csw steal=$st"
  log "$layout rep$rep conn $name: ${rps} conn/s, cpu ${cpu} us/conn, errors $errs, foreign ${fg}%, steal ${st}%, $csw"
}

measure_xfer() {     # $1 layout $2 rep $3 name $4 pid(s) to account
  local layout=$1 rep=$2 name=$3 pid=$4 i
  local port=$PX; [ "$name" = direct ] && port=$BE
  # unmeasured warm-up: the first 64 MiB (a Range request), like wrk's warm-up run
  [ "$WARMUP" != 0 ] && run_wait timeout -k 5 60 taskset -c "$LG" curl -s -o /dev/null -m 60 \
    -r "0-$(( (SIZE < (64 << 20) ? SIZE : (64 << 20)) - 1 ))" "http://127.0.0.1:$port/big"
  for i in $(seq 1 "$XFERS"); do
    local lf="$LOGS/$layout.xfer.$name.$rep.$i.txt" c0 c1 o0 o1 s0 s1 p0 p1 out code got speed mbs cpu fg rss
    c0=$(cpu_snap); o0=$(ticks_tree "${BE_PID}" ${RELAY_PID:+"$RELAY_PID"}); s0=$(shell_cticks); p0=$(ticks_tree "$pid")
    run_wait timeout -k 5 "$XFER_TIMEOUT" taskset -c "$LG" curl -s -S -o /dev/null -m "$XFER_TIMEOUT" \
      -w '%{http_code} %{size_download} %{speed_download}\n' "http://127.0.0.1:$port/big" > "$lf" 2>&1
    c1=$(cpu_snap); o1=$(ticks_tree "${BE_PID}" ${RELAY_PID:+"$RELAY_PID"}); s1=$(shell_cticks); p1=$(ticks_tree "$pid")
    read -r rss _ < <(rss_kb "$pid")   # VmRSS (kB)
    out=$(tail -n 1 "$lf"); read -r code got speed <<<"$out"
    if [ "${code:-}" != 200 ] || [ "${got:-}" != "$SIZE" ]; then
      record "$layout" "$rep" xfer "$name" FAIL 0 1 0 "$rss" "status ${code:-none}, ${got:-0} of $SIZE bytes"
      log "$layout rep$rep xfer $name #$i: FAIL: status ${code:-none}, ${got:-0} of $SIZE bytes ($(head -c 300 "$lf" | tr '\n' ' '))"
      continue
    fi
    mbs=$(awk -v s="$speed" 'BEGIN{printf "%.1f", s / 1e6}')
    # relay cpu seconds per GB moved (1e9 bytes)
    cpu=$(awk -v t=$((p1 - p0)) -v hz="$CLK_TCK" -v n="$SIZE" 'BEGIN{printf "%.3f", t / hz / (n / 1e9)}')
    fg=$(foreign_pct "$c0" "$c1" "$o0" "$o1" "$s0" "$s1")
    local st; st=$(steal_pct "$c0" "$c1")
    record "$layout" "$rep" xfer "$name" "$mbs" "$cpu" 0 "$fg" "$rss" "steal=$st"
    log "$layout rep$rep xfer $name #$i: ${mbs} MB/s, cpu ${cpu} s/GB, rss ${rss} kB, foreign ${fg}%, steal ${st}%"
  done
}

idle_cap() {         # $1 relay name: how many idle connections it can hold here (fd limits)
  local n=$IDLE_N lim why=""
  lim=$(( $(ulimit -n) / 2 - 150 ))                 # the relay's own fds: 2 per connection
  [ "$n" -gt "$lim" ] && { n=$lim; why="ulimit -n $(ulimit -n)"; }
  case $1 in
    haproxy) lim=$((HAPROXY_MAXCONN - 50)); [ "$n" -gt "$lim" ] && { n=$lim; why="maxconn $HAPROXY_MAXCONN"; } ;;
    nginx) lim=$((NGINX_WORKER_CONNS / 2 - 100)); [ "$n" -gt "$lim" ] && { n=$lim; why="worker_connections $NGINX_WORKER_CONNS"; } ;;
  esac
  [ -n "$why" ] && log "$1: idle N capped to $n ($why)"
  echo "$n"
}

measure_idle() {     # $1 layout $2 rep $3 name $4 pid (relay started fresh for this)
  local layout=$1 rep=$2 name=$3 pid=$4 lf="$LOGS/$1.idle.$3.$2.txt" n line per alive sample opened errs be after
  n=$(idle_cap "$name")
  run_wait timeout -k 5 "$IDLE_TIMEOUT" taskset -c "$LG" python3 "$HERE/idle_conns.py" --port "$PX" --pid "$pid" \
    -n "$n" --mode request --name "$name" --backend-ports "$BE" > "$lf" 2>&1
  line=$(grep "^$name: mode=" "$lf" | tail -n 1)
  per=$(grep -o ' per_conn=-\?[0-9]*B' <<<"$line" | tr -dc '0-9-')
  read -r alive sample < <(grep -o 'sample_still_alive=[0-9]*/[0-9]*' <<<"$line" | cut -d= -f2 | tr / ' ')
  opened=$(grep -o ' opened=[0-9]*' <<<"$line" | cut -d= -f2)
  errs=$(grep -o ' errors=[0-9]*' <<<"$line" | cut -d= -f2)
  be=$(grep -o 'backend_conns_established=-\?[0-9]*' <<<"$line" | cut -d= -f2)
  after=$(grep -o 'rss_after=[0-9.]*' <<<"$line" | awk -F= '{printf "%d", $2 * 1024}')
  if [ -z "$per" ] || [ -z "${sample:-}" ] || [ "${opened:-0}" = 0 ]; then
    record "$layout" "$rep" idle "$name" FAIL 0 1 0 0 "idle_conns.py gave no result"
    log "$layout rep$rep idle $name: FAIL: no result ($(tail -n 3 "$lf" | tr '\n' ' '))"; return
  fi
  # errors: sampled connections that no longer answered + connections that could not be opened
  record "$layout" "$rep" idle "$name" "$per" 0 $(( sample - alive + ${errs:-0} )) 0 "$after" \
    "alive=$alive/$sample opened=$opened/$n open_errors=$errs backend_conns=$be"
  if [ "$alive" != "$sample" ] || [ "${errs:-0}" != 0 ]; then
    log "$layout rep$rep idle $name: FAIL: ${alive}/${sample} sampled connections alive, $errs open errors (see $lf)"
  else
    log "$layout rep$rep idle $name: ${per} B/conn over $opened idle connections, ${alive}/${sample} alive, backend conns $be"
  fi
}

# ---------------------------------------------------------------- main
ensure_tools
ensure_tether
NAMES=(direct)
[ "$TETHER" = 1 ] && NAMES+=(tether)
for p in $PEERS; do NAMES+=("$p"); done
if [ -n "$ONLY" ]; then
  keep=(); for n in "${NAMES[@]}"; do [[ $n =~ $ONLY ]] && keep+=("$n"); done; NAMES=("${keep[@]}")
fi
{
  echo "date: $(date -Is)"; echo "host: $(uname -r), $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  echo "wrk: $(wrk --version 2>&1 | head -1)"; echo "curl: $(curl --version | head -1)"
  echo "haproxy: $(haproxy -v 2>/dev/null | head -1)"; echo "nginx: $(nginx -v 2>&1) ${NGINX_LOAD}"
  if [ "$TETHER" = 1 ]; then
    echo "tether: $("$TETHER_BIN" --version 2>/dev/null | head -1) ($TETHER_BIN)"
    echo "git: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$REPO" status --porcelain 2>/dev/null | grep -q . && echo ' (dirty)')"
  fi
  echo "relays: ${NAMES[*]}"
  echo "settings: QUICK=$QUICK REPS=$REPS DURATION=$DURATION WARMUP=$WARMUP CONNS=$CONNS THREADS=$THREADS SIZE=$SIZE XFERS=$XFERS IDLE_N=$IDLE_N LAYOUTS=[$LAYOUTS] WORKLOADS=[$WORKLOADS] QUIET_GATE=$QUIET_GATE"
  echo "ulimit -n: $(ulimit -n) (haproxy maxconn $HAPROXY_MAXCONN, nginx worker_connections $NGINX_WORKER_CONNS)"
} | tee "$WORK/env.txt" >&2
log "work dir: $WORK"

for b in "$BE" "$PX"; do port_free "$b" || { log "FATAL: port $b busy (set BASE_PORT)"; exit 1; }; done
write_backend_conf "$WORK/be"
truncate -s "$SIZE" "$WORK/be/www/big" || { log "FATAL: cannot create the $SIZE-byte file"; exit 1; }
# nginx's worker runs as nobody when started by root: let it reach the file (mktemp -d is 0700)
chmod o+x "$WORK" "$WORK/be"; chmod o+rx "$WORK/be/www"; chmod o+r "$WORK/be/www/big"
cat "$WORK/be/www/big" > /dev/null     # into the page cache (sparse: no disk read)
layout_cpus "${LAYOUTS%% *}"
taskset -c "$BEC" nginx -e "$WORK/be/error.log" -p "$WORK/be" -c "$WORK/be/nginx.conf" >"$WORK/be/out.log" 2>&1 &
BE_PID=$!; PIDS+=("$BE_PID")
wait_http "$BE" 10 "$BE_PID" || { log "FATAL: backend not ready (see $WORK/be/error.log)"; exit 1; }

rc=0
for rep in $(seq 1 "$REPS"); do
  for layout in $LAYOUTS; do
    layout_cpus "$layout"
    pin_tree "$BE_PID" "$BEC"
    n=${#NAMES[@]}
    for k in $(seq 0 $((n - 1))); do
      name=${NAMES[$(( (k + rep - 1) % n ))]}   # rotate the order each repetition
      # one relay start for conn/xfer, another for idle (it needs a fresh relay); none for direct
      busy=(); idle=0
      for w in $WORKLOADS; do
        case $w in
          conn|xfer) busy+=("$w") ;;
          idle) [ "$name" = direct ] || idle=1 ;;
          *) log "unknown workload $w" ;;
        esac
      done
      starts=(); [ ${#busy[@]} -gt 0 ] && starts+=("${busy[*]}"); [ $idle = 1 ] && starts+=(idle)
      for ws in "${starts[@]}"; do
        quiet_gate
        RELAY_PID=""
        if [ "$name" = direct ]; then
          acct=$BE_PID; port=$BE
        else
          if ! start_relay "$name" "$PXC"; then
            stop_pid "$RELAY_PID"; rc=1
            for w in $ws; do record "$layout" "$rep" "$w" "$name" FAIL 0 1 0 0 "did not start"; done
            continue
          fi
          acct=$RELAY_PID; port=$PX
        fi
        if [ ! -e "$WORK/sanity.$layout.$name" ]; then
          v=$(sanity "$port") || rc=1
          echo "$layout $name: $v" | tee -a "$WORK/sanity.txt" >&2
          touch "$WORK/sanity.$layout.$name"
        fi
        for w in $ws; do
          case $w in
            conn) measure_conn "$layout" "$rep" "$name" "$acct" ;;
            xfer) measure_xfer "$layout" "$rep" "$name" "$acct" ;;
            idle) measure_idle "$layout" "$rep" "$name" "$acct" ;;
          esac
        done
        if [ -n "$RELAY_PID" ]; then
          kill -0 "$RELAY_PID" 2>/dev/null || { log "$name exited during the run (see $RELAY_DIR/out.log)"; rc=1; }
          stop_pid "$RELAY_PID"
        fi
      done
    done
  done
done

python3 "$HERE/tcp_summarize.py" --details "$RAW" > "$WORK/summary.md"
python3 "$HERE/tcp_summarize.py" "$RAW"
if awk -F'\t' '$5=="FAIL" || $7 > 0 {f=1} END{exit !f}' "$RAW"; then
  log "WARNING: some runs failed or had errors: $(awk -F'\t' '$5=="FAIL" || $7 > 0 {print $1"/"$3"/"$4}' "$RAW" | sort -u | tr '\n' ' ')"
  rc=1
fi
log "done; results in $WORK (summary.md raw.tsv sanity.txt env.txt logs/ run.*/)"
exit $rc

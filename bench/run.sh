#!/usr/bin/env bash
# bench/run.sh - Tether beside HAProxy and NGINX (Caddy optional) on loopback, one run.
#
# Starts 3 nginx backends (one 1-worker nginx serving b1,b2,b3 on 3 ports, `return 200 "hello bN\n"`),
# builds Tether (release) if target/release/tether is missing or stale, then for each CPU layout
# and repetition (interleaved) runs wrk keep-alive at CONNS (50) and HICONNS (1000) connections
# against: the backend directly, HAProxy (rr / cookie), NGINX (rr / ip_hash), [Caddy] and Tether
# (rr / cookie-sticky), the sticky rows with and without replaying the cookie. Prints req/s, p50,
# p99, RSS per scenario and Tether's ratios to each peer. Everything listens on 127.0.0.1; every
# process started here is stopped by PID on exit. Docs: docs/performance.md.
#
#   bench/run.sh                 # full: 3 reps x layouts S,A + idle-connection memory, ~25 min
#   QUICK=1 bench/run.sh         # smoke: 1 rep, 3 s runs, load phase only, a few minutes
#   ONLY='^direct|rr' LAYOUTS=S bench/run.sh     # subset
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then         # smoke test: numbers are not for publication
  REPS=${REPS:-1}; DURATION=${DURATION:-3}; WARMUP=${WARMUP:-1}; PHASES=${PHASES:-load}
  QUIET_GATE=${QUIET_GATE:-0}
fi
REPS=${REPS:-3}
DURATION=${DURATION:-10}          # seconds per measured wrk run
WARMUP=${WARMUP:-2}               # seconds of unmeasured wrk before each run
THREADS=${THREADS:-1}             # wrk -t
CONNS=${CONNS:-50}                # wrk -c for the main scenarios
HICONNS=${HICONNS:-1000}          # wrk -c for the high-concurrency scenarios (0 = skip)
HI_STICKY=${HI_STICKY:-1}         # also run the sticky+cookie scenarios at HICONNS
LAYOUTS=${LAYOUTS:-"S A"}         # S, A, B, U or LG:BE:PX cpu lists, e.g. "0:1:1" (see layout_cpus in lib.sh)
PEERS=${PEERS:-"haproxy nginx"}   # reference proxies; add caddy for a Caddy column
HI_PEERS=${HI_PEERS:-$PEERS}      # peers also run at HICONNS
TETHER=${TETHER:-1}               # 0: no Tether column (peers only; no build)
BUILD=${BUILD:-1}                 # 0: never run cargo; use the binary as it is
ONLY=${ONLY:-}                    # regex: keep only matching scenario names
SKIP=${SKIP:-}                    # regex: drop matching scenario names
PHASES=${PHASES:-"load idle"}     # load idle h2 tls instr
INSTR_N=${INSTR_N:-20000}         # instr: requests counted under callgrind per proxy and protocol
INSTR_MODES=${INSTR_MODES:-rr}    # instr: rr, sticky (a new cookie each request), sticky+C (one replayed)
PEER_WRAP=""                      # a command prefix for the proxy (the instr phase's valgrind)
PROFILE=${PROFILE:-}              # regex of scenarios to profile with perf (e.g. '^tether-rr$'):
PROFILE_HZ=${PROFILE_HZ:-499}     #   perf record --call-graph dwarf of the proxy during the
                                  #   measured run, into $WORK/perf.<layout>.<scenario>.<rep>.data
                                  #   (CPU per request then includes perf's own overhead)
IDLE_N=${IDLE_N:-10000}
IDLE_PEERS=${IDLE_PEERS:-$PEERS}  # (+ tether)
IDLE_MODE=${IDLE_MODE:-"request connect"}  # request: 1 GET per conn then idle; connect: no request
H2_PEERS=${H2_PEERS:-"haproxy nginx"}
H2_CONNS=${H2_CONNS:-50}
H2_STREAMS=${H2_STREAMS:-10}
H2_REPS=${H2_REPS:-1}             # rounds of the h2 phase (h2c numbers swing 20-40% between runs)
BASE_PORT=${BASE_PORT:-18100}     # backends BASE+1..3, proxy BASE+10
PROXY_THREADS=${PROXY_THREADS:-1} # threads of each proxy: HAProxy nbthread, NGINX worker_processes,
                                  # Tether TETHER_WORKER_THREADS (with a PXC of as many CPUs, e.g.
                                  # PROXY_THREADS=2 LAYOUTS=U); the backends keep one process
export TETHER_WORKER_THREADS=${TETHER_WORKER_THREADS:-$PROXY_THREADS}
PEER_HEADERS=${PEER_HEADERS:-same} # same: HAProxy and NGINX add what Tether adds by default
                                  #   (X-Forwarded-For/-Proto/-Host, Forwarded, and a random
                                  #   X-Request-Id sent to the server and returned to the client);
                                  #   none: they forward the request as it came (less work)
case $PEER_HEADERS in same|none) ;; *) echo "PEER_HEADERS must be same or none" >&2; exit 2 ;; esac
# Tether is "the LB" of the harness; LB_CMD/LB_STICKY_CMD can point at another binary instead.
TETHER_BIN_GIVEN=${TETHER_BIN:+1}   # a TETHER_BIN from outside is used as is (never built)
LB_CMD_GIVEN=${LB_CMD:+1}           # a custom LB_CMD: no Tether build either
TETHER_BIN=${TETHER_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/tether}
export TETHER_BIN
_w=$(printf '%q' "$HERE/tether-lb.sh")
LB_NAME=${LB_NAME:-tether}
if [ "$TETHER" = 1 ]; then
  LB_CMD=${LB_CMD:-"$_w {port} {b1} {b2} {b3} rr {dir}"}
  LB_STICKY_CMD=${LB_STICKY_CMD:-"$_w {port} {b1} {b2} {b3} sticky {dir}"}
  [ "${TETHER_H2:-0}" = 1 ] && LB_H2_CMD=${LB_H2_CMD:-"$_w {port} {b1} {b2} {b3} rr {dir}"}
else
  LB_CMD=""; LB_STICKY_CMD=""
fi
LB_H2_CMD=${LB_H2_CMD:-}          # optional: the LB speaking h2c (prior knowledge) on {port}
LB_READY_TIMEOUT=${LB_READY_TIMEOUT:-20}
NGINX_UPSTREAM_KEEPALIVE=${NGINX_UPSTREAM_KEEPALIVE:-1024}
_hm=$(( $(ulimit -n) / 2 - 100 )); [ $_hm -gt 20100 ] && _hm=20100
HAPROXY_MAXCONN=${HAPROXY_MAXCONN:-$_hm}  # haproxy reserves 2 fds per conn; capped by ulimit -n
QUIET_GATE=${QUIET_GATE:-1}       # before each run wait until all cpus are mostly idle
QUIET_BUSY=${QUIET_BUSY:-10}      # ... i.e. busy <= this % (concurrent builds skew results)
QUIET_WAIT=${QUIET_WAIT:-600}     # ... but at most this many seconds (30 s after a first timeout)
export STEAL_MAX=${STEAL_MAX:-2}  # a run with more than this % of steal is made again (summarize.py
                                  #   leaves such runs out by the same rule)
STEAL_RETRIES=${STEAL_RETRIES:-2} # ... at most this many times per run (0: never)
BACKEND_PROCS=${BACKEND_PROCS:-1}   # 1: one nginx worker serves b1,b2,b3; 3: one nginx per backend
INSTALL=${INSTALL:-1}             # apt-get install missing tools (root only)
WORK=${WORK:-$(mktemp -d /tmp/tetherbench.XXXXXX)}
export LB_NAME

mkdir -p "$WORK"
RAW="$WORK/raw.tsv"
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
LOGS="$WORK/logs"; mkdir -p "$LOGS"
B1=$((BASE_PORT + 1)); B2=$((BASE_PORT + 2)); B3=$((BASE_PORT + 3))
PX=$((BASE_PORT + 10))
BACKENDS="127.0.0.1:$B1,127.0.0.1:$B2,127.0.0.1:$B3"

NGINX_WORKER_CONNS=18000          # every nginx here: worker_connections (nginx_common in lib.sh)

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh" || exit 1          # log, process tracking and cleanup, accounting, quiet_gate...

# ---------------------------------------------------------------- measurements
cpu_busy() {         # $1 $2: snapshots -> "cpu0=NN cpu1=NN steal=NN" (percent of each cpu's time)
  awk 'NR==FNR{for(i=2;i<=NF;i++) a[$1,i]=$i; next}
       { t=0; for(i=2;i<=NF;i++){d[i]=$i-a[$1,i]; t+=d[i]}
         if(t>0){ printf "%s=%.0f ", $1, 100*(t-d[5]-d[6])/t; st+=d[9]; tt+=t } }
       END{ printf "steal=%.1f", (tt>0?100*st/tt:0) }' <(echo "$1") <(echo "$2")
}

calib() {            # host-speed index: python loop iterations per microsecond on cpu0 and cpu1
  local c out=""
  for c in 0 1; do
    out="$out calib$c=$(taskset -c "$c" python3 -c 'import time
t = time.perf_counter(); n = 0
while time.perf_counter() - t < 0.25: n += 1
print(round(n / 0.25 / 1e6, 2))' 2>/dev/null || echo 0)"
  done
  echo "${out# }"
}

# ---------------------------------------------------------------- install
ensure_tools() {
  local want=() b p
  want=(wrk:wrk nginx:nginx curl:curl taskset:util-linux python3:python3 ss:iproute2 timeout:coreutils)
  for p in $PEERS $IDLE_PEERS; do
    case $p in haproxy) want+=(haproxy:haproxy) ;; caddy) want+=(caddy:caddy) ;; esac
  done
  [[ " $PHASES " == *" h2 "* || " $PHASES " == *" tls "* ]] && want+=(h2load:nghttp2-client)
  [[ " $PHASES " == *" tls "* ]] && want+=(openssl:openssl)
  [[ " $PHASES " == *" instr "* ]] && want+=(h2load:nghttp2-client valgrind:valgrind)
  install_tools "${want[@]}"
  for b in wrk curl taskset python3 nginx timeout; do
    command -v "$b" >/dev/null 2>&1 || { log "FATAL: $b missing"; exit 1; }
  done
  local keep=()                                # drop peers whose binary is still missing
  for p in $PEERS; do
    if command -v "$p" >/dev/null 2>&1; then keep+=("$p"); else log "WARNING: $p missing: no $p column"; fi
  done
  PEERS="${keep[*]}"
  keep=(); for p in $HI_PEERS; do command -v "$p" >/dev/null 2>&1 && keep+=("$p"); done; HI_PEERS="${keep[*]}"
  keep=(); for p in $IDLE_PEERS; do command -v "$p" >/dev/null 2>&1 && keep+=("$p"); done; IDLE_PEERS="${keep[*]}"
}

# ---------------------------------------------------------------- configs
nginx_http_common() { # $1 dir
  cat <<EOF
  access_log off;
  default_type text/plain;
  keepalive_timeout 300s;
  keepalive_requests 100000000;
  client_body_temp_path $1/t_body; proxy_temp_path $1/t_proxy;
  fastcgi_temp_path $1/t_fcgi; uwsgi_temp_path $1/t_uwsgi; scgi_temp_path $1/t_scgi;
EOF
}

write_backend_conf() { # $1 dir, then "port:name" pairs (one server block each)
  local d=$1 pn; shift
  mkdir -p "$d"
  { nginx_common "$d"; echo "http {"; nginx_http_common "$d"
    for pn in "$@"; do
      cat <<EOF
  server {
    listen 127.0.0.1:${pn%%:*} backlog=4096;
    location / { return 200 "hello ${pn#*:}\n"; }
  }
EOF
    done
    echo "}"
  } > "$d/nginx.conf"
}

write_nginx_conf() { # $1 dir $2 mode(rr|iphash) $3 h2(0|1|tls)
  local lb="" h2="" tls=""
  [ "$2" = iphash ] && lb="ip_hash;"
  [ "${3:-0}" = 1 ] && h2=" http2"
  if [ "${3:-0}" = tls ]; then
    h2=" ssl http2"
    tls="ssl_certificate $TLS_DIR/site.crt; ssl_certificate_key $TLS_DIR/site.key; ssl_protocols TLSv1.3; ssl_session_cache shared:SSL:10m;"
  fi
  mkdir -p "$1"
  { nginx_common "$1" "$PROXY_THREADS"; echo "http {"; nginx_http_common "$1"
    cat <<EOF
  upstream up {
    $lb
    server 127.0.0.1:$B1; server 127.0.0.1:$B2; server 127.0.0.1:$B3;
    keepalive $NGINX_UPSTREAM_KEEPALIVE;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$PX backlog=4096$h2;
    $tls
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
$(nginx_same_headers)
    }
  }
}
EOF
  } > "$1/nginx.conf"
}

nginx_same_headers() { # PEER_HEADERS=same: the headers Tether adds by default
  [ "$PEER_HEADERS" = same ] || return 0
  cat <<'EOF'
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header Forwarded "for=$remote_addr;proto=$scheme;host=$http_host";
      proxy_set_header X-Request-Id $request_id;
      add_header X-Request-Id $request_id always;
EOF
}

haproxy_same_headers() { # $1 proto: PEER_HEADERS=same, the headers Tether adds by default
  [ "$PEER_HEADERS" = same ] || return 0
  cat <<EOF
  option forwardfor
  http-request set-header X-Forwarded-Proto $1
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header Forwarded "for=%[src];proto=$1;host=%[req.hdr(host)]"
  unique-id-format %[uuid()]
  unique-id-header X-Request-Id
  http-after-response set-header X-Request-Id %[unique-id]
EOF
}

write_haproxy_conf() { # $1 dir $2 mode(rr|cookie) $3 tls(0|tls)
  local ck="" c1="" c2="" c3="" ssl="" proto=http
  [ "${3:-0}" = tls ] && ssl=" ssl crt $TLS_DIR/site.pem alpn h2,http/1.1 ssl-min-ver TLSv1.3" && proto=https
  if [ "$2" = cookie ]; then
    ck="  cookie SRV insert indirect nocache"; c1=" cookie s1"; c2=" cookie s2"; c3=" cookie s3"
  fi
  mkdir -p "$1"
  cat > "$1/haproxy.cfg" <<EOF
$(haproxy_http_head "$PROXY_THREADS" "$HAPROXY_MAXCONN")
frontend fe
  bind 127.0.0.1:$PX$ssl
  maxconn $HAPROXY_MAXCONN
$(haproxy_same_headers "$proto")
  default_backend be
backend be
  balance roundrobin
$ck
  server s1 127.0.0.1:$B1$c1
  server s2 127.0.0.1:$B2$c2
  server s3 127.0.0.1:$B3$c3
EOF
}

write_caddy_conf() { # $1 dir $2 mode(rr|cookie) $3 h2(0|1)
  local pol=round_robin proto=""
  [ "$2" = cookie ] && pol=cookie
  [ "${3:-0}" = 1 ] && proto="  servers { protocols h1 h2 h2c }"
  mkdir -p "$1"
  cat > "$1/Caddyfile" <<EOF
{
  admin off
  auto_https off
$proto
}
http://127.0.0.1:$PX {
  reverse_proxy 127.0.0.1:$B1 127.0.0.1:$B2 127.0.0.1:$B3 {
    lb_policy $pol
  }
}
EOF
}

lb_expand() {        # expand {port} {b1} {b2} {b3} {backends} {backends_sp} {dir}
  local c=$1
  c=${c//\{port\}/$PX}; c=${c//\{b1\}/$B1}; c=${c//\{b2\}/$B2}; c=${c//\{b3\}/$B3}
  c=${c//\{backends\}/$BACKENDS}; c=${c//\{backends_sp\}/${BACKENDS//,/ }}; c=${c//\{dir\}/$2}
  echo "$c"
}

wait_curl() {         # $1 url, then curl options: until it answers 200 (10 s) while PEER_PID lives
  local url=$1 i; shift
  for i in $(seq 1 100); do
    [ "$(curl -s "$@" -o /dev/null -m 1 -w '%{http_code}' "$url")" = 200 ] && return 0
    kill -0 "$PEER_PID" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# start_peer PEER MODE CPUS [H2|tls] -> sets PEER_PID, returns non-zero if not ready
start_peer() {
  local peer=$1 mode=$2 cpus=$3 h2=${4:-0} d
  local shown=$peer; [ "$peer" = lb ] && shown=$LB_NAME
  # One directory per proxy, mode and protocol, reused by its every start: its config and
  # the last start's log stay for reading, without hundreds of directories per run.
  d="$WORK/run.$shown.$mode.$h2"; mkdir -p "$d"
  PEER_PID=""
  port_free "$PX" || { log "port $PX busy"; return 1; }
  case $peer in
    haproxy)
      write_haproxy_conf "$d" "$mode" "$h2"
      # shellcheck disable=SC2086  # PEER_WRAP is a command prefix: split into words on purpose
      taskset -c "$cpus" $PEER_WRAP haproxy -db -f "$d/haproxy.cfg" >"$d/out.log" 2>&1 &
      ;;
    nginx)
      write_nginx_conf "$d" "$mode" "$h2"
      taskset -c "$cpus" nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf" >"$d/out.log" 2>&1 &
      ;;
    caddy)
      write_caddy_conf "$d" "$mode" "$h2"
      HOME="$d" XDG_DATA_HOME="$d/data" XDG_CONFIG_HOME="$d/config" \
        taskset -c "$cpus" caddy run --config "$d/Caddyfile" --adapter caddyfile >"$d/out.log" 2>&1 &
      ;;
    lb)
      local tpl=$LB_CMD
      [ "$mode" = sticky ] && tpl=$LB_STICKY_CMD
      [ "$h2" = 1 ] && tpl=$LB_H2_CMD
      lb_expand "$tpl" "$d" > "$d/cmd"
      if [ "$h2" = tls ]; then
        TETHER_TLS_CERT=$TLS_DIR/site.crt TETHER_TLS_KEY=$TLS_DIR/site.key \
          taskset -c "$cpus" bash -c "exec $(lb_expand "$LB_CMD" "$d")" >"$d/out.log" 2>&1 &
      else
        taskset -c "$cpus" bash -c "exec $PEER_WRAP $(lb_expand "$tpl" "$d")" >"$d/out.log" 2>&1 &
      fi
      ;;
    *) log "unknown peer $peer"; return 1 ;;
  esac
  PEER_PID=$!
  PIDS+=("$PEER_PID")
  if [ "$h2" = tls ]; then
    wait_curl "https://127.0.0.1:$PX/" -k && return 0
    log "$shown/$mode (tls) did not become ready (see $d/out.log)"; return 1
  fi
  if [ "$h2" = 1 ] && [ "$peer" = nginx ]; then
    # h2c-only listener: probe with prior knowledge
    wait_curl "http://127.0.0.1:$PX/" --http2-prior-knowledge && return 0
    log "$shown/$mode did not become ready (see $d/out.log)"; return 1
  fi
  local to=10; [ "$peer" = lb ] && to=$LB_READY_TIMEOUT
  wait_http "$PX" "$to" "$PEER_PID" || {
    log "$shown/$mode did not become ready (see $d/out.log $d/error.log); last lines:"
    tail -n 5 "$d/out.log" "$d/error.log" 2>/dev/null | sed 's/^/    /' >&2
    return 1
  }
}

# ---------------------------------------------------------------- backends
declare -a BE_PIDS=()
start_backends() {   # $1 cpus. BACKEND_PROCS=1: one nginx worker serves all 3 ports; 3: one nginx each
  local i port d
  for i in 1 2 3; do
    port_free $((BASE_PORT + i)) || { log "FATAL: backend port $((BASE_PORT + i)) busy (set BASE_PORT)"; exit 1; }
  done
  if [ "$BACKEND_PROCS" = 1 ]; then
    d="$WORK/be"
    write_backend_conf "$d" "$B1:b1" "$B2:b2" "$B3:b3"
    taskset -c "$1" nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf" >"$d/out.log" 2>&1 &
    BE_PIDS+=($!); PIDS+=($!)
  else
    for i in 1 2 3; do
      port=$((BASE_PORT + i)); d="$WORK/be$i"
      write_backend_conf "$d" "$port:b$i"
      taskset -c "$1" nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf" >"$d/out.log" 2>&1 &
      BE_PIDS+=($!); PIDS+=($!)
    done
  fi
  for i in 1 2 3; do
    wait_http $((BASE_PORT + i)) 10 || { log "FATAL: backend b$i not ready"; exit 1; }
  done
}

# ---------------------------------------------------------------- sanity
distribution() {     # $1 port $2 header-or-empty: which backend answered N=30 new connections
  local i out=()
  for i in $(seq 1 30); do
    if [ -n "$2" ]; then out+=("$(curl -s -m 2 -H "$2" "http://127.0.0.1:$1/" | awk '{print $2}')")
    else out+=("$(curl -s -m 2 "http://127.0.0.1:$1/" | awk '{print $2}')"); fi
  done
  printf '%s\n' "${out[@]}" | sort | uniq -c | awk '{printf "%s%s:%s", (NR>1?",":""), ($2==""?"none":$2), $1}'
}

verdict() {          # $1 peer $2 mode $3 cookie-sent(0|1|nocookie) $4 distribution -> OK/FAIL text
  local n; n=$(tr ',' '\n' <<<"$4" | grep -vc '^none:')
  if [[ $4 == *none:* ]]; then echo "FAIL (some requests got no answer)"; return; fi
  if [ "$3" = nocookie ]; then echo "FAIL (no Set-Cookie from the proxy: sticky path not exercised)"; return; fi
  if [ "$1" = direct ]; then echo "OK"; return; fi
  if [ "$3" = 1 ]; then
    [ "$n" = 1 ] && echo "OK (cookie pins to one backend)" || echo "FAIL (cookie does not pin: $n backends)"
  elif [ "$2" = iphash ]; then
    [ "$n" = 1 ] && echo "OK (ip_hash: one client IP, one backend)" || echo "WARN ($n backends)"
  else
    [ "$n" = 3 ] && echo "OK (spread over 3 backends)" || echo "WARN (only $n backends answered)"
  fi
}

get_cookie() {       # first Set-Cookie name=value from the proxy
  curl -s -m 2 -o /dev/null -D - "http://127.0.0.1:$1/" | tr -d '\r' \
    | awk 'tolower($1)=="set-cookie:"{print $2; exit}' | sed 's/;.*//'
}

# ---------------------------------------------------------------- scenarios
SCN=()
add() { # name peer mode conns cookie
  if [ -n "$ONLY" ] && ! [[ $1 =~ $ONLY ]]; then return; fi
  if [ -n "$SKIP" ] && [[ $1 =~ $SKIP ]]; then return; fi
  SCN+=("$1 $2 $3 $4 $5")
}
build_scenarios() {
  # Rows that are compared run next to each other: every proxy's round robin, then Tether's
  # sticky rows (compared with its round robin), then the peers' sticky rows. Minutes apart,
  # this host's speed moves by tens of percent; seconds apart, much less.
  local p c
  for c in "$CONNS" "$HICONNS"; do
    [ "$c" = 0 ] && continue
    local sfx="" hs=1; [ "$c" != "$CONNS" ] && { sfx="@$c"; hs=$HI_STICKY; }
    add "direct$sfx" direct - "$c" 0
    for p in $PEERS; do
      if [ -n "$sfx" ] && ! [[ " $HI_PEERS " == *" $p "* ]]; then continue; fi
      case $p in
        haproxy|nginx|caddy) add "$p-rr$sfx" "$p" rr "$c" 0 ;;
      esac
    done
    if [ -n "$LB_CMD" ]; then add "$LB_NAME-rr$sfx" lb rr "$c" 0; fi
    if [ -n "$LB_STICKY_CMD" ]; then
      [ -z "$sfx" ] && add "$LB_NAME-sticky" lb sticky "$c" 0
      [ "$hs" = 1 ] && add "$LB_NAME-sticky+C$sfx" lb sticky "$c" 1
    fi
    for p in $PEERS; do
      if [ -n "$sfx" ] && ! [[ " $HI_PEERS " == *" $p "* ]]; then continue; fi
      case $p in
        haproxy|caddy) [ -z "$sfx" ] && add "$p-cookie" "$p" cookie "$c" 0
                       [ "$hs" = 1 ] && add "$p-cookie+C$sfx" "$p" cookie "$c" 1 ;;
        nginx)         [ "$hs" = 1 ] && add "nginx-iphash$sfx" nginx iphash "$c" 0 ;;
      esac
    done
  done
}

# run_one LAYOUT REP NAME PEER MODE CONNS COOKIE: one measured run, made again (at most
# STEAL_RETRIES times) while the hypervisor took more than STEAL_MAX % of the CPUs during it: such
# runs ran ~16% slow here, and summarize.py would leave them out, costing the row a repetition.
run_one() {
  local left=$STEAL_RETRIES rc
  while :; do
    rc=0; STEAL_RETRY=$((left > 0)) measure_once "$@" || rc=$?
    [ "$rc" = 3 ] || return "$rc"
    left=$((left - 1))
  done
}

# measure_once LAYOUT REP NAME PEER MODE CONNS COOKIE: returns 3, recording nothing, when the
# run had too much steal and STEAL_RETRY is 1.
measure_once() {
  local layout=$1 rep=$2 name=$3 peer=$4 mode=$5 conns=$6 usecookie=$7
  local port=$PX pid="" hdr="" lf="$LOGS/$layout.$name.$rep.txt"
  quiet_gate
  local cal; cal=$(calib)
  PEER_PID=""
  if [ "$peer" = direct ]; then
    port=$B1; pid=${BE_PIDS[0]}
  else
    if ! start_peer "$peer" "$mode" "$PXC"; then
      stop_pid "$PEER_PID"
      printf '%s\t%s\t%s\tFAIL\n' "$layout" "$rep" "$name" >> "$RAW"; return
    fi
    pid=$PEER_PID
  fi
  local sent=$usecookie
  if [ "$usecookie" = 1 ]; then
    local ck; ck=$(get_cookie "$port")
    if [ -n "$ck" ]; then hdr="Cookie: $ck"; else log "$name: proxy set no cookie"; sent=nocookie; fi
  fi
  if [ ! -e "$WORK/sanity.$layout.$name" ]; then
    local dist extra=""; dist=$(distribution "$port" "$hdr")
    if [ -n "$hdr" ]; then   # does the proxy send Set-Cookie again when the cookie is replayed?
      extra=" re-sets-cookie=$(curl -s -m 2 -o /dev/null -D - -H "$hdr" "http://127.0.0.1:$port/" \
        | grep -qi '^set-cookie:' && echo yes || echo no)"
    fi
    echo "$layout $name cookie=[${hdr#Cookie: }]$extra 30 new conns -> $dist: $(verdict "$peer" "$mode" "$sent" "$dist")" \
      | tee -a "$WORK/sanity.txt" >&2
    touch "$WORK/sanity.$layout.$name"
  fi
  local args=(-t "$THREADS" -c "$conns" --timeout 5s)
  [ -n "$hdr" ] && args+=(-H "$hdr")
  [ "$WARMUP" != 0 ] && run_wait timeout -k 5 $((WARMUP + 30)) taskset -c "$LG" wrk "${args[@]}" -d "${WARMUP}s" \
    "http://127.0.0.1:$port/" >/dev/null 2>&1
  local c0 o0 s0 c1 o1 s1 p0 p1 u0 u1
  c0=$(cpu_snap); o0=$(ticks_tree "${BE_PIDS[@]}" ${PEER_PID:+"$PEER_PID"}); s0=$(shell_cticks)
  p0=$(ticks_tree "$pid"); u0=$(uticks_tree "$pid"); local w0; w0=$(csw_tree "$pid")
  [ "$peer" = direct ] || profile_start "$name" "$WORK/perf.$layout.$name.$rep.data" "$pid"
  run_wait timeout -k 5 $((DURATION + 30)) taskset -c "$LG" wrk "${args[@]}" -d "${DURATION}s" --latency \
    -s "$HERE/wrk_report.lua" "http://127.0.0.1:$port/" > "$lf" 2>&1
  c1=$(cpu_snap); o1=$(ticks_tree "${BE_PIDS[@]}" ${PEER_PID:+"$PEER_PID"}); s1=$(shell_cticks)
  p1=$(ticks_tree "$pid"); u1=$(uticks_tree "$pid"); local w1; w1=$(csw_tree "$pid")
  profile_stop
  local cpu; cpu=$(cpu_busy "$c0" "$c1")
  # foreign = busy ticks (user+nice+system+irq+softirq) not spent by wrk/backends/peer, as % of
  # all cpus' time. Task times include the softirq work done in their context (loopback), hence +irq.
  cpu="$cpu foreign=$(foreign_pct "$c0" "$c1" "$o0" "$o1" "$s0" "$s1")"
  local rss; rss=$(rss_kb "$pid")
  [ "$peer" = direct ] || stop_pid "$PEER_PID"
  local res; res=$(grep '^RESULT' "$lf" | sed 's/^RESULT //')
  # CPU per request (user + sys of the proxy's process tree, or the backends' for direct, over
  # the measured run), in microseconds: the cost that req/s hides when a core is not saturated.
  local reqs; reqs=$(grep -o 'requests=[0-9]*' <<<"$res" | cut -d= -f2)
  [ -n "$res" ] && [ "${reqs:-0}" -gt 0 ] \
    && res="$res cpu_us_req=$(awk -v t=$((p1 - p0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN{printf "%.2f", t * 1e6 / hz / n}')" \
    && res="$res user_us_req=$(awk -v t=$((u1 - u0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN{printf "%.2f", t * 1e6 / hz / n}')"
  # context switches of the proxy per 1000 requests, voluntary (waits) and not (preempted)
  [ -n "$res" ] && [ "${reqs:-0}" -gt 0 ] && res="$res $(awk -v a="$w0" -v b="$w1" -v n="$reqs" \
    'BEGIN{split(a,x," "); split(b,y," "); printf "csw_vol_k=%.1f csw_inv_k=%.1f", (y[1]-x[1])*1000/n, (y[2]-x[2])*1000/n}')"
  [ -n "$res" ] && res="$res $cpu $cal"
  if [ -z "$res" ]; then
    printf '%s\t%s\t%s\tFAIL\n' "$layout" "$rep" "$name" >> "$RAW"; log "$name: wrk gave no result"; return
  fi
  local steal; steal=$(grep -o 'steal=[0-9.]*' <<<"$cpu" | cut -d= -f2)
  if [ "$STEAL_RETRY" = 1 ] && awk -v s="${steal:-0}" -v m="$STEAL_MAX" 'BEGIN{exit !(s > m)}'; then
    log "$layout rep$rep $name: steal ${steal}% > STEAL_MAX ($STEAL_MAX): run again"; return 3
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$layout" "$rep" "$name" "$conns" "$res" "${rss% *}" "${rss#* }" >> "$RAW"
  log "$layout rep$rep $name: $(echo "$res" | grep -o 'rps=[0-9.]*') $(echo "$res" | grep -o 'p99_us=[0-9]*') $(echo "$res" | grep -o 'cpu_us_req=[0-9.]*') $(echo "$res" | grep -o 'user_us_req=[0-9.]*') $(echo "$res" | grep -o 'csw_[a-z]*_k=[0-9.]*' | tr '\n' ' ')rss=${rss% *}kB $cpu $cal"
}

phase_load() {
  build_scenarios
  log "scenarios: ${#SCN[@]} x layouts [$LAYOUTS] x reps $REPS x ${DURATION}s (+${WARMUP}s warmup)"
  local rep layout s
  for rep in $(seq 1 "$REPS"); do
    for layout in $LAYOUTS; do
      layout_cpus "$layout"
      local b; for b in "${BE_PIDS[@]}"; do pin_tree "$b" "$BEC"; done
      # Odd repetitions run the scenarios forward, even ones backward: a scenario's place in
      # the sequence (what ran just before it, how long since the backends started) costs or
      # gives a few percent, which a fixed order charged to the same scenarios every time.
      local n=${#SCN[@]} k
      for ((k = 0; k < n; k++)); do
        s=${SCN[$(( rep % 2 == 1 ? k : n - 1 - k ))]}
        # shellcheck disable=SC2086
        run_one "$layout" "$rep" $s
      done
    done
  done
  python3 "$HERE/summarize.py" --details "$RAW" "$LAYOUTS" > "$WORK/summary.md"
  python3 "$HERE/summarize.py" "$RAW" "$LAYOUTS"      # headline + ratios to stdout
}

# ---------------------------------------------------------------- idle conns
phase_idle() {
  local layout; layout_cpus "${LAYOUTS%% *}"
  local b; for b in "${BE_PIDS[@]}"; do pin_tree "$b" "$BEC"; done
  local peers=$IDLE_PEERS; [ -n "$LB_CMD" ] && peers="$peers lb"
  local p
  echo "## idle keep-alive connections (N=$IDLE_N, modes: $IDLE_MODE; layout ${LAYOUTS%% *})" | tee -a "$WORK/idle.md"
  local mode
  for mode in $IDLE_MODE; do
    for p in $peers; do
      start_peer "$p" rr "$PXC" || { stop_pid "$PEER_PID"; continue; }
      local name=$p n=$IDLE_N; [ "$p" = lb ] && name=$LB_NAME
      if [ "$p" = haproxy ] && [ "$n" -gt $((HAPROXY_MAXCONN - 50)) ]; then
        n=$((HAPROXY_MAXCONN - 50)); log "haproxy: idle N capped to $n (maxconn $HAPROXY_MAXCONN from ulimit -n $(ulimit -n))"
      fi
      run_wait timeout -k 5 300 taskset -c "$LG" python3 "$HERE/idle_conns.py" --port "$PX" --pid "$PEER_PID" \
        -n "$n" --mode "$mode" --name "$name" --backend-ports "$B1,$B2,$B3" > "$LOGS/idle.$mode.$name.txt" 2>&1
      tee -a "$WORK/idle.md" < "$LOGS/idle.$mode.$name.txt"
      stop_pid "$PEER_PID"
    done
  done
}

# ---------------------------------------------------------------- instructions
# User-space instructions per request under callgrind: they do not drift with the host's speed
# or the other core's load, so a change's effect shows without the wall clock's noise. The
# kernel's share (most of a proxy's CPU on loopback) is not counted.
phase_instr() {
  if ! command -v h2load >/dev/null || ! command -v callgrind_control >/dev/null; then
    log "h2load or valgrind missing: skip instr"; return
  fi
  local layout; layout_cpus "${LAYOUTS%% *}"
  local peers="haproxy"; [ "$TETHER" = 1 ] && peers="$peers lb"
  echo "## user-space instructions per request (callgrind, $INSTR_N requests, h2load -c50)" | tee -a "$WORK/instr.md"
  local p proto mode
  for mode in $INSTR_MODES; do
  for p in $peers; do
    for proto in h1 h2c; do
      instr_one "$p" "$proto" "$mode"
    done
  done
  done
}

# instr_one PEER PROTO MODE: one proxy under callgrind, warmed up, then INSTR_N requests counted.
instr_one() {
  local p=$1 proto=$2 mode=${3%+C} cgout="$WORK/callgrind.$1.$2.$3"
  # The HTTP/1.1 configs take h2c too (HAProxy and Tether detect the preface).
  local -a args=(--h1)
  if [ "$proto" = h2c ]; then args=(-m 10); fi
  PEER_WRAP="valgrind --tool=callgrind --trace-children=yes --callgrind-out-file=$cgout.%p" \
    start_peer "$p" "$mode" "$PXC" || { stop_pid "$PEER_PID"; return; }
  if [ "$3" != "$mode" ]; then
    local ck; ck=$(get_cookie "$PX")
    [ -n "$ck" ] && args+=(-H "Cookie: $ck")
  fi
  h2load "${args[@]}" -n 2000 -c 50 "http://127.0.0.1:$PX/" >/dev/null 2>&1
  callgrind_control -z "$PEER_PID" >/dev/null
  local ok
  ok=$(h2load "${args[@]}" -n "$INSTR_N" -c 50 "http://127.0.0.1:$PX/" 2>&1 | awk '/^requests:/{print $8}')
  callgrind_control -d "$PEER_PID" >/dev/null
  stop_pid "$PEER_PID"
  # The dump (file name ending .1) holds what ran between the zeroing and the dump.
  local total; total=$(awk '/^(summary|totals):/{print $2; exit}' "$cgout.$PEER_PID.1" 2>/dev/null)
  local shown=$p; [ "$p" = lb ] && shown=$LB_NAME
  [ "$3" != rr ] && shown="$shown $3"
  awk -v p="$shown" -v pr="$proto" -v t="${total:-0}" -v n="${ok:-0}" 'BEGIN{
    if (n > 0 && t > 0) printf "%s %s: %.0f instructions per request (%d requests)\n", p, pr, t / n, n;
    else printf "%s %s: no result\n", p, pr }' | tee -a "$WORK/instr.md"
}

# ---------------------------------------------------------------- h2load
phase_h2() {
  command -v h2load >/dev/null || { log "h2load missing: skip h2"; return; }
  local layout; layout_cpus "${LAYOUTS%% *}"
  local b; for b in "${BE_PIDS[@]}"; do pin_tree "$b" "$BEC"; done
  local peers=$H2_PEERS; [ -n "$LB_H2_CMD" ] && peers="$peers lb"
  local p
  echo "## h2load h2c (-c$H2_CONNS -m$H2_STREAMS, ${DURATION}s, layout ${LAYOUTS%% *}, $H2_REPS round(s))" | tee -a "$WORK/h2.md"
  local rep
  for rep in $(seq 1 "$H2_REPS"); do
  for p in $peers; do
    quiet_gate
    start_peer "$p" rr "$PXC" 1 || { stop_pid "$PEER_PID"; continue; }
    local lf="$LOGS/h2.$p.txt" t0 t1
    t0=$(ticks_tree "$PEER_PID")
    run_wait timeout -k 5 $((WARMUP + DURATION + 30)) taskset -c "$LG" h2load -t 1 -c "$H2_CONNS" -m "$H2_STREAMS" --warm-up-time="$WARMUP" -D "$DURATION" \
      "http://127.0.0.1:$PX/" > "$lf" 2>&1
    t1=$(ticks_tree "$PEER_PID")
    local rss; rss=$(rss_kb "$PEER_PID")
    stop_pid "$PEER_PID"
    local rps lat ok
    rps=$(awk '/^finished in/{print $4}' "$lf")
    ok=$(awk '/^requests:/{print $8, "succeeded,", $10, "failed"}' "$lf")
    lat=$(awk '/^time for request:/{print "min", $4, "max", $5, "mean", $6}' "$lf")
    proto=$(awk '/Application protocol:/{print $3}' "$lf")
    # CPU per request: the proxy's user + sys over warm-up and run, the run's share of it
    # (h2load counts only the run's requests), per request.
    local cpu; cpu=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="${ok%% *}" -v w="$WARMUP" -v d="$DURATION" \
      'BEGIN{if (n > 0) printf "%.2f", t * 1e6 / hz / n * d / (w + d); else print "-"}')
    echo "$p: proto=$proto req/s=$rps ($ok) request-time $lat rss=${rss% *}kB cpu_us_req=$cpu" | tee -a "$WORK/h2.md"
  done
  done
  [ "$H2_REPS" -gt 1 ] && h2_medians "$WORK/h2.md" | tee -a "$WORK/h2.md"
}

h2_medians() {        # $1 h2.md: median req/s and CPU per request of each proxy over the rounds
  python3 - "$1" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\w+): proto=\S+ req/s=([\d.]+) .*cpu_us_req=([\d.]+)", line)
    if m:
        runs.setdefault(m[1], []).append((float(m[2]), float(m[3])))
med = {p: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v), len(v)) for p, v in runs.items()}
for p, (r, c, n) in med.items():
    print(f"median {p}: req/s={r:.0f} cpu_us_req={c:.2f} (n={n})")
for peer in [p for p in med if p != "lb"]:
    if "lb" in med:
        print(f"median ratio lb/{peer}: req/s={med['lb'][0] / med[peer][0]:.2f} cpu_us_req={med['lb'][1] / med[peer][1]:.2f}")
PY
}

# ---------------------------------------------------------------- TLS (h2load)
# Each proxy terminates TLS 1.3 (one self-signed P-256 certificate, the same for all; TLS 1.3
# everywhere, so every handshake costs the same kind of work) and is driven
# by h2load over https: HTTP/2 (ALPN h2, H2_STREAMS streams per connection) and HTTP/1.1
# (--h1, one request at a time per connection). Then a handshake-bound run: every request on
# a new connection (TLS_NEWCONN_N requests), which is what TLS termination costs. Then idle
# HTTPS keep-alive connections: TLS_IDLE_N of them (0: skip), one GET each, then idle; the
# proxy's RSS growth per connection (idle_conns.py --tls).
TLS_NEWCONN_N=${TLS_NEWCONN_N:-3000}
TLS_IDLE_N=${TLS_IDLE_N:-3000}
phase_tls() {
  command -v h2load >/dev/null || { log "h2load missing: skip tls"; return; }
  TLS_DIR="$WORK/tls"; mkdir -p "$TLS_DIR"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$TLS_DIR/site.key" -out "$TLS_DIR/site.crt" \
    >"$LOGS/openssl.log" 2>&1 || { log "openssl failed: skip tls"; return; }
  cat "$TLS_DIR/site.crt" "$TLS_DIR/site.key" > "$TLS_DIR/site.pem"
  local layout; layout_cpus "${LAYOUTS%% *}"
  local b; for b in "${BE_PIDS[@]}"; do pin_tree "$b" "$BEC"; done
  local peers=$H2_PEERS; [ -n "$LB_CMD" ] && peers="$peers lb"
  echo "## TLS with h2load (-c$H2_CONNS, ${DURATION}s, layout ${LAYOUTS%% *})" | tee -a "$WORK/tls.md"
  local p kind
  for kind in h2 h1 newconn; do
    for p in $peers; do
      quiet_gate
      start_peer "$p" rr "$PXC" tls || { stop_pid "$PEER_PID"; continue; }
      local lf="$LOGS/tls.$kind.$p.txt" args
      case $kind in
        h2) args=(-c "$H2_CONNS" -m "$H2_STREAMS" --warm-up-time="$WARMUP" -D "$DURATION") ;;
        h1) args=(--h1 -c "$H2_CONNS" -m 1 --warm-up-time="$WARMUP" -D "$DURATION") ;;
        newconn) args=(--h1 -c "$H2_CONNS" -m 1 -n "$TLS_NEWCONN_N" -H "Connection: close") ;;
      esac
      run_wait timeout -k 5 $((WARMUP + DURATION + 60)) taskset -c "$LG" h2load -t 1 "${args[@]}" \
        "https://127.0.0.1:$PX/" > "$lf" 2>&1
      local rss; rss=$(rss_kb "$PEER_PID")
      stop_pid "$PEER_PID"
      local rps ok proto
      rps=$(awk '/^finished in/{gsub(",", "", $4); print $4}' "$lf")
      ok=$(awk '/^requests:/{print $8, "succeeded,", $10, "failed"}' "$lf")
      proto=$(awk '/Application protocol:/{print $3}' "$lf")
      local shown=$p; [ "$p" = lb ] && shown=$LB_NAME
      printf '%s\t%s\t%s\t%s\t%s\n' "$kind" "$shown" "${rps:-0}" "${proto:-?}" "${rss% *}" >> "$WORK/tls.tsv"
      echo "$kind $shown: proto=$proto req/s=$rps ($ok) rss=${rss% *}kB" | tee -a "$WORK/tls.md"
    done
  done
  if [ "$TLS_IDLE_N" -gt 0 ]; then
    for p in $peers; do
      start_peer "$p" rr "$PXC" tls || { stop_pid "$PEER_PID"; continue; }
      local shown=$p; [ "$p" = lb ] && shown=$LB_NAME
      run_wait timeout -k 5 300 taskset -c "$LG" python3 "$HERE/idle_conns.py" --tls --port "$PX" \
        --pid "$PEER_PID" -n "$TLS_IDLE_N" --name "$shown" > "$LOGS/tls.idle.$shown.txt" 2>&1
      sed 's/^/idle https /' "$LOGS/tls.idle.$shown.txt" | tee -a "$WORK/tls.md"
      stop_pid "$PEER_PID"
    done
  fi
  # Ratios: Tether / each peer, per kind.
  awk -F'\t' -v lb="$LB_NAME" '{r[$1,$2]=$3; k[$1]=1; p[$2]=1}
    END{for (kk in k) for (pp in p) if (pp != lb && r[kk,pp] > 0 && r[kk,lb] > 0)
      printf "ratio %s %s/%s = %.2f\n", kk, lb, pp, r[kk,lb] / r[kk,pp]}' "$WORK/tls.tsv" | sort | tee -a "$WORK/tls.md"
}

# ---------------------------------------------------------------- main
ensure_tools
ensure_tether
{
  echo "date: $(date -Is)"; echo "host: $(uname -r), $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  echo "wrk: $(wrk --version 2>&1 | head -1)"; echo "haproxy: $(haproxy -v 2>/dev/null | head -1)"
  echo "nginx: $(nginx -v 2>&1)"
  [[ " $PEERS " == *" caddy "* ]] && echo "caddy: $(caddy version 2>/dev/null)"
  echo "peers: $PEERS (at $HICONNS: $HI_PEERS)"
  if [ -n "$LB_CMD" ]; then
    echo "$LB_NAME: $("$TETHER_BIN" --version 2>/dev/null | head -1) ($TETHER_BIN)"
    echo "git: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$REPO" status --porcelain 2>/dev/null | grep -q . && echo ' (dirty)')"
    echo "LB_CMD: $LB_CMD"; echo "LB_STICKY_CMD: $LB_STICKY_CMD"
    echo "TETHER_WORKER_THREADS=${TETHER_WORKER_THREADS:-1} TETHER_ACCESS_LOG=${TETHER_ACCESS_LOG-false} TETHER_EXTRA_TOML=${TETHER_EXTRA_TOML:+set}"
  fi
  echo "settings: QUICK=$QUICK REPS=$REPS DURATION=$DURATION WARMUP=$WARMUP THREADS=$THREADS CONNS=$CONNS HICONNS=$HICONNS HI_STICKY=$HI_STICKY LAYOUTS=[$LAYOUTS] PHASES=[$PHASES] BACKEND_PROCS=$BACKEND_PROCS QUIET_GATE=$QUIET_GATE STEAL_MAX=$STEAL_MAX STEAL_RETRIES=$STEAL_RETRIES"
} | tee "$WORK/env.txt" >&2
log "work dir: $WORK"

layout_cpus "${LAYOUTS%% *}"
start_backends "$BEC"
for ph in $PHASES; do
  case $ph in
    load) phase_load ;;
    idle) phase_idle ;;
    h2) phase_h2 ;;
    tls) phase_tls ;;
    instr) phase_instr ;;
    *) log "unknown phase $ph" ;;
  esac
done
if [ -s "$WORK/sanity.txt" ]; then
  echo; echo "sanity (30 fresh connections each; $WORK/sanity.txt):"; grep -v ': OK' "$WORK/sanity.txt" || echo "  all OK"
fi
rc=0
if grep -q ': FAIL' "$WORK/sanity.txt" 2>/dev/null; then
  log "WARNING: sanity check failed for some scenarios (see above)"; rc=1
fi
if [ -s "$RAW" ] && grep -q $'\tFAIL$' "$RAW"; then
  log "WARNING: some runs failed: $(awk -F'\t' '$4=="FAIL"{print $1"/"$3}' "$RAW" | sort -u | tr '\n' ' ')"; rc=1
fi
log "done; results in $WORK (summary.md raw.tsv sanity.txt env.txt idle.md h2.md logs/ run.*/)"
exit $rc

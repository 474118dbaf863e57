# shellcheck shell=bash
# bench/lib.sh - helpers shared by bench/run.sh, bench/tcp.sh and bench/bigbody.sh. Sourced, not run:
#
#   HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
#   ...the script's knobs, WORK and LOGS...
#   # shellcheck source-path=SCRIPTDIR source=lib.sh
#   . "$HERE/lib.sh" || exit 1
#
# What it holds:
#   processes   PIDS (every long-lived process the script started), descendants, forget_pid,
#               stop_pid, run_wait, cleanup; sourcing sets the traps: EXIT runs cleanup (stops
#               every pid in PIDS, then calls cleanup_extra if the script defines one),
#               INT/TERM exit 130
#   accounting  rss_kb, rss_pids_kb, pin_tree, ticks_tree, uticks_tree, csw_tree, cpu_snap, shell_cticks,
#               busy_ticks, total_ticks, foreign_pct
#   profiling   profile_start, profile_stop (perf record of a process when its name matches PROFILE)
#   machine     quiet_gate, layout_cpus (sets LG BEC PXC), port_free, wait_http
#   install     can_install, apt_install, install_tools
#   Tether      tether_stale, ensure_tether (builds target/release/tether if missing or stale)
#   configs     nginx_common, haproxy_http_head (config lines the scripts' proxies have in common)
#
# Variables the script sets before calling:
#   before sourcing     WORK, LOGS (exist; sourcing installs the EXIT trap, and the script's
#                       cleanup_extra may remove WORK)
#   log files           LOGS: apt.log (apt_install) and build.log (ensure_tether) go there
#   quiet_gate          QUIET_GATE (1 = on), QUIET_BUSY (%), QUIET_WAIT (s); optional
#                       QUIET_WAIT_AFTER_TIMEOUT (s, default 30)
#   install             INSTALL (1 = apt-get install what is missing, when root)
#   ensure_tether       TETHER (1 = a Tether column), BUILD (1 = may run cargo), TETHER_BIN,
#                       TETHER_BIN_GIVEN (non-empty: TETHER_BIN came from outside, never built),
#                       REPO; optional LB_CMD_GIVEN (non-empty: no Tether binary needed)
#   nginx_common        NGINX_WORKER_CONNS
# Nothing here reads the scripts' other knobs or prints to stdout except the helpers' answers;
# progress goes to stderr through log.

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# ---------------------------------------------------------------- processes
declare -a PIDS=()   # every long-lived process we started

descendants() {      # all descendant pids of $1 (recursive)
  local c
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$c"; descendants "$c"
  done
}

forget_pid() {       # drop $1 from PIDS
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

stop_pid() {         # stop one process we started, plus its descendants (nginx workers)
  local pid=$1 kids=() k comm _
  [ -n "$pid" ] || return 0
  for k in $(descendants "$pid"); do
    comm=$(cat "/proc/$k/comm" 2>/dev/null) && kids+=("$k:$comm")
  done
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  for k in "${kids[@]}"; do   # orphans, only if still the same program
    [ "$(cat "/proc/${k%%:*}/comm" 2>/dev/null)" = "${k#*:}" ] && kill -KILL "${k%%:*}" 2>/dev/null
  done
  forget_pid "$pid"
}

run_wait() {         # run "$@" as a tracked child and wait for it: a signal stops it at once
  "$@" &
  local p=$! rc
  PIDS+=("$p")
  wait "$p"; rc=$?
  forget_pid "$p"
  return $rc
}

# shellcheck disable=SC2317  # invoked by the trap
cleanup() {          # EXIT: stop every process in PIDS, then the script's cleanup_extra (if any)
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  if declare -F cleanup_extra >/dev/null; then cleanup_extra; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- accounting
rss_pids_kb() {      # "VmRSS VmHWM" summed over the given pids, not their descendants (kB)
  local r=0 h=0 p a b
  for p in "$@"; do
    read -r a b < <(awk '/^VmRSS/{r=$2} /^VmHWM/{h=$2} END{print r+0, h+0}' "/proc/$p/status" 2>/dev/null || echo "0 0")
    r=$((r + ${a:-0})); h=$((h + ${b:-0}))
  done
  echo "$r $h"
}

rss_kb() {           # "VmRSS VmHWM" summed over $1 and its descendants (kB)
  # shellcheck disable=SC2046  # one pid per word
  rss_pids_kb "$1" $(descendants "$1")
}

pin_tree() {         # re-pin a running process tree to cpu list $2
  local p
  for p in "$1" $(descendants "$1"); do taskset -a -p -c "$2" "$p" >/dev/null 2>&1; done
}

ticks_tree() {       # utime+stime (clock ticks) summed over the given pids and their descendants
  stat_ticks_tree "12 13" "$@"
}

uticks_tree() {      # utime alone (clock ticks): the user-space part of ticks_tree
  stat_ticks_tree 12 "$@"
}

stat_ticks_tree() {  # $1: the /proc/PID/stat fields to sum (counted after the name); then the pids
  local fields=$1 p t=0 x; shift
  for p in "$@"; do
    for x in "$p" $(descendants "$p"); do
      t=$((t + $(sed 's/.*) //' "/proc/$x/stat" 2>/dev/null \
        | awk -v f="$fields" '{n = split(f, k, " "); for (i = 1; i <= n; i++) s += $k[i]} END {print s + 0}') ))
    done
  done
  echo "$t"
}

csw_tree() {         # "voluntary nonvoluntary" context switches over the pids' threads and descendants
  local p x v=0 n=0 a b
  for p in "$@"; do
    for x in "$p" $(descendants "$p"); do
      read -r a b < <(cat /proc/"$x"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt/{v+=$2} /^nonvoluntary_ctxt/{n+=$2} END{print v+0, n+0}')
      v=$((v + ${a:-0})); n=$((n + ${b:-0}))
    done
  done
  echo "$v $n"
}

cpu_snap() { grep -E '^cpu[0-9]+ ' /proc/stat; }
shell_cticks() { sed 's/.*) //' "/proc/$$/stat" | awk '{print $14+$15}'; }  # reaped children
busy_ticks() { echo "$1" | awk '{t+=$2+$3+$4+$7+$8} END{print t+0}'; }      # user+nice+system+irq+softirq
total_ticks() { echo "$1" | awk '{for(i=2;i<=NF;i++) t+=$i} END{print t+0}'; }
steal_pct() {        # $1 $2 cpu snapshots: % of all cpus' time the hypervisor gave other guests
  awk 'NR==FNR{for(i=2;i<=NF;i++) a[$1,i]=$i; next}
       { for(i=2;i<=NF;i++){d=$i-a[$1,i]; t+=d; if(i==9) s+=d} }
       END{ printf "%.1f", (t>0?100*s/t:0) }' <(echo "$1") <(echo "$2")
}
foreign_pct() {      # $1 $2 cpu snapshots, $3 $4 our ticks before/after, $5 $6 reaped children's
  # busy ticks not spent by our processes (load generator, backends, proxy), % of all cpus' time
  echo $(( 100 * ( ($(busy_ticks "$2") - $(busy_ticks "$1")) - ($4 - $3) - ($6 - $5) ) \
           / ($(total_ticks "$2") - $(total_ticks "$1") + 1) ))
}

# ---------------------------------------------------------------- machine
quiet_gate() {       # wait until the machine is idle (other people's builds...), max QUIET_WAIT s
  [ "$QUIET_GATE" = 1 ] || return 0
  local start=$SECONDS a b busy said=0
  while :; do
    a=$(cpu_snap); sleep 1; b=$(cpu_snap)
    busy=$(( 100 * ($(busy_ticks "$b") - $(busy_ticks "$a")) / ($(total_ticks "$b") - $(total_ticks "$a") + 1) ))
    [ "$busy" -le "$QUIET_BUSY" ] && { [ $said = 1 ] && log "machine quiet again after $((SECONDS - start))s"; return 0; }
    if [ $((SECONDS - start)) -ge "$QUIET_WAIT" ]; then
      log "machine still busy (${busy}%) after ${QUIET_WAIT}s; measuring anyway (see the foreign CPU share in the results)"
      QUIET_WAIT=${QUIET_WAIT_AFTER_TIMEOUT:-30}; return 0
    fi
    if [ $said = 0 ]; then
      log "machine busy (${busy}% of all cpus) before a run; waiting. top now: $(top -b -n2 -d0.5 2>/dev/null \
        | awk '/^top -/{n++} n==2 && $1 ~ /^[0-9]+$/ && $12 != "top" {printf "%s %s%%; ", $12, $9; if (++k==3) exit}')"
      said=1
    fi
    sleep 4
  done
}

# shellcheck disable=SC2034  # LG BEC PXC are the caller's
layout_cpus() {      # sets LG (load generator) BEC (backends) PXC (proxy) cpu lists from a layout name
  case $1 in
    A) LG=0; BEC=1; PXC=1 ;;       # load gen alone; server side (proxy + backends) shares CPU1
    B) LG=0; BEC=0; PXC=1 ;;       # proxy alone on CPU1; load gen + backends share CPU0
    U) LG=0-1; BEC=0-1; PXC=0-1 ;; # unpinned
    S) LG=1; BEC=1; PXC=1 ;;       # everything on one cpu: pure cpu-cost ratio, no cross-cpu wakeups
    *:*:*) IFS=: read -r LG BEC PXC <<<"$1" ;;
    *) log "bad layout $1"; exit 1 ;;
  esac
}

port_free() {        # true if nothing listens on TCP port $1 (without ss: if 127.0.0.1:$1 refuses)
  if command -v ss >/dev/null 2>&1; then
    ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
  else
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}

wait_http() {        # until http://127.0.0.1:$1/ answers 200 (timeout $2 s; pid $3 must live)
  local _
  for _ in $(seq 1 $(( ${2:-10} * 10 ))); do
    [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$1/")" = 200 ] && return 0
    [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null && return 1
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- install
can_install() { [ "$INSTALL" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

apt_install() {      # packages...: apt-get install without starting services; 0 if it worked
  local made_policy=0 rc pkg
  if [ ! -e /usr/sbin/policy-rc.d ]; then   # keep apt from starting system services
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  timeout 600 apt-get update -qq >>"$LOGS/apt.log" 2>&1
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y --no-install-recommends "$@" >>"$LOGS/apt.log" 2>&1
  rc=$?
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  for pkg in "$@"; do                          # do not leave them enabled at boot
    case $pkg in nginx|haproxy|caddy)
      DPKG_MAINTSCRIPT_PACKAGE=$pkg deb-systemd-helper disable "$pkg.service" >/dev/null 2>&1 || true ;;
    esac
  done
  return $rc
}

install_tools() {    # COMMAND:PACKAGE...: install the packages of the commands not found (can_install),
  local need=() b    # else say which are missing; the caller then checks what it cannot do without
  for b in "$@"; do
    command -v "${b%%:*}" >/dev/null 2>&1 || [[ " ${need[*]} " == *" ${b#*:} "* ]] || need+=("${b#*:}")
  done
  [ ${#need[@]} -gt 0 ] || return 0
  if can_install; then
    log "installing: ${need[*]} (log: $LOGS/apt.log)"
    apt_install "${need[@]}" || log "apt-get install failed (see $LOGS/apt.log)"
  else
    log "missing: ${need[*]} (not root or INSTALL=0: not installing)"
  fi
}

# ---------------------------------------------------------------- Tether
tether_stale() {     # true if the release binary is missing or older than a source/manifest file
  [ -x "$TETHER_BIN" ] || return 0
  [ -n "$(find "$REPO/crates" "$REPO/Cargo.toml" "$REPO/Cargo.lock" -type f -newer "$TETHER_BIN" \
          -not -path '*/target/*' -print -quit 2>/dev/null)" ]
}

ensure_tether() {    # build target/release/tether if missing or stale; check it runs
  [ "$TETHER" = 1 ] && [ -z "${LB_CMD_GIVEN:-}" ] || return 0
  if tether_stale; then
    if [ "$BUILD" = 1 ] && [ -z "$TETHER_BIN_GIVEN" ]; then
      command -v cargo >/dev/null || { log "FATAL: cargo missing, cannot build $TETHER_BIN"; exit 1; }
      log "building tether (release): cargo build --release -p tether (log: $LOGS/build.log)"
      ( cd "$REPO" && exec cargo build --release -p tether ) >"$LOGS/build.log" 2>&1 &
      local p=$!; PIDS+=("$p")
      wait "$p" || { log "FATAL: cargo build failed; tail of $LOGS/build.log:"; tail -20 "$LOGS/build.log" >&2; exit 1; }
      forget_pid "$p"
    else
      log "WARNING: not building (BUILD=0 or TETHER_BIN given); $TETHER_BIN is missing or older than the sources"
    fi
  fi
  [ -x "$TETHER_BIN" ] || { log "FATAL: $TETHER_BIN not found (TETHER=0 to run the peers only)"; exit 1; }
  timeout 10 "$TETHER_BIN" --version >/dev/null 2>&1 || { log "FATAL: $TETHER_BIN --version failed"; exit 1; }
}

# ---------------------------------------------------------------- configs
nginx_common() {     # $1 dir [$2 worker processes, default 1]: main-context lines of an nginx here
  cat <<EOF
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
worker_processes ${2:-1};
worker_rlimit_nofile $((NGINX_WORKER_CONNS + 1000));
events { worker_connections $NGINX_WORKER_CONNS; }
EOF
}

haproxy_http_head() { # $1 nbthread $2 maxconn: HAProxy's global section and `mode http` defaults
  cat <<EOF
global
  nbthread $1
  maxconn $2
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-request 300s
  timeout http-keep-alive 300s
EOF
}

# ---------------------------------------------------------------- profiling
# profile_start NAME FILE PID: when NAME matches the regex PROFILE, `perf record` samples PID
# (PROFILE_HZ, default 499 Hz, DWARF call graphs) into FILE until profile_stop.
profile_start() {
  PROFILE_PID=""
  if [ -n "${PROFILE:-}" ] && [[ $1 =~ $PROFILE ]]; then
    perf record -q -F "${PROFILE_HZ:-499}" --call-graph dwarf,16384 -o "$2" -p "$3" >/dev/null 2>&1 &
    PROFILE_PID=$!
  fi
}

profile_stop() {
  if [ -n "${PROFILE_PID:-}" ]; then kill -INT "$PROFILE_PID" 2>/dev/null; wait "$PROFILE_PID" 2>/dev/null; fi
  PROFILE_PID=""
}

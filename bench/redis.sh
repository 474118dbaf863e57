#!/usr/bin/env bash
# bench/redis.sh — header affinity with store = "memory" vs store = "redis", same backends,
# same pinning (Tether + backends on cpu1, wrk + Redis on cpu0), wrk with 20,000 distinct
# session ids. Prints req/s of each, their ratio, and Redis commands per request.
#   bash bench/redis.sh            # REPS=3 DURATION=8 KEYS=20000 CONNS=50
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}; DURATION=${DURATION:-8}; KEYS=${KEYS:-20000}; CONNS=${CONNS:-50}
BASE=${BASE_PORT:-18400}
WORK=$(mktemp -d /tmp/tether-redis-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

for tool in wrk nginx redis-server redis-cli; do
  command -v "$tool" >/dev/null || { [ "$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx redis-server >/dev/null; break; }
done
[ -x target/release/tether ] || cargo build --release -p tether

mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<NGINX
daemon off; pid $WORK/nginx/nginx.pid; error_log $WORK/nginx/error.log warn; worker_processes 1;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx; fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  server { listen 127.0.0.1:$((BASE+1)); location / { return 200 "hello b1\n"; } }
  server { listen 127.0.0.1:$((BASE+2)); location / { return 200 "hello b2\n"; } }
  server { listen 127.0.0.1:$((BASE+3)); location / { return 200 "hello b3\n"; } } }
NGINX
taskset -c 1 nginx -c "$WORK/nginx/nginx.conf" & pids+=($!)
taskset -c 0 redis-server --port $((BASE+9)) --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >/dev/null & pids+=($!)
for _ in $(seq 50); do redis-cli -p $((BASE+9)) ping >/dev/null 2>&1 && break; sleep 0.1; done

cat > "$WORK/keys.lua" <<LUA
request = function()
  return wrk.format("GET", "/", { ["X-Session-Id"] = "user-" .. math.random(1, $KEYS) })
end
LUA
key=$(head -c 32 /dev/urandom | base64)
for store in memory redis; do
  redis_lines=""
  [ $store = redis ] && redis_lines="redis_url = \"redis://127.0.0.1:$((BASE+9))\""
  cat > "$WORK/$store.toml" <<TOML
access_log = false
[[listeners]]
name = "bench"
address = "127.0.0.1:$((BASE+10))"
default_backend = "app"
[backends.app]
balance = "least_conn"
[backends.app.sticky]
mode = "header"
header = "X-Session-Id"
[[backends.app.servers]]
name = "b1"
address = "127.0.0.1:$((BASE+1))"
[[backends.app.servers]]
name = "b2"
address = "127.0.0.1:$((BASE+2))"
[[backends.app.servers]]
name = "b3"
address = "127.0.0.1:$((BASE+3))"
[secrets]
cookie_keys = ["$key"]
[stick_table]
store = "$store"
$redis_lines
TOML
done

printf '%-8s %-4s %10s %10s %12s\n' store rep req/s requests redis_cmds/req
for rep in $(seq "$REPS"); do
  for store in memory redis; do
    redis-cli -p $((BASE+9)) flushall >/dev/null; redis-cli -p $((BASE+9)) config resetstat >/dev/null
    TETHER_WORKER_THREADS=1 taskset -c 1 target/release/tether --log-level warn run -c "$WORK/$store.toml" > "$WORK/$store.log" 2>&1 &
    tp=$!
    for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$((BASE+10))/" && break; sleep 0.1; done
    out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$WORK/keys.lua" "http://127.0.0.1:$((BASE+10))/")
    kill "$tp"; wait "$tp" 2>/dev/null || true
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    cmds=$(redis-cli -p $((BASE+9)) info commandstats | awk -F'[=,:]' '/^cmdstat_/ && !/config|flushall|info|ping/ {s+=$3} END {print s+0}')
    printf '%-8s %-4s %10s %10s %12.4f\n' "$store" "$rep" "$rps" "$reqs" "$(python3 -c "print($cmds/max($reqs,1))")"
    echo "$store $rps" >> "$WORK/results"
  done
done
python3 - "$WORK/results" <<'PY'
import statistics, sys
r = {}
for line in open(sys.argv[1]):
    s, v = line.split(); r.setdefault(s, []).append(float(v))
m, d = statistics.median(r["memory"]), statistics.median(r["redis"])
print(f"median req/s: memory {m:.0f}, redis {d:.0f}; redis/memory = {d/m:.2f} (target >= 0.8)")
PY

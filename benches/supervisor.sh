#!/usr/bin/env bash
# Measures the supervisor, with the release binary on 127.0.0.1:
#   1. requests and failures during 20 SIGHUP reloads under wrk -c64 keep-alive load, and
#      under a one-request-per-connection load (wrk with Connection: close);
#   2. the time from a worker's death (kill -9) to its replacement's Ready, over 20 kills;
#   3. the per-worker request split under wrk -c64 in both listen modes.
# Needs wrk (apt-get install wrk). Usage: benches/supervisor.sh [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
port=${1:-18080}
cargo build --release --quiet
bin=target/release/ringmaster
log=$(mktemp)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -f "$log"' EXIT

start() { # start MODE [FLAGS]: starts a master in the background, waits for its workers
  : > "$log"
  local mode=$1; shift
  $bin --listen 127.0.0.1:$port --listen-mode "$mode" "$@" 2>>"$log" &
  master=$!
  local workers
  until grep -q "listening on" "$log"; do sleep 0.05; done
  workers=$(grep "listening on" "$log" | sed 's/.*(\([0-9]*\) workers.*/\1/')
  until [ "$(grep -c 'ready (pid' "$log")" -ge "$workers" ]; do sleep 0.05; done
}
stop() { kill -TERM $master; wait $master || true; }
count() { grep -c "$1" "$log" || true; }
ms() { # milliseconds since midnight of a log line's timestamp
  local t=${1:11:12}; echo $(( (10#${t:0:2}*3600 + 10#${t:3:2}*60 + 10#${t:6:2})*1000 + 10#${t:9:3} ))
}

reloads_under() { # reloads_under LABEL WRK_ARGS...: 20 SIGHUP reloads during a wrk run
  local label=$1; shift
  start reuseport
  wrk "$@" http://127.0.0.1:$port/ > "$log.wrk" &
  local wrk_pid=$! before
  sleep 1
  for _ in $(seq 20); do
    before=$(count "reload complete")
    kill -HUP $master
    until [ "$(count 'reload complete')" -gt "$before" ]; do sleep 0.01; done
  done
  wait $wrk_pid
  local sent errors non2xx
  sent=$(grep "requests in" "$log.wrk" | awk '{print $1}')
  errors=$(grep "Socket errors" "$log.wrk" | sed 's/.*Socket errors: //' || true)
  non2xx=$(grep "Non-2xx" "$log.wrk" | awk '{print $NF}' || true)
  echo "$label: $sent requests during 20 reloads; socket errors: ${errors:-none}; non-2xx: ${non2xx:-0}"
  stop
}

echo "== 1. reloads under load"
reloads_under "keep-alive (wrk -t1 -c64)" -t1 -c64 -d6s
reloads_under "one request per connection (wrk -t1 -c64, Connection: close)" -t1 -c64 -d6s -H "Connection: close"

echo "== 2. worker death to replacement ready, 20 kills"
# Each kill follows a healthy run (--min-uptime 0.1), so every respawn is immediate: this
# measures the supervisor's reaction, not the crash-loop backoff.
start reuseport --min-uptime 0.1 --respawn-failures-max 1000
for i in $(seq 20); do
  sleep 0.15
  pid=$(grep "worker 0 started" "$log" | tail -1 | sed 's/.*pid \([0-9]*\),.*/\1/')
  before=$(count "worker 0 ready")
  kill -9 "$pid"
  until [ "$(count 'worker 0 ready')" -gt "$before" ]; do sleep 0.01; done
done
exits=$(grep "worker 0 exited" "$log"); readies=$(grep "worker 0 ready" "$log" | tail -n +2)
paste <(echo "$exits") <(echo "$readies") | while IFS=$'\t' read -r e r; do
  echo $(( $(ms "$r") - $(ms "$e") ))
done | sort -n | awk '{a[NR]=$1} END {printf "death to ready (ms): median %s, min %s, max %s over %d kills\n", a[int((NR+1)/2)], a[1], a[NR], NR}'
stop

echo "== 3. per-worker split under wrk -t1 -c64 -d5s"
for mode in reuseport shared; do
  start $mode
  wrk -t1 -c64 -d5s http://127.0.0.1:$port/ | grep "Requests/sec" | sed "s/^/$mode: /"
  sleep 1.2 # one stats report
  $bin status --listen 127.0.0.1:$port | sed "s/^/$mode: /"
  stop
done

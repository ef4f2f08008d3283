#!/usr/bin/env bash
# Slow readers against large responses: slowhttptest's slow-read attack (-X) with CONNS
# connections on a 1 MiB response of the testbed example, with the release build on
# 127.0.0.1. Prints the workers' peak resident memory (sampled every 0.5 s) and whether
# slowhttptest saw the service available throughout.
# Needs slowhttptest (apt-get install slowhttptest).
# Usage: benches/slowread.sh [TESTBED_BINARY] [CONNS] [SECONDS]
#   TESTBED_BINARY defaults to target/release/examples/testbed (built here), so that an
#   older build can be measured the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
conns=${2:-2000}
secs=${3:-60}
if [ -z "$bin" ]; then
  cargo build --release --quiet --example testbed
  bin=target/release/examples/testbed
fi
ulimit -n "$(ulimit -Hn)"
log=$(mktemp)
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$log" "$out"' EXIT
"$bin" --listen 127.0.0.1:0 --workers 2 2>"$log" &
master=$!
until grep -q "listening on" "$log"; do sleep 0.05; done
until [ "$(grep -c 'ready (pid' "$log")" -ge 2 ]; do sleep 0.05; done
addr=$(grep -o 'listening on [^ ]*' "$log" | cut -d' ' -f3)
workers=$(cat /proc/$master/task/$master/children)
rss() { # the workers' resident memory now, in KiB: "LARGEST TOTAL"
  local best=0 total=0 kib
  for pid in $workers; do
    kib=$(awk '/^VmRSS:/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
    best=$(( best > kib ? best : kib ))
    total=$(( total + kib ))
  done
  echo "$best $total"
}
tcp_pages() { awk '/^TCP:/ {print $NF}' /proc/net/sockstat; }
read -r before _ < <(rss)
slowhttptest -X -c "$conns" -r 200 -l "$secs" -w 512 -y 1024 -n 5 -z 32 -k 1 -p 3 \
  -u "http://$addr/big?kb=1024" -g -o "$out/slow" >"$out/stdout" 2>&1 &
tool=$!
max=0 max_total=0 max_tcp=0 sum_total=0 samples=0
while kill -0 $tool 2>/dev/null; do
  read -r one total < <(rss)
  sum_total=$(( sum_total + total )) samples=$(( samples + 1 ))
  tcp=$(tcp_pages)
  max=$(( max > one ? max : one ))
  max_total=$(( max_total > total ? max_total : total ))
  max_tcp=$(( max_tcp > tcp ? max_tcp : tcp ))
  sleep 0.5
done
read -r after _ < <(rss)
echo "worker RSS: before ${before} KiB, peak ${max} KiB (one worker), ${max_total} KiB (all), mean $(( sum_total / (samples > 0 ? samples : 1) )) KiB (all), after ${after} KiB"
echo "host TCP memory peak: $(( max_tcp * 4 )) KiB ($(( max_tcp )) pages)"
grep -E "service available|closed|connected" "$out/stdout" | tail -4 || true
unavailable=$(awk -F, 'NR > 1 && $5 == 0' "$out/slow.csv" 2>/dev/null | wc -l)
echo "seconds with the service unavailable (slowhttptest's probe): $unavailable"
kill -TERM $master
wait $master || true

#!/usr/bin/env bash
# Deploys 20 new builds under load, the way a user does: the release `deploy` example
# (examples/deploy.rs, answering the version marked in its binary) runs from a temporary
# path; each round writes a new build beside it (the mark patched, v1 and v2 in turn), renames
# it over the path and runs `ringmaster reload`, while wrk -t1 -c64 keeps 64 keep-alive
# connections busy (and, second pass, a new connection per request). Prints the requests
# served, wrk's socket errors and non-2xx answers, each reload's time from the command to its
# answer (the new generation ready and the old one gone), and the version answering after
# each reload. Needs wrk. Usage: benches/upgrade.sh [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
port=${1:-18090}
cargo build --release --quiet --example deploy --bin ringmaster
cli=target/release/ringmaster
dir=$(mktemp -d)
log=$dir/log
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT

put() { # put VERSION: a new build at $dir/app, written beside it and renamed over it
  python3 - "$1" "$dir" <<'EOF'
import os, sys
version, dir = sys.argv[1].encode(), sys.argv[2]
data = open("target/release/examples/deploy", "rb").read()
mark = b"RINGMASTER_DEPLOY_MARK=="
at = data.index(mark) + len(mark)
data = data[:at] + version + data[at + 2:]
with open(dir + "/app.next", "wb") as f:
    f.write(data)
os.chmod(dir + "/app.next", 0o755)
os.rename(dir + "/app.next", dir + "/app")
EOF
}

upgrades_under() { # upgrades_under LABEL WRK_ARGS...
  local label=$1; shift
  : > "$log"
  put v1
  "$dir/app" --listen 127.0.0.1:$port 2>>"$log" &
  local master=$!
  until [ "$(grep -c 'ready (pid' "$log")" -ge 2 ]; do sleep 0.05; done
  wrk "$@" http://127.0.0.1:$port/ > "$dir/wrk" &
  local wrk_pid=$!
  sleep 1
  local times=() seen=() version answer start end
  for i in $(seq 20); do
    version=$([ $((i % 2)) -eq 1 ] && echo v2 || echo v1)
    put "$version"
    start=$(date +%s%N)
    answer=$($cli reload --listen 127.0.0.1:$port)
    end=$(date +%s%N)
    case $answer in ok:*) ;; *) echo "reload $i failed: $answer"; exit 1 ;; esac
    times+=($(( (end - start) / 1000000 )))
    seen+=("$(curl -s http://127.0.0.1:$port/)")
  done
  wait $wrk_pid
  local sent errors non2xx
  sent=$(grep "requests in" "$dir/wrk" | awk '{print $1}')
  errors=$(grep "Socket errors" "$dir/wrk" | sed 's/.*Socket errors: //' || true)
  non2xx=$(grep "Non-2xx" "$dir/wrk" | awk '{print $NF}' || true)
  echo "$label: $sent requests during 20 upgrades; socket errors: ${errors:-none}; non-2xx: ${non2xx:-0}"
  echo "  reload to answer (ms), in order: ${times[*]}"
  echo "  sorted: $(printf '%s\n' "${times[@]}" | sort -n | tr '\n' ' ')"
  echo "  answering after each reload: ${seen[*]}"
  kill -TERM $master
  wait $master || true
}

upgrades_under "keep-alive (wrk -t1 -c64)" -t1 -c64 -d12s
upgrades_under "one request per connection (wrk -t1 -c64, Connection: close)" -t1 -c64 -d12s -H "Connection: close"

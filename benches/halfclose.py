#!/usr/bin/env python3
"""A flood of half-closed partial requests against a running ringmaster on loopback.

Each attacking connection comes from one of several source addresses (127.0.0.2 and up),
sends 2 bytes (an empty line: the start of a request that never comes), shuts its sending
side and closes, keeping nothing open. Meanwhile a probe asks GET / every 100 ms. Then the
server's CLOSE-WAIT sockets (from /proc/net/tcp) and its open connections (from
`ringmaster status --json`) are followed until both are 0, for at most WAIT seconds.

Usage: benches/halfclose.py PORT [CONNECTIONS] [SOURCES] [WAIT] [RINGMASTER]
"""
import json
import socket
import subprocess
import sys
import threading
import time

port = int(sys.argv[1])
count = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
sources = int(sys.argv[3]) if len(sys.argv) > 3 else 8
wait = float(sys.argv[4]) if len(sys.argv) > 4 else 20
ringmaster = sys.argv[5] if len(sys.argv) > 5 else "target/release/ringmaster"


def close_wait():
    """Sockets whose local port is `port` in CLOSE-WAIT (state 08)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "08":
                    n += 1
    return n


def open_connections():
    out = subprocess.run(
        [ringmaster, "status", "--json", "--listen", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=10,
    ).stdout
    try:
        status = json.loads(out)
    except ValueError:
        return None
    return status["totals"]["connections"] if "totals" in status else sum(
        w["connections"] for w in status["workers"])


probe = {"ok": 0, "failed": 0}
stop = threading.Event()


def prober():
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
                answer = s.recv(64)
                probe["ok" if answer.startswith(b"HTTP/1.1 200") else "failed"] += 1
        except OSError:
            probe["failed"] += 1
        time.sleep(0.1)


thread = threading.Thread(target=prober)
thread.start()
started = time.monotonic()
refused = 0
for i in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((f"127.0.0.{2 + i % sources}", 0))
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"\r\n")
        s.shutdown(socket.SHUT_WR)
    except OSError:
        refused += 1
    s.close()
flood = time.monotonic() - started
print(f"flood: {count} half-closed partial requests from {sources} addresses in "
      f"{flood:.1f}s ({refused} failed to connect)")
after = time.monotonic()
seen = []
while True:
    cw, conns = close_wait(), open_connections()
    seen.append((time.monotonic() - after, cw, conns))
    if cw == 0 and conns == 0:
        break
    if time.monotonic() - after > wait:
        break
    time.sleep(0.5)
stop.set()
thread.join()
for t, cw, conns in seen[:: max(1, len(seen) // 8)] + seen[-1:]:
    print(f"  {t:5.1f}s after the flood: {cw} CLOSE-WAIT, {conns} open connections")
last_t, last_cw, last_conns = seen[-1]
verdict = "none left" if last_cw == 0 and last_conns == 0 else "LEFT BEHIND"
print(f"result: {verdict} after {last_t:.1f}s; probes during and after: "
      f"{probe['ok']} answered, {probe['failed']} failed")

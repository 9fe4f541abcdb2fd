#!/usr/bin/env bash
# Interleaved A/B of two `bonopay` binaries on the same workloads, to judge
# a change of the HTTP front (issue 15: server::listen replaced
# axum::serve). Usage: benches/listener_ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
# Prints one line per run; compare the medians per binary. Each run gets a
# fresh data directory (SQLite, software key), 8 connections, 2 wrk threads.
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 new=$2 rounds=${3:-3}
secs=${BONOPAY_AB_SECS:-10}
run() {
  local label=$1 bin=$2 tmp port key out
  tmp=$(mktemp -d)
  printf '{"nid":"BONOPAY-AB-0001","time_zone":"Africa/Kinshasa"}' > "$tmp/config.json"
  "$bin" serve --data-dir "$tmp" --listen 127.0.0.1:0 > "$tmp/log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do grep -q "listening on" "$tmp/log" && break; sleep 0.1; done
  port=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$tmp/log")
  key=$(sed -n 's/.*(shown once, keep it): //p' "$tmp/log" | head -1)
  out=$(wrk -t2 -c8 -d"${secs}s" http://127.0.0.1:$port/healthz | sed -n 's/Requests\/sec: *//p')
  printf '%s healthz %s/s\n' "$label" "$out"
  printf '%s seal    ' "$label"
  BONOPAY_KEY=$key wrk -t2 -c8 -d"${secs}s" -s benches/wrk/post_invoice.lua \
    http://127.0.0.1:$port/v1/invoices | tail -1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
for r in $(seq 1 "$rounds"); do
  if (( r % 2 )); then run A "$old"; run B "$new"; else run B "$new"; run A "$old"; fi
done

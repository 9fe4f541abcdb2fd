#!/usr/bin/env bash
# Latency of `POST /v1/invoices` with DGI certification on (an outlet in
# mode `emcf`, certified inline against `bonopay dgi-sim` over loopback)
# and off (mode `none`), measured with wrk against a release `bonopay
# serve`, interleaved A/B (off, on, off, on) because this machine drifts.
#
#   cargo build --release --bin bonopay
#   benches/certify_latency.sh [SECONDS] [CONNECTIONS]
#
# Prints one line per run; BENCHMARKS.md records them.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BONOPAY_BIN:-${CARGO_TARGET_DIR:-target}/release/bonopay}"
SECS="${1:-15}"
CONN="${2:-1}"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

"$BIN" dgi-sim --listen 127.0.0.1:0 >"$WORK/sim.log" 2>&1 &
for _ in $(seq 1 100); do grep -q 'bearer token' "$WORK/sim.log" && break; sleep 0.1; done
SIM_URL="$(sed -n 's#.*listening on \(http://[^/]*\)/api.*#\1#p' "$WORK/sim.log")"
TOKEN="$(sed -n 's/.*bearer token for NIF [^ ]* (valid [^)]*): //p' "$WORK/sim.log")"

run() { # mode run
  local mode="$1" n="$2" dir="$WORK/data-$1-$2" log="$WORK/serve-$1-$2.log"
  if [ "$mode" = emcf ]; then
    BONOPAY_DGI_URL="$SIM_URL" BONOPAY_DGI_TOKEN="$TOKEN" \
      "$BIN" serve --data-dir "$dir" --listen 127.0.0.1:0 >"$log" 2>&1 &
  else
    "$BIN" serve --data-dir "$dir" --listen 127.0.0.1:0 >"$log" 2>&1 &
  fi
  local pid=$!
  for _ in $(seq 1 100); do grep -q 'listening on' "$log" && break; sleep 0.1; done
  local url key
  url="$(sed -n 's/^bonopay: listening on //p' "$log")"
  key="$(sed -n 's/.*(shown once, keep it): //p' "$log")"
  local out
  out="$(BONOPAY_KEY="$key" wrk -t1 -c"$CONN" -d"${SECS}s" --latency \
    -s benches/wrk/post_invoice.lua "$url/v1/invoices" | tail -1)"
  local certified=""
  if [ "$mode" = emcf ]; then
    certified="$(curl -s "$url/v1/sync/health" -H "Authorization: Bearer $key" \
      | python3 -c 'import json,sys; h=json.load(sys.stdin); print(sum(o["counts"].get("synced",0) for o in h["outlets"]))')"
    certified=", certified at the end: $certified"
  fi
  echo "certification $mode (run $n, $CONN connection(s), ${SECS}s): $out$certified"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

for n in 1 2; do
  run none "$n"
  run emcf "$n"
done

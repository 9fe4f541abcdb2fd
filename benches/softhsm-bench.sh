#!/usr/bin/env bash
# Runs the seal benches with a throwaway SoftHSM2 token directory. The bench
# creates the token (bono-bench) and a non-extractable P-256 key (bono-seal)
# through PKCS#11 on first use; the PINs travel in the environment only.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/tokens"
cat > "$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
export SOFTHSM2_CONF="$dir/softhsm2.conf"
# Throwaway token: fixed PINs are fine here, and they stay off command lines.
export BONOPAY_BENCH_PIN=1234
export BONOPAY_BENCH_SO_PIN=12345678
cargo bench -p bonopay-benches --bench seal -- "$@"

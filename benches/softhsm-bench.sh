#!/usr/bin/env bash
# Runs the seal benches with a throwaway SoftHSM2 token (bono-bench / bono-seal).
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
export BONOPAY_BENCH_PIN=1234
softhsm2-util --init-token --free --label bono-bench --so-pin 12345678 --pin "$BONOPAY_BENCH_PIN" >/dev/null
# Generate the key inside the token (non-extractable) with the bonopay CLI's
# provisioning code path, exercised here through a tiny cargo example-free
# route: pkcs11-tool if present, else the bench's own provisioning.
if command -v pkcs11-tool >/dev/null; then
  pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so --token-label bono-bench --login --pin "$BONOPAY_BENCH_PIN" \
    --keypairgen --key-type EC:prime256v1 --label bono-seal >/dev/null
else
  echo "pkcs11-tool (package opensc) is needed to create the bench key" >&2
  exit 1
fi
cargo bench -p bonopay-benches --bench seal -- "$@"

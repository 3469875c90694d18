#!/usr/bin/env bash
# What a verified credential costs a Check (BENCHMARKS.md): the same release server on the
# bundled policies with one configured issuer (ES256 keys in a JWKS file), measured by the load
# generator in the same run: Checks without a credential, then with the same valid JWT on each,
# cached (hit ratio 1, 16 in flight) and uncached (hit ratio 0, one in flight). The key and the
# token are made for the run with Python's `cryptography` (in a virtual environment of its own).
# Usage: scripts/bench-credentials.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
cargo build --release --quiet
W=$PWD/target/release/warrant
B=$PWD/target/release/warrant-bench
work=$(mktemp -d)
trap 'rm -rf "$work"; kill $(jobs -p) 2>/dev/null || true' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check cryptography==46.0.3
"$work/venv/bin/python" - "$work" <<'PY'
import base64, json, pathlib, sys, time
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
out = pathlib.Path(sys.argv[1])
b64 = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=").decode()
key = ec.generate_private_key(ec.SECP256R1())
numbers = key.public_key().public_numbers()
jwk = {"kty": "EC", "crv": "P-256", "kid": "bench", "alg": "ES256",
       "x": b64(numbers.x.to_bytes(32, "big")), "y": b64(numbers.y.to_bytes(32, "big"))}
(out / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
header = b64(json.dumps({"alg": "ES256", "typ": "JWT", "kid": "bench"}).encode())
claims = b64(json.dumps({"iss": "https://issuer.bench", "sub": "pipeline-etl", "aud": "warrant",
                         "exp": int(time.time()) + 3600}).encode())
r, s = decode_dss_signature(key.sign(f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256())))
(out / "token").write_text(f"{header}.{claims}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}")
PY
cat > "$work/warrant.toml" <<TOML
[[credentials.issuers]]
issuer = "https://issuer.bench"
jwks_file = "$work/jwks.json"
audiences = ["warrant"]
algorithms = ["ES256"]
principal = "ApiKey::{sub}"
TOML
"$W" serve --config "$work/warrant.toml" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --admin-listen 127.0.0.1:0 --authzen-listen 127.0.0.1:0 --console-listen 127.0.0.1:0 --data-dir "$work/data" \
  --policies policies > "$work/out" 2> "$work/err" &
pid=$!
until grep -q "listening on" "$work/out" 2>/dev/null; do
  kill -0 $pid 2>/dev/null || { cat "$work/err"; exit 1; }
  sleep 0.05
done
addr=$(sed -n 's/warrant listening on //p' "$work/out")
for load in "--hit-ratio 1 --concurrency 16" "--hit-ratio 0 --concurrency 1 --connections 1"; do
  for credential in none jwt; do
    extra=()
    [ "$credential" = jwt ] && extra=(--credential "$(cat "$work/token")")
    # shellcheck disable=SC2086
    report=$("$B" --server "http://$addr" --principal ApiKey::pipeline-etl --action read \
      --resource Dataset::sales-2026 --approval "" $load --duration "$seconds" --json "${extra[@]}")
    python3 - "$credential" "$load" "$report" <<'PY'
import json, sys
credential, load, report = sys.argv[1:]
r = json.loads(report)
l = r["latency_us"]
print(f"{credential:5} {load:45} req_s={r['requests_per_second']:.0f} p50_us={l['p50']} "
      f"p99_us={l['p99']} decisions={r['decisions']} errors={r['errors']}")
PY
  done
done

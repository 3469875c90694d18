#!/usr/bin/env bash
# What TLS costs a Check (BENCHMARKS.md): the same release server on the bundled policies, in
# plaintext, with TLS, and with mutual TLS, each measured by the load generator in the same run:
# cached Checks with 16 in flight, then uncached Checks one at a time. Certificates are made for
# the run with Python's `cryptography` (in a virtual environment of its own).
# Usage: scripts/bench-tls.sh [seconds]
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
import datetime, ipaddress, pathlib, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
out = pathlib.Path(sys.argv[1])
now = datetime.datetime.now(datetime.timezone.utc)
def cert(name, key, signer, issuer, sans=None, ca=False):
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
ca_key = ec.generate_private_key(ec.SECP256R1())
(out / "ca.pem").write_bytes(cert("bench CA", ca_key, ca_key, "bench CA", ca=True))
for name, sans in [("server", [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                   ("client", [x509.UniformResourceIdentifier("spiffe://bench.example/ns/edge/sa/envoy")])]:
    key = ec.generate_private_key(ec.SECP256R1())
    (out / f"{name}.pem").write_bytes(cert(name, key, ca_key, "bench CA", sans))
    (out / f"{name}.key").write_bytes(key_pem(key))
PY
run() {
  local mode=$1; shift
  local data="$work/data-$mode"
  "$W" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --authzen-listen 127.0.0.1:0 --console-listen 127.0.0.1:0 --data-dir "$data" --policies policies "$@" \
    > "$work/out" 2> "$work/err" &
  local pid=$!
  until grep -q "listening on" "$work/out" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$work/err"; exit 1; }
    sleep 0.05
  done
  local addr scheme=http client=()
  addr=$(sed -n 's/warrant listening on //p' "$work/out")
  if [ "$mode" != plaintext ]; then
    scheme=https
    client=(--tls-ca "$work/ca.pem")
    if [ "$mode" = mtls ]; then
      client+=(--client-cert "$work/client.pem" --client-key "$work/client.key")
    fi
  fi
  # 127.0.0.1 is in the server certificate's SANs, so the address is also the name checked.
  for load in "--hit-ratio 1 --concurrency 16" "--hit-ratio 0 --concurrency 1 --connections 1"; do
    # shellcheck disable=SC2086
    report=$("$B" --server "$scheme://$addr" "${client[@]}" --principal ApiKey::pipeline-etl \
      --action read --resource Dataset::sales-2026 --approval "" $load --duration "$seconds" --json)
    python3 - "$mode" "$load" "$report" <<'PY'
import json, sys
mode, load, report = sys.argv[1:]
r = json.loads(report)
l = r["latency_us"]
print(f"{mode:9} {load:45} req_s={r['requests_per_second']:.0f} p50_us={l['p50']} "
      f"p99_us={l['p99']} errors={r['errors']}")
PY
  done
  kill $pid; wait $pid 2>/dev/null || true
}
run plaintext
run tls --tls-cert "$work/server.pem" --tls-key "$work/server.key"
run mtls --tls-cert "$work/server.pem" --tls-key "$work/server.key" --tls-client-ca "$work/ca.pem"

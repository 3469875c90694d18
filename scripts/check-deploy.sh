#!/usr/bin/env bash
# Checks the deployment files a platform team takes from the project:
# - deploy/kubernetes: rendered with `kubectl kustomize`, and every object validated strictly
#   (unknown fields are errors) against the Kubernetes API schemas of the kubectl here, with
#   kubernetes-validate (`kubectl apply --dry-run=client` would need an API server to ask);
# - deploy/systemd/warrant.service: `systemd-analyze verify` (no unknown key, the command runs)
#   and `systemd-analyze security` (the sandbox's exposure at most 2.0 of 10);
# - examples/envoy/make-certs.sh: its certificates pass a mutual-TLS handshake with Warrant,
#   the workload's SPIFFE ID recorded as the caller;
# - Containerfile: built and run (scripts/test-container.sh).
# Usage: scripts/check-deploy.sh [BINARY]   (default target/debug/warrant)
set -euo pipefail
cd "$(dirname "$0")/.."
given="${1:-target/debug/warrant}"
binary="$(realpath "$given")"
validate=.venv/bin/kubernetes-validate

if ! command -v systemd-analyze > /dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd > /dev/null
  else
    echo "check-deploy: systemd-analyze is missing (apt-get install systemd)" >&2
    exit 1
  fi
fi
# kubectl comes with the machine's image here; Debian's own archive may not carry it.
if ! command -v kubectl > /dev/null && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubectl \
    > /dev/null 2>&1 || true
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if command -v kubectl > /dev/null; then
  kubectl kustomize deploy/kubernetes > "$work/kubernetes.yaml"
  version=$(kubectl version --client -o json | python3 -c \
    'import json,sys; v=json.load(sys.stdin)["clientVersion"]; print(v["major"]+"."+v["minor"].rstrip("+"))')
  how="renders"
else
  # Without kustomize, the objects as written (no namespace or image set), against the schemas
  # of the Kubernetes the manifests are written for.
  echo "check-deploy: kubectl is missing; validating deploy/kubernetes as written" >&2
  for file in namespace statefulset services poddisruptionbudget; do
    cat "deploy/kubernetes/$file.yaml"
    printf '\n---\n'
  done > "$work/kubernetes.yaml"
  version=1.32
  how="holds"
fi
"$validate" --strict --quiet --kubernetes-version "$version" "$work/kubernetes.yaml"
echo "check-deploy: deploy/kubernetes $how $(grep -c '^kind:' "$work/kubernetes.yaml") objects, valid for Kubernetes $version"

sed "s|/usr/local/bin/warrant|$binary|" deploy/systemd/warrant.service > "$work/warrant.service"
said=$(systemd-analyze verify --man=no "$work/warrant.service" 2>&1)
if [ -n "$said" ]; then
  echo "check-deploy: systemd-analyze verify: $said" >&2
  exit 1
fi
systemd-analyze security --offline=true --threshold=20 "$work/warrant.service" > "$work/security.txt" 2>&1 \
  || { tail -5 "$work/security.txt" >&2; exit 1; }
echo "check-deploy: deploy/systemd/warrant.service verifies; $(grep -o 'Overall exposure level.*' "$work/security.txt")"

examples/envoy/make-certs.sh "$work/envoy-tls" > /dev/null
tls="$work/envoy-tls"
"$binary" serve --policies policies --data-dir "$work/data" --listen 127.0.0.1:0 \
  --admin-listen 127.0.0.1:0 --authzen-listen 127.0.0.1:0 --console-listen 127.0.0.1:0 \
  --metrics-listen 127.0.0.1:0 --tls-cert "$tls/server.crt" --tls-key "$tls/server.key" \
  --tls-client-ca "$tls/workload-ca.crt" > "$work/serve.out" 2> "$work/serve.err" &
server=$!
trap 'kill "$server" 2> /dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  grep -q "^warrant listening on" "$work/serve.out" && break
  kill -0 "$server" 2> /dev/null || { cat "$work/serve.err" >&2; exit 1; }
  sleep 0.1
done
port=$(sed -n 's/^warrant listening on .*://p' "$work/serve.out")
"$binary" check --server "https://localhost:$port" --tls-ca "$tls/workload-ca.crt" \
  --client-cert "$tls/deploy-bot.crt" --client-key "$tls/deploy-bot.key" --output json \
  --principal ServiceAccount::deploy-bot --action update --resource Config::payments-api \
  --approval CHG-1042 > "$work/check.json"
decision=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["decision_id"])' < "$work/check.json")
"$binary" log --data-dir "$work/data" show "$decision" --output json \
  | grep -q '"caller_identity": "spiffe://prod.example.com/ns/deploy/sa/deploy-bot"' \
  || { echo "check-deploy: the workload's SPIFFE ID is not the recorded caller" >&2; exit 1; }
kill "$server"
wait "$server" 2> /dev/null || true
trap 'rm -rf "$work"' EXIT
echo "check-deploy: examples/envoy/make-certs.sh: mutual TLS with the workload's SPIFFE ID as the caller"

scripts/test-container.sh "$given"

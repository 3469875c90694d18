#!/usr/bin/env bash
# Makes the certificates the Envoy example reads from /etc/envoy/tls (envoy.yaml), for trying it
# on one machine: a CA for the workloads, Envoy's server certificate (for `localhost` and
# `payments.internal`), and a client certificate for the deployment agent whose URI SAN is its
# SPIFFE ID, as its `spiffe_id` in policies/entities.json says. Not for production: a real
# deployment takes these from its SPIFFE issuer or its CA.
#
#   examples/envoy/make-certs.sh /etc/envoy/tls
#   curl --cacert /etc/envoy/tls/workload-ca.crt --cert /etc/envoy/tls/deploy-bot.crt \
#     --key /etc/envoy/tls/deploy-bot.key -X PUT -H 'x-approval-id: CHG-1042' \
#     https://localhost:8443/configs/payments-api
set -euo pipefail
dir="${1:?usage: make-certs.sh DIR}"
mkdir -p "$dir"
cd "$dir"
days=30
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2> /dev/null; }

key workload-ca.key
openssl req -x509 -new -key workload-ca.key -days "$days" -subj "/CN=warrant example workload CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out workload-ca.crt

issue() { # NAME SUBJECT EXTENSIONS
  key "$1.key"
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA workload-ca.crt -CAkey workload-ca.key -CAcreateserial \
    -days "$days" -extfile "$1.ext" -out "$1.crt" 2> /dev/null
  rm "$1.csr" "$1.ext"
}
issue server "/CN=payments.internal" \
  "subjectAltName=DNS:localhost,DNS:payments.internal
extendedKeyUsage=serverAuth"
issue deploy-bot "/CN=deploy-bot" \
  "subjectAltName=URI:spiffe://prod.example.com/ns/deploy/sa/deploy-bot
extendedKeyUsage=clientAuth"
chmod 0600 ./*.key
echo "made in $dir: workload-ca.crt, server.crt/.key (Envoy), deploy-bot.crt/.key (a workload)"

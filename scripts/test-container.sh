#!/usr/bin/env bash
# Builds the Containerfile with buildah and runs what it built: the image's own filesystem, user,
# environment, entrypoint and command, started under chroot from the image's mounted root (this
# machine's OCI runtime, crun, refuses its mixed cgroup setup, so `podman run` cannot start a
# container here; chroot runs the same files as the same user). Checks that the image refuses to
# serve plaintext on its public addresses, then serves over TLS: healthy, a decision allowed, the
# ledger written by the unprivileged user.
#
# The base is Debian bookworm made with debootstrap (the registries that hold base images are out
# of this machine's reach); elsewhere `podman build -f Containerfile .` uses debian:bookworm-slim.
# Usage: scripts/test-container.sh [BINARY]   (default target/debug/warrant). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
binary="${1:-target/debug/warrant}"
base=localhost/warrant-test-base:bookworm
image=localhost/warrant:test

if [ "$(id -u)" != 0 ]; then
  echo "test-container: needs root (buildah, debootstrap, chroot); not run" >&2
  exit 0
fi
need=()
command -v buildah > /dev/null || need+=(buildah)
command -v debootstrap > /dev/null || need+=(debootstrap)
command -v openssl > /dev/null || need+=(openssl)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
fi

work=$(mktemp -d)
container=""
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2> /dev/null && wait "$server" 2> /dev/null
  if [ -n "$container" ]; then
    buildah umount "$container" > /dev/null 2>&1 || true
    buildah rm "$container" > /dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if ! buildah inspect --type image "$base" > /dev/null 2>&1; then
  echo "test-container: making the Debian bookworm base with debootstrap"
  debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian > "$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
  rm -rf "$work/rootfs"
  scratch=$(buildah from scratch)
  buildah add --quiet "$scratch" "$work/rootfs.tar" / > /dev/null
  buildah commit --quiet "$scratch" "$base" > /dev/null
  buildah rm "$scratch" > /dev/null
  rm "$work/rootfs.tar"
fi

# The build context: what the Containerfile copies, the binary where BINARY says.
mkdir -p "$work/context/$(dirname "$binary")"
cp Containerfile "$work/context/"
cp -r policies "$work/context/"
cp "$binary" "$work/context/$binary"
buildah build --quiet --isolation chroot --build-arg BASE="$base" --build-arg BINARY="$binary" \
  -t "$image" -f "$work/context/Containerfile" "$work/context" > /dev/null

# What the image says it runs, and as whom.
config() { buildah inspect --type image --format "$1" "$image"; }
user=$(config '{{.OCIv1.Config.User}}')
[ "$user" = "65532:65532" ] || { echo "test-container: the image runs as '$user'" >&2; exit 1; }
mapfile -t environment < <(config '{{range .OCIv1.Config.Env}}{{println .}}{{end}}' | sed '/^$/d')
mapfile -t command < <(config '{{range .OCIv1.Config.Entrypoint}}{{println .}}{{end}}{{range .OCIv1.Config.Cmd}}{{println .}}{{end}}' | sed '/^$/d')
workdir=$(config '{{.OCIv1.Config.WorkingDir}}')

container=$(buildah from "$image")
root=$(buildah mount "$container")
run() { # run ENV... : the image's command, in its root, as its user, in its working folder
  exec env -i "${environment[@]}" "$@" /usr/sbin/chroot --userspec="$user" "$root" \
    /bin/sh -c 'cd "$0" && exec "$@"' "$workdir" "${command[@]}"
}

# Its listeners are public: without TLS it must refuse to start.
if (run > "$work/plain.log" 2>&1); then
  echo "test-container: the image served plaintext on public addresses" >&2
  exit 1
fi
grep -q "is not a loopback address" "$work/plain.log" \
  || { cat "$work/plain.log" >&2; exit 1; }
echo "test-container: plaintext on public addresses refused"

# A certificate for it, from a CA of the test's own.
tls="$root/etc/warrant/tls"
mkdir -p "$tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=test-ca \
  -keyout "$work/ca.key" -out "$work/ca.crt" 2> /dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=warrant.test \
  -keyout "$tls/tls.key" -out "$work/tls.csr" 2> /dev/null
printf 'subjectAltName=DNS:warrant.test\n' > "$work/san"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
  -days 1 -extfile "$work/san" -out "$tls/tls.crt" 2> /dev/null
chown -R 65532:65532 "$tls"

run WARRANT_TLS_CERT=/etc/warrant/tls/tls.crt WARRANT_TLS_KEY=/etc/warrant/tls/tls.key \
  > "$work/serve.out" 2> "$work/serve.err" &
server=$!
for _ in $(seq 100); do
  grep -q "^warrant listening on" "$work/serve.out" && break
  kill -0 "$server" 2> /dev/null || { cat "$work/serve.err" >&2; exit 1; }
  sleep 0.1
done
address=$(sed -n 's/^warrant listening on //p' "$work/serve.out")
port=${address##*:}
client=(--server "https://127.0.0.1:$port" --tls-ca "$work/ca.crt" --tls-server-name warrant.test)
"$binary" health "${client[@]}" | grep -qx SERVING
"$binary" check "${client[@]}" --principal ServiceAccount::deploy-bot --action update \
  --resource Config::payments-api --approval CHG-1042 --output table | grep -q '^ALLOW'
owner=$(stat -c '%u:%g' "$root/var/lib/warrant/ledger/ledger-signing.key")
[ "$owner" = "65532:65532" ] || { echo "test-container: the ledger key is owned by $owner" >&2; exit 1; }
echo "test-container: served over TLS as 65532 on $address: healthy, a Check allowed, the ledger written"

#!/usr/bin/env bash
# Runs the AuthZEN working group's own interop runners against Warrant (README, "As an AuthZEN
# PDP"): the Todo runner (interop/authzen-todo-backend/test, spec set authorization-api-1_0-02)
# on policies/examples/authzen-todo with authzen_answer_context=decision_only, and the API
# gateway runner (interop/authzen-api-gateways/test-harness) on policies/examples/authzen-gateway,
# and the Search runner (interop/authzen-search-demo/test-harness: 198 subject, resource and
# action searches) on policies/examples/authzen-search.
# Needs Node 18 or later and npm (for typescript and cli-color), and a checkout of
# https://github.com/openid/authzen. Exits non-zero if any case does not pass.
# Usage: scripts/authzen-interop.sh PATH/TO/openid-authzen
set -euo pipefail
cd "$(dirname "$0")/.."
authzen=$(cd "${1:?usage: scripts/authzen-interop.sh PATH/TO/openid-authzen}" && pwd)
cargo build --release --quiet
W=$PWD/target/release/warrant
work=$(mktemp -d)
trap 'rm -rf "$work"; kill $(jobs -p) 2>/dev/null || true' EXIT
# The runners need only TypeScript to build and cli-color to print; not their apps' packages.
(cd "$work" && echo '{"private": true}' > package.json &&
  npm install --silent --no-audit --no-fund typescript@5 cli-color@2 @types/cli-color @types/node@20)
run() { # name, the folder holding runner.ts, policies, extra serve flags, runner args...
  local name=$1 source=$2 policies=$3 flags=$4; shift 4
  local dir="$work/$name"
  mkdir -p "$dir" && cp -r "$source" "$dir/test" && ln -s "$work/node_modules" "$dir/node_modules"
  echo '{"compilerOptions": {"target": "esnext", "module": "CommonJS", "moduleResolution": "node",
    "outDir": "./build", "esModuleInterop": true, "strict": false, "skipLibCheck": true,
    "resolveJsonModule": true}, "include": ["test", "test/**/*.json"]}' > "$dir/tsconfig.json"
  (cd "$dir" && "$work/node_modules/.bin/tsc" -p . && find test -maxdepth 1 -name "*.json" -exec cp {} build/ \;)
  # shellcheck disable=SC2086
  "$W" serve --policies "$policies" $flags --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --metrics-listen 127.0.0.1:0 --authzen-listen 127.0.0.1:0 --console-listen 127.0.0.1:0 --data-dir "$dir/data" --ledger off \
    > "$dir/out" 2> "$dir/err" &
  local pid=$!
  until grep -q "listening on" "$dir/out" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$dir/err"; exit 1; }
    sleep 0.05
  done
  local url; url=$(sed -n "s/warrant authzen on \([^ ]*\).*/\1/p" "$dir/out")
  (cd "$dir/build" && node runner.js "$url" "$@") > "$dir/results"
  kill $pid; wait $pid 2>/dev/null || true
  local passed failed
  passed=$(grep -c PASS "$dir/results" || true)
  failed=$(grep -cE "FAIL|ERROR" "$dir/results" || true)
  echo "$name: $passed passed, $failed failed"
  if [ "$failed" != 0 ] || [ "$passed" = 0 ]; then grep -E "FAIL|ERROR" "$dir/results"; return 1; fi
}
run todo "$authzen/interop/authzen-todo-backend/test" policies/examples/authzen-todo \
  "--authzen-answer-context decision_only" authorization-api-1_0-02 console
run gateway "$authzen/interop/authzen-api-gateways/test-harness/test" \
  policies/examples/authzen-gateway "" console
run search "$authzen/interop/authzen-search-demo/test-harness/src" policies/examples/authzen-search \
  "" console

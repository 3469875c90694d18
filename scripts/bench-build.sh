#!/usr/bin/env bash
# What a build costs: a clean release build, a clean debug build, then an incremental debug
# `cargo build` after a one-line change in the engine and one in the domain (each change undone
# after). Uses its own target folder (TARGET, default target/bench-build), removed first.
#
#   scripts/bench-build.sh ENGINE_FILE DOMAIN_FILE
#   scripts/bench-build.sh crates/warrant-engine/src/engine/mod.rs crates/warrant-domain/src/lib.rs
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE_FILE=$1
DOMAIN_FILE=$2
export CARGO_TARGET_DIR=${TARGET:-$PWD/target/bench-build}
rm -rf "$CARGO_TARGET_DIR"
seconds() { local start; start=$(date +%s.%N); "$@" > /dev/null 2>&1; echo "$(date +%s.%N) - $start" | bc; }
touched() { # file, then the command: the file gets one more line for the build, then is restored
  local file=$1; shift
  cp "$file" "$file.orig"
  printf '\n#[allow(dead_code)]\nconst TOUCHED: u32 = %s;\n' "$RANDOM" >> "$file"
  seconds "$@"
  mv "$file.orig" "$file"
}
echo "clean release build: $(seconds cargo build --release --locked --bins) s"
echo "clean debug build: $(seconds cargo build --locked --bins) s"
echo "incremental debug build, one line in the engine: $(touched "$ENGINE_FILE" cargo build --locked --bins) s"
echo "incremental debug build, one line in the domain: $(touched "$DOMAIN_FILE" cargo build --locked --bins) s"
# Back to the untouched sources, so the next build starts from them.
cargo build --locked --bins > /dev/null 2>&1

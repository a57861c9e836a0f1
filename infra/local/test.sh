#!/usr/bin/env bash
# Runs every test tiersweep has. This is the README's test command and what CI runs.
#
# It installs what it needs and is safe to run repeatedly. As the emulator backends land,
# this script also starts the emulators (infra/local/) before the tests and stops them after.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test.sh: cargo-nextest not found; installing it (cargo install --locked cargo-nextest)" >&2
  cargo install --locked cargo-nextest
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
cargo nextest run --workspace --all-features --no-fail-fast "$@"

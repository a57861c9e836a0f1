#!/usr/bin/env bash
# Runs every test tiersweep has. This is the README's test command and what CI runs.
#
# Installs what it needs (cargo-nextest, cargo-deny; the emulators' venv via start.sh), starts the
# Bigtable, Pub/Sub and GCS emulators on loopback unless they already answer, runs format,
# lint, the deployment-file validation (infra/validate.sh), the doctests and the embedding
# example, and the whole test suite, and
# stops the emulators it started. Extra arguments go to
# `cargo nextest run` (e.g. a test-name filter).
set -euo pipefail
cd "$(dirname "$0")/../.."

# A run from a clean clone builds everything once: incremental compilation's cache (about
# half of target/debug) would only cost disk. Set CARGO_INCREMENTAL=1 to keep it.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test.sh: cargo-nextest not found; installing it (cargo install --locked cargo-nextest)" >&2
  cargo install --locked cargo-nextest
fi

# Dependency policy (deny.toml): licenses, banned crates, sources. cargo-deny is built from
# crates.io once per machine (about 2.5 minutes on 2 cores).
if ! cargo deny --version >/dev/null 2>&1; then
  # Pinned: deny.toml is written for this version's configuration format.
  echo "test.sh: cargo-deny not found; installing it (cargo install --locked cargo-deny@0.20.2)" >&2
  cargo install --locked cargo-deny@0.20.2
fi
cargo deny check licenses bans sources

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
# The release feature set, as the Dockerfile builds it, must lint clean too.
cargo clippy -p tiersweep-workers --no-default-features -- -D warnings
# Deployment files: compose and Kubernetes schemas, kustomize renders, terraform fmt.
infra/validate.sh
# The binary the release image ships contains no test, demo or benchmark code.
infra/check-release.sh
# The embedder's documentation runs: the doctests (nextest does not run them) and the
# example, both on the in-memory stores.
cargo test --doc -p tiersweep --all-features
# The API documentation builds without a broken or private link.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p tiersweep --all-features
cargo run -q -p tiersweep --example embed

# Stop on exit only what this run started; emulators that were already up stay up.
source infra/local/common.sh
# A run from another checkout beside this one uses the same emulators (start.sh reuses
# whatever answers on their ports). Every run holds a shared lock while it tests; the run
# that started the emulators stops them only once it holds the lock alone, so it never
# stops them under another run's tests (it waits for them, at most two hours).
exec 9>"${TMPDIR:-/tmp}/tiersweep-emulators-$(id -u).lock"
flock -s 9
already=()
for name in bigtable pubsub gcs gcs-upload; do live_pid "$name" >/dev/null && already+=("$name"); done
# What this run started: live under this checkout's state directory and not before (start.sh
# records no PID for emulators it found answering for another checkout). Worked out on
# exit, so that a start.sh that failed half-way has what it started stopped too.
cleanup() {
  local started=() name
  for name in bigtable pubsub gcs gcs-upload; do
    if live_pid "$name" >/dev/null && [[ " ${already[*]} " != *" $name "* ]]; then started+=("$name"); fi
  done
  [[ ${#started[@]} -gt 0 ]] || return 0
  if ! flock -n -x 9; then
    echo "test.sh: another run is using the emulators; stopping them once it is done" >&2
    flock -x -w 7200 9 || { echo "test.sh: still in use after 2 h; leaving the emulators running" >&2; return 0; }
  fi
  infra/local/stop.sh "${started[@]}"
}
trap cleanup EXIT
# Not `eval "$(start.sh)"`: that would carry on after start.sh failed.
# (The lock's descriptor is closed for start.sh: emulators must not hold it.)
emulator_env=$(infra/local/start.sh 9>&-)
eval "$emulator_env"

cargo nextest run --workspace --all-features --no-fail-fast "$@"

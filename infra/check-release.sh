#!/usr/bin/env bash
# Proves that the worker binary as the release image builds it (`tiersweep-workers`
# without default features, as in the Dockerfile) contains none of the library's test
# machinery, demo, benchmark or protocol mutants: no symbol of `tiersweep::testing`,
# `tiersweep::demo`, `tiersweep::mutants`, the benchmark's crate (`tiersweep_bench`) or
# the test kit (`tiersweep_testkit`) is in it. The same check on the dev build (default features) must
# find them, so a pattern that matches nothing cannot pass for a clean binary.
#
# It builds with the debug profile, which CI builds anyway: what goes into the binary is
# decided by the feature set (the modules are `#[cfg(feature = …)]`), not by the profile.
# Run by infra/local/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

forbidden='(tiersweep::(testing|demo|mutants)|tiersweep_bench|tiersweep_testkit)::'
out=target/release-check
mkdir -p "$out"

# Prints the path of the `tiersweep` executable a cargo build wrote.
built_binary() {
  jq -r 'select(.reason == "compiler-artifact" and .target.name == "tiersweep"
                and .executable != null) | .executable' | tail -n 1
}

bin=$(cargo build --locked -q -p tiersweep-workers --no-default-features \
  --message-format=json-render-diagnostics | built_binary)
cp "$bin" "$out/tiersweep-release-features"
dev=$(cargo build --locked -q -p tiersweep-workers --message-format=json-render-diagnostics \
  | built_binary)
cp "$dev" "$out/tiersweep-dev"

count() { nm -C "$1" | grep -Ec "$forbidden" || true; }
release_hits=$(count "$out/tiersweep-release-features")
dev_hits=$(count "$out/tiersweep-dev")

if [[ "$dev_hits" -eq 0 ]]; then
  echo "check-release: the dev build has no symbol matching $forbidden; the check is broken" >&2
  exit 1
fi
if [[ "$release_hits" -ne 0 ]]; then
  echo "check-release: the release feature set compiles test code into tiersweep:" >&2
  nm -C "$out/tiersweep-release-features" | grep -E "$forbidden" | head -n 20 >&2
  exit 1
fi
if "$out/tiersweep-release-features" demo --help >/dev/null 2>&1; then
  echo "check-release: the release feature set still has the demo command" >&2
  exit 1
fi
echo "check-release: release feature set: 0 symbols of tiersweep::{testing,demo,bench,mutants} (dev build: $dev_hits)"

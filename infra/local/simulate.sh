#!/usr/bin/env bash
# Runs many simulation schedules across all cores: N schedules split over J processes, each
# over its own range of seeds, then prints the total and the rate.
#
#   infra/local/simulate.sh [N] [J]     N: schedules (default 1,000,000); J: processes
#                                       (default: the cores this machine has)
#   TIERSWEEP_SEED_BASE=<seed>          the first seed (default: random); a failure names
#                                       its seed, which `TIERSWEEP_SEED=<seed> cargo nextest
#                                       run -p tiersweep --all-features --test simulation
#                                       replay` replays
#   PROFILE=debug                       build as CI does instead of optimised
#
# Exits non-zero, naming the failed range's log, if any schedule breaks an invariant.
set -euo pipefail
n=${1:-1000000}
jobs=${2:-$(nproc)}
base=${TIERSWEEP_SEED_BASE:-$(( (RANDOM << 15 | RANDOM) * 1000 ))}
profile=${PROFILE:-release}
cd "$(dirname "$0")/../.."

build=(cargo test -p tiersweep --all-features --test simulation --no-run --message-format=json)
[ "$profile" = release ] && build+=(--release)
bin=$("${build[@]}" 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "simulation":
        print(m["executable"])
')
[ -x "$bin" ] || { echo "simulate.sh: could not build the simulation test" >&2; exit 1; }

per=$(( (n + jobs - 1) / jobs ))
logs=$(mktemp -d)
echo "simulate.sh: $n schedules in $jobs processes of $per, seeds $base..$((base + per * jobs)); logs in $logs"
start=$(date +%s)
pids=()
for k in $(seq 0 $((jobs - 1))); do
    TIERSWEEP_SIM_THREADS=1 TIERSWEEP_SCHEDULES=$per TIERSWEEP_SEED_BASE=$((base + k * per)) \
        "$bin" the_pipeline_keeps_every_invariant_under_the_fault_model --exact --nocapture \
        >"$logs/$k.log" 2>&1 &
    pids+=($!)
done
failed=0
for k in "${!pids[@]}"; do
    if ! wait "${pids[$k]}"; then
        echo "simulate.sh: range $k failed; see $logs/$k.log" >&2
        grep -m1 "failed (replay" "$logs/$k.log" >&2 || true
        failed=1
    fi
done
secs=$(( $(date +%s) - start ))
[ "$secs" -gt 0 ] || secs=1
echo "simulate.sh: $((per * jobs)) schedules in ${secs} s: $(( per * jobs / secs )) schedules/s over $jobs processes"
exit $failed

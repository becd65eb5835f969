#!/usr/bin/env bash
# Nightly-style run of the deterministic ensemble simulation (tests/simulation.rs): many more
# seeds than CI's default, from a fresh starting seed each time, in chunks so that progress
# shows. Prints every failing seed with the command that replays it; exits non-zero if any.
#
# usage: scripts/sim-long.sh [SEEDS] [FIRST_SEED]
#   SEEDS       how many seeds (default 200000)
#   FIRST_SEED  where to start (default: derived from the clock, so nights differ)
# environment:  RK_SIM_PROFILE (default|lagging), RK_SIM_THREADS, CHUNK (seeds per cargo run,
#               default 20000), CARGO_TARGET_DIR
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SEEDS=${1:-200000}
FIRST=${2:-$(( $(date +%s) % 100000 * 100000 ))}
CHUNK=${CHUNK:-20000}
LOG=$(mktemp -t rk-sim-long.XXXXXX)
trap 'rm -f "$LOG"' EXIT

echo "simulation: $SEEDS seeds from $FIRST (profile ${RK_SIM_PROFILE:-default})"
cargo test --release --test simulation --no-run >/dev/null 2>&1 ||
    cargo test --release --test simulation --no-run || exit 2

failed=()
start=$FIRST
end=$((FIRST + SEEDS))
while ((start < end)); do
    n=$((end - start < CHUNK ? end - start : CHUNK))
    RK_SIM_FIRST_SEED=$start RK_SIM_SEEDS=$n \
        cargo test --release --test simulation -- --nocapture --exact simulated_ensembles \
        >"$LOG" 2>&1
    rc=$?
    grep -E '^simulation:' "$LOG" | sed "s/^/  [$start..$((start + n))) /"
    mapfile -t chunk_failed < <(sed -n 's/^FAILED seed \([0-9]*\) .*/\1/p' "$LOG")
    if ((rc != 0)) && ((${#chunk_failed[@]} == 0)); then
        echo "the run of seeds [$start..$((start + n))) failed without naming a seed:" >&2
        tail -40 "$LOG" >&2
        exit 2
    fi
    if ((${#chunk_failed[@]})); then
        grep -E '^FAILED seed' "$LOG"
        # The first failure's trace, as the test printed it.
        sed -n '/^seed [0-9]* (.*) failed:/,/^$/p' "$LOG" | head -60
        failed+=("${chunk_failed[@]}")
    fi
    start=$((start + n))
done

if ((${#failed[@]})); then
    echo
    echo "${#failed[@]} failing seed(s): ${failed[*]}"
    profile=${RK_SIM_PROFILE:+RK_SIM_PROFILE=$RK_SIM_PROFILE }
    for s in "${failed[@]:0:5}"; do
        echo "  replay: ${profile}RK_SIM_SEED=$s RK_SIM_TRACE=1 cargo test --release --test simulation -- --nocapture simulated_ensembles"
    done
    exit 1
fi
echo "all $SEEDS seeds passed"

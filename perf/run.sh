#!/usr/bin/env bash
# ringkeeper vs Apache ZooKeeper 3.8, side by side, on this machine, in one command:
#
#   perf/run.sh                   the full set, standalone and 3-member ensembles (about 15 minutes
#                                 on 2 cores, plus the build)
#   perf/run.sh --quick           a few short scenarios of each (about 4 minutes): to try it out
#   perf/run.sh --only-ensemble   just the 3-member ensembles (about 5 minutes; quick: 1)
#
# Installs what is missing (Debian's zookeeper package and the .venv through
# scripts/setup-test-deps.sh, matplotlib from perf/requirements.txt into the same .venv, a
# Rust toolchain through rustup when there is no cargo), builds target/release/ringkeeper,
# then runs perf/perf.py: the fdatasync floor, the scenario set against each standalone server on
# a fresh data dir, a subset of it against a fresh 3-member ensemble of each (three processes on
# this machine, the bench spreading sessions over all three), memory and restart with 100k and
# 1M znodes, the capacity ramp; and writes perf/results/<YYYY-MM-DD>-<hostname>[-quick]/
# (report.md, results.json, raw/, plots/).
#
# Options (passed to perf/perf.py; `perf/run.sh --help` lists them all):
#   --quick            few short scenarios
#   --duration S       measured seconds per scenario (default 10; quick 3)
#   --servers LIST     ringkeeper,zookeeper (default), or one of them
#   --topology LIST    standalone,ensemble3 (default both); memory, restart and capacity come
#                      with standalone only
#   --only-ensemble    same as --topology ensemble3
#   --skip-memory, --skip-capacity, --znodes N,M, --slo-p99-ms MS, --out DIR
#   --only-memory      just memory per znode and restart time (issue 4's restart benchmark)
# Environment: ZK_HEAP (default 2g), ZK_ENSEMBLE_HEAP (per ensemble member, default ZK_HEAP),
# RK_ENSEMBLE_SHARDS (--shards per ringkeeper ensemble member, default ringkeeper's: one per
# core), RK_BIN, ZK_CLASSPATH, RK_PERF_NO_BUILD=1 (use the binary as built).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
log() { printf '[perf/run.sh] %s\n' "$*"; }

for a in "$@"; do
    if [[ $a == -h || $a == --help ]]; then
        sed -n '2,29p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        echo
        exec python3 perf/perf.py --help
    fi
done

SUDO=()
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null; then SUDO=(sudo -n); fi
apt_install() {
    log "installing Debian packages: $*"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 "${SUDO[@]}" apt-get update -q </dev/null
    timeout 1200 "${SUDO[@]}" apt-get install -y -q --no-install-recommends "$@" </dev/null
}

# --- ZooKeeper, Java, Python venv (the test suite's set-up, idempotent) ----------------------
scripts/setup-test-deps.sh

# --- matplotlib into the same venv -------------------------------------------------------------
VENV=${RK_VENV:-$ROOT/.venv}
stamp=$VENV/.rk-perf-requirements
want=$(sha256sum perf/requirements.txt | cut -d' ' -f1)
if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" ]] || ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
    log "installing perf/requirements.txt into $VENV"
    PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 timeout 900 \
        "$VENV/bin/python" -m pip install -q -r perf/requirements.txt </dev/null
    "$VENV/bin/python" -c 'import matplotlib'
    echo "$want" >"$stamp"
fi

# --- tools the report reads (findmnt, lsblk) and the build needs -------------------------------
missing=()
command -v findmnt >/dev/null || missing+=(util-linux)
command -v lsblk >/dev/null || missing+=(util-linux)
if [[ ${RK_PERF_NO_BUILD:-0} != 1 ]]; then
    command -v cc >/dev/null || missing+=(build-essential)
    if ! command -v cargo >/dev/null && [[ ! -x $HOME/.cargo/bin/cargo ]]; then
        command -v curl >/dev/null || missing+=(curl ca-certificates)
    fi
fi
if ((${#missing[@]})); then apt_install $(printf '%s\n' "${missing[@]}" | sort -u); fi

# --- build ---------------------------------------------------------------------------------------
if [[ ${RK_PERF_NO_BUILD:-0} != 1 ]]; then
    if ! command -v cargo >/dev/null; then
        if [[ ! -x $HOME/.cargo/bin/cargo ]]; then
            log "no cargo: installing a Rust toolchain with rustup (minimal profile)"
            curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        fi
        export PATH=$HOME/.cargo/bin:$PATH
    fi
    log "cargo build --release"
    cargo build --release --quiet
fi
[[ -x ${RK_BIN:-target/release/ringkeeper} ]] || { log "no ringkeeper binary"; exit 1; }

# glommio needs locked memory for io_uring (root is exempt); best effort.
ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null || true
export PYTHONDONTWRITEBYTECODE=1
exec "$VENV/bin/python" perf/perf.py "$@"

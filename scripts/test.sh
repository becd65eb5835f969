#!/usr/bin/env bash
# THE test command (CI runs it through .ci/run). In order:
#   setup   scripts/setup-test-deps.sh (Debian packages + .venv, only what is missing)
#   fmt     cargo fmt --check
#   clippy  cargo clippy --all-targets -- -D warnings
#   build   cargo build --release
#   test    cargo test --release            (all Rust unit + integration tests)
#   fuzz    scripts/fuzz.sh: a bounded libFuzzer run of the frame decoder and request parser
#   compat-rk  tests/compat (kazoo, raw sockets, C and Java shells) against target/release/ringkeeper
#   compat-zk  the same suite against Apache ZooKeeper 3.8 (the reference)
# Every step is bounded by `timeout`; a failing step does not stop the later
# ones (so one run reports everything), but any failure makes the exit non-zero.
#
# Options:
#   --quick     skip clippy and the ZooKeeper run
#   --rk-only   skip the ZooKeeper run
#   --zk-only   only setup + the suite against ZooKeeper (no cargo at all)
#   -- ARGS     pass ARGS to pytest (e.g. `-- -k watch -x`)
# Logs of the servers the suite started: target/compat-logs/<target>/.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD


QUICK=0 RUN_CARGO=1 RUN_RK=1 RUN_ZK=1
PYTEST_ARGS=()
while (($#)); do
    case $1 in
        --quick) QUICK=1 RUN_ZK=0 ;;
        --rk-only) RUN_ZK=0 ;;
        --zk-only) RUN_CARGO=0 RUN_RK=0 RUN_ZK=1 ;;
        --) shift; PYTEST_ARGS=("$@"); break ;;
        -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

# glommio needs locked memory for io_uring; Rust tests and the server both use it.
ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null || true
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export PYTHONDONTWRITEBYTECODE=1

RESULTS=()   # "name|status|seconds|note"
FAILED=0
T0=$SECONDS

if [[ -t 1 ]]; then B=$'\033[1m' N=$'\033[0m'; else B= N=; fi
banner() { printf '\n%s==== %s%s\n' "$B" "$*" "$N"; }
LOGDIR=$ROOT/target/test-logs
mkdir -p "$LOGDIR"
rm -f "$LOGDIR"/*.log

# step NAME TIMEOUT_SECONDS CMD...
step() {
    local name=$1 limit=$2; shift 2
    banner "$name: $* (limit ${limit}s)"
    local t=$SECONDS rc
    timeout -k 30 "$limit" "$@" </dev/null 2>&1 | tee "$LOGDIR/$name.log"
    rc=${PIPESTATUS[0]}
    local dt=$((SECONDS - t))
    if ((rc == 0)); then
        RESULTS+=("$name|PASS|$dt|")
    else
        local why="exit $rc"
        ((rc == 124 || rc == 137)) && why="timed out after ${limit}s"
        RESULTS+=("$name|FAIL|$dt|$why")
        FAILED=1
        echo "!!!! $name FAILED ($why)"
    fi
    return $rc
}

skip() { RESULTS+=("$1|SKIP|0|$2"); }

summary() {
    local pass=0 fail=0 skipped=0 r name status dt note
    banner "summary (total $((SECONDS - T0))s)"
    for r in "${RESULTS[@]}"; do
        IFS='|' read -r name status dt note <<<"$r"
        printf '  %-10s %-4s %5ss  %s\n' "$name" "$status" "$dt" "$note"
        case $status in PASS) ((pass++)) ;; FAIL) ((fail++)) ;; SKIP) ((skipped++)) ;; esac
    done
    # test counts over every runner (cargo's "test result:" lines, pytest's last line)
    local tp=0 tf=0 ts=0 f line n word
    for f in "$LOGDIR"/test.log "$LOGDIR"/compat-*.log; do
        [[ -f $f ]] || continue
        while read -r line; do
            for word in passed failed ignored skipped error errors; do
                n=$(grep -oE "[0-9]+ $word" <<<"$line" | head -1 | cut -d' ' -f1)
                [[ -n $n ]] || continue
                case $word in passed) tp=$((tp + n)) ;; failed|error|errors) tf=$((tf + n)) ;; *) ts=$((ts + n)) ;; esac
            done
        done < <(grep -E '^test result: |^=* ?[0-9]+ (passed|failed|skipped|error)' "$f" | sed 's/;/,/g')
    done
    echo
    echo "  steps: $pass passed, $fail failed, $skipped skipped; logs in target/test-logs/"
    if ((FAILED)); then echo "RESULT: FAILED"; else echo "RESULT: OK"; fi
    echo "tests: $tp passed, $tf failed, $ts skipped"
}

# --- setup -------------------------------------------------------------------
if ! step setup 2400 scripts/setup-test-deps.sh; then
    summary
    exit 1
fi
PYTEST=("$ROOT/.venv/bin/python" -m pytest "$ROOT/tests/compat" -q -ra)

# --- Rust ----------------------------------------------------------------------
BUILD_OK=0
if ((RUN_CARGO)); then
    step fmt 300 cargo fmt --all -- --check
    if ((QUICK)); then
        skip clippy "--quick"
    else
        step clippy 2400 cargo clippy --all-targets --locked -- -D warnings
    fi
    step build 2400 cargo build --release --locked && BUILD_OK=1
    step test 2400 cargo test --release --locked --no-fail-fast
    if ((QUICK)); then
        skip fuzz "--quick"
    else
        step fuzz 1500 scripts/fuzz.sh "${RK_FUZZ_SECONDS:-60}"
    fi
fi

# --- compatibility suite -----------------------------------------------------------
compat() {
    local target=$1 name=$2
    mkdir -p "$ROOT/target/compat-logs"
    step "$name" 1500 env RK_TARGET="$target" RK_REQUIRE_CLI=1 \
        "${PYTEST[@]}" --junitxml="$ROOT/target/compat-logs/$target-junit.xml" "${PYTEST_ARGS[@]}"
}

if ((RUN_RK)); then
    RK_BIN="$ROOT/target/release/ringkeeper"
    if ((!BUILD_OK)); then
        RESULTS+=("compat-rk|FAIL|0|not run: the release build failed")
        FAILED=1
    elif ! (cd "$ROOT/tests/compat" && RK_TARGET=ringkeeper timeout 120 \
            "$ROOT/.venv/bin/python" harness.py --probe ringkeeper --timeout 20 </dev/null); then
        RESULTS+=("compat-rk|FAIL|0|$RK_BIN does not answer a ZooKeeper handshake")
        FAILED=1
    else
        compat ringkeeper compat-rk
    fi
fi

if ((RUN_ZK)); then
    compat zookeeper compat-zk
else
    skip compat-zk "$( ((QUICK)) && echo --quick || echo --rk-only)"
fi

summary
exit $FAILED

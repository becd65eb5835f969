#!/usr/bin/env bash
# Runs a local replicated ringkeeper ensemble on 127.0.0.1 until Ctrl-C, which stops every member.
# Member N (1..SIZE) serves clients on BASE+N-1 (2181, 2182, 2183) and its peers on
# BASE+707+N-1 (2888, 2889, 2890); its data is in DATA/N/data and its log in DATA/N/ringkeeper.log
# (DATA: ./data/ensemble). Prints the connect string for kazoo / zkCli.sh.
#
# usage: scripts/ensemble.sh [OPTIONS] [-- SERVE_ARGS...]
#   --size N          members, 3 or 5 (default 3)
#   --base-port PORT  first client port (default 2181); peer ports start at PORT+707 and the
#                     (unused by ringkeeper) election ports of the member specs at PORT+1707
#   --data DIR        where the members' data and logs go (default ./data/ensemble)
#   --no-build        never run `cargo build --release` (by default it runs if the binary is missing)
#   -- SERVE_ARGS     more `ringkeeper serve` flags for every member (e.g. -- --tick-time 500)
# environment:        RK_BIN (default target/release/ringkeeper)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

SIZE=3 BASE=2181 DATA=$ROOT/data/ensemble BUILD=1
EXTRA=()
while (($#)); do
    case $1 in
        --size) SIZE=${2:?--size needs a value}; shift ;;
        --base-port) BASE=${2:?--base-port needs a value}; shift ;;
        --data) DATA=${2:?--data needs a value}; shift ;;
        --no-build) BUILD=0 ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $SIZE == 3 || $SIZE == 5 ]] || { echo "--size must be 3 or 5" >&2; exit 2; }
[[ $BASE =~ ^[0-9]+$ ]] && ((BASE >= 1024 && BASE + 1707 + SIZE <= 65535)) ||
    { echo "--base-port must leave room for PORT+1707+$SIZE below 65536" >&2; exit 2; }
mkdir -p "$DATA"
DATA=$(cd "$DATA" && pwd)

BIN=${RK_BIN:-$ROOT/target/release/ringkeeper}
if [[ ! -x $BIN ]]; then
    ((BUILD)) || { echo "$BIN not found (and --no-build given)" >&2; exit 1; }
    echo "building $BIN ..."
    cargo build --release
fi

# glommio needs locked memory for io_uring (as in scripts/test.sh).
ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null || true

client_port() { echo $((BASE + $1 - 1)); }
peer_port() { echo $((BASE + 707 + $1 - 1)); }
election_port() { echo $((BASE + 1707 + $1 - 1)); }

# Members authenticate each other with a shared secret (made once, kept with the data).
SECRET=$DATA/peer-secret
if [[ ! -s $SECRET ]]; then
    mkdir -p "$DATA"
    (umask 077 && head -c 32 /dev/urandom | base64 >"$SECRET")
fi

MEMBERS=(--peer-secret-file "$SECRET")
HOSTS=()
for ((n = 1; n <= SIZE; n++)); do
    MEMBERS+=(--member "$n=127.0.0.1:$(peer_port $n):$(election_port $n);127.0.0.1:$(client_port $n)")
    HOSTS+=("127.0.0.1:$(client_port $n)")
done
CONNECT=$(IFS=,; echo "${HOSTS[*]}")

PIDS=()
stop_all() {
    trap - EXIT INT TERM
    ((${#PIDS[@]})) || return 0
    echo
    echo "stopping ${#PIDS[@]} members ..."
    kill -TERM "${PIDS[@]}" 2>/dev/null || true
    local deadline=$((SECONDS + 15)) pid
    for pid in "${PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "member with pid $pid did not stop in time: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    echo "stopped; data and logs in $DATA"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for ((n = 1; n <= SIZE; n++)); do
    mkdir -p "$DATA/$n/data"
    log=$DATA/$n/ringkeeper.log
    echo "===== $(date -Is) member $n" >>"$log"
    "$BIN" serve --server-id "$n" "${MEMBERS[@]}" \
        --client-addr "127.0.0.1:$(client_port $n)" --data-dir "$DATA/$n/data" \
        "${EXTRA[@]}" </dev/null >>"$log" 2>&1 &
    PIDS+=($!)
    echo "member $n: pid $!, client 127.0.0.1:$(client_port $n), peer 127.0.0.1:$(peer_port $n), log $log"
done

# Report each member's mode once the ensemble serves (srvr over bash's /dev/tcp).
mode_of() {
    local out
    out=$(timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/'"$1"'; printf srvr >&3; cat <&3' 2>/dev/null) || true
    sed -n 's/^Mode: //p' <<<"$out"
}
deadline=$((SECONDS + 60))
while :; do
    modes=() serving=0
    for ((n = 1; n <= SIZE; n++)); do
        m=$(mode_of "$(client_port $n)")
        modes+=("$n:${m:-not serving}")
        [[ -n $m ]] && serving=$((serving + 1))
    done
    ((serving == SIZE || SECONDS >= deadline)) && break
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || { echo "a member exited during start-up; see $DATA/*/ringkeeper.log" >&2; exit 1; }
    done
    sleep 0.5
done
echo "modes: ${modes[*]}"
echo
echo "connect string: $CONNECT"
echo "  kazoo:  KazooClient(hosts=\"$CONNECT\")"
echo "  zkCli:  zkCli.sh -server $CONNECT"
echo "Ctrl-C stops all members."

# Wait; report a member that ends on its own (the others keep running).
declare -A reported=()
while :; do
    alive=0
    for i in "${!PIDS[@]}"; do
        pid=${PIDS[$i]}
        if kill -0 "$pid" 2>/dev/null; then
            alive=$((alive + 1))
        elif [[ -z ${reported[$pid]:-} ]]; then
            reported[$pid]=1
            rc=0
            wait "$pid" || rc=$?
            echo "member $((i + 1)) exited with status $rc; see $DATA/$((i + 1))/ringkeeper.log" >&2
        fi
    done
    ((alive)) || { echo "no member is running any more" >&2; exit 1; }
    sleep 1
done

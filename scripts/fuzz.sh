#!/usr/bin/env bash
# Bounded fuzz run of the frame decoder and request parser (fuzz/fuzz_targets/).
# Usage: scripts/fuzz.sh [SECONDS]   (default 60)
#
# cargo-fuzz drives libFuzzer through rustc flags that are only accepted by a nightly
# compiler. This machine has one stable toolchain and cannot fetch another, so the run sets
# RUSTC_BOOTSTRAP=1 (stable rustc then accepts the flags) and uses `-s none` (no sanitizer:
# the target is safe Rust, and a panic is what we look for). The corpus is seeded with every
# request captured from a real ZooKeeper (../shared/testdata/zk-wire/vectors.jsonl).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_TO_RUN=${1:-60}
TARGET=frame_and_request
CARGO_FUZZ_VERSION=0.13.2

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "[fuzz] installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

CORPUS=fuzz/corpus/$TARGET
mkdir -p "$CORPUS"
VECTORS=../shared/testdata/zk-wire/vectors.jsonl
if [[ -f $VECTORS && -z "$(ls -A "$CORPUS")" ]]; then
    python3 - "$VECTORS" "$CORPUS" <<'PY'
import json, sys, hashlib, pathlib
out = pathlib.Path(sys.argv[2])
for line in open(sys.argv[1]):
    v = json.loads(line)
    data = bytes.fromhex(v["request_hex"])
    if data:
        (out / hashlib.sha1(data).hexdigest()).write_bytes(data)
PY
fi

cd fuzz
RUSTC_BOOTSTRAP=1 cargo fuzz run "$TARGET" -s none -- \
    -max_total_time="$SECONDS_TO_RUN" -max_len=65536 -print_final_stats=1

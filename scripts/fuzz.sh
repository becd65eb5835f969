#!/usr/bin/env bash
# Bounded fuzz run of the decoders that face the network (fuzz/fuzz_targets/):
#   frame_and_request  ZooKeeper client frames and requests
#   peer_frame         peer frames from other members; raft messages that pass the checks are
#                      stepped into a real in-memory Consensus
# Usage: scripts/fuzz.sh [SECONDS]   (default 60: the total, split evenly between the targets)
#
# cargo-fuzz drives libFuzzer through rustc flags that are only accepted by a nightly
# compiler. This machine has one stable toolchain and cannot fetch another, so the run sets
# RUSTC_BOOTSTRAP=1 (stable rustc then accepts the flags) and uses `-s none` (no sanitizer:
# the targets are safe Rust, and a panic is what we look for). The client corpus is seeded with
# every request captured from a real ZooKeeper (tests/testdata/zk-wire/vectors.jsonl); the
# peer corpus with a few hand-encoded raft messages (below).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_TO_RUN=${1:-60}
TARGETS=(frame_and_request peer_frame)
PER_TARGET=$(( SECONDS_TO_RUN / ${#TARGETS[@]} ))
(( PER_TARGET >= 1 )) || PER_TARGET=1
CARGO_FUZZ_VERSION=0.13.2

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "[fuzz] installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

CORPUS=fuzz/corpus/frame_and_request
mkdir -p "$CORPUS"
VECTORS=tests/testdata/zk-wire/vectors.jsonl
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

CORPUS=fuzz/corpus/peer_frame
mkdir -p "$CORPUS"
if [[ -z "$(ls -A "$CORPUS")" ]]; then
    # Inputs are `[link][len u16 LE][kind 2 (raft)][protobuf eraftpb.Message]...`, sent to
    # member 2 of {1, 2, 3} (a follower at term 2 with entries 1..3, see the target).
    python3 - "$CORPUS" <<'PY'
import sys, hashlib, pathlib
out = pathlib.Path(sys.argv[1])
def varint(n):
    b = bytearray()
    while True:
        if n < 0x80:
            b.append(n); return bytes(b)
        b.append(n & 0x7f | 0x80); n >>= 7
def field(tag, v):
    if isinstance(v, bytes):
        return varint(tag << 3 | 2) + varint(len(v)) + v
    return varint(tag << 3) + varint(v)
def msg(t, frm, term, **kw):
    tags = dict(log_term=5, index=6, commit=8, context=12, reject=10, reject_hint=11)
    body = field(1, t) + field(2, 2) + field(3, frm) + field(4, term)
    for k, v in kw.items():
        if k == "entries":
            body += b"".join(field(7, e) for e in v)
        elif k == "snapshot":
            body += field(9, v)
        else:
            body += field(tags[k], v)
    return body
def entry(index, term, data=b""):
    return field(2, term) + field(3, index) + (field(4, data) if data else b"")
def frame(link, m):
    body = b"\x02" + m
    return bytes([link]) + len(body).to_bytes(2, "little") + body
conf = field(1, 1) + field(1, 2) + field(1, 3)
seeds = [
    frame(1, msg(8, 1, 2, commit=3)),                                   # heartbeat
    frame(1, msg(3, 1, 2, log_term=2, index=3, commit=3,
                 entries=[entry(4, 2), entry(5, 2)])),                   # append
    frame(3, msg(5, 3, 3, log_term=2, index=3)),                        # vote
    frame(3, msg(17, 3, 3, log_term=2, index=3)),                       # pre-vote
    frame(3, msg(5, 3, 3, log_term=2, index=9, context=b"CampaignTransfer")),
    frame(1, msg(14, 1, 2)),                                            # timeout now
    frame(1, msg(16, 1, 2, index=3, entries=[field(4, b"ri")])),        # read index answer
    frame(1, msg(7, 1, 3, snapshot=field(2, field(1, conf) + field(2, 9) + field(3, 3)))),
    frame(1, msg(8, 1, 2, commit=3)) + frame(3, msg(4, 3, 2, index=3)) +
        frame(1, msg(3, 1, 3, log_term=2, index=3, entries=[entry(4, 3)])),
]
for s in seeds:
    (out / hashlib.sha1(s).hexdigest()).write_bytes(s)
PY
fi

cd fuzz
for TARGET in "${TARGETS[@]}"; do
    echo "[fuzz] $TARGET for ${PER_TARGET}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$TARGET" -s none -- \
        -max_total_time="$PER_TARGET" -max_len=65536 -print_final_stats=1
done

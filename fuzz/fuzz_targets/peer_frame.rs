//! Arbitrary bytes as peer frames from other members: each is decoded (`peer_proto::decode`),
//! and every raft message that passes the decoder's checks is stepped, as the sequencer does,
//! into a real in-memory `Consensus` (member 2 of three, a follower with a short log), which is
//! then driven as the shell drives it (ticks, readies persisted at once, committed entries
//! applied, configuration changes included). Nothing may panic. Run with `scripts/fuzz.sh`.
//!
//! Input: a sequence of `[link u8][len u16 LE][frame body]`, where `link % 4` is the member the
//! link authenticated (0: a member the group does not know) and the body is the frame's kind
//! and payload (`peer_proto`'s framing without the length).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkeeper::consensus::{is_conf_change, Consensus, Membership, StoredEntry};
use raft::eraftpb::MessageType;
use ringkeeper::peer_proto::{decode, PeerMsg};

fn member() -> Consensus {
    let entries = (1..=3)
        .map(|index| StoredEntry {
            index,
            term: if index < 3 { 1 } else { 2 },
            data: Vec::new(),
            conf_change: false,
        })
        .collect();
    let members = Membership {
        voters: vec![1, 2, 3],
        learners: vec![],
        joint: None,
    };
    Consensus::new(2, &members, None, entries, Some((2, 1, 1))).expect("a valid start")
}

/// What the sequencer does with each ready, persisting at once.
fn drain(c: &mut Consensus) {
    for _ in 0..8 {
        let Ok(Some(out)) = c.poll() else { return };
        // The shell installs a snapshot's state, and says it applied it, when the ready that
        // carries it is persisted (the same step: raft never sees the gap in between).
        if out.must_persist {
            c.persisted(out.number);
        }
        if let Some((index, _)) = out.snapshot {
            let _ = c.applied(index);
        }
        for e in &out.committed {
            if is_conf_change(e) {
                let _ = c.apply_conf_change(e);
            }
        }
        if let Some(last) = out.committed.last() {
            let _ = c.applied(last.index);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut consensus: Option<Consensus> = None;
    let mut rest = data;
    while let [link, a, b, tail @ ..] = rest {
        let len = (u16::from_le_bytes([*a, *b]) as usize).min(tail.len());
        let (body, next) = tail.split_at(len);
        rest = next;
        let Ok(PeerMsg::Raft(m)) = decode(body) else {
            continue;
        };
        // The shell steps a snapshot message only with the state streamed before it, once that
        // state decoded at the same index (`receive_snapshot`); alone it is ignored.
        if m.get_msg_type() == MessageType::MsgSnapshot {
            continue;
        }
        let c = consensus.get_or_insert_with(member);
        let _ = c.step(u64::from(link % 4), m);
        drain(c);
        c.tick();
        drain(c);
    }
});

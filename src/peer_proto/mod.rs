//! The peer protocol between ensemble members (not ZooKeeper's: ringkeeper members talk
//! only to each other). No I/O here; `server::peer` moves the frames.
//!
//! Frame: `[len u32 LE][kind u8][payload]`, `len` counting kind and payload. A connection
//! starts with the handshake of `peer_proto::auth` (`Hello` from the member that dialed,
//! `Challenge` back, `Proof`); every later frame flows from the dialer to the acceptor.

pub mod auth;
pub mod raft_wire;

use raft::eraftpb::Message;

use self::auth::{Exchange, Nonce, PeerAuthError, Tag, MAC_BYTES, NONCE_BYTES};
use crate::proto::types::SessionId;
use crate::txn::{Batch, Command};

/// Largest frame accepted: a raft append is capped at 1 MiB of entries by the consensus
/// config, but one entry (a batch of commands) can reach a log segment's size.
pub const MAX_FRAME: usize = 256 << 20;
/// Identifies the protocol (and its version) in the hello: "RKP3". Bumped whenever members of two builds would apply the same log differently
/// (RKP3: writes refer to their connection's recorded identities), so that they never mix.
const MAGIC: u32 = 0x524b_5033;
/// The settings text a hello carries is at most this long, in bytes.
pub const MAX_SETTINGS_BYTES: usize = 256;
/// The handshake's frames are this small; a longer one is refused before it is read.
pub const MAX_HANDSHAKE_FRAME: usize = 1 + 4 + 16 + NONCE_BYTES + 2 + MAX_SETTINGS_BYTES; // the hello

const HELLO: u8 = 1;
const RAFT: u8 = 2;
const FORWARD: u8 = 3;
const TOUCH: u8 = 4;
const SNAPSHOT_CHUNK: u8 = 5;
const ATTACHED: u8 = 6;
const DIGEST: u8 = 7;
const CHALLENGE: u8 = 8;
const PROOF: u8 = 9;

#[derive(Debug, thiserror::Error)]
pub enum PeerProtoError {
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("malformed {0} frame")]
    Malformed(&'static str),
    #[error("not a ringkeeper peer (bad hello)")]
    BadHello,
    #[error("the peer did not answer the hello with a challenge")]
    NoChallenge,
    #[error("the connection did not start with a hello")]
    NoHello,
    #[error("member {from} dialed member {to}, but this is member {me}: check the member lists")]
    WrongMember { from: u64, to: u64, me: u64 },
    #[error("it claims to be member {0}, which is not a peer of this member")]
    NotAPeer(u64),
    #[error("member {0} sent no proof")]
    NoProof(u64),
    #[error("member {from} runs with other settings that every member must share: {differences}")]
    SettingsDiffer { from: u64, differences: String },
    #[error(transparent)]
    Auth(#[from] PeerAuthError),
}

/// The dialing side of the handshake (`peer_proto::auth`), without I/O: the hello to send,
/// then the proof that answers the acceptor's challenge once its MAC checks out.
pub struct Dialing {
    from: u64,
    to: u64,
    nonce: Nonce,
    settings: String,
}

impl Dialing {
    /// Member `from` dials member `to`; `nonce` fresh from a random source; `settings` the
    /// ones every member must share (see `PeerMsg::Hello`).
    pub fn new(from: u64, to: u64, nonce: Nonce, settings: &str) -> Dialing {
        Dialing {
            from,
            to,
            nonce,
            settings: settings.to_string(),
        }
    }

    pub fn hello(&self) -> PeerMsg {
        PeerMsg::Hello {
            from: self.from,
            to: self.to,
            nonce: self.nonce,
            settings: self.settings.clone(),
        }
    }

    /// The proof to send, if `answer` is a challenge from a holder of `key`.
    pub fn proof(&self, key: &[u8], answer: PeerMsg) -> Result<PeerMsg, PeerProtoError> {
        let PeerMsg::Challenge { nonce, mac } = answer else {
            return Err(PeerProtoError::NoChallenge);
        };
        let exchange = Exchange {
            from: self.from,
            to: self.to,
            dial_nonce: self.nonce,
            accept_nonce: nonce,
        };
        exchange.verify_accept(key, &mac)?;
        Ok(PeerMsg::Proof {
            mac: exchange.dial_mac(key),
        })
    }
}

#[derive(Debug, PartialEq)]
pub enum PeerMsg {
    /// First frame of a connection: who dialed, whom it meant to reach, its nonce, and the
    /// settings every member must share (`key=value` words: members applying the same log
    /// with different ones would diverge), which the acceptor compares with its own.
    Hello {
        from: u64,
        to: u64,
        nonce: Nonce,
        settings: String,
    },
    /// The acceptor's answer to a hello: its nonce, and its proof of the secret.
    Challenge { nonce: Nonce, mac: Tag },
    /// The dialer's proof of the secret, ending the handshake.
    Proof { mac: Tag },
    /// A raft message, decoded (prost, `raft_wire`) and structurally checked; `Consensus::step`
    /// checks it against this member's state.
    Raft(Message),
    /// A RAFT frame that was refused at decoding (it does not decode, or fails the checks of
    /// `raft_wire::decode`), with the reason: the receiver logs and counts it; the link stays.
    /// Never sent.
    RaftRefused(String),
    /// Writes a member's clients sent, for the leader to propose, in the order received.
    Forward(Vec<Command>),
    /// Sessions with activity at the sender since its last report (with their timeouts), for
    /// the leader's expiry tracker.
    Touch(Vec<(SessionId, i32)>),
    /// Part of a snapshot file (`crate::snapshot`'s format) streamed to a member that fell
    /// too far behind; the raft `MsgSnapshot` that follows on the same connection ends it.
    SnapshotChunk(Vec<u8>),
    /// To the leader: a client attached this session on the sender (new writes on it from
    /// any other member are answered SessionMoved).
    Attached(SessionId),
    /// The leader's tree digest after applying entry `index`, for members to compare.
    Digest { index: u64, digest: u64 },
}

/// Appends one frame to `out`.
pub fn encode(msg: &PeerMsg, out: &mut Vec<u8>) -> Result<(), PeerProtoError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    match msg {
        PeerMsg::Hello {
            from,
            to,
            nonce,
            settings,
        } => {
            if settings.len() > MAX_SETTINGS_BYTES {
                out.truncate(start);
                return Err(PeerProtoError::Malformed("hello settings"));
            }
            out.push(HELLO);
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.extend_from_slice(&from.to_le_bytes());
            out.extend_from_slice(&to.to_le_bytes());
            out.extend_from_slice(nonce);
            out.extend_from_slice(&(settings.len() as u16).to_le_bytes());
            out.extend_from_slice(settings.as_bytes());
        }
        PeerMsg::Challenge { nonce, mac } => {
            out.push(CHALLENGE);
            out.extend_from_slice(nonce);
            out.extend_from_slice(mac);
        }
        PeerMsg::Proof { mac } => {
            out.push(PROOF);
            out.extend_from_slice(mac);
        }
        PeerMsg::Raft(m) => {
            out.push(RAFT);
            raft_wire::encode(m, out);
        }
        PeerMsg::Forward(commands) => {
            out.push(FORWARD);
            let batch = Batch {
                time_ms: 0,
                commands: commands.clone(),
            };
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&batch)
                .map_err(|_| PeerProtoError::Malformed("forward"))?;
            out.extend_from_slice(&bytes);
        }
        PeerMsg::RaftRefused(_) => {
            out.truncate(start);
            return Err(PeerProtoError::Malformed("refused raft"));
        }
        PeerMsg::Digest { index, digest } => {
            out.push(DIGEST);
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&digest.to_le_bytes());
        }
        PeerMsg::Attached(session) => {
            out.push(ATTACHED);
            out.extend_from_slice(&session.to_le_bytes());
        }
        PeerMsg::SnapshotChunk(bytes) => {
            out.push(SNAPSHOT_CHUNK);
            out.extend_from_slice(bytes);
        }
        PeerMsg::Touch(sessions) => {
            out.push(TOUCH);
            for (session, timeout) in sessions {
                out.extend_from_slice(&session.to_le_bytes());
                out.extend_from_slice(&timeout.to_le_bytes());
            }
        }
    }
    let len = out.len() - start - 4;
    if len > MAX_FRAME {
        out.truncate(start);
        return Err(PeerProtoError::TooLarge(len));
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// The length a frame header announces (kind and payload), checked against the limit.
pub fn frame_len(header: [u8; 4]) -> Result<usize, PeerProtoError> {
    let len = u32::from_le_bytes(header) as usize;
    if len == 0 {
        return Err(PeerProtoError::Malformed("empty"));
    }
    if len > MAX_FRAME {
        return Err(PeerProtoError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a frame's body (kind and payload, without the length).
pub fn decode(body: &[u8]) -> Result<PeerMsg, PeerProtoError> {
    let (&kind, payload) = body
        .split_first()
        .ok_or(PeerProtoError::Malformed("empty"))?;
    match kind {
        HELLO => {
            const FIXED: usize = 20 + NONCE_BYTES + 2;
            if payload.len() < FIXED || payload[..4] != MAGIC.to_le_bytes() {
                return Err(PeerProtoError::BadHello);
            }
            let word = |at: usize| {
                let mut b = [0; 8];
                b.copy_from_slice(&payload[at..at + 8]);
                u64::from_le_bytes(b)
            };
            let len = u16::from_le_bytes([payload[FIXED - 2], payload[FIXED - 1]]) as usize;
            if len > MAX_SETTINGS_BYTES || payload.len() != FIXED + len {
                return Err(PeerProtoError::BadHello);
            }
            let settings = std::str::from_utf8(&payload[FIXED..])
                .map_err(|_| PeerProtoError::BadHello)?
                .to_string();
            Ok(PeerMsg::Hello {
                from: word(4),
                to: word(12),
                nonce: array(&payload[20..20 + NONCE_BYTES]).ok_or(PeerProtoError::BadHello)?,
                settings,
            })
        }
        CHALLENGE => {
            if payload.len() != NONCE_BYTES + MAC_BYTES {
                return Err(PeerProtoError::Malformed("challenge"));
            }
            let (nonce, mac) = payload.split_at(NONCE_BYTES);
            Ok(PeerMsg::Challenge {
                nonce: array(nonce).ok_or(PeerProtoError::Malformed("challenge"))?,
                mac: array(mac).ok_or(PeerProtoError::Malformed("challenge"))?,
            })
        }
        PROOF => Ok(PeerMsg::Proof {
            mac: array(payload).ok_or(PeerProtoError::Malformed("proof"))?,
        }),
        RAFT => Ok(match raft_wire::decode(payload) {
            Ok(m) => PeerMsg::Raft(m),
            Err(refusal) => PeerMsg::RaftRefused(refusal.0),
        }),
        FORWARD => Batch::decode(payload)
            .map(|b| PeerMsg::Forward(b.commands))
            .map_err(|_| PeerProtoError::Malformed("forward")),
        TOUCH => {
            if payload.len() % 12 != 0 {
                return Err(PeerProtoError::Malformed("touch"));
            }
            let sessions = payload
                .chunks_exact(12)
                .map(|c| {
                    let mut s = [0; 8];
                    s.copy_from_slice(&c[..8]);
                    let mut t = [0; 4];
                    t.copy_from_slice(&c[8..]);
                    (i64::from_le_bytes(s), i32::from_le_bytes(t))
                })
                .collect();
            Ok(PeerMsg::Touch(sessions))
        }
        SNAPSHOT_CHUNK => Ok(PeerMsg::SnapshotChunk(payload.to_vec())),
        DIGEST => {
            if payload.len() != 16 {
                return Err(PeerProtoError::Malformed("digest"));
            }
            let word = |at: usize| {
                let mut b = [0; 8];
                b.copy_from_slice(&payload[at..at + 8]);
                u64::from_le_bytes(b)
            };
            Ok(PeerMsg::Digest {
                index: word(0),
                digest: word(8),
            })
        }
        ATTACHED => {
            let bytes: [u8; 8] = payload
                .try_into()
                .map_err(|_| PeerProtoError::Malformed("attached"))?;
            Ok(PeerMsg::Attached(i64::from_le_bytes(bytes)))
        }
        k => Err(PeerProtoError::UnknownKind(k)),
    }
}

/// Which `key=value` words of two settings texts differ, for the operator.
fn differences(from: u64, theirs: &str, ours: &str) -> String {
    let pairs = |text: &str| -> Vec<(String, String)> {
        text.split_whitespace()
            .map(|w| {
                let (k, v) = w.split_once('=').unwrap_or((w, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    };
    let (theirs, ours) = (pairs(theirs), pairs(ours));
    let value = |list: &[(String, String)], key: &str| {
        list.iter()
            .find(|(k, _)| k == key)
            .map_or("(none)".to_string(), |(_, v)| v.clone())
    };
    let mut keys: Vec<&str> = theirs
        .iter()
        .chain(&ours)
        .map(|(k, _)| k.as_str())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter(|k| value(&theirs, k) != value(&ours, k))
        .map(|k| {
            format!(
                "{k} is {} on member {from}, {} here",
                value(&theirs, k),
                value(&ours, k)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn array<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    bytes.try_into().ok()
}

/// The accepting side of the handshake, without I/O: a hello checked against who this member
/// is and who its peers are, the challenge to answer it with, then the dialer's proof.
pub struct Accepting {
    exchange: Exchange,
}

impl Accepting {
    /// Member `me`, whose shared settings are `settings`, received `hello`; `is_peer` says
    /// whether an id is one of its peers (not itself); `nonce` fresh from a random source.
    /// Returns the challenge to send.
    pub fn new(
        me: u64,
        settings: &str,
        hello: PeerMsg,
        is_peer: impl Fn(u64) -> bool,
        nonce: Nonce,
        key: &[u8],
    ) -> Result<(Accepting, PeerMsg), PeerProtoError> {
        let PeerMsg::Hello {
            from,
            to,
            nonce: dial_nonce,
            settings: theirs,
        } = hello
        else {
            return Err(PeerProtoError::NoHello);
        };
        if to != me {
            return Err(PeerProtoError::WrongMember { from, to, me });
        }
        if from == me || !is_peer(from) {
            return Err(PeerProtoError::NotAPeer(from));
        }
        if theirs != settings {
            return Err(PeerProtoError::SettingsDiffer {
                from,
                differences: differences(from, &theirs, settings),
            });
        }
        let exchange = Exchange {
            from,
            to,
            dial_nonce,
            accept_nonce: nonce,
        };
        let challenge = PeerMsg::Challenge {
            nonce,
            mac: exchange.accept_mac(key),
        };
        Ok((Accepting { exchange }, challenge))
    }

    /// The member the hello named (not proven until `check` passes).
    pub fn claimed(&self) -> u64 {
        self.exchange.from
    }

    /// The member authenticated, if `proof` shows it holds `key`.
    pub fn check(&self, key: &[u8], proof: PeerMsg) -> Result<u64, PeerProtoError> {
        let PeerMsg::Proof { mac } = proof else {
            return Err(PeerProtoError::NoProof(self.exchange.from));
        };
        self.exchange.verify_dial(key, &mac)?;
        Ok(self.exchange.from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::Op;

    fn round_trip(msg: PeerMsg) {
        let mut buf = Vec::new();
        encode(&msg, &mut buf).unwrap();
        let mut header = [0; 4];
        header.copy_from_slice(&buf[..4]);
        let len = frame_len(header).unwrap();
        assert_eq!(len, buf.len() - 4);
        assert_eq!(decode(&buf[4..]).unwrap(), msg);
    }

    #[test]
    fn every_kind_round_trips() {
        round_trip(PeerMsg::Hello {
            from: 2,
            to: 3,
            nonce: [5; NONCE_BYTES],
            settings: SETTINGS.into(),
        });
        round_trip(PeerMsg::Hello {
            from: 2,
            to: 3,
            nonce: [5; NONCE_BYTES],
            settings: String::new(),
        });
        let mut frame = Vec::new();
        let long = PeerMsg::Hello {
            from: 2,
            to: 3,
            nonce: [5; NONCE_BYTES],
            settings: "x".repeat(MAX_SETTINGS_BYTES),
        };
        encode(&long, &mut frame).unwrap();
        assert_eq!(
            frame.len() - 4,
            MAX_HANDSHAKE_FRAME,
            "the longest hello fits"
        );
        round_trip(PeerMsg::Challenge {
            nonce: [1; NONCE_BYTES],
            mac: [2; MAC_BYTES],
        });
        round_trip(PeerMsg::Proof {
            mac: [3; MAC_BYTES],
        });
        let mut m = Message::default();
        m.set_msg_type(raft::eraftpb::MessageType::MsgAppend);
        m.from = 1;
        m.to = 2;
        m.term = 7;
        m.index = 4;
        m.log_term = 7;
        let batch = Batch {
            time_ms: 1,
            commands: vec![],
        };
        m.entries = vec![raft::eraftpb::Entry {
            index: 5,
            term: 7,
            data: rkyv::to_bytes::<rkyv::rancor::Error>(&batch)
                .unwrap()
                .to_vec()
                .into(),
            ..Default::default()
        }]
        .into();
        round_trip(PeerMsg::Raft(m));
        round_trip(PeerMsg::Forward(vec![Command {
            session: 0x100,
            xid: 4,
            origin: 9,
            auth: vec![],
            seen_zxid: i64::MAX,
            op: Op::CloseSession,
        }]));
        round_trip(PeerMsg::Touch(vec![(1, 4000), (-5, 10)]));
        round_trip(PeerMsg::SnapshotChunk(vec![7; 1000]));
        round_trip(PeerMsg::Attached(0x0100_0000_0000_0042));
        round_trip(PeerMsg::Digest {
            index: 77,
            digest: u64::MAX - 3,
        });
    }

    const KEY: &[u8] = b"the ensemble's secret, 32 bytes.";

    const SETTINGS: &str = "ttl_enabled=true max_sessions=1048576";

    fn accept(key: &[u8], hello: PeerMsg) -> Result<(Accepting, PeerMsg), PeerProtoError> {
        let is_peer = |id| [1, 2].contains(&id);
        Accepting::new(3, SETTINGS, hello, is_peer, [4; NONCE_BYTES], key)
    }

    #[test]
    fn a_member_with_other_shared_settings_is_refused() {
        let hello = Dialing::new(
            2,
            3,
            [8; NONCE_BYTES],
            "ttl_enabled=false max_sessions=1048576",
        )
        .hello();
        let Err(PeerProtoError::SettingsDiffer { from, differences }) = accept(KEY, hello) else {
            panic!("accepted");
        };
        assert_eq!(from, 2);
        assert_eq!(differences, "ttl_enabled is false on member 2, true here");
        let hello = Dialing::new(2, 3, [8; NONCE_BYTES], "ttl_enabled=true").hello();
        let Err(PeerProtoError::SettingsDiffer { differences, .. }) = accept(KEY, hello) else {
            panic!("accepted");
        };
        assert_eq!(
            differences,
            "max_sessions is (none) on member 2, 1048576 here"
        );
    }

    #[test]
    fn a_handshake_between_holders_of_the_key() {
        let dialing = Dialing::new(2, 3, [8; NONCE_BYTES], SETTINGS);
        let (accepting, challenge) = accept(KEY, dialing.hello()).unwrap();
        assert_eq!(accepting.claimed(), 2);
        let proof = dialing.proof(KEY, challenge).unwrap();
        assert_eq!(accepting.check(KEY, proof).unwrap(), 2);
    }

    #[test]
    fn either_side_refuses_a_peer_without_the_key() {
        let dialing = Dialing::new(2, 3, [8; NONCE_BYTES], SETTINGS);
        let (_, challenge) = accept(b"another secret", dialing.hello()).unwrap();
        assert!(matches!(
            dialing.proof(KEY, challenge),
            Err(PeerProtoError::Auth(_))
        ));
        let (accepting, challenge) = accept(KEY, dialing.hello()).unwrap();
        let proof = Dialing::new(2, 3, [8; NONCE_BYTES], SETTINGS)
            .proof(KEY, challenge)
            .unwrap();
        let forged = PeerMsg::Proof {
            mac: [0; MAC_BYTES],
        };
        assert!(matches!(
            accepting.check(KEY, forged),
            Err(PeerProtoError::Auth(_))
        ));
        assert!(accepting.check(KEY, proof).is_ok());
    }

    #[test]
    fn hellos_that_are_refused_before_any_proof() {
        let hello = |from, to| Dialing::new(from, to, [8; NONCE_BYTES], SETTINGS).hello();
        assert!(matches!(
            accept(KEY, hello(2, 4)),
            Err(PeerProtoError::WrongMember {
                from: 2,
                to: 4,
                me: 3
            })
        ));
        assert!(matches!(
            accept(KEY, hello(9, 3)),
            Err(PeerProtoError::NotAPeer(9))
        ));
        assert!(matches!(
            accept(KEY, hello(3, 3)),
            Err(PeerProtoError::NotAPeer(3))
        ));
        assert!(matches!(
            accept(KEY, PeerMsg::Attached(1)),
            Err(PeerProtoError::NoHello)
        ));
        let dialing = Dialing::new(2, 3, [8; NONCE_BYTES], SETTINGS);
        let (accepting, _) = accept(KEY, dialing.hello()).unwrap();
        assert!(matches!(
            accepting.check(KEY, PeerMsg::Attached(1)),
            Err(PeerProtoError::NoProof(2))
        ));
        assert!(matches!(
            dialing.proof(KEY, PeerMsg::Attached(1)),
            Err(PeerProtoError::NoChallenge)
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[9, 1, 2]).is_err());
        assert!(decode(&[HELLO, 1, 2, 3]).is_err());
        assert!(decode(&[CHALLENGE, 1, 2, 3]).is_err());
        assert!(decode(&[PROOF; 40]).is_err());
        assert!(decode(&[TOUCH, 1, 2, 3]).is_err());
        assert!(decode(&[FORWARD, 1, 2, 3, 4, 5, 6, 7, 8]).is_err());
        assert!(matches!(
            decode(&[RAFT, 0xff, 0xff, 0xff]),
            Ok(PeerMsg::RaftRefused(_))
        ));
        assert!(frame_len(((MAX_FRAME + 1) as u32).to_le_bytes()).is_err());
        assert!(frame_len([0; 4]).is_err());
    }
}

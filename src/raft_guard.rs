//! What a raft message from a peer must satisfy against this member's state before raft-rs
//! sees it (sans-IO; `consensus::Consensus::step` applies it). The structural checks, which need
//! no state, are `peer_proto::raft_wire::check`; they run here again, cheaply, for callers that did
//! not decode the message from bytes (the snapshot path, the simulation).
//!
//! raft-rs trusts its peers: a message at a term near `u64::MAX`, entries that do not follow
//! one another, an answer naming an index past the leader's log, a second "leader" at the same
//! term, each makes it panic, corrupt its log or hand leadership over. Every member is
//! authenticated by its link, but a member can be buggy or compromised: none of its messages
//! may reach such a state.

use raft::eraftpb::{Message, MessageType};

use crate::peer_proto::raft_wire::{self, Refusal, CAMPAIGN_TRANSFER};

/// The parts of this member's raft state the checks look at.
#[derive(Clone, Copy, Debug, Default)]
pub struct Local {
    pub id: u64,
    pub term: u64,
    /// The leader this member knows at `term` (0: none); itself when it leads.
    pub leader: u64,
    pub is_leader: bool,
    /// Whether the known leader votes in this member's current configuration (a leader that a
    /// configuration change removed is the only one ringkeeper asks to hand over).
    pub leader_votes: bool,
    pub last_index: u64,
}

/// What to do with a message that passed.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Step,
    /// A vote request whose `CampaignTransfer` context must be dropped before stepping (it is
    /// then an ordinary vote request, which the leader lease applies to).
    StepAsPlainVote,
}

fn refuse<T>(reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(reason.into()))
}

/// Checks `m`, received on the link authenticated as member `link`, against `local`.
///
/// - the message names the link's member as its sender and this member as its receiver;
/// - at this member's term, appends, heartbeats and snapshots come only from the leader it
///   knows (raft-rs would take any sender for the leader: a member could replace the leader's
///   entries with its own), and never to a leader (one leader per term);
/// - `MsgTimeoutNow` (start an election at once) only from the leader at this term;
/// - a vote request keeps its `CampaignTransfer` context (which makes raft-rs ignore the
///   leader lease) only when no leader is known or the known leader no longer votes: ringkeeper
///   transfers leadership only away from a leader a configuration change removed
///   (`Consensus::tick`), and the transferee campaigns right after the leader's TimeoutNow.
///   Otherwise the context is dropped and the vote is an ordinary one: a member cannot depose
///   a healthy leader by claiming a transfer, and a real transfer that races a member that has
///   not applied the change yet is retried by the leader on a later tick;
/// - on the leader, answers never claim more log than the leader has (raft-rs would record a
///   match past its log and panic when it commits or sends from there);
/// - a ReadIndex answer comes from the leader.
pub fn admit(local: &Local, link: u64, m: &Message) -> Result<Admit, Refusal> {
    use MessageType as T;
    raft_wire::check(m)?;
    let t = m.msg_type;
    if m.from != link {
        return refuse(format!(
            "{t:?} names member {} as its sender on member {link}'s link",
            m.from
        ));
    }
    if m.to != local.id {
        return refuse(format!("{t:?} is addressed to member {}", m.to));
    }
    let same_term = m.term == local.term;
    match t {
        T::MsgAppend | T::MsgHeartbeat | T::MsgSnapshot if same_term => {
            if local.is_leader {
                return refuse(format!(
                    "{t:?} from member {} at this leader's own term {}",
                    m.from, m.term
                ));
            }
            if local.leader != 0 && local.leader != m.from {
                return refuse(format!(
                    "{t:?} from member {} at term {}, whose leader is {}",
                    m.from, m.term, local.leader
                ));
            }
        }
        T::MsgTimeoutNow if !same_term || local.leader != m.from || local.is_leader => {
            return refuse(format!(
                "MsgTimeoutNow from member {} at term {}, but the leader is {} at term {}",
                m.from, m.term, local.leader, local.term
            ));
        }
        T::MsgRequestVote
            if m.context == CAMPAIGN_TRANSFER && local.leader != 0 && local.leader_votes =>
        {
            return Ok(Admit::StepAsPlainVote);
        }
        T::MsgAppendResponse
            if local.is_leader
                && same_term
                && (m.index > local.last_index || (m.reject && m.reject_hint > m.index)) =>
        {
            return refuse(format!(
                "MsgAppendResponse for index {} (hint {}) past the log's end {}",
                m.index, m.reject_hint, local.last_index
            ));
        }
        T::MsgHeartbeatResponse if local.is_leader && same_term && m.commit > local.last_index => {
            return refuse(format!(
                "MsgHeartbeatResponse with commit {} past the log's end {}",
                m.commit, local.last_index
            ));
        }
        T::MsgReadIndexResp if local.leader != m.from || local.is_leader => {
            return refuse(format!(
                "MsgReadIndexResp from member {}, but the leader is {}",
                m.from, local.leader
            ));
        }
        _ => {}
    }
    Ok(Admit::Step)
}

/// Whether the `n`th refusal is worth a warning (the first few, then at powers of two): a
/// flood of bad messages must not flood the log.
pub fn worth_warning(n: u64) -> bool {
    n <= 16 || n.is_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageType as T;

    fn follower() -> Local {
        Local {
            id: 2,
            term: 5,
            leader: 1,
            is_leader: false,
            leader_votes: true,
            last_index: 100,
        }
    }

    fn msg(t: MessageType, from: u64, term: u64) -> Message {
        Message {
            msg_type: t,
            from,
            to: 2,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn sender_and_receiver_must_match_the_link() {
        let l = follower();
        assert_eq!(admit(&l, 1, &msg(T::MsgHeartbeat, 1, 5)), Ok(Admit::Step));
        assert!(admit(&l, 3, &msg(T::MsgHeartbeat, 1, 5)).is_err());
        let mut m = msg(T::MsgHeartbeat, 1, 5);
        m.to = 3;
        assert!(admit(&l, 1, &m).is_err());
    }

    #[test]
    fn only_the_known_leader_appends_at_its_term() {
        let l = follower();
        for t in [T::MsgAppend, T::MsgHeartbeat] {
            assert!(admit(&l, 3, &msg(t, 3, 5)).is_err(), "{t:?}");
            assert_eq!(admit(&l, 1, &msg(t, 1, 5)), Ok(Admit::Step));
            // A later term may bring a new leader.
            assert_eq!(admit(&l, 3, &msg(t, 3, 6)), Ok(Admit::Step));
            // No leader known at this term (an election): whoever won.
            let none = Local { leader: 0, ..l };
            assert_eq!(admit(&none, 3, &msg(t, 3, 5)), Ok(Admit::Step));
            let leader = Local {
                id: 2,
                leader: 2,
                is_leader: true,
                ..l
            };
            assert!(admit(&leader, 3, &msg(t, 3, 5)).is_err());
        }
    }

    #[test]
    fn timeout_now_only_from_the_leader_at_its_term() {
        let l = follower();
        assert_eq!(admit(&l, 1, &msg(T::MsgTimeoutNow, 1, 5)), Ok(Admit::Step));
        assert!(admit(&l, 3, &msg(T::MsgTimeoutNow, 3, 5)).is_err());
        assert!(admit(&l, 1, &msg(T::MsgTimeoutNow, 1, 6)).is_err());
        assert!(admit(&l, 1, &msg(T::MsgTimeoutNow, 1, 4)).is_err());
        let none = Local { leader: 0, ..l };
        assert!(admit(&none, 3, &msg(T::MsgTimeoutNow, 3, 5)).is_err());
    }

    #[test]
    fn a_transfer_vote_bypasses_the_lease_only_when_the_leader_was_removed() {
        let mut m = msg(T::MsgRequestVote, 3, 6);
        m.context = CAMPAIGN_TRANSFER.into();
        let l = follower();
        assert_eq!(admit(&l, 3, &m), Ok(Admit::StepAsPlainVote));
        let removed = Local {
            leader_votes: false,
            ..l
        };
        assert_eq!(admit(&removed, 3, &m), Ok(Admit::Step));
        let none = Local { leader: 0, ..l };
        assert_eq!(admit(&none, 3, &m), Ok(Admit::Step));
    }

    #[test]
    fn answers_never_claim_more_than_the_leaders_log() {
        let leader = Local {
            id: 2,
            leader: 2,
            is_leader: true,
            ..follower()
        };
        let mut m = msg(T::MsgAppendResponse, 3, 5);
        m.index = 100;
        assert_eq!(admit(&leader, 3, &m), Ok(Admit::Step));
        m.index = 101;
        assert!(admit(&leader, 3, &m).is_err());
        m.index = 50;
        m.reject = true;
        m.reject_hint = 51;
        assert!(admit(&leader, 3, &m).is_err());
        let mut m = msg(T::MsgHeartbeatResponse, 3, 5);
        m.commit = u64::MAX;
        assert!(admit(&leader, 3, &m).is_err());
        m.commit = 100;
        assert_eq!(admit(&leader, 3, &m), Ok(Admit::Step));
    }

    #[test]
    fn read_index_answers_only_from_the_leader() {
        let mut m = msg(T::MsgReadIndexResp, 3, 5);
        m.entries = vec![Default::default()].into();
        assert!(admit(&follower(), 3, &m).is_err());
        m.from = 1;
        assert_eq!(admit(&follower(), 1, &m), Ok(Admit::Step));
    }

    #[test]
    fn warnings_thin_out() {
        let warned = (1..=10_000).filter(|&n| worth_warning(n)).count();
        assert!(warned < 30);
    }
}

//! Run-time membership changes (ZooKeeper's `reconfig`), the sans-IO half: the member list
//! kept in `/zookeeper/config`, a request turned into the next list, and the raft
//! configuration change from one list to the next.
//!
//! The list is replicated state: the leader writes it with the raft configuration change it
//! goes with (`txn::Op::SetConfig` in the change's context), so every member, a snapshot and
//! a restart all see the members and their addresses as of the same log index. A change of
//! more than one voter goes through raft's joint consensus (raft-rs enters the joint
//! configuration and leaves it by itself); one change at a time is under way.

use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};

use crate::config::{MemberConfig, MemberSpec};
use crate::consensus::Membership;
use crate::machine::View;
use crate::proto::types::{perms, ErrorCode, Id};
use crate::txn::ReconfigOp;

pub use crate::tree::CONFIG_NODE;
/// Most members a configuration may list.
pub const MAX_MEMBERS: usize = 255;

/// Why a reconfig request cannot be carried out as asked (ZooKeeper answers BadArguments).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("give joining/leaving or new members, not both")]
    MixedModes,
    #[error("{0}")]
    BadMember(String),
    #[error("`{0}` is not a member id")]
    BadId(String),
    #[error("member {0} cannot change its peer address (remove it, then add it)")]
    AddressChange(u64),
    #[error("the new configuration has no voter")]
    NoVoter,
    #[error("more than {MAX_MEMBERS} members")]
    TooMany,
}

/// The members listed in `/zookeeper/config`'s data (`server.N=` lines; the version line
/// and blank lines are skipped), sorted by id.
pub fn parse(text: &str) -> Result<Vec<MemberSpec>, String> {
    let mut members = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("version=") {
            continue;
        }
        members.push(MemberSpec::parse_server(line)?);
    }
    members.sort_by_key(|m| m.id);
    Ok(members)
}

/// The members as `/zookeeper/config` lists them (the machine appends the version line).
pub fn format(members: &[MemberSpec]) -> String {
    members
        .iter()
        .map(|m| format!("server.{}={}\n", m.id, m.server_line()))
        .collect()
}

/// The configuration's version: the zxid of the reconfig that wrote it (0: never changed).
pub fn version(text: &str) -> i64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("version="))
        .and_then(|v| i64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// `/zookeeper/config`'s data, once a reconfig wrote it (every configuration change does).
pub fn config_text(view: &View) -> Option<String> {
    let data = view.node(CONFIG_NODE)?.data()?;
    (!data.is_empty()).then(|| String::from_utf8_lossy(data).into_owned())
}

/// The configuration raft starts with. The static one (`configured`) names the first
/// members, and the log replays every change after it. Once a change was made, a snapshot's
/// configuration holds instead (the snapshot stands for the log before it); a member joining
/// a running ensemble (`join`) has none until the leader's snapshot brings one.
pub fn starting_membership(
    configured: Membership,
    join: bool,
    loaded: Option<(&View, Membership)>,
) -> Membership {
    match loaded {
        Some((view, members)) if join || config_text(view).is_some() => members,
        _ if join => Membership::default(),
        _ => configured,
    }
}

/// A member of the static configuration as a list entry.
pub fn spec_of(m: &MemberConfig) -> MemberSpec {
    MemberSpec {
        id: m.id,
        peer: m.peer_addr.to_string(),
        election: None,
        client: m.client_addr.map(|a| a.to_string()),
        observer: m.observer,
    }
}

/// Who votes and who listens in a member list.
pub fn membership(members: &[MemberSpec]) -> Membership {
    let ids = |observer: bool| {
        members
            .iter()
            .filter(|m| m.observer == observer)
            .map(|m| m.id)
            .collect()
    };
    Membership {
        voters: ids(false),
        learners: ids(true),
        joint: None,
    }
}

/// The member list a request asks for, from the current one. Incremental: `joining` adds
/// members or changes a member's role (observer to participant and back), `leaving` removes
/// ids. Otherwise `new_members` is the whole list.
pub fn plan(current: &[MemberSpec], op: &ReconfigOp) -> Result<Vec<MemberSpec>, PlanError> {
    let given = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.trim().is_empty());
    let incremental = given(&op.joining) || given(&op.leaving);
    let mut next: Vec<MemberSpec> = if given(&op.new_members) {
        if incremental {
            return Err(PlanError::MixedModes);
        }
        servers(op.new_members.as_deref().unwrap_or(""))?
    } else {
        let mut next = current.to_vec();
        for id in items(op.leaving.as_deref().unwrap_or("")) {
            let id = id
                .strip_prefix("server.")
                .unwrap_or(id)
                .parse::<u64>()
                .map_err(|_| PlanError::BadId(id.to_string()))?;
            next.retain(|m| m.id != id);
        }
        for joining in servers(op.joining.as_deref().unwrap_or(""))? {
            next.retain(|m| m.id != joining.id);
            next.push(joining);
        }
        next
    };
    next.sort_by_key(|m| m.id);
    next.dedup_by_key(|m| m.id);
    for m in &next {
        if let Some(old) = current.iter().find(|c| c.id == m.id) {
            if old.peer != m.peer {
                return Err(PlanError::AddressChange(m.id));
            }
        }
    }
    if next.len() > MAX_MEMBERS {
        return Err(PlanError::TooMany);
    }
    if next.iter().all(|m| m.observer) {
        return Err(PlanError::NoVoter);
    }
    Ok(next)
}

/// What the leader knows when it decides on a reconfig request.
pub struct Leader<'a> {
    /// Its state machine now (`/zookeeper/config`: ACL and version).
    pub view: &'a View,
    /// The member list now (`/zookeeper/config`, or the static configuration before any change).
    pub members: &'a [MemberSpec],
    /// raft's configuration now.
    pub membership: &'a Membership,
    /// A change is proposed and not applied yet, or the configuration is joint.
    pub change_pending: bool,
    /// Members up and caught up, the leader included.
    pub live: &'a [u64],
}

/// Why a request is refused: ZooKeeper's code for it, and a reason to log.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub why: String,
}

/// The leader's decision on a request from a client with identities `auth`: the next member
/// list and the raft change to it, or ZooKeeper's error. Checked in ZooKeeper's order: who
/// may write `/zookeeper/config` (by default only the super user), one change at a time,
/// the version the request was computed from, the request itself, and a live quorum of the
/// new voters.
pub fn decide(
    leader: &Leader<'_>,
    auth: &[Id],
    op: &ReconfigOp,
) -> Result<(Vec<MemberSpec>, ConfChangeV2), Refusal> {
    let refuse = |code, why: String| Refusal { code, why };
    let node = leader
        .view
        .node(CONFIG_NODE)
        .ok_or_else(|| refuse(ErrorCode::SystemError, format!("no {CONFIG_NODE}")))?;
    if !crate::tree::acl::check(node.acl(), perms::WRITE, auth) {
        return Err(refuse(
            ErrorCode::NoAuth,
            format!("no write access to {CONFIG_NODE}"),
        ));
    }
    if leader.change_pending {
        let why = "another change is under way".to_string();
        return Err(refuse(ErrorCode::ReconfigInProgress, why));
    }
    let current = version(&String::from_utf8_lossy(node.data().unwrap_or(&[])));
    if op.from_config != -1 && op.from_config != current {
        let why = format!(
            "computed from version {:x}, not {current:x}",
            op.from_config
        );
        return Err(refuse(ErrorCode::BadVersion, why));
    }
    let members =
        plan(leader.members, op).map_err(|e| refuse(ErrorCode::BadArguments, e.to_string()))?;
    let next = membership(&members);
    if !has_live_quorum(&next, leader.live) {
        let why = format!(
            "most of the voters {:?} are not up and caught up",
            next.voters
        );
        return Err(refuse(ErrorCode::NewConfigNoQuorum, why));
    }
    let cc = conf_change(leader.membership, &next);
    Ok((members, cc))
}

/// Comma- or newline-separated items, trimmed, empty ones skipped.
fn items(list: &str) -> impl Iterator<Item = &str> {
    list.split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn servers(list: &str) -> Result<Vec<MemberSpec>, PlanError> {
    items(list)
        .map(|s| MemberSpec::parse_server(s).map_err(PlanError::BadMember))
        .collect()
}

/// The raft change from `old` to `new` (empty when only addresses or nothing changed). raft-rs
/// makes a change of one voter directly and any larger one through a joint configuration,
/// which it leaves by itself.
pub fn conf_change(old: &Membership, new: &Membership) -> ConfChangeV2 {
    let single = |change_type, node_id| ConfChangeSingle {
        change_type,
        node_id,
        ..Default::default()
    };
    let mut changes = Vec::new();
    for &id in &new.voters {
        if !old.voters.contains(&id) {
            changes.push(single(ConfChangeType::AddNode, id));
        }
    }
    for &id in &new.learners {
        if !old.learners.contains(&id) {
            changes.push(single(ConfChangeType::AddLearnerNode, id));
        }
    }
    for &id in old.voters.iter().chain(&old.learners) {
        if !new.contains(id) {
            changes.push(single(ConfChangeType::RemoveNode, id));
        }
    }
    let mut cc = ConfChangeV2::default();
    cc.set_transition(ConfChangeTransition::Auto);
    cc.set_changes(changes.into());
    cc
}

/// Whether a majority of `new`'s voters is up and caught up (`live`), so that the change
/// can commit and the ensemble keeps a quorum after it (ZooKeeper's NewConfigNoQuorum).
pub fn has_live_quorum(new: &Membership, live: &[u64]) -> bool {
    let up = new.voters.iter().filter(|id| live.contains(id)).count();
    up > new.voters.len() / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> Vec<MemberSpec> {
        parse(
            "server.1=127.0.0.1:2888:3888:participant;127.0.0.1:2181\n\
             server.2=127.0.0.1:2889:3889:participant;127.0.0.1:2182\n\
             server.3=127.0.0.1:2890:3890:participant;127.0.0.1:2183\n\
             version=100000000\n",
        )
        .unwrap()
    }

    fn op(joining: &str, leaving: &str, new_members: &str) -> ReconfigOp {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        ReconfigOp {
            joining: some(joining),
            leaving: some(leaving),
            new_members: some(new_members),
            from_config: -1,
        }
    }

    fn ids(m: &[MemberSpec]) -> Vec<(u64, bool)> {
        m.iter().map(|m| (m.id, m.observer)).collect()
    }

    #[test]
    fn the_list_round_trips_through_its_text() {
        let members = current();
        assert_eq!(ids(&members), [(1, false), (2, false), (3, false)]);
        let text = format(&members);
        assert_eq!(parse(&text).unwrap(), members);
        assert!(text.starts_with("server.1=127.0.0.1:2888:3888:participant;127.0.0.1:2181\n"));
        assert_eq!(version("server.1=a:1:2\nversion=10000000a"), 0x1_0000_000a);
        assert_eq!(version(""), 0);
        assert!(parse("server.x=a:1").is_err());
    }

    #[test]
    fn incremental_and_whole_list_requests() {
        let c = current();
        let add = plan(&c, &op("server.4=127.0.0.1:2891:3891;2184", "", "")).unwrap();
        assert_eq!(ids(&add), [(1, false), (2, false), (3, false), (4, false)]);
        let swap = plan(&c, &op("server.5=h:1:2:observer", "1, 2", "")).unwrap();
        assert_eq!(ids(&swap), [(3, false), (5, true)]);
        let promote = plan(&swap, &op("server.5=h:1:2:participant", "", "")).unwrap();
        assert_eq!(ids(&promote), [(3, false), (5, false)]);
        let whole = plan(
            &c,
            &op(
                "",
                "",
                "server.1=127.0.0.1:2888:3888,server.2=127.0.0.1:2889:3889",
            ),
        )
        .unwrap();
        assert_eq!(ids(&whole), [(1, false), (2, false)]);
    }

    #[test]
    fn bad_requests_are_refused() {
        let c = current();
        let cases = [
            (
                op("server.4=h:1", "", "server.1=h:1"),
                PlanError::MixedModes,
            ),
            (op("", "one", ""), PlanError::BadId("one".into())),
            (
                op("server.2=10.0.0.9:2889:3889", "", ""),
                PlanError::AddressChange(2),
            ),
            (op("", "1,2,3", ""), PlanError::NoVoter),
        ];
        for (op, want) in cases {
            assert_eq!(plan(&c, &op), Err(want));
        }
        assert!(matches!(
            plan(&c, &op("server4=h:1", "", "")),
            Err(PlanError::BadMember(_))
        ));
    }

    #[test]
    fn changes_between_lists() {
        let m = |v: &[u64], l: &[u64]| Membership {
            voters: v.to_vec(),
            learners: l.to_vec(),
            joint: None,
        };
        let kinds = |cc: &ConfChangeV2| -> Vec<(ConfChangeType, u64)> {
            cc.changes
                .iter()
                .map(|c| (c.get_change_type(), c.node_id))
                .collect()
        };
        use ConfChangeType::*;
        let cc = conf_change(&m(&[1, 2, 3], &[]), &m(&[1, 2, 3, 4], &[]));
        assert_eq!(kinds(&cc), [(AddNode, 4)]);
        let cc = conf_change(&m(&[1, 2, 3], &[5]), &m(&[2, 3, 5], &[]));
        assert_eq!(kinds(&cc), [(AddNode, 5), (RemoveNode, 1)]);
        let cc = conf_change(&m(&[1, 2, 3], &[]), &m(&[1, 2], &[3]));
        assert_eq!(kinds(&cc), [(AddLearnerNode, 3)]);
        assert!(conf_change(&m(&[1], &[]), &m(&[1], &[])).changes.is_empty());
        assert!(has_live_quorum(&m(&[1, 2, 3, 4], &[]), &[1, 2, 3]));
        assert!(!has_live_quorum(&m(&[1, 2, 3, 4], &[]), &[1, 4]));
    }

    #[test]
    fn the_configuration_raft_starts_with() {
        use crate::machine::{Machine, MachineConfig};
        use crate::txn::{Batch, Command, Op};
        let m = |v: &[u64]| Membership {
            voters: v.to_vec(),
            learners: vec![],
            joint: None,
        };
        let fresh = Machine::new(MachineConfig::default());
        let mut changed = Machine::new(MachineConfig::default());
        let set = Command {
            session: 0,
            xid: 0,
            origin: 0,
            auth: vec![],
            seen_zxid: i64::MAX,
            op: Op::SetConfig {
                members: format(&current()),
            },
        };
        let out = changed.apply_batch(
            1,
            &Batch {
                time_ms: 0,
                commands: vec![set],
            },
        );
        let text = config_text(&changed.view()).expect("written");
        assert_eq!(parse(&text).unwrap(), current());
        assert_eq!(version(&text), out[0].zxid);
        let (configured, snap) = (m(&[1, 2, 3]), m(&[2, 3, 4]));
        let (fresh, changed) = (fresh.view(), changed.view());
        let start = |join, loaded| starting_membership(configured.clone(), join, loaded);
        assert_eq!(start(false, None), configured);
        assert_eq!(start(false, Some((&fresh, snap.clone()))), configured);
        assert_eq!(start(false, Some((&changed, snap.clone()))), snap);
        assert_eq!(start(true, None), Membership::default());
        assert_eq!(start(true, Some((&fresh, snap.clone()))), snap);
    }

    #[test]
    fn the_leader_decides_in_zookeepers_order() {
        use crate::machine::{Machine, MachineConfig};
        let machine = Machine::new(MachineConfig::default());
        let view = machine.view();
        let members = current();
        let three = membership(&members);
        const LIVE: &[u64] = &[1, 2, 3];
        let leader = |change_pending, live: &'static [u64]| Leader {
            view: &view,
            members: &members,
            membership: &three,
            change_pending,
            live,
        };
        let add = op("server.4=127.0.0.1:2891:3891;2184", "", "");
        let superuser = [Id::new("super", "")];
        let code = |l: &Leader<'_>, auth: &[Id], op: &ReconfigOp| {
            decide(l, auth, op).err().map(|r| r.code)
        };
        // Only who may write /zookeeper/config (read-only to the world by default).
        assert_eq!(
            code(&leader(false, LIVE), &[Id::new("ip", "127.0.0.1")], &add),
            Some(ErrorCode::NoAuth)
        );
        assert_eq!(
            code(&leader(true, LIVE), &superuser, &add),
            Some(ErrorCode::ReconfigInProgress)
        );
        let stale = ReconfigOp {
            from_config: 5,
            ..add.clone()
        };
        assert_eq!(
            code(&leader(false, LIVE), &superuser, &stale),
            Some(ErrorCode::BadVersion)
        );
        assert_eq!(
            code(&leader(false, LIVE), &superuser, &op("", "1,2,3", "")),
            Some(ErrorCode::BadArguments)
        );
        assert_eq!(
            code(&leader(false, &[1, 4]), &superuser, &add),
            Some(ErrorCode::NewConfigNoQuorum)
        );
        let (next, cc) = decide(&leader(false, LIVE), &superuser, &add).unwrap();
        assert_eq!(ids(&next), [(1, false), (2, false), (3, false), (4, false)]);
        assert_eq!(cc.changes.len(), 1);
    }
}

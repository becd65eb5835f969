//! The member's replication logic, sans-IO: what the glommio sequencer (`server::sequencer`)
//! decides, moved here piece by piece so that the simulation can run the same code.
//!
//! - [`intake`]: the commands waiting to be proposed and the leader's rules on what it
//!   proposes (forwards, SessionMoved, disk-full refusals, expiry, the reaper, batch cuts).
//! - [`snapshot_schedule`]: when the next snapshot is due.
//! - [`syncs`]: `sync` requests, from their ReadIndex to their answer.
//! - [`transfers`]: snapshots streamed to members that fell behind, until acknowledged.
//! - [`leadership`]: what a change of leader means, and when the member serves.

pub mod intake;
pub mod leadership;
pub mod snapshot_schedule;
pub mod syncs;
pub mod transfers;

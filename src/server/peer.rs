//! Peer links: `proto::peer` frames over TCP between ensemble members, on the sequencer's
//! executor.
//!
//! Each member dials every other member and only *sends* on the connections it dialed; it
//! receives on the connections others dialed to it. So there is exactly one ordered stream
//! from a member to each other (forwarded writes keep their order) and no race over who
//! dials whom. A connection opens with a hello naming sender and receiver: a member that
//! dialed the wrong address is refused with a logged reason, and a test can put a proxy
//! between any two members.
//!
//! Sending never waits: frames go into a bounded queue per peer, and a frame that does not
//! fit is dropped and counted (raft resends what matters; a dropped forward is reported to
//! the caller, whose clients must then be told).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use glommio::net::{TcpListener, TcpStream};

use raft::eraftpb::MessageType;

use super::{ServerError, Shared};
use crate::proto::peer::{self, PeerMsg};

/// Frames queued for one peer before new ones are dropped.
const QUEUE_FRAMES: usize = 4096;
/// Bytes gathered into one socket write.
const WRITE_BATCH: usize = 1 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A frame's buffer starts at most this large and grows as its bytes arrive.
const READ_CHUNK: usize = 1 << 20;
/// Bytes of snapshot per frame.
const SNAPSHOT_CHUNK: usize = 1 << 20;
const MAX_SNAPSHOT_BYTES: u64 = crate::log::snapshots::MAX_FILE_BYTES;

/// What the links report to the sequencer.
pub enum PeerEvent {
    Msg {
        from: u64,
        msg: PeerMsg,
    },
    /// The link to this member broke: frames sent to it may be lost.
    Down(u64),
    /// A whole snapshot streamed by the leader, with the raft message that ends it.
    Snapshot {
        from: u64,
        data: Vec<u8>,
        msg: raft::eraftpb::Message,
    },
}

/// A link's frame queue; the dialing task behind it ends when the sender is dropped.
type Queue = async_channel::Sender<Vec<u8>>;
type Dialer = Box<dyn Fn(u64, SocketAddr) -> Queue>;

pub struct Peers {
    /// One outgoing link per other member: its address and frame queue.
    links: RefCell<HashMap<u64, (SocketAddr, Queue)>>,
    /// Members whose connections are accepted.
    known: Rc<RefCell<HashSet<u64>>>,
    shared: Arc<Shared>,
    dial: Dialer,
}

impl Peers {
    /// Listens on this member's peer address and starts a dialing link to every other member
    /// of the configuration. Events arrive on `inbox`.
    pub fn start<E: From<PeerEvent> + 'static>(
        shared: Arc<Shared>,
        inbox: async_channel::Sender<E>,
    ) -> Result<Peers, ServerError> {
        let config = &shared.config;
        let me = config.server_id;
        let own = config.member(me).ok_or_else(|| {
            ServerError::Startup(format!("member {me} is not in the member list"))
        })?;
        let listener = TcpListener::bind(own.peer_addr).map_err(|e| {
            ServerError::Startup(format!("cannot listen for peers on {}: {e}", own.peer_addr))
        })?;
        tracing::info!(addr = %own.peer_addr, member = me, "listening for peers");
        let known = Rc::new(RefCell::new(HashSet::new()));
        {
            let (inbox, shared, known) = (inbox.clone(), shared.clone(), known.clone());
            glommio::spawn_local(async move {
                loop {
                    match listener.accept().await {
                        Ok(stream) => {
                            let (inbox, shared, known) =
                                (inbox.clone(), shared.clone(), known.clone());
                            glommio::spawn_local(async move {
                                if let Err(why) = receive(stream, &shared, &known, &inbox).await {
                                    tracing::info!("peer connection closed: {why}");
                                }
                            })
                            .detach();
                        }
                        Err(e) => {
                            tracing::warn!("peer accept failed: {e}");
                            glommio::timer::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            })
            .detach();
        }
        let dial: Dialer = {
            let shared = shared.clone();
            Box::new(move |to, addr| {
                let (tx, rx) = async_channel::bounded(QUEUE_FRAMES);
                let (inbox, shared) = (inbox.clone(), shared.clone());
                glommio::spawn_local(async move { dial(me, to, addr, rx, &shared, &inbox).await })
                    .detach();
                tx
            })
        };
        let peers = Peers {
            links: RefCell::new(HashMap::new()),
            known,
            shared: shared.clone(),
            dial,
        };
        let members: Vec<(u64, SocketAddr)> =
            config.members.iter().map(|m| (m.id, m.peer_addr)).collect();
        peers.set_members(&members);
        Ok(peers)
    }

    /// Links to exactly these members (this one aside), after a configuration change: new
    /// members are dialed, a removed member's link closes, and only members' connections are
    /// accepted. A member whose address changed is dialed at the new one.
    pub fn set_members(&self, members: &[(u64, SocketAddr)]) {
        let me = self.shared.config.server_id;
        let mut links = self.links.borrow_mut();
        // Dropping a queue's sender ends its dialing task.
        links.retain(|id, (addr, _)| members.contains(&(*id, *addr)));
        for &(id, addr) in members.iter().filter(|(id, _)| *id != me) {
            links
                .entry(id)
                .or_insert_with(|| (addr, (self.dial)(id, addr)));
        }
        *self.known.borrow_mut() = members.iter().map(|(id, _)| *id).collect();
    }

    /// Where member `id` listens for peers.
    pub fn addr(&self, id: u64) -> Option<SocketAddr> {
        self.links.borrow().get(&id).map(|(addr, _)| *addr)
    }

    /// The members this one has links to.
    pub fn ids(&self) -> Vec<u64> {
        self.links.borrow().keys().copied().collect()
    }

    /// Queues `msg` for member `to`; false when it was dropped (unknown member, full queue,
    /// or a message too large to frame).
    pub fn send(&self, to: u64, msg: &PeerMsg) -> bool {
        let m = &self.shared.metrics;
        let links = self.links.borrow();
        let Some((_, link)) = links.get(&to) else {
            return false;
        };
        let mut frame = Vec::new();
        if let Err(e) = peer::encode(msg, &mut frame) {
            tracing::warn!(peer = to, "peer message not sent: {e}");
            m.peer_frames_dropped.inc();
            return false;
        }
        if link.try_send(frame).is_err() {
            m.peer_frames_dropped.inc();
            return false;
        }
        m.peer_frames_sent.inc();
        true
    }

    /// Queues `msg` for every other member.
    pub fn broadcast(&self, msg: &PeerMsg) {
        for id in self.ids() {
            self.send(id, msg);
        }
    }
}

/// Keeps a connection to member `to` and writes every queued frame to it, reconnecting with
/// a backoff. Ends when the sending side goes away.
async fn dial<E: From<PeerEvent>>(
    me: u64,
    to: u64,
    addr: SocketAddr,
    queue: async_channel::Receiver<Vec<u8>>,
    shared: &Shared,
    inbox: &async_channel::Sender<E>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut hello = Vec::new();
    if peer::encode(&PeerMsg::Hello { from: me, to }, &mut hello).is_err() {
        return;
    }
    let mut logged_failure = false;
    loop {
        if queue.is_closed() {
            return;
        }
        let connected = glommio::timer::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await;
        let mut stream = match connected {
            Ok(s) => s,
            Err(e) => {
                if !logged_failure {
                    tracing::info!(peer = to, %addr, "cannot reach peer (retrying): {e}");
                    logged_failure = true;
                }
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if stream.write_all(&hello).await.is_err() {
            continue;
        }
        tracing::info!(peer = to, %addr, "peer link up");
        backoff = Duration::from_millis(50);
        logged_failure = false;
        let mut buf = Vec::with_capacity(WRITE_BATCH);
        loop {
            let Ok(first) = queue.recv().await else {
                return;
            };
            buf.clear();
            buf.extend_from_slice(&first);
            while buf.len() < WRITE_BATCH {
                match queue.try_recv() {
                    Ok(frame) => buf.extend_from_slice(&frame),
                    Err(_) => break,
                }
            }
            if let Err(e) = stream.write_all(&buf).await {
                tracing::warn!(peer = to, "peer link broke: {e}");
                shared.metrics.peer_link_failures.inc();
                let _ = inbox.send(E::from(PeerEvent::Down(to))).await;
                break;
            }
            shared.metrics.peer_bytes_sent.add(buf.len() as u64);
        }
    }
}

/// Reads the frames one peer sends on a connection it dialed.
async fn receive<E: From<PeerEvent>>(
    stream: TcpStream,
    shared: &Shared,
    known: &RefCell<HashSet<u64>>,
    inbox: &async_channel::Sender<E>,
) -> Result<(), String> {
    let me = shared.config.server_id;
    let remote = stream.peer_addr().map_or("?".into(), |a| a.to_string());
    let _ = stream.set_nodelay(true);
    let mut r = BufReader::with_capacity(256 << 10, stream);
    let from = match read_msg(&mut r).await? {
        PeerMsg::Hello { from, to } if to != me => {
            return Err(format!(
                "{remote} (member {from}) dialed member {to}, but this is member {me}: check the member lists"
            ))
        }
        PeerMsg::Hello { from, .. } if !known.borrow().contains(&from) || from == me => {
            return Err(format!("{remote} claims to be member {from}, which is not a peer of this member"))
        }
        PeerMsg::Hello { from, .. } => from,
        _ => return Err(format!("{remote} did not start with a hello")),
    };
    let mut snapshot: Option<Vec<u8>> = None;
    loop {
        let msg = read_msg(&mut r)
            .await
            .map_err(|e| format!("from member {from}: {e}"))?;
        shared.metrics.peer_frames_received.inc();
        let event = match msg {
            PeerMsg::SnapshotChunk(bytes) => {
                let data = snapshot.get_or_insert_with(Vec::new);
                if (data.len() + bytes.len()) as u64 > MAX_SNAPSHOT_BYTES {
                    return Err(format!(
                        "member {from} streamed a snapshot over the size limit"
                    ));
                }
                data.extend_from_slice(&bytes);
                continue;
            }
            PeerMsg::Raft(msg) if msg.get_msg_type() == MessageType::MsgSnapshot => {
                let Some(data) = snapshot.take() else {
                    return Err(format!(
                        "member {from} sent a snapshot message without its data"
                    ));
                };
                PeerEvent::Snapshot { from, data, msg }
            }
            msg => PeerEvent::Msg { from, msg },
        };
        if inbox.send(E::from(event)).await.is_err() {
            return Ok(()); // shutting down
        }
    }
}

/// Streams the state of `view` (at `meta.index`) to member `to` at `addr` on a connection of
/// its own, then `msg` (raft's MsgSnapshot) to end it. Blocking: runs on a thread, so the
/// leader's executor (and its clients) never wait for a large transfer.
pub fn send_snapshot(
    me: u64,
    to: u64,
    addr: SocketAddr,
    view: &crate::machine::View,
    meta: &crate::snapshot::Meta,
    msg: raft::eraftpb::Message,
) -> Result<u64, String> {
    use std::io::Write;
    let stream = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let mut out = std::io::BufWriter::with_capacity(WRITE_BATCH, stream);
    let mut frame = Vec::new();
    let encode = |msg: &PeerMsg, frame: &mut Vec<u8>| {
        frame.clear();
        peer::encode(msg, frame).map_err(|e| e.to_string())
    };
    encode(&PeerMsg::Hello { from: me, to }, &mut frame)?;
    out.write_all(&frame).map_err(|e| e.to_string())?;
    let mut chunk = Vec::with_capacity(SNAPSHOT_CHUNK);
    let flush = |chunk: &mut Vec<u8>, out: &mut std::io::BufWriter<std::net::TcpStream>| {
        let mut frame = Vec::with_capacity(chunk.len() + 8);
        peer::encode(&PeerMsg::SnapshotChunk(std::mem::take(chunk)), &mut frame)
            .map_err(std::io::Error::other)?;
        out.write_all(&frame)
    };
    let summary = crate::snapshot::encode(view, meta, &mut |b| {
        chunk.extend_from_slice(b);
        if chunk.len() >= SNAPSHOT_CHUNK {
            flush(&mut chunk, &mut out)?;
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    if !chunk.is_empty() {
        flush(&mut chunk, &mut out).map_err(|e| e.to_string())?;
    }
    encode(&PeerMsg::Raft(msg), &mut frame)?;
    out.write_all(&frame).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    Ok(summary.bytes)
}

async fn read_msg(r: &mut BufReader<TcpStream>) -> Result<PeerMsg, String> {
    let mut header = [0; 4];
    r.read_exact(&mut header).await.map_err(|e| e.to_string())?;
    let len = peer::frame_len(header).map_err(|e| e.to_string())?;
    // Memory follows the bytes that arrive, not the length a peer announces.
    let mut body = Vec::with_capacity(len.min(READ_CHUNK));
    (&mut *r)
        .take(len as u64)
        .read_to_end(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    if body.len() != len {
        return Err(format!("connection closed inside a frame of {len} bytes"));
    }
    peer::decode(&body).map_err(|e| e.to_string())
}

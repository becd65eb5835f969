//! Peer links: `peer_proto` frames over TCP between ensemble members, on the sequencer's
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
//!
//! Nothing a connection sends is read as a peer message before it has proven that it holds
//! the ensemble's secret (`peer_proto::auth`), within `HANDSHAKE_TIMEOUT`, with at most
//! `MAX_HANDSHAKING` strangers at a time. After that a frame, once begun, must keep arriving
//! (`FRAME_STALL_TIMEOUT`), a member holds at most `MAX_LINKS_PER_MEMBER` connections (a
//! newer one closes its oldest: a reconnecting member must never be locked out by its own
//! half-open link), and snapshot chunks are taken only from the leader, one stream at a time.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use glommio::net::{TcpListener, TcpStream};

use raft::eraftpb::MessageType;

use super::listener::BudgetedListener;
use super::{ServerError, Shared};
use crate::peer_proto::{self as peer, Accepting, Dialing, PeerMsg};

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
/// Largest snapshot a member takes in (held in memory until the sequencer stores it; one
/// stream at a time, from the leader only).
const MAX_SNAPSHOT_BYTES: u64 = 8 << 30;
/// Time a connection has to complete the handshake, from accept (or connect) to proof.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections accepted and not yet authenticated; more are closed at once.
const MAX_HANDSHAKING: usize = 16;
/// Descriptors set aside for connections peers dial to this member (`Shared::
/// peer_descriptors`): the handshakes, and `MAX_LINKS_PER_MEMBER` for each of up to 28 other
/// members. When they are spent the listener pauses, as the client listener does.
pub const INBOUND_DESCRIPTORS: usize = 128;
/// Authenticated connections from one member: its link, a snapshot stream, and reconnects
/// racing the close of their predecessors.
const MAX_LINKS_PER_MEMBER: usize = 4;
/// A frame whose first byte has arrived must make progress this often (links may idle
/// between frames: only leaders send heartbeats).
const FRAME_STALL_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// What the accepting side keeps across connections.
    accepted: Rc<Accepted>,
    shared: Arc<Shared>,
    dial: Dialer,
}

/// The accepting side's state across connections.
#[derive(Default)]
struct Accepted {
    /// Members whose connections are accepted.
    known: RefCell<HashSet<u64>>,
    /// Connections in their handshake now.
    handshaking: Cell<usize>,
    /// Authenticated connections per member, oldest first.
    links: RefCell<HashMap<u64, VecDeque<LinkIn>>>,
    next_link: Cell<u64>,
    /// A snapshot is being received on some connection.
    snapshot_incoming: Cell<bool>,
}

/// An authenticated connection: its number, and a sender whose drop closes it.
type LinkIn = (u64, async_channel::Sender<()>);

/// The ensemble's secret as the HMAC key (empty without one: see `peer_proto::auth`).
pub(super) fn secret(shared: &Shared) -> &[u8] {
    shared
        .config
        .peer_secret
        .as_ref()
        .map_or(&[], |s| s.bytes())
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
        if config.peer_secret.is_none() {
            tracing::warn!(
                addr = %own.peer_addr,
                "NO PEER SECRET: anyone who can reach this peer port can act as a member of \
                 this ensemble (rewrite data, expire sessions, stop it for good). Give every \
                 member the same --peer-secret-file (docs/CONFIGURATION.md)"
            );
        }
        let accepted = Rc::new(Accepted::default());
        {
            let (inbox, shared, accepted) = (inbox.clone(), shared.clone(), accepted.clone());
            glommio::spawn_local(async move {
                let mut listener =
                    BudgetedListener::new(listener, shared.peer_descriptors.clone(), "peer");
                loop {
                    let (stream, permit) = listener.accept(&shared).await;
                    if accepted.handshaking.get() >= MAX_HANDSHAKING {
                        shared.metrics.peer_connections_refused.inc();
                        tracing::debug!(
                            "peer connection closed: {MAX_HANDSHAKING} handshakes already under way"
                        );
                        continue;
                    }
                    // Counted from now: tasks spawned in a burst run only later.
                    let counted = Handshaking::new(accepted.clone());
                    let (inbox, shared, accepted) =
                        (inbox.clone(), shared.clone(), accepted.clone());
                    glommio::spawn_local(async move {
                        let _permit = permit;
                        if let Err(why) = receive(stream, counted, &shared, &accepted, &inbox).await
                        {
                            tracing::info!("peer connection closed: {why}");
                        }
                    })
                    .detach();
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
            accepted,
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
        *self.accepted.known.borrow_mut() = members.iter().map(|(id, _)| *id).collect();
        // A removed member's connections close (dropping their senders).
        self.accepted
            .links
            .borrow_mut()
            .retain(|id, _| members.iter().any(|(m, _)| m == id));
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
    // Each kind of failure is logged once until the link is up (a peer that cannot be reached
    // and then refuses the handshake must show the second reason too).
    #[derive(PartialEq)]
    enum Failure {
        Connect,
        Handshake,
    }
    let mut logged: Option<Failure> = None;
    loop {
        if queue.is_closed() {
            return;
        }
        let connected = glommio::timer::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await;
        let mut stream = match connected {
            Ok(s) => s,
            Err(e) => {
                if logged != Some(Failure::Connect) {
                    tracing::info!(peer = to, %addr, "cannot reach peer (retrying): {e}");
                    logged = Some(Failure::Connect);
                }
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if let Err(why) = within(
            HANDSHAKE_TIMEOUT,
            dial_handshake(&mut stream, me, to, shared),
        )
        .await
        .and_then(|r| r)
        {
            if logged != Some(Failure::Handshake) {
                tracing::warn!(peer = to, %addr, "peer handshake failed (retrying): {why}");
                logged = Some(Failure::Handshake);
            }
            glommio::timer::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        tracing::info!(peer = to, %addr, "peer link up");
        backoff = Duration::from_millis(50);
        logged = None;
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

/// The dialer's half of the handshake: hello, check the acceptor's proof, send ours.
async fn dial_handshake(
    stream: &mut TcpStream,
    me: u64,
    to: u64,
    shared: &Shared,
) -> Result<(), String> {
    let settings = shared.config.machine_config().shared_settings();
    let dialing = Dialing::new(me, to, rand::random(), &settings);
    let mut frame = Vec::new();
    encode(&dialing.hello(), &mut frame)?;
    stream.write_all(&frame).await.map_err(|e| e.to_string())?;
    let answer = read_msg(stream, peer::MAX_HANDSHAKE_FRAME).await?;
    let proof = dialing
        .proof(secret(shared), answer)
        .map_err(|e| e.to_string())?;
    encode(&proof, &mut frame)?;
    stream.write_all(&frame).await.map_err(|e| e.to_string())
}

/// The acceptor's half: the dialer names itself and us, proves it holds the secret after we
/// proved it. Returns the member it authenticated.
async fn accept_handshake(
    stream: &mut TcpStream,
    shared: &Shared,
    accepted: &Accepted,
    remote: &str,
) -> Result<u64, String> {
    let key = secret(shared);
    let hello = read_msg(stream, peer::MAX_HANDSHAKE_FRAME).await?;
    let (accepting, challenge) = Accepting::new(
        shared.config.server_id,
        &shared.config.machine_config().shared_settings(),
        hello,
        |id| accepted.known.borrow().contains(&id),
        rand::random(),
        key,
    )
    .map_err(|e| format!("{remote}: {e}"))?;
    let mut frame = Vec::new();
    encode(&challenge, &mut frame)?;
    stream.write_all(&frame).await.map_err(|e| e.to_string())?;
    let proof = read_msg(stream, peer::MAX_HANDSHAKE_FRAME).await?;
    accepting
        .check(key, proof)
        .map_err(|e| format!("{remote} claims to be member {}: {e}", accepting.claimed()))
}

/// Counts a connection in its handshake while it lives.
struct Handshaking(Rc<Accepted>);

impl Handshaking {
    fn new(accepted: Rc<Accepted>) -> Self {
        accepted.handshaking.set(accepted.handshaking.get() + 1);
        Handshaking(accepted)
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.handshaking.set(self.0.handshaking.get() - 1);
    }
}

/// Authenticates a connection a peer dialed, then reads its frames until it closes, a newer
/// connection from the same member replaces it, or the member leaves the configuration.
async fn receive<E: From<PeerEvent>>(
    mut stream: TcpStream,
    counted: Handshaking,
    shared: &Shared,
    accepted: &Accepted,
    inbox: &async_channel::Sender<E>,
) -> Result<(), String> {
    let remote = stream.peer_addr().map_or("?".into(), |a| a.to_string());
    let _ = stream.set_nodelay(true);
    let from = {
        let _counted = counted;
        let result = within(
            HANDSHAKE_TIMEOUT,
            accept_handshake(&mut stream, shared, accepted, &remote),
        )
        .await
        .map_err(|_| format!("{remote} did not complete the handshake in time"))
        .and_then(|r| r);
        if result.is_err() {
            shared.metrics.peer_auth_failures.inc();
        }
        result?
    };
    let number = accepted.next_link.get();
    accepted.next_link.set(number + 1);
    let (closer, closed) = async_channel::bounded::<()>(1);
    {
        let mut links = accepted.links.borrow_mut();
        let mine = links.entry(from).or_default();
        mine.push_back((number, closer));
        while mine.len() > MAX_LINKS_PER_MEMBER {
            // Dropping the sender closes the oldest connection.
            mine.pop_front();
            shared.metrics.peer_connections_refused.inc();
        }
    }
    let frames = receive_frames(stream, from, shared, accepted, inbox);
    let replaced = async {
        let _ = closed.recv().await;
        Err(format!(
            "member {from}: closed (a newer connection replaced it, or it left the configuration)"
        ))
    };
    let result = futures_lite::future::or(frames, replaced).await;
    if let Some(mine) = accepted.links.borrow_mut().get_mut(&from) {
        mine.retain(|(n, _)| *n != number);
    }
    result
}

async fn receive_frames<E: From<PeerEvent>>(
    stream: TcpStream,
    from: u64,
    shared: &Shared,
    accepted: &Accepted,
    inbox: &async_channel::Sender<E>,
) -> Result<(), String> {
    let mut r = BufReader::with_capacity(256 << 10, stream);
    // Set while this connection holds `accepted.snapshot_incoming`.
    let mut snapshot: Option<SnapshotIn> = None;
    loop {
        let msg = read_msg(&mut r, peer::MAX_FRAME)
            .await
            .map_err(|e| format!("from member {from}: {e}"))?;
        shared.metrics.peer_frames_received.inc();
        let event = match msg {
            PeerMsg::SnapshotChunk(bytes) => {
                let incoming = match &mut snapshot {
                    Some(incoming) => incoming,
                    None => {
                        if shared.leader_id.load(Ordering::Relaxed) != from {
                            shared.metrics.peer_frames_refused.inc();
                            return Err(format!(
                                "member {from} streamed a snapshot but is not the leader"
                            ));
                        }
                        if accepted.snapshot_incoming.get() {
                            shared.metrics.peer_frames_refused.inc();
                            return Err(format!(
                                "member {from} streamed a snapshot while another one is arriving"
                            ));
                        }
                        snapshot.insert(SnapshotIn::new(accepted))
                    }
                };
                let data = &mut incoming.data;
                if (data.len() + bytes.len()) as u64 > MAX_SNAPSHOT_BYTES {
                    return Err(format!(
                        "member {from} streamed a snapshot over the size limit ({MAX_SNAPSHOT_BYTES} bytes)"
                    ));
                }
                data.extend_from_slice(&bytes);
                continue;
            }
            PeerMsg::Raft(msg) if msg.get_msg_type() == MessageType::MsgSnapshot => {
                let Some(mut incoming) = snapshot.take() else {
                    return Err(format!(
                        "member {from} sent a snapshot message without its data"
                    ));
                };
                PeerEvent::Snapshot {
                    from,
                    data: std::mem::take(&mut incoming.data),
                    msg,
                }
            }
            PeerMsg::Hello { .. } | PeerMsg::Challenge { .. } | PeerMsg::Proof { .. } => {
                shared.metrics.peer_frames_refused.inc();
                return Err(format!("member {from} repeated its handshake"));
            }
            msg => PeerEvent::Msg { from, msg },
        };
        if inbox.send(E::from(event)).await.is_err() {
            return Ok(()); // shutting down
        }
    }
}

/// A snapshot arriving on one connection; holds the one-at-a-time flag while it lives.
struct SnapshotIn<'a> {
    accepted: &'a Accepted,
    data: Vec<u8>,
}

impl<'a> SnapshotIn<'a> {
    fn new(accepted: &'a Accepted) -> Self {
        accepted.snapshot_incoming.set(true);
        SnapshotIn {
            accepted,
            data: Vec::new(),
        }
    }
}

impl Drop for SnapshotIn<'_> {
    fn drop(&mut self) {
        self.accepted.snapshot_incoming.set(false);
    }
}

fn encode(msg: &PeerMsg, frame: &mut Vec<u8>) -> Result<(), String> {
    frame.clear();
    peer::encode(msg, frame).map_err(|e| e.to_string())
}

/// `fut`, or an error once `limit` has passed.
async fn within<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, String> {
    futures_lite::future::or(async { Ok(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        Err(format!("no progress in {limit:?}"))
    })
    .await
}

/// Streams the state of `view` (at `meta.index`) to member `to` at `addr` on a connection of
/// its own, then `msg` (raft's MsgSnapshot) to end it. Blocking: runs on a thread, so the
/// leader's executor (and its clients) never wait for a large transfer.
pub fn send_snapshot(
    shared: &Shared,
    to: u64,
    addr: SocketAddr,
    view: &crate::machine::View,
    meta: &crate::snapshot::Meta,
    msg: raft::eraftpb::Message,
) -> Result<u64, String> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    dial_handshake_blocking(&mut stream, shared, to)?;
    let mut out = std::io::BufWriter::with_capacity(WRITE_BATCH, stream);
    let mut frame = Vec::new();
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

/// The dialer's handshake on a blocking stream (the snapshot sender's thread).
fn dial_handshake_blocking(
    stream: &mut std::net::TcpStream,
    shared: &Shared,
    to: u64,
) -> Result<(), String> {
    use std::io::{Read, Write};
    let settings = shared.config.machine_config().shared_settings();
    let dialing = Dialing::new(shared.config.server_id, to, rand::random(), &settings);
    let mut frame = Vec::new();
    encode(&dialing.hello(), &mut frame)?;
    stream.write_all(&frame).map_err(|e| e.to_string())?;
    let mut header = [0; 4];
    stream.read_exact(&mut header).map_err(|e| e.to_string())?;
    let len = peer::frame_len(header).map_err(|e| e.to_string())?;
    if len > peer::MAX_HANDSHAKE_FRAME {
        return Err(format!("a handshake frame of {len} bytes"));
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).map_err(|e| e.to_string())?;
    let answer = peer::decode(&body).map_err(|e| e.to_string())?;
    let proof = dialing
        .proof(secret(shared), answer)
        .map_err(|e| e.to_string())?;
    encode(&proof, &mut frame)?;
    stream.write_all(&frame).map_err(|e| e.to_string())
}

/// Reads one frame of at most `limit` bytes. Waiting for a frame to begin has no deadline (a
/// link may idle); once it has begun, every read must make progress within
/// `FRAME_STALL_TIMEOUT`.
async fn read_msg<R: futures_lite::AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> Result<PeerMsg, String> {
    let mut header = [0; 4];
    let n = r.read(&mut header[..1]).await.map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("connection closed".into());
    }
    within(FRAME_STALL_TIMEOUT, r.read_exact(&mut header[1..]))
        .await?
        .map_err(|e| e.to_string())?;
    let len = peer::frame_len(header).map_err(|e| e.to_string())?;
    if len > limit {
        return Err(format!("a frame of {len} bytes where at most {limit} fit"));
    }
    // Memory follows the bytes that arrive, not the length a peer announces.
    let mut body = Vec::with_capacity(len.min(READ_CHUNK));
    while body.len() < len {
        let start = body.len();
        body.resize(start + (len - start).min(READ_CHUNK), 0);
        let n = within(FRAME_STALL_TIMEOUT, r.read(&mut body[start..]))
            .await
            .map_err(|e| format!("inside a frame of {len} bytes: {e}"))?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("connection closed inside a frame of {len} bytes"));
        }
        body.truncate(start + n);
    }
    peer::decode(&body).map_err(|e| e.to_string())
}

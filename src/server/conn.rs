//! One client connection: the handshake, the request loop, per-session FIFO, and the writer.
//!
//! Requests are answered strictly in the order they arrived. A write goes to the sequencer and
//! holds back every later request of the connection until its reply arrives (a read must see
//! the session's own writes); a read with nothing in front of it is answered at once from the
//! shard's View.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use glommio::net::TcpStream;

use super::descriptors::DescriptorPermit;
use super::identities::{Identities, IdentityError, MAX_SESSION_IDENTITIES};
use super::read::{self, ReadCtx};
use super::shard::Shard;
use super::stats::ConnCounters;
use crate::proto::frame::four_letter_word;
use crate::proto::records::{
    decode_request, encode_reply, encode_watch_event, is_write_opcode, ConnectRequest,
    ConnectResponse, ReplyBody, Request, RequestError, RequestHeader,
};
use crate::proto::types::{opcode, ErrorCode, EventType, Id, SessionId};
use crate::txn::{Applied, Command, Op, OpResult, ReconfigOp, WriteOp};

/// Bytes of replies and events queued for one connection beyond which it is closed as a slow
/// consumer. Reading stops long before (at `max_send_queue_bytes`), so only watch events,
/// which cannot wait, and replies already computed get this far.
pub const SLOW_CONSUMER_BYTES: usize = 64 << 20;
/// Bytes of replies and events queued for all connections of the server (split evenly
/// between its shards) beyond which every connection of a shard stops reading requests
/// until its writers drain below it.
pub const SEND_QUEUE_TOTAL_BYTES: usize = 512 << 20;
/// Largest ConnectRequest accepted, in bytes (a real one is under 64: protocol version,
/// zxid, timeout, session id, a 16-byte password, read-only flag).
pub const MAX_CONNECT_REQUEST_BYTES: usize = 1024;
const READ_BUFFER: usize = 64 << 10;
/// Frames smaller than this are copied together into one write; larger ones go as they are.
const COALESCE_BYTES: usize = 64 << 10;

enum Pending {
    /// A write at the sequencer; `reply` is filled when it is applied and sent once
    /// everything before it has been.
    Write {
        xid: i32,
        opcode: i32,
        received: Instant,
        reply: Option<(Vec<u8>, i64)>,
    },
    /// The session creation of the handshake (always first).
    Connect { read_only: Option<bool> },
    /// A sync in an ensemble, waiting for this member to catch up with the leader's commit
    /// point; `reply` is filled then.
    Sync {
        xid: i32,
        path: String,
        reply: Option<Vec<u8>>,
    },
    /// A request answered once everything before it is, and once this shard's view has
    /// reached `min_zxid` (the newest zxid applied on this member when it arrived: a read
    /// never returns a state older than a write already acknowledged to anyone).
    Deferred {
        header: RequestHeader,
        req: Result<Request, RequestError>,
        min_zxid: i64,
    },
}

struct ConnState {
    session: SessionId,
    timeout_ms: i32,
    ids: Identities,
    pending: VecDeque<Pending>,
    closing: bool,
    /// The client's lastZxidSeen at handshake, until its first write carries it (see
    /// `txn::Command::seen_zxid`); `i64::MAX` afterwards.
    seen_zxid: i64,
    /// Whether a write has carried `ids` as they are now; later writes refer to them
    /// (`txn::Command::auth`).
    ids_sent: bool,
}

/// The part of a connection other tasks of the shard talk to.
pub struct ConnHandle {
    pub id: u32,
    pub peer: SocketAddr,
    shard: Rc<Shard>,
    state: RefCell<ConnState>,
    out: Sender<Vec<u8>>,
    /// Bytes sent to the writer and not written yet (also counted in the shard's total).
    queued_bytes: Cell<usize>,
    /// `drain` left ready reads unanswered because too much was queued: the writer (or the
    /// shard, when its total drops) calls it again.
    held: Cell<bool>,
    /// Fired to stop the read loop.
    stop: Sender<()>,
    /// Wakes a read loop that paused because too much was pending.
    resume: Sender<()>,
    pub received: Cell<u64>,
    pub sent: Cell<u64>,
    pub counters: ConnCounters,
    pub established_ms: i64,
}

/// Serve one accepted connection until it closes.
///
/// `_permit` is the descriptor the socket takes, given back when the connection ends.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, _permit: DescriptorPermit) {
    let peer = match stream.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    if !shard.shared.admit(peer.ip()) {
        shard.shared.metrics.connections_rejected.inc();
        tracing::warn!(
            peer = %peer,
            limit = shard.shared.config.max_client_cnxns,
            "too many connections from this address (max_client_cnxns); closing"
        );
        return;
    }
    let _ = stream.set_nodelay(true);
    let id = shard.next_conn_id();
    let (read_half, write_half) = futures_lite::io::split(stream);
    let (out_tx, out_rx) = async_channel::unbounded();
    let (stop_tx, stop_rx) = async_channel::bounded(1);
    let (resume_tx, resume_rx) = async_channel::bounded(1);
    let conn = Rc::new(ConnHandle {
        id,
        peer,
        shard: shard.clone(),
        state: RefCell::new(ConnState {
            session: 0,
            timeout_ms: 0,
            ids: Identities::new(Id::new("ip", peer.ip().to_string())),
            pending: VecDeque::new(),
            closing: false,
            seen_zxid: i64::MAX,
            ids_sent: false,
        }),
        out: out_tx,
        queued_bytes: Cell::new(0),
        held: Cell::new(false),
        stop: stop_tx,
        resume: resume_tx,
        received: Cell::new(0),
        sent: Cell::new(0),
        counters: ConnCounters::new(),
        established_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    });
    shard.register_conn(conn.clone());
    shard.shared.metrics.alive_connections.add(1);
    shard.shared.metrics.connections_accepted.inc();

    let writer = glommio::spawn_local(write_loop(conn.clone(), write_half, out_rx));
    let reader = read_loop(
        conn.clone(),
        BufReader::with_capacity(READ_BUFFER, read_half),
        resume_rx,
    );
    let stopped = async {
        let _ = stop_rx.recv().await;
        Ok(())
    };
    // Every byte before a session exists (the ConnectRequest, a four-letter word, a partial
    // frame after it) and the handshake itself must fit in the sessionless timeout; a
    // session's own timeout covers the rest.
    let sessionless = Duration::from_millis(shard.shared.config.sessionless_timeout_ms);
    let deadline = async {
        glommio::timer::sleep(sessionless).await;
        if conn.session() != 0 {
            return futures_lite::future::pending().await;
        }
        shard.shared.metrics.handshake_timeouts.inc();
        tracing::info!(
            peer = %peer,
            timeout_ms = sessionless.as_millis() as u64,
            "closing a connection with no session after the sessionless timeout"
        );
        Err("no session within the sessionless timeout".to_string())
    };
    let watched = futures_lite::future::or(stopped, deadline);
    if let Err(reason) = futures_lite::future::or(reader, watched).await {
        tracing::debug!(peer = %peer, "closing connection: {reason}");
    }
    let (session, left) = {
        let st = conn.state.borrow();
        (st.session, st.pending.len())
    };
    shard.shared.metrics.outstanding_requests.sub(left as i64);
    shard.detach_conn(id, session);
    conn.out.close();
    // Let the writer flush what is queued (bounded: a client that does not read is dropped).
    let _ = futures_lite::future::or(writer, async {
        glommio::timer::sleep(Duration::from_secs(2)).await;
    })
    .await;
    // What the writer did not get to write is no longer queued.
    shard.outbound_sub(conn.queued_bytes.replace(0));
    shard.shared.metrics.alive_connections.sub(1);
    shard.shared.release(peer.ip());
    shard.shared.metrics.connections_closed.inc();
}

async fn write_loop(
    conn: Rc<ConnHandle>,
    mut sink: futures_lite::io::WriteHalf<TcpStream>,
    frames: Receiver<Vec<u8>>,
) {
    let mut buf = Vec::with_capacity(COALESCE_BYTES);
    while let Ok(first) = frames.recv().await {
        let frame = if first.len() >= COALESCE_BYTES || frames.is_empty() {
            first
        } else {
            // Coalesce small frames already queued into one write.
            buf.clear();
            buf.extend_from_slice(&first);
            while buf.len() < COALESCE_BYTES {
                match frames.try_recv() {
                    Ok(more) => buf.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            std::mem::take(&mut buf)
        };
        let written = frame.len();
        let ok = sink.write_all(&frame).await.is_ok() && sink.flush().await.is_ok();
        if frame.capacity() <= 2 * COALESCE_BYTES {
            buf = frame; // keep the coalescing buffer; drop a large one
        } else if buf.capacity() == 0 {
            buf = Vec::with_capacity(COALESCE_BYTES);
        }
        conn.written(written);
        if !ok {
            let _ = conn.stop.try_send(());
            return;
        }
    }
    let _ = sink.close().await;
}

type Reader = BufReader<futures_lite::io::ReadHalf<TcpStream>>;

async fn read_exact(r: &mut Reader, buf: &mut [u8]) -> Result<(), String> {
    r.read_exact(buf).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "client closed the connection".to_string(),
        _ => format!("read failed: {e}"),
    })
}

async fn read_frame(
    conn: &ConnHandle,
    r: &mut Reader,
    len_bytes: [u8; 4],
    max: usize,
) -> Result<Vec<u8>, String> {
    let len = i32::from_be_bytes(len_bytes);
    if len < 0 || len as usize > max {
        return Err(format!("frame length {len} outside 0..={max}"));
    }
    let mut payload = vec![0u8; len as usize];
    read_exact(r, &mut payload).await?;
    conn.received.set(conn.received.get() + 1);
    conn.shard.shared.metrics.packets_received.inc();
    Ok(payload)
}

async fn read_loop(
    conn: Rc<ConnHandle>,
    mut r: Reader,
    resume: Receiver<()>,
) -> Result<(), String> {
    // `serve` bounds everything before the session exists by the sessionless timeout.
    let mut first = [0u8; 4];
    read_exact(&mut r, &mut first).await?;
    if let Some(cmd) = four_letter_word(&first) {
        let text = conn.shard.four_letter(cmd).await;
        conn.send_bytes(text.into_bytes());
        return Err(format!("four-letter word {cmd} answered"));
    }
    let refused = |why: String| {
        conn.shard.shared.metrics.connect_requests_refused.inc();
        why
    };
    let payload = read_frame(&conn, &mut r, first, MAX_CONNECT_REQUEST_BYTES)
        .await
        .map_err(refused)?;
    let request = ConnectRequest::decode(&payload)
        .map_err(|e| refused(format!("bad ConnectRequest: {e}")))?;
    conn.handshake(request).await?;

    loop {
        let mut len = [0u8; 4];
        read_exact(&mut r, &mut len).await?;
        let max = conn.shard.shared.config.max_packet_bytes;
        let payload = read_frame(&conn, &mut r, len, max).await?;
        let (header, req) =
            decode_request(&payload).map_err(|e| format!("bad request header: {e}"))?;
        drop(payload);
        conn.handle(header, req)?;
        let max_pending = conn.shard.shared.config.max_outstanding_per_conn as usize;
        let mut paused = false;
        loop {
            let full = conn.state.borrow().pending.len() >= max_pending;
            let backlog = conn.send_queue_full();
            if !full && !backlog {
                break;
            }
            if !paused {
                paused = true;
                if full {
                    conn.shard.shared.metrics.reads_paused.inc();
                } else {
                    // As ZooKeeper stops reading a connection whose outgoing buffer is full.
                    conn.shard.shared.metrics.send_queue_pauses.inc();
                }
            }
            if resume.recv().await.is_err() {
                return Err("connection stopped".into());
            }
        }
        if conn.state.borrow().closing {
            // Requests after the server decided to close are not answered.
            return Err("connection closing".into());
        }
    }
}

impl ConnHandle {
    pub fn send_bytes(&self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let len = bytes.len();
        let queued = self.queued_bytes.get() + len;
        if queued > SLOW_CONSUMER_BYTES {
            if !self.state.borrow().closing {
                self.shard.shared.metrics.slow_consumers.inc();
                tracing::warn!(
                    peer = %self.peer,
                    session = format!("{:#x}", self.session()),
                    queued = self.queued_bytes.get(),
                    limit = SLOW_CONSUMER_BYTES,
                    "closing a slow consumer: it does not read its replies and events"
                );
            }
            self.close("slow consumer");
            return;
        }
        if self.out.try_send(bytes).is_err() {
            return; // the connection is gone
        }
        self.queued_bytes.set(queued);
        self.shard.outbound_add(len);
        self.sent.set(self.sent.get() + 1);
        self.shard.shared.metrics.packets_sent.inc();
    }

    /// Whether this connection (or its shard) has so much queued for clients that no more
    /// requests are read, and no more held reads answered, until the writers drain.
    fn send_queue_full(&self) -> bool {
        self.queued_bytes.get() >= self.shard.shared.config.max_send_queue_bytes
            || self.shard.outbound_full()
    }

    /// The writer wrote `n` bytes (or gave up on them).
    fn written(self: &Rc<Self>, n: usize) {
        self.queued_bytes
            .set(self.queued_bytes.get().saturating_sub(n));
        self.shard.outbound_sub(n);
        if !self.send_queue_full() {
            self.room();
        }
    }

    /// There may be room in the send queue again: resume the read loop and held reads.
    pub fn room(self: &Rc<Self>) {
        let _ = self.resume.try_send(());
        if self.held.replace(false) {
            self.drain();
        }
    }

    pub fn send_event(&self, event: EventType, path: &str) {
        let mut frame = Vec::with_capacity(32 + path.len());
        encode_watch_event(&mut frame, event, path);
        self.send_bytes(frame);
    }

    /// Stop reading; what is queued is still written.
    pub fn close(&self, reason: &str) {
        let mut st = self.state.borrow_mut();
        if !st.closing {
            st.closing = true;
            tracing::debug!(peer = %self.peer, session = format!("{:#x}", st.session), "closing: {reason}");
        }
        drop(st);
        let _ = self.stop.try_send(());
    }

    pub fn session(&self) -> SessionId {
        self.state.borrow().session
    }

    /// Whether this connection's identities, as they are now, may READ a node with this ACL
    /// (a watch event naming that node is delivered only then).
    pub fn may_read(&self, acl: &[crate::proto::types::Acl]) -> bool {
        crate::tree::acl::check(
            acl,
            crate::proto::types::perms::READ,
            self.state.borrow().ids.as_slice(),
        )
    }

    pub fn timeout(&self) -> i32 {
        self.state.borrow().timeout_ms
    }

    fn push_pending(&self, p: Pending) {
        self.shard.shared.metrics.outstanding_requests.add(1);
        self.state.borrow_mut().pending.push_back(p);
    }

    pub fn pending_len(&self) -> usize {
        self.state.borrow().pending.len()
    }

    async fn handshake(self: &Rc<Self>, req: ConnectRequest) -> Result<(), String> {
        let shard = &self.shard;
        if !shard
            .shared
            .serving
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            // As ZooKeeper: a member without a leader takes no sessions, so the client moves on.
            return Err("this member is not serving (no leader)".into());
        }
        let view = shard.view.borrow().clone();
        if req.last_zxid_seen > view.last_zxid() {
            return Err(format!(
                "client has seen zxid {:#x}, newer than this server's {:#x}",
                req.last_zxid_seen,
                view.last_zxid()
            ));
        }
        let timeout = shard.shared.config.negotiate_timeout(req.timeout_ms);
        if req.session_id == 0 {
            let passwd: [u8; 16] = rand::random();
            self.push_pending(Pending::Connect {
                read_only: req.read_only,
            });
            shard.submit(Command {
                session: 0,
                xid: 0,
                origin: shard.origin(self.id).0,
                auth: Vec::new(),
                seen_zxid: i64::MAX,
                op: Op::CreateSession {
                    timeout_ms: timeout,
                    passwd: passwd.to_vec(),
                },
            });
            return Ok(());
        }
        let valid = view
            .session(req.session_id)
            .is_some_and(|s| *s.passwd == *req.passwd.as_slice());
        if !valid {
            let mut frame = Vec::new();
            ConnectResponse::invalid(req.read_only).encode(&mut frame);
            self.send_bytes(frame);
            return Err(format!(
                "session {:#x} is expired, unknown or has another password",
                req.session_id
            ));
        }
        {
            let mut st = self.state.borrow_mut();
            st.session = req.session_id;
            st.timeout_ms = timeout;
            st.seen_zxid = req.last_zxid_seen;
        }
        let mut frame = Vec::new();
        ConnectResponse {
            timeout_ms: timeout,
            session_id: req.session_id,
            passwd: req.passwd.clone(),
            read_only: req.read_only.map(|_| false),
        }
        .encode(&mut frame);
        self.send_bytes(frame);
        shard.touch(req.session_id, timeout);
        shard.attach(req.session_id, self.id).await;
        Ok(())
    }

    /// One decoded request, in arrival order.
    fn handle(
        self: &Rc<Self>,
        header: RequestHeader,
        req: Result<Request, RequestError>,
    ) -> Result<(), String> {
        let (session, timeout) = {
            let st = self.state.borrow();
            (st.session, st.timeout_ms)
        };
        self.shard.touch(session, timeout);
        self.counters.last_op.set(header.opcode);
        self.counters.last_cxid.set(header.xid as i64);
        let reconfig = self.shard.shared.config.reconfig_enabled;
        let req = match route(&header, req, reconfig) {
            Route::Local(Ok(Request::Sync { path })) if self.shard.shared.config.is_ensemble() => {
                self.push_pending(Pending::Sync {
                    xid: header.xid,
                    path,
                    reply: None,
                });
                let (shard, id, xid) = (self.shard.clone(), self.id, header.xid);
                glommio::spawn_local(async move { shard.sync(id, xid).await }).detach();
                return Ok(());
            }
            Route::Local(req) => req,
            Route::Write(op) => {
                let mut st = self.state.borrow_mut();
                self.shard.shared.metrics.outstanding_requests.add(1);
                st.pending.push_back(Pending::Write {
                    xid: header.xid,
                    opcode: header.opcode,
                    received: Instant::now(),
                    reply: None,
                });
                // Sent once per connection (a reconfig, decided before it is logged, always
                // carries them and leaves them unsent); see `txn::Command::auth`.
                let send_ids =
                    matches!(op, Op::Reconfig(_)) || !std::mem::replace(&mut st.ids_sent, true);
                let auth = if send_ids {
                    st.ids.as_slice().to_vec()
                } else {
                    Vec::new()
                };
                drop(st);
                self.shard.shared.metrics.writes.inc();
                self.shard.submit(Command {
                    session,
                    xid: header.xid,
                    origin: self.shard.origin(self.id).0,
                    auth,
                    seen_zxid: std::mem::replace(&mut self.state.borrow_mut().seen_zxid, i64::MAX),
                    op,
                });
                return Ok(());
            }
        };
        let min_zxid = self
            .shard
            .shared
            .last_zxid
            .load(std::sync::atomic::Ordering::SeqCst) as i64;
        let view_ready = self.shard.view.borrow().last_zxid() >= min_zxid;
        if self.state.borrow().pending.is_empty() && view_ready {
            self.answer_timed(header, req);
        } else {
            self.push_pending(Pending::Deferred {
                header,
                req,
                min_zxid,
            });
            if !view_ready {
                self.shard.wait_for_view(self.id);
            }
        }
        Ok(())
    }

    fn answer_timed(self: &Rc<Self>, header: RequestHeader, req: Result<Request, RequestError>) {
        let started = Instant::now();
        self.answer(header, req);
        let us = started.elapsed().as_micros() as u64;
        self.shard.shared.metrics.request_latency_us.record(us);
        let zxid = self.shard.view.borrow().last_zxid();
        self.counters.replied(zxid, us);
    }

    /// Answer a request that needs no write, against the shard's current view.
    fn answer(self: &Rc<Self>, header: RequestHeader, req: Result<Request, RequestError>) {
        let mut frames = Vec::new();
        let view = self.shard.view.borrow().clone();
        let mut close = None;
        match req {
            Err(RequestError::UnknownOpcode(op)) => {
                encode_reply(
                    &mut frames,
                    header.xid,
                    -1,
                    ErrorCode::Unimplemented,
                    &ReplyBody::Empty,
                );
                close = Some(format!("unknown opcode {op}"));
            }
            Err(e) => read::answer_error(&mut frames, &header, &e, view.last_zxid()),
            Ok(Request::Auth { scheme, auth }) => {
                let result = self.authenticate(&scheme, &auth);
                encode_reply(&mut frames, header.xid, 0, result, &ReplyBody::Empty);
                if result != ErrorCode::Ok {
                    close = Some(format!("authentication with scheme {scheme:?} failed"));
                }
            }
            Ok(req) => {
                let st = self.state.borrow();
                let mut ctx = ReadCtx {
                    view: &view,
                    watches: &mut self.shard.watches.borrow_mut(),
                    metrics: &self.shard.shared.metrics,
                    conn: self.id as u64,
                    session: st.session,
                    ids: st.ids.as_slice(),
                };
                read::answer(&mut ctx, &header, req, &mut frames);
            }
        }
        self.send_bytes(frames);
        if let Some(reason) = close {
            self.close(&reason);
        }
    }

    fn authenticate(&self, scheme: &str, auth: &[u8]) -> ErrorCode {
        let result = self.add_identity(scheme, auth);
        if let Err(e) = &result {
            self.shard.shared.metrics.auth_refused.inc();
            tracing::info!(
                peer = %self.peer,
                session = format!("{:#x}", self.session()),
                scheme,
                "addauth refused: {e}"
            );
        }
        result.map_or(ErrorCode::AuthFailed, |()| ErrorCode::Ok)
    }

    fn add_identity(&self, scheme: &str, auth: &[u8]) -> Result<(), AuthError> {
        let mut st = self.state.borrow_mut();
        match scheme {
            "digest" => {
                Identities::check_credential(auth)?;
                let text = String::from_utf8_lossy(auth);
                let id = crate::tree::acl::digest_id(&text);
                let is_super = self.shard.shared.config.super_digest.as_ref() == Some(&id);
                let id = Id::new("digest", id);
                let sup = Id::new("super", "");
                let missing = usize::from(!st.ids.contains(&id))
                    + usize::from(is_super && !st.ids.contains(&sup));
                if st.ids.len() + missing > MAX_SESSION_IDENTITIES {
                    return Err(IdentityError::TooMany {
                        limit: MAX_SESSION_IDENTITIES,
                    }
                    .into());
                }
                if missing > 0 {
                    st.ids_sent = false;
                }
                if is_super {
                    st.ids.add_last(sup)?;
                }
                // Digests first in the order added, ip last (whoAmI shows this order).
                st.ids.add(id)?;
                Ok(())
            }
            "ip" => Ok(()), // the connection's own address is already an identity
            other => Err(AuthError::UnknownScheme(other.to_string())),
        }
    }

    /// The sequencer applied a command this connection sent.
    pub fn on_applied(self: &Rc<Self>, applied: &Applied) {
        let connect = match self.state.borrow().pending.front() {
            Some(Pending::Connect { read_only }) => Some(*read_only),
            _ => None,
        };
        if let Some(read_only) = connect {
            self.state.borrow_mut().pending.pop_front();
            self.shard.shared.metrics.outstanding_requests.sub(1);
            self.connected(applied, read_only);
        } else {
            let mut st = self.state.borrow_mut();
            // Throttled: the write was refused before it was logged (disk full), so the
            // identities it carried were not recorded; the next write carries them again.
            if applied.result == OpResult::Error(ErrorCode::Throttled) {
                st.ids_sent = false;
            }
            let waiting = st.pending.iter_mut().find_map(|p| match p {
                Pending::Write {
                    xid,
                    opcode,
                    reply: reply @ None,
                    ..
                } => Some((*xid, *opcode, reply)),
                _ => None,
            });
            let Some((xid, op, reply)) = waiting else {
                drop(st);
                // The sequencer answers in order: a reply with nothing waiting is a bug.
                tracing::error!(peer = %self.peer, xid = applied.xid, "reply without a pending write");
                self.close("internal error: reply out of order");
                return;
            };
            let mut frame = Vec::new();
            read::encode_write_reply(&mut frame, xid, op, applied);
            *reply = Some((frame, applied.zxid));
        }
        self.drain();
    }

    /// This member caught up with the commit point a sync of this connection asked for.
    pub fn on_synced(self: &Rc<Self>, sync_xid: i32) {
        let zxid = self.shard.view.borrow().last_zxid();
        {
            let mut st = self.state.borrow_mut();
            let waiting = st.pending.iter_mut().find_map(|p| match p {
                Pending::Sync {
                    xid,
                    path,
                    reply: reply @ None,
                } if *xid == sync_xid => Some((path, reply)),
                _ => None,
            });
            let Some((path, reply)) = waiting else {
                return; // closed meanwhile, or a repeated answer
            };
            let mut frame = Vec::new();
            encode_reply(
                &mut frame,
                sync_xid,
                zxid,
                ErrorCode::Ok,
                &ReplyBody::Path(path),
            );
            *reply = Some(frame);
        }
        self.drain();
    }

    /// Whether a write (or the session's creation) of this connection awaits its result.
    pub fn has_write_in_flight(&self) -> bool {
        self.state
            .borrow()
            .pending
            .iter()
            .any(|p| matches!(p, Pending::Write { .. } | Pending::Connect { .. }))
    }

    fn connected(&self, applied: &Applied, read_only: Option<bool>) {
        let OpResult::SessionCreated {
            session,
            timeout_ms,
            passwd,
        } = &applied.result
        else {
            self.close("session creation failed");
            return;
        };
        {
            let mut st = self.state.borrow_mut();
            st.session = *session;
            st.timeout_ms = *timeout_ms;
        }
        self.shard.sessions.borrow_mut().insert(*session, self.id);
        let mut frame = Vec::new();
        ConnectResponse {
            timeout_ms: *timeout_ms,
            session_id: *session,
            passwd: passwd.clone(),
            read_only: read_only.map(|_| false),
        }
        .encode(&mut frame);
        self.send_bytes(frame);
    }

    /// Send every reply at the front of the queue that is ready, in order.
    pub fn drain(self: &Rc<Self>) {
        loop {
            let view_zxid = self.shard.view.borrow().last_zxid();
            let next = {
                let mut st = self.state.borrow_mut();
                let ready = match st.pending.front() {
                    Some(Pending::Write { reply, .. }) => reply.is_some(),
                    Some(Pending::Sync { reply, .. }) => reply.is_some(),
                    Some(Pending::Deferred { min_zxid, .. }) => {
                        let ready = view_zxid >= *min_zxid;
                        if !ready {
                            self.shard.wait_for_view(self.id);
                        } else if self.send_queue_full() {
                            // Its reply may be large: answer it once the writer drains.
                            self.held.set(true);
                            break;
                        }
                        ready
                    }
                    Some(Pending::Connect { .. }) | None => false,
                };
                if !ready {
                    break;
                }
                self.shard.shared.metrics.outstanding_requests.sub(1);
                st.pending.pop_front()
            };
            match next {
                Some(Pending::Write {
                    opcode: op,
                    received,
                    reply: Some((frame, zxid)),
                    ..
                }) => {
                    let us = received.elapsed().as_micros() as u64;
                    self.shard.shared.metrics.request_latency_us.record(us);
                    self.counters.replied(zxid, us);
                    self.send_bytes(frame);
                    if op == opcode::CLOSE_SESSION {
                        self.close("session closed by the client");
                        return;
                    }
                }
                Some(Pending::Deferred { header, req, .. }) => self.answer_timed(header, req),
                Some(Pending::Sync {
                    reply: Some(frame), ..
                }) => self.send_bytes(frame),
                _ => break,
            }
        }
        let _ = self.resume.try_send(());
    }

    /// The session was closed or expired (on any member): the connection goes with it.
    pub fn session_ended(&self, session: SessionId) {
        if self.session() == session {
            self.close("session ended");
        }
    }
}

/// Why an `addauth` was refused (answered AuthFailed).
#[derive(Debug, thiserror::Error)]
enum AuthError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("unknown scheme {0:?}")]
    UnknownScheme(String),
}

/// The log command for a request that writes, or None for one answered locally.
/// Where a decoded request goes: to the sequencer as a log command (the request moves into
/// it), or back to the connection to be answered locally.
enum Route {
    Write(Op),
    Local(Result<Request, RequestError>),
}

fn route(header: &RequestHeader, req: Result<Request, RequestError>, reconfig: bool) -> Route {
    let op = match req {
        Ok(Request::Create { opcode, req }) => Op::Write(WriteOp::Create { opcode, req }),
        Ok(Request::Delete(r)) => Op::Write(WriteOp::Delete(r)),
        Ok(Request::SetData(r)) => Op::Write(WriteOp::SetData(r)),
        Ok(Request::Check(r)) => Op::Write(WriteOp::Check(r)),
        Ok(Request::SetAcl(r)) => Op::SetAcl(r),
        Ok(Request::Multi(ops)) => Op::Multi(ops),
        Ok(Request::CloseSession) => Op::CloseSession,
        Ok(Request::Reconfig { .. }) if !reconfig => Op::Fail(ErrorCode::ReconfigDisabled),
        Ok(Request::Reconfig {
            joining_servers,
            leaving_servers,
            new_members,
            cur_config_id,
        }) => Op::Reconfig(ReconfigOp {
            joining: joining_servers,
            leaving: leaving_servers,
            new_members,
            from_config: cur_config_id,
        }),
        // An undecodable write still consumes a zxid in ZooKeeper.
        Err(RequestError::Marshalling) if is_write_opcode(header.opcode) => {
            Op::Fail(ErrorCode::MarshallingError)
        }
        other => return Route::Local(other),
    };
    Route::Write(op)
}

//! One shard: a glommio executor pinned to a core, owning its connections, its watches and its
//! copy of the current View. Everything here is single-threaded (`Rc`, `RefCell`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver, SharedSender};
use glommio::net::TcpListener;

use super::conn::{self, ConnHandle};
use super::listener::BudgetedListener;
use super::{Origin, ServerError, Shared, ToSequencer, ToShard, Update};
use crate::machine::View;
use crate::proto::types::SessionId;
use crate::txn::Command;
use crate::watch::WatchRegistry;

/// How often a shard reports session activity to the sequencer.
const TOUCH_INTERVAL: Duration = Duration::from_millis(100);

pub struct Shard {
    pub id: u16,
    pub shared: Arc<Shared>,
    pub view: RefCell<View>,
    /// The apply round `view` belongs to.
    round: Cell<u64>,
    pub watches: RefCell<WatchRegistry>,
    pub conns: RefCell<HashMap<u32, Rc<ConnHandle>>>,
    /// Sessions attached to a connection of this shard.
    pub sessions: RefCell<HashMap<SessionId, u32>>,
    outbox: RefCell<Vec<Command>>,
    flush_scheduled: Cell<bool>,
    touched: RefCell<HashMap<SessionId, i32>>,
    /// Connections with a read waiting for this shard's view to catch up.
    view_waiters: RefCell<std::collections::HashSet<u32>>,
    to_seq: ConnectedSender<ToSequencer>,
    next_conn: Cell<u32>,
    /// Bytes queued for the clients of this shard, not written yet.
    outbound: Cell<usize>,
    /// This shard's part of `conn::SEND_QUEUE_TOTAL_BYTES`.
    outbound_limit: usize,
}

impl Shard {
    pub fn origin(&self, conn: u32) -> Origin {
        Origin::new(self.shared.instance, self.id, conn)
    }

    pub fn next_conn_id(&self) -> u32 {
        let id = self.next_conn.get();
        self.next_conn.set(id.wrapping_add(1).max(1));
        id
    }

    /// Queue a write for the sequencer; all writes queued during one turn of this shard's
    /// executor travel in one message.
    pub fn submit(self: &Rc<Self>, cmd: Command) {
        self.outbox.borrow_mut().push(cmd);
        if !self.flush_scheduled.replace(true) {
            let shard = self.clone();
            glommio::spawn_local(async move {
                futures_lite::future::yield_now().await;
                shard.flush_scheduled.set(false);
                let cmds = std::mem::take(&mut *shard.outbox.borrow_mut());
                if !cmds.is_empty() {
                    shard.shared.metrics.shard_batches.inc();
                    let _ = shard.to_seq.send(ToSequencer::Commands(cmds)).await;
                }
            })
            .detach();
        }
    }

    pub fn outbound_add(&self, n: usize) {
        self.outbound.set(self.outbound.get() + n);
    }

    /// Bytes were written (or dropped with their connection). When that takes the shard's
    /// total back under its limit, every connection may read again (and answer held reads):
    /// woken from a task of its own, so no caller is re-entered.
    pub fn outbound_sub(self: &Rc<Self>, n: usize) {
        let was_full = self.outbound_full();
        self.outbound.set(self.outbound.get().saturating_sub(n));
        if was_full && !self.outbound_full() {
            let shard = self.clone();
            glommio::spawn_local(async move {
                let conns: Vec<Rc<ConnHandle>> = shard.conns.borrow().values().cloned().collect();
                for c in conns {
                    c.room();
                }
            })
            .detach();
        }
    }

    /// Whether this shard's connections together have more queued than its limit.
    pub fn outbound_full(&self) -> bool {
        self.outbound.get() >= self.outbound_limit
    }

    pub fn wait_for_view(&self, conn: u32) {
        self.view_waiters.borrow_mut().insert(conn);
    }

    pub fn touch(&self, session: SessionId, timeout_ms: i32) {
        if session != 0 {
            self.touched.borrow_mut().insert(session, timeout_ms);
        }
    }

    /// Ask every shard (through the sequencer) for its diagnostics.
    pub async fn collect(&self) -> Result<async_channel::Receiver<super::Diag>, ()> {
        let (tx, rx) = async_channel::unbounded();
        self.to_seq
            .send(ToSequencer::Collect(tx))
            .await
            .map_err(|_| ())?;
        Ok(rx)
    }

    pub async fn attach(&self, session: SessionId, conn: u32) {
        self.sessions.borrow_mut().insert(session, conn);
        let _ = self
            .to_seq
            .send(ToSequencer::Attach {
                session,
                origin: self.origin(conn),
            })
            .await;
    }

    /// A new connection. The first one of an idle shard takes the newest view: the
    /// sequencer sent this shard nothing while it had no connection.
    pub fn register_conn(&self, conn: Rc<ConnHandle>) {
        self.conns.borrow_mut().insert(conn.id, conn);
        let count = &self.shared.shard_conns[self.id as usize];
        if count.fetch_add(1, Ordering::SeqCst) == 0 {
            // Pairs with the sequencer's fence between publishing `latest` and reading the
            // counts: either it sees this connection and sends the next update, or this load
            // sees that update's view (or both; the round number drops the duplicate).
            std::sync::atomic::fence(Ordering::SeqCst);
            let latest = self.shared.latest.lock().map(|l| l.clone());
            if let Ok((round, view)) = latest {
                if round > self.round.get() {
                    self.round.set(round);
                    *self.view.borrow_mut() = view;
                }
            }
        }
    }

    pub fn detach_conn(&self, conn: u32, session: SessionId) {
        if self.conns.borrow_mut().remove(&conn).is_some() {
            self.shared.shard_conns[self.id as usize].fetch_sub(1, Ordering::SeqCst);
        }
        let mut sessions = self.sessions.borrow_mut();
        if sessions.get(&session) == Some(&conn) {
            sessions.remove(&session);
        }
        self.watches.borrow_mut().remove_conn(conn as u64);
    }

    fn handle_update(&self, update: &Update) {
        if update.round <= self.round.get() {
            // Overtaken by the view taken when the first connection came: nothing in it can
            // be for a connection of this shard, and its events happened before any watch here.
            return;
        }
        self.round.set(update.round);
        *self.view.borrow_mut() = update.view.clone();
        // Nothing below adds or removes connections (closing only signals the connection's
        // own task), so the map can stay borrowed.
        let conns = self.conns.borrow();
        // Events first, then replies: a reply (or a read released by it) may observe any change
        // of this update, so every event of the update must already be queued.
        for applied in &update.applied {
            if applied.triggers.is_empty() {
                continue;
            }
            // ACLs at delivery (ZOOKEEPER-4799): each trigger carries the ACL its node had at
            // that change, checked against the watcher's identities as they are now.
            let mut may_read = |conn: u64, acl: &[crate::proto::types::Acl]| {
                conns.get(&(conn as u32)).is_some_and(|c| c.may_read(acl))
            };
            let fired = self
                .watches
                .borrow_mut()
                .fire(&applied.triggers, &mut may_read);
            if fired.filtered > 0 {
                let metrics = &self.shared.metrics;
                metrics.watch_events_filtered.add(fired.filtered as u64);
                tracing::trace!(
                    zxid = applied.zxid,
                    withheld = fired.filtered,
                    "watch events not delivered: the watcher may not READ the node (filtered by ACL)"
                );
            }
            self.shared
                .metrics
                .watch_events
                .add(fired.events.len() as u64);
            for (conn, event, path) in fired.events {
                if let Some(c) = conns.get(&(conn as u32)) {
                    c.send_event(event, &path);
                }
            }
        }
        for applied in &update.applied {
            if let Some(c) = self.own_conn(&conns, applied.origin) {
                c.on_applied(applied);
            }
            for ended in &applied.ended_sessions {
                self.shared.watch_budget.forget_session(*ended);
                let conn = self.sessions.borrow().get(ended).copied();
                if let Some(c) = conn.and_then(|id| conns.get(&id)) {
                    c.session_ended(*ended);
                }
            }
        }
    }

    fn deliver_syncs(&self, update: &Update) {
        let conns = self.conns.borrow();
        for &(origin, xid) in &update.synced {
            if let Some(c) = self.own_conn(&conns, origin) {
                c.on_synced(xid);
            }
        }
    }

    /// The connection of this process and shard that `origin` names, if it is still open.
    fn own_conn<'a>(
        &self,
        conns: &'a HashMap<u32, Rc<ConnHandle>>,
        origin: u64,
    ) -> Option<&'a Rc<ConnHandle>> {
        let origin = Origin(origin);
        let mine = origin.instance() == self.shared.instance && origin.shard() == self.id;
        mine.then(|| conns.get(&origin.conn())).flatten()
    }

    /// Asks the sequencer for a linearizable sync point for this connection's request.
    pub async fn sync(&self, conn: u32, xid: i32) {
        let origin = self.origin(conn);
        let _ = self.to_seq.send(ToSequencer::Sync { origin, xid }).await;
    }

    fn close_conns(&self, only_writers: bool, why: &str) {
        let conns: Vec<Rc<ConnHandle>> = self
            .conns
            .borrow()
            .values()
            .filter(|c| !only_writers || c.has_write_in_flight())
            .cloned()
            .collect();
        if only_writers {
            self.shared.metrics.writers_dropped.add(conns.len() as u64);
        }
        for c in conns {
            c.close(why);
        }
    }

    fn release_view_waiters(&self) {
        let waiting: Vec<u32> = self.view_waiters.borrow_mut().drain().collect();
        for id in waiting {
            let conn = self.conns.borrow().get(&id).cloned();
            if let Some(c) = conn {
                c.drain();
            }
        }
    }

    fn handle_detach(&self, session: SessionId, keep: Origin) {
        // Scan rather than look up `sessions`: when both connections are on this shard the
        // map already points at the new one. Resumes are rare.
        let stale: Vec<Rc<ConnHandle>> = self
            .conns
            .borrow()
            .values()
            .filter(|c| c.session() == session && self.origin(c.id) != keep)
            .cloned()
            .collect();
        for c in stale {
            c.close("session resumed on another connection");
        }
    }
}

/// Takes client connections for as long as the shard runs (`listener::BudgetedListener`:
/// while the descriptor budget lasts).
async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    let mut listener = BudgetedListener::new(listener, shard.shared.descriptors.clone(), "client");
    loop {
        let (stream, permit) = listener.accept(&shard.shared).await;
        glommio::spawn_local(conn::serve(shard.clone(), stream, permit)).detach();
    }
}

pub async fn run(
    id: u16,
    shared: Arc<Shared>,
    to_seq: SharedSender<ToSequencer>,
    from_seq: SharedReceiver<ToShard>,
) -> Result<(), ServerError> {
    // Receiver first: the sequencer's sender to this shard waits for it (and this shard's
    // sender to the sequencer waits for the sequencer's receiver in turn).
    let from_seq = from_seq.connect().await;
    let to_seq = to_seq.connect().await;

    // Serve nothing until the log is replayed and the first view arrives.
    let first = loop {
        match from_seq.recv().await {
            Some(ToShard::Update(u)) => break u,
            Some(ToShard::Stop) | None => return Ok(()),
            Some(_) => {}
        }
    };
    let shard = Rc::new(Shard {
        id,
        shared: shared.clone(),
        view: RefCell::new(first.view.clone()),
        round: Cell::new(0),
        watches: RefCell::new(WatchRegistry::new(
            shared.config.max_watches_per_session,
            shared.watch_budget.clone(),
        )),
        conns: RefCell::new(HashMap::new()),
        sessions: RefCell::new(HashMap::new()),
        outbox: RefCell::new(Vec::new()),
        flush_scheduled: Cell::new(false),
        touched: RefCell::new(HashMap::new()),
        view_waiters: RefCell::new(Default::default()),
        to_seq,
        next_conn: Cell::new(rand::random::<u32>().max(1)),
        outbound: Cell::new(0),
        outbound_limit: conn::SEND_QUEUE_TOTAL_BYTES / shared.config.shards.max(1),
    });
    shard.handle_update(&first);

    let listener = TcpListener::bind(shared.config.client_addr).map_err(|e| {
        ServerError::Startup(format!(
            "cannot listen on {}: {e}",
            shared.config.client_addr
        ))
    })?;
    if id == 0 {
        tracing::info!(addr = %shared.config.client_addr, shards = shared.config.shards, "listening");
    }
    let acceptor = glommio::spawn_local(accept_loop(shard.clone(), listener));
    let toucher = {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(TOUCH_INTERVAL).await;
                let touched: Vec<(SessionId, i32)> = shard.touched.borrow_mut().drain().collect();
                if !touched.is_empty() {
                    let _ = shard.to_seq.send(ToSequencer::Touch(touched)).await;
                }
            }
        })
    };

    while let Some(msg) = from_seq.recv().await {
        match msg {
            ToShard::Update(update) => {
                shard.handle_update(&update);
                shard.deliver_syncs(&update);
                shard.release_view_waiters();
            }
            ToShard::DropWriters(why) => shard.close_conns(true, why),
            ToShard::Unserve => shard.close_conns(false, "this member lost its leader"),
            ToShard::Detach { session, keep } => shard.handle_detach(session, keep),
            ToShard::Collect(reply) => {
                let _ = reply.try_send(shard.diagnostics());
            }
            ToShard::Stop => break,
        }
    }
    drop(acceptor);
    drop(toucher);
    let conns: Vec<Rc<ConnHandle>> = shard.conns.borrow().values().cloned().collect();
    for c in conns {
        c.close("server shutting down");
    }
    // Give writers a moment to flush replies already queued.
    glommio::timer::sleep(Duration::from_millis(50)).await;
    shared.serving.store(false, Ordering::SeqCst);
    Ok(())
}

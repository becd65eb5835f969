//! A TCP listener that takes a connection only with a descriptor from its budget
//! (`descriptors`): the client port of every shard and the peer port share it.
//!
//! When the budget is spent, or `accept` finds no descriptor (EMFILE/ENFILE), it stops taking
//! connections (they wait in the kernel's backlog) and tries again after a short, growing
//! pause (`AcceptBackoff`), logged and counted (`rk_accept_pauses`) once per episode.

use std::sync::Arc;

use glommio::net::{TcpListener, TcpStream};

use super::descriptors::{
    is_exhaustion, AcceptBackoff, DescriptorBudget, DescriptorPermit, ACCEPT_BACKOFF_MIN,
};
use super::Shared;

pub struct BudgetedListener {
    listener: TcpListener,
    budget: Arc<DescriptorBudget>,
    backoff: AcceptBackoff,
    /// Names the listener in logs: "client" or "peer".
    what: &'static str,
}

impl BudgetedListener {
    pub fn new(
        listener: TcpListener,
        budget: Arc<DescriptorBudget>,
        what: &'static str,
    ) -> BudgetedListener {
        BudgetedListener {
            listener,
            budget,
            backoff: AcceptBackoff::default(),
            what,
        }
    }

    /// The next connection, with the permit its descriptor holds (keep it as long as the
    /// socket lives). Waits, never fails.
    pub async fn accept(&mut self, shared: &Shared) -> (TcpStream, DescriptorPermit) {
        loop {
            let Some(permit) = self.budget.try_acquire() else {
                self.pause(shared, "the descriptor budget is spent").await;
                continue;
            };
            match self.listener.accept().await {
                Ok(stream) => {
                    if let Some(tries) = self.backoff.resumed() {
                        tracing::info!(tries, "accepting {} connections again", self.what);
                    }
                    return (stream, permit);
                }
                Err(e) if is_exhaustion(e.raw_os_error()) => {
                    drop(permit);
                    self.pause(shared, "no file descriptor left").await;
                }
                Err(e) => {
                    drop(permit);
                    tracing::warn!("{} accept failed: {e}", self.what);
                    glommio::timer::sleep(ACCEPT_BACKOFF_MIN).await;
                }
            }
        }
    }

    async fn pause(&mut self, shared: &Shared, why: &str) {
        let (delay, first) = self.backoff.pause();
        if first {
            shared.metrics.accept_pauses.inc();
            tracing::warn!(
                budget = self.budget.capacity(),
                in_use = self.budget.in_use(),
                "not accepting {} connections for now: {why}",
                self.what
            );
        }
        glommio::timer::sleep(delay).await;
    }
}

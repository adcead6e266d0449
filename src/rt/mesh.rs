//! Cross-shard channels: glommio's channel mesh (bounded lock-free SPSC rings, one per
//! ordered shard pair) behind a local outbox per destination.
//!
//! Rule (glommio #555): the task that drains a shard's inbound rings never awaits a send,
//! or two shards with full rings deadlock. So senders only `push` into a local, unbounded
//! `VecDeque`; one flusher task per shard moves outboxes into the rings with `try_send_to`
//! and keeps what does not fit. Backpressure is applied where it is safe: publishers check
//! [`Outbox::backlog`] and pause their socket reads.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::GlommioError;

use super::sync::Notify;

pub type Mesh<T> = MeshBuilder<T, Full>;

/// Most messages moved into a ring as one batch (one SPSC slot, at most one wake-up).
const BATCH: usize = 64;

pub fn new_mesh<T: Send + 'static>(shards: usize, capacity: usize) -> Mesh<T> {
    MeshBuilder::full(shards, capacity)
}

/// Join a mesh, failing after `timeout` (a shard that died at start-up would otherwise
/// hang every other shard in `join`).
pub async fn join<T: Send + 'static>(
    mesh: Mesh<T>,
    timeout: Duration,
) -> Result<(Senders<T>, Receivers<T>), String> {
    glommio::timer::timeout(timeout, mesh.join())
        .await
        .map_err(|e| format!("joining the shard mesh failed: {e}"))
}

/// Per-destination outboxes in front of a mesh's senders. Owned by one shard.
pub struct Outbox<T: Send> {
    senders: Senders<Vec<T>>,
    queues: RefCell<Vec<VecDeque<T>>>,
    queued: Cell<usize>,
    /// Messages ever queued (all destinations), for the metrics.
    pushed: Cell<u64>,
    wake: Notify,
    closed: Cell<bool>,
}

impl<T: Send + 'static> Outbox<T> {
    pub fn new(senders: Senders<Vec<T>>) -> Rc<Outbox<T>> {
        let n = senders.nr_consumers();
        Rc::new(Outbox {
            senders,
            queues: RefCell::new((0..n).map(|_| VecDeque::new()).collect()),
            queued: Cell::new(0),
            pushed: Cell::new(0),
            wake: Notify::new(),
            closed: Cell::new(false),
        })
    }

    /// This shard's index in the mesh.
    pub fn me(&self) -> usize {
        self.senders.peer_id()
    }

    pub fn peers(&self) -> usize {
        self.senders.nr_consumers()
    }

    /// Queue `msg` for shard `dst` (never blocks, never fails; bounded by the callers'
    /// backpressure on [`Outbox::backlog`]).
    pub fn push(&self, dst: usize, msg: T) {
        if let Some(q) = self.queues.borrow_mut().get_mut(dst) {
            q.push_back(msg);
            self.queued.set(self.queued.get() + 1);
            self.pushed.set(self.pushed.get() + 1);
            self.wake.notify();
        }
    }

    /// Messages queued locally, not yet in a ring.
    pub fn backlog(&self) -> usize {
        self.queued.get()
    }

    /// Messages ever queued, to any destination.
    pub fn pushed(&self) -> u64 {
        self.pushed.get()
    }

    pub fn close(&self) {
        self.closed.set(true);
        self.wake.notify();
    }

    /// The flusher: runs for the shard's lifetime. Moves messages into the rings; when a
    /// ring is full it retries shortly without blocking anything else.
    pub async fn run_flusher(self: Rc<Self>) {
        loop {
            if self.queued.get() == 0 {
                if self.closed.get() {
                    return;
                }
                self.wake.notified().await;
                continue;
            }
            let mut stuck = false;
            {
                let mut queues = self.queues.borrow_mut();
                for (dst, q) in queues.iter_mut().enumerate() {
                    while !q.is_empty() {
                        let n = q.len().min(BATCH);
                        let batch: Vec<T> = q.drain(..n).collect();
                        match self.senders.try_send_to(dst, batch) {
                            Ok(()) => self.queued.set(self.queued.get() - n),
                            Err(GlommioError::WouldBlock(glommio::ResourceType::Channel(b))) => {
                                for m in b.into_iter().rev() {
                                    q.push_front(m);
                                }
                                stuck = true;
                                break;
                            }
                            Err(_) => {
                                // Peer gone (shutdown): drop what is queued for it.
                                self.queued.set(self.queued.get() - n - q.len());
                                q.clear();
                                break;
                            }
                        }
                    }
                }
            }
            if stuck {
                glommio::timer::sleep(Duration::from_micros(50)).await;
            } else {
                glommio::yield_if_needed().await;
            }
        }
    }
}

//! Publisher flow control: a subscriber that falls behind slows down the publishers that
//! feed it, for a bounded time.
//!
//! Without it, publishers on a shard are read as fast as the CPU allows and their messages
//! pile into the subscriber's queue faster than its writer can drain it: at QoS 0 most are
//! evicted unseen, at QoS ≥ 1 the queue fills and drops. With it, a publisher whose message
//! lands in a *congested* session (online, queue over half its limit) stops reading its
//! socket — its further messages wait in its TCP window, and at QoS ≥ 1 its acks wait too —
//! until some congested session drains to a quarter of its limit. A session that stays
//! congested while its socket accepts nothing for `slow_consumer_ms` is marked *slow*:
//! publishers stop waiting for it and its queue limits alone apply (QoS 0 evicted first, then
//! drops, all counted) until it has drained its queue completely. A subscriber that reads —
//! however loaded the shard is (say 8 MiB messages to 100 subscribers) — is never declared
//! slow: its publishers are throttled to the rate it drains instead, and nothing is dropped.
//!
//! Owned by one shard: the state lives in [`Shard`](crate::shard::Shard), the session flag in
//! [`SessionCell`].

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::rt::sync::Signal;
use crate::rt::{clock_ms, with_timeout};
use crate::session::{Limits, Session};
use crate::shard::SessionCell;

/// A session's standing towards its publishers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Standing {
    /// Keeps up (or is offline).
    #[default]
    Clear,
    /// Queue over the high-water mark while online: publishers feeding it pause.
    Congested,
    /// Stayed congested past the timeout: nobody waits for it until its queue is empty.
    Slow,
}

/// The shard's flow-control state.
pub struct Pressure {
    /// Congested sessions and since when ([`clock_ms`]).
    congested: RefCell<Vec<(Rc<SessionCell>, u32)>>,
    /// The message just delivered landed in a congested session (read by the publisher).
    hit: Cell<bool>,
    /// Fired whenever a congested session clears (or is declared slow).
    relieved: Signal,
    high_msgs: usize,
    high_bytes: usize,
    low_msgs: usize,
    low_bytes: usize,
    /// `None`: flow control is off.
    timeout: Option<Duration>,
}

impl Pressure {
    pub fn new(limits: &Limits, slow_consumer_ms: u64) -> Pressure {
        Pressure {
            congested: RefCell::default(),
            hit: Cell::new(false),
            relieved: Signal::new(),
            high_msgs: (limits.max_queued_messages as usize / 2).max(1),
            high_bytes: (limits.max_queued_bytes as usize / 2).max(1),
            low_msgs: limits.max_queued_messages as usize / 4,
            low_bytes: limits.max_queued_bytes as usize / 4,
            timeout: (slow_consumer_ms > 0).then(|| Duration::from_millis(slow_consumer_ms)),
        }
    }

    /// After a message was queued for `cell`, whose connection is online.
    pub fn on_enqueue(&self, cell: &Rc<SessionCell>, st: &Session, m: &Metrics) {
        match cell.standing.get() {
            Standing::Clear => {
                if self.timeout.is_some()
                    && (st.queued() >= self.high_msgs || st.queued_bytes() >= self.high_bytes)
                {
                    cell.standing.set(Standing::Congested);
                    self.congested.borrow_mut().push((cell.clone(), clock_ms()));
                    Metrics::inc(&m.congestions);
                    self.hit.set(true);
                }
            }
            Standing::Congested => self.hit.set(true),
            Standing::Slow => {}
        }
    }

    /// After the writer took messages from `cell`'s queue.
    pub fn on_dequeue(&self, cell: &SessionCell, st: &Session) {
        match cell.standing.get() {
            Standing::Clear => {}
            Standing::Congested => {
                if st.queued() <= self.low_msgs && st.queued_bytes() <= self.low_bytes {
                    self.clear(cell);
                }
            }
            Standing::Slow => {
                if st.queued() == 0 {
                    cell.standing.set(Standing::Clear);
                }
            }
        }
    }

    /// The session's connection went away (or the session ended): nobody waits for it.
    pub fn release(&self, cell: &SessionCell) {
        match cell.standing.get() {
            Standing::Congested => self.clear(cell),
            Standing::Slow => cell.standing.set(Standing::Clear),
            Standing::Clear => {}
        }
    }

    fn clear(&self, cell: &SessionCell) {
        cell.standing.set(Standing::Clear);
        self.congested
            .borrow_mut()
            .retain(|(c, _)| !std::ptr::eq(Rc::as_ptr(c), cell));
        self.relieved.notify_all();
    }

    /// Whether the messages delivered since the last call reached a congested session.
    pub fn take_hit(&self) -> bool {
        self.hit.replace(false)
    }

    /// A publisher that hit a congested session waits here: until some congested session
    /// clears, or at most the timeout — after which every session congested that long is
    /// declared slow.
    pub async fn wait(&self, m: &Metrics) {
        let Some(timeout) = self.timeout else { return };
        if self.congested.borrow().is_empty() {
            return;
        }
        Metrics::inc(&m.publisher_pauses);
        if with_timeout(timeout, self.relieved.wait()).await.is_none() {
            self.expire(timeout, m);
        }
    }

    fn expire(&self, timeout: Duration, m: &Metrics) {
        let now = clock_ms();
        let limit = timeout.as_millis() as u32;
        let mut any = false;
        self.congested.borrow_mut().retain(|(c, since)| {
            // Stalled = congested *and* the socket accepted nothing, both for the timeout.
            let mut idle = now.wrapping_sub(*since);
            if let Some(conn) = c.conn.borrow().as_ref() {
                idle = idle.min(now.wrapping_sub(conn.progress_ms()));
            }
            if idle < limit {
                return true;
            }
            c.standing.set(Standing::Slow);
            Metrics::inc(&m.slow_consumers);
            tracing::info!(
                client = %c.state.borrow().client_id,
                queued = c.state.borrow().queued(),
                "slow consumer: publishers no longer wait for it; its queue limits apply"
            );
            any = true;
            false
        });
        if any {
            self.relieved.notify_all();
        }
    }
}

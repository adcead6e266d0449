//! The stats board: one slot per shard, written by that shard's ticker, read by the ops
//! HTTP thread and the `$SYS` task.
//!
//! A slot holds the shard's last snapshot (counters, gauges, journal figures) behind a
//! `Mutex` that is taken once per `stats_interval_ms` by the shard (with `try_lock`: if a
//! reader happens to hold it, the shard skips that round rather than wait) and briefly by
//! readers to clone it; the heartbeat and start-up phase are plain atomics, so `/health`
//! and `/ready` never touch a lock.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::metrics::{Histogram, Metrics, HIST_BUCKETS};
use crate::shard::Shard;

/// A shard's start-up progress, as `/ready` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Opening the journal, installing recovered state.
    Starting = 0,
    /// Recovered state installed and the start-up snapshot durable.
    Recovered = 1,
    /// Accepting connections on every listener.
    Listening = 2,
    /// Shutting down.
    Stopping = 3,
}

/// Gauges of one shard at its snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Client connections served by the shard (after CONNECT).
    pub connections: u64,
    /// Sessions whose home is the shard (online and offline).
    pub sessions: u64,
    /// Subscriptions of those sessions.
    pub subscriptions: u64,
    /// Distinct filters with local subscribers (the local trie).
    pub local_filters: u64,
    /// Filters in the shard's replica of the route table.
    pub route_filters: u64,
    /// Retained messages the shard owns, and their payload bytes.
    pub retained: u64,
    pub retained_bytes: u64,
    /// Messages queued in the shard's sessions (not yet sent), their payload bytes, and
    /// QoS 1/2 messages sent but not yet acknowledged.
    pub queued: u64,
    pub queued_bytes: u64,
    pub inflight: u64,
    /// Messages waiting in the outboxes to other shards (data, ctrl).
    pub data_outbox: u64,
    pub ctrl_outbox: u64,
    /// Messages ever queued to other shards (data, ctrl).
    pub data_sent: u64,
    pub ctrl_sent: u64,
    /// Microseconds the shard spent taking this snapshot.
    pub snapshot_us: u64,
}

/// A histogram's counts at a snapshot.
#[derive(Debug, Clone, Copy)]
pub struct HistSnap {
    pub buckets: [u64; HIST_BUCKETS],
    pub sum_us: u64,
}

impl Default for HistSnap {
    fn default() -> Self {
        HistSnap {
            buckets: [0; HIST_BUCKETS],
            sum_us: 0,
        }
    }
}

impl HistSnap {
    fn of(h: &Histogram) -> HistSnap {
        let mut s = HistSnap {
            sum_us: h.sum_us.get(),
            ..HistSnap::default()
        };
        for (d, b) in s.buckets.iter_mut().zip(&h.buckets) {
            *d = b.get();
        }
        s
    }

    /// Add `o` into `self` (histograms of several shards).
    pub fn merge(&mut self, o: &HistSnap) {
        for (d, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *d += b;
        }
        self.sum_us += o.sum_us;
    }
}

/// The journal's figures at a snapshot (durability none: absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct JournalSnap {
    pub records: u64,
    pub bytes_written: u64,
    pub live_bytes: u64,
    pub snapshots: u64,
    pub segments_made: u64,
    pub segments_retired: u64,
    pub segment_waits: u64,
    pub lost: u64,
    pub append: HistSnap,
    pub sync: HistSnap,
}

/// What a shard last published.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    /// False until the shard published once.
    pub taken: bool,
    /// Every counter, in the order of [`Metrics::KEYS`].
    pub counters: Vec<u64>,
    pub gauges: Gauges,
    pub journal: Option<JournalSnap>,
}

impl ShardSnapshot {
    /// A counter by name (`qos`: for per-QoS counters; `None` sums the levels).
    pub fn counter(&self, name: &str, qos: Option<u8>) -> u64 {
        Metrics::KEYS
            .iter()
            .zip(&self.counters)
            .filter(|((n, q, _), _)| *n == name && (qos.is_none() || *q == qos))
            .map(|(_, v)| *v)
            .sum()
    }
}

/// One shard's slot. Written by that shard; read by any thread.
#[derive(Debug)]
pub struct Slot {
    /// [`super::clock_ms`] of the shard's latest ticker round (0: none yet).
    pub heartbeat_ms: AtomicU64,
    phase: AtomicU8,
    snap: Mutex<ShardSnapshot>,
}

/// Every shard's slot, plus the process start. Shared by every thread (in `Global`).
#[derive(Debug)]
pub struct Board {
    pub slots: Vec<Slot>,
    pub started: Instant,
    /// [`super::clock_ms`] when the board was made (the age of a shard that never beat).
    pub created_ms: u64,
    /// Ops HTTP connections closed unanswered because the endpoint was busy.
    pub http_refused: AtomicU64,
    /// Ops HTTP requests answered (any status).
    pub http_requests: AtomicU64,
}

impl Default for Board {
    fn default() -> Self {
        Board::new(0)
    }
}

impl Board {
    pub fn new(shards: usize) -> Board {
        Board {
            slots: (0..shards)
                .map(|_| Slot {
                    heartbeat_ms: AtomicU64::new(0),
                    phase: AtomicU8::new(Phase::Starting as u8),
                    snap: Mutex::new(ShardSnapshot::default()),
                })
                .collect(),
            started: Instant::now(),
            created_ms: super::clock_ms(),
            http_refused: AtomicU64::new(0),
            http_requests: AtomicU64::new(0),
        }
    }

    /// The shard reached `phase`.
    pub fn set_phase(&self, shard: usize, phase: Phase) {
        if let Some(s) = self.slots.get(shard) {
            s.phase.store(phase as u8, Ordering::Release);
        }
    }

    pub fn phase(&self, shard: usize) -> Phase {
        match self
            .slots
            .get(shard)
            .map(|s| s.phase.load(Ordering::Acquire))
        {
            Some(2) => Phase::Listening,
            Some(1) => Phase::Recovered,
            Some(3) => Phase::Stopping,
            _ => Phase::Starting,
        }
    }

    /// The shard's ticker ran.
    pub fn beat(&self, shard: usize) {
        if let Some(s) = self.slots.get(shard) {
            s.heartbeat_ms.store(super::clock_ms(), Ordering::Relaxed);
        }
    }

    /// Milliseconds since the shard's last heartbeat (since start if it never beat).
    pub fn heartbeat_age_ms(&self, shard: usize) -> u64 {
        let last = self
            .slots
            .get(shard)
            .map_or(0, |s| s.heartbeat_ms.load(Ordering::Relaxed));
        super::clock_ms().saturating_sub(last.max(self.created_ms))
    }

    /// A copy of every shard's last snapshot.
    pub fn collect(&self) -> Vec<ShardSnapshot> {
        self.slots
            .iter()
            .map(|s| match s.snap.lock() {
                Ok(g) => g.clone(),
                Err(p) => p.into_inner().clone(),
            })
            .collect()
    }
}

/// Sessions visited between two yields of the stats walk (≈ 0.3 ms of work).
const WALK_CHUNK: usize = 8192;

impl Shard {
    /// Copy this shard's counters and gauges into its slot of the board. Skips the round if
    /// a reader holds the slot (the shard never waits for a reader).
    pub async fn publish_stats(&self) {
        // The session walk goes first, a chunk at a time with a yield between chunks, so a
        // shard with millions of sessions never pauses for the whole walk; only the busy time
        // is counted in `snapshot_us`.
        let mut busy = std::time::Duration::ZERO;
        let t = Instant::now();
        let keys = self.session_keys();
        let mut g = Gauges::default();
        busy += t.elapsed();
        for chunk in keys.chunks(WALK_CHUNK) {
            let t = Instant::now();
            self.for_sessions(chunk, |cell| {
                let st = cell.state.borrow();
                g.subscriptions += st.subs.len() as u64;
                g.queued += st.queued() as u64;
                g.queued_bytes += st.queued_bytes() as u64;
                g.inflight += st.inflight() as u64;
            });
            busy += t.elapsed();
            if keys.len() > WALK_CHUNK {
                futures_lite::future::yield_now().await;
            }
        }
        drop(keys);
        let t0 = Instant::now();
        let board = &self.global.ops;
        let Some(slot) = board.slots.get(self.id) else {
            return;
        };
        let Ok(mut snap) = slot.snap.try_lock() else {
            return;
        };
        self.metrics.values_into(&mut snap.counters);
        g.connections = self.conns.borrow().len() as u64;
        g.sessions = self.session_count() as u64;
        g.local_filters = self.subs.borrow().filters() as u64;
        g.route_filters = self.routes.borrow().len() as u64;
        g.data_outbox = self.data.backlog() as u64;
        g.ctrl_outbox = self.ctrl.backlog() as u64;
        g.data_sent = self.data.pushed();
        g.ctrl_sent = self.ctrl.pushed();
        {
            let r = self.retained.borrow();
            g.retained = r.len() as u64;
            g.retained_bytes = r.iter().map(|m| m.payload.len() as u64).sum();
        }
        snap.journal = self.journal().map(|j| {
            let st = &j.stats;
            JournalSnap {
                records: st.records.get(),
                bytes_written: st.bytes.get(),
                live_bytes: j.live_bytes(),
                snapshots: st.snapshots.get(),
                segments_made: st.segments_made.get(),
                segments_retired: st.segments_retired.get(),
                segment_waits: st.segment_waits.get(),
                lost: st.lost.get(),
                append: HistSnap::of(&st.append_latency),
                sync: HistSnap::of(&st.sync_latency),
            }
        });
        g.snapshot_us = (busy + t0.elapsed()).as_micros() as u64;
        snap.gauges = g;
        snap.taken = true;
    }
}

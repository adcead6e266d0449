//! One shard's log writer: appends records into the current mapped segment, rolls to the
//! next segment, flushes with group commit, and tells waiters what is durable.
//!
//! Single writer: only the shard's thread appends, so an append is a bounds check, a copy
//! into the mapping and two CRCs; no lock, no syscall. Durability by [`Mode`]:
//! - `process`: a record is durable once it is in the mapping (the page cache survives the
//!   broker process being killed);
//! - `batch`: the sync task wakes when something was appended, waits the sync interval,
//!   then flushes every segment written since the last flush with io_uring `fdatasync` and
//!   releases everything appended before it started: one flush per batch, whatever the
//!   number of records;
//! - `always`: the same without the wait; a flush starts as soon as the previous ends.
//!
//! A failed flush is not retried: the journal is marked failed, every waiter is told, and
//! nothing is acknowledged any more (the shard's data is recovered at the next start).
//! When no segment can be made (disk full), the journal is *full*: new messages are refused
//! (the caller answers the publisher) until a segment can be made again.
//!
//! Owned by its shard (`Rc`); the segment thread ([`super::segment`]) is its only helper.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::body::{self, kind, Rec};
use super::record::{self, Meta};
use super::segment::{Maker, Segment};
use crate::proto::{encode_publish, ProtocolVersion};
use crate::rt::fs::SyncHandle;
use crate::rt::sync::{Notify, Signal};
use crate::session::Publication;

/// How far a record is made durable before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No log: nothing survives a restart.
    None,
    /// In the mapping: survives the broker being killed, not the machine losing power.
    Process,
    /// Group commit every sync interval: survives power loss.
    Batch,
    /// A flush before every acknowledgement, without waiting to batch.
    Always,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "none" => Ok(Mode::None),
            "process" => Ok(Mode::Process),
            "batch" => Ok(Mode::Batch),
            "always" => Ok(Mode::Always),
            _ => Err(format!(
                "unknown durability {s:?} (none, process, batch, always)"
            )),
        }
    }
}

/// Why the journal did not take a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No segment could be made (disk full); the condition may clear.
    Full,
    /// A flush failed; nothing is acknowledged until a restart.
    Failed,
}

/// Journal counters (read by the shard's metrics).
#[derive(Debug, Default)]
pub struct Stats {
    pub records: Cell<u64>,
    pub bytes: Cell<u64>,
    pub syncs: Cell<u64>,
    pub sync_us_total: Cell<u64>,
    pub segment_waits: Cell<u64>,
    pub segments_made: Cell<u64>,
    pub segments_retired: Cell<u64>,
    pub lost: Cell<u64>,
    pub snapshots: Cell<u64>,
    /// Time to frame one record into the mapped segment (a segment roll included).
    pub append_latency: crate::metrics::Histogram,
    /// Time of one group-commit flush (fdatasync of the unsynced segments).
    pub sync_latency: crate::metrics::Histogram,
}

struct Active {
    seg: Segment,
    pos: usize,
    sync: Option<Rc<SyncHandle>>,
}

struct Log {
    /// Oldest first; the back is the one being written.
    segs: VecDeque<Active>,
    spare: Option<Segment>,
    next_no: u64,
    scratch: Vec<u8>,
    packet: BytesMut,
    /// Segment number holding the first record not yet flushed.
    unsynced_from: u64,
    /// Bytes appended since the last snapshot began, and the size of that snapshot.
    since_snapshot: u64,
    snapshot_bytes: u64,
}

/// One shard's log writer.
pub struct Journal {
    pub shard: usize,
    pub mode: Mode,
    pub dir: PathBuf,
    epoch: u32,
    seg_size: usize,
    sync_interval: Duration,
    /// Appending more than this since the last snapshot (and twice the snapshot's size)
    /// starts a new snapshot, after which older segments are deleted.
    compact_after: u64,
    log: RefCell<Log>,
    maker: Maker,
    /// Sequence of the last record appended (or id reserved).
    seq: Cell<u64>,
    /// Every record up to this sequence is durable in the configured mode.
    durable: Cell<u64>,
    failed: Cell<bool>,
    full: Cell<bool>,
    /// Woken on every append (the sync task waits on it).
    dirty: Notify,
    /// Every flush completion (and failure).
    synced: Signal,
    /// Woken when a snapshot becomes due (the shard's compactor task waits on it).
    pub compact_due: Notify,
    /// A snapshot is being written or flushed.
    pub compacting: Cell<bool>,
    /// Messages this shard logged that may still be referenced (queued anywhere, retained):
    /// a snapshot copies the live ones forward.
    live: RefCell<Vec<(u64, Weak<Publication>)>>,
    live_prune_at: Cell<usize>,
    pub stats: Stats,
    /// Flushes left before the injected failure (`RINGMQ_FAULT_FLUSH_FAILS_AFTER`).
    fault_flushes_left: Cell<Option<u64>>,
}

/// Settings of one shard's journal.
pub struct Settings {
    pub shard: usize,
    pub mode: Mode,
    pub dir: PathBuf,
    pub epoch: u32,
    pub segment_size: usize,
    pub sync_interval: Duration,
    pub compact_after: u64,
}

impl Journal {
    /// Open a fresh log in `s.dir` (created; must hold no segments) and make its first
    /// segment. Called on the shard's thread before it serves anyone.
    pub async fn open(s: Settings) -> std::io::Result<Rc<Journal>> {
        std::fs::create_dir_all(&s.dir)?;
        let prep = if s.mode == Mode::Process {
            super::segment::Prep::Writable
        } else {
            super::segment::Prep::Flushed
        };
        let maker = Maker::start(s.shard, s.dir.clone(), s.segment_size, prep)?;
        // The current segment and two ahead: making one includes a directory fsync, which
        // under a heavy write load waits for the file system's journal commit (100+ ms
        // measured here), longer than a busy shard takes to fill a segment's remainder.
        for no in 1..=3 {
            maker.request(no);
        }
        // Waited for without blocking the shard's thread (its peers are joining meanwhile).
        let deadline = Instant::now() + Duration::from_secs(60);
        let first = loop {
            if let Some(r) = maker.try_take() {
                break r?;
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("segment thread did not answer"));
            }
            crate::rt::sleep(Duration::from_millis(1)).await;
        };
        let sync = Some(Rc::new(SyncHandle::new(&first.file)?));
        let mut segs = VecDeque::new();
        segs.push_back(Active {
            seg: first,
            pos: 0,
            sync,
        });
        Ok(Rc::new(Journal {
            shard: s.shard,
            mode: s.mode,
            dir: s.dir,
            epoch: s.epoch,
            seg_size: s.segment_size,
            sync_interval: s.sync_interval,
            compact_after: s.compact_after,
            log: RefCell::new(Log {
                segs,
                spare: None,
                next_no: 4,
                scratch: Vec::new(),
                packet: BytesMut::new(),
                unsynced_from: 1,
                since_snapshot: 0,
                snapshot_bytes: 0,
            }),
            maker,
            seq: Cell::new(0),
            durable: Cell::new(0),
            failed: Cell::new(false),
            full: Cell::new(false),
            dirty: Notify::new(),
            synced: Signal::new(),
            compact_due: Notify::new(),
            compacting: Cell::new(false),
            live: RefCell::default(),
            live_prune_at: Cell::new(1024),
            stats: Stats::default(),
            fault_flushes_left: Cell::new(
                std::env::var("RINGMQ_FAULT_FLUSH_FAILS_AFTER")
                    .ok()
                    .and_then(|v| v.parse().ok()),
            ),
        }))
    }

    /// Whether acknowledgements must wait for a flush (batch, always).
    pub fn gates_acks(&self) -> bool {
        matches!(self.mode, Mode::Batch | Mode::Always)
    }

    pub fn is_full(&self) -> bool {
        self.full.get()
    }

    /// Sequence of the last record appended.
    pub fn last_seq(&self) -> u64 {
        self.seq.get()
    }

    /// Bytes of records in the segments still kept (not yet retired by a snapshot).
    pub fn live_bytes(&self) -> u64 {
        self.log.borrow().segs.iter().map(|a| a.pos as u64).sum()
    }

    /// Whether a new snapshot is due (the caller writes it: it knows the state).
    pub fn snapshot_due(&self) -> bool {
        let log = self.log.borrow();
        !self.compacting.get()
            && log.since_snapshot > self.compact_after.max(2 * log.snapshot_bytes)
    }

    /// Reserve a message id without writing (messages installed at recovery: their copies
    /// are written by the start-up snapshot, which keeps the id).
    pub fn reserve_id(&self) -> u64 {
        let s = self.seq.get() + 1;
        self.seq.set(s);
        body::msg_id(self.shard, s)
    }

    /// Append one record; returns its sequence.
    pub fn append(&self, rec: &Rec<'_>) -> Result<u64, Refused> {
        self.append_flagged(rec, 0)
    }

    /// Append one record with header flags (e.g. [`body::RESET`] on a `SESSION`).
    pub fn append_flagged(&self, rec: &Rec<'_>, flags: u8) -> Result<u64, Refused> {
        let mut log = self.log.borrow_mut();
        let mut scratch = std::mem::take(&mut log.scratch);
        let k = body::encode(&mut scratch, rec);
        let r = self.append_raw(&mut log, k, flags, &scratch);
        log.scratch = scratch;
        r
    }

    /// Log a message: `MSG` (or `RETAIN`) with the message as a v5 PUBLISH. `id` 0 means a
    /// new message: its id becomes this record's. Returns the message id.
    pub fn append_msg(&self, retain_rec: bool, id: u64, p: &MsgParts<'_>) -> Result<u64, Refused> {
        let mut log = self.log.borrow_mut();
        let id = if id == 0 {
            body::msg_id(self.shard, self.seq.get() + 1)
        } else {
            id
        };
        // The body (`body::put_msg` layout) is built in one buffer: the metadata, then the
        // PUBLISH encoded straight after its length slot, which is filled in afterwards —
        // the payload is copied once here and once into the mapping.
        let mut buf = std::mem::take(&mut log.packet);
        buf.clear();
        {
            use bytes::BufMut;
            buf.put_u64_le(id);
            buf.put_u64_le(p.expiry_ms);
            buf.put_u32_le(p.origin.len() as u32);
            buf.put_slice(p.origin);
            buf.put_u32_le(0);
        }
        let head = buf.len();
        let encoded = encode_publish(
            &mut buf,
            ProtocolVersion::V5,
            p.topic,
            p.payload,
            p.qos,
            p.retain,
            false,
            if p.qos as u8 > 0 { 1 } else { 0 },
            p.props,
        );
        if encoded.is_err() {
            // Decoded from a client or made by the broker within the same limits: a bug.
            tracing::error!("journal: cannot encode a message for the log");
            log.packet = buf;
            return Err(Refused::Failed);
        }
        let len = (buf.len() - head) as u32;
        buf[head - 4..head].copy_from_slice(&len.to_le_bytes());
        let k = if retain_rec { kind::RETAIN } else { kind::MSG };
        let r = self.append_raw(&mut log, k, 0, &buf);
        log.packet = buf;
        r.map(|_| id)
    }

    fn append_raw(&self, log: &mut Log, kind: u8, flags: u8, body: &[u8]) -> Result<u64, Refused> {
        let t0 = Instant::now();
        let r = self.append_timed(log, kind, flags, body);
        let us = t0.elapsed().as_micros() as u64;
        self.stats.append_latency.record_us(us);
        r
    }

    fn append_timed(
        &self,
        log: &mut Log,
        kind: u8,
        flags: u8,
        body: &[u8],
    ) -> Result<u64, Refused> {
        if self.failed.get() {
            self.stats.lost.set(self.stats.lost.get() + 1);
            return Err(Refused::Failed);
        }
        let need = record::framed_len(body.len());
        let fits = log
            .segs
            .back()
            .is_some_and(|a| a.pos + need <= self.seg_size);
        if !fits && !self.roll(log, need) {
            self.stats.lost.set(self.stats.lost.get() + 1);
            return Err(Refused::Full);
        }
        let seq = self.seq.get() + 1;
        let Some(a) = log.segs.back_mut() else {
            return Err(Refused::Full);
        };
        let meta = Meta {
            kind,
            flags,
            epoch: self.epoch,
            seq,
        };
        record::encode_into(&mut a.seg.map[a.pos..a.pos + need], meta, body);
        a.pos += need;
        self.seq.set(seq);
        let before = log.since_snapshot;
        log.since_snapshot += need as u64;
        let due = self.compact_after.max(2 * log.snapshot_bytes);
        if before <= due && log.since_snapshot > due {
            self.compact_due.notify();
        }
        self.stats.records.set(self.stats.records.get() + 1);
        self.stats.bytes.set(self.stats.bytes.get() + need as u64);
        if self.mode == Mode::Process {
            self.durable.set(seq);
        } else {
            self.dirty.notify();
        }
        Ok(seq)
    }

    /// Move to the next segment (made by the segment thread, ideally already waiting).
    fn roll(&self, log: &mut Log, need: usize) -> bool {
        if need > self.seg_size {
            tracing::error!(need, "journal: record larger than a segment");
            return false;
        }
        let next = match log.spare.take() {
            Some(s) => Some(Ok(s)),
            None => match self.maker.try_take() {
                Some(r) => Some(r),
                None => {
                    self.stats
                        .segment_waits
                        .set(self.stats.segment_waits.get() + 1);
                    self.maker.take_blocking(Duration::from_secs(10))
                }
            },
        };
        let seg = match next {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                self.set_full(&e);
                // Ask again: space may come back (the next roll takes the answer).
                self.maker.request(log.next_no);
                log.next_no += 1;
                return false;
            }
            None => {
                tracing::error!("journal: the segment thread did not deliver a segment");
                return false;
            }
        };
        if self.full.replace(false) {
            tracing::warn!(shard = self.shard, "journal: space available again");
        }
        self.stats
            .segments_made
            .set(self.stats.segments_made.get() + 1);
        let sync = match SyncHandle::new(&seg.file) {
            Ok(h) => Some(Rc::new(h)),
            Err(e) => {
                tracing::error!("journal: cannot open a flush handle: {e}");
                None
            }
        };
        log.segs.push_back(Active { seg, pos: 0, sync });
        self.maker.request(log.next_no);
        log.next_no += 1;
        true
    }

    fn set_full(&self, e: &std::io::Error) {
        if !self.full.replace(true) {
            tracing::error!(
                shard = self.shard,
                "journal: cannot make a segment ({e}); refusing QoS 1/2 publishes until space is free"
            );
        }
    }

    /// Pick up a segment the thread made after a failure (called by the ticker), so the
    /// *full* condition clears without waiting for the next record.
    pub fn poll_space(&self) {
        if !self.full.get() {
            return;
        }
        let mut log = self.log.borrow_mut();
        if log.spare.is_some() {
            return;
        }
        match self.maker.try_take() {
            Some(Ok(s)) => {
                log.spare = Some(s);
                self.full.set(false);
                tracing::warn!(shard = self.shard, "journal: space available again");
            }
            Some(Err(e)) => {
                self.set_full(&e);
                self.maker.request(log.next_no);
                log.next_no += 1;
            }
            None => {}
        }
    }

    /// Remember a logged message for snapshots.
    pub fn track(&self, id: u64, msg: &Arc<Publication>) {
        let mut live = self.live.borrow_mut();
        live.push((id, Arc::downgrade(msg)));
        if live.len() >= self.live_prune_at.get() {
            live.retain(|(_, w)| w.strong_count() > 0);
            self.live_prune_at.set((live.len() * 2).max(1024));
        }
    }

    /// Logged messages still referenced somewhere.
    pub fn live_messages(&self) -> Vec<Arc<Publication>> {
        let mut live = self.live.borrow_mut();
        live.retain(|(_, w)| w.strong_count() > 0);
        self.live_prune_at.set((live.len() * 2).max(1024));
        live.iter().filter_map(|(_, w)| w.upgrade()).collect()
    }

    /// Start a snapshot: the following records restate the shard's whole state, so move to
    /// a fresh segment first (everything before it can go once the snapshot is durable).
    /// Returns the `SNAP_BEGIN` sequence and the first segment number of the snapshot.
    pub fn begin_snapshot(&self) -> Result<(u64, u64), Refused> {
        self.compacting.set(true);
        let no = {
            let mut log = self.log.borrow_mut();
            let used = log.segs.back().map_or(0, |a| a.pos);
            if used > 0 && !self.roll(&mut log, self.seg_size) {
                self.compacting.set(false);
                return Err(Refused::Full);
            }
            log.since_snapshot = 0;
            log.segs.back().map_or(0, |a| a.seg.no)
        };
        match self.append(&Rec::SnapBegin) {
            Ok(seq) => Ok((seq, no)),
            Err(e) => {
                self.compacting.set(false);
                Err(e)
            }
        }
    }

    /// Finish a snapshot begun at `begin` in segment `first_no`: flush it, then retire the
    /// segments before it. The caller wrote the state in between without yielding.
    pub async fn end_snapshot(&self, begin: u64, first_no: u64) -> Result<(), Refused> {
        let ended = self.append(&Rec::SnapEnd { begin });
        {
            let mut log = self.log.borrow_mut();
            log.snapshot_bytes = log.since_snapshot;
        }
        let flushed = match ended {
            Ok(_) => self.flush().await,
            Err(e) => Err(e),
        };
        if flushed.is_ok() {
            let old: Vec<Segment> = {
                let mut log = self.log.borrow_mut();
                let mut old = Vec::new();
                while log.segs.front().is_some_and(|a| a.seg.no < first_no) {
                    if let Some(a) = log.segs.pop_front() {
                        old.push(a.seg);
                    }
                }
                old
            };
            self.stats
                .segments_retired
                .set(self.stats.segments_retired.get() + old.len() as u64);
            self.maker.retire(old);
            self.stats.snapshots.set(self.stats.snapshots.get() + 1);
        }
        self.compacting.set(false);
        flushed
    }

    /// Flush everything appended so far (any mode); on success it is durable.
    pub async fn flush(&self) -> Result<(), Refused> {
        if self.failed.get() {
            return Err(Refused::Failed);
        }
        let target = self.seq.get();
        let (handles, last_no) = {
            let log = self.log.borrow();
            let from = log.unsynced_from;
            let hs: Vec<Option<Rc<SyncHandle>>> = log
                .segs
                .iter()
                .filter(|a| a.seg.no >= from)
                .map(|a| a.sync.clone())
                .collect();
            (hs, log.segs.back().map_or(from, |a| a.seg.no))
        };
        let t0 = Instant::now();
        if let Some(e) = self.injected_failure() {
            self.fail(&e);
            return Err(Refused::Failed);
        }
        for h in handles {
            let r = match h {
                Some(h) => h.fdatasync().await,
                None => Err(std::io::Error::other("no flush handle for a segment")),
            };
            if let Err(e) = r {
                self.fail(&e);
                return Err(Refused::Failed);
            }
        }
        let us = t0.elapsed().as_micros() as u64;
        self.stats.sync_latency.record_us(us);
        self.stats.syncs.set(self.stats.syncs.get() + 1);
        self.stats
            .sync_us_total
            .set(self.stats.sync_us_total.get() + us);
        {
            let mut log = self.log.borrow_mut();
            log.unsynced_from = log.unsynced_from.max(last_no);
        }
        if target > self.durable.get() {
            self.durable.set(target);
        }
        self.synced.notify_all();
        Ok(())
    }

    /// Fault injection for tests of the failure path: with `RINGMQ_FAULT_FLUSH_FAILS_AFTER=N`
    /// in the environment, flushes after the first N fail (as a disk error would).
    fn injected_failure(&self) -> Option<std::io::Error> {
        let left = self.fault_flushes_left.get()?;
        if left == 0 {
            return Some(std::io::Error::other("injected flush failure"));
        }
        self.fault_flushes_left.set(Some(left - 1));
        None
    }

    fn fail(&self, e: &std::io::Error) {
        if !self.failed.replace(true) {
            tracing::error!(
                shard = self.shard,
                "journal: fdatasync failed ({e}); acknowledgements stop; restart the broker to recover from the log"
            );
        }
        self.synced.notify_all();
    }

    /// Whether the record `seq` is durable.
    pub fn is_durable(&self, seq: u64) -> bool {
        self.durable.get() >= seq
    }

    /// Wait until the record `seq` is durable. `Err`: it never will be (flush failed).
    pub async fn wait_durable(&self, seq: u64) -> Result<(), Refused> {
        loop {
            if self.durable.get() >= seq {
                return Ok(());
            }
            if self.failed.get() {
                return Err(Refused::Failed);
            }
            let w = self.synced.wait();
            if self.durable.get() >= seq || self.failed.get() {
                continue;
            }
            w.await;
        }
    }

    /// The group-commit task (batch and always modes). Ends when the journal fails or
    /// `stop` says so.
    pub async fn run_syncer(self: Rc<Self>, stop: impl Fn() -> bool) {
        if !self.gates_acks() {
            return;
        }
        let mut last = Instant::now();
        loop {
            while self.seq.get() <= self.durable.get() {
                if stop() {
                    return;
                }
                crate::rt::with_timeout(Duration::from_millis(100), self.dirty.notified()).await;
            }
            // One flush per interval at most; a flush that took longer than the interval
            // already let the next batch gather, so the next one starts at once.
            let since = last.elapsed();
            if self.mode == Mode::Batch && since < self.sync_interval {
                crate::rt::sleep(self.sync_interval - since).await;
            }
            last = Instant::now();
            if self.flush().await.is_err() {
                return;
            }
        }
    }
}

/// The parts of a message the journal writes.
pub struct MsgParts<'a> {
    pub topic: &'a [u8],
    pub payload: &'a [u8],
    pub qos: crate::proto::QoS,
    pub retain: bool,
    pub props: Option<&'a crate::proto::Properties>,
    pub origin: &'a [u8],
    pub expiry_ms: u64,
}

impl<'a> MsgParts<'a> {
    pub fn of(p: &'a Publication) -> MsgParts<'a> {
        MsgParts {
            topic: p.topic.as_bytes(),
            payload: &p.payload,
            qos: p.qos,
            retain: p.retain,
            props: p.props.as_ref(),
            origin: p.origin.as_bytes(),
            expiry_ms: p.expiry.map_or(0, wall_ms_of),
        }
    }
}

/// Wall-clock milliseconds (Unix) now.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The wall-clock time of a monotonic instant (at least 1, so 0 keeps meaning "none").
pub fn wall_ms_of(t: Instant) -> u64 {
    let now = Instant::now();
    let wall = wall_ms();
    let ms = if t >= now {
        wall + (t - now).as_millis() as u64
    } else {
        wall.saturating_sub((now - t).as_millis() as u64)
    };
    ms.max(1)
}

/// The monotonic instant of a wall-clock time.
pub fn instant_of(wall: u64) -> Instant {
    let now = Instant::now();
    let w = wall_ms();
    if wall >= w {
        now + Duration::from_millis(wall - w)
    } else {
        now.checked_sub(Duration::from_millis(w - wall))
            .unwrap_or(now)
    }
}

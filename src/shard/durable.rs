//! What a shard writes to its durable log ([`crate::journal`]), installing recovered state,
//! and snapshots.
//!
//! Only sessions that outlive their connection (Session Expiry Interval > 0, or 3.1.x clean
//! session 0) are logged; a session becomes logged when it first has an expiry, and then its
//! whole state is written. Per logged session the log mirrors, record by record, the
//! session's subscriptions, its queue's logged deliveries (QoS ≥ 1 of a logged message,
//! [`Delivery::logged`]), its in-flight window and its incoming QoS 2 ids. If a record of a
//! session cannot be written (disk full), the session is marked and its whole state is
//! restated with its next record, so the log never drifts from memory.
//!
//! Messages: a QoS ≥ 1 publish is logged once here on the receiving shard before routing
//! ([`Shard::admit_logged`]); deliveries refer to it by id. Retained messages are logged by
//! their owner shard as whole messages.

use std::rc::Rc;
use std::sync::Arc;

use crate::journal::body::{DeliveryRec, Flight, Rec, RESET};
use crate::journal::recover::{opts_byte, RDelivery, ShardState};
use crate::journal::writer::{wall_ms, MsgParts};
use crate::journal::{Journal, Refused};
use crate::metrics::Metrics;
use crate::proto::{PacketId, QoS, Utf8Bytes};
use crate::session::{Delivery, Publication, Session};

use super::{SessionCell, Shard};

/// Which per-packet-id record to write.
#[derive(Debug, Clone, Copy)]
pub enum PkidRec {
    /// The queue's front went in flight under this id.
    Send,
    /// PUBREC received: QoS 2 flow released.
    Rel,
    /// Acknowledged, completed or discarded: the in-flight entry is gone.
    Ack,
    /// PUBREL received for an incoming QoS 2 id.
    Q2Rel,
}

/// QoS 2 message ids a shard restates in each snapshot (`SEEN`): far more than can be in
/// the middle of being routed at any moment.
const RECENT_SEEN: usize = 4096;

fn delivery_rec<'a>(sid: u64, d: &'a Delivery) -> DeliveryRec<'a> {
    DeliveryRec {
        sid,
        msg: d.msg.id,
        qos: d.qos as u8,
        retain: d.retain,
        sub_ids: d.sub_ids().collect(),
        share: d.share().map_or(&[][..], |s| s.as_bytes()),
    }
}

impl Shard {
    /// This shard's log, if durability is on.
    pub fn journal(&self) -> Option<&Rc<Journal>> {
        self.journal.as_ref()
    }

    /// Log a publish before it is routed (QoS ≥ 1 only; the acknowledgement then waits
    /// for the log). `Err(Full)`: the disk is full (while it is, new messages are refused
    /// even if the current segment still has room: that room is for the deliveries of
    /// messages already taken); `Err(Failed)`: the log failed. The message comes back with
    /// the error (unlogged).
    pub fn admit_logged(
        &self,
        p: Publication,
    ) -> Result<Arc<Publication>, (Refused, Arc<Publication>)> {
        let j = match self.journal() {
            Some(j) if p.qos != QoS::AtMostOnce => j,
            _ => return Ok(Arc::new(p)),
        };
        let logged = if j.is_full() {
            Err(Refused::Full)
        } else {
            j.append_msg(false, 0, &MsgParts::of(&p))
        };
        match logged {
            Ok(id) => {
                let mut p = p;
                p.id = id;
                let msg = Arc::new(p);
                j.track(id, &msg);
                Ok(msg)
            }
            Err(e) => {
                if e == Refused::Full {
                    Metrics::inc(&self.metrics.publishes_refused_disk_full);
                }
                Err((e, Arc::new(p)))
            }
        }
    }

    /// A message the broker publishes itself (a will): logged if possible, routed anyway.
    pub fn broker_publication(&self, p: Publication) -> Arc<Publication> {
        self.admit_logged(p).unwrap_or_else(|(_, p)| {
            tracing::warn!(
                qos = p.qos as u8,
                "journal: a will is published without being logged"
            );
            p
        })
    }

    /// Append a record about `cell` if it is logged; restate the session first if an
    /// earlier record was lost.
    fn log_for(&self, cell: &SessionCell, st: &Session, rec: &Rec<'_>) -> Option<u64> {
        let j = self.journal()?;
        if !cell.logged.get() {
            return None;
        }
        if cell.log_broken.get() {
            self.log_state(cell, st);
            if cell.log_broken.get() {
                return None;
            }
        }
        match j.append(rec) {
            Ok(seq) => Some(seq),
            Err(_) => {
                cell.log_broken.set(true);
                None
            }
        }
    }

    /// The session's whole state: `SESSION` (reset), subscriptions, in-flight window,
    /// logged queue, incoming QoS 2 ids.
    pub fn log_state(&self, cell: &SessionCell, st: &Session) {
        let Some(j) = self.journal() else { return };
        let sid = cell.key.0;
        let restated = st.subs.len()
            + st.inflight_entries()
                .filter(|(_, d)| d.map_or(true, |d| d.logged()))
                .count()
            + st.queued_entries().filter(|d| d.logged()).count()
            + st.incoming_qos2_pending();
        let mut ok = j
            .append_flagged(
                &Rec::Session {
                    sid,
                    expiry: cell.expiry.get(),
                    offline_ms: cell.offline_ms.get(),
                    restated: restated.min(u32::MAX as usize) as u32,
                    client_id: st.client_id.as_bytes(),
                    user: cell.user.borrow().as_deref().map(str::as_bytes),
                },
                RESET,
            )
            .is_ok();
        for (filter, opts) in &st.subs {
            let id = self.subs.borrow().sub_id(filter, cell.key);
            ok &= j
                .append(&Rec::Sub {
                    sid,
                    opts: opts_byte(opts),
                    id,
                    filter: filter.as_bytes(),
                })
                .is_ok();
        }
        for (pkid, d) in st.inflight_entries() {
            let rec = match d {
                Some(d) if d.logged() => Rec::Inflight {
                    d: delivery_rec(sid, d),
                    pkid,
                    flight: Flight::Sent,
                },
                Some(_) => continue,
                None => Rec::Inflight {
                    d: DeliveryRec {
                        sid,
                        msg: 0,
                        qos: 2,
                        retain: false,
                        sub_ids: Vec::new(),
                        share: &[],
                    },
                    pkid,
                    flight: Flight::Released,
                },
            };
            ok &= j.append(&rec).is_ok();
        }
        for d in st.queued_entries().filter(|d| d.logged()) {
            ok &= j.append(&Rec::Enq(delivery_rec(sid, d))).is_ok();
        }
        for (pkid, msg, routed) in st.incoming_qos2_entries() {
            let rec = Rec::Q2In {
                sid,
                pkid,
                msg,
                routed,
                dests: 0,
            };
            ok &= j.append(&rec).is_ok();
        }
        cell.log_broken.set(!ok);
    }

    /// A session was opened or resumed with expiry `cell.expiry`: log it if it outlives its
    /// connection (its whole state the first time).
    pub fn log_session_open(&self, cell: &SessionCell) {
        if self.journal().is_none() {
            return;
        }
        cell.offline_ms.set(0);
        let st = cell.state.borrow();
        if !cell.logged.get() {
            if cell.expiry.get() == 0 {
                return;
            }
            cell.logged.set(true);
            self.log_state(cell, &st);
            return;
        }
        self.log_session_fields(cell, &st);
    }

    /// The session went offline (its expiry clock starts now).
    pub fn log_session_offline(&self, cell: &SessionCell) {
        if !cell.logged.get() {
            return;
        }
        cell.offline_ms.set(wall_ms());
        let st = cell.state.borrow();
        self.log_session_fields(cell, &st);
    }

    fn log_session_fields(&self, cell: &SessionCell, st: &Session) {
        self.log_for(
            cell,
            st,
            &Rec::Session {
                sid: cell.key.0,
                expiry: cell.expiry.get(),
                offline_ms: cell.offline_ms.get(),
                restated: 0,
                client_id: st.client_id.as_bytes(),
                user: cell.user.borrow().as_deref().map(str::as_bytes),
            },
        );
    }

    /// The session ended.
    pub fn log_session_end(&self, cell: &SessionCell) {
        if !cell.logged.replace(false) {
            return;
        }
        if let Some(j) = self.journal() {
            let _ = j.append(&Rec::SessionEnd { sid: cell.key.0 });
        }
    }

    /// A subscription was added or replaced; returns the record's sequence.
    pub fn log_sub(
        &self,
        cell: &SessionCell,
        filter: &Utf8Bytes,
        opts: &crate::proto::SubOptions,
        id: u32,
    ) -> Option<u64> {
        let st = cell.state.borrow();
        self.log_for(
            cell,
            &st,
            &Rec::Sub {
                sid: cell.key.0,
                opts: opts_byte(opts),
                id,
                filter: filter.as_bytes(),
            },
        )
    }

    pub fn log_unsub(&self, cell: &SessionCell, filter: &Utf8Bytes) {
        let st = cell.state.borrow();
        self.log_for(
            cell,
            &st,
            &Rec::Unsub {
                sid: cell.key.0,
                filter: filter.as_bytes(),
            },
        );
    }

    /// A logged delivery was queued.
    pub fn log_enq(&self, cell: &SessionCell, st: &Session, d: &Delivery) {
        if d.logged() && cell.logged.get() {
            self.log_for(cell, st, &Rec::Enq(delivery_rec(cell.key.0, d)));
        }
    }

    /// A per-packet-id transition of a logged session.
    pub fn log_pkid(&self, cell: &SessionCell, st: &Session, what: PkidRec, pkid: PacketId) {
        if !cell.logged.get() {
            return;
        }
        let sid = cell.key.0;
        let rec = match what {
            PkidRec::Send => Rec::Send { sid, pkid },
            PkidRec::Rel => Rec::Rel { sid, pkid },
            PkidRec::Ack => Rec::Ack { sid, pkid },
            PkidRec::Q2Rel => Rec::Q2Rel { sid, pkid },
        };
        self.log_for(cell, st, &rec);
    }

    /// An incoming QoS 2 publish was logged as `msg` and is about to be routed.
    pub fn log_q2in(&self, cell: &SessionCell, pkid: PacketId, msg: &Publication) {
        let mut st = cell.state.borrow_mut();
        st.note_incoming(pkid, Some(msg.id), false);
        let dests = self.routes.borrow().destinations(&msg.topic);
        self.log_for(
            cell,
            &st,
            &Rec::Q2In {
                sid: cell.key.0,
                pkid,
                msg: msg.id,
                routed: false,
                dests: dests.0,
            },
        );
    }

    /// Every shard an incoming QoS 2 publish went to has logged it.
    pub fn log_q2_routed(&self, cell: &SessionCell, st: &mut Session, pkid: PacketId) {
        st.note_incoming(pkid, None, true);
        self.log_for(
            cell,
            st,
            &Rec::Q2Routed {
                sid: cell.key.0,
                pkid,
            },
        );
    }

    /// This shard delivered QoS 2 message `id` to its subscribers (recovery re-delivers
    /// an unconfirmed QoS 2 message only on shards without this record). The latest ids
    /// are restated by every snapshot.
    pub fn log_seen(&self, id: u64) {
        let Some(j) = self.journal() else { return };
        let _ = j.append(&Rec::Seen { msg: id });
        let mut seen = self.recent_seen.borrow_mut();
        if seen.len() >= RECENT_SEEN {
            seen.pop_front();
        }
        seen.push_back(id);
    }

    /// `n` logged deliveries left the front of the queue unsent (expired).
    pub fn log_dropped_front(&self, cell: &SessionCell, st: &Session, n: usize) {
        for _ in 0..n {
            self.log_for(cell, st, &Rec::DropFront { sid: cell.key.0 });
        }
    }

    /// The retained message of a topic was set (or, empty payload, deleted) here.
    /// `$SYS` values are never logged (they are rebuilt after a start).
    pub fn log_retained(&self, msg: &Publication) {
        let Some(j) = self.journal() else { return };
        if crate::ops::sys::is_sys_topic(&msg.topic) {
            return;
        }
        let r = if msg.payload.is_empty() {
            j.append(&Rec::RetainDel {
                topic: msg.topic.as_bytes(),
            })
            .map(|_| 0)
        } else {
            j.append_msg(true, msg.id, &MsgParts::of(msg))
        };
        if r.is_err() {
            tracing::warn!(topic = %msg.topic, "journal: retained message not logged");
        }
    }

    /// Install what recovery placed on this shard (before it serves anyone). Returns the
    /// filters peers must learn about. Nothing is logged here: the start-up snapshot that
    /// follows writes it all.
    pub fn install(self: &Rc<Self>, st: ShardState) -> Vec<Utf8Bytes> {
        let Some(j) = self.journal().cloned() else {
            return Vec::new();
        };
        let msgs: Vec<Arc<Publication>> = st
            .msgs
            .into_iter()
            .map(|mut p| {
                if p.qos != QoS::AtMostOnce {
                    p.id = j.reserve_id();
                }
                let m = Arc::new(p);
                if m.id != 0 {
                    j.track(m.id, &m);
                }
                m
            })
            .collect();
        for i in st.retained {
            if let Some(m) = msgs.get(i) {
                self.retained.borrow_mut().set(m.clone(), usize::MAX);
            }
        }
        let delivery = |d: &RDelivery| -> Option<Delivery> {
            let msg = msgs.get(d.msg)?.clone();
            let mut out = Delivery::new(msg, d.qos, d.retain).with_sub_ids(&d.sub_ids);
            if let Some(s) = &d.share {
                out = out.through_share(s.clone());
            }
            Some(out)
        };
        let mut filters = Vec::new();
        let now_wall = wall_ms();
        let now = self.now_ms();
        for s in st.sessions {
            let cell = self.new_session(&s.client_id, s.expiry);
            cell.user.replace(s.user.clone());
            cell.logged.set(true);
            cell.offline_ms.set(s.offline_ms);
            {
                let mut state = cell.state.borrow_mut();
                for (filter, opts, _) in &s.subs {
                    state.subs.insert(filter.clone(), *opts);
                }
                for f in &s.inflight {
                    match f {
                        crate::journal::recover::RFlight::Sent(pkid, d) => {
                            if let Some(d) = delivery(d) {
                                state.restore_inflight(*pkid, Some(d));
                            }
                        }
                        crate::journal::recover::RFlight::Released(pkid) => {
                            state.restore_inflight(*pkid, None)
                        }
                    }
                }
                for d in &s.queue {
                    if let Some(d) = delivery(d) {
                        if state.enqueue(d) == crate::session::Enqueued::DroppedFull {
                            Metrics::inc(&self.metrics.dropped_queue_full);
                        }
                    }
                }
                // Recovery finished routing these: routed, and their old ids are gone.
                for pkid in &s.q2in {
                    state.incoming_qos2(*pkid);
                    state.note_incoming(*pkid, None, true);
                }
            }
            for (filter, opts, id) in s.subs {
                if self.subscribe_local(&filter, cell.key, opts, id) {
                    filters.push(filter);
                }
            }
            if s.expiry != u32::MAX {
                let left = (s.offline_ms + u64::from(s.expiry) * 1000).saturating_sub(now_wall);
                self.schedule_expiry(&cell, now + left);
            }
        }
        filters
    }

    /// The compactor: writes a snapshot whenever enough was appended since the last one
    /// (the journal wakes it from the append that crosses the threshold).
    pub async fn run_compactor(self: Rc<Self>) {
        let Some(j) = self.journal().cloned() else {
            return;
        };
        while !self.stopping.get() {
            crate::rt::with_timeout(std::time::Duration::from_secs(1), j.compact_due.notified())
                .await;
            if j.snapshot_due() && !self.stopping.get() {
                let _ = self.snapshot().await;
            }
        }
    }

    /// Write a snapshot of this shard's whole logged state into a fresh segment (without
    /// yielding, so nothing interleaves), then flush it and retire older segments.
    pub async fn snapshot(self: &Rc<Self>) -> Result<(), Refused> {
        let Some(j) = self.journal().cloned() else {
            return Ok(());
        };
        let (begin, first) = j.begin_snapshot()?;
        for m in j.live_messages() {
            let _ = j.append_msg(false, m.id, &MsgParts::of(&m));
        }
        let cells = self.session_cells();
        for cell in cells.iter().filter(|c| c.logged.get()) {
            let st = cell.state.borrow();
            self.log_state(cell, &st);
        }
        let seen: Vec<u64> = self.recent_seen.borrow().iter().copied().collect();
        for msg in seen {
            let _ = j.append(&Rec::Seen { msg });
        }
        // `$SYS` values are the broker's own, rebuilt after a start: never logged.
        let retained: Vec<Arc<Publication>> = self
            .retained
            .borrow()
            .iter()
            .filter(|m| !crate::ops::sys::is_sys_topic(&m.topic))
            .cloned()
            .collect();
        for m in retained {
            let _ = j.append_msg(true, m.id, &MsgParts::of(&m));
        }
        let r = j.end_snapshot(begin, first).await;
        if let Err(e) = r {
            tracing::error!(shard = self.id, "journal: snapshot not completed: {e:?}");
        }
        r
    }
}

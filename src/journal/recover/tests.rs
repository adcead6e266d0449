//! Replay against a model: random session histories are written as records into in-memory
//! segments, the log is cut at a random byte (a crash at any point of any write, including
//! inside snapshots and restatements), and what replay rebuilds must equal the model's state
//! after the last operation that was written completely.

use std::collections::{BTreeSet, VecDeque};

use bytes::BytesMut;
use proptest::prelude::*;

use super::*;
use crate::journal::body::{msg_id, DeliveryRec, Flight, MsgRec, Rec, RESET};
use crate::journal::record::{self, Meta};
use crate::proto::{encode_publish, ProtocolVersion, QoS};

#[derive(Debug, Clone)]
enum Op {
    Msg,
    /// The broker lets go of a message (no publish in flight holds it any more): it can no
    /// longer be queued, and a snapshot copies it only if a delivery refers to it.
    Release(u8),
    Enq(u8),
    Send,
    DropFront,
    Rel(u8),
    Ack(u8),
    Sub(u8),
    Unsub(u8),
    Q2In(u16),
    Q2Rel(u16),
    Restate,
    Snapshot,
    /// The broker restarts: the log is recovered (it must give the model's state) and a new
    /// generation begins with the recovered state, as `Shard::install` + snapshot write it.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Msg),
        1 => any::<u8>().prop_map(Op::Release),
        3 => any::<u8>().prop_map(Op::Enq),
        2 => Just(Op::Send),
        1 => Just(Op::DropFront),
        1 => any::<u8>().prop_map(Op::Rel),
        2 => any::<u8>().prop_map(Op::Ack),
        1 => (0u8..4).prop_map(Op::Sub),
        1 => (0u8..4).prop_map(Op::Unsub),
        1 => (1u16..6).prop_map(Op::Q2In),
        1 => (1u16..6).prop_map(Op::Q2Rel),
        1 => Just(Op::Restate),
        1 => Just(Op::Snapshot),
        1 => Just(Op::Restart),
    ]
}

/// The logical state of session 1: what replay must rebuild.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Model {
    subs: BTreeSet<u8>,
    /// Message numbers (the payload) in queue order.
    queue: VecDeque<u64>,
    /// (pkid, Some(message) = sent, None = released).
    inflight: Vec<(u16, Option<u64>)>,
    q2in: BTreeSet<u16>,
}

/// Writes records into segments of `seg` bytes, like the journal (a record never spans
/// segments; a snapshot starts a fresh one).
struct Log {
    segs: Vec<Vec<u8>>,
    seg: usize,
    seq: u64,
    /// Message number → id, for messages logged so far.
    msgs: Vec<(u64, u64)>,
    /// Messages the broker still holds (can still be queued).
    held: Vec<u64>,
    next_pkid: u16,
    /// `SNAP_BEGIN` of a snapshot written but whose older segments are not deleted yet.
    snap_begin: Option<u64>,
}

impl Log {
    fn put(&mut self, rec: &Rec<'_>, flags: u8) {
        let mut body = Vec::new();
        let kind = body::encode(&mut body, rec);
        let need = record::framed_len(body.len());
        if self.segs.last().is_none_or(|s| s.len() + need > self.seg) {
            self.segs.push(Vec::new());
        }
        self.seq += 1;
        let meta = Meta {
            kind,
            flags,
            epoch: 1,
            seq: self.seq,
        };
        record::encode(self.segs.last_mut().unwrap(), meta, &body);
    }

    fn put_msg(&mut self, n: u64, id: u64) {
        let mut pkt = BytesMut::new();
        encode_publish(
            &mut pkt,
            ProtocolVersion::V5,
            b"t",
            &n.to_le_bytes(),
            QoS::AtLeastOnce,
            false,
            false,
            1,
            None,
        )
        .unwrap();
        self.put(
            &Rec::Msg(MsgRec {
                id,
                expiry_ms: 0,
                origin: b"",
                publish: &pkt,
            }),
            0,
        );
    }

    fn id_of(&self, n: u64) -> u64 {
        self.msgs.iter().find(|(m, _)| *m == n).unwrap().1
    }

    fn delivery(&self, n: u64) -> DeliveryRec<'static> {
        DeliveryRec {
            sid: 1,
            msg: self.id_of(n),
            qos: 1,
            retain: false,
            sub_ids: vec![],
            share: &[],
        }
    }

    fn session(&mut self, restated: u32, flags: u8) {
        self.put(
            &Rec::Session {
                sid: 1,
                expiry: u32::MAX,
                offline_ms: 0,
                restated,
                client_id: b"c",
                user: Some(b"alice"),
            },
            flags,
        );
    }

    /// A snapshot's body: every message still referenced (queued, in flight, or held by
    /// the broker) copied with its id, then the session restated.
    fn copy_forward(&mut self, m: &Model) {
        let live: BTreeSet<u64> = m
            .queue
            .iter()
            .copied()
            .chain(m.inflight.iter().filter_map(|(_, n)| *n))
            .chain(self.held.iter().copied())
            .collect();
        for n in live {
            let id = self.id_of(n);
            self.put_msg(n, id);
        }
        self.restate(m);
    }

    /// The session's whole state, as `Shard::log_state` writes it.
    fn restate(&mut self, m: &Model) {
        let n = m.subs.len() + m.inflight.len() + m.queue.len() + m.q2in.len();
        self.session(n as u32, RESET);
        for f in &m.subs {
            let filter = format!("f/{f}");
            self.put(
                &Rec::Sub {
                    sid: 1,
                    opts: 1,
                    id: 0,
                    filter: filter.as_bytes(),
                },
                0,
            );
        }
        for (pkid, st) in &m.inflight {
            let (d, flight) = match st {
                Some(n) => (self.delivery(*n), Flight::Sent),
                None => (
                    DeliveryRec {
                        sid: 1,
                        msg: 0,
                        qos: 2,
                        retain: false,
                        sub_ids: vec![],
                        share: &[],
                    },
                    Flight::Released,
                ),
            };
            self.put(
                &Rec::Inflight {
                    d,
                    pkid: *pkid,
                    flight,
                },
                0,
            );
        }
        for n in &m.queue {
            let d = self.delivery(*n);
            self.put(&Rec::Enq(d), 0);
        }
        for pkid in &m.q2in {
            self.put(&q2in(*pkid), 0);
        }
    }
}

fn q2in(pkid: u16) -> Rec<'static> {
    Rec::Q2In {
        sid: 1,
        pkid,
        msg: 0,
        routed: true,
        dests: 0,
    }
}

/// Apply `op` to the model and write its records. Ops that do not apply are skipped.
fn step(log: &mut Log, m: &mut Model, op: &Op) {
    match op {
        Op::Msg => {
            let n = log.msgs.len() as u64 + 100;
            let id = msg_id(0, log.seq + 1);
            log.put_msg(n, id);
            log.msgs.push((n, id));
            log.held.push(n);
        }
        Op::Release(k) => {
            if !log.held.is_empty() {
                let i = *k as usize % log.held.len();
                log.held.remove(i);
            }
        }
        Op::Enq(k) => {
            if log.held.is_empty() {
                return;
            }
            let n = log.held[*k as usize % log.held.len()];
            let d = log.delivery(n);
            log.put(&Rec::Enq(d), 0);
            m.queue.push_back(n);
        }
        Op::Send => {
            let Some(n) = m.queue.pop_front() else { return };
            let pkid = log.next_pkid;
            log.next_pkid += 1;
            log.put(&Rec::Send { sid: 1, pkid }, 0);
            m.inflight.push((pkid, Some(n)));
        }
        Op::DropFront => {
            if m.queue.pop_front().is_some() {
                log.put(&Rec::DropFront { sid: 1 }, 0);
            }
        }
        Op::Rel(k) => {
            if m.inflight.is_empty() {
                return;
            }
            let i = *k as usize % m.inflight.len();
            let pkid = m.inflight[i].0;
            m.inflight[i].1 = None;
            log.put(&Rec::Rel { sid: 1, pkid }, 0);
        }
        Op::Ack(k) => {
            if m.inflight.is_empty() {
                return;
            }
            let i = *k as usize % m.inflight.len();
            let pkid = m.inflight.remove(i).0;
            log.put(&Rec::Ack { sid: 1, pkid }, 0);
        }
        Op::Sub(f) => {
            m.subs.insert(*f);
            let filter = format!("f/{f}");
            log.put(
                &Rec::Sub {
                    sid: 1,
                    opts: 1,
                    id: 0,
                    filter: filter.as_bytes(),
                },
                0,
            );
        }
        Op::Unsub(f) => {
            m.subs.remove(f);
            let filter = format!("f/{f}");
            log.put(
                &Rec::Unsub {
                    sid: 1,
                    filter: filter.as_bytes(),
                },
                0,
            );
        }
        Op::Q2In(p) => {
            m.q2in.insert(*p);
            log.put(&q2in(*p), 0);
        }
        Op::Q2Rel(p) => {
            m.q2in.remove(p);
            log.put(&Rec::Q2Rel { sid: 1, pkid: *p }, 0);
        }
        Op::Restate => log.restate(m),
        Op::Snapshot => {
            // A fresh segment; every referenced message is copied forward with its id.
            log.segs.push(Vec::new());
            let begin = log.seq + 1;
            log.put(&Rec::SnapBegin, 0);
            log.copy_forward(m);
            log.put(&Rec::SnapEnd { begin }, 0);
            log.snap_begin = Some(begin);
        }
        Op::Restart => {
            assert_eq!(
                replayed(&log.segs).as_ref(),
                Some(&*m),
                "recovery before a restart"
            );
            // Publishes in flight die with the process: only queued messages survive.
            log.held.clear();
            log.segs = vec![Vec::new()];
            log.put(&Rec::SnapBegin, 0);
            let begin = log.seq;
            log.copy_forward(m);
            log.put(&Rec::SnapEnd { begin }, 0);
        }
    }
}

/// After a snapshot is durable the journal deletes the segments before it.
fn retire(log: &mut Log) {
    let Some(begin) = log.snap_begin.take() else {
        return;
    };
    let first = log
        .segs
        .iter()
        .position(|s| {
            record::scan(s)
                .records
                .first()
                .is_some_and(|r| r.meta.seq == begin)
        })
        .unwrap();
    log.segs.drain(..first);
}

/// What replay rebuilt for session 1, in model terms.
fn replayed(segs: &[Vec<u8>]) -> Option<Model> {
    let mut fold = Fold::default();
    let mut report = Report::default();
    let names: Vec<String> = (0..segs.len()).map(|i| format!("seg{i}")).collect();
    let maps: Vec<(&str, &[u8])> = names
        .iter()
        .zip(segs)
        .map(|(n, s)| (n.as_str(), &s[..]))
        .collect();
    fold.replay(0, &maps, &mut report);
    let mut out = fold.place(1, 1, &mut report).pop()?;
    let s = out.sessions.pop()?;
    // The user name authorizes the offline session's deliveries after a restart.
    assert_eq!(s.user.as_deref(), Some("alice"));
    let num = |i: usize| u64::from_le_bytes(out.msgs[i].payload[..8].try_into().unwrap());
    Some(Model {
        subs: s
            .subs
            .iter()
            .map(|(f, _, _)| f.as_str()[2..].parse().unwrap())
            .collect(),
        queue: s.queue.iter().map(|d| num(d.msg)).collect(),
        inflight: s
            .inflight
            .iter()
            .map(|f| match f {
                RFlight::Sent(p, d) => (*p, Some(num(d.msg))),
                RFlight::Released(p) => (*p, None),
            })
            .collect(),
        q2in: s.q2in.iter().copied().collect(),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn replay_after_a_crash_anywhere_matches_the_model(
        ops in proptest::collection::vec(op(), 1..60),
        seg in prop_oneof![Just(512usize), Just(4096)],
        crash in any::<prop::sample::Index>(),
        cut_at in any::<prop::sample::Index>(),
        garbage in any::<bool>(),
    ) {
        let mut log = Log {
            segs: Vec::new(),
            seg,
            seq: 0,
            msgs: Vec::new(),
            held: Vec::new(),
            next_pkid: 1,
            snap_begin: None,
        };
        let mut m = Model::default();
        log.session(0, 0);
        // (last sequence written, model) after every op.
        let mut hist = vec![(log.seq, m.clone())];
        let crash = crash.index(ops.len());
        // A crash while a restart writes its new generation leaves that generation
        // uncommitted: the old one is read again (covered by the restart's own check).
        let crash_in_restart = matches!(ops[crash], Op::Restart);
        let mut at_crash = Vec::new();
        let mut min_cut = 0;
        for (i, o) in ops.iter().enumerate() {
            let before = (log.segs.len(), log.segs.last().map_or(0, Vec::len));
            step(&mut log, &mut m, o);
            if i == crash {
                // The crash comes while op `crash` is being written: before the deletion
                // that a completed snapshot allows. What earlier ops wrote is intact (it
                // was in the page cache, or flushed before any deletion relied on it).
                at_crash = log.segs.clone();
                min_cut = if log.segs.len() == before.0 { before.1 } else { 0 };
            }
            retire(&mut log);
            hist.push((log.seq, m.clone()));
        }
        // The whole log replays to the final model.
        prop_assert_eq!(replayed(&log.segs), Some(m.clone()));
        if crash_in_restart {
            return Ok(());
        }
        // A torn write: the newest segment cut at any byte (then zeros or garbage).
        let mut torn = at_crash;
        let last = torn.len() - 1;
        let cut = min_cut + cut_at.index(torn[last].len() - min_cut + 1);
        torn[last].truncate(cut);
        if garbage {
            torn[last].extend(std::iter::repeat_n(0xA5u8, 40));
        }
        let valid = torn
            .iter()
            .flat_map(|s| record::scan(s).records)
            .map(|r| r.meta.seq)
            .max()
            .unwrap_or(0);
        // Replay gives the model after the last op whose records all survived.
        let expected = hist
            .iter()
            .rev()
            .find(|(seq, _)| *seq <= valid)
            .map(|(_, m)| m.clone());
        prop_assert_eq!(replayed(&torn), expected);
    }
}

/// An incoming QoS 2 message logged with `Q2IN` whose routing the crash cut short is
/// delivered at recovery to the destination shards that did not deliver it (no `SEEN`),
/// and only to sessions that match and do not hold it.
#[test]
fn unfinished_qos2_routing_is_completed_once() {
    let run = |seen_on_1: bool, routed: bool| -> usize {
        // Shard 0: the publisher's session, its QoS 2 id and the message.
        let mut l0 = Log {
            segs: Vec::new(),
            seg: 4096,
            seq: 0,
            msgs: Vec::new(),
            held: Vec::new(),
            next_pkid: 1,
            snap_begin: None,
        };
        let id = msg_id(0, 1);
        l0.put_msg(7, id);
        l0.put(
            &Rec::Session {
                sid: 1,
                expiry: u32::MAX,
                offline_ms: 0,
                restated: 0,
                client_id: b"pub",
                user: None,
            },
            0,
        );
        l0.put(
            &Rec::Q2In {
                sid: 1,
                pkid: 9,
                msg: id,
                routed,
                dests: 0b10,
            },
            0,
        );
        // Shard 1: two persistent subscribers, one matching the topic.
        let mut l1 = Log {
            segs: Vec::new(),
            seq: 0,
            ..l0
        };
        l1.segs.clear();
        for (sid, cid, filter) in [(1u64, &b"s1"[..], &b"t"[..]), (2, b"s2", b"other")] {
            l1.put(
                &Rec::Session {
                    sid,
                    expiry: u32::MAX,
                    offline_ms: 0,
                    restated: 0,
                    client_id: cid,
                    user: None,
                },
                0,
            );
            l1.put(
                &Rec::Sub {
                    sid,
                    opts: 2,
                    id: 0,
                    filter,
                },
                0,
            );
        }
        if seen_on_1 {
            l1.put(&Rec::Seen { msg: id }, 0);
        }
        let mut fold = Fold::default();
        let mut report = Report::default();
        let segs0: Vec<(&str, &[u8])> = l0.segs.iter().map(|s| ("0", &s[..])).collect();
        let segs1: Vec<(&str, &[u8])> = l1.segs.iter().map(|s| ("1", &s[..])).collect();
        fold.replay(0, &segs0, &mut report);
        fold.replay(1, &segs1, &mut report);
        let out = fold.place(1, 1, &mut report);
        let queued: usize = out[0]
            .sessions
            .iter()
            .filter(|s| s.client_id.as_str() == "s1")
            .map(|s| s.queue.len())
            .sum();
        let other: usize = out[0]
            .sessions
            .iter()
            .filter(|s| s.client_id.as_str() == "s2")
            .map(|s| s.queue.len())
            .sum();
        assert_eq!(other, 0, "a session that does not match gets nothing");
        assert_eq!(report.redelivered, queued);
        queued
    };
    assert_eq!(run(false, false), 1, "delivered where it never arrived");
    assert_eq!(run(true, false), 0, "not again where it was delivered");
    assert_eq!(run(false, true), 0, "routing confirmed: nothing to finish");
}

//! Recovery at start: read the last committed generation of every shard's log, rebuild
//! sessions, subscriptions, queues, in-flight windows, incoming QoS 2 ids and retained
//! messages, and place them on the shards of *this* run.
//!
//! Generations: the logs live in `<data_dir>/journal/gen-<N>/shard-<K>/`. A start never
//! appends to an old log. It reads generation N, and every shard writes its share of the
//! rebuilt state as a snapshot into generation N+1; once all of them are durable,
//! `gen-N+1/COMMITTED` is written and synced, and older generations are deleted. So:
//! - a torn or corrupt tail is never appended to (no stale record can come back to life
//!   after a later, shorter write: the old log is only ever read);
//! - a change of `--shards` needs nothing special: state is placed by hashing client ids and
//!   topics with the new shard count;
//! - a crash during recovery leaves generation N committed and N+1 without `COMMITTED`,
//!   which the next start ignores and deletes.
//!
//! Within one log, replay starts at the `SNAP_BEGIN` of the last complete snapshot (one
//! with its `SNAP_END`), or at the first record if there is none. A damaged record stops
//! the scan of its segment; the damage is logged with the segment, offset and reason, and
//! later segments are still read (their records restate whole entities).
//!
//! Runs on the main thread before any shard starts; plain blocking I/O.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ahash::AHashMap;
use bytes::BytesMut;

use super::body::{self, DeliveryRec, Flight, MsgRec, Rec, RESET};
use super::record;
use super::segment;
use super::writer::instant_of;
use crate::proto::{Decoder, Packet, ProtocolVersion, QoS, SubOptions, Utf8Bytes};
use crate::session::Publication;
use crate::shard::stable_hash;

/// A delivery as recovered: the message is an index into [`ShardState::msgs`].
#[derive(Debug, Clone)]
pub struct RDelivery {
    pub msg: usize,
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    pub share: Option<Utf8Bytes>,
}

/// An in-flight delivery as recovered.
#[derive(Debug, Clone)]
pub enum RFlight {
    Sent(u16, RDelivery),
    Released(u16),
}

/// A session as recovered.
#[derive(Debug)]
pub struct RSession {
    pub client_id: Utf8Bytes,
    /// The user name of its latest connection (authorization of its deliveries).
    pub user: Option<Utf8Bytes>,
    pub expiry: u32,
    /// Wall-clock ms since when it has been offline (the crash time is unknown: sessions that
    /// were online count as offline from the restart).
    pub offline_ms: u64,
    pub subs: Vec<(Utf8Bytes, SubOptions, u32)>,
    pub inflight: Vec<RFlight>,
    pub queue: Vec<RDelivery>,
    pub q2in: Vec<u16>,
}

/// What one shard of this run gets.
#[derive(Debug, Default)]
pub struct ShardState {
    /// Messages referenced by the sessions and retained entries below (id 0: the shard gives
    /// them ids of its own when it installs them).
    pub msgs: Vec<Publication>,
    pub sessions: Vec<RSession>,
    /// Retained messages (indexes into `msgs`).
    pub retained: Vec<usize>,
}

/// What recovery found, for the log and the operator.
#[derive(Debug, Default)]
pub struct Report {
    pub generation: u64,
    pub segments: usize,
    pub records: usize,
    pub bytes: u64,
    /// One line per damaged segment: path, offset, reason.
    pub damage: Vec<String>,
    pub sessions: usize,
    pub sessions_expired: usize,
    pub messages: usize,
    pub retained: usize,
    /// Deliveries whose message was not in the log (acknowledged or dropped before the
    /// crash, and the acknowledgement record was lost with the tail).
    pub dangling: usize,
    /// Records that referred to a session or packet id the log did not know.
    pub orphans: usize,
    /// A session restatement cut off by the end of the log (a crash while writing it).
    pub torn_restatements: usize,
    /// Deliveries of incoming QoS 2 messages whose routing the crash cut short, made now.
    pub redelivered: usize,
    pub millis: u64,
}

/// The outcome of [`recover`]: the state to install and the generation to write.
pub struct Recovery {
    pub root: PathBuf,
    /// The generation this run writes (`gen-<N>` under `root`).
    pub generation: u64,
    pub shards: Vec<ShardState>,
    pub report: Report,
    stale: Vec<PathBuf>,
}

const COMMITTED: &str = "COMMITTED";

impl Recovery {
    /// Directory of shard `k`'s log in this run's generation.
    pub fn shard_dir(&self, k: usize) -> PathBuf {
        gen_dir(&self.root, self.generation).join(format!("shard-{k}"))
    }

    /// Every shard wrote and flushed its snapshot: make this generation the one the next
    /// start reads, then delete the older ones.
    pub fn commit(&self) -> io::Result<()> {
        let dir = gen_dir(&self.root, self.generation);
        std::fs::create_dir_all(&dir)?;
        let f = std::fs::File::create(dir.join(COMMITTED))?;
        f.sync_all()?;
        segment::sync_dir(&dir)?;
        segment::sync_dir(&self.root)?;
        for old in &self.stale {
            if let Err(e) = std::fs::remove_dir_all(old) {
                tracing::warn!("journal: cannot delete {}: {e}", old.display());
            }
        }
        segment::sync_dir(&self.root)
    }
}

fn gen_dir(root: &Path, n: u64) -> PathBuf {
    root.join(format!("gen-{n:06}"))
}

/// Read the last committed generation under `<data_dir>/journal` and place its state on
/// `shards` shards. `now_wall`: wall-clock ms now (offline sessions past their expiry are
/// dropped).
pub fn recover(data_dir: &Path, shards: usize, now_wall: u64) -> io::Result<Recovery> {
    let t0 = Instant::now();
    let root = data_dir.join("journal");
    std::fs::create_dir_all(&root)?;
    let mut gens: Vec<(u64, PathBuf, bool)> = Vec::new();
    for e in std::fs::read_dir(&root)? {
        let e = e?;
        let name = e.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_prefix("gen-"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let committed = e.path().join(COMMITTED).exists();
        gens.push((n, e.path(), committed));
    }
    gens.sort();
    let newest = gens.iter().map(|g| g.0).max().unwrap_or(0);
    let last = gens.iter().rev().find(|g| g.2).cloned();
    let mut fold = Fold::default();
    let mut report = Report::default();
    if let Some((n, dir, _)) = &last {
        report.generation = *n;
        let mut logs: Vec<(usize, PathBuf)> = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let k = e
                .file_name()
                .to_str()
                .and_then(|s| s.strip_prefix("shard-"))
                .and_then(|s| s.parse::<usize>().ok());
            if let Some(k) = k {
                logs.push((k, e.path()));
            }
        }
        logs.sort();
        for (k, dir) in logs {
            fold.read_log(k, &dir, &mut report)?;
        }
    }
    let shards_state = fold.place(shards, now_wall, &mut report);
    report.millis = t0.elapsed().as_millis() as u64;
    Ok(Recovery {
        generation: newest + 1,
        stale: gens.into_iter().map(|g| g.1).collect(),
        root,
        shards: shards_state,
        report,
    })
}

#[derive(Debug, Clone)]
struct ODelivery {
    msg: u64,
    qos: u8,
    retain: bool,
    sub_ids: Vec<u32>,
    share: Vec<u8>,
}

impl ODelivery {
    fn of(d: &DeliveryRec<'_>) -> ODelivery {
        ODelivery {
            msg: d.msg,
            qos: d.qos,
            retain: d.retain,
            sub_ids: d.sub_ids.clone(),
            share: d.share.to_vec(),
        }
    }
}

#[derive(Debug)]
enum OFlight {
    Sent(ODelivery),
    Released,
}

#[derive(Debug, Default)]
struct OSession {
    client_id: Vec<u8>,
    user: Option<Vec<u8>>,
    expiry: u32,
    offline_ms: u64,
    subs: AHashMap<Vec<u8>, (u8, u32)>,
    queue: VecDeque<ODelivery>,
    inflight: Vec<(u16, OFlight)>,
    /// pkid → (message id, routed, destination shards).
    q2in: std::collections::BTreeMap<u16, (u64, bool, u64)>,
}

/// Replayed state of every log of one generation.
#[derive(Default)]
struct Fold {
    /// (old shard, sid) → session.
    sessions: AHashMap<(usize, u64), OSession>,
    msgs: AHashMap<u64, Publication>,
    /// topic → retained message.
    retained: AHashMap<Vec<u8>, Publication>,
    /// Order in which sessions were first seen (deterministic placement and logs).
    order: Vec<(usize, u64)>,
    /// Per old shard: QoS 2 messages it delivered (`SEEN`).
    seen: AHashMap<usize, ahash::AHashSet<u64>>,
}

impl Fold {
    fn read_log(&mut self, shard: usize, dir: &Path, report: &mut Report) -> io::Result<()> {
        let mut maps = Vec::new();
        for (_, path) in segment::list(dir)? {
            let file = std::fs::File::open(&path)?;
            // SAFETY: read-only mapping of a segment no other process writes (the data
            // directory is locked) and that this run never truncates.
            let map = unsafe { memmap2::Mmap::map(&file)? };
            report.bytes += map.len() as u64;
            maps.push((path.display().to_string(), map));
        }
        let segs: Vec<(&str, &[u8])> = maps.iter().map(|(p, m)| (p.as_str(), &m[..])).collect();
        self.replay(shard, &segs, report);
        Ok(())
    }

    /// Replay one shard's log given as its segments in order (name, bytes).
    fn replay(&mut self, shard: usize, maps: &[(&str, &[u8])], report: &mut Report) {
        report.segments += maps.len();
        // Every valid record of every segment, in order.
        let mut recs: Vec<(usize, record::Found)> = Vec::new();
        let mut last_seq = 0u64;
        for (i, (path, map)) in maps.iter().enumerate() {
            let scan = record::scan(map);
            if scan.damaged() {
                let line = format!(
                    "{path}: offset {}: {:?} after {} valid records",
                    scan.end,
                    scan.stop,
                    scan.records.len()
                );
                tracing::warn!("journal damage: {line}");
                report.damage.push(line);
            }
            for f in scan.records {
                if f.meta.seq <= last_seq {
                    let line = format!(
                        "{path}: offset {}: sequence {} not above {}; rest of segment skipped",
                        f.offset, f.meta.seq, last_seq
                    );
                    tracing::warn!("journal damage: {line}");
                    report.damage.push(line);
                    break;
                }
                last_seq = f.meta.seq;
                recs.push((i, f));
            }
        }
        report.records += recs.len();
        // Replay from the last complete snapshot.
        let mut start = 0;
        for (idx, (i, f)) in recs.iter().enumerate().rev() {
            if f.meta.kind == body::kind::SNAP_END {
                if let Some(Rec::SnapEnd { begin }) =
                    body::decode(f.meta.kind, &maps[*i].1[f.body.clone()])
                {
                    if let Some(p) = recs[..idx].iter().rposition(|(_, g)| g.meta.seq == begin) {
                        start = p;
                        break;
                    }
                }
            }
        }
        let recs = &recs[start..];
        for (n, (i, f)) in recs.iter().enumerate() {
            let (path, map) = maps[*i];
            if f.meta.kind == body::kind::SESSION && f.meta.flags & RESET != 0 {
                if let Some(Rec::Session { restated, .. }) =
                    body::decode(f.meta.kind, &map[f.body.clone()])
                {
                    if n + restated as usize >= recs.len() {
                        // The log ends inside this restatement (written back to back):
                        // keep the state from before it. Nothing valid follows.
                        report.torn_restatements += 1;
                        break;
                    }
                }
            }
            match body::decode(f.meta.kind, &map[f.body.clone()]) {
                Some(rec) => self.apply(shard, f.meta.flags, rec, report),
                None => {
                    let line = format!(
                        "{path}: offset {}: record kind {} with an unreadable body; skipped",
                        f.offset, f.meta.kind
                    );
                    tracing::warn!("journal damage: {line}");
                    report.damage.push(line);
                }
            }
        }
    }

    fn session(&mut self, shard: usize, sid: u64, report: &mut Report) -> Option<&mut OSession> {
        let s = self.sessions.get_mut(&(shard, sid));
        if s.is_none() {
            report.orphans += 1;
        }
        s
    }

    fn apply(&mut self, shard: usize, flags: u8, rec: Rec<'_>, report: &mut Report) {
        match rec {
            Rec::Msg(m) => {
                if !self.msgs.contains_key(&m.id) {
                    if let Some(p) = publication(&m) {
                        self.msgs.insert(m.id, p);
                    }
                }
            }
            Rec::Retain(m) => {
                if let Some(p) = publication(&m) {
                    if m.id != 0 && !self.msgs.contains_key(&m.id) {
                        self.msgs.insert(m.id, p.clone());
                    }
                    self.retained.insert(p.topic.as_bytes().to_vec(), p);
                }
            }
            Rec::RetainDel { topic } => {
                self.retained.remove(topic);
            }
            Rec::Session {
                sid,
                expiry,
                offline_ms,
                client_id,
                user,
                ..
            } => {
                let key = (shard, sid);
                if !self.sessions.contains_key(&key) {
                    self.order.push(key);
                }
                let s = self.sessions.entry(key).or_default();
                s.client_id = client_id.to_vec();
                s.user = user.map(<[u8]>::to_vec);
                s.expiry = expiry;
                s.offline_ms = offline_ms;
                if flags & RESET != 0 {
                    s.subs.clear();
                    s.queue.clear();
                    s.inflight.clear();
                    s.q2in.clear();
                }
            }
            Rec::SessionEnd { sid } => {
                self.sessions.remove(&(shard, sid));
            }
            Rec::Sub {
                sid,
                opts,
                id,
                filter,
            } => {
                if let Some(s) = self.session(shard, sid, report) {
                    s.subs.insert(filter.to_vec(), (opts, id));
                }
            }
            Rec::Unsub { sid, filter } => {
                if let Some(s) = self.session(shard, sid, report) {
                    s.subs.remove(filter);
                }
            }
            Rec::Enq(d) => {
                if let Some(s) = self.session(shard, d.sid, report) {
                    s.queue.push_back(ODelivery::of(&d));
                }
            }
            Rec::Send { sid, pkid } => {
                if let Some(s) = self.session(shard, sid, report) {
                    match s.queue.pop_front() {
                        Some(d) => {
                            s.inflight.retain(|(p, _)| *p != pkid);
                            s.inflight.push((pkid, OFlight::Sent(d)));
                        }
                        None => report.orphans += 1,
                    }
                }
            }
            Rec::DropFront { sid } => {
                if let Some(s) = self.session(shard, sid, report) {
                    s.queue.pop_front();
                }
            }
            Rec::Inflight { d, pkid, flight } => {
                if let Some(s) = self.session(shard, d.sid, report) {
                    let st = match flight {
                        Flight::Sent => OFlight::Sent(ODelivery::of(&d)),
                        Flight::Released => OFlight::Released,
                    };
                    s.inflight.retain(|(p, _)| *p != pkid);
                    s.inflight.push((pkid, st));
                }
            }
            Rec::Rel { sid, pkid } => {
                if let Some(s) = self.session(shard, sid, report) {
                    match s.inflight.iter_mut().find(|(p, _)| *p == pkid) {
                        Some(e) => e.1 = OFlight::Released,
                        None => report.orphans += 1,
                    }
                }
            }
            Rec::Ack { sid, pkid } => {
                if let Some(s) = self.session(shard, sid, report) {
                    s.inflight.retain(|(p, _)| *p != pkid);
                }
            }
            Rec::Q2In {
                sid,
                pkid,
                msg,
                routed,
                dests,
            } => {
                if let Some(s) = self.session(shard, sid, report) {
                    s.q2in.insert(pkid, (msg, routed, dests));
                }
            }
            Rec::Q2Routed { sid, pkid } => {
                if let Some(s) = self.session(shard, sid, report) {
                    if let Some(e) = s.q2in.get_mut(&pkid) {
                        e.1 = true;
                    }
                }
            }
            Rec::Seen { msg } => {
                self.seen.entry(shard).or_default().insert(msg);
            }
            Rec::Q2Rel { sid, pkid } => {
                if let Some(s) = self.session(shard, sid, report) {
                    s.q2in.remove(&pkid);
                }
            }
            Rec::SnapBegin | Rec::SnapEnd { .. } => {}
        }
    }

    /// Finish routing incoming QoS 2 messages whose routing was cut short by the crash: the
    /// publisher's retransmission will be a recognised duplicate, so a destination shard
    /// that never delivered the message (no `SEEN`) gets it now — each of its persistent
    /// sessions that matches the topic and does not hold the message already.
    fn finish_routing(&mut self, report: &mut Report) {
        let mut pending: Vec<(u64, u64)> = Vec::new();
        for s in self.sessions.values() {
            for (msg, routed, dests) in s.q2in.values() {
                if !*routed && *msg != 0 {
                    pending.push((*msg, *dests));
                }
            }
        }
        for (id, dests) in pending {
            let Some(m) = self.msgs.get(&id) else {
                continue;
            };
            let (topic, qos, retain) = (m.topic.clone(), m.qos, m.retain);
            let origin = m.origin.as_bytes().to_vec();
            for k in crate::route::table::ShardSet(dests).iter() {
                if self.seen.get(&k).is_some_and(|s| s.contains(&id)) {
                    continue;
                }
                for ((shard, _), s) in self.sessions.iter_mut() {
                    if *shard != k || holds(s, id) {
                        continue;
                    }
                    let mut best: Option<(u8, bool, Vec<u32>)> = None;
                    for (filter, (opts, sub_id)) in &s.subs {
                        let o = opts_from(*opts);
                        let Ok(f) = std::str::from_utf8(filter) else {
                            continue;
                        };
                        let own = o.no_local && s.client_id == origin;
                        if f.starts_with(crate::proto::topic::SHARE_PREFIX)
                            || own
                            || !crate::proto::topic::matches(f, topic.as_str())
                        {
                            continue;
                        }
                        let b = best.get_or_insert((0, false, Vec::new()));
                        b.0 = b.0.max(o.qos as u8);
                        b.1 |= o.retain_as_published;
                        if *sub_id != 0 {
                            b.2.push(*sub_id);
                        }
                    }
                    let Some((granted, rap, sub_ids)) = best else {
                        continue;
                    };
                    let q = granted.min(qos as u8);
                    if q == 0 {
                        continue;
                    }
                    s.queue.push_back(ODelivery {
                        msg: id,
                        qos: q,
                        retain: rap && retain,
                        sub_ids,
                        share: Vec::new(),
                    });
                    report.redelivered += 1;
                }
            }
        }
    }

    /// Place sessions (by client id) and retained messages (by topic) on `n` shards.
    fn place(mut self, n: usize, now_wall: u64, report: &mut Report) -> Vec<ShardState> {
        self.finish_routing(report);
        let mut out: Vec<ShardState> = (0..n).map(|_| ShardState::default()).collect();
        let mut index: Vec<AHashMap<u64, usize>> = vec![AHashMap::new(); n];
        let mut seen: ahash::AHashSet<Vec<u8>> = ahash::AHashSet::new();
        let order = std::mem::take(&mut self.order);
        for key in order {
            let Some(s) = self.sessions.remove(&key) else {
                continue;
            };
            let Ok(client_id) = std::str::from_utf8(&s.client_id) else {
                report.orphans += 1;
                continue;
            };
            let gone = s.expiry == 0
                || (s.expiry != u32::MAX
                    && s.offline_ms != 0
                    && s.offline_ms + u64::from(s.expiry) * 1000 <= now_wall);
            if gone {
                report.sessions_expired += 1;
                continue;
            }
            if !seen.insert(s.client_id.clone()) {
                tracing::warn!(
                    client = client_id,
                    "journal: session logged twice; first kept"
                );
                continue;
            }
            let k = (stable_hash(client_id.as_bytes()) % n as u64) as usize;
            let st = &mut out[k];
            let idx = &mut index[k];
            let mut take = |d: &ODelivery, report: &mut Report| -> Option<RDelivery> {
                let Some(m) = self.msgs.get(&d.msg) else {
                    report.dangling += 1;
                    return None;
                };
                let msg = *idx.entry(d.msg).or_insert_with(|| {
                    st.msgs.push(m.clone());
                    st.msgs.len() - 1
                });
                Some(RDelivery {
                    msg,
                    qos: QoS::from_u8(d.qos).unwrap_or(QoS::AtLeastOnce),
                    retain: d.retain,
                    sub_ids: d.sub_ids.clone(),
                    share: (!d.share.is_empty())
                        .then(|| std::str::from_utf8(&d.share).ok().map(Utf8Bytes::from))
                        .flatten(),
                })
            };
            let mut inflight = Vec::new();
            for (pkid, f) in &s.inflight {
                match f {
                    OFlight::Released => inflight.push(RFlight::Released(*pkid)),
                    OFlight::Sent(d) => {
                        if let Some(d) = take(d, report) {
                            inflight.push(RFlight::Sent(*pkid, d));
                        }
                    }
                }
            }
            let queue: Vec<RDelivery> = s.queue.iter().filter_map(|d| take(d, report)).collect();
            let mut subs: Vec<(Utf8Bytes, SubOptions, u32)> = s
                .subs
                .iter()
                .filter_map(|(f, (o, id))| {
                    let f = std::str::from_utf8(f).ok()?;
                    Some((Utf8Bytes::from(f), opts_from(*o), *id))
                })
                .collect();
            subs.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            st.sessions.push(RSession {
                client_id: Utf8Bytes::from(client_id),
                // A user name that is not UTF-8 cannot come from a CONNECT: anonymous.
                user: s
                    .user
                    .as_deref()
                    .and_then(|u| std::str::from_utf8(u).ok())
                    .map(Utf8Bytes::from),
                expiry: s.expiry,
                offline_ms: if s.offline_ms == 0 {
                    now_wall
                } else {
                    s.offline_ms
                },
                subs,
                inflight,
                queue,
                q2in: s.q2in.keys().copied().collect(),
            });
            report.sessions += 1;
        }
        let mut retained: Vec<(Vec<u8>, Publication)> = self.retained.into_iter().collect();
        retained.sort_by(|a, b| a.0.cmp(&b.0));
        for (topic, p) in retained {
            let k = (stable_hash(&topic) % n as u64) as usize;
            out[k].msgs.push(p);
            let i = out[k].msgs.len() - 1;
            out[k].retained.push(i);
            report.retained += 1;
        }
        report.messages = out.iter().map(|s| s.msgs.len()).sum();
        out
    }
}

/// Whether session `s` holds message `id` (queued or in flight).
fn holds(s: &OSession, id: u64) -> bool {
    s.queue.iter().any(|d| d.msg == id)
        || s.inflight
            .iter()
            .any(|(_, f)| matches!(f, OFlight::Sent(d) if d.msg == id))
}

/// The subscription options byte of a `SUB` record.
pub fn opts_byte(o: &SubOptions) -> u8 {
    (o.qos as u8)
        | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | ((o.retain_handling & 3) << 4)
}

fn opts_from(b: u8) -> SubOptions {
    SubOptions {
        qos: QoS::from_u8(b & 3).unwrap_or(QoS::AtMostOnce),
        no_local: b & 4 != 0,
        retain_as_published: b & 8 != 0,
        retain_handling: (b >> 4) & 3,
    }
}

/// Rebuild a message from its record (the PUBLISH is decoded by the broker's own decoder).
fn publication(m: &MsgRec<'_>) -> Option<Publication> {
    let mut buf = BytesMut::from(m.publish);
    let mut dec = Decoder::with_version(ProtocolVersion::V5, crate::config::PROTOCOL_MAX_PACKET);
    let Ok(Some(Packet::Publish(p))) = dec.decode(&mut buf) else {
        tracing::warn!("journal: a logged message does not decode; skipped");
        return None;
    };
    let origin = std::str::from_utf8(m.origin).ok()?;
    Some(Publication {
        topic: p.topic,
        payload: p.payload,
        qos: p.qos,
        retain: p.retain,
        props: (!p.properties.is_empty()).then_some(p.properties),
        origin: Utf8Bytes::from(origin),
        expiry: (m.expiry_ms != 0).then(|| instant_of(m.expiry_ms)),
        id: 0,
    })
}

#[cfg(test)]
mod tests;

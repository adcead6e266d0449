//! Sans-IO session state: what MQTT requires the server to remember per client id.
//!
//! A [`Session`] holds the subscriptions, the outgoing queue, the outgoing inflight window
//! (QoS 1/2 messages sent but not yet acknowledged, resent with DUP on reconnect) and the
//! incoming QoS 2 identifiers awaiting PUBREL. It never touches a socket or a clock: the
//! connection shell feeds it events and writes what it returns.
//!
//! Owned by the session's home shard (hash(client id) % shards); never crosses shards.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use ahash::AHashMap;
use bytes::Bytes;

use crate::proto::{PacketId, Properties, QoS, SubOptions, Utf8Bytes};

/// One published message as the broker routes it: decoded once, then shared (refcount)
/// by every subscriber on every shard. `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Publication {
    pub topic: Utf8Bytes,
    pub payload: Bytes,
    /// QoS the publisher used.
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// v5 properties to forward (None for 3.1.x publishers).
    pub props: Option<Properties>,
    /// Client id of the publisher (v5 No Local); empty for broker-originated messages.
    pub origin: Utf8Bytes,
    /// When the 5.0 Message Expiry Interval runs out: not delivered after that
    /// [MQTT-3.3.2-5], and forwarded with the time left [MQTT-3.3.2-6].
    pub expiry: Option<Instant>,
    /// Id of the message in the durable log (`MSG` record), 0 if not logged (QoS 0, no
    /// log, or the log refused it).
    pub id: u64,
}

impl Publication {
    /// Whether the message expired by `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.expiry.is_some_and(|e| e <= now)
    }

    /// Whole seconds of life left (rounded up), for the forwarded Message Expiry Interval.
    pub fn expiry_left(&self, now: Instant) -> Option<u32> {
        self.expiry.map(|e| {
            let left = e.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            secs.min(u32::MAX as u64) as u32
        })
    }

    /// Bytes of memory a queued copy pins (payload + topic).
    pub fn weight(&self) -> usize {
        self.payload.len() + self.topic.len()
    }
}

/// A message addressed to one session.
///
/// Sits in every queue and inflight slot, so it is kept at three words: the common cases
/// (no subscription identifier, or exactly one) need no allocation; several identifiers or
/// a shared-subscription origin go behind one optional box.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub msg: Arc<Publication>,
    /// Rarely needed extras (see [`DeliveryExtra`]).
    pub extra: Option<Box<DeliveryExtra>>,
    /// Subscription identifier of the matching subscription (v5), 0 for none (identifiers
    /// are 1..=268435455). Further identifiers are in `extra`.
    pub sub_id: u32,
    /// QoS for this subscriber: min(published, granted).
    pub qos: QoS,
    /// RETAIN flag to send (1 only for retained messages sent on subscribe, in 3.1.1).
    pub retain: bool,
    /// The message has a Message Expiry Interval (a copy of `msg.expiry.is_some()` in the
    /// padding, so the writer's expiry check does not touch the message).
    expires: bool,
}

/// The uncommon parts of a [`Delivery`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryExtra {
    /// Identifiers of further matching subscriptions, after [`Delivery::sub_id`]
    /// [MQTT-3.3.4-4].
    pub more_sub_ids: Vec<u32>,
    /// The shared subscription (`$share/{group}/{filter}`) the message was delivered
    /// through: if this member's connection ends before it acknowledges, the message goes
    /// to another member of the group.
    pub share: Option<Utf8Bytes>,
}

impl Delivery {
    /// A delivery with no subscription identifier and no share group.
    #[inline]
    pub fn new(msg: Arc<Publication>, qos: QoS, retain: bool) -> Delivery {
        Delivery {
            expires: msg.expiry.is_some(),
            msg,
            extra: None,
            sub_id: 0,
            qos,
            retain,
        }
    }

    /// Attach the subscription identifiers of every matching subscription (0s ignored).
    pub fn with_sub_ids(mut self, ids: &[u32]) -> Delivery {
        if ids.iter().all(|&i| i == 0) {
            return self;
        }
        let mut ids = ids.iter().copied().filter(|&i| i != 0);
        self.sub_id = ids.next().unwrap_or(0);
        let more: Vec<u32> = ids.collect();
        if !more.is_empty() {
            self.extra.get_or_insert_with(Box::default).more_sub_ids = more;
        }
        self
    }

    /// Mark the delivery as made through shared subscription `share`.
    pub fn through_share(mut self, share: Utf8Bytes) -> Delivery {
        self.extra.get_or_insert_with(Box::default).share = Some(share);
        self
    }

    /// The shared subscription this message was delivered through, if any.
    pub fn share(&self) -> Option<&Utf8Bytes> {
        self.extra.as_ref()?.share.as_ref()
    }

    /// Every subscription identifier to send with the message.
    pub fn sub_ids(&self) -> impl Iterator<Item = u32> + '_ {
        let more = self.extra.as_ref().map_or(&[][..], |e| &e.more_sub_ids[..]);
        (self.sub_id != 0)
            .then_some(self.sub_id)
            .into_iter()
            .chain(more.iter().copied())
    }

    /// With one subscription identifier (0 = none): the common case, no allocation.
    #[inline]
    pub fn with_sub_id(mut self, id: u32) -> Delivery {
        self.sub_id = id;
        self
    }

    /// Whether this delivery is in the durable log: QoS ≥ 1 of a logged message (only
    /// those get `ENQ`/`SEND` records; the log's queue is this subsequence of the queue).
    #[inline]
    pub fn logged(&self) -> bool {
        self.qos != QoS::AtMostOnce && self.msg.id != 0
    }

    /// Whether any subscription identifier goes with this delivery (5.0 only).
    pub fn has_sub_ids(&self) -> bool {
        self.sub_id != 0
    }
}

/// What the connection should write next.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Publish {
        pkid: PacketId,
        dup: bool,
        delivery: Delivery,
    },
    PubRel(PacketId),
}

/// Per-session bounds (from the broker config). 32-bit: one copy lives in every session.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_inflight: u32,
    pub max_queued_messages: u32,
    pub max_queued_bytes: u32,
}

/// Result of [`Session::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Queued,
    /// Queued after evicting this many older QoS 0 messages.
    QueuedEvictingQos0(usize),
    /// The queue is full of QoS ≥ 1 messages (or the message alone exceeds the byte bound):
    /// the new message was dropped.
    DroppedFull,
}

#[derive(Debug)]
enum Inflight {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Sent(Delivery),
    /// PUBREL sent; waiting for PUBCOMP.
    Released,
}

/// Answer to a PUBREC from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum PubRecResult {
    /// Send PUBREL.
    Release,
    /// Unknown packet id (v5: PUBREL with 0x92); still answered.
    Unknown,
}

/// Owned by the session's home shard.
#[derive(Debug)]
pub struct Session {
    pub client_id: Utf8Bytes,
    /// filter → options as granted. Replaced on re-subscribe [MQTT-3.8.4-3].
    pub subs: AHashMap<Utf8Bytes, SubOptions>,
    queue: VecDeque<Delivery>,
    queued_bytes: usize,
    queued_qos0: usize,
    inflight: VecDeque<(PacketId, Inflight)>,
    next_pkid: PacketId,
    /// Incoming QoS 2 packet ids awaiting PUBREL → (logged message id, whether every shard
    /// it went to has logged it). Allocated on the first incoming QoS 2 message (most
    /// sessions never see one).
    incoming_qos2: Option<Box<AHashMap<PacketId, (u64, bool)>>>,
    limits: Limits,
}

impl Session {
    pub fn new(client_id: Utf8Bytes, limits: Limits) -> Session {
        Session {
            client_id,
            subs: AHashMap::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            queued_qos0: 0,
            inflight: VecDeque::new(),
            next_pkid: 1,
            incoming_qos2: None,
            limits,
        }
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Payload size of the message `next_outgoing` would return now, if any.
    pub fn next_payload_len(&self) -> Option<usize> {
        if !self.has_sendable() {
            return None;
        }
        self.queue.front().map(|d| d.msg.payload.len())
    }

    /// Whether `next_outgoing` would return a message now.
    pub fn has_sendable(&self) -> bool {
        match self.queue.front() {
            None => false,
            Some(d) => {
                d.qos == QoS::AtMostOnce || self.inflight.len() < self.limits.max_inflight as usize
            }
        }
    }

    /// Bytes (payload + topic) of the queued messages.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Queue a message. Keeps the bounds: QoS 0 messages are evicted first; if only
    /// QoS ≥ 1 messages remain, the new message is dropped.
    pub fn enqueue(&mut self, d: Delivery) -> Enqueued {
        let w = d.msg.weight();
        if w > self.limits.max_queued_bytes as usize {
            return Enqueued::DroppedFull;
        }
        let mut evicted = 0;
        while self.queue.len() >= self.limits.max_queued_messages as usize
            || self.queued_bytes + w > self.limits.max_queued_bytes as usize
        {
            if !self.evict_oldest_qos0() {
                return Enqueued::DroppedFull;
            }
            evicted += 1;
        }
        if d.qos == QoS::AtMostOnce {
            self.queued_qos0 += 1;
        }
        self.queued_bytes += w;
        self.queue.push_back(d);
        if evicted > 0 {
            Enqueued::QueuedEvictingQos0(evicted)
        } else {
            Enqueued::Queued
        }
    }

    fn evict_oldest_qos0(&mut self) -> bool {
        // Without this check a queue full of QoS >= 1 messages was scanned end to end for
        // every dropped message (30% of broker time in the fan-in QoS 1 profile).
        if self.queued_qos0 == 0 {
            return false;
        }
        if let Some(i) = self.queue.iter().position(|d| d.qos == QoS::AtMostOnce) {
            if let Some(d) = self.queue.remove(i) {
                self.queued_qos0 -= 1;
                self.queued_bytes -= d.msg.weight();
                return true;
            }
        }
        false
    }

    /// The outgoing window for the current connection: the configured bound, lowered to a
    /// 5.0 client's Receive Maximum [MQTT-3.3.4-9].
    pub fn set_window(&mut self, client_receive_maximum: Option<u16>, configured: u32) {
        self.limits.max_inflight = match client_receive_maximum {
            Some(n) => configured.min(u32::from(n)).max(1),
            None => configured,
        };
    }

    /// Forget an in-flight message that will never be acknowledged (it was discarded
    /// instead of sent: over the client's Maximum Packet Size, [MQTT-3.1.2-25]).
    pub fn forget(&mut self, pkid: PacketId) {
        if let Some(i) = self.find(pkid) {
            self.inflight.remove(i);
        }
    }

    /// Drop expired messages at the head of the queue; returns how many, and how many of
    /// them were logged ([`Delivery::logged`]) [MQTT-3.3.2-5]. Messages already sent are not
    /// recalled.
    pub fn drop_expired(&mut self, now: &crate::rt::LazyNow) -> (usize, usize) {
        let mut n = 0;
        let mut logged = 0;
        while let Some(d) = self.queue.front() {
            if !d.expires || !d.msg.expired(now.get()) {
                break;
            }
            if let Some(d) = self.queue.pop_front() {
                self.queued_bytes -= d.msg.weight();
                if d.qos == QoS::AtMostOnce {
                    self.queued_qos0 -= 1;
                }
                logged += usize::from(d.logged());
            }
            n += 1;
        }
        (n, logged)
    }

    /// Next message to send, if the inflight window allows. QoS 0 bypasses the window.
    /// Callers drop expired messages first ([`Session::drop_expired`]).
    pub fn next_outgoing(&mut self) -> Option<Outgoing> {
        let front_qos = self.queue.front()?.qos;
        if front_qos != QoS::AtMostOnce && self.inflight.len() >= self.limits.max_inflight as usize
        {
            return None;
        }
        let d = self.queue.pop_front()?;
        self.queued_bytes -= d.msg.weight();
        if d.qos == QoS::AtMostOnce {
            self.queued_qos0 -= 1;
            return Some(Outgoing::Publish {
                pkid: 0,
                dup: false,
                delivery: d,
            });
        }
        let pkid = self.alloc_pkid();
        self.inflight.push_back((pkid, Inflight::Sent(d.clone())));
        Some(Outgoing::Publish {
            pkid,
            dup: false,
            delivery: d,
        })
    }

    fn alloc_pkid(&mut self) -> PacketId {
        // The window is at most 65535 (config-validated), so a free id always exists.
        loop {
            let id = self.next_pkid;
            self.next_pkid = if id == u16::MAX { 1 } else { id + 1 };
            if !self.inflight.iter().any(|(p, _)| *p == id) {
                return id;
            }
        }
    }

    fn find(&self, pkid: PacketId) -> Option<usize> {
        self.inflight.iter().position(|(p, _)| *p == pkid)
    }

    /// PUBACK from the client. Returns false for an unknown id (ignored).
    pub fn on_puback(&mut self, pkid: PacketId) -> bool {
        match self.find(pkid) {
            Some(i) if matches!(&self.inflight[i].1, Inflight::Sent(d) if d.qos == QoS::AtLeastOnce) =>
            {
                self.inflight.remove(i);
                true
            }
            _ => false,
        }
    }

    /// PUBREC from the client: the message is delivered; from now on we own the PUBREL.
    pub fn on_pubrec(&mut self, pkid: PacketId) -> PubRecResult {
        match self.find(pkid) {
            Some(i) => {
                let entry = &mut self.inflight[i].1;
                match entry {
                    Inflight::Sent(d) if d.qos == QoS::ExactlyOnce => {
                        *entry = Inflight::Released;
                        PubRecResult::Release
                    }
                    Inflight::Released => PubRecResult::Release,
                    _ => PubRecResult::Unknown,
                }
            }
            None => PubRecResult::Unknown,
        }
    }

    /// PUBCOMP from the client. Returns false for an unknown id.
    pub fn on_pubcomp(&mut self, pkid: PacketId) -> bool {
        match self.find(pkid) {
            Some(i) if matches!(self.inflight[i].1, Inflight::Released) => {
                self.inflight.remove(i);
                true
            }
            _ => false,
        }
    }

    /// On reconnect (session resumed): everything unacknowledged, in original order —
    /// PUBLISH with DUP=1 for messages not yet acknowledged, PUBREL for QoS 2 flows past
    /// PUBREC [MQTT-4.4.0-1].
    pub fn resend(&self) -> Vec<Outgoing> {
        self.inflight
            .iter()
            .map(|(pkid, st)| match st {
                Inflight::Sent(d) => Outgoing::Publish {
                    pkid: *pkid,
                    dup: true,
                    delivery: d.clone(),
                },
                Inflight::Released => Outgoing::PubRel(*pkid),
            })
            .collect()
    }

    /// Remove and return the messages `take(delivery, sent)` selects among those not yet
    /// acknowledged: inflight PUBLISHes still waiting for PUBACK/PUBREC (`sent`; their
    /// packet ids are freed, a late acknowledgement is then unknown and ignored), then
    /// queued messages, in order. QoS 2 flows past PUBREC always stay. Used to hand a
    /// departed shared-subscription member's messages to another member (MQTT 5.0 §4.8.2).
    pub fn take_unacked(&mut self, mut take: impl FnMut(&Delivery, bool) -> bool) -> Vec<Delivery> {
        let mut out = Vec::new();
        self.inflight.retain_mut(|(_, st)| match st {
            Inflight::Sent(d) if take(d, true) => {
                out.push(d.clone());
                false
            }
            _ => true,
        });
        let (mut bytes, mut qos0) = (0, 0);
        self.queue.retain(|d| {
            if !take(d, false) {
                return true;
            }
            bytes += d.msg.weight();
            qos0 += usize::from(d.qos == QoS::AtMostOnce);
            out.push(d.clone());
            false
        });
        self.queued_bytes -= bytes;
        self.queued_qos0 -= qos0;
        out
    }

    /// The in-flight window in order: packet id and the message, or `None` for a QoS 2
    /// flow past PUBREC (only the PUBREL is owed).
    pub fn inflight_entries(&self) -> impl Iterator<Item = (PacketId, Option<&Delivery>)> {
        self.inflight.iter().map(|(p, st)| match st {
            Inflight::Sent(d) => (*p, Some(d)),
            Inflight::Released => (*p, None),
        })
    }

    /// The queue in order.
    pub fn queued_entries(&self) -> impl Iterator<Item = &Delivery> {
        self.queue.iter()
    }

    /// Incoming QoS 2 packet ids awaiting PUBREL, with their message id and routed flag.
    pub fn incoming_qos2_entries(&self) -> Vec<(PacketId, u64, bool)> {
        let mut v: Vec<(PacketId, u64, bool)> =
            self.incoming_qos2.as_ref().map_or_else(Vec::new, |s| {
                s.iter().map(|(p, (m, r))| (*p, *m, *r)).collect()
            });
        v.sort_unstable();
        v
    }

    /// Record the logged message id of incoming QoS 2 `pkid` (or that it is routed).
    pub fn note_incoming(&mut self, pkid: PacketId, msg: Option<u64>, routed: bool) {
        if let Some(e) = self.incoming_qos2.as_mut().and_then(|s| s.get_mut(&pkid)) {
            if let Some(m) = msg {
                e.0 = m;
            }
            e.1 |= routed;
        }
    }

    /// Put back an in-flight message at recovery (`None`: a QoS 2 flow past PUBREC). Ids
    /// continue after the highest restored one.
    pub fn restore_inflight(&mut self, pkid: PacketId, d: Option<Delivery>) {
        if pkid == 0 || self.find(pkid).is_some() {
            return;
        }
        let st = match d {
            Some(d) => Inflight::Sent(d),
            None => Inflight::Released,
        };
        self.inflight.push_back((pkid, st));
        self.next_pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
    }

    /// An incoming QoS 2 PUBLISH. Returns true the first time this id is seen (deliver it),
    /// false for a retransmission before PUBREL (acknowledge again, do not deliver).
    pub fn incoming_qos2(&mut self, pkid: PacketId) -> bool {
        let set = self.incoming_qos2.get_or_insert_with(Box::default);
        if set.contains_key(&pkid) {
            return false;
        }
        set.insert(pkid, (0, false));
        true
    }

    /// PUBREL from the client: forget the id (PUBCOMP is sent either way).
    pub fn incoming_pubrel(&mut self, pkid: PacketId) -> bool {
        let Some(set) = self.incoming_qos2.as_mut() else {
            return false;
        };
        let known = set.remove(&pkid).is_some();
        if set.is_empty() {
            self.incoming_qos2 = None;
        }
        known
    }

    pub fn incoming_qos2_pending(&self) -> usize {
        self.incoming_qos2.as_ref().map_or(0, |s| s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(inflight: u32, msgs: u32) -> Limits {
        Limits {
            max_inflight: inflight,
            max_queued_messages: msgs,
            max_queued_bytes: 1 << 20,
        }
    }

    fn d(n: u8, qos: QoS) -> Delivery {
        Delivery::new(
            Arc::new(Publication {
                topic: Utf8Bytes::from("t"),
                payload: Bytes::from(vec![n]),
                qos,
                retain: false,
                props: None,
                origin: Utf8Bytes::default(),
                expiry: None,
                id: 0,
            }),
            qos,
            false,
        )
    }

    #[test]
    fn delivery_stays_three_words() {
        // One sits in every queue slot: the subscription identifier / share-group work may
        // add at most 8 bytes to the original 16.
        assert!(std::mem::size_of::<Delivery>() <= 24);
    }

    #[test]
    fn subscription_ids_inline_then_boxed() {
        let one = d(0, QoS::AtMostOnce).with_sub_ids(&[7]);
        assert!(
            one.extra.is_none(),
            "a single identifier needs no allocation"
        );
        assert_eq!(one.sub_ids().collect::<Vec<_>>(), vec![7]);
        assert!(one.has_sub_ids());
        let many = d(0, QoS::AtMostOnce).with_sub_ids(&[0, 3, 9]);
        assert_eq!(many.sub_ids().collect::<Vec<_>>(), vec![3, 9]);
        assert!(!d(0, QoS::AtMostOnce).with_sub_ids(&[0]).has_sub_ids());
    }

    #[test]
    fn take_unacked_frees_inflight_and_queue_but_keeps_released() {
        let mut s = Session::new("c".into(), lim(2, 100));
        let shared = |n| d(n, QoS::ExactlyOnce).through_share("$share/g/t".into());
        s.enqueue(shared(1));
        s.enqueue(shared(2));
        s.enqueue(d(3, QoS::AtLeastOnce));
        s.enqueue(shared(4));
        let Some(Outgoing::Publish { pkid: p1, .. }) = s.next_outgoing() else {
            panic!()
        };
        s.next_outgoing();
        assert_eq!(s.on_pubrec(p1), PubRecResult::Release);
        let taken = s.take_unacked(|d, _| d.share().is_some());
        let got: Vec<u8> = taken.iter().map(|d| d.msg.payload[0]).collect();
        assert_eq!(got, vec![2, 4], "QoS 2 past PUBREC stays");
        assert_eq!(s.inflight(), 1);
        assert_eq!(s.queued(), 1);
        assert_eq!(s.queued_bytes(), 2);
    }

    fn payload(o: &Outgoing) -> u8 {
        match o {
            Outgoing::Publish { delivery, .. } => delivery.msg.payload[0],
            Outgoing::PubRel(_) => panic!("not a publish"),
        }
    }

    #[test]
    fn window_limits_inflight_and_acks_open_it() {
        let mut s = Session::new("c".into(), lim(2, 100));
        for i in 0..4 {
            s.enqueue(d(i, QoS::AtLeastOnce));
        }
        let a = s.next_outgoing().unwrap();
        let b = s.next_outgoing().unwrap();
        assert!(s.next_outgoing().is_none());
        let Outgoing::Publish { pkid, .. } = a else {
            panic!()
        };
        assert!(s.on_puback(pkid));
        assert!(!s.on_puback(pkid), "a second PUBACK is unknown");
        assert_eq!(payload(&s.next_outgoing().unwrap()), 2);
        assert_eq!(payload(&b), 1);
    }

    #[test]
    fn full_queue_evicts_qos0_first_then_drops_new() {
        let mut s = Session::new("c".into(), lim(1, 3));
        assert_eq!(s.enqueue(d(0, QoS::AtMostOnce)), Enqueued::Queued);
        s.enqueue(d(1, QoS::AtLeastOnce));
        s.enqueue(d(2, QoS::AtLeastOnce));
        assert_eq!(
            s.enqueue(d(3, QoS::AtLeastOnce)),
            Enqueued::QueuedEvictingQos0(1)
        );
        assert_eq!(s.enqueue(d(4, QoS::AtLeastOnce)), Enqueued::DroppedFull);
        assert_eq!(s.enqueue(d(5, QoS::AtMostOnce)), Enqueued::DroppedFull);
        let got: Vec<u8> = std::iter::from_fn(|| {
            let o = s.next_outgoing()?;
            if let Outgoing::Publish { pkid, .. } = o {
                s.on_puback(pkid);
            }
            Some(payload(&o))
        })
        .collect();
        assert_eq!(got, vec![1, 2, 3]);
    }

    #[test]
    fn qos2_flow_and_resend_with_dup() {
        let mut s = Session::new("c".into(), lim(10, 100));
        s.enqueue(d(1, QoS::ExactlyOnce));
        s.enqueue(d(2, QoS::ExactlyOnce));
        let Some(Outgoing::Publish { pkid: p1, .. }) = s.next_outgoing() else {
            panic!()
        };
        let Some(Outgoing::Publish { pkid: p2, .. }) = s.next_outgoing() else {
            panic!()
        };
        assert_eq!(s.on_pubrec(p1), PubRecResult::Release);
        let r = s.resend();
        assert!(matches!(r[0], Outgoing::PubRel(p) if p == p1));
        assert!(matches!(r[1], Outgoing::Publish { pkid, dup: true, .. } if pkid == p2));
        assert!(s.on_pubcomp(p1));
        assert!(!s.on_pubcomp(p1));
        assert_eq!(s.on_pubrec(999), PubRecResult::Unknown);
    }

    #[test]
    fn incoming_qos2_is_delivered_once() {
        let mut s = Session::new("c".into(), lim(10, 100));
        assert!(s.incoming_qos2(7));
        assert!(!s.incoming_qos2(7));
        assert!(s.incoming_pubrel(7));
        assert!(s.incoming_qos2(7));
    }

    #[test]
    fn packet_ids_skip_ids_in_flight_and_wrap() {
        let mut s = Session::new("c".into(), lim(3, 100));
        s.next_pkid = u16::MAX;
        for i in 0..3 {
            s.enqueue(d(i, QoS::AtLeastOnce));
        }
        let ids: Vec<u16> = (0..3)
            .map(|_| match s.next_outgoing().unwrap() {
                Outgoing::Publish { pkid, .. } => pkid,
                _ => 0,
            })
            .collect();
        assert_eq!(ids, vec![u16::MAX, 1, 2]);
        assert!(!ids.contains(&0), "MQTT-2.3.1-1");
    }
}

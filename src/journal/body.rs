//! What the records of the durable log say: the record kinds and their bodies.
//!
//! Every record states one entity's whole new state (or its removal), so replaying a log is
//! a fold into maps and replaying a record twice changes nothing. Entities and their keys:
//!
//! | kind | entity | body |
//! |---|---|---|
//! | `MSG` | a message (QoS ≥ 1 publish, or a copy carried forward) | id, expiry, origin, encoded v5 PUBLISH |
//! | `RETAIN` | the retained message of a topic | as `MSG` |
//! | `RETAIN_DEL` | | topic |
//! | `SESSION` | a session (`sid`) | expiry, offline-since, client id, user name (authorization); flag [`RESET`]: forget its state first, N records restate it |
//! | `SESSION_END` | | sid |
//! | `SUB` / `UNSUB` | a subscription (sid, filter) | options, identifier |
//! | `ENQ` | a queued delivery: appended to the session's queue | message id, QoS, flags, sub ids, share |
//! | `SEND` | the queue's front goes in flight under a packet id | sid, pkid |
//! | `DROP_FRONT` | the queue's front expired | sid |
//! | `INFLIGHT` | an in-flight delivery (snapshots) | as `ENQ` + pkid |
//! | `REL` / `ACK` | QoS 2 past PUBREC / acknowledged (gone) | sid, pkid |
//! | `Q2IN` / `Q2REL` | an incoming QoS 2 packet id awaiting PUBREL | sid, pkid, message id, routed |
//! | `Q2ROUTED` | every shard the QoS 2 message went to has logged it | sid, pkid |
//! | `SEEN` | this shard delivered a QoS 2 message to its subscribers | message id |
//! | `SNAP_BEGIN` / `SNAP_END` | a snapshot of the shard's whole state | the begin's sequence |
//!
//! Only sessions that outlive their connection are logged. A message id is
//! `(shard << 48) | sequence` of the `MSG` record that first logged it; copies keep it.
//! Pure encoding and decoding; no I/O.

/// Record kinds (the header's `kind` byte).
pub mod kind {
    pub const MSG: u8 = 1;
    pub const RETAIN: u8 = 2;
    pub const RETAIN_DEL: u8 = 3;
    pub const SESSION: u8 = 4;
    pub const SESSION_END: u8 = 5;
    pub const SUB: u8 = 6;
    pub const UNSUB: u8 = 7;
    pub const ENQ: u8 = 8;
    pub const SEND: u8 = 9;
    pub const DROP_FRONT: u8 = 10;
    pub const INFLIGHT: u8 = 11;
    pub const REL: u8 = 12;
    pub const ACK: u8 = 13;
    pub const Q2IN: u8 = 14;
    pub const Q2REL: u8 = 15;
    pub const SNAP_BEGIN: u8 = 16;
    pub const SNAP_END: u8 = 17;
    pub const Q2ROUTED: u8 = 18;
    pub const SEEN: u8 = 19;
}

/// `SESSION` flag: the session's subscriptions, queue, in-flight window and incoming QoS 2
/// ids are restated by the records that follow (a snapshot); forget the old ones.
pub const RESET: u8 = 1;

/// Message id of the record at `seq` in shard `shard`'s log.
pub fn msg_id(shard: usize, seq: u64) -> u64 {
    ((shard as u64) << 48) | (seq & ((1 << 48) - 1))
}

/// A message as logged: the broker's metadata and the message as a v5 PUBLISH packet
/// (topic, properties, payload; QoS and RETAIN in its flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsgRec<'a> {
    pub id: u64,
    /// Wall-clock milliseconds (Unix) when the Message Expiry Interval runs out; 0 = never.
    pub expiry_ms: u64,
    /// Client id of the publisher (No Local); empty for the broker's own.
    pub origin: &'a [u8],
    pub publish: &'a [u8],
}

/// One delivery to one session (queued or in flight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRec<'a> {
    pub sid: u64,
    pub msg: u64,
    pub qos: u8,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    /// The shared subscription it came through; empty for none.
    pub share: &'a [u8],
}

/// In-flight state of a delivery in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flight {
    /// PUBLISH sent, waiting for PUBACK/PUBREC.
    Sent,
    /// PUBREL sent, waiting for PUBCOMP (the message itself is no longer needed).
    Released,
}

/// A decoded record body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rec<'a> {
    Msg(MsgRec<'a>),
    Retain(MsgRec<'a>),
    RetainDel {
        topic: &'a [u8],
    },
    Session {
        sid: u64,
        expiry: u32,
        /// Wall-clock ms (Unix) since when the session has had no connection; 0 = online.
        offline_ms: u64,
        /// With [`RESET`]: how many records restating the session follow (they are written
        /// back to back). A log that ends before all of them is a torn restatement, and
        /// replay keeps the state from before it.
        restated: u32,
        client_id: &'a [u8],
        /// The user name of the session's latest connection (`None`: anonymous): deliveries
        /// to the session are authorized with it after a restart too.
        user: Option<&'a [u8]>,
    },
    SessionEnd {
        sid: u64,
    },
    Sub {
        sid: u64,
        opts: u8,
        id: u32,
        filter: &'a [u8],
    },
    Unsub {
        sid: u64,
        filter: &'a [u8],
    },
    Enq(DeliveryRec<'a>),
    Send {
        sid: u64,
        pkid: u16,
    },
    DropFront {
        sid: u64,
    },
    Inflight {
        d: DeliveryRec<'a>,
        pkid: u16,
        flight: Flight,
    },
    Rel {
        sid: u64,
        pkid: u16,
    },
    Ack {
        sid: u64,
        pkid: u16,
    },
    /// `msg`: the message this publish became; `routed`: every destination shard logged it
    /// (if not, recovery re-delivers it to the shards with no `SEEN` of it, so the
    /// publisher's retransmission, now recognised as a duplicate, loses nothing).
    Q2In {
        sid: u64,
        pkid: u16,
        msg: u64,
        routed: bool,
        /// The shards the message was routed to (bit per shard of that run).
        dests: u64,
    },
    Q2Routed {
        sid: u64,
        pkid: u16,
    },
    Seen {
        msg: u64,
    },
    Q2Rel {
        sid: u64,
        pkid: u16,
    },
    SnapBegin,
    SnapEnd {
        begin: u64,
    },
}

/// Little-endian body writer.
pub struct W<'a>(pub &'a mut Vec<u8>);

impl W<'_> {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Length-prefixed (u32) bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
        self
    }
}

/// Little-endian body reader; every getter fails on a short body.
struct R<'a>(&'a [u8]);

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// Write a message body (`MSG` or `RETAIN`).
pub fn put_msg(out: &mut Vec<u8>, m: &MsgRec<'_>) {
    W(out)
        .u64(m.id)
        .u64(m.expiry_ms)
        .bytes(m.origin)
        .bytes(m.publish);
}

/// Write a delivery body (`ENQ`, and `INFLIGHT` before its pkid and state).
pub fn put_delivery(out: &mut Vec<u8>, d: &DeliveryRec<'_>) {
    let mut w = W(out);
    w.u64(d.sid).u64(d.msg).u8(d.qos).u8(u8::from(d.retain));
    w.u8(d.sub_ids.len().min(255) as u8);
    for id in d.sub_ids.iter().take(255) {
        w.u32(*id);
    }
    w.bytes(d.share);
}

/// Write a (sid, pkid) body (`SEND`, `REL`, `ACK`, `Q2IN`, `Q2REL`).
pub fn put_pkid(out: &mut Vec<u8>, sid: u64, pkid: u16) {
    W(out).u64(sid).u16(pkid);
}

fn msg<'a>(r: &mut R<'a>) -> Option<MsgRec<'a>> {
    Some(MsgRec {
        id: r.u64()?,
        expiry_ms: r.u64()?,
        origin: r.bytes()?,
        publish: r.bytes()?,
    })
}

fn delivery<'a>(r: &mut R<'a>) -> Option<DeliveryRec<'a>> {
    let sid = r.u64()?;
    let msg = r.u64()?;
    let qos = r.u8()?;
    let retain = r.u8()? != 0;
    let n = r.u8()?;
    let sub_ids = (0..n).map(|_| r.u32()).collect::<Option<Vec<u32>>>()?;
    let share = r.bytes()?;
    if qos > 2 {
        return None;
    }
    Some(DeliveryRec {
        sid,
        msg,
        qos,
        retain,
        sub_ids,
        share,
    })
}

/// Decode a record body of kind `kind`. `None`: unknown kind or a malformed body (the
/// CRC passed, so this is a bug or a format from the future; recovery reports it).
pub fn decode(kind: u8, body: &[u8]) -> Option<Rec<'_>> {
    let mut r = R(body);
    let rec = match kind {
        kind::MSG => Rec::Msg(msg(&mut r)?),
        kind::RETAIN => Rec::Retain(msg(&mut r)?),
        kind::RETAIN_DEL => Rec::RetainDel { topic: r.bytes()? },
        kind::SESSION => Rec::Session {
            sid: r.u64()?,
            expiry: r.u32()?,
            offline_ms: r.u64()?,
            restated: r.u32()?,
            client_id: r.bytes()?,
            user: match r.u8()? {
                0 => None,
                1 => Some(r.bytes()?),
                _ => return None,
            },
        },
        kind::SESSION_END => Rec::SessionEnd { sid: r.u64()? },
        kind::SUB => Rec::Sub {
            sid: r.u64()?,
            opts: r.u8()?,
            id: r.u32()?,
            filter: r.bytes()?,
        },
        kind::UNSUB => Rec::Unsub {
            sid: r.u64()?,
            filter: r.bytes()?,
        },
        kind::ENQ => Rec::Enq(delivery(&mut r)?),
        kind::SEND => Rec::Send {
            sid: r.u64()?,
            pkid: r.u16()?,
        },
        kind::DROP_FRONT => Rec::DropFront { sid: r.u64()? },
        kind::INFLIGHT => {
            let d = delivery(&mut r)?;
            let pkid = r.u16()?;
            let flight = match r.u8()? {
                0 => Flight::Sent,
                1 => Flight::Released,
                _ => return None,
            };
            Rec::Inflight { d, pkid, flight }
        }
        kind::REL => Rec::Rel {
            sid: r.u64()?,
            pkid: r.u16()?,
        },
        kind::ACK => Rec::Ack {
            sid: r.u64()?,
            pkid: r.u16()?,
        },
        kind::Q2IN => Rec::Q2In {
            sid: r.u64()?,
            pkid: r.u16()?,
            msg: r.u64()?,
            routed: r.u8()? != 0,
            dests: r.u64()?,
        },
        kind::Q2ROUTED => Rec::Q2Routed {
            sid: r.u64()?,
            pkid: r.u16()?,
        },
        kind::SEEN => Rec::Seen { msg: r.u64()? },
        kind::Q2REL => Rec::Q2Rel {
            sid: r.u64()?,
            pkid: r.u16()?,
        },
        kind::SNAP_BEGIN => {
            r.u8()?;
            Rec::SnapBegin
        }
        kind::SNAP_END => Rec::SnapEnd { begin: r.u64()? },
        _ => return None,
    };
    // Trailing bytes mean the writer and reader disagree on the format.
    r.0.is_empty().then_some(rec)
}

/// Encode `rec`'s body into `out` (cleared first); returns its kind.
pub fn encode(out: &mut Vec<u8>, rec: &Rec<'_>) -> u8 {
    out.clear();
    match rec {
        Rec::Msg(m) => {
            put_msg(out, m);
            kind::MSG
        }
        Rec::Retain(m) => {
            put_msg(out, m);
            kind::RETAIN
        }
        Rec::RetainDel { topic } => {
            W(out).bytes(topic);
            kind::RETAIN_DEL
        }
        Rec::Session {
            sid,
            expiry,
            offline_ms,
            restated,
            client_id,
            user,
        } => {
            let mut w = W(out);
            w.u64(*sid)
                .u32(*expiry)
                .u64(*offline_ms)
                .u32(*restated)
                .bytes(client_id);
            match user {
                None => w.u8(0),
                Some(u) => w.u8(1).bytes(u),
            };
            kind::SESSION
        }
        Rec::SessionEnd { sid } => {
            W(out).u64(*sid);
            kind::SESSION_END
        }
        Rec::Sub {
            sid,
            opts,
            id,
            filter,
        } => {
            W(out).u64(*sid).u8(*opts).u32(*id).bytes(filter);
            kind::SUB
        }
        Rec::Unsub { sid, filter } => {
            W(out).u64(*sid).bytes(filter);
            kind::UNSUB
        }
        Rec::Enq(d) => {
            put_delivery(out, d);
            kind::ENQ
        }
        Rec::Send { sid, pkid } => {
            put_pkid(out, *sid, *pkid);
            kind::SEND
        }
        Rec::DropFront { sid } => {
            W(out).u64(*sid);
            kind::DROP_FRONT
        }
        Rec::Inflight { d, pkid, flight } => {
            put_delivery(out, d);
            W(out).u16(*pkid).u8(match flight {
                Flight::Sent => 0,
                Flight::Released => 1,
            });
            kind::INFLIGHT
        }
        Rec::Rel { sid, pkid } => {
            put_pkid(out, *sid, *pkid);
            kind::REL
        }
        Rec::Ack { sid, pkid } => {
            put_pkid(out, *sid, *pkid);
            kind::ACK
        }
        Rec::Q2In {
            sid,
            pkid,
            msg,
            routed,
            dests,
        } => {
            put_pkid(out, *sid, *pkid);
            W(out).u64(*msg).u8(u8::from(*routed)).u64(*dests);
            kind::Q2IN
        }
        Rec::Q2Routed { sid, pkid } => {
            put_pkid(out, *sid, *pkid);
            kind::Q2ROUTED
        }
        Rec::Seen { msg } => {
            W(out).u64(*msg);
            kind::SEEN
        }
        Rec::Q2Rel { sid, pkid } => {
            put_pkid(out, *sid, *pkid);
            kind::Q2REL
        }
        Rec::SnapBegin => {
            out.push(0);
            kind::SNAP_BEGIN
        }
        Rec::SnapEnd { begin } => {
            W(out).u64(*begin);
            kind::SNAP_END
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_rejects_truncation() {
        let d = DeliveryRec {
            sid: 7,
            msg: msg_id(1, 99),
            qos: 2,
            retain: true,
            sub_ids: vec![3, 268_435_455],
            share: b"$share/g/a",
        };
        let m = MsgRec {
            id: msg_id(0, 5),
            expiry_ms: 1_700_000_000_000,
            origin: b"pub-1",
            publish: b"\x32\x05\x00\x01t\x00\x01",
        };
        let recs = vec![
            Rec::Msg(m.clone()),
            Rec::Retain(m),
            Rec::RetainDel { topic: b"a/b" },
            Rec::Session {
                sid: 1,
                expiry: 60,
                offline_ms: 5,
                restated: 3,
                client_id: b"c",
                user: Some(b"alice"),
            },
            Rec::Session {
                sid: 2,
                expiry: 0,
                offline_ms: 0,
                restated: 0,
                client_id: b"d",
                user: None,
            },
            Rec::SessionEnd { sid: 1 },
            Rec::Sub {
                sid: 1,
                opts: 0x1d,
                id: 4,
                filter: b"a/+",
            },
            Rec::Unsub {
                sid: 1,
                filter: b"a/+",
            },
            Rec::Enq(d.clone()),
            Rec::Send {
                sid: 1,
                pkid: 65535,
            },
            Rec::DropFront { sid: 1 },
            Rec::Inflight {
                d,
                pkid: 9,
                flight: Flight::Released,
            },
            Rec::Rel { sid: 1, pkid: 2 },
            Rec::Ack { sid: 1, pkid: 3 },
            Rec::Q2In {
                sid: 1,
                pkid: 4,
                msg: 9,
                routed: true,
                dests: 3,
            },
            Rec::Q2Routed { sid: 1, pkid: 4 },
            Rec::Seen { msg: 9 },
            Rec::Q2Rel { sid: 1, pkid: 5 },
            Rec::SnapBegin,
            Rec::SnapEnd { begin: 77 },
        ];
        let mut buf = Vec::new();
        for rec in &recs {
            let k = encode(&mut buf, rec);
            assert_eq!(decode(k, &buf).as_ref(), Some(rec));
            for cut in 0..buf.len() {
                assert_eq!(decode(k, &buf[..cut]), None, "{rec:?} cut at {cut}");
            }
            let mut longer = buf.clone();
            longer.push(0);
            assert_eq!(decode(k, &longer), None, "trailing byte accepted: {rec:?}");
        }
        assert_eq!(decode(200, &buf), None);
    }

    #[test]
    fn message_ids_carry_the_shard() {
        assert_eq!(msg_id(3, 10) >> 48, 3);
        assert_eq!(msg_id(3, 10) & 0xffff, 10);
    }
}

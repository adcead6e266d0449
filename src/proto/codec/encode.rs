//! Encoding: [`encode`] for any packet, [`encode_publish`] for the fan-out hot path, and
//! [`encoded_len`] so the broker can check a 5.0 client's Maximum Packet Size before encoding.
//!
//! The encoder trusts its input (the broker builds it) and checks only what cannot be
//! represented on the wire: a remaining length above 268,435,455, strings or binary data
//! above 65,535 bytes. 3.1.x packets carry no properties and no reason codes. In 5.0 the
//! shortest legal form is used: an ack with reason 0 and no properties is 2 bytes of body, a
//! DISCONNECT / AUTH with reason 0 and no properties is empty.

use bytes::{BufMut, BytesMut};

use super::props;
use super::wire::{put_binary, put_var_int, var_int_len};
use super::MAX_REMAINING_LENGTH;
use crate::proto::error::ProtoError;
use crate::proto::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PacketId, ProtocolVersion, PubResp, QoS, SubAck,
    Subscribe, UnsubAck, Unsubscribe,
};
use crate::proto::properties::Properties;

/// Total encoded size of `packet` in bytes, fixed header included.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let rem = body_len(packet, version);
    1 + var_int_len(rem) + rem
}

/// Appends `packet` encoded for `version` to `out` (reserving the exact size once). CONNECT is
/// encoded with `version`, which should equal `connect.protocol`. On error nothing is appended.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), ProtoError> {
    if let Packet::Publish(p) = packet {
        return encode_publish(
            out,
            version,
            p.topic.as_bytes(),
            &p.payload,
            p.qos,
            p.retain,
            p.dup,
            p.pkid,
            Some(&p.properties),
        );
    }
    if matches!(packet, Packet::Auth(_)) && !version.is_v5() {
        return Err(ProtoError::ReservedPacketType(15));
    }
    let rem = body_len(packet, version);
    if rem > MAX_REMAINING_LENGTH {
        return Err(ProtoError::EncodeTooLarge(rem));
    }
    let start = out.len();
    out.reserve(1 + var_int_len(rem) + rem);
    let flags = match packet {
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
        _ => 0,
    };
    out.put_u8(packet.type_id() << 4 | flags);
    put_var_int(out, rem);
    let result = write_body(packet, version, out);
    if result.is_err() {
        out.truncate(start);
    }
    debug_assert!(result.is_err() || out.len() - start == 1 + var_int_len(rem) + rem);
    result
}

/// Hot-path PUBLISH encoder: writes the packet straight into a connection's write buffer
/// (one reservation, no intermediate allocation). `props` is ignored for 3.1.x.
#[allow(clippy::too_many_arguments)]
pub fn encode_publish(
    out: &mut BytesMut,
    version: ProtocolVersion,
    topic: &[u8],
    payload: &[u8],
    qos: QoS,
    retain: bool,
    dup: bool,
    pkid: PacketId,
    props: Option<&Properties>,
) -> Result<(), ProtoError> {
    let h = PublishHeader {
        version,
        topic,
        payload_len: payload.len(),
        qos,
        retain,
        dup,
        pkid,
        props,
    };
    write_publish_header(out, &h, payload.len())?;
    out.put_slice(payload);
    Ok(())
}

/// Everything of a PUBLISH but its payload, for writers that send a large payload
/// straight from its shared buffer instead of copying it (`payload_len` bytes must follow).
#[allow(clippy::too_many_arguments)]
pub fn encode_publish_header(
    out: &mut BytesMut,
    version: ProtocolVersion,
    topic: &[u8],
    payload_len: usize,
    qos: QoS,
    retain: bool,
    dup: bool,
    pkid: PacketId,
    props: Option<&Properties>,
) -> Result<(), ProtoError> {
    let h = PublishHeader {
        version,
        topic,
        payload_len,
        qos,
        retain,
        dup,
        pkid,
        props,
    };
    write_publish_header(out, &h, 0)
}

struct PublishHeader<'a> {
    version: ProtocolVersion,
    topic: &'a [u8],
    payload_len: usize,
    qos: QoS,
    retain: bool,
    dup: bool,
    pkid: PacketId,
    props: Option<&'a Properties>,
}

/// Write the fixed header and variable header; reserve `extra` more bytes for the caller.
fn write_publish_header(
    out: &mut BytesMut,
    h: &PublishHeader,
    extra: usize,
) -> Result<(), ProtoError> {
    let version = h.version;
    let props = h.props.filter(|_| version.is_v5());
    let props_len = props.map_or(0, props::len);
    let has_pkid = h.qos != QoS::AtMostOnce;
    let head = 2
        + h.topic.len()
        + if has_pkid { 2 } else { 0 }
        + if version.is_v5() {
            var_int_len(props_len) + props_len
        } else {
            0
        };
    let rem = head + h.payload_len;
    if rem > MAX_REMAINING_LENGTH {
        return Err(ProtoError::EncodeTooLarge(rem));
    }
    if h.topic.len() > usize::from(u16::MAX) {
        return Err(ProtoError::FieldTooLong {
            what: "topic name",
            len: h.topic.len(),
        });
    }
    let start = out.len();
    out.reserve(1 + var_int_len(rem) + head + extra);
    out.put_u8(0x30 | u8::from(h.dup) << 3 | (h.qos as u8) << 1 | u8::from(h.retain));
    put_var_int(out, rem);
    out.put_u16(h.topic.len() as u16);
    out.put_slice(h.topic);
    if has_pkid {
        out.put_u16(h.pkid);
    }
    if version.is_v5() {
        let result = match props {
            Some(p) => props::write(out, p, props_len),
            None => {
                out.put_u8(0);
                Ok(())
            }
        };
        if let Err(e) = result {
            out.truncate(start);
            return Err(e);
        }
    }
    Ok(())
}

fn str_len(s: &[u8]) -> usize {
    2 + s.len()
}

/// Property field length for 5.0, nothing for 3.1.x.
fn props_field(v5: bool, p: &Properties) -> usize {
    if v5 {
        props::field_len(p)
    } else {
        0
    }
}

/// Body of an ack-like packet whose reason code and properties may be omitted.
fn reason_props_len(reason: u8, p: &Properties) -> usize {
    if !p.is_empty() {
        1 + props::field_len(p)
    } else if reason != 0 {
        1
    } else {
        0
    }
}

fn protocol_name(version: ProtocolVersion) -> &'static [u8] {
    match version {
        ProtocolVersion::V31 => b"MQIsdp",
        ProtocolVersion::V311 | ProtocolVersion::V5 => b"MQTT",
    }
}

/// Remaining length of `packet` (everything after the fixed header).
fn body_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(c) => connect_len(c, version),
        Packet::ConnAck(c) => 2 + props_field(v5, &c.properties),
        Packet::Publish(p) => {
            str_len(p.topic.as_bytes())
                + if p.qos == QoS::AtMostOnce { 0 } else { 2 }
                + props_field(v5, &p.properties)
                + p.payload.len()
        }
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            2 + if v5 {
                reason_props_len(r.reason, &r.properties)
            } else {
                0
            }
        }
        Packet::Subscribe(s) => {
            2 + props_field(v5, &s.properties)
                + s.filters
                    .iter()
                    .map(|(f, _)| str_len(f.as_bytes()) + 1)
                    .sum::<usize>()
        }
        Packet::SubAck(s) => 2 + props_field(v5, &s.properties) + s.codes.len(),
        Packet::Unsubscribe(u) => {
            2 + props_field(v5, &u.properties)
                + u.filters
                    .iter()
                    .map(|f| str_len(f.as_bytes()))
                    .sum::<usize>()
        }
        Packet::UnsubAck(u) => {
            2 + if v5 {
                props::field_len(&u.properties) + u.codes.len()
            } else {
                0
            }
        }
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(d) => {
            if v5 {
                reason_props_len(d.reason, &d.properties)
            } else {
                0
            }
        }
        Packet::Auth(a) => reason_props_len(a.reason, &a.properties),
    }
}

fn connect_len(c: &Connect, version: ProtocolVersion) -> usize {
    let v5 = version.is_v5();
    str_len(protocol_name(version))
        + 1 // level
        + 1 // flags
        + 2 // keep alive
        + props_field(v5, &c.properties)
        + str_len(c.client_id.as_bytes())
        + c.will.as_ref().map_or(0, |w| {
            props_field(v5, &w.properties) + str_len(w.topic.as_bytes()) + str_len(&w.payload)
        })
        + c.username.as_ref().map_or(0, |u| str_len(u.as_bytes()))
        + c.password.as_ref().map_or(0, |p| str_len(p))
}

fn put_props(out: &mut BytesMut, v5: bool, p: &Properties) -> Result<(), ProtoError> {
    if v5 {
        props::write(out, p, props::len(p))
    } else {
        Ok(())
    }
}

/// Writes an optional reason code and properties in their shortest form (see
/// [`reason_props_len`]).
fn put_reason_props(out: &mut BytesMut, reason: u8, p: &Properties) -> Result<(), ProtoError> {
    if !p.is_empty() {
        out.put_u8(reason);
        props::write(out, p, props::len(p))
    } else {
        if reason != 0 {
            out.put_u8(reason);
        }
        Ok(())
    }
}

fn write_body(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), ProtoError> {
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(c) => write_connect(c, version, out),
        Packet::ConnAck(ConnAck {
            session_present,
            code,
            properties,
        }) => {
            out.put_u8(u8::from(*session_present));
            out.put_u8(*code);
            put_props(out, v5, properties)
        }
        // Handled by `encode_publish`.
        Packet::Publish(_) => Ok(()),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            let PubResp {
                pkid,
                reason,
                properties,
            } = r;
            out.put_u16(*pkid);
            if v5 {
                put_reason_props(out, *reason, properties)?;
            }
            Ok(())
        }
        Packet::Subscribe(Subscribe {
            pkid,
            filters,
            properties,
        }) => {
            out.put_u16(*pkid);
            put_props(out, v5, properties)?;
            for (filter, o) in filters {
                put_binary(out, "topic filter", filter.as_bytes())?;
                let mut opts = o.qos as u8;
                if v5 {
                    opts |= u8::from(o.no_local) << 2
                        | u8::from(o.retain_as_published) << 3
                        | (o.retain_handling & 0b11) << 4;
                }
                out.put_u8(opts);
            }
            Ok(())
        }
        Packet::SubAck(SubAck {
            pkid,
            codes,
            properties,
        }) => {
            out.put_u16(*pkid);
            put_props(out, v5, properties)?;
            out.put_slice(codes);
            Ok(())
        }
        Packet::Unsubscribe(Unsubscribe {
            pkid,
            filters,
            properties,
        }) => {
            out.put_u16(*pkid);
            put_props(out, v5, properties)?;
            for filter in filters {
                put_binary(out, "topic filter", filter.as_bytes())?;
            }
            Ok(())
        }
        Packet::UnsubAck(UnsubAck {
            pkid,
            codes,
            properties,
        }) => {
            out.put_u16(*pkid);
            if v5 {
                put_props(out, v5, properties)?;
                out.put_slice(codes);
            }
            Ok(())
        }
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(Disconnect { reason, properties }) => {
            if v5 {
                put_reason_props(out, *reason, properties)?;
            }
            Ok(())
        }
        Packet::Auth(Auth { reason, properties }) => put_reason_props(out, *reason, properties),
    }
}

fn write_connect(
    c: &Connect,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), ProtoError> {
    debug_assert_eq!(c.protocol, version, "CONNECT encoded with another version");
    let v5 = version.is_v5();
    put_binary(out, "protocol name", protocol_name(version))?;
    out.put_u8(version.level());
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos as u8) << 3 | u8::from(w.retain) << 5;
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    out.put_u8(flags);
    out.put_u16(c.keep_alive);
    put_props(out, v5, &c.properties)?;
    put_binary(out, "client identifier", c.client_id.as_bytes())?;
    if let Some(w) = &c.will {
        put_props(out, v5, &w.properties)?;
        put_binary(out, "will topic", w.topic.as_bytes())?;
        put_binary(out, "will payload", &w.payload)?;
    }
    if let Some(u) = &c.username {
        put_binary(out, "user name", u.as_bytes())?;
    }
    if let Some(p) = &c.password {
        put_binary(out, "password", p)?;
    }
    Ok(())
}

#[cfg(test)]
mod header_tests {
    use super::*;

    #[test]
    fn header_then_payload_equals_whole_publish() {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let payload = vec![7u8; 70_000];
                let mut whole = BytesMut::new();
                encode_publish(
                    &mut whole, version, b"a/b", &payload, qos, true, false, 9, None,
                )
                .unwrap();
                let mut split = BytesMut::new();
                encode_publish_header(
                    &mut split,
                    version,
                    b"a/b",
                    payload.len(),
                    qos,
                    true,
                    false,
                    9,
                    None,
                )
                .unwrap();
                split.extend_from_slice(&payload);
                assert_eq!(whole, split);
            }
        }
    }
}

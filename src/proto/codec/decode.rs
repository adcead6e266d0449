//! The streaming decoder: fixed header, connection state, one function per packet type.

use bytes::{Buf, BytesMut};

use super::props::{self, Ctx};
use super::wire::{parse_var_int, Reader};
use crate::proto::error::ProtoError;
use crate::proto::packet::{
    Auth, ConnAck, Connect, Disconnect, LastWill, Packet, ProtocolVersion, PubResp, Publish, QoS,
    SubAck, SubOptions, Subscribe, UnsubAck, Unsubscribe,
};
use crate::proto::properties::Properties;
use crate::proto::topic::{validate_topic_filter, validate_topic_name, SHARE_PREFIX};

/// 5.0 reason codes each packet may carry (§2.4 table 2-6), with the statement requiring it.
pub(super) const CONNACK_V5: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
pub(super) const CONNACK_V3: &[u8] = &[0x00, 0x01, 0x02, 0x03, 0x04, 0x05];
pub(super) const PUBACK_V5: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
pub(super) const PUBREL_V5: &[u8] = &[0x00, 0x92];
pub(super) const SUBACK_V5: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
pub(super) const SUBACK_V3: &[u8] = &[0x00, 0x01, 0x02, 0x80];
pub(super) const UNSUBACK_V5: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
pub(super) const DISCONNECT_V5: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
pub(super) const AUTH_V5: &[u8] = &[0x00, 0x18, 0x19];

fn check_code(
    code: u8,
    allowed: &[u8],
    rule: &'static str,
    packet: &'static str,
) -> Result<u8, ProtoError> {
    if allowed.contains(&code) {
        Ok(code)
    } else {
        Err(ProtoError::InvalidReasonCode { rule, packet, code })
    }
}

/// Splits MQTT packets off a connection's receive buffer.
///
/// Owned by the connection task on the connection's shard (one per socket, never shared).
///
/// A server-side decoder ([`Decoder::new`]) starts without a version: the first packet must be
/// CONNECT, which fixes it; it also rejects packets only a server sends. A decoder created
/// with [`Decoder::with_version`] (a client, or tests) accepts every packet type of that
/// version except CONNECT.
///
/// After an error the stream position is lost: close the connection.
#[derive(Debug, Clone)]
pub struct Decoder {
    version: Option<ProtocolVersion>,
    /// No CONNECT seen yet on a server-side decoder.
    awaiting_connect: bool,
    /// The peer is a client.
    server: bool,
    max_packet_size: usize,
}

impl Decoder {
    /// Server side: version unknown until the CONNECT. `max_packet_size` counts the whole
    /// packet (fixed header included), as 5.0's Maximum Packet Size does.
    pub fn new(max_packet_size: usize) -> Decoder {
        Decoder {
            version: None,
            awaiting_connect: true,
            server: true,
            max_packet_size,
        }
    }

    /// A decoder for an established connection of known version (client side, tests, the
    /// load generator). Accepts packets in both directions; rejects CONNECT.
    pub fn with_version(version: ProtocolVersion, max_packet_size: usize) -> Decoder {
        Decoder {
            version: Some(version),
            awaiting_connect: false,
            server: false,
            max_packet_size,
        }
    }

    /// The connection's protocol version. On a server-side decoder it is set as soon as the
    /// CONNECT's protocol level is parsed, even when a later CONNECT field is rejected, so
    /// the caller can pick the CONNACK format ([`ProtoError::connack_code`]).
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// Changes the size limit (e.g. after negotiating it in CONNECT / CONNACK).
    pub fn set_max_packet_size(&mut self, n: usize) {
        self.max_packet_size = n;
    }

    /// The size limit in force, in bytes, fixed header included.
    pub fn max_packet_size(&self) -> usize {
        self.max_packet_size
    }

    /// Decodes one packet from the front of `buf`.
    ///
    /// `Ok(Some(p))` consumes exactly that packet's bytes; `Ok(None)` consumes nothing and
    /// means more bytes are needed (once the fixed header is complete, `buf` is reserved to
    /// hold the whole packet, which is at most `max_packet_size`). The packet's strings and
    /// payload are slices of the bytes split off `buf`, not copies.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, ProtoError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let packet_type = first >> 4;
        let flags = first & 0x0F;
        self.check_first_byte(packet_type, flags)?;

        let len_bytes = buf.get(1..).unwrap_or_default();
        let Some((remaining, n)) = parse_var_int(len_bytes, "remaining length")? else {
            return Ok(None);
        };
        let total = 1 + n + remaining as usize;
        if total > self.max_packet_size {
            return Err(ProtoError::PacketTooLarge {
                size: total,
                max: self.max_packet_size,
            });
        }
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(total);
        frame.advance(1 + n);
        let mut r = Reader::new(frame.freeze());
        self.decode_body(packet_type, flags, &mut r).map(Some)
    }

    /// Everything the first byte alone can reveal, checked before any body is buffered.
    fn check_first_byte(&self, packet_type: u8, flags: u8) -> Result<(), ProtoError> {
        if packet_type == 0 {
            return Err(ProtoError::ReservedPacketType(0));
        }
        if self.awaiting_connect && packet_type != 1 {
            // MQTT-3.1.0-1
            return Err(ProtoError::FirstPacketNotConnect(packet_type));
        }
        if !self.awaiting_connect && packet_type == 1 {
            // MQTT-3.1.0-2
            return Err(ProtoError::UnexpectedConnect);
        }
        if packet_type == 15 && self.version.is_some_and(|v| !v.is_v5()) {
            return Err(ProtoError::ReservedPacketType(15));
        }
        if self.server && matches!(packet_type, 2 | 9 | 11 | 13) {
            return Err(ProtoError::ServerOnlyPacket(packet_type));
        }
        if packet_type == 3 {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                // MQTT-3.3.1-4
                return Err(ProtoError::InvalidQoS);
            }
            if qos == 0 && flags & 0b1000 != 0 {
                // MQTT-3.3.1-2
                return Err(ProtoError::DupOnQoS0);
            }
            return Ok(());
        }
        // MQTT-2.2.2-1 / MQTT-2.2.2-2: PUBREL, SUBSCRIBE, UNSUBSCRIBE carry 0b0010, others 0.
        let expected = if matches!(packet_type, 6 | 8 | 10) {
            0b0010
        } else {
            0
        };
        if flags != expected {
            return Err(ProtoError::InvalidHeaderFlags { packet_type, flags });
        }
        Ok(())
    }

    fn decode_body(
        &mut self,
        packet_type: u8,
        flags: u8,
        r: &mut Reader,
    ) -> Result<Packet, ProtoError> {
        if packet_type == 1 {
            let connect = self.decode_connect(r)?;
            self.awaiting_connect = false;
            return Ok(Packet::Connect(Box::new(connect)));
        }
        let Some(v) = self.version else {
            return Err(ProtoError::FirstPacketNotConnect(packet_type));
        };
        let v5 = v.is_v5();
        let packet = match packet_type {
            2 => Packet::ConnAck(connack(v5, r)?),
            3 => Packet::Publish(publish(v5, self.server, flags, r)?),
            4 => Packet::PubAck(pub_resp(v5, r, Ctx::PUBACK, PUBACK_V5, "[MQTT-3.4.2-1]")?),
            5 => Packet::PubRec(pub_resp(v5, r, Ctx::PUBREC, PUBACK_V5, "[MQTT-3.5.2-1]")?),
            6 => Packet::PubRel(pub_resp(v5, r, Ctx::PUBREL, PUBREL_V5, "[MQTT-3.6.2-1]")?),
            7 => Packet::PubComp(pub_resp(v5, r, Ctx::PUBCOMP, PUBREL_V5, "[MQTT-3.7.2-1]")?),
            8 => Packet::Subscribe(subscribe(v5, r)?),
            9 => Packet::SubAck(suback(v5, r)?),
            10 => Packet::Unsubscribe(unsubscribe(v5, r)?),
            11 => Packet::UnsubAck(unsuback(v5, r)?),
            12 => {
                r.finish("PINGREQ")?;
                Packet::PingReq
            }
            13 => {
                r.finish("PINGRESP")?;
                Packet::PingResp
            }
            14 => {
                let (reason, properties) =
                    reason_and_props(v5, r, Ctx::DISCONNECT, DISCONNECT_V5, "[MQTT-3.14.2-1]")?;
                Packet::Disconnect(Disconnect { reason, properties })
            }
            15 => {
                let (reason, properties) =
                    reason_and_props(v5, r, Ctx::AUTH, AUTH_V5, "[MQTT-3.15.2-1]")?;
                Packet::Auth(Auth { reason, properties })
            }
            other => return Err(ProtoError::ReservedPacketType(other)),
        };
        Ok(packet)
    }

    fn decode_connect(&mut self, r: &mut Reader) -> Result<Connect, ProtoError> {
        let name = r.binary("protocol name")?;
        let level = r.u8("protocol level")?;
        let version = match (&name[..], level) {
            (b"MQTT", 4) => ProtocolVersion::V311,
            (b"MQTT", 5) => ProtocolVersion::V5,
            (b"MQIsdp", 3) => ProtocolVersion::V31,
            // MQTT-3.1.2-2
            (b"MQTT" | b"MQIsdp", level) => {
                return Err(ProtoError::UnsupportedProtocolLevel(level))
            }
            // MQTT-3.1.2-1
            _ => return Err(ProtoError::InvalidProtocolName),
        };
        self.version = Some(version);
        let v5 = version.is_v5();

        let flags = r.u8("connect flags")?;
        if flags & 0x01 != 0 {
            // MQTT-3.1.2-3
            return Err(ProtoError::ConnectReservedFlag);
        }
        let clean_start = flags & 0x02 != 0;
        let will_flag = flags & 0x04 != 0;
        let will_qos = (flags >> 3) & 0b11;
        let will_retain = flags & 0x20 != 0;
        let password_flag = flags & 0x40 != 0;
        let username_flag = flags & 0x80 != 0;
        if !will_flag && will_qos != 0 {
            // MQTT-3.1.2-11, MQTT-3.1.2-13
            return Err(ProtoError::WillQoSWithoutWill);
        }
        if !will_flag && will_retain {
            // MQTT-3.1.2-11, MQTT-3.1.2-15
            return Err(ProtoError::WillRetainWithoutWill);
        }
        // MQTT-3.1.2-14
        let will_qos = QoS::from_u8(will_qos).ok_or(ProtoError::InvalidWillQoS)?;
        if password_flag && !username_flag && !v5 {
            // MQTT-3.1.2-22 (5.0 allows a password without a user name)
            return Err(ProtoError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16("keep alive")?;
        let properties = if v5 {
            let p = props::decode(r, Ctx::CONNECT)?;
            if p.authentication_data.is_some() && p.authentication_method.is_none() {
                return Err(ProtoError::AuthDataWithoutMethod);
            }
            p
        } else {
            Properties::default()
        };

        let client_id = r.string("client identifier")?;
        if client_id.is_empty() {
            match version {
                ProtocolVersion::V31 => return Err(ProtoError::EmptyClientIdV31),
                // MQTT-3.1.3-7, MQTT-3.1.3-8
                ProtocolVersion::V311 if !clean_start => {
                    return Err(ProtoError::EmptyClientIdWithoutCleanSession)
                }
                _ => {}
            }
        }
        let will = if will_flag {
            let properties = if v5 {
                props::decode(r, Ctx::WILL)?
            } else {
                Properties::default()
            };
            let topic = r.string("will topic")?;
            validate_topic_name(&topic).map_err(ProtoError::InvalidTopicName)?;
            let payload = r.binary("will payload")?;
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if username_flag {
            Some(r.string("user name")?)
        } else {
            None
        };
        let password = if password_flag {
            Some(r.binary("password")?)
        } else {
            None
        };
        r.finish("CONNECT")?;
        Ok(Connect {
            protocol: version,
            clean_start,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }
}

fn connack(v5: bool, r: &mut Reader) -> Result<ConnAck, ProtoError> {
    let flags = r.u8("connack flags")?;
    if flags & 0xFE != 0 {
        return Err(ProtoError::ConnAckReservedFlags(flags));
    }
    let session_present = flags & 0x01 != 0;
    let code = r.u8("connack return code")?;
    let code = if v5 {
        check_code(code, CONNACK_V5, "[MQTT-3.2.2-8]", "CONNACK")?
    } else {
        check_code(code, CONNACK_V3, "(§3.2.2.3)", "CONNACK")?
    };
    if session_present && code != 0 {
        // MQTT-3.2.2-4
        return Err(ProtoError::SessionPresentOnError);
    }
    let properties = if v5 {
        props::decode(r, Ctx::CONNACK)?
    } else {
        Properties::default()
    };
    r.finish("CONNACK")?;
    Ok(ConnAck {
        session_present,
        code,
        properties,
    })
}

fn publish(v5: bool, from_client: bool, flags: u8, r: &mut Reader) -> Result<Publish, ProtoError> {
    // QoS 3 and DUP on QoS 0 were rejected from the first byte.
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(ProtoError::InvalidQoS)?;
    let topic = r.string("topic name")?;
    let pkid = if qos == QoS::AtMostOnce {
        0
    } else {
        r.packet_id()?
    };
    let properties = if v5 {
        props::decode(r, Ctx::PUBLISH)?
    } else {
        Properties::default()
    };
    if topic.is_empty() {
        // MQTT-4.7.3-1; 5.0 allows an empty name when a topic alias stands for it.
        if properties.topic_alias.is_none() {
            return Err(ProtoError::EmptyTopicName);
        }
    } else {
        // MQTT-3.3.2-2
        validate_topic_name(&topic).map_err(ProtoError::InvalidTopicName)?;
    }
    if from_client && !properties.subscription_identifiers.is_empty() {
        return Err(ProtoError::SubscriptionIdFromClient);
    }
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic,
        pkid,
        payload: r.rest(),
        properties,
    })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. In 5.0 a remaining length of 2 means reason 0 and no
/// properties, and of 3 means no properties.
fn pub_resp(
    v5: bool,
    r: &mut Reader,
    ctx: Ctx,
    codes: &[u8],
    rule: &'static str,
) -> Result<PubResp, ProtoError> {
    let pkid = r.packet_id()?;
    let (reason, properties) = if v5 {
        reason_and_props(v5, r, ctx, codes, rule)?
    } else {
        r.finish(ctx.packet)?;
        (0, Properties::default())
    };
    Ok(PubResp {
        pkid,
        reason,
        properties,
    })
}

/// A 5.0 reason code and properties that may both be omitted (reason 0, no properties), or
/// the properties alone; then end of packet. For 3.1.x, expects an empty rest.
fn reason_and_props(
    v5: bool,
    r: &mut Reader,
    ctx: Ctx,
    codes: &[u8],
    rule: &'static str,
) -> Result<(u8, Properties), ProtoError> {
    if !v5 || r.remaining() == 0 {
        r.finish(ctx.packet)?;
        return Ok((0, Properties::default()));
    }
    let reason = check_code(r.u8("reason code")?, codes, rule, ctx.packet)?;
    let properties = if r.remaining() > 0 {
        props::decode(r, ctx)?
    } else {
        Properties::default()
    };
    r.finish(ctx.packet)?;
    Ok((reason, properties))
}

fn subscribe(v5: bool, r: &mut Reader) -> Result<Subscribe, ProtoError> {
    let pkid = r.packet_id()?;
    let properties = if v5 {
        props::decode(r, Ctx::SUBSCRIBE)?
    } else {
        Properties::default()
    };
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = r.string("topic filter")?;
        let opts = r.u8("subscription options")?;
        // MQTT-3-8.3-4 (3.1.1: bits 7-2), MQTT-3.8.3-5 (5.0: bits 7-6)
        let reserved = if v5 { 0xC0 } else { 0xFC };
        if opts & reserved != 0 {
            return Err(ProtoError::SubscribeReservedBits(opts));
        }
        let qos = QoS::from_u8(opts & 0b11).ok_or(ProtoError::InvalidRequestedQoS)?;
        let retain_handling = (opts >> 4) & 0b11;
        if retain_handling == 3 {
            return Err(ProtoError::InvalidRetainHandling);
        }
        let options = SubOptions {
            qos,
            no_local: opts & 0x04 != 0,
            retain_as_published: opts & 0x08 != 0,
            retain_handling,
        };
        // MQTT-4.7.1-2, MQTT-4.7.1-3, MQTT-4.8.2-1, MQTT-4.8.2-2
        validate_topic_filter(&filter).map_err(ProtoError::InvalidTopicFilter)?;
        if options.no_local && filter.starts_with(SHARE_PREFIX) {
            // MQTT-3.8.3-4 (5.0)
            return Err(ProtoError::NoLocalOnSharedSubscription);
        }
        filters.push((filter, options));
    }
    if filters.is_empty() {
        // MQTT-3.8.3-3
        return Err(ProtoError::EmptySubscribe);
    }
    Ok(Subscribe {
        pkid,
        filters,
        properties,
    })
}

fn suback(v5: bool, r: &mut Reader) -> Result<SubAck, ProtoError> {
    let pkid = r.packet_id()?;
    let (properties, allowed, rule) = if v5 {
        (props::decode(r, Ctx::SUBACK)?, SUBACK_V5, "(§3.9.3)")
    } else {
        (Properties::default(), SUBACK_V3, "[MQTT-3.9.3-2]")
    };
    let codes = r.rest();
    if codes.is_empty() {
        return Err(ProtoError::NoReasonCodes("SUBACK"));
    }
    for &code in codes.iter() {
        check_code(code, allowed, rule, "SUBACK")?;
    }
    Ok(SubAck {
        pkid,
        codes: codes.to_vec(),
        properties,
    })
}

fn unsubscribe(v5: bool, r: &mut Reader) -> Result<Unsubscribe, ProtoError> {
    let pkid = r.packet_id()?;
    let properties = if v5 {
        props::decode(r, Ctx::UNSUBSCRIBE)?
    } else {
        Properties::default()
    };
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = r.string("topic filter")?;
        validate_topic_filter(&filter).map_err(ProtoError::InvalidTopicFilter)?;
        filters.push(filter);
    }
    if filters.is_empty() {
        // MQTT-3.10.3-2
        return Err(ProtoError::EmptyUnsubscribe);
    }
    Ok(Unsubscribe {
        pkid,
        filters,
        properties,
    })
}

fn unsuback(v5: bool, r: &mut Reader) -> Result<UnsubAck, ProtoError> {
    let pkid = r.packet_id()?;
    if !v5 {
        // 3.1.x UNSUBACK is just the packet identifier.
        r.finish("UNSUBACK")?;
        return Ok(UnsubAck {
            pkid,
            codes: Vec::new(),
            properties: Properties::default(),
        });
    }
    let properties = props::decode(r, Ctx::UNSUBACK)?;
    let codes = r.rest();
    if codes.is_empty() {
        return Err(ProtoError::NoReasonCodes("UNSUBACK"));
    }
    for &code in codes.iter() {
        check_code(code, UNSUBACK_V5, "(§3.11.3)", "UNSUBACK")?;
    }
    Ok(UnsubAck {
        pkid,
        codes: codes.to_vec(),
        properties,
    })
}

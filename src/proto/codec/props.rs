//! MQTT 5.0 properties (§2.2.2): decoding with the per-packet allow list, duplicate and value
//! rules, and encoding.
//!
//! The property identifier is a variable byte integer, but every defined identifier is below
//! 64, so "which properties has this packet seen / may it carry" is a `u64` bit set.

use bytes::{BufMut, BytesMut};

use super::wire::{put_binary, put_var_int, var_int_len, Reader};
use crate::proto::error::ProtoError;
use crate::proto::packet::Utf8Bytes;
use crate::proto::properties::Properties;
use crate::proto::topic::validate_topic_name;

const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
const SERVER_KEEP_ALIVE: u8 = 0x13;
const AUTHENTICATION_METHOD: u8 = 0x15;
const AUTHENTICATION_DATA: u8 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const WILL_DELAY_INTERVAL: u8 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const RESPONSE_INFORMATION: u8 = 0x1A;
const SERVER_REFERENCE: u8 = 0x1C;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const MAXIMUM_QOS: u8 = 0x24;
const RETAIN_AVAILABLE: u8 = 0x25;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

const fn set(ids: &[u8]) -> u64 {
    let mut m = 0u64;
    let mut i = 0;
    while i < ids.len() {
        m |= 1 << ids[i];
        i += 1;
    }
    m
}

/// Where a property block sits: names the packet in errors and fixes the allowed identifiers
/// (table in §2.2.2.2).
#[derive(Debug, Clone, Copy)]
pub(super) struct Ctx {
    pub(super) packet: &'static str,
    allowed: u64,
    /// Subscription identifier may repeat (PUBLISH server to client) or not (SUBSCRIBE).
    repeated_sub_ids: bool,
}

impl Ctx {
    const fn new(packet: &'static str, ids: &[u8]) -> Ctx {
        Ctx {
            packet,
            allowed: set(ids),
            repeated_sub_ids: false,
        }
    }

    pub(super) const CONNECT: Ctx = Ctx::new(
        "CONNECT",
        &[
            SESSION_EXPIRY_INTERVAL,
            AUTHENTICATION_METHOD,
            AUTHENTICATION_DATA,
            REQUEST_PROBLEM_INFORMATION,
            REQUEST_RESPONSE_INFORMATION,
            RECEIVE_MAXIMUM,
            TOPIC_ALIAS_MAXIMUM,
            USER_PROPERTY,
            MAXIMUM_PACKET_SIZE,
        ],
    );
    pub(super) const WILL: Ctx = Ctx::new(
        "will properties",
        &[
            PAYLOAD_FORMAT_INDICATOR,
            MESSAGE_EXPIRY_INTERVAL,
            CONTENT_TYPE,
            RESPONSE_TOPIC,
            CORRELATION_DATA,
            WILL_DELAY_INTERVAL,
            USER_PROPERTY,
        ],
    );
    pub(super) const CONNACK: Ctx = Ctx::new(
        "CONNACK",
        &[
            SESSION_EXPIRY_INTERVAL,
            ASSIGNED_CLIENT_IDENTIFIER,
            SERVER_KEEP_ALIVE,
            AUTHENTICATION_METHOD,
            AUTHENTICATION_DATA,
            RESPONSE_INFORMATION,
            SERVER_REFERENCE,
            REASON_STRING,
            RECEIVE_MAXIMUM,
            TOPIC_ALIAS_MAXIMUM,
            MAXIMUM_QOS,
            RETAIN_AVAILABLE,
            USER_PROPERTY,
            MAXIMUM_PACKET_SIZE,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            SHARED_SUBSCRIPTION_AVAILABLE,
        ],
    );
    pub(super) const PUBLISH: Ctx = Ctx {
        repeated_sub_ids: true,
        ..Ctx::new(
            "PUBLISH",
            &[
                PAYLOAD_FORMAT_INDICATOR,
                MESSAGE_EXPIRY_INTERVAL,
                CONTENT_TYPE,
                RESPONSE_TOPIC,
                CORRELATION_DATA,
                SUBSCRIPTION_IDENTIFIER,
                TOPIC_ALIAS,
                USER_PROPERTY,
            ],
        )
    };
    pub(super) const PUBACK: Ctx = Ctx::new("PUBACK", &[REASON_STRING, USER_PROPERTY]);
    pub(super) const PUBREC: Ctx = Ctx::new("PUBREC", &[REASON_STRING, USER_PROPERTY]);
    pub(super) const PUBREL: Ctx = Ctx::new("PUBREL", &[REASON_STRING, USER_PROPERTY]);
    pub(super) const PUBCOMP: Ctx = Ctx::new("PUBCOMP", &[REASON_STRING, USER_PROPERTY]);
    pub(super) const SUBSCRIBE: Ctx =
        Ctx::new("SUBSCRIBE", &[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY]);
    pub(super) const SUBACK: Ctx = Ctx::new("SUBACK", &[REASON_STRING, USER_PROPERTY]);
    pub(super) const UNSUBSCRIBE: Ctx = Ctx::new("UNSUBSCRIBE", &[USER_PROPERTY]);
    pub(super) const UNSUBACK: Ctx = Ctx::new("UNSUBACK", &[REASON_STRING, USER_PROPERTY]);
    pub(super) const DISCONNECT: Ctx = Ctx::new(
        "DISCONNECT",
        &[
            SESSION_EXPIRY_INTERVAL,
            SERVER_REFERENCE,
            REASON_STRING,
            USER_PROPERTY,
        ],
    );
    pub(super) const AUTH: Ctx = Ctx::new(
        "AUTH",
        &[
            AUTHENTICATION_METHOD,
            AUTHENTICATION_DATA,
            REASON_STRING,
            USER_PROPERTY,
        ],
    );
}

/// A one-byte property whose only values are 0 and 1.
fn boolean(r: &mut Reader, id: u8) -> Result<u8, ProtoError> {
    match r.u8("property value")? {
        v @ (0 | 1) => Ok(v),
        v => Err(ProtoError::InvalidPropertyValue {
            id,
            value: v.into(),
        }),
    }
}

fn non_zero_u16(r: &mut Reader, id: u8) -> Result<u16, ProtoError> {
    match r.u16("property value")? {
        0 => Err(ProtoError::InvalidPropertyValue { id, value: 0 }),
        v => Ok(v),
    }
}

/// Reads a property length and the block it announces.
pub(super) fn decode(r: &mut Reader, ctx: Ctx) -> Result<Properties, ProtoError> {
    let len = r.var_int("property length")?;
    let mut r = r.sub(len as usize, "properties")?;
    let mut p = Properties::default();
    let mut seen = 0u64;
    while r.remaining() > 0 {
        let raw = r.var_int("property identifier")?;
        let id = match u8::try_from(raw) {
            Ok(id) if id < 64 && ctx.allowed & (1 << id) != 0 => id,
            _ => {
                return Err(ProtoError::PropertyNotAllowed {
                    id: raw.min(255) as u8,
                    packet: ctx.packet,
                })
            }
        };
        let repeatable =
            id == USER_PROPERTY || (id == SUBSCRIPTION_IDENTIFIER && ctx.repeated_sub_ids);
        if !repeatable && seen & (1 << id) != 0 {
            return Err(ProtoError::DuplicateProperty {
                id,
                packet: ctx.packet,
            });
        }
        seen |= 1 << id;
        match id {
            PAYLOAD_FORMAT_INDICATOR => p.payload_format_indicator = Some(boolean(&mut r, id)?),
            MESSAGE_EXPIRY_INTERVAL => {
                p.message_expiry_interval = Some(r.u32("message expiry interval")?)
            }
            CONTENT_TYPE => p.content_type = Some(r.string("content type")?),
            RESPONSE_TOPIC => {
                let t = r.string("response topic")?;
                validate_topic_name(&t).map_err(ProtoError::InvalidResponseTopic)?;
                p.response_topic = Some(t);
            }
            CORRELATION_DATA => p.correlation_data = Some(r.binary("correlation data")?),
            SUBSCRIPTION_IDENTIFIER => match r.var_int("subscription identifier")? {
                0 => return Err(ProtoError::SubscriptionIdZero),
                v => p.subscription_identifiers.push(v),
            },
            SESSION_EXPIRY_INTERVAL => {
                p.session_expiry_interval = Some(r.u32("session expiry interval")?)
            }
            ASSIGNED_CLIENT_IDENTIFIER => {
                p.assigned_client_identifier = Some(r.string("assigned client identifier")?)
            }
            SERVER_KEEP_ALIVE => p.server_keep_alive = Some(r.u16("server keep alive")?),
            AUTHENTICATION_METHOD => {
                p.authentication_method = Some(r.string("authentication method")?)
            }
            AUTHENTICATION_DATA => p.authentication_data = Some(r.binary("authentication data")?),
            REQUEST_PROBLEM_INFORMATION => {
                p.request_problem_information = Some(boolean(&mut r, id)?)
            }
            WILL_DELAY_INTERVAL => p.will_delay_interval = Some(r.u32("will delay interval")?),
            REQUEST_RESPONSE_INFORMATION => {
                p.request_response_information = Some(boolean(&mut r, id)?)
            }
            RESPONSE_INFORMATION => {
                p.response_information = Some(r.string("response information")?)
            }
            SERVER_REFERENCE => p.server_reference = Some(r.string("server reference")?),
            REASON_STRING => p.reason_string = Some(r.string("reason string")?),
            RECEIVE_MAXIMUM => p.receive_maximum = Some(non_zero_u16(&mut r, id)?),
            TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(r.u16("topic alias maximum")?),
            TOPIC_ALIAS => match r.u16("topic alias")? {
                0 => return Err(ProtoError::TopicAliasZero),
                v => p.topic_alias = Some(v),
            },
            MAXIMUM_QOS => p.maximum_qos = Some(boolean(&mut r, id)?),
            RETAIN_AVAILABLE => p.retain_available = Some(boolean(&mut r, id)?),
            USER_PROPERTY => {
                let k = r.string("user property name")?;
                let v = r.string("user property value")?;
                p.user_properties.push((k, v));
            }
            MAXIMUM_PACKET_SIZE => match r.u32("maximum packet size")? {
                0 => return Err(ProtoError::InvalidPropertyValue { id, value: 0 }),
                v => p.maximum_packet_size = Some(v),
            },
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                p.wildcard_subscription_available = Some(boolean(&mut r, id)?)
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                p.subscription_identifier_available = Some(boolean(&mut r, id)?)
            }
            SHARED_SUBSCRIPTION_AVAILABLE => {
                p.shared_subscription_available = Some(boolean(&mut r, id)?)
            }
            // Unreachable: `allowed` only holds the identifiers matched above.
            _ => {
                return Err(ProtoError::PropertyNotAllowed {
                    id,
                    packet: ctx.packet,
                })
            }
        }
    }
    Ok(p)
}

fn str_len(s: &Option<Utf8Bytes>) -> usize {
    s.as_ref().map_or(0, |s| 1 + 2 + s.len())
}

/// Length of the property block's content (without its own length prefix).
pub(super) fn len(p: &Properties) -> usize {
    let byte = |v: &Option<u8>| if v.is_some() { 2 } else { 0 };
    let u16 = |v: &Option<u16>| if v.is_some() { 3 } else { 0 };
    let u32 = |v: &Option<u32>| if v.is_some() { 5 } else { 0 };
    let bin = |v: &Option<bytes::Bytes>| v.as_ref().map_or(0, |b| 3 + b.len());
    byte(&p.payload_format_indicator)
        + u32(&p.message_expiry_interval)
        + str_len(&p.content_type)
        + str_len(&p.response_topic)
        + bin(&p.correlation_data)
        + p.subscription_identifiers
            .iter()
            .map(|&v| 1 + var_int_len(v as usize))
            .sum::<usize>()
        + u32(&p.session_expiry_interval)
        + str_len(&p.assigned_client_identifier)
        + u16(&p.server_keep_alive)
        + str_len(&p.authentication_method)
        + bin(&p.authentication_data)
        + byte(&p.request_problem_information)
        + u32(&p.will_delay_interval)
        + byte(&p.request_response_information)
        + str_len(&p.response_information)
        + str_len(&p.server_reference)
        + str_len(&p.reason_string)
        + u16(&p.receive_maximum)
        + u16(&p.topic_alias_maximum)
        + u16(&p.topic_alias)
        + byte(&p.maximum_qos)
        + byte(&p.retain_available)
        + p.user_properties
            .iter()
            .map(|(k, v)| 1 + 2 + k.len() + 2 + v.len())
            .sum::<usize>()
        + u32(&p.maximum_packet_size)
        + byte(&p.wildcard_subscription_available)
        + byte(&p.subscription_identifier_available)
        + byte(&p.shared_subscription_available)
}

/// Length of the whole property field: variable byte integer length plus content.
pub(super) fn field_len(p: &Properties) -> usize {
    let n = len(p);
    var_int_len(n) + n
}

/// Writes the property length and the properties, in identifier order. `content_len` must be
/// [`len`]`(p)`.
pub(super) fn write(
    out: &mut BytesMut,
    p: &Properties,
    content_len: usize,
) -> Result<(), ProtoError> {
    put_var_int(out, content_len);
    let put_str = |out: &mut BytesMut, id: u8, what, v: &Option<Utf8Bytes>| {
        if let Some(s) = v {
            out.put_u8(id);
            put_binary(out, what, s.as_bytes())?;
        }
        Ok::<(), ProtoError>(())
    };
    let put_u8 = |out: &mut BytesMut, id: u8, v: Option<u8>| {
        if let Some(v) = v {
            out.put_u8(id);
            out.put_u8(v);
        }
    };
    let put_u16 = |out: &mut BytesMut, id: u8, v: Option<u16>| {
        if let Some(v) = v {
            out.put_u8(id);
            out.put_u16(v);
        }
    };
    let put_u32 = |out: &mut BytesMut, id: u8, v: Option<u32>| {
        if let Some(v) = v {
            out.put_u8(id);
            out.put_u32(v);
        }
    };
    put_u8(out, PAYLOAD_FORMAT_INDICATOR, p.payload_format_indicator);
    put_u32(out, MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval);
    put_str(out, CONTENT_TYPE, "content type", &p.content_type)?;
    put_str(out, RESPONSE_TOPIC, "response topic", &p.response_topic)?;
    if let Some(b) = &p.correlation_data {
        out.put_u8(CORRELATION_DATA);
        put_binary(out, "correlation data", b)?;
    }
    for &v in &p.subscription_identifiers {
        if v as usize > super::MAX_REMAINING_LENGTH {
            return Err(ProtoError::VarIntOutOfRange {
                what: "subscription identifier",
                value: v,
            });
        }
        out.put_u8(SUBSCRIPTION_IDENTIFIER);
        put_var_int(out, v as usize);
    }
    put_u32(out, SESSION_EXPIRY_INTERVAL, p.session_expiry_interval);
    put_str(
        out,
        ASSIGNED_CLIENT_IDENTIFIER,
        "assigned client identifier",
        &p.assigned_client_identifier,
    )?;
    put_u16(out, SERVER_KEEP_ALIVE, p.server_keep_alive);
    put_str(
        out,
        AUTHENTICATION_METHOD,
        "authentication method",
        &p.authentication_method,
    )?;
    if let Some(b) = &p.authentication_data {
        out.put_u8(AUTHENTICATION_DATA);
        put_binary(out, "authentication data", b)?;
    }
    put_u8(
        out,
        REQUEST_PROBLEM_INFORMATION,
        p.request_problem_information,
    );
    put_u32(out, WILL_DELAY_INTERVAL, p.will_delay_interval);
    put_u8(
        out,
        REQUEST_RESPONSE_INFORMATION,
        p.request_response_information,
    );
    put_str(
        out,
        RESPONSE_INFORMATION,
        "response information",
        &p.response_information,
    )?;
    put_str(
        out,
        SERVER_REFERENCE,
        "server reference",
        &p.server_reference,
    )?;
    put_str(out, REASON_STRING, "reason string", &p.reason_string)?;
    put_u16(out, RECEIVE_MAXIMUM, p.receive_maximum);
    put_u16(out, TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum);
    put_u16(out, TOPIC_ALIAS, p.topic_alias);
    put_u8(out, MAXIMUM_QOS, p.maximum_qos);
    put_u8(out, RETAIN_AVAILABLE, p.retain_available);
    for (k, v) in &p.user_properties {
        out.put_u8(USER_PROPERTY);
        put_binary(out, "user property name", k.as_bytes())?;
        put_binary(out, "user property value", v.as_bytes())?;
    }
    put_u32(out, MAXIMUM_PACKET_SIZE, p.maximum_packet_size);
    put_u8(
        out,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        p.wildcard_subscription_available,
    );
    put_u8(
        out,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        p.subscription_identifier_available,
    );
    put_u8(
        out,
        SHARED_SUBSCRIPTION_AVAILABLE,
        p.shared_subscription_available,
    );
    Ok(())
}

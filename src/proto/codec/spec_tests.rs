//! Raw-byte tests: one per validation rule, each citing the statement it checks, plus the
//! streaming contract (need-more-bytes, exact consumption, bounded buffering, zero copy).
//! Long by design: one short test per rule, grouped by spec section.

use bytes::{BufMut, BytesMut};

use super::wire::put_var_int;
use super::Decoder;
use crate::proto::error::ProtoError;
use crate::proto::packet::{Packet, ProtocolVersion, QoS};
use crate::proto::topic::TopicError;
use ProtocolVersion::{V31, V311, V5};

const MAX: usize = 1 << 20;

/// A packet: first byte, remaining length, body.
fn pkt(first: u8, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u8(first);
    put_var_int(&mut b, body.len());
    b.put_slice(body);
    b
}

/// A length-prefixed string / binary field.
fn s(x: &[u8]) -> Vec<u8> {
    let mut v = (x.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(x);
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// CONNECT with keep alive 60: protocol name, level, flags, then `tail` (properties for 5.0,
/// payload).
fn connect(name: &[u8], level: u8, flags: u8, tail: &[u8]) -> BytesMut {
    pkt(0x10, &cat(&[&s(name), &[level, flags, 0, 60], tail]))
}

fn connect_v311(flags: u8, payload: &[u8]) -> BytesMut {
    connect(b"MQTT", 4, flags, payload)
}

/// 5.0 CONNECT with the given property block content.
fn connect_v5(flags: u8, props: &[u8], payload: &[u8]) -> BytesMut {
    let mut p = BytesMut::new();
    put_var_int(&mut p, props.len());
    p.put_slice(props);
    connect(b"MQTT", 5, flags, &cat(&[&p, payload]))
}

fn err(d: &mut Decoder, mut b: BytesMut) -> ProtoError {
    d.decode(&mut b).expect_err("expected a decode error")
}

fn ok(d: &mut Decoder, mut b: BytesMut) -> Packet {
    let p = d.decode(&mut b).expect("decode").expect("complete packet");
    assert!(b.is_empty(), "packet not fully consumed");
    p
}

fn client(v: ProtocolVersion) -> Decoder {
    Decoder::with_version(v, MAX)
}

/// A server-side decoder that has accepted a CONNECT of version `v`.
fn server(v: ProtocolVersion) -> Decoder {
    let mut d = Decoder::new(MAX);
    let b = match v {
        V31 => connect(b"MQIsdp", 3, 0x02, &s(b"c")),
        V311 => connect_v311(0x02, &s(b"c")),
        V5 => connect_v5(0x02, &[], &s(b"c")),
    };
    ok(&mut d, b);
    assert_eq!(d.version(), Some(v));
    d
}

/// 5.0 body: `head`, then a property block with `props`, then `tail`.
fn v5_body(head: &[u8], props: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut p = BytesMut::new();
    put_var_int(&mut p, props.len());
    p.put_slice(props);
    cat(&[head, &p, tail])
}

// ---- fixed header ------------------------------------------------------------------------

#[test]
fn packet_type_0_is_reserved() {
    // §2.2.1
    assert_eq!(
        err(&mut client(V311), pkt(0x00, &[])),
        ProtoError::ReservedPacketType(0)
    );
}

#[test]
fn packet_type_15_is_reserved_before_5_0() {
    // §2.2.1: AUTH exists only in 5.0.
    assert_eq!(
        err(&mut client(V311), pkt(0xF0, &[])),
        ProtoError::ReservedPacketType(15)
    );
    assert_eq!(
        err(&mut client(V31), pkt(0xF0, &[])),
        ProtoError::ReservedPacketType(15)
    );
    assert!(matches!(
        ok(&mut client(V5), pkt(0xF0, &[])),
        Packet::Auth(_)
    ));
}

#[test]
fn reserved_header_flags() {
    // MQTT-2.2.2-1, MQTT-2.2.2-2
    for (first, t, f) in [
        (0x60u8, 6u8, 0u8), // PUBREL must be 0b0010
        (0x80, 8, 0),       // SUBSCRIBE
        (0xA3, 10, 3),      // UNSUBSCRIBE
        (0x42, 4, 2),       // PUBACK must be 0
        (0xC1, 12, 1),      // PINGREQ
        (0xE8, 14, 8),      // DISCONNECT
    ] {
        let e = err(&mut client(V311), pkt(first, &[0, 1]));
        assert_eq!(
            e,
            ProtoError::InvalidHeaderFlags {
                packet_type: t,
                flags: f
            }
        );
    }
    let e = err(&mut Decoder::new(MAX), pkt(0x12, &[]));
    assert_eq!(
        e,
        ProtoError::InvalidHeaderFlags {
            packet_type: 1,
            flags: 2
        }
    );
}

#[test]
fn remaining_length_longer_than_4_bytes_is_malformed() {
    // §2.2.3 / §1.5.5
    let mut b = BytesMut::from(&[0x30u8, 0xFF, 0xFF, 0xFF, 0xFF, 0x01][..]);
    let e = Decoder::with_version(V311, usize::MAX)
        .decode(&mut b)
        .unwrap_err();
    assert_eq!(
        e,
        ProtoError::MalformedVarInt {
            what: "remaining length"
        }
    );
}

#[test]
fn remaining_length_must_be_minimal() {
    // MQTT-1.5.5-1
    let b = BytesMut::from(&[0xC0u8, 0x80, 0x00][..]);
    assert_eq!(
        err(&mut client(V5), b),
        ProtoError::NonMinimalVarInt {
            what: "remaining length"
        }
    );
}

#[test]
fn oversized_packet_rejected_from_header_before_buffering() {
    // A client announcing 2 MB is refused from the 4 header bytes; nothing is reserved.
    let mut d = Decoder::with_version(V311, 1024);
    let mut b = BytesMut::from(&[0x30u8, 0x80, 0x80, 0x80][..]);
    assert_eq!(d.decode(&mut b), Ok(None)); // length still incomplete
    b.put_u8(0x01); // 2^21 bytes
    let cap = b.capacity();
    assert_eq!(
        d.decode(&mut b),
        Err(ProtoError::PacketTooLarge {
            size: 5 + (1 << 21),
            max: 1024
        })
    );
    assert_eq!(b.capacity(), cap);
    // Exactly at the limit is fine; one byte over is not.
    let p = pkt(0x30, &cat(&[&s(b"t"), &[0u8; 10]]));
    let n = p.len();
    d.set_max_packet_size(n);
    assert!(matches!(ok(&mut d, p.clone()), Packet::Publish(_)));
    d.set_max_packet_size(n - 1);
    assert_eq!(
        err(&mut d, p),
        ProtoError::PacketTooLarge {
            size: n,
            max: n - 1
        }
    );
}

// ---- connection state --------------------------------------------------------------------

#[test]
fn first_packet_must_be_connect() {
    // MQTT-3.1.0-1: rejected from the first byte alone.
    let mut d = Decoder::new(MAX);
    let mut b = BytesMut::from(&[0xC0u8][..]);
    assert_eq!(d.decode(&mut b), Err(ProtoError::FirstPacketNotConnect(12)));
    assert_eq!(
        err(&mut Decoder::new(MAX), pkt(0x30, &s(b"a"))),
        ProtoError::FirstPacketNotConnect(3)
    );
}

#[test]
fn second_connect_is_a_protocol_error() {
    // MQTT-3.1.0-2
    let mut d = server(V311);
    assert_eq!(
        err(&mut d, connect_v311(0x02, &s(b"c"))),
        ProtoError::UnexpectedConnect
    );
    assert_eq!(
        err(&mut client(V5), connect_v5(0x02, &[], &s(b"c"))),
        ProtoError::UnexpectedConnect
    );
}

#[test]
fn server_rejects_server_only_packets() {
    // §2.1.2: CONNACK, SUBACK, UNSUBACK, PINGRESP flow server to client only.
    for first in [0x20u8, 0x90, 0xB0, 0xD0] {
        let e = err(&mut server(V311), pkt(first, &[0, 1, 0]));
        assert_eq!(e, ProtoError::ServerOnlyPacket(first >> 4));
    }
    assert_eq!(ok(&mut client(V311), pkt(0xD0, &[])), Packet::PingResp);
}

// ---- strings and lengths -----------------------------------------------------------------

#[test]
fn field_past_remaining_length_is_malformed() {
    // Topic length 10, only 3 bytes in the packet.
    let e = err(&mut client(V311), pkt(0x30, &[0, 10, b'a', b'b', b'c']));
    assert_eq!(e, ProtoError::Truncated { what: "topic name" });
}

#[test]
fn trailing_bytes_are_malformed() {
    let e = err(&mut client(V311), pkt(0x40, &[0, 1, 0]));
    assert_eq!(
        e,
        ProtoError::TrailingBytes {
            packet: "PUBACK",
            extra: 1
        }
    );
    // §3.12 / §3.13 / §3.14: PINGREQ, PINGRESP and 3.1.x DISCONNECT have no body.
    let e = err(&mut client(V311), pkt(0xC0, &[0]));
    assert_eq!(
        e,
        ProtoError::TrailingBytes {
            packet: "PINGREQ",
            extra: 1
        }
    );
    let e = err(&mut client(V311), pkt(0xD0, &[0]));
    assert_eq!(
        e,
        ProtoError::TrailingBytes {
            packet: "PINGRESP",
            extra: 1
        }
    );
    let e = err(&mut client(V311), pkt(0xE0, &[0]));
    assert_eq!(
        e,
        ProtoError::TrailingBytes {
            packet: "DISCONNECT",
            extra: 1
        }
    );
    let e = err(&mut client(V311), pkt(0xB0, &[0, 1, 0]));
    assert_eq!(
        e,
        ProtoError::TrailingBytes {
            packet: "UNSUBACK",
            extra: 1
        }
    );
    let e = err(
        &mut Decoder::new(MAX),
        connect_v311(0x02, &cat(&[&s(b"c"), &[0]])),
    );
    assert_eq!(
        e,
        ProtoError::TrailingBytes {
            packet: "CONNECT",
            extra: 1
        }
    );
}

#[test]
fn ill_formed_utf8_is_malformed() {
    // MQTT-1.5.3-1: invalid sequence, and an encoded surrogate (U+D800).
    for bad in [&[0xC3u8, 0x28][..], &[0xED, 0xA0, 0x80]] {
        let e = err(&mut client(V311), pkt(0x30, &s(bad)));
        assert_eq!(e, ProtoError::InvalidUtf8 { what: "topic name" });
    }
}

#[test]
fn null_character_is_malformed() {
    // MQTT-1.5.3-2
    let e = err(&mut client(V311), pkt(0x30, &s(b"a\0b")));
    assert_eq!(e, ProtoError::NullCharacter { what: "topic name" });
}

// ---- CONNECT -----------------------------------------------------------------------------

#[test]
fn connect_protocol_name() {
    // MQTT-3.1.2-1: close without CONNACK.
    let mut d = Decoder::new(MAX);
    let e = err(&mut d, connect(b"MQTX", 4, 0x02, &s(b"c")));
    assert_eq!(e, ProtoError::InvalidProtocolName);
    assert_eq!(e.connack_code(d.version()), None);
}

#[test]
fn connect_protocol_level() {
    // MQTT-3.1.2-2: CONNACK 0x01, then close.
    let mut d = Decoder::new(MAX);
    let e = err(&mut d, connect(b"MQTT", 6, 0x02, &s(b"c")));
    assert_eq!(e, ProtoError::UnsupportedProtocolLevel(6));
    assert_eq!(e.connack_code(d.version()), Some(0x01));
    let e = err(
        &mut Decoder::new(MAX),
        connect(b"MQIsdp", 4, 0x02, &s(b"c")),
    );
    assert_eq!(e, ProtoError::UnsupportedProtocolLevel(4));
    let e = err(&mut Decoder::new(MAX), connect(b"MQTT", 3, 0x02, &s(b"c")));
    assert_eq!(e, ProtoError::UnsupportedProtocolLevel(3));
}

#[test]
fn connect_versions() {
    for v in [V31, V311, V5] {
        server(v);
    }
}

#[test]
fn connect_reserved_flag() {
    // MQTT-3.1.2-3
    let mut d = Decoder::new(MAX);
    assert_eq!(
        err(&mut d, connect_v311(0x03, &s(b"c"))),
        ProtoError::ConnectReservedFlag
    );
    // 5.0: malformed CONNECT → CONNACK 0x81.
    let mut d = Decoder::new(MAX);
    let e = err(&mut d, connect_v5(0x03, &[], &s(b"c")));
    assert_eq!(e.connack_code(d.version()), Some(0x81));
}

#[test]
fn will_qos_and_retain_need_the_will_flag() {
    // MQTT-3.1.2-11, MQTT-3.1.2-13
    let e = err(&mut Decoder::new(MAX), connect_v311(0x02 | 0x08, &s(b"c")));
    assert_eq!(e, ProtoError::WillQoSWithoutWill);
    // MQTT-3.1.2-11, MQTT-3.1.2-15
    let e = err(&mut Decoder::new(MAX), connect_v311(0x02 | 0x20, &s(b"c")));
    assert_eq!(e, ProtoError::WillRetainWithoutWill);
}

#[test]
fn will_qos_3_is_malformed() {
    // MQTT-3.1.2-14
    let payload = cat(&[&s(b"c"), &s(b"w"), &s(b"bye")]);
    let e = err(
        &mut Decoder::new(MAX),
        connect_v311(0x02 | 0x04 | 0x18, &payload),
    );
    assert_eq!(e, ProtoError::InvalidWillQoS);
}

#[test]
fn will_is_decoded() {
    let payload = cat(&[&s(b"c"), &s(b"w/t"), &s(b"bye")]);
    let Packet::Connect(c) = ok(
        &mut Decoder::new(MAX),
        connect_v311(0x02 | 0x04 | 0x10 | 0x20, &payload),
    ) else {
        panic!("not a CONNECT")
    };
    let w = c.will.expect("will");
    assert_eq!(
        (&*w.topic, &w.payload[..], w.qos, w.retain),
        ("w/t", &b"bye"[..], QoS::ExactlyOnce, true)
    );
}

#[test]
fn will_topic_must_be_a_valid_topic_name() {
    // MQTT-3.3.2-2 applies to the will topic (§3.1.3.3).
    let payload = cat(&[&s(b"c"), &s(b"w/#"), &s(b"bye")]);
    let e = err(&mut Decoder::new(MAX), connect_v311(0x02 | 0x04, &payload));
    assert_eq!(e, ProtoError::InvalidTopicName(TopicError::WildcardInName));
}

#[test]
fn password_requires_user_name_before_5_0() {
    // MQTT-3.1.2-22
    let payload = cat(&[&s(b"c"), &s(b"pw")]);
    let e = err(&mut Decoder::new(MAX), connect_v311(0x02 | 0x40, &payload));
    assert_eq!(e, ProtoError::PasswordWithoutUsername);
    // 5.0 allows a password without a user name (§3.1.2.9).
    let Packet::Connect(c) = ok(
        &mut Decoder::new(MAX),
        connect_v5(0x02 | 0x40, &[], &payload),
    ) else {
        panic!("not a CONNECT")
    };
    assert_eq!(c.password.as_deref(), Some(&b"pw"[..]));
    assert_eq!(c.username, None);
}

#[test]
fn flagged_fields_must_be_present() {
    // User name flag set, no user name.
    let e = err(&mut Decoder::new(MAX), connect_v311(0x02 | 0x80, &s(b"c")));
    assert_eq!(e, ProtoError::Truncated { what: "user name" });
}

#[test]
fn empty_client_id_requires_clean_session() {
    // MQTT-3.1.3-7, MQTT-3.1.3-8: CONNACK 0x02.
    let mut d = Decoder::new(MAX);
    let e = err(&mut d, connect_v311(0x00, &s(b"")));
    assert_eq!(e, ProtoError::EmptyClientIdWithoutCleanSession);
    assert_eq!(e.connack_code(d.version()), Some(0x02));
    ok(&mut Decoder::new(MAX), connect_v311(0x02, &s(b"")));
    // 5.0 accepts a zero-length client id with clean start 0 (§3.1.3.1).
    ok(&mut Decoder::new(MAX), connect_v5(0x00, &[], &s(b"")));
    // MQTT 3.1 requires 1 to 23 characters.
    let mut d = Decoder::new(MAX);
    let e = err(&mut d, connect(b"MQIsdp", 3, 0x02, &s(b"")));
    assert_eq!(e, ProtoError::EmptyClientIdV31);
    assert_eq!(e.connack_code(d.version()), Some(0x02));
}

#[test]
fn auth_data_requires_auth_method() {
    // §3.1.2.11.10: protocol error → CONNACK 0x82.
    let mut d = Decoder::new(MAX);
    let e = err(
        &mut d,
        connect_v5(0x02, &cat(&[&[0x16], &s(b"x")]), &s(b"c")),
    );
    assert_eq!(e, ProtoError::AuthDataWithoutMethod);
    assert_eq!(e.connack_code(d.version()), Some(0x82));
}

// ---- PUBLISH -----------------------------------------------------------------------------

#[test]
fn publish_qos_3_is_malformed() {
    // MQTT-3.3.1-4: detected from the first byte.
    let mut b = BytesMut::from(&[0x36u8][..]);
    assert_eq!(client(V311).decode(&mut b), Err(ProtoError::InvalidQoS));
}

#[test]
fn dup_on_qos_0_is_malformed() {
    // MQTT-3.3.1-2
    assert_eq!(
        err(&mut client(V311), pkt(0x38, &s(b"t"))),
        ProtoError::DupOnQoS0
    );
}

#[test]
fn packet_identifier_zero() {
    // MQTT-2.3.1-1
    let e = err(&mut client(V311), pkt(0x32, &cat(&[&s(b"t"), &[0, 0]])));
    assert_eq!(e, ProtoError::ZeroPacketId);
    let e = err(
        &mut server(V311),
        pkt(0x82, &cat(&[&[0, 0], &s(b"t"), &[0]])),
    );
    assert_eq!(e, ProtoError::ZeroPacketId);
    let e = err(&mut server(V311), pkt(0xA2, &cat(&[&[0, 0], &s(b"t")])));
    assert_eq!(e, ProtoError::ZeroPacketId);
    let e = err(&mut client(V311), pkt(0x40, &[0, 0]));
    assert_eq!(e, ProtoError::ZeroPacketId);
}

#[test]
fn topic_name_wildcards() {
    // MQTT-3.3.2-2
    for t in [&b"a/+"[..], b"#", b"a/#"] {
        let e = err(&mut client(V311), pkt(0x30, &s(t)));
        assert_eq!(e, ProtoError::InvalidTopicName(TopicError::WildcardInName));
        assert_eq!(e.disconnect_reason(), 0x90);
    }
}

#[test]
fn topic_name_empty() {
    // MQTT-4.7.3-1
    assert_eq!(
        err(&mut client(V311), pkt(0x30, &s(b""))),
        ProtoError::EmptyTopicName
    );
    assert_eq!(
        err(&mut client(V5), pkt(0x30, &v5_body(&s(b""), &[], &[]))),
        ProtoError::EmptyTopicName
    );
    // 5.0: an empty topic with a topic alias is how an alias is used (§3.3.2.3.4).
    let Packet::Publish(p) = ok(
        &mut client(V5),
        pkt(0x30, &v5_body(&s(b""), &[0x23, 0, 7], b"x")),
    ) else {
        panic!("not a PUBLISH")
    };
    assert_eq!(p.properties.topic_alias, Some(7));
}

#[test]
fn topic_alias_zero() {
    // MQTT-3.3.2-8 → DISCONNECT 0x94
    let e = err(
        &mut client(V5),
        pkt(0x30, &v5_body(&s(b"t"), &[0x23, 0, 0], &[])),
    );
    assert_eq!(e, ProtoError::TopicAliasZero);
    assert_eq!(e.disconnect_reason(), 0x94);
}

#[test]
fn subscription_identifier_from_client() {
    // MQTT-3.3.4-6; a server may send several (§3.3.2.3.8).
    let body = v5_body(&s(b"t"), &[0x0B, 1, 0x0B, 2], &[]);
    assert_eq!(
        err(&mut server(V5), pkt(0x30, &body)),
        ProtoError::SubscriptionIdFromClient
    );
    let Packet::Publish(p) = ok(&mut client(V5), pkt(0x30, &body)) else {
        panic!("not a PUBLISH")
    };
    assert_eq!(p.properties.subscription_identifiers, vec![1, 2]);
}

#[test]
fn publish_payload_is_zero_copy() {
    let mut b = pkt(0x32, &cat(&[&s(b"a/b"), &[0, 9], b"payload"]));
    let base = b.as_ptr() as usize;
    let Some(Packet::Publish(p)) = client(V311).decode(&mut b).unwrap() else {
        panic!("not a PUBLISH")
    };
    // Header 2 bytes, topic 2 + 3, packet id 2 → payload at offset 9.
    assert_eq!(p.payload.as_ptr() as usize, base + 9);
    assert_eq!(p.topic.as_bytes().as_ptr() as usize, base + 4);
    assert_eq!((p.pkid, &p.payload[..]), (9, &b"payload"[..]));
}

// ---- SUBSCRIBE / UNSUBSCRIBE -------------------------------------------------------------

#[test]
fn subscribe_needs_a_filter() {
    // MQTT-3.8.3-3
    assert_eq!(
        err(&mut server(V311), pkt(0x82, &[0, 1])),
        ProtoError::EmptySubscribe
    );
    assert_eq!(
        err(&mut server(V5), pkt(0x82, &[0, 1, 0])),
        ProtoError::EmptySubscribe
    );
}

#[test]
fn subscribe_requested_qos_reserved_bits() {
    // MQTT-3-8.3-4
    let e = err(
        &mut server(V311),
        pkt(0x82, &cat(&[&[0, 1], &s(b"t"), &[0x04]])),
    );
    assert_eq!(e, ProtoError::SubscribeReservedBits(0x04));
    let e = err(
        &mut server(V311),
        pkt(0x82, &cat(&[&[0, 1], &s(b"t"), &[0x03]])),
    );
    assert_eq!(e, ProtoError::InvalidRequestedQoS);
}

#[test]
fn subscribe_v5_options() {
    // MQTT-3.8.3-5: bits 6-7 reserved.
    let e = err(
        &mut server(V5),
        pkt(0x82, &v5_body(&[0, 1], &[], &cat(&[&s(b"t"), &[0x40]]))),
    );
    assert_eq!(e, ProtoError::SubscribeReservedBits(0x40));
    // §3.8.3.1: retain handling 3.
    let e = err(
        &mut server(V5),
        pkt(0x82, &v5_body(&[0, 1], &[], &cat(&[&s(b"t"), &[0x30]]))),
    );
    assert_eq!(e, ProtoError::InvalidRetainHandling);
    // QoS 3.
    let e = err(
        &mut server(V5),
        pkt(0x82, &v5_body(&[0, 1], &[], &cat(&[&s(b"t"), &[0x03]]))),
    );
    assert_eq!(e, ProtoError::InvalidRequestedQoS);
    // MQTT-3.8.3-4: no local on a shared subscription.
    let body = v5_body(&[0, 1], &[], &cat(&[&s(b"$share/g/t"), &[0x04]]));
    assert_eq!(
        err(&mut server(V5), pkt(0x82, &body)),
        ProtoError::NoLocalOnSharedSubscription
    );
    // All option bits decode.
    let body = v5_body(&[0, 1], &[0x0B, 5], &cat(&[&s(b"t"), &[0x2E]]));
    let Packet::Subscribe(sub) = ok(&mut server(V5), pkt(0x82, &body)) else {
        panic!("not a SUBSCRIBE")
    };
    let o = sub.filters[0].1;
    assert_eq!(
        (o.qos, o.no_local, o.retain_as_published, o.retain_handling),
        (QoS::ExactlyOnce, true, true, 2)
    );
    assert_eq!(sub.properties.subscription_identifiers, vec![5]);
}

#[test]
fn subscribe_topic_filter_rules() {
    // MQTT-4.7.1-2, MQTT-4.7.1-3
    let e = err(
        &mut server(V311),
        pkt(0x82, &cat(&[&[0, 1], &s(b"a/#/b"), &[0]])),
    );
    assert_eq!(e, ProtoError::InvalidTopicFilter(TopicError::MisplacedHash));
    assert_eq!(e.disconnect_reason(), 0x8F);
    let e = err(
        &mut server(V311),
        pkt(0x82, &cat(&[&[0, 1], &s(b"a+"), &[0]])),
    );
    assert_eq!(e, ProtoError::InvalidTopicFilter(TopicError::MisplacedPlus));
}

#[test]
fn subscription_identifier_rules() {
    // §3.8.2.1.2: 0 is a protocol error; at most one on SUBSCRIBE.
    let body = v5_body(&[0, 1], &[0x0B, 0], &cat(&[&s(b"t"), &[0]]));
    assert_eq!(
        err(&mut server(V5), pkt(0x82, &body)),
        ProtoError::SubscriptionIdZero
    );
    let body = v5_body(&[0, 1], &[0x0B, 1, 0x0B, 2], &cat(&[&s(b"t"), &[0]]));
    let e = err(&mut server(V5), pkt(0x82, &body));
    assert_eq!(
        e,
        ProtoError::DuplicateProperty {
            id: 0x0B,
            packet: "SUBSCRIBE"
        }
    );
}

#[test]
fn unsubscribe_needs_a_filter() {
    // MQTT-3.10.3-2
    assert_eq!(
        err(&mut server(V311), pkt(0xA2, &[0, 1])),
        ProtoError::EmptyUnsubscribe
    );
    let e = err(&mut server(V311), pkt(0xA2, &cat(&[&[0, 1], &s(b"#/a")])));
    assert_eq!(e, ProtoError::InvalidTopicFilter(TopicError::MisplacedHash));
}

// ---- acknowledgements --------------------------------------------------------------------

#[test]
fn connack_rules() {
    // §3.2.2.1: bits 7-1 reserved.
    assert_eq!(
        err(&mut client(V311), pkt(0x20, &[0x02, 0])),
        ProtoError::ConnAckReservedFlags(2)
    );
    // MQTT-3.2.2-4: no session present with an error code.
    assert_eq!(
        err(&mut client(V311), pkt(0x20, &[0x01, 0x05])),
        ProtoError::SessionPresentOnError
    );
    // §3.2.2.3: return codes 6-255 are reserved.
    let e = err(&mut client(V311), pkt(0x20, &[0, 6]));
    assert!(
        matches!(e, ProtoError::InvalidReasonCode { code: 6, .. }),
        "{e}"
    );
    // MQTT-3.2.2-8 (5.0)
    let e = err(&mut client(V5), pkt(0x20, &[0, 0x01, 0]));
    assert!(
        matches!(e, ProtoError::InvalidReasonCode { code: 1, .. }),
        "{e}"
    );
}

#[test]
fn v5_ack_short_forms() {
    // §3.4.2.1: remaining length 2 = success, no properties; 3 = reason, no properties.
    let Packet::PubAck(a) = ok(&mut client(V5), pkt(0x40, &[0, 1])) else {
        panic!()
    };
    assert_eq!((a.pkid, a.reason), (1, 0));
    let Packet::PubRec(a) = ok(&mut client(V5), pkt(0x50, &[0, 1, 0x10])) else {
        panic!()
    };
    assert_eq!(a.reason, 0x10);
    let Packet::PubRel(a) = ok(&mut client(V5), pkt(0x62, &[0, 1, 0x92, 0])) else {
        panic!()
    };
    assert_eq!(a.reason, 0x92);
    // MQTT-3.4.2-1, MQTT-3.6.2-1: reason codes outside the packet's list.
    let e = err(&mut client(V5), pkt(0x40, &[0, 1, 0x05]));
    assert!(
        matches!(
            e,
            ProtoError::InvalidReasonCode {
                packet: "PUBACK",
                code: 5,
                ..
            }
        ),
        "{e}"
    );
    let e = err(&mut client(V5), pkt(0x70, &[0, 1, 0x10]));
    assert!(
        matches!(
            e,
            ProtoError::InvalidReasonCode {
                packet: "PUBCOMP",
                code: 0x10,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn suback_and_unsuback_codes() {
    // MQTT-3.9.3-2
    let e = err(&mut client(V311), pkt(0x90, &[0, 1, 0x03]));
    assert!(
        matches!(e, ProtoError::InvalidReasonCode { code: 3, .. }),
        "{e}"
    );
    assert_eq!(
        err(&mut client(V311), pkt(0x90, &[0, 1])),
        ProtoError::NoReasonCodes("SUBACK")
    );
    assert_eq!(
        err(&mut client(V5), pkt(0xB0, &[0, 1, 0])),
        ProtoError::NoReasonCodes("UNSUBACK")
    );
    let Packet::UnsubAck(u) = ok(&mut client(V5), pkt(0xB0, &[0, 1, 0, 0x11])) else {
        panic!()
    };
    assert_eq!(u.codes, vec![0x11]);
}

#[test]
fn v5_disconnect_and_auth() {
    // §3.14.2.1: remaining length 0 means reason 0x00.
    let Packet::Disconnect(d) = ok(&mut server(V5), pkt(0xE0, &[])) else {
        panic!()
    };
    assert_eq!(d.reason, 0);
    let Packet::Disconnect(d) = ok(&mut server(V5), pkt(0xE0, &[0x04])) else {
        panic!()
    };
    assert_eq!(d.reason, 4);
    // MQTT-3.14.2-1
    let e = err(&mut server(V5), pkt(0xE0, &[0x05]));
    assert!(
        matches!(e, ProtoError::InvalidReasonCode { code: 5, .. }),
        "{e}"
    );
    // MQTT-3.15.2-1
    let e = err(&mut server(V5), pkt(0xF0, &[0x01, 0]));
    assert!(
        matches!(
            e,
            ProtoError::InvalidReasonCode {
                packet: "AUTH",
                code: 1,
                ..
            }
        ),
        "{e}"
    );
    let body = v5_body(&[0x18], &cat(&[&[0x15], &s(b"SCRAM")]), &[]);
    let Packet::Auth(a) = ok(&mut server(V5), pkt(0xF0, &body)) else {
        panic!()
    };
    assert_eq!(a.properties.authentication_method.as_deref(), Some("SCRAM"));
}

// ---- 5.0 properties ----------------------------------------------------------------------

#[test]
fn property_not_allowed_on_packet() {
    // §2.2.2.2: topic alias on SUBSCRIBE, and an undefined identifier.
    let body = v5_body(&[0, 1], &[0x23, 0, 1], &cat(&[&s(b"t"), &[0]]));
    let e = err(&mut server(V5), pkt(0x82, &body));
    assert_eq!(
        e,
        ProtoError::PropertyNotAllowed {
            id: 0x23,
            packet: "SUBSCRIBE"
        }
    );
    assert_eq!(e.disconnect_reason(), 0x81);
    let e = err(
        &mut client(V5),
        pkt(0x30, &v5_body(&s(b"t"), &[0x7F, 0], &[])),
    );
    assert_eq!(
        e,
        ProtoError::PropertyNotAllowed {
            id: 0x7F,
            packet: "PUBLISH"
        }
    );
    // Will delay interval belongs in the will properties, not CONNECT's.
    let e = err(
        &mut Decoder::new(MAX),
        connect_v5(0x02, &[0x18, 0, 0, 0, 1], &s(b"c")),
    );
    assert_eq!(
        e,
        ProtoError::PropertyNotAllowed {
            id: 0x18,
            packet: "CONNECT"
        }
    );
}

#[test]
fn duplicate_property_is_a_protocol_error() {
    // §2.2.2.2; user properties may repeat.
    let props = [0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2];
    let e = err(&mut client(V5), pkt(0x30, &v5_body(&s(b"t"), &props, &[])));
    assert_eq!(
        e,
        ProtoError::DuplicateProperty {
            id: 0x02,
            packet: "PUBLISH"
        }
    );
    assert_eq!(e.disconnect_reason(), 0x82);
    let user = cat(&[&[0x26], &s(b"k"), &s(b"v"), &[0x26], &s(b"k"), &s(b"w")]);
    let Packet::Publish(p) = ok(&mut client(V5), pkt(0x30, &v5_body(&s(b"t"), &user, &[]))) else {
        panic!()
    };
    assert_eq!(p.properties.user_properties.len(), 2);
}

#[test]
fn property_values() {
    // §3.3.2.3.2 payload format indicator is 0 or 1.
    let e = err(
        &mut client(V5),
        pkt(0x30, &v5_body(&s(b"t"), &[0x01, 2], &[])),
    );
    assert_eq!(e, ProtoError::InvalidPropertyValue { id: 0x01, value: 2 });
    // §3.1.2.11.3 receive maximum 0, §3.1.2.11.4 maximum packet size 0.
    let e = err(
        &mut Decoder::new(MAX),
        connect_v5(0x02, &[0x21, 0, 0], &s(b"c")),
    );
    assert_eq!(e, ProtoError::InvalidPropertyValue { id: 0x21, value: 0 });
    let e = err(
        &mut Decoder::new(MAX),
        connect_v5(0x02, &[0x27, 0, 0, 0, 0], &s(b"c")),
    );
    assert_eq!(e, ProtoError::InvalidPropertyValue { id: 0x27, value: 0 });
    // §3.2.2.3.4 maximum QoS is 0 or 1.
    let e = err(
        &mut client(V5),
        pkt(0x20, &v5_body(&[0, 0], &[0x24, 2], &[])),
    );
    assert_eq!(e, ProtoError::InvalidPropertyValue { id: 0x24, value: 2 });
}

#[test]
fn response_topic_must_not_have_wildcards() {
    // MQTT-3.3.2-14
    let props = cat(&[&[0x08], &s(b"reply/+")]);
    let e = err(&mut client(V5), pkt(0x30, &v5_body(&s(b"t"), &props, &[])));
    assert_eq!(
        e,
        ProtoError::InvalidResponseTopic(TopicError::WildcardInName)
    );
}

#[test]
fn property_block_past_packet_end() {
    // Property length 10, 2 bytes of packet left.
    let e = err(
        &mut client(V5),
        pkt(0x30, &cat(&[&s(b"t"), &[10, 0x01, 0]])),
    );
    assert_eq!(e, ProtoError::Truncated { what: "properties" });
}

// ---- streaming ---------------------------------------------------------------------------

#[test]
fn one_byte_at_a_time() {
    let full = pkt(
        0x32,
        &v5_body(
            &cat(&[&s(b"a/b"), &[0, 7]]),
            &[0x02, 0, 0, 0, 9],
            &[1u8; 200],
        ),
    );
    let mut d = client(V5);
    let mut buf = BytesMut::new();
    for (i, &byte) in full.iter().enumerate() {
        buf.put_u8(byte);
        let got = d.decode(&mut buf).unwrap();
        if i + 1 < full.len() {
            assert_eq!(
                got,
                None,
                "complete after {} of {} bytes",
                i + 1,
                full.len()
            );
            assert_eq!(
                buf.len(),
                i + 1,
                "consumed bytes before the packet was complete"
            );
        } else {
            let Some(Packet::Publish(p)) = got else {
                panic!("no packet at the end")
            };
            assert_eq!(
                (
                    p.pkid,
                    p.payload.len(),
                    p.properties.message_expiry_interval
                ),
                (7, 200, Some(9))
            );
        }
    }
    assert!(buf.is_empty());
}

#[test]
fn back_to_back_packets_consume_exactly() {
    let mut d = server(V311);
    let mut buf = pkt(0x30, &cat(&[&s(b"x"), b"one"]));
    buf.extend_from_slice(&pkt(0xC0, &[]));
    let second_publish = pkt(0x30, &cat(&[&s(b"y"), b"two"]));
    buf.extend_from_slice(&second_publish[..3]);
    let Some(Packet::Publish(p)) = d.decode(&mut buf).unwrap() else {
        panic!()
    };
    assert_eq!(&p.payload[..], b"one");
    assert_eq!(d.decode(&mut buf).unwrap(), Some(Packet::PingReq));
    assert_eq!(d.decode(&mut buf).unwrap(), None);
    assert_eq!(buf.len(), 3);
    buf.extend_from_slice(&second_publish[3..]);
    let Some(Packet::Publish(p)) = d.decode(&mut buf).unwrap() else {
        panic!()
    };
    assert_eq!(&p.payload[..], b"two");
    assert!(buf.is_empty());
    assert_eq!(d.decode(&mut buf).unwrap(), None);
}

mod property_matrix;

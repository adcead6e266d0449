//! Property tests: `decode(encode(p)) == p` for every packet type in 3.1, 3.1.1 and 5.0 (the
//! generators only build packets valid for that version), `encoded_len` equals the encoded
//! size, and arbitrary or corrupted bytes never make the decoder panic.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::{encode, encode_publish, encoded_len, Decoder};
use crate::proto::packet::{
    Auth, ConnAck, Connect, Disconnect, LastWill, Packet, ProtocolVersion, PubResp, Publish, QoS,
    SubAck, SubOptions, Subscribe, UnsubAck, Unsubscribe, Utf8Bytes,
};
use crate::proto::properties::Properties;

const MAX: usize = 1 << 20;

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![
        Just(ProtocolVersion::V31),
        Just(ProtocolVersion::V311),
        Just(ProtocolVersion::V5)
    ]
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

/// Any string without U+0000 (control characters included, they are legal).
fn text() -> impl Strategy<Value = Utf8Bytes> {
    "[^\\x00]{0,8}".prop_map(Utf8Bytes::from)
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn level() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_ é€😀$-]{1,6}"
}

fn topic_name() -> impl Strategy<Value = Utf8Bytes> {
    vec(level(), 1..4).prop_map(|l| Utf8Bytes::from(l.join("/")))
}

fn topic_filter() -> impl Strategy<Value = Utf8Bytes> {
    let lvl = prop_oneof![3 => level(), 1 => Just("+".to_string())];
    (vec(lvl, 0..4), any::<bool>()).prop_map(|(mut levels, hash)| {
        if hash || levels.is_empty() {
            levels.push("#".to_string());
        }
        Utf8Bytes::from(levels.join("/"))
    })
}

fn pkid() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn one_of(codes: &'static [u8]) -> impl Strategy<Value = u8> {
    proptest::sample::select(codes)
}

/// Every property, with values valid wherever the property is allowed.
fn all_properties() -> impl Strategy<Value = Properties> {
    let flag = || option::of(0u8..=1);
    let a = (
        flag(),
        option::of(any::<u32>()),
        option::of(text()),
        option::of(topic_name()),
        option::of(binary()),
        vec(1u32..=268_435_455, 0..3),
        option::of(any::<u32>()),
        option::of(text()),
        option::of(any::<u16>()),
        option::of(text()),
        option::of(binary()),
        flag(),
    );
    let b = (
        option::of(any::<u32>()),
        flag(),
        option::of(text()),
        option::of(text()),
        option::of(text()),
        option::of(1u16..),
        option::of(any::<u16>()),
        option::of(1u16..),
        flag(),
        flag(),
        vec((text(), text()), 0..3),
        option::of(1u32..),
    );
    let c = (flag(), flag(), flag());
    (a, b, c).prop_map(|(a, b, c)| Properties {
        payload_format_indicator: a.0,
        message_expiry_interval: a.1,
        content_type: a.2,
        response_topic: a.3,
        correlation_data: a.4,
        subscription_identifiers: a.5,
        session_expiry_interval: a.6,
        assigned_client_identifier: a.7,
        server_keep_alive: a.8,
        authentication_method: a.9,
        authentication_data: a.10,
        request_problem_information: a.11,
        will_delay_interval: b.0,
        request_response_information: b.1,
        response_information: b.2,
        server_reference: b.3,
        reason_string: b.4,
        receive_maximum: b.5,
        topic_alias_maximum: b.6,
        topic_alias: b.7,
        maximum_qos: b.8,
        retain_available: b.9,
        user_properties: b.10,
        maximum_packet_size: b.11,
        wildcard_subscription_available: c.0,
        subscription_identifier_available: c.1,
        shared_subscription_available: c.2,
    })
}

/// Keeps only the properties in `ids` (the §2.2.2.2 table, restated independently of the
/// decoder's copy).
fn only(mut p: Properties, ids: &[u8]) -> Properties {
    let keep = |id: u8| ids.contains(&id);
    macro_rules! clear {
        ($($id:literal => $field:ident),* $(,)?) => {$(
            if !keep($id) {
                p.$field = Default::default();
            }
        )*};
    }
    clear! {
        0x01 => payload_format_indicator, 0x02 => message_expiry_interval, 0x03 => content_type,
        0x08 => response_topic, 0x09 => correlation_data, 0x0B => subscription_identifiers,
        0x11 => session_expiry_interval, 0x12 => assigned_client_identifier,
        0x13 => server_keep_alive, 0x15 => authentication_method, 0x16 => authentication_data,
        0x17 => request_problem_information, 0x18 => will_delay_interval,
        0x19 => request_response_information, 0x1A => response_information,
        0x1C => server_reference, 0x1F => reason_string, 0x21 => receive_maximum,
        0x22 => topic_alias_maximum, 0x23 => topic_alias, 0x24 => maximum_qos,
        0x25 => retain_available, 0x26 => user_properties, 0x27 => maximum_packet_size,
        0x28 => wildcard_subscription_available, 0x29 => subscription_identifier_available,
        0x2A => shared_subscription_available,
    }
    p
}

const CONNECT_IDS: &[u8] = &[0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27];
const WILL_IDS: &[u8] = &[0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26];
const CONNACK_IDS: &[u8] = &[
    0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29,
    0x2A,
];
const PUBLISH_IDS: &[u8] = &[0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26];
const ACK_IDS: &[u8] = &[0x1F, 0x26];
const SUBSCRIBE_IDS: &[u8] = &[0x0B, 0x26];
const UNSUBSCRIBE_IDS: &[u8] = &[0x26];
const DISCONNECT_IDS: &[u8] = &[0x11, 0x1C, 0x1F, 0x26];
const AUTH_IDS: &[u8] = &[0x15, 0x16, 0x1F, 0x26];

// Reason codes each packet may carry: the decoder's own tables.
use super::decode::{
    AUTH_V5, CONNACK_V3, CONNACK_V5, DISCONNECT_V5, PUBACK_V5, PUBREL_V5, SUBACK_V3, SUBACK_V5,
    UNSUBACK_V5,
};

/// Properties for a packet of version `v`: empty for 3.1.x.
fn props_for(v: ProtocolVersion, ids: &'static [u8]) -> BoxedStrategy<Properties> {
    if v.is_v5() {
        all_properties().prop_map(move |p| only(p, ids)).boxed()
    } else {
        Just(Properties::default()).boxed()
    }
}

fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let client_id = match v {
        ProtocolVersion::V31 => "[a-zA-Z0-9]{1,23}".boxed(),
        _ => "[a-zA-Z0-9]{0,23}".boxed(),
    };
    let will = option::of((
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        props_for(v, WILL_IDS),
    ))
    .prop_map(|w| {
        w.map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
    });
    (
        any::<bool>(),
        any::<u16>(),
        client_id,
        will,
        option::of(text()),
        option::of(binary()),
        props_for(v, CONNECT_IDS),
    )
        .prop_map(
            move |(clean, keep_alive, id, will, username, password, mut properties)| {
                // 3.1.1 needs clean session for an empty id; 3.1.x a user name for a password.
                let clean_start = clean || (id.is_empty() && v == ProtocolVersion::V311);
                let password = password.filter(|_| v.is_v5() || username.is_some());
                if properties.authentication_data.is_some()
                    && properties.authentication_method.is_none()
                {
                    properties.authentication_method = Some(Utf8Bytes::from("m"));
                }
                Packet::Connect(Box::new(Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    client_id: Utf8Bytes::from(id),
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        pkid(),
        vec(any::<u8>(), 0..64),
        props_for(v, PUBLISH_IDS),
        any::<bool>(),
    )
        .prop_map(
            |(qos, dup, retain, topic, pkid, payload, properties, use_alias)| {
                let at_most_once = qos == QoS::AtMostOnce;
                // 5.0: an empty topic name stands for a topic alias.
                let topic = if use_alias && properties.topic_alias.is_some() {
                    Utf8Bytes::default()
                } else {
                    topic
                };
                Packet::Publish(Publish {
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    topic,
                    pkid: if at_most_once { 0 } else { pkid },
                    payload: Bytes::from(payload),
                    properties,
                })
            },
        )
}

fn pub_resp(v: ProtocolVersion, codes: &'static [u8]) -> impl Strategy<Value = PubResp> {
    let reason = if v.is_v5() {
        one_of(codes).boxed()
    } else {
        Just(0).boxed()
    };
    (pkid(), reason, props_for(v, ACK_IDS)).prop_map(|(pkid, reason, properties)| PubResp {
        pkid,
        reason,
        properties,
    })
}

fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let opts =
        (qos(), any::<bool>(), any::<bool>(), 0u8..=2).prop_map(move |(qos, nl, rap, rh)| {
            if v.is_v5() {
                SubOptions {
                    qos,
                    no_local: nl,
                    retain_as_published: rap,
                    retain_handling: rh,
                }
            } else {
                SubOptions::qos(qos)
            }
        });
    (
        pkid(),
        vec((topic_filter(), opts), 1..4),
        props_for(v, SUBSCRIBE_IDS),
    )
        .prop_map(|(pkid, filters, mut properties)| {
            properties.subscription_identifiers.truncate(1);
            Packet::Subscribe(Subscribe {
                pkid,
                filters,
                properties,
            })
        })
}

fn reason_packet(
    v: ProtocolVersion,
    codes: &'static [u8],
    ids: &'static [u8],
) -> impl Strategy<Value = (u8, Properties)> {
    let reason = if v.is_v5() {
        one_of(codes).boxed()
    } else {
        Just(0).boxed()
    };
    (reason, props_for(v, ids))
}

/// Every packet valid for version `v`.
fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    let connack_codes = if v5 { CONNACK_V5 } else { CONNACK_V3 };
    let suback_codes = if v5 { SUBACK_V5 } else { SUBACK_V3 };
    let connack = (
        any::<bool>(),
        one_of(connack_codes),
        props_for(v, CONNACK_IDS),
    )
        .prop_map(|(sp, code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present: sp && code == 0,
                code,
                properties,
            })
        });
    let suback = (
        pkid(),
        vec(one_of(suback_codes), 1..5),
        props_for(v, ACK_IDS),
    )
        .prop_map(|(pkid, codes, properties)| {
            Packet::SubAck(SubAck {
                pkid,
                codes,
                properties,
            })
        });
    let unsubscribe = (
        pkid(),
        vec(topic_filter(), 1..4),
        props_for(v, UNSUBSCRIBE_IDS),
    )
        .prop_map(|(pkid, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                pkid,
                filters,
                properties,
            })
        });
    let unsuback_codes = if v5 { 1..5 } else { 0..1 };
    let unsuback = (
        pkid(),
        vec(one_of(UNSUBACK_V5), unsuback_codes),
        props_for(v, ACK_IDS),
    )
        .prop_map(|(pkid, codes, properties)| {
            Packet::UnsubAck(UnsubAck {
                pkid,
                codes,
                properties,
            })
        });
    let disconnect = reason_packet(v, DISCONNECT_V5, DISCONNECT_IDS)
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }));
    let mut all = vec![
        connect(v).boxed(),
        connack.boxed(),
        publish(v).boxed(),
        pub_resp(v, PUBACK_V5).prop_map(Packet::PubAck).boxed(),
        pub_resp(v, PUBACK_V5).prop_map(Packet::PubRec).boxed(),
        pub_resp(v, PUBREL_V5).prop_map(Packet::PubRel).boxed(),
        pub_resp(v, PUBREL_V5).prop_map(Packet::PubComp).boxed(),
        subscribe(v).boxed(),
        suback.boxed(),
        unsubscribe.boxed(),
        unsuback.boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect.boxed(),
    ];
    if v5 {
        let auth = reason_packet(v, AUTH_V5, AUTH_IDS)
            .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }));
        all.push(auth.boxed());
    }
    proptest::strategy::Union::new(all).boxed()
}

fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|v| packet(v).prop_map(move |p| (v, p)))
}

/// A decoder in the state that accepts `p`: fresh server side for CONNECT, a connected
/// client-side decoder otherwise.
fn decoder_for(p: &Packet, v: ProtocolVersion) -> Decoder {
    match p {
        Packet::Connect(_) => Decoder::new(MAX),
        _ => Decoder::with_version(v, MAX),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_inverts_encode((v, p) in versioned_packet()) {
        let mut buf = BytesMut::new();
        encode(&p, v, &mut buf).unwrap();
        prop_assert_eq!(buf.len(), encoded_len(&p, v));
        let mut d = decoder_for(&p, v);
        let decoded = d.decode(&mut buf);
        prop_assert_eq!(decoded, Ok(Some(p)));
        prop_assert!(buf.is_empty());
        prop_assert_eq!(d.version(), Some(v));
    }

    #[test]
    fn encode_publish_matches_encode((v, p) in version().prop_flat_map(|v| (Just(v), publish(v)))) {
        let Packet::Publish(publ) = &p else { unreachable!() };
        let mut a = BytesMut::new();
        encode(&p, v, &mut a).unwrap();
        let mut b = BytesMut::from(&b"prefix"[..]);
        encode_publish(&mut b, v, publ.topic.as_bytes(), &publ.payload, publ.qos, publ.retain,
            publ.dup, publ.pkid, Some(&publ.properties)).unwrap();
        prop_assert_eq!(&b[6..], &a[..]);
    }

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..512), v in version()) {
        for mut d in [Decoder::new(MAX), Decoder::with_version(v, MAX), Decoder::new(64)] {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = d.decode(&mut buf) {}
        }
    }

    #[test]
    fn random_bytes_after_connect_never_panic(bytes in vec(any::<u8>(), 0..512), v in version()) {
        let mut d = Decoder::new(MAX);
        let mut buf = BytesMut::new();
        let connect = Connect {
            protocol: v,
            clean_start: true,
            keep_alive: 0,
            client_id: Utf8Bytes::from("c"),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        };
        encode(&Packet::Connect(Box::new(connect)), v, &mut buf).unwrap();
        buf.extend_from_slice(&bytes);
        while let Ok(Some(_)) = d.decode(&mut buf) {}
    }

    #[test]
    fn corrupted_packets_never_panic(
        (v, p) in versioned_packet(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut buf = BytesMut::new();
        encode(&p, v, &mut buf).unwrap();
        for (at, byte) in flips {
            let i = at.index(buf.len());
            buf[i] = byte;
        }
        let mut d = decoder_for(&p, v);
        while let Ok(Some(_)) = d.decode(&mut buf) {}
    }

    #[test]
    fn truncated_packets_need_more_bytes((v, p) in versioned_packet(), cut in any::<prop::sample::Index>()) {
        let mut full = BytesMut::new();
        encode(&p, v, &mut full).unwrap();
        let n = cut.index(full.len());
        let mut buf = BytesMut::from(&full[..n]);
        prop_assert_eq!(decoder_for(&p, v).decode(&mut buf), Ok(None));
        prop_assert_eq!(buf.len(), n);
    }
}

#[test]
fn encode_rejects_what_the_wire_cannot_carry() {
    use crate::proto::error::ProtoError;
    let mut out = BytesMut::from(&b"keep"[..]);
    let long = vec![b'a'; 70_000];
    let e = encode_publish(
        &mut out,
        ProtocolVersion::V311,
        &long,
        b"",
        QoS::AtMostOnce,
        false,
        false,
        0,
        None,
    );
    assert_eq!(
        e,
        Err(ProtoError::FieldTooLong {
            what: "topic name",
            len: 70_000
        })
    );
    let props = Properties {
        reason_string: Some(Utf8Bytes::from(String::from_utf8(long).unwrap())),
        ..Properties::default()
    };
    let ack = Packet::PubAck(PubResp {
        pkid: 1,
        reason: 0,
        properties: props,
    });
    let e = encode(&ack, ProtocolVersion::V5, &mut out);
    assert!(
        matches!(
            e,
            Err(ProtoError::FieldTooLong {
                what: "reason string",
                ..
            })
        ),
        "{e:?}"
    );
    // Nothing was appended by the failed calls.
    assert_eq!(&out[..], b"keep");
    let auth = Packet::Auth(Auth {
        reason: 0,
        properties: Properties::default(),
    });
    assert_eq!(
        encode(&auth, ProtocolVersion::V311, &mut out),
        Err(ProtoError::ReservedPacketType(15))
    );
}

#[test]
fn v5_acks_use_the_short_forms() {
    let ack = |reason| {
        Packet::PubAck(PubResp {
            pkid: 1,
            reason,
            properties: Properties::default(),
        })
    };
    let v5 = ProtocolVersion::V5;
    assert_eq!(encoded_len(&ack(0), v5), 4);
    assert_eq!(encoded_len(&ack(0x10), v5), 5);
    assert_eq!(encoded_len(&ack(0x10), ProtocolVersion::V311), 4);
    let d = Packet::Disconnect(Disconnect {
        reason: 0,
        properties: Properties::default(),
    });
    assert_eq!(encoded_len(&d, v5), 2);
}

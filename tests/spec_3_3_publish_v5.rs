//! MQTT 5.0 PUBLISH rules on the server: topic aliases in both directions (§3.3.2.3.4),
//! Receive Maximum both ways (§3.3.4, §4.9), the client's Maximum Packet Size
//! (§3.1.2.11.4), Message Expiry (§3.3.2.3.3), server-initiated DISCONNECT reason codes
//! (§3.14.2.1, §4.13), and v5/v3 interworking.

mod common;

use std::time::Duration;

use common::v5::{connect_packet, disconnect, publish, resp, V5Client};
use common::{parse_publish, raw_session, raw_subscribe, Broker};
use ringmq::proto::{Packet, Properties, QoS};

fn alias(a: u16) -> Properties {
    Properties {
        topic_alias: Some(a),
        ..Default::default()
    }
}

#[test]
fn client_topic_aliases_are_resolved() {
    // [MQTT-3.3.2-12] a PUBLISH with an empty topic and a known alias uses the aliased topic.
    let b = Broker::start();
    let (mut sub, _) = V5Client::connect(b.addr, "s", Properties::default());
    sub.subscribe(1, "a/#", QoS::AtMostOnce, Properties::default());
    let (mut p, _) = V5Client::connect(b.addr, "p", Properties::default());
    p.publish("a/long/topic", QoS::AtMostOnce, 0, b"1", alias(3));
    p.publish("", QoS::AtMostOnce, 0, b"2", alias(3));
    // Re-mapping an alias to another topic [MQTT-3.3.2-?]: later uses get the new topic.
    p.publish("a/other", QoS::AtMostOnce, 0, b"3", alias(3));
    p.publish("", QoS::AtMostOnce, 0, b"4", alias(3));
    let got: Vec<(String, Vec<u8>, Option<u16>)> = (0..4)
        .map(|_| {
            let m = sub.expect_publish();
            (
                m.topic.to_string(),
                m.payload.to_vec(),
                m.properties.topic_alias,
            )
        })
        .collect();
    assert_eq!(got[0].0, "a/long/topic");
    assert_eq!(got[1].0, "a/long/topic");
    assert_eq!(got[2].0, "a/other");
    assert_eq!(got[3].0, "a/other");
    // The publisher's alias is connection-specific: never forwarded.
    assert!(got.iter().all(|g| g.2.is_none()), "{got:?}");
}

#[test]
fn topic_alias_above_the_maximum_is_0x94() {
    // [MQTT-3.3.2-10] alias greater than the Topic Alias Maximum the server sent.
    let b = Broker::start_with(&["--topic-alias-maximum", "4"]);
    let (mut p, ack) = V5Client::connect(b.addr, "p", Properties::default());
    assert_eq!(ack.properties.topic_alias_maximum, Some(4));
    p.publish("t", QoS::AtMostOnce, 0, b"x", alias(5));
    assert_eq!(p.expect_disconnect().reason, 0x94);
}

#[test]
fn topic_alias_zero_is_0x94() {
    // [MQTT-3.3.2-8] topic alias 0 is not allowed: raw bytes (our encoder would refuse).
    let b = Broker::start();
    let (mut p, _) = V5Client::connect(b.addr, "p", Properties::default());
    // PUBLISH QoS 0, topic "t", properties: 0x23 (topic alias) = 0.
    p.raw
        .send(&common::packet(0x30, &[0, 1, b't', 3, 0x23, 0, 0, b'x']));
    assert_eq!(p.expect_disconnect().reason, 0x94);
}

#[test]
fn unknown_alias_with_empty_topic_is_a_protocol_error() {
    let b = Broker::start();
    let (mut p, _) = V5Client::connect(b.addr, "p", Properties::default());
    p.publish("", QoS::AtMostOnce, 0, b"x", alias(2));
    assert_eq!(p.expect_disconnect().reason, 0x82);
}

#[test]
fn the_broker_assigns_aliases_within_the_clients_maximum() {
    // §3.3.2.3.4: the server may send aliases up to the client's Topic Alias Maximum.
    let b = Broker::start();
    let props = Properties {
        topic_alias_maximum: Some(1),
        ..Default::default()
    };
    let (mut sub, _) = V5Client::connect(b.addr, "s", props);
    sub.subscribe(1, "al/#", QoS::AtMostOnce, Properties::default());
    let (mut p, _) = V5Client::connect(b.addr, "p", Properties::default());
    for t in ["al/one", "al/one", "al/two", "al/one"] {
        p.publish(t, QoS::AtMostOnce, 0, t.as_bytes(), Properties::default());
    }
    let got: Vec<(String, Option<u16>, Vec<u8>)> = (0..4)
        .map(|_| {
            let m = sub.expect_publish();
            (
                m.topic.to_string(),
                m.properties.topic_alias,
                m.payload.to_vec(),
            )
        })
        .collect();
    assert_eq!(
        got[0],
        ("al/one".into(), Some(1), b"al/one".to_vec()),
        "topic + new alias"
    );
    assert_eq!(
        got[1],
        ("".into(), Some(1), b"al/one".to_vec()),
        "alias only"
    );
    assert_eq!(
        got[2],
        ("al/two".into(), None, b"al/two".to_vec()),
        "no alias left"
    );
    assert_eq!(got[3], ("".into(), Some(1), b"al/one".to_vec()));
}

#[test]
fn exceeding_our_receive_maximum_is_0x93() {
    // [MQTT-3.3.4-7] more unacknowledged QoS 2 publishes than the server's Receive Maximum.
    let b = Broker::start_with(&["--receive-maximum", "2"]);
    let (mut p, ack) = V5Client::connect(b.addr, "p", Properties::default());
    assert_eq!(ack.properties.receive_maximum, Some(2));
    for id in 1..=3 {
        // No PUBREL: each stays unacknowledged.
        p.publish("t", QoS::ExactlyOnce, id, b"x", Properties::default());
    }
    assert_eq!(p.expect_disconnect().reason, 0x93);
}

#[test]
fn the_clients_receive_maximum_bounds_what_the_broker_sends() {
    // [MQTT-3.3.4-9] the server must not send more unacknowledged QoS 1/2 publishes than the
    // client's Receive Maximum.
    let b = Broker::start();
    let props = Properties {
        receive_maximum: Some(2),
        ..Default::default()
    };
    let (mut sub, _) = V5Client::connect(b.addr, "s", props);
    sub.subscribe(1, "rm", QoS::AtLeastOnce, Properties::default());
    let (mut p, _) = V5Client::connect(b.addr, "p", Properties::default());
    for i in 1..=5u16 {
        p.publish("rm", QoS::AtLeastOnce, i, &[i as u8], Properties::default());
    }
    let mut held = Vec::new();
    for _ in 0..2 {
        match sub.expect() {
            Packet::Publish(m) => held.push(m),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    sub.expect_silence(Duration::from_millis(400));
    sub.send(&Packet::PubAck(resp(held[0].pkid)));
    match sub.expect() {
        Packet::Publish(m) => assert_eq!(&m.payload[..], &[3]),
        other => panic!("expected the third PUBLISH, got {other:?}"),
    }
    sub.expect_silence(Duration::from_millis(300));
}

#[test]
fn nothing_over_the_clients_maximum_packet_size_is_sent() {
    // [MQTT-3.1.2-24] / [MQTT-3.1.2-25]: discarded, and the next message still flows.
    let b = Broker::start();
    let props = Properties {
        maximum_packet_size: Some(100),
        ..Default::default()
    };
    let (mut sub, _) = V5Client::connect(b.addr, "s", props);
    sub.subscribe(1, "big", QoS::AtLeastOnce, Properties::default());
    let (mut p, _) = V5Client::connect(b.addr, "p", Properties::default());
    p.publish(
        "big",
        QoS::AtLeastOnce,
        1,
        &[7u8; 200],
        Properties::default(),
    );
    p.publish("big", QoS::AtLeastOnce, 2, b"small", Properties::default());
    let m = sub.expect_publish();
    assert_eq!(&m.payload[..], b"small");
    sub.expect_silence(Duration::from_millis(300));
}

#[test]
fn our_maximum_packet_size_is_0x95() {
    let b = Broker::start_with(&["--max-packet-size", "1024"]);
    let (mut p, ack) = V5Client::connect(b.addr, "p", Properties::default());
    assert_eq!(ack.properties.maximum_packet_size, Some(1024));
    p.publish("t", QoS::AtMostOnce, 0, &[0u8; 2000], Properties::default());
    assert_eq!(p.expect_disconnect().reason, 0x95);
}

#[test]
fn expired_messages_are_not_delivered_and_the_rest_carry_the_time_left() {
    let b = Broker::start();
    let keep = Properties {
        session_expiry_interval: Some(60),
        ..Default::default()
    };
    let (mut sub, _) = V5Client::connect(b.addr, "ex", keep.clone());
    sub.subscribe(1, "ex/t", QoS::AtLeastOnce, Properties::default());
    sub.send(&disconnect(0, Properties::default()));
    drop(sub);
    let (mut p, _) = V5Client::connect(b.addr, "p", Properties::default());
    let ttl = |s| Properties {
        message_expiry_interval: Some(s),
        ..Default::default()
    };
    p.publish("ex/t", QoS::AtLeastOnce, 1, b"short", ttl(1));
    p.publish("ex/t", QoS::AtLeastOnce, 2, b"long", ttl(100));
    p.publish(
        "ex/t",
        QoS::AtLeastOnce,
        3,
        b"forever",
        Properties::default(),
    );
    std::thread::sleep(Duration::from_millis(2100));
    let (mut sub, ack) =
        V5Client::connect_with(b.addr, connect_packet("ex", false, 60, keep.clone()));
    assert!(ack.session_present);
    // [MQTT-3.3.2-5] the expired one is gone; [MQTT-3.3.2-6] the other carries what is left.
    let m = sub.expect_publish();
    assert_eq!(&m.payload[..], b"long");
    let left = m
        .properties
        .message_expiry_interval
        .expect("expiry forwarded");
    assert!((97..=99).contains(&left), "time left {left}");
    let m = sub.expect_publish();
    assert_eq!(&m.payload[..], b"forever");
    assert_eq!(m.properties.message_expiry_interval, None);
}

#[test]
fn takeover_and_shutdown_send_their_reason_codes() {
    // [MQTT-3.1.4-3] takeover → 0x8E; shutdown → 0x8B (§4.13: server DISCONNECT).
    let mut b = Broker::start();
    let (mut first, _) = V5Client::connect(b.addr, "dup", Properties::default());
    let (mut second, _) = V5Client::connect(b.addr, "dup", Properties::default());
    let d = first.expect_disconnect();
    assert_eq!(d.reason, 0x8E);
    // A Reason String is allowed on DISCONNECT [MQTT-3.1.2-29] and says what happened.
    assert_eq!(
        d.properties.reason_string.as_deref(),
        Some("session taken over")
    );
    b.terminate(Duration::from_secs(5));
    assert_eq!(second.expect_disconnect().reason, 0x8B);
}

#[test]
fn keep_alive_timeout_is_0x8d() {
    let b = Broker::start();
    let (mut c, _) =
        V5Client::connect_with(b.addr, connect_packet("ka", true, 1, Properties::default()));
    // Silent client: closed after 1.5 × 1 s (1 s wheel: allow up to ~3.5 s).
    match c.next(Duration::from_secs(5)) {
        common::v5::Got::Packet(Packet::Disconnect(d)) => assert_eq!(d.reason, 0x8D),
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
}

#[test]
fn malformed_and_protocol_errors_get_a_disconnect() {
    let b = Broker::start();
    // Duplicate Message Expiry Interval property → protocol error 0x82 [MQTT-2.2.2-?].
    let (mut c, _) = V5Client::connect(b.addr, "dup-prop", Properties::default());
    c.raw.send(&common::packet(
        0x30,
        &[0, 1, b't', 10, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2, b'x'],
    ));
    assert_eq!(c.expect_disconnect().reason, 0x82);
    // A property length running past the packet → malformed 0x81.
    let (mut c, _) = V5Client::connect(b.addr, "bad-len", Properties::default());
    c.raw
        .send(&common::packet(0x30, &[0, 1, b't', 9, 0x02, 0, 0]));
    assert_eq!(c.expect_disconnect().reason, 0x81);
}

#[test]
fn v5_properties_are_removed_for_v3_subscribers_and_v3_messages_reach_v5() {
    let b = Broker::start();
    let (mut raw3, _) = raw_session(b.addr, "v3", true);
    raw_subscribe(&mut raw3, 1, &[("mix/#", 0)]);
    let (mut sub5, _) = V5Client::connect(b.addr, "v5s", Properties::default());
    sub5.subscribe(1, "mix/#", QoS::AtMostOnce, Properties::default());
    let (mut p5, _) = V5Client::connect(b.addr, "v5p", Properties::default());
    let props = Properties {
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
        content_type: Some("text/plain".into()),
        response_topic: Some("mix/reply".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"id-1")),
        payload_format_indicator: Some(1),
        ..Default::default()
    };
    p5.send(&Packet::Publish(publish(
        "mix/a",
        QoS::AtMostOnce,
        0,
        b"hello",
        props.clone(),
    )));
    // The v3 subscriber gets a plain 3.1.1 PUBLISH (parse_publish would reject extra bytes
    // in the topic/payload split if properties were written).
    let m3 = parse_publish(&common::expect_packet(&mut raw3));
    assert_eq!(m3.topic, "mix/a");
    assert_eq!(m3.payload, b"hello");
    // The v5 subscriber gets every property, user properties in order (§3.3.2.3.7).
    let m5 = sub5.expect_publish();
    assert_eq!(m5.properties.user_properties, props.user_properties);
    assert_eq!(m5.properties.content_type, props.content_type);
    assert_eq!(m5.properties.response_topic, props.response_topic);
    assert_eq!(m5.properties.correlation_data, props.correlation_data);
    assert_eq!(m5.properties.payload_format_indicator, Some(1));
    // And a 3.1.1 publisher's message reaches the v5 subscriber without properties.
    raw3.send(&common::publish_packet(
        "mix/b", 0, false, false, 0, b"from3",
    ));
    let m = sub5.expect_publish();
    assert_eq!(&m.payload[..], b"from3");
    assert!(m.properties.is_empty(), "{:?}", m.properties);
}

#[test]
fn acks_say_when_no_subscriber_matched() {
    // §3.4.2.1 / §3.5.2.1: PUBACK / PUBREC 0x10 "No matching subscribers"; 0x00 otherwise.
    let b = Broker::start();
    let (mut p, _) = V5Client::connect(b.addr, "p", Properties::default());
    p.publish(
        "nobody/here",
        QoS::AtLeastOnce,
        1,
        b"x",
        Properties::default(),
    );
    match p.expect() {
        Packet::PubAck(a) => assert_eq!((a.pkid, a.reason), (1, 0x10)),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    p.publish(
        "nobody/here",
        QoS::ExactlyOnce,
        2,
        b"x",
        Properties::default(),
    );
    match p.expect() {
        Packet::PubRec(a) => assert_eq!((a.pkid, a.reason), (2, 0x10)),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    let (mut s, _) = V5Client::connect(b.addr, "s", Properties::default());
    s.subscribe(1, "some/+", QoS::AtMostOnce, Properties::default());
    p.publish("some/one", QoS::AtLeastOnce, 3, b"x", Properties::default());
    match p.expect() {
        Packet::PubAck(a) => assert_eq!((a.pkid, a.reason), (3, 0x00)),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

#[test]
fn an_expired_retained_message_is_not_sent_to_new_subscribers() {
    // [MQTT-3.3.2-5] also for retained messages: after the interval no subscriber gets it.
    let b = Broker::start();
    let (mut p, _) = V5Client::connect(b.addr, "p", Properties::default());
    for (topic, ttl) in [
        ("keep/short", Some(1)),
        ("keep/long", Some(100)),
        ("keep/none", None),
    ] {
        let mut m = publish(
            topic,
            QoS::AtLeastOnce,
            1,
            topic.as_bytes(),
            Properties {
                message_expiry_interval: ttl,
                ..Default::default()
            },
        );
        m.retain = true;
        p.send(&Packet::Publish(m));
        assert!(matches!(p.expect(), Packet::PubAck(_)));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (mut s, _) = V5Client::connect(b.addr, "s", Properties::default());
    s.subscribe(1, "keep/#", QoS::AtLeastOnce, Properties::default());
    let mut got: Vec<String> = (0..2)
        .map(|_| s.expect_publish().topic.to_string())
        .collect();
    got.sort();
    assert_eq!(got, ["keep/long", "keep/none"]);
    s.expect_silence(Duration::from_millis(300));
}

//! MQTT 3.1.1 section 3.3 (PUBLISH), 3.4–3.7 (the acknowledgements) and the QoS flows of
//! 4.3: end to end with rumqttc, and with raw TCP where the bytes themselves matter.

mod common;

use common::*;
use rumqttc::QoS;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(500);
const SECS5: Duration = Duration::from_secs(5);

/// A raw subscriber with one filter at `qos`.
fn raw_subscriber(broker: &Broker, id: &str, filter: &str, qos: u8) -> Raw {
    let (mut sub, _) = raw_session(broker.addr, id, true);
    assert_eq!(raw_subscribe(&mut sub, 1, &[(filter, qos)]), vec![qos]);
    sub
}

/// Send `bytes` on a fresh session and require the broker to close without answering.
fn assert_publish_closes(broker: &Broker, id: &str, bytes: &[u8]) {
    let (mut raw, _) = raw_session(broker.addr, id, true);
    raw.send(bytes);
    match next_within(&mut raw, SECS5) {
        Next::Closed => {}
        other => panic!("{id}: expected close, got {other:02x?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_end_to_end() {
    // MQTT-4.3.1-1 (QoS 0 delivered at most once), MQTT-3.3.5-1 (forwarded to matching
    // subscribers), MQTT-3.8.4-6 (QoS min(published, granted) = 0).
    let broker = Broker::start();
    let (mut sub, _) = MqttClient::connect(opts(&broker, "sub0")).await;
    sub.subscribe("e2e/0", QoS::ExactlyOnce).await;
    let (mut publ, _) = MqttClient::connect(opts(&broker, "pub0")).await;
    publ.publish("e2e/0", QoS::AtMostOnce, false, b"zero").await;
    let got = sub.expect_publish().await;
    assert_eq!(got.topic, "e2e/0");
    assert_eq!(&got.payload[..], b"zero");
    assert_eq!(got.qos, QoS::AtMostOnce);
    assert!(!got.retain && !got.dup);
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_end_to_end() {
    // MQTT-4.3.2-2 (PUBACK to the publisher), MQTT-3.3.5-1, MQTT-3.8.4-6.
    let broker = Broker::start();
    let (mut sub, _) = MqttClient::connect(opts(&broker, "sub1")).await;
    sub.subscribe("e2e/1", QoS::AtLeastOnce).await;
    let (mut publ, _) = MqttClient::connect(opts(&broker, "pub1")).await;
    publ.publish("e2e/1", QoS::AtLeastOnce, false, b"one").await;
    let got = sub.expect_publish().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("e2e/1", &b"one"[..])
    );
    assert_eq!(got.qos, QoS::AtLeastOnce);
    assert_ne!(got.pkid, 0);
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_end_to_end() {
    // MQTT-4.3.3-2 (PUBREC, then PUBCOMP after PUBREL), delivered exactly once.
    let broker = Broker::start();
    let (mut sub, _) = MqttClient::connect(opts(&broker, "sub2")).await;
    sub.subscribe("e2e/2", QoS::ExactlyOnce).await;
    let (mut publ, _) = MqttClient::connect(opts(&broker, "pub2")).await;
    for i in 0..5u8 {
        publ.publish("e2e/2", QoS::ExactlyOnce, false, &[i]).await;
    }
    for i in 0..5u8 {
        let got = sub.expect_publish().await;
        assert_eq!(&got.payload[..], &[i], "in order (4.6), exactly once");
        assert_eq!(got.qos, QoS::ExactlyOnce);
    }
    sub.expect_no_publish(QUIET).await;
}

#[test]
fn qos1_raw_flow_is_byte_exact() {
    // MQTT-4.3.2-2, MQTT-2.3.1-7: PUBACK `40 02 <id>` with the PUBLISH's packet id.
    // MQTT-4.3.2-1, MQTT-2.3.1-2: the outgoing PUBLISH is `32`, with a non-zero id unused
    // by other unacknowledged packets.
    let broker = Broker::start();
    let mut sub = raw_subscriber(&broker, "sub", "raw/1", 1);
    let (mut publ, _) = raw_session(broker.addr, "pub", true);
    publ.send(&publish_packet("raw/1", 1, false, false, 0x1234, b"a"));
    assert_eq!(expect_packet(&mut publ), vec![0x40, 0x02, 0x12, 0x34]);
    publ.send(&publish_packet("raw/1", 1, false, false, 0x1235, b"b"));
    assert_eq!(expect_packet(&mut publ), vec![0x40, 0x02, 0x12, 0x35]);
    let a = expect_publish(&mut sub);
    let b = expect_publish(&mut sub);
    assert_eq!(
        (a.first, &a.topic[..], &a.payload[..]),
        (0x32, "raw/1", &b"a"[..])
    );
    assert_eq!((b.first, &b.payload[..]), (0x32, &b"b"[..]));
    let (ida, idb) = (a.pkid.unwrap(), b.pkid.unwrap());
    assert!(ida != 0 && idb != 0 && ida != idb, "ids {ida} {idb}");
    for id in [ida, idb] {
        let [hi, lo] = id.to_be_bytes();
        sub.send(&[0x40, 0x02, hi, lo]);
    }
    expect_silence(&mut sub, QUIET);
}

#[test]
fn qos2_raw_flow_is_byte_exact() {
    // MQTT-4.3.3-2 (receiver): PUBREC `50 02 id`, PUBCOMP `70 02 id` after PUBREL `62 02 id`.
    // MQTT-4.3.3-1 (sender): PUBLISH `34`, then after our PUBREC a PUBREL `62 02 id`
    // (MQTT-3.6.1-1: PUBREL flags 0010), after our PUBCOMP nothing more.
    let broker = Broker::start();
    let mut sub = raw_subscriber(&broker, "sub", "raw/2", 2);
    let (mut publ, _) = raw_session(broker.addr, "pub", true);
    publ.send(&publish_packet(
        "raw/2", 2, false, false, 0x0A0B, b"exactly",
    ));
    assert_eq!(expect_packet(&mut publ), vec![0x50, 0x02, 0x0A, 0x0B]);
    publ.send(&[0x62, 0x02, 0x0A, 0x0B]);
    assert_eq!(expect_packet(&mut publ), vec![0x70, 0x02, 0x0A, 0x0B]);

    let got = expect_publish(&mut sub);
    assert_eq!(
        (got.first, &got.topic[..], &got.payload[..]),
        (0x34, "raw/2", &b"exactly"[..])
    );
    let [hi, lo] = got.pkid.expect("packet id").to_be_bytes();
    assert_ne!(got.pkid, Some(0));
    sub.send(&[0x50, 0x02, hi, lo]);
    assert_eq!(expect_packet(&mut sub), vec![0x62, 0x02, hi, lo]);
    sub.send(&[0x70, 0x02, hi, lo]);
    expect_silence(&mut sub, QUIET);
}

#[test]
fn wildcard_in_topic_name_closes() {
    // MQTT-3.3.2-2: the topic name in PUBLISH MUST NOT contain wildcards.
    let broker = Broker::start();
    let mut sub = raw_subscriber(&broker, "sub", "#", 0);
    for (i, topic) in ["a/+", "a/#", "+", "#", "a+b"].iter().enumerate() {
        assert_publish_closes(
            &broker,
            &format!("wild{i}"),
            &publish_packet(topic, 0, false, false, 0, b"x"),
        );
    }
    expect_silence(&mut sub, QUIET);
}

#[test]
fn qos_3_closes() {
    // MQTT-3.3.1-4: a PUBLISH MUST NOT have both QoS bits set.
    let broker = Broker::start();
    let mut sub = raw_subscriber(&broker, "sub", "q3", 2);
    let mut p = publish_packet("q3", 2, false, false, 5, b"x");
    p[0] = 0x36;
    assert_publish_closes(&broker, "q3", &p);
    expect_silence(&mut sub, QUIET);
}

#[test]
fn dup_on_qos0_closes() {
    // MQTT-3.3.1-2: DUP MUST be 0 for QoS 0 messages.
    let broker = Broker::start();
    let mut sub = raw_subscriber(&broker, "sub", "dup0", 0);
    assert_publish_closes(
        &broker,
        "dup0",
        &publish_packet("dup0", 0, false, true, 0, b"x"),
    );
    expect_silence(&mut sub, QUIET);
}

#[test]
fn qos2_retransmission_before_pubrel_is_delivered_once() {
    // MQTT-4.3.3-2: until PUBREL, a PUBLISH with the same packet id is acknowledged with
    // PUBREC again and MUST NOT cause a duplicate delivery; after PUBCOMP the same id is a
    // new publication.
    let broker = Broker::start();
    let mut sub = raw_subscriber(&broker, "sub", "once", 0);
    let (mut publ, _) = raw_session(broker.addr, "pub", true);
    publ.send(&publish_packet("once", 2, false, false, 7, b"first"));
    assert_eq!(expect_packet(&mut publ), vec![0x50, 0x02, 0x00, 0x07]);
    publ.send(&publish_packet("once", 2, false, true, 7, b"first"));
    assert_eq!(expect_packet(&mut publ), vec![0x50, 0x02, 0x00, 0x07]);
    publ.send(&publish_packet("once", 2, false, true, 7, b"first"));
    assert_eq!(expect_packet(&mut publ), vec![0x50, 0x02, 0x00, 0x07]);
    publ.send(&[0x62, 0x02, 0x00, 0x07]);
    assert_eq!(expect_packet(&mut publ), vec![0x70, 0x02, 0x00, 0x07]);

    let got = expect_publish(&mut sub);
    assert_eq!((got.first, &got.payload[..]), (0x30, &b"first"[..]));
    expect_silence(&mut sub, QUIET);

    publ.send(&publish_packet("once", 2, false, false, 7, b"second"));
    assert_eq!(expect_packet(&mut publ), vec![0x50, 0x02, 0x00, 0x07]);
    publ.send(&[0x62, 0x02, 0x00, 0x07]);
    assert_eq!(expect_packet(&mut publ), vec![0x70, 0x02, 0x00, 0x07]);
    assert_eq!(expect_publish(&mut sub).payload, b"second");
    expect_silence(&mut sub, QUIET);
}

#[test]
fn pubrel_for_unknown_id_is_answered_with_pubcomp() {
    // MQTT-3.6.4-1: the receiver of a PUBREL MUST answer PUBCOMP with the same id (the
    // sender may be retransmitting a PUBREL whose PUBCOMP was lost).
    let broker = Broker::start();
    let (mut raw, _) = raw_session(broker.addr, "rel", true);
    raw.send(&[0x62, 0x02, 0x00, 0x63]);
    assert_eq!(expect_packet(&mut raw), vec![0x70, 0x02, 0x00, 0x63]);
    raw.send(&[0x62, 0x02, 0xFF, 0xFF]);
    assert_eq!(expect_packet(&mut raw), vec![0x70, 0x02, 0xFF, 0xFF]);
}

#[test]
fn delivery_qos_is_the_minimum_of_published_and_granted() {
    // MQTT-3.8.4-6: delivered QoS = min(published QoS, granted QoS).
    let broker = Broker::start();
    let mut s0 = raw_subscriber(&broker, "s0", "down", 0);
    let mut s1 = raw_subscriber(&broker, "s1", "down", 1);
    let mut s2 = raw_subscriber(&broker, "s2", "down", 2);
    let (mut publ, _) = raw_session(broker.addr, "pub", true);

    publ.send(&publish_packet("down", 2, false, false, 1, b"q2"));
    assert_eq!(expect_packet(&mut publ), vec![0x50, 0x02, 0x00, 0x01]);
    publ.send(&[0x62, 0x02, 0x00, 0x01]);
    assert_eq!(expect_packet(&mut publ), vec![0x70, 0x02, 0x00, 0x01]);
    let (a, b, c) = (
        expect_publish(&mut s0),
        expect_publish(&mut s1),
        expect_publish(&mut s2),
    );
    assert_eq!((a.first, a.pkid), (0x30, None));
    assert_eq!(b.first, 0x32);
    assert_eq!(c.first, 0x34);
    for p in [&a, &b, &c] {
        assert_eq!(p.payload, b"q2");
    }
    let [hi, lo] = b.pkid.unwrap().to_be_bytes();
    s1.send(&[0x40, 0x02, hi, lo]);
    let [hi, lo] = c.pkid.unwrap().to_be_bytes();
    s2.send(&[0x50, 0x02, hi, lo]);
    assert_eq!(expect_packet(&mut s2), vec![0x62, 0x02, hi, lo]);
    s2.send(&[0x70, 0x02, hi, lo]);

    // A QoS 0 publish stays QoS 0 for every subscriber.
    publ.send(&publish_packet("down", 0, false, false, 0, b"q0"));
    for s in [&mut s0, &mut s1, &mut s2] {
        let p = expect_publish(s);
        assert_eq!((p.first, p.pkid, &p.payload[..]), (0x30, None, &b"q0"[..]));
    }
}

#[test]
fn retain_flag_is_cleared_on_normal_forwarding() {
    // MQTT-3.3.1-9: a retained publish forwarded to an existing subscription has RETAIN 0.
    // MQTT-3.3.1-8: a new subscription receives the retained message with RETAIN 1.
    let broker = Broker::start();
    let mut live = raw_subscriber(&broker, "live", "ret/t", 0);
    let (mut publ, _) = raw_session(broker.addr, "pub", true);
    publ.send(&publish_packet("ret/t", 1, true, false, 3, b"kept"));
    assert_eq!(expect_packet(&mut publ), vec![0x40, 0x02, 0x00, 0x03]);
    let got = expect_publish(&mut live);
    assert_eq!((got.first, &got.payload[..]), (0x30, &b"kept"[..]));

    let mut late = raw_subscriber(&broker, "late", "ret/t", 0);
    let got = expect_publish(&mut late);
    assert_eq!(
        (got.first, &got.topic[..], &got.payload[..]),
        (0x31, "ret/t", &b"kept"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_sees_retain_only_on_new_subscription() {
    // MQTT-3.3.1-8, MQTT-3.3.1-9, end to end through rumqttc.
    let broker = Broker::start();
    let (mut live, _) = MqttClient::connect(opts(&broker, "live")).await;
    live.subscribe("ret/r", QoS::AtLeastOnce).await;
    let (mut publ, _) = MqttClient::connect(opts(&broker, "pub")).await;
    publ.publish("ret/r", QoS::AtLeastOnce, true, b"r").await;
    let got = live.expect_publish().await;
    assert!(!got.retain, "forwarded live with RETAIN=1: {got:?}");
    let (mut late, _) = MqttClient::connect(opts(&broker, "late")).await;
    late.subscribe("ret/r", QoS::AtLeastOnce).await;
    let got = late.expect_publish().await;
    assert!(got.retain, "retained delivery without RETAIN=1: {got:?}");
    assert_eq!(&got.payload[..], b"r");
}

#[test]
fn empty_payload_is_delivered() {
    // MQTT 3.3.3: a zero-length payload is valid.
    let broker = Broker::start();
    let mut sub = raw_subscriber(&broker, "sub", "empty", 1);
    let (mut publ, _) = raw_session(broker.addr, "pub", true);
    publ.send(&publish_packet("empty", 1, false, false, 1, b""));
    assert_eq!(expect_packet(&mut publ), vec![0x40, 0x02, 0x00, 0x01]);
    let got = expect_publish(&mut sub);
    assert_eq!(
        (got.first, &got.topic[..], got.payload.len()),
        (0x32, "empty", 0)
    );
}

//! MQTT 3.1.1 section 3.8 (SUBSCRIBE) and 3.9 (SUBACK): return codes byte-exactly, invalid
//! filters (which the broker answers by closing the connection), replacement and overlap.

mod common;

use common::*;
use rumqttc::{QoS, SubscribeReasonCode};
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(500);
const SECS5: Duration = Duration::from_secs(5);

/// Send a SUBSCRIBE body (flags 0x82) on a fresh session; the broker must close without a
/// SUBACK.
fn assert_subscribe_closes(broker: &Broker, id: &str, body: &[u8]) {
    let (mut raw, _) = raw_session(broker.addr, id, true);
    raw.send(&packet(0x82, body));
    match next_within(&mut raw, SECS5) {
        Next::Closed => {}
        other => panic!("{id}: expected close, got {other:02x?}"),
    }
}

fn sub_body(pkid: u16, filter: &str, qos_byte: u8) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    body.extend(mqtt_str(filter));
    body.push(qos_byte);
    body
}

/// Complete the receiver side of whatever QoS `p` was delivered with.
fn ack(raw: &mut Raw, p: &RawPublish) {
    let Some(id) = p.pkid else { return };
    let [hi, lo] = id.to_be_bytes();
    if p.qos() == 1 {
        raw.send(&[0x40, 0x02, hi, lo]);
    } else {
        raw.send(&[0x50, 0x02, hi, lo]);
        assert_eq!(expect_packet(raw), vec![0x62, 0x02, hi, lo]);
        raw.send(&[0x70, 0x02, hi, lo]);
    }
}

/// Publish from a raw client and finish its QoS flow.
fn publish(publ: &mut Raw, topic: &str, qos: u8, retain: bool, pkid: u16, payload: &[u8]) {
    publ.send(&publish_packet(topic, qos, retain, false, pkid, payload));
    let [hi, lo] = pkid.to_be_bytes();
    match qos {
        1 => assert_eq!(expect_packet(publ), vec![0x40, 0x02, hi, lo]),
        2 => {
            assert_eq!(expect_packet(publ), vec![0x50, 0x02, hi, lo]);
            publ.send(&[0x62, 0x02, hi, lo]);
            assert_eq!(expect_packet(publ), vec![0x70, 0x02, hi, lo]);
        }
        _ => {}
    }
}

#[test]
fn suback_has_one_code_per_filter_in_order() {
    // MQTT-3.8.4-1 (SUBACK), MQTT-3.8.4-2 (same packet id), MQTT-3.8.4-4 (one SUBACK for
    // many filters), MQTT-3.8.4-5 (one return code per filter, in order), granted = requested.
    let broker = Broker::start();
    let (mut raw, _) = raw_session(broker.addr, "order", true);
    raw.send(&subscribe_packet(
        0x0102,
        &[("a", 2), ("b/+", 0), ("c/#", 1), ("d", 0), ("e", 2)],
    ));
    assert_eq!(
        expect_packet(&mut raw),
        vec![0x90, 0x07, 0x01, 0x02, 0x02, 0x00, 0x01, 0x00, 0x02]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_subscribe_gets_granted_qos() {
    // MQTT-3.8.4-1, MQTT-3.9.3-1 (return codes 0x00–0x02 grant that QoS).
    let broker = Broker::start();
    let (mut c, _) = MqttClient::connect(opts(&broker, "rq")).await;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        assert_eq!(
            c.subscribe("granted/x", qos).await,
            vec![SubscribeReasonCode::Success(qos)]
        );
    }
}

#[test]
fn invalid_topic_filters_close_the_connection() {
    // MQTT-4.7.1-2: `#` MUST be the last character and occupy a whole level.
    // MQTT-4.7.1-3: `+` MUST occupy a whole level.
    // MQTT-4.7.3-1: a topic filter MUST be at least one character long.
    // Contract: in 3.1.1 an invalid filter closes the connection (no SUBACK).
    let broker = Broker::start();
    for (i, filter) in ["a/#/b", "a#", "#/a", "a+", "a/+b", "+a/b", ""]
        .iter()
        .enumerate()
    {
        assert_subscribe_closes(&broker, &format!("bad{i}"), &sub_body(1, filter, 0));
    }
}

#[test]
fn invalid_filter_after_valid_ones_closes_without_suback() {
    // MQTT-4.7.1-2 with MQTT-3.8.4-4: the packet as a whole is rejected.
    let broker = Broker::start();
    let (mut raw, _) = raw_session(broker.addr, "mixed", true);
    raw.send(&subscribe_packet(1, &[("ok/a", 0), ("bad/#/x", 0)]));
    wait_closed(&mut raw, SECS5);
}

#[test]
fn reserved_bits_or_qos_3_in_requested_qos_close() {
    // MQTT-3-8.3-4: reserved bits of the requested-QoS byte non-zero, or QoS 3 → malformed,
    // close the connection.
    let broker = Broker::start();
    for (i, qos_byte) in [0x03u8, 0x04, 0x81, 0xFC].into_iter().enumerate() {
        assert_subscribe_closes(&broker, &format!("rq{i}"), &sub_body(1, "q/x", qos_byte));
    }
}

#[test]
fn subscribe_without_filters_closes() {
    // MQTT-3.8.3-3: SUBSCRIBE MUST contain at least one filter/QoS pair.
    let broker = Broker::start();
    assert_subscribe_closes(&broker, "empty", &[0x00, 0x01]);
}

#[test]
fn filter_without_qos_byte_closes() {
    // MQTT 3.8.3 / MQTT-4.8.0-1: each filter is followed by a QoS byte; a missing one makes
    // the packet malformed.
    let broker = Broker::start();
    let mut body = vec![0x00, 0x01];
    body.extend(mqtt_str("no/qos"));
    assert_subscribe_closes(&broker, "noqos", &body);
}

#[test]
fn resubscribing_replaces_the_qos_and_resends_retained() {
    // MQTT-3.8.4-3: an identical filter replaces the existing subscription (new QoS), and
    // matching retained messages MUST be re-sent; publishing continues without a gap.
    let broker = Broker::start();
    let (mut publ, _) = raw_session(broker.addr, "pub", true);
    publish(&mut publ, "re/t", 1, true, 1, b"retained");
    let (mut sub, _) = raw_session(broker.addr, "sub", true);

    assert_eq!(raw_subscribe(&mut sub, 1, &[("re/t", 0)]), vec![0]);
    let r = expect_publish(&mut sub);
    assert_eq!((r.first, &r.payload[..]), (0x31, &b"retained"[..]));

    assert_eq!(raw_subscribe(&mut sub, 2, &[("re/t", 2)]), vec![2]);
    let r = expect_publish(&mut sub);
    assert_eq!((r.first & !0x08, &r.payload[..]), (0x33, &b"retained"[..]));
    ack(&mut sub, &r);

    publish(&mut publ, "re/t", 2, false, 2, b"now qos2");
    let p = expect_publish(&mut sub);
    assert_eq!((p.first, &p.payload[..]), (0x34, &b"now qos2"[..]));
    ack(&mut sub, &p);
    expect_silence(&mut sub, QUIET);

    // And downwards again: QoS 0.
    assert_eq!(raw_subscribe(&mut sub, 3, &[("re/t", 0)]), vec![0]);
    let r = expect_publish(&mut sub);
    assert_eq!(r.first, 0x31);
    publish(&mut publ, "re/t", 2, false, 3, b"now qos0");
    let p = expect_publish(&mut sub);
    assert_eq!((p.first, &p.payload[..]), (0x30, &b"now qos0"[..]));
    expect_silence(&mut sub, QUIET);
}

#[test]
fn overlapping_subscriptions_deliver_once_at_the_highest_qos() {
    // MQTT 3.3.5 (non-normative choice), contract: one delivery at the highest granted QoS
    // of the matching subscriptions, capped by the published QoS (MQTT-3.8.4-6).
    let broker = Broker::start();
    let (mut sub, _) = raw_session(broker.addr, "sub", true);
    assert_eq!(
        raw_subscribe(&mut sub, 1, &[("o/#", 0), ("o/+", 1), ("o/x", 2), ("#", 0)]),
        vec![0, 1, 2, 0]
    );
    let (mut publ, _) = raw_session(broker.addr, "pub", true);

    publish(&mut publ, "o/x", 1, false, 1, b"q1");
    let p = expect_publish(&mut sub);
    assert_eq!((p.first, &p.payload[..]), (0x32, &b"q1"[..]));
    ack(&mut sub, &p);
    expect_silence(&mut sub, QUIET);

    publish(&mut publ, "o/x", 2, false, 2, b"q2");
    let p = expect_publish(&mut sub);
    assert_eq!((p.first, &p.payload[..]), (0x34, &b"q2"[..]));
    ack(&mut sub, &p);
    expect_silence(&mut sub, QUIET);

    // Only `o/#` and `#` (both QoS 0) match a deeper topic.
    publish(&mut publ, "o/x/y", 2, false, 3, b"deep");
    let p = expect_publish(&mut sub);
    assert_eq!((p.first, &p.payload[..]), (0x30, &b"deep"[..]));
    expect_silence(&mut sub, QUIET);
}

#[test]
fn messages_published_after_suback_are_delivered() {
    // MQTT-3.8.4-1 with MQTT-3.3.5-1: once SUBACK is sent, matching publishes — from
    // another shard too — reach the subscriber.
    let broker = Broker::start_with(&["--shards", "2"]);
    let (mut sub, _) = raw_session(broker.addr, "sub", true);
    assert_eq!(raw_subscribe(&mut sub, 1, &[("xs/+", 1)]), vec![1]);
    for i in 0..4u16 {
        let (mut publ, _) = raw_session(broker.addr, &format!("pub{i}"), true);
        publish(&mut publ, &format!("xs/{i}"), 1, false, 1, b"hop");
        let p = expect_publish(&mut sub);
        assert_eq!(p.topic, format!("xs/{i}"));
        ack(&mut sub, &p);
    }
}

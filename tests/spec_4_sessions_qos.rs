//! MQTT 3.1.1 §3.1.2.4 (Clean Session), §3.2.2.2 (Session Present), §4.3 (QoS flows),
//! §4.4 (message delivery retry) and §4.6 (message ordering), against the real broker.
//!
//! Byte-exact checks (DUP flag, packet ids, PUBREL resend) use raw TCP; the rest rumqttc.

mod common;

use common::*;
use rumqttc::QoS;
use std::time::Duration;

const PUBACK: u8 = 0x40;
const PUBREC: u8 = 0x50;
const PUBREL: u8 = 0x62;
const PUBCOMP: u8 = 0x70;

#[test]
fn session_present_flag_and_subscriptions_survive_reconnect() {
    let broker = Broker::start();
    let sub = TestClient::connect(&broker, "sess-sp", false);
    // MQTT-3.2.2-3: clean 0 without a stored session → session present 0.
    assert!(!sub.session_present, "no session existed yet");
    let mut sub = sub;
    sub.subscribe("sess/sp", QoS::AtLeastOnce);
    sub.disconnect();

    let mut sub = TestClient::connect(&broker, "sess-sp", false);
    // MQTT-3.2.2-2: clean 0 with a stored session → session present 1.
    assert!(sub.session_present, "stored session must be reported");
    // MQTT-3.1.2-4: the session (its subscriptions) is resumed — no new SUBSCRIBE.
    let mut publisher = TestClient::connect(&broker, "sess-sp-pub", true);
    publisher.publish_confirmed("sess/sp", QoS::AtLeastOnce, false, "again");
    let p = sub.recv();
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("sess/sp", &b"again"[..])
    );
}

#[test]
fn offline_qos1_and_qos2_messages_delivered_on_reconnect() {
    // MQTT-3.1.2-5: after the client disconnects, QoS 1 and QoS 2 messages matching its
    // subscriptions are stored as part of the session state and delivered on resume.
    let broker = Broker::start();
    let mut sub = TestClient::connect(&broker, "sess-off", false);
    sub.subscribe("sess/off/#", QoS::ExactlyOnce);
    sub.disconnect();

    let mut publisher = TestClient::connect(&broker, "sess-off-pub", true);
    publisher.publish_confirmed("sess/off/1", QoS::AtLeastOnce, false, "one");
    publisher.publish_confirmed("sess/off/2", QoS::ExactlyOnce, false, "two");

    let mut sub = TestClient::connect(&broker, "sess-off", false);
    assert!(sub.session_present, "MQTT-3.2.2-2");
    let a = sub.recv();
    let b = sub.recv();
    assert_eq!((a.topic.as_str(), a.qos), ("sess/off/1", QoS::AtLeastOnce));
    assert_eq!((b.topic.as_str(), b.qos), ("sess/off/2", QoS::ExactlyOnce));
    assert_eq!((&a.payload[..], &b.payload[..]), (&b"one"[..], &b"two"[..]));
    sub.expect_no_publish(Duration::from_millis(500));
}

#[test]
fn clean_session_1_discards_stored_state() {
    // MQTT-3.1.2-6: clean session 1 discards any previous session and starts a new one;
    // its state is not reused by any later session.
    let broker = Broker::start();
    let mut sub = TestClient::connect(&broker, "sess-clean", false);
    sub.subscribe("sess/clean", QoS::AtLeastOnce);
    sub.disconnect();
    let mut publisher = TestClient::connect(&broker, "sess-clean-pub", true);
    publisher.publish_confirmed("sess/clean", QoS::AtLeastOnce, false, "stale");

    let mut sub = TestClient::connect(&broker, "sess-clean", true);
    // MQTT-3.2.2-1: clean session 1 → session present 0.
    assert!(!sub.session_present);
    // Neither the queued message nor the subscription survives.
    sub.expect_no_publish(Duration::from_millis(700));
    publisher.publish_confirmed("sess/clean", QoS::AtLeastOnce, false, "fresh");
    sub.expect_no_publish(Duration::from_millis(700));
    sub.disconnect();

    // The clean session ended with its connection: nothing is stored for this id now.
    let sub = TestClient::connect(&broker, "sess-clean", false);
    assert!(
        !sub.session_present,
        "MQTT-3.1.2-6: clean session state must not be reused"
    );
}

#[test]
fn unacked_qos1_publish_resent_with_dup_and_same_packet_id() {
    // MQTT-4.4.0-1: on reconnect with clean session 0 the server re-sends unacknowledged
    // PUBLISH packets with their original packet identifiers; MQTT-3.3.1-1: with DUP=1.
    let broker = Broker::start();
    let (mut raw, _) = raw_session(broker.addr, "sess-dup1", false);
    raw_subscribe(&mut raw, 1, &[("sess/dup1", 1)]);

    let mut publisher = TestClient::connect(&broker, "sess-dup1-pub", true);
    publisher.publish_confirmed("sess/dup1", QoS::AtLeastOnce, false, "hello");
    let first = expect_publish(&mut raw);
    assert_eq!(first.qos(), 1);
    assert!(
        !first.dup(),
        "first delivery must have DUP=0 [MQTT-3.3.1-2]"
    );
    drop(raw); // never acknowledged

    let (mut raw, present) = raw_session(broker.addr, "sess-dup1", false);
    assert!(present, "MQTT-3.2.2-2");
    let again = expect_publish(&mut raw);
    assert!(again.dup(), "re-delivery must have DUP=1: {again:?}");
    assert_eq!(again.pkid, first.pkid, "same packet id");
    assert_eq!(
        (again.topic.as_str(), &again.payload[..]),
        ("sess/dup1", &b"hello"[..])
    );
    raw.send(&ack_v311(PUBACK, again.pkid.unwrap()));
    expect_silence(&mut raw, Duration::from_millis(500));
    drop(raw);

    // Acknowledged now: a further reconnect re-sends nothing.
    let (mut raw, _) = raw_session(broker.addr, "sess-dup1", false);
    expect_silence(&mut raw, Duration::from_millis(700));
}

#[test]
fn unacked_qos2_publish_resent_with_dup_and_same_packet_id() {
    // MQTT-4.4.0-1 / MQTT-3.3.1-1 for QoS 2 before PUBREC.
    let broker = Broker::start();
    let (mut raw, _) = raw_session(broker.addr, "sess-dup2", false);
    raw_subscribe(&mut raw, 1, &[("sess/dup2", 2)]);

    let mut publisher = TestClient::connect(&broker, "sess-dup2-pub", true);
    publisher.publish_confirmed("sess/dup2", QoS::ExactlyOnce, false, "twice?");
    let first = expect_publish(&mut raw);
    assert_eq!((first.qos(), first.dup()), (2, false));
    drop(raw);

    let (mut raw, _) = raw_session(broker.addr, "sess-dup2", false);
    let again = expect_publish(&mut raw);
    assert_eq!((again.qos(), again.dup()), (2, true), "{again:?}");
    assert_eq!(again.pkid, first.pkid);
    let pid = again.pkid.unwrap();
    raw.send(&ack_v311(PUBREC, pid));
    assert_eq!(
        expect_packet(&mut raw),
        ack_v311(PUBREL, pid),
        "MQTT-4.3.3-1 PUBREL"
    );
    raw.send(&ack_v311(PUBCOMP, pid));
    expect_silence(&mut raw, Duration::from_millis(500));
}

#[test]
fn pubrel_resent_after_pubrec_on_reconnect() {
    // MQTT-4.4.0-1: unacknowledged PUBREL packets are re-sent on reconnect (clean 0) with
    // the original packet id; the PUBLISH itself is not re-sent once PUBREC was received
    // (MQTT-4.3.3-1: after PUBREC the sender must not re-send the PUBLISH).
    let broker = Broker::start();
    let (mut raw, _) = raw_session(broker.addr, "sess-rel", false);
    raw_subscribe(&mut raw, 1, &[("sess/rel", 2)]);

    let mut publisher = TestClient::connect(&broker, "sess-rel-pub", true);
    publisher.publish_confirmed("sess/rel", QoS::ExactlyOnce, false, "q2");
    let p = expect_publish(&mut raw);
    let pid = p.pkid.expect("QoS 2 packet id");
    raw.send(&ack_v311(PUBREC, pid));
    assert_eq!(expect_packet(&mut raw), ack_v311(PUBREL, pid));
    drop(raw); // no PUBCOMP

    let (mut raw, present) = raw_session(broker.addr, "sess-rel", false);
    assert!(present);
    assert_eq!(
        expect_packet(&mut raw),
        ack_v311(PUBREL, pid),
        "the PUBREL (not the PUBLISH) must be re-sent"
    );
    raw.send(&ack_v311(PUBCOMP, pid));
    expect_silence(&mut raw, Duration::from_millis(700));
}

#[test]
fn unacked_publishes_resent_in_original_order() {
    // MQTT-4.6.0-1: re-sent PUBLISH packets go out in the order of the originals.
    let broker = Broker::start();
    let (mut raw, _) = raw_session(broker.addr, "sess-order", false);
    raw_subscribe(&mut raw, 1, &[("sess/order", 1)]);
    let mut publisher = TestClient::connect(&broker, "sess-order-pub", true);
    for i in 0..3 {
        publisher.publish_confirmed("sess/order", QoS::AtLeastOnce, false, format!("m{i}"));
    }
    let firsts: Vec<_> = (0..3).map(|_| expect_publish(&mut raw)).collect();
    drop(raw);

    let (mut raw, _) = raw_session(broker.addr, "sess-order", false);
    for (i, first) in firsts.iter().enumerate() {
        let again = expect_publish(&mut raw);
        assert!(again.dup());
        assert_eq!(again.pkid, first.pkid, "message {i}");
        assert_eq!(again.payload, format!("m{i}").into_bytes());
        raw.send(&ack_v311(PUBACK, again.pkid.unwrap()));
    }
    expect_silence(&mut raw, Duration::from_millis(500));
}

#[test]
fn qos0_messages_queued_for_offline_session_within_bounds() {
    // Contract: QoS 0 messages are queued for an offline persistent session too, up to
    // --max-queued-messages (MQTT-3.1.2-5 allows storing QoS 0 as part of session state).
    let broker = Broker::start_with(&["--max-queued-messages", "5"]);
    let mut sub = TestClient::connect(&broker, "sess-q0", false);
    sub.subscribe("sess/q0", QoS::AtLeastOnce);
    sub.disconnect();

    let mut publisher = TestClient::connect(&broker, "sess-q0-pub", true);
    for i in 0..8 {
        publisher.publish("sess/q0", QoS::AtMostOnce, false, format!("{i}"));
    }
    publisher.wait_publish_flows(8, QoS::AtMostOnce);
    // QoS 1 marker after the QoS 0 burst: once acked, every QoS 0 before it was routed.
    publisher.publish_confirmed("sess/other", QoS::AtLeastOnce, false, "x");
    std::thread::sleep(Duration::from_millis(200));

    let mut sub = TestClient::connect(&broker, "sess-q0", false);
    let mut got = Vec::new();
    while let Some(p) = sub.recv_within(Duration::from_millis(700)) {
        assert_eq!(p.qos, QoS::AtMostOnce, "delivery QoS = min(0, 1)");
        got.push(
            String::from_utf8(p.payload.to_vec())
                .unwrap()
                .parse::<u32>()
                .unwrap(),
        );
    }
    assert_eq!(got.len(), 5, "queue bound is 5 messages, got {got:?}");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "order kept: {got:?}");
}

#[test]
fn server_acks_qos1_and_qos2_in_receive_order() {
    // MQTT-4.6.0-2: PUBACKs in the order the QoS 1 PUBLISH packets were received;
    // MQTT-4.6.0-3: PUBRECs in the order the QoS 2 PUBLISH packets were received.
    let broker = Broker::start();
    let (mut raw, _) = raw_session(broker.addr, "sess-acks", true);
    let mut burst = Vec::new();
    for pid in [7u16, 3, 9, 1, 5] {
        burst.extend(publish_packet("sess/acks", 1, false, false, pid, b"x"));
    }
    raw.send(&burst);
    for pid in [7u16, 3, 9, 1, 5] {
        assert_eq!(expect_packet(&mut raw), ack_v311(PUBACK, pid));
    }
    let mut burst = Vec::new();
    for pid in [20u16, 11, 30] {
        burst.extend(publish_packet("sess/acks", 2, false, false, pid, b"y"));
    }
    raw.send(&burst);
    for pid in [20u16, 11, 30] {
        assert_eq!(expect_packet(&mut raw), ack_v311(PUBREC, pid));
    }
    for pid in [20u16, 11, 30] {
        raw.send(&ack_v311(PUBREL, pid));
        assert_eq!(expect_packet(&mut raw), ack_v311(PUBCOMP, pid));
    }
}

#[test]
fn server_sends_pubrel_in_pubrec_order() {
    // MQTT-4.6.0-4: PUBREL packets go out in the order the PUBREC packets were received.
    let broker = Broker::start();
    let (mut raw, _) = raw_session(broker.addr, "sess-relord", true);
    raw_subscribe(&mut raw, 1, &[("sess/relord", 2)]);
    let mut publisher = TestClient::connect(&broker, "sess-relord-pub", true);
    for i in 0..3 {
        publisher.publish_confirmed("sess/relord", QoS::ExactlyOnce, false, format!("{i}"));
    }
    let pids: Vec<u16> = (0..3)
        .map(|_| expect_publish(&mut raw).pkid.unwrap())
        .collect();
    let reversed: Vec<u16> = pids.iter().rev().copied().collect();
    for &pid in &reversed {
        raw.send(&ack_v311(PUBREC, pid));
    }
    for &pid in &reversed {
        assert_eq!(expect_packet(&mut raw), ack_v311(PUBREL, pid));
    }
}

#[test]
fn thousand_qos1_messages_arrive_in_order() {
    // MQTT-4.6.0-5 / MQTT-4.6.0-6: each topic is an Ordered Topic; PUBLISH packets go to a
    // subscriber in the order they were received from a given client.
    let broker = Broker::start();
    let mut sub = TestClient::connect(&broker, "sess-1k-sub", true);
    sub.subscribe("sess/1k", QoS::AtLeastOnce);
    let mut publisher = TestClient::connect(&broker, "sess-1k-pub", true);
    for i in 0..1000u32 {
        publisher.publish("sess/1k", QoS::AtLeastOnce, false, i.to_string());
    }
    for i in 0..1000u32 {
        let p = sub.recv();
        assert_eq!(
            p.payload,
            i.to_string().into_bytes(),
            "message #{i} out of order"
        );
        assert_eq!(p.qos, QoS::AtLeastOnce);
    }
    publisher.wait_publish_flows(1000, QoS::AtLeastOnce);
    sub.expect_no_publish(Duration::from_millis(300));
}

#[test]
fn offline_queue_delivered_in_publish_order_before_new_messages() {
    // MQTT-4.6.0-6 across an offline period: stored messages first, in order, then the
    // ones published after the reconnect.
    let broker = Broker::start();
    let mut sub = TestClient::connect(&broker, "sess-oq", false);
    sub.subscribe("sess/oq", QoS::AtLeastOnce);
    sub.disconnect();
    let mut publisher = TestClient::connect(&broker, "sess-oq-pub", true);
    for i in 0..50u32 {
        publisher.publish("sess/oq", QoS::AtLeastOnce, false, i.to_string());
    }
    publisher.wait_publish_flows(50, QoS::AtLeastOnce);

    let mut sub = TestClient::connect(&broker, "sess-oq", false);
    for i in 50..60u32 {
        publisher.publish("sess/oq", QoS::AtLeastOnce, false, i.to_string());
    }
    for i in 0..60u32 {
        let p = sub.recv();
        assert_eq!(p.payload, i.to_string().into_bytes(), "message #{i}");
    }
    sub.expect_no_publish(Duration::from_millis(300));
}

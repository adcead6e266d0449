//! MQTT 3.1.1 §3.1.2.5–3.1.2.7 (Will flag, QoS, retain) and §3.14 (DISCONNECT): the will is
//! published when the network connection closes without a DISCONNECT — EOF, keep-alive
//! expiry, protocol violation — with its QoS and retain flag, and never after DISCONNECT.
//!
//! Will senders are raw TCP clients (so the exact close is under the test's control);
//! observers are rumqttc clients.

mod common;

use common::*;
use rumqttc::{LastWill, QoS};
use std::net::Shutdown;
use std::time::{Duration, Instant};

/// Open a raw connection whose CONNECT carries a will; asserts CONNACK accepted.
fn raw_with_will(
    broker: &Broker,
    id: &str,
    keep_alive: u16,
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
) -> Raw {
    let mut raw = Raw::connect(broker.addr);
    raw.send(&connect_v311_will(
        id, true, keep_alive, topic, payload, qos, retain,
    ));
    let ack = raw.read_packet().expect("CONNACK");
    assert_eq!(ack, vec![0x20, 0x02, 0x00, 0x00], "CONNACK for {id}");
    raw
}

#[test]
fn will_published_on_eof_without_disconnect() {
    // MQTT-3.1.2-8: the will is published when the network connection is closed without
    // DISCONNECT (§3.1.2.5: "the Client closes the Network Connection without first sending
    // a DISCONNECT").
    let broker = Broker::start();
    let mut sub = TestClient::connect(&broker, "will-eof-sub", true);
    sub.subscribe("will/eof", QoS::AtLeastOnce);

    let raw = raw_with_will(&broker, "will-eof", 0, "will/eof", b"gone", 1, false);
    raw.stream.shutdown(Shutdown::Both).expect("shutdown");
    drop(raw);

    let p = sub.recv();
    assert_eq!(p.topic, "will/eof");
    assert_eq!(&p.payload[..], b"gone");
    // MQTT-3.1.2-14: published at the will QoS (1), delivered at min(1, granted 1).
    assert_eq!(p.qos, QoS::AtLeastOnce);
    // MQTT-3.1.2-16: will retain 0 → published as a non-retained message.
    assert!(!p.retain, "will retain=0 must arrive with RETAIN=0");
    sub.expect_no_publish(Duration::from_millis(500));
}

#[test]
fn will_of_rumqttc_client_published_when_socket_dropped() {
    // MQTT-3.1.2-8: a real client that goes away without DISCONNECT leaves its will behind.
    let broker = Broker::start();
    let mut sub = TestClient::connect(&broker, "will-rq-sub", true);
    sub.subscribe("will/rq/+", QoS::AtLeastOnce);

    let mut o = opts(&broker, "will-rq");
    o.set_last_will(LastWill::new("will/rq/a", "bye", QoS::AtLeastOnce, false));
    let dying = TestClient::connect_opts(o);
    dying.drop_abruptly();

    let p = sub.recv();
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("will/rq/a", &b"bye"[..])
    );
}

#[test]
fn will_qos_2_and_qos_0_are_honoured() {
    // MQTT-3.1.2-14: the Will QoS is used when the will is published. Delivery QoS is
    // min(will QoS, granted QoS) for the subscriber (granted 2 here).
    let broker = Broker::start();
    let mut sub = TestClient::connect(&broker, "will-qos-sub", true);
    sub.subscribe("will/qos/#", QoS::ExactlyOnce);

    let raw = raw_with_will(&broker, "will-q2", 0, "will/qos/two", b"q2", 2, false);
    drop(raw);
    let p = sub.recv();
    assert_eq!(
        (p.topic.as_str(), p.qos),
        ("will/qos/two", QoS::ExactlyOnce)
    );

    let raw = raw_with_will(&broker, "will-q0", 0, "will/qos/zero", b"q0", 0, false);
    drop(raw);
    let p = sub.recv();
    assert_eq!(
        (p.topic.as_str(), p.qos),
        ("will/qos/zero", QoS::AtMostOnce)
    );
}

#[test]
fn will_published_after_keep_alive_expiry() {
    // MQTT-3.1.2-24: no control packet within 1.5 × keep-alive → the server disconnects
    // the client as if the network had failed; MQTT-3.1.2-8: its will is then published.
    let broker = Broker::start();
    let mut sub = TestClient::connect(&broker, "will-ka-sub", true);
    sub.subscribe("will/ka", QoS::AtLeastOnce);

    let start = Instant::now();
    let mut raw = raw_with_will(&broker, "will-ka", 2, "will/ka", b"timed out", 1, false);
    // Stay silent. Keep-alive 2 s: closed after 3 s, allowed up to 1.5k + 2 s = 5 s.
    let closed_after = wait_closed(&mut raw, Duration::from_secs(8));
    assert!(
        closed_after >= Duration::from_secs(2),
        "closed after {closed_after:?}, before the keep-alive period even passed"
    );
    let p = sub.recv();
    assert_eq!(&p.payload[..], b"timed out");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "will arrived {:?} after connect",
        start.elapsed()
    );
}

#[test]
fn will_published_after_protocol_violation() {
    // MQTT-3.1.0-2: a second CONNECT is a protocol violation and the server disconnects;
    // §3.1.2.5 lists "the Server closes the Network Connection because of a protocol error"
    // among the cases that publish the will (MQTT-3.1.2-8).
    let broker = Broker::start();
    let mut sub = TestClient::connect(&broker, "will-pv-sub", true);
    sub.subscribe("will/pv", QoS::AtLeastOnce);

    let mut raw = raw_with_will(&broker, "will-pv", 0, "will/pv", b"broken", 1, false);
    raw.send(&connect_v311("will-pv", true, 0));
    raw.expect_closed();

    let p = sub.recv();
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("will/pv", &b"broken"[..])
    );
}

#[test]
fn will_published_after_malformed_packet() {
    // MQTT-3.3.1-4: a PUBLISH with both QoS bits set is malformed → the server closes the
    // connection; the will is published because no DISCONNECT came first (MQTT-3.1.2-8).
    let broker = Broker::start();
    let mut sub = TestClient::connect(&broker, "will-mf-sub", true);
    sub.subscribe("will/mf", QoS::AtLeastOnce);

    let mut raw = raw_with_will(&broker, "will-mf", 0, "will/mf", b"malformed", 0, false);
    let mut bad = publish_packet("a/b", 1, false, false, 1, b"x");
    bad[0] |= 0x06; // QoS 3
    raw.send(&bad);
    raw.expect_closed();

    let p = sub.recv();
    assert_eq!(&p.payload[..], b"malformed");
}

#[test]
fn no_will_after_disconnect() {
    // MQTT-3.1.2-10 and MQTT-3.14.4-3: on DISCONNECT the will is discarded without being
    // published. A second client's will afterwards proves the path works: it must be the
    // first and only message the observer gets.
    let broker = Broker::start();
    let mut sub = TestClient::connect(&broker, "will-dc-sub", true);
    sub.subscribe("will/dc/#", QoS::AtLeastOnce);

    let mut polite = raw_with_will(&broker, "will-dc", 0, "will/dc/polite", b"no", 1, false);
    polite.send(&[0xE0, 0x00]);
    polite.expect_closed(); // MQTT-3.14.4-1: the server closes after DISCONNECT
    sub.expect_no_publish(Duration::from_millis(1500));

    let rude = raw_with_will(&broker, "will-dc2", 0, "will/dc/rude", b"yes", 1, false);
    drop(rude);
    let p = sub.recv();
    assert_eq!(
        p.topic, "will/dc/rude",
        "only the will of the rude client may appear"
    );
    sub.expect_no_publish(Duration::from_millis(500));
}

#[test]
fn rumqttc_disconnect_suppresses_will() {
    // MQTT-3.1.2-10: a client that sends DISCONNECT leaves no will.
    let broker = Broker::start();
    let mut sub = TestClient::connect(&broker, "will-rqdc-sub", true);
    sub.subscribe("will/rqdc", QoS::AtLeastOnce);

    let mut o = opts(&broker, "will-rqdc");
    o.set_last_will(LastWill::new("will/rqdc", "bye", QoS::AtLeastOnce, false));
    TestClient::connect_opts(o).disconnect();
    sub.expect_no_publish(Duration::from_millis(1500));
}

#[test]
fn retained_will_is_delivered_to_later_subscriber() {
    // MQTT-3.1.2-17: will retain 1 → the will is published as a retained message, so a
    // subscriber that arrives later gets it with RETAIN=1 (MQTT-3.3.1-6/-8).
    let broker = Broker::start();
    let mut early = TestClient::connect(&broker, "will-ret-early", true);
    early.subscribe("will/ret", QoS::AtLeastOnce);

    let raw = raw_with_will(&broker, "will-ret", 0, "will/ret", b"last words", 1, true);
    drop(raw);
    let p = early.recv();
    assert_eq!(&p.payload[..], b"last words");
    // MQTT-3.3.1-9: forwarded to an existing subscription → RETAIN=0.
    assert!(
        !p.retain,
        "existing subscriber must see RETAIN=0 [MQTT-3.3.1-9]"
    );

    let mut late = TestClient::connect(&broker, "will-ret-late", true);
    late.subscribe("will/#", QoS::AtLeastOnce);
    let p = late.recv();
    assert_eq!(p.topic, "will/ret");
    assert_eq!(&p.payload[..], b"last words");
    assert!(
        p.retain,
        "retained will must reach a new subscriber with RETAIN=1"
    );
    assert_eq!(p.qos, QoS::AtLeastOnce);
}

#[test]
fn will_published_exactly_once() {
    // MQTT-3.1.2-8 / MQTT-3.1.2-10: the will belongs to one network connection and is
    // published once when it ends, not again later (e.g. at session expiry or restart).
    let broker = Broker::start();
    let mut sub = TestClient::connect(&broker, "will-once-sub", true);
    sub.subscribe("will/once", QoS::AtLeastOnce);

    let raw = raw_with_will(&broker, "will-once", 0, "will/once", b"1", 1, false);
    drop(raw);
    sub.recv();
    // Reconnecting with the same client id must not publish the old will again.
    let again = raw_session(broker.addr, "will-once", true).0;
    drop(again);
    sub.expect_no_publish(Duration::from_millis(1500));
}

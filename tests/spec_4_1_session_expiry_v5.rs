//! MQTT 5.0 session lifetime: Session Expiry Interval (§3.1.2.11.2, §4.1), its change at
//! DISCONNECT (§3.14.2.2.2), and the will's delay and cancellation (§3.1.3.2.2).

mod common;

use std::time::{Duration, Instant};

use common::v5::{connect_packet, disconnect, will, Got, V5Client};
use common::Broker;
use ringmq::proto::{Packet, Properties, QoS};

fn expiry(secs: u32) -> Properties {
    Properties {
        session_expiry_interval: Some(secs),
        ..Default::default()
    }
}

/// Connect `id` with clean start 0 and the given expiry; returns the session-present flag.
fn resume(b: &Broker, id: &str, secs: u32) -> (V5Client, bool) {
    let (c, ack) = V5Client::connect_with(b.addr, connect_packet(id, false, 60, expiry(secs)));
    assert_eq!(ack.code, 0);
    (c, ack.session_present)
}

#[test]
fn session_survives_within_its_expiry_and_is_gone_after() {
    let b = Broker::start();
    let (mut c, _) = V5Client::connect(b.addr, "exp", expiry(2));
    c.subscribe(1, "exp/t", QoS::AtLeastOnce, Properties::default());
    c.send(&disconnect(0, Properties::default()));
    drop(c);
    // Offline within the interval: the session keeps its subscription and queues.
    let (mut p, _) = V5Client::connect(b.addr, "pub", Properties::default());
    p.publish("exp/t", QoS::AtLeastOnce, 1, b"kept", Properties::default());
    assert!(matches!(p.expect(), Packet::PubAck(_)));
    let (mut c, present) = resume(&b, "exp", 2);
    assert!(
        present,
        "[MQTT-3.2.2-2] session present within the expiry interval"
    );
    assert_eq!(&c.expect_publish().payload[..], b"kept");
    c.send(&disconnect(0, Properties::default()));
    drop(c);
    // After the interval the session is removed [MQTT-4.1.0-?]: no session present.
    std::thread::sleep(Duration::from_millis(3500));
    let (_c, present) = resume(&b, "exp", 0);
    assert!(!present, "session must have expired after 2 s");
}

#[test]
fn expiry_zero_ends_the_session_with_the_connection() {
    // Absent Session Expiry Interval = 0: the session ends when the connection closes.
    let b = Broker::start();
    let (mut c, _) = V5Client::connect(b.addr, "zero", Properties::default());
    c.subscribe(1, "z", QoS::AtLeastOnce, Properties::default());
    c.send(&disconnect(0, Properties::default()));
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    let (_c, present) = resume(&b, "zero", 0);
    assert!(!present);
}

#[test]
fn disconnect_may_shorten_but_not_set_an_expiry_after_zero() {
    let b = Broker::start();
    // [MQTT-3.14.2-2] CONNECT expiry 0, DISCONNECT expiry > 0 → protocol error.
    let (mut c, _) = V5Client::connect(b.addr, "bad", Properties::default());
    c.send(&disconnect(0, expiry(30)));
    assert_eq!(c.expect_disconnect().reason, 0x82);
    // CONNECT expiry 60, DISCONNECT expiry 0: the session ends at once.
    let (mut c, _) = V5Client::connect(b.addr, "short", expiry(60));
    c.subscribe(1, "s", QoS::AtLeastOnce, Properties::default());
    c.send(&disconnect(0, expiry(0)));
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    let (_c, present) = resume(&b, "short", 0);
    assert!(!present, "DISCONNECT set the expiry to 0");
}

fn watcher(b: &Broker, topic: &str) -> V5Client {
    let (mut w, _) = V5Client::connect(b.addr, &format!("watch-{topic}"), Properties::default());
    w.subscribe(1, topic, QoS::AtLeastOnce, Properties::default());
    w
}

fn with_will(id: &str, topic: &str, delay: u32, session: u32) -> ringmq::proto::Connect {
    let mut c = connect_packet(id, true, 60, expiry(session));
    c.will = Some(will(
        topic,
        b"gone",
        Properties {
            will_delay_interval: Some(delay),
            ..Default::default()
        },
    ));
    c
}

#[test]
fn a_delayed_will_waits_for_its_delay() {
    // [MQTT-3.1.3-9] the will is published after the Will Delay Interval.
    let b = Broker::start();
    let mut w = watcher(&b, "will/delay");
    let (c, _) = V5Client::connect_with(b.addr, with_will("dw", "will/delay", 2, 60));
    let dropped = Instant::now();
    drop(c); // abrupt close: no DISCONNECT
    w.expect_silence(Duration::from_millis(1200));
    let p = w.expect_publish();
    assert_eq!(&p.payload[..], b"gone");
    let after = dropped.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "will came after {after:?}"
    );
    // The Will Delay Interval is not a PUBLISH property.
    assert_eq!(p.properties.will_delay_interval, None);
}

#[test]
fn resuming_the_session_cancels_a_delayed_will() {
    // [MQTT-3.1.3-9]: not published if a new connection resumes the session in time.
    let b = Broker::start();
    let mut w = watcher(&b, "will/cancel");
    let (c, _) = V5Client::connect_with(b.addr, with_will("cw", "will/cancel", 2, 60));
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    let (_c, present) = resume(&b, "cw", 60);
    assert!(present);
    w.expect_silence(Duration::from_millis(3000));
}

#[test]
fn the_session_end_publishes_a_will_whose_delay_is_longer() {
    // The will goes at the earlier of its delay and the session's end.
    let b = Broker::start();
    let mut w = watcher(&b, "will/end");
    let (c, _) = V5Client::connect_with(b.addr, with_will("ew", "will/end", 60, 1));
    drop(c);
    let p = w.expect_publish();
    assert_eq!(&p.payload[..], b"gone");
}

#[test]
fn disconnect_with_will_message_publishes_the_will() {
    // §3.14.2.1 reason 0x04: the server publishes the will.
    let b = Broker::start();
    let mut w = watcher(&b, "will/04");
    let (mut c, _) = V5Client::connect_with(b.addr, with_will("w4", "will/04", 0, 0));
    c.send(&disconnect(0x04, Properties::default()));
    assert_eq!(&w.expect_publish().payload[..], b"gone");
    // A normal DISCONNECT discards it [MQTT-3.14.4-3].
    let (mut c, _) = V5Client::connect_with(b.addr, with_will("w0", "will/04", 0, 0));
    c.send(&disconnect(0, Properties::default()));
    match c.next(Duration::from_secs(2)) {
        Got::Closed => {}
        other => panic!("expected the broker to close, got {other:?}"),
    }
    w.expect_silence(Duration::from_millis(500));
}

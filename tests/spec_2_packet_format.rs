//! MQTT 3.1.1 chapters 1–2 (data representation, fixed header, packet identifier) and the
//! malformed-packet rule of 4.8: hand-crafted bytes over raw TCP.
//!
//! Every malformed case runs on a session that is otherwise healthy, and each test checks
//! that nothing from the malformed packet reached a subscriber where that could happen.

mod common;

use common::*;
use std::net::Shutdown;
use std::time::Duration;

const SECS5: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(500);

/// Connect a fresh client, send `bytes` after CONNACK, and require the broker to close
/// the connection without answering.
fn assert_closes_after_connect(broker: &Broker, id: &str, bytes: &[u8]) {
    let (mut raw, _) = raw_session(broker.addr, id, true);
    raw.send(bytes);
    match next_within(&mut raw, SECS5) {
        Next::Closed => {}
        other => panic!("{id}: sent {bytes:02x?}, expected close, got {other:02x?}"),
    }
}

/// A subscriber on `filter` that must stay silent.
fn watcher(broker: &Broker, filter: &str) -> Raw {
    let (mut sub, _) = raw_session(broker.addr, "watcher", true);
    assert_eq!(raw_subscribe(&mut sub, 1, &[(filter, 1)]), vec![1]);
    sub
}

#[test]
fn remaining_length_longer_than_four_bytes_closes() {
    // MQTT 2.2.3: the Remaining Length field is at most four bytes; a fifth continuation
    // byte makes the packet malformed (MQTT-4.8.0-1 → close).
    let broker = Broker::start();
    assert_closes_after_connect(&broker, "rl5", &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
    let mut raw = Raw::connect(broker.addr);
    raw.send(&[0x10, 0x80, 0x80, 0x80, 0x80, 0x01]);
    wait_closed(&mut raw, SECS5);
}

#[test]
fn multi_byte_remaining_length_is_decoded() {
    // MQTT 2.2.3: 2- and 3-byte Remaining Length encodings (e.g. 321 = C1 02) are valid.
    let broker = Broker::start();
    let (mut sub, _) = raw_session(broker.addr, "sub", true);
    assert_eq!(raw_subscribe(&mut sub, 1, &[("big", 0)]), vec![0]);
    let (mut publ, _) = raw_session(broker.addr, "pub", true);
    for size in [200usize, 20_000] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let p = publish_packet("big", 0, false, false, 0, &payload);
        assert_eq!(p[1..].len() - size - 5, if size < 16_384 { 2 } else { 3 });
        publ.send(&p);
        let got = expect_publish(&mut sub);
        assert_eq!(got.topic, "big");
        assert_eq!(got.payload, payload, "payload of {size} bytes");
    }
}

#[test]
fn reserved_fixed_header_flags_close() {
    // MQTT-2.2.2-1, MQTT-2.2.2-2: reserved flag bits MUST be as in Table 2.2, otherwise the
    // receiver MUST close the connection.
    let broker = Broker::start();
    let cases: [(&str, Vec<u8>); 8] = [
        ("subscribe-0x80", {
            let mut p = subscribe_packet(1, &[("a", 0)]);
            p[0] = 0x80;
            p
        }),
        ("subscribe-0x83", {
            let mut p = subscribe_packet(1, &[("a", 0)]);
            p[0] = 0x83;
            p
        }),
        ("unsubscribe-0xa0", {
            let mut p = unsubscribe_packet(1, &["a"]);
            p[0] = 0xA0;
            p
        }),
        ("pubrel-0x60", vec![0x60, 0x02, 0x00, 0x01]),
        ("puback-0x41", vec![0x41, 0x02, 0x00, 0x01]),
        ("pubcomp-0x72", vec![0x72, 0x02, 0x00, 0x01]),
        ("pingreq-0xc1", vec![0xC1, 0x00]),
        ("disconnect-0xe2", vec![0xE2, 0x00]),
    ];
    for (id, bytes) in cases {
        assert_closes_after_connect(&broker, id, &bytes);
    }
    // CONNECT itself with flags.
    let mut raw = Raw::connect(broker.addr);
    let mut c = connect_v311("connect-flags", true, 60);
    c[0] = 0x11;
    raw.send(&c);
    wait_closed(&mut raw, SECS5);
}

#[test]
fn disconnect_with_reserved_flags_is_not_a_disconnect() {
    // MQTT-2.2.2-2: a DISCONNECT with flags 0001 is malformed, so it is not the DISCONNECT
    // of MQTT-3.14.4-3 that discards the will; the close is a protocol violation and
    // MQTT-3.1.2-8 requires the will to be published.
    let broker = Broker::start();
    let mut sub = watcher(&broker, "wills/flags");
    let mut raw = Raw::connect(broker.addr);
    let mut body = mqtt_str("MQTT");
    body.extend_from_slice(&[4, 0x06, 0, 60]);
    for s in ["bad-disc", "wills/flags", "gone"] {
        body.extend(mqtt_str(s));
    }
    raw.send(&packet(0x10, &body));
    assert_eq!(expect_packet(&mut raw), vec![0x20, 0x02, 0x00, 0x00]);
    raw.send(&[0xE1, 0x00]);
    wait_closed(&mut raw, SECS5);
    let will = expect_publish(&mut sub);
    assert_eq!(
        (will.topic.as_str(), &will.payload[..]),
        ("wills/flags", &b"gone"[..])
    );
}

#[test]
fn packet_type_0_closes() {
    // MQTT 2.2.1 Table 2.1: type 0 is reserved → malformed (MQTT-4.8.0-1).
    let broker = Broker::start();
    assert_closes_after_connect(&broker, "type0", &[0x00, 0x00]);
}

#[test]
fn packet_type_15_closes_in_3_1_1() {
    // MQTT 2.2.1 Table 2.1: type 15 is reserved in 3.1.1 (AUTH exists only in 5.0).
    let broker = Broker::start();
    assert_closes_after_connect(&broker, "type15", &[0xF0, 0x00]);
}

#[test]
fn packet_id_zero_closes() {
    // MQTT-2.3.1-1: SUBSCRIBE, UNSUBSCRIBE and PUBLISH with QoS > 0 MUST carry a non-zero
    // packet identifier.
    let broker = Broker::start();
    let mut sub = watcher(&broker, "zero/#");
    assert_closes_after_connect(
        &broker,
        "pub1",
        &publish_packet("zero/q1", 1, false, false, 0, b"x"),
    );
    assert_closes_after_connect(
        &broker,
        "pub2",
        &publish_packet("zero/q2", 2, false, false, 0, b"x"),
    );
    assert_closes_after_connect(&broker, "sub0", &subscribe_packet(0, &[("a", 0)]));
    assert_closes_after_connect(&broker, "unsub0", &unsubscribe_packet(0, &["a"]));
    expect_silence(&mut sub, QUIET);
}

/// PUBLISH with raw topic bytes (to place invalid UTF-8 in it).
fn publish_topic_bytes(topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic);
    body.extend_from_slice(payload);
    packet(0x30, &body)
}

#[test]
fn invalid_utf8_in_topic_name_closes() {
    // MQTT-1.5.3-1: ill-formed UTF-8 (including encoded surrogates U+D800..U+DFFF) →
    // the receiver MUST close the connection.
    let broker = Broker::start();
    let mut sub = watcher(&broker, "#");
    for (i, topic) in [&b"bad\xC3\x28"[..], b"\xFF", b"s\xED\xA0\x80"]
        .iter()
        .enumerate()
    {
        assert_closes_after_connect(
            &broker,
            &format!("utf{i}"),
            &publish_topic_bytes(topic, b"x"),
        );
    }
    expect_silence(&mut sub, QUIET);
}

#[test]
fn null_character_in_topic_name_closes() {
    // MQTT-1.5.3-2: a UTF-8 string MUST NOT include U+0000; the receiver MUST close.
    let broker = Broker::start();
    let mut sub = watcher(&broker, "#");
    assert_closes_after_connect(&broker, "nul", &publish_topic_bytes(b"a\x00b", b"x"));
    expect_silence(&mut sub, QUIET);
}

#[test]
fn invalid_utf8_in_topic_filter_closes() {
    // MQTT-1.5.3-1 and MQTT-1.5.3-2 apply to SUBSCRIBE topic filters too.
    let broker = Broker::start();
    for (i, filter) in [&b"a\xC3\x28"[..], b"a\x00"].iter().enumerate() {
        let mut body = vec![0x00, 0x01];
        body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
        body.extend_from_slice(filter);
        body.push(0);
        assert_closes_after_connect(&broker, &format!("f{i}"), &packet(0x82, &body));
    }
}

#[test]
fn invalid_utf8_in_client_id_closes() {
    // MQTT-1.5.3-1: the client identifier is a UTF-8 string too.
    let broker = Broker::start();
    let mut body = mqtt_str("MQTT");
    body.extend_from_slice(&[4, 0x02, 0, 60, 0, 2, 0xC3, 0x28]);
    let mut raw = Raw::connect(broker.addr);
    raw.send(&packet(0x10, &body));
    wait_closed(&mut raw, SECS5);
}

#[test]
fn string_length_beyond_the_packet_closes() {
    // MQTT 1.5.3 / MQTT-4.8.0-1: a topic length prefix that runs past the remaining length
    // is a malformed packet.
    let broker = Broker::start();
    let mut sub = watcher(&broker, "#");
    assert_closes_after_connect(&broker, "overrun", &[0x30, 0x04, 0x00, 0x32, b'a', b'b']);
    expect_silence(&mut sub, QUIET);
}

#[test]
fn truncated_publish_then_close_is_not_delivered() {
    // MQTT 2.2.3 / MQTT-4.8.0-1: a packet is only processed once Remaining Length bytes
    // arrived; a connection closed mid-packet delivers nothing and the broker carries on.
    let broker = Broker::start();
    let mut sub = watcher(&broker, "cut/#");
    for (i, qos) in [0u8, 1, 2].into_iter().enumerate() {
        let (mut raw, _) = raw_session(broker.addr, &format!("cut{i}"), true);
        let full = publish_packet("cut/t", qos, false, false, 9, &[0xAB; 100]);
        raw.send(&full[..full.len() - 10]);
        raw.stream.shutdown(Shutdown::Write).expect("shutdown");
        // No PUBACK/PUBREC for the partial packet: the broker only closes.
        wait_closed(&mut raw, SECS5);
    }
    // A CONNECT cut short behaves the same.
    let mut raw = Raw::connect(broker.addr);
    raw.send(&connect_v311("cut-connect", true, 60)[..8]);
    raw.stream.shutdown(Shutdown::Write).expect("shutdown");
    wait_closed(&mut raw, SECS5);
    expect_silence(&mut sub, QUIET);
    // The broker still serves new clients and routes whole packets.
    let (mut publ, _) = raw_session(broker.addr, "whole", true);
    publ.send(&publish_packet("cut/t", 0, false, false, 0, b"whole"));
    assert_eq!(expect_publish(&mut sub).payload, b"whole");
}

#[test]
fn packet_split_across_writes_is_reassembled() {
    // MQTT 2.2.3: a packet is defined by its length, not by TCP segment boundaries.
    let broker = Broker::start();
    let (mut sub, _) = raw_session(broker.addr, "sub", true);
    assert_eq!(raw_subscribe(&mut sub, 1, &[("split", 1)]), vec![1]);
    let (mut raw, _) = raw_session(broker.addr, "split", true);
    let p = publish_packet("split", 1, false, false, 0x0102, b"in pieces");
    for chunk in p.chunks(3) {
        raw.send(chunk);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(expect_packet(&mut raw), vec![0x40, 0x02, 0x01, 0x02]);
    assert_eq!(expect_publish(&mut sub).payload, b"in pieces");
}

//! Hostile input on raw TCP: malformed, truncated and oversized packets, slow-loris and
//! half-open connections. For every attack: the bad connection is closed (with the
//! CONNACK / DISCONNECT reason code the spec gives, where it gives one), a well-behaved
//! client on another connection keeps its publish/receive round trip working throughout, and
//! the broker gives back the connection's slot (`--max-connections` is set so that a leaked
//! connection would make a later client be refused; see `common::hostile::assert_slots_free`).
//!
//! 3.1.1 §4.8: "Unless stated otherwise, if either the Server or Client encounters a protocol
//! violation, it MUST close the Network Connection on which it received that Control Packet"
//! [MQTT-4.8.0-1]. 5.0 §4.13.1: the server sends a DISCONNECT with a reason code of 0x80 or
//! above before closing [MQTT-4.13.1-1]: 0x81 Malformed Packet, 0x82 Protocol Error, 0x95
//! Packet too large.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::hostile::{assert_slots_free, rss_kib, Good};
use common::subs::{connect_v5, raw_session_v5};
use common::{
    connect_v311, mqtt_str, next_within, packet, publish_packet, raw_session, wait_closed, Broker,
    Next, Raw,
};

/// What the broker must do with an attack.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Close without sending anything.
    Close,
    /// CONNACK with this return / reason code, then close.
    Connack(u8),
    /// DISCONNECT with this reason code, then close (5.0).
    Disconnect(u8),
}

/// When the attack bytes are sent.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// As the first bytes of the connection.
    PreConnect,
    /// After a successful 3.1.1 CONNECT.
    V311,
    /// After a successful 5.0 CONNECT.
    V5,
}

fn attack(broker: &Broker, stage: Stage, bytes: &[u8]) -> Raw {
    let mut raw = match stage {
        Stage::PreConnect => Raw::connect(broker.addr),
        Stage::V311 => raw_session(broker.addr, "attacker", true).0,
        Stage::V5 => raw_session_v5(broker, "attacker"),
    };
    raw.send(bytes);
    raw
}

fn expect(raw: &mut Raw, e: Expect, name: &str) {
    let got = next_within(raw, Duration::from_secs(5));
    match (e, &got) {
        (Expect::Close, Next::Closed) => return,
        (Expect::Connack(code), Next::Packet(p)) if p[0] == 0x20 && p[3] == code => {}
        (Expect::Disconnect(code), Next::Packet(p)) if p[0] == 0xE0 && p.get(2) == Some(&code) => {}
        _ => panic!("{name}: expected {e:?}, got {got:02x?}"),
    }
    assert_eq!(
        next_within(raw, Duration::from_secs(5)),
        Next::Closed,
        "{name}: closed after the answer"
    );
}

/// A 3.1.1 CONNECT body with a raw client identifier.
fn connect_with_raw_id(id: &[u8]) -> Vec<u8> {
    let mut body = mqtt_str("MQTT");
    body.extend_from_slice(&[4, 0x02, 0, 30]);
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id);
    packet(0x10, &body)
}

/// A PUBLISH with raw topic bytes (3.1.1 layout; 5.0 adds `props`).
fn publish_raw_topic(first: u8, topic: &[u8], pkid: Option<u16>, props: Option<&[u8]>) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic);
    if let Some(id) = pkid {
        body.extend_from_slice(&id.to_be_bytes());
    }
    if let Some(p) = props {
        body.extend(common::remaining_length(p.len()));
        body.extend_from_slice(p);
    }
    body.extend_from_slice(b"payload");
    packet(first, &body)
}

fn cases() -> Vec<(&'static str, Stage, Vec<u8>, Expect)> {
    use Expect::*;
    use Stage::*;
    let five_byte_len = vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
    vec![
        // 3.1.1 §2.2.3: the remaining length takes at most four bytes.
        (
            "five-byte length before CONNECT",
            PreConnect,
            vec![0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            Close,
        ),
        ("five-byte length", V311, five_byte_len.clone(), Close),
        // [MQTT-3.1.0-1] the first packet must be CONNECT.
        (
            "PUBLISH before CONNECT",
            PreConnect,
            publish_packet("a", 0, false, false, 0, b"x"),
            Close,
        ),
        // [MQTT-1.5.3-1] ill-formed UTF-8 in the client identifier.
        (
            "bad UTF-8 client id",
            PreConnect,
            connect_with_raw_id(&[b'a', 0xC3, 0x28]),
            Close,
        ),
        // [MQTT-1.5.3-2] U+0000 in the client identifier.
        (
            "U+0000 in client id",
            PreConnect,
            connect_with_raw_id(b"a\0b"),
            Close,
        ),
        // [MQTT-3.1.2-2] unsupported protocol level: CONNACK 0x01, then close.
        (
            "protocol level 6",
            PreConnect,
            {
                let mut c = connect_v311("lvl", true, 30);
                c[8] = 6;
                c
            },
            Connack(0x01),
        ),
        // [MQTT-3.1.0-2] a second CONNECT is a protocol violation.
        (
            "second CONNECT",
            V311,
            connect_v311("again", true, 30),
            Close,
        ),
        // [MQTT-2.2.2-2] reserved flags: SUBSCRIBE must carry 0b0010 [MQTT-3.8.1-1].
        (
            "SUBSCRIBE with flags 0",
            V311,
            packet(0x80, &[0, 1, 0, 1, b'a', 0]),
            Close,
        ),
        // Reserved packet type 0 (§2.2.1).
        ("packet type 0", V311, vec![0x00, 0x00], Close),
        // [MQTT-3.3.1-4] QoS 3.
        (
            "PUBLISH QoS 3",
            V311,
            publish_raw_topic(0x36, b"a", Some(1), None),
            Close,
        ),
        // [MQTT-1.5.3-1] ill-formed UTF-8 in a topic name.
        (
            "bad UTF-8 topic",
            V311,
            publish_raw_topic(0x30, &[b'a', 0xC3, 0x28], None, None),
            Close,
        ),
        // [MQTT-1.5.3-2] U+0000 in a topic name.
        (
            "U+0000 in topic",
            V311,
            publish_raw_topic(0x30, b"a\0b", None, None),
            Close,
        ),
        // [MQTT-2.3.1-1] packet identifier 0 on a QoS 1 PUBLISH.
        (
            "packet id 0",
            V311,
            publish_raw_topic(0x32, b"a", Some(0), None),
            Close,
        ),
        // [MQTT-3.8.3-3] SUBSCRIBE without a filter.
        (
            "SUBSCRIBE with no filters",
            V311,
            packet(0x82, &[0, 1]),
            Close,
        ),
        // [MQTT-4.7.3-1] zero-length topic name.
        (
            "empty topic",
            V311,
            publish_raw_topic(0x30, b"", None, None),
            Close,
        ),
        // [MQTT-3.3.2-2] wildcard in a topic name.
        (
            "wildcard in topic",
            V311,
            publish_raw_topic(0x30, b"a/#", None, None),
            Close,
        ),
        // 5.0 §2.2.2.2: an identifier not valid for the packet type is a Malformed Packet.
        (
            "invalid property id",
            V5,
            publish_raw_topic(0x30, b"a", None, Some(&[0x7F, 0])),
            Disconnect(0x81),
        ),
        (
            "property of another packet",
            V5,
            publish_raw_topic(0x30, b"a", None, Some(&[0x11, 0, 0, 0, 1])),
            Disconnect(0x81),
        ),
        // 5.0 §3.3.2.3.3: more than one Message Expiry Interval is a Protocol Error.
        (
            "duplicated property",
            V5,
            publish_raw_topic(0x30, b"a", None, Some(&[2, 0, 0, 0, 1, 2, 0, 0, 0, 2])),
            Disconnect(0x82),
        ),
        // [MQTT-3.3.1-4] QoS 3 is a Malformed Packet.
        (
            "PUBLISH QoS 3 (5.0)",
            V5,
            publish_raw_topic(0x36, b"a", Some(1), Some(&[])),
            Disconnect(0x81),
        ),
        // [MQTT-1.5.4-1] ill-formed UTF-8: Malformed Packet.
        (
            "bad UTF-8 topic (5.0)",
            V5,
            publish_raw_topic(0x30, &[0xED, 0xA0, 0x80], None, Some(&[])),
            Disconnect(0x81),
        ),
        // [MQTT-2.2.1-3] packet identifier 0.
        (
            "packet id 0 (5.0)",
            V5,
            publish_raw_topic(0x32, b"a", Some(0), Some(&[])),
            Disconnect(0x82),
        ),
        // [MQTT-3.8.3-2] SUBSCRIBE without a filter is a Protocol Error.
        (
            "SUBSCRIBE with no filters (5.0)",
            V5,
            packet(0x82, &[0, 1, 0]),
            Disconnect(0x82),
        ),
        // [MQTT-3.8.1-1] reserved flags: Malformed Packet.
        (
            "SUBSCRIBE with flags 0 (5.0)",
            V5,
            packet(0x80, &[0, 1, 0, 0, 1, b'a', 0]),
            Disconnect(0x81),
        ),
        // §2.2.3 / §1.5.5: a five-byte Variable Byte Integer is malformed.
        (
            "five-byte length (5.0)",
            V5,
            five_byte_len,
            Disconnect(0x81),
        ),
    ]
}

/// Slots: the good client, one attacker, four probes.
const MAX_CONNECTIONS: &str = "6";
const FREE: usize = 5;

#[test]
fn malformed_packets_close_the_connection_and_the_broker_keeps_serving() {
    let b = Broker::start_with(&["--max-connections", MAX_CONNECTIONS]);
    let mut good = Good::connect(b.addr, "good");
    for (name, stage, bytes, e) in cases() {
        let mut raw = attack(&b, stage, &bytes);
        expect(&mut raw, e, name);
        good.round_trip(name);
        assert_slots_free(b.addr, FREE, name);
    }
}

#[test]
fn truncated_packets_followed_by_a_close_free_the_connection() {
    let b = Broker::start_with(&["--max-connections", MAX_CONNECTIONS]);
    let mut good = Good::connect(b.addr, "good");
    let connect = connect_v311("cut", true, 30);
    let publish = publish_packet("a/b", 1, false, false, 7, b"payload");
    for (name, stage, bytes) in [
        (
            "CONNECT cut in its fixed header",
            Stage::PreConnect,
            &connect[..1],
        ),
        (
            "CONNECT cut in its body",
            Stage::PreConnect,
            &connect[..connect.len() - 3],
        ),
        ("PUBLISH cut in its length", Stage::V311, &[0x30, 0x80][..]),
        ("PUBLISH cut in its topic", Stage::V311, &publish[..4]),
        (
            "PUBLISH cut in its payload",
            Stage::V311,
            &publish[..publish.len() - 2],
        ),
    ] {
        let mut raw = attack(&b, stage, bytes);
        raw.stream.shutdown(Shutdown::Write).expect("half-close");
        wait_closed(&mut raw, Duration::from_secs(5));
        good.round_trip(name);
        assert_slots_free(b.addr, FREE, name);
    }
}

/// A fixed header declaring more than `--max-packet-size` is refused from the header alone:
/// the body is never read or buffered. 50 such connections, each pushing 1 MiB of body, leave
/// the broker's resident memory well under what buffering them would take.
#[test]
fn oversized_packets_are_refused_before_their_body_is_read() {
    // No durable log: its segments are made (and their pages populated) in the background
    // after start, which would show up in the RSS comparison.
    let b = Broker::start_with(&[
        "--max-packet-size",
        "1024",
        "--max-connections",
        "60",
        "--durability",
        "none",
    ]);
    let mut good = Good::connect(b.addr, "good");
    good.round_trip("start");
    let before = rss_kib(&b);
    let body = vec![0x5Au8; 1 << 20];
    for i in 0..50 {
        // 200 MB declared: half as the CONNECT itself, half as a PUBLISH after a CONNECT.
        let header = [if i % 2 == 0 { 0x10 } else { 0x30 }, 0x80, 0x80, 0x80, 0x60];
        let stage = if i % 2 == 0 {
            Stage::PreConnect
        } else {
            Stage::V311
        };
        let mut raw = attack(&b, stage, &header);
        raw.stream
            .set_write_timeout(Some(Duration::from_secs(2)))
            .expect("write timeout");
        let _ = raw.stream.write_all(&body); // fails once the broker has closed
        let mut rest = Vec::new();
        let _ = raw.stream.read_to_end(&mut rest);
        assert!(
            rest.is_empty(),
            "3.1.1: closed without an answer, got {rest:02x?}"
        );
    }
    good.round_trip("50 oversized packets");
    let grown = rss_kib(&b).saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "broker RSS grew by {grown} KiB over 50 oversized packets"
    );
    assert_slots_free(b.addr, 58, "oversized packets");

    // 5.0: DISCONNECT 0x95 Packet too large (§3.2.2.3.6, the server's Maximum Packet Size;
    // §4.13.1 [MQTT-4.13.1-1]).
    let mut raw = attack(&b, Stage::V5, &[0x30, 0x80, 0x80, 0x80, 0x60]);
    expect(
        &mut raw,
        Expect::Disconnect(0x95),
        "oversized PUBLISH (5.0)",
    );
    good.round_trip("oversized PUBLISH (5.0)");
}

/// A CONNECT trickled one byte every 200 ms is cut off at `--connect-timeout`.
#[test]
fn slow_loris_connect_is_closed_at_the_connect_timeout() {
    let b = Broker::start_with(&[
        "--connect-timeout",
        "2",
        "--max-connections",
        MAX_CONNECTIONS,
    ]);
    let mut good = Good::connect(b.addr, "good");
    let mut raw = Raw::connect(b.addr);
    let start = Instant::now();
    let connect = connect_v311("slow-loris-client-with-a-long-id", true, 30);
    let mut closed = None;
    for (i, byte) in connect.iter().enumerate() {
        if raw.stream.write_all(&[*byte]).is_err() {
            closed = Some(start.elapsed());
            break;
        }
        if let Next::Closed = next_within(&mut raw, Duration::from_millis(200)) {
            closed = Some(start.elapsed());
            break;
        }
        if i % 4 == 0 {
            good.round_trip("slow loris");
        }
    }
    let took = closed.expect("closed before the whole CONNECT was trickled (7 s)");
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_millis(3500),
        "closed after {took:?}, connect timeout 2 s"
    );
    good.round_trip("slow loris closed");
    assert_slots_free(b.addr, FREE, "slow loris");
}

/// A connected client that stops in the middle of a packet is closed once nothing arrived
/// for 1.5 x its keep-alive [MQTT-3.1.2-24] (a one-second wheel: up to 2 s later).
#[test]
fn a_client_stalled_mid_packet_is_closed_at_one_and_a_half_keep_alives() {
    let b = Broker::start_with(&["--max-connections", MAX_CONNECTIONS]);
    let mut good = Good::connect(b.addr, "good");
    let mut raw = Raw::connect(b.addr);
    raw.send(&connect_v311("stall", true, 2));
    assert_eq!(common::expect_packet(&mut raw), [0x20, 2, 0, 0]);
    let publish = publish_packet("a/b", 1, false, false, 7, b"payload");
    raw.send(&publish[..6]);
    let start = Instant::now();
    let took = wait_closed(&mut raw, Duration::from_secs(7));
    assert!(
        took >= Duration::from_millis(2000) && took < Duration::from_millis(5500),
        "closed after {took:?}, keep-alive 2 s"
    );
    assert!(start.elapsed() < Duration::from_secs(7));
    good.round_trip("stalled client");
    assert_slots_free(b.addr, FREE, "stalled client");
}

/// Connections that never send (or send half a CONNECT) hold their slot only until the
/// connect timeout; meanwhile they cannot starve a connected client.
#[test]
fn many_half_open_connections_are_closed_and_freed() {
    let b = Broker::start_with(&["--connect-timeout", "2", "--max-connections", "41"]);
    let mut good = Good::connect(b.addr, "good");
    let half = &connect_v5("half-open")[..9];
    let mut idle: Vec<Raw> = (0..40)
        .map(|i| {
            let mut raw = Raw::connect(b.addr);
            if i % 2 == 1 {
                raw.send(half);
            }
            raw
        })
        .collect();
    good.round_trip("40 half-open connections");
    // Every slot is taken: one more client is refused.
    let mut extra = Raw::connect(b.addr);
    extra.send(&connect_v311("extra", true, 30));
    assert_eq!(
        next_within(&mut extra, Duration::from_secs(2)),
        Next::Closed
    );
    for raw in &mut idle {
        wait_closed(raw, Duration::from_secs(5));
    }
    good.round_trip("half-open connections closed");
    assert_slots_free(b.addr, 40, "half-open connections");
}

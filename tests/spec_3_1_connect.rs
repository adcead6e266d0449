//! MQTT 3.1.1 section 3.1 (CONNECT) and 3.2 (CONNACK), plus the keep-alive and
//! connect-timeout behaviour of 3.1.2.10, against the real broker over raw TCP and rumqttc.
//!
//! Expected bytes are written out in full: a CONNACK is `20 02 <session present> <code>`.

mod common;

use common::*;
use std::time::{Duration, Instant};

const CONNACK_OK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];
const CONNACK_OK_SESSION: [u8; 4] = [0x20, 0x02, 0x01, 0x00];
const CONNACK_BAD_LEVEL: [u8; 4] = [0x20, 0x02, 0x00, 0x01];
const CONNACK_BAD_ID: [u8; 4] = [0x20, 0x02, 0x00, 0x02];
const SECS5: Duration = Duration::from_secs(5);

/// A CONNECT with every field under the test's control; `payload` follows the variable
/// header verbatim (client id, will topic/message, user name, password as the flags say).
fn connect_raw(name: &str, level: u8, flags: u8, keep_alive: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = mqtt_str(name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.extend_from_slice(payload);
    packet(0x10, &body)
}

/// Payload made of length-prefixed strings.
fn strings(parts: &[&str]) -> Vec<u8> {
    parts.iter().flat_map(|s| mqtt_str(s)).collect()
}

/// Send `connect` on a fresh connection and require the broker to close it without sending
/// any packet (no CONNACK).
fn assert_closed_without_connack(broker: &Broker, connect: &[u8]) {
    let mut raw = Raw::connect(broker.addr);
    raw.send(connect);
    wait_closed(&mut raw, SECS5);
}

/// The spec lets the server either close at once or answer CONNACK with `code` first; in
/// both cases the connection must end and nothing else may be sent.
fn assert_refused_or_closed(raw: &mut Raw, code: u8) {
    match next_within(raw, SECS5) {
        Next::Closed => {}
        Next::Packet(p) => {
            assert_eq!(p, vec![0x20, 0x02, 0x00, code], "refusing CONNACK");
            wait_closed(raw, SECS5);
        }
        Next::Silent => panic!("broker neither refused nor closed within 5 s"),
    }
}

/// PINGREQ must be answered: proves the connection is alive and the session usable.
fn assert_alive(raw: &mut Raw) {
    raw.send(&[0xC0, 0x00]);
    assert_eq!(expect_packet(raw), vec![0xD0, 0x00], "PINGRESP");
}

#[test]
fn first_packet_pingreq_closes_connection() {
    // MQTT-3.1.0-1: the first packet from the client MUST be CONNECT.
    let broker = Broker::start();
    assert_closed_without_connack(&broker, &[0xC0, 0x00]);
}

#[test]
fn first_packet_publish_is_dropped_and_closes() {
    // MQTT-3.1.0-1: a PUBLISH before CONNECT closes the connection and is not processed.
    let broker = Broker::start();
    let (mut sub, _) = raw_session(broker.addr, "watcher", true);
    assert_eq!(raw_subscribe(&mut sub, 1, &[("early", 0)]), vec![0]);
    assert_closed_without_connack(&broker, &publish_packet("early", 0, false, false, 0, b"x"));
    expect_silence(&mut sub, Duration::from_millis(500));
}

#[test]
fn second_connect_closes_connection() {
    // MQTT-3.1.0-2: a second CONNECT is a protocol violation; the server MUST disconnect.
    let broker = Broker::start();
    let (mut raw, _) = raw_session(broker.addr, "twice", true);
    raw.send(&connect_v311("twice", true, 60));
    wait_closed(&mut raw, SECS5);
}

#[test]
fn mqisdp_level_3_is_accepted() {
    // MQTT-3.1.2-1 / MQTT-3.1.2-2: protocol name and level must match; "MQIsdp" level 3 is
    // MQTT 3.1, which the broker supports (its CONNACK has no session-present bit).
    let broker = Broker::start();
    let mut raw = Raw::connect(broker.addr);
    raw.send(&connect_raw(
        "MQIsdp",
        3,
        0x02,
        60,
        &strings(&["old-client"]),
    ));
    assert_eq!(expect_packet(&mut raw), CONNACK_OK);
    assert_alive(&mut raw);
}

#[test]
fn mqisdp_name_with_level_4_is_rejected() {
    // MQTT-3.1.2-1: "MQIsdp" is not the protocol name of level 4; the server MAY close the
    // connection (or refuse with 0x01) and MUST NOT accept it.
    let broker = Broker::start();
    let mut raw = Raw::connect(broker.addr);
    raw.send(&connect_raw("MQIsdp", 4, 0x02, 60, &strings(&["mixed"])));
    assert_refused_or_closed(&mut raw, 0x01);
}

#[test]
fn unknown_protocol_name_is_rejected() {
    // MQTT-3.1.2-1: an incorrect protocol name MUST NOT lead to an accepted connection.
    let broker = Broker::start();
    let mut raw = Raw::connect(broker.addr);
    raw.send(&connect_raw("MQTX", 4, 0x02, 60, &strings(&["alien"])));
    assert_refused_or_closed(&mut raw, 0x01);
}

#[test]
fn unsupported_protocol_level_gets_connack_0x01() {
    // MQTT-3.1.2-2: unsupported level → CONNACK 0x01 (unacceptable protocol level), then
    // disconnect.
    let broker = Broker::start();
    for level in [2u8, 6, 0x7f] {
        let mut raw = Raw::connect(broker.addr);
        raw.send(&connect_raw("MQTT", level, 0x02, 60, &strings(&["lvl"])));
        assert_eq!(
            expect_packet(&mut raw),
            CONNACK_BAD_LEVEL,
            "protocol level {level}"
        );
        wait_closed(&mut raw, SECS5);
    }
}

#[test]
fn reserved_connect_flag_closes() {
    // MQTT-3.1.2-3: the reserved flag bit 0 MUST be zero, else disconnect.
    let broker = Broker::start();
    assert_closed_without_connack(&broker, &connect_raw("MQTT", 4, 0x03, 60, &strings(&["r"])));
}

#[test]
fn will_qos_or_retain_without_will_flag_closes() {
    // MQTT-3.1.2-11, MQTT-3.1.2-13: will flag 0 → will QoS MUST be 0.
    // MQTT-3.1.2-15: will flag 0 → will retain MUST be 0.
    let broker = Broker::start();
    for flags in [0x0Au8, 0x12, 0x22] {
        let mut raw = Raw::connect(broker.addr);
        raw.send(&connect_raw("MQTT", 4, flags, 60, &strings(&["w"])));
        match next_within(&mut raw, SECS5) {
            Next::Closed => {}
            other => panic!("flags {flags:#04x}: expected close, got {other:02x?}"),
        }
    }
}

#[test]
fn will_qos_3_closes() {
    // MQTT-3.1.2-14: with will flag 1 the will QoS MUST NOT be 3.
    let broker = Broker::start();
    let payload = strings(&["w3", "will/topic", "bye"]);
    assert_closed_without_connack(&broker, &connect_raw("MQTT", 4, 0x1E, 60, &payload));
}

#[test]
fn will_flag_without_will_fields_closes() {
    // MQTT-3.1.2-9: will flag 1 → will topic and will message MUST be present.
    let broker = Broker::start();
    assert_closed_without_connack(&broker, &connect_raw("MQTT", 4, 0x06, 60, &strings(&["w"])));
}

#[test]
fn consistent_will_is_accepted() {
    // MQTT-3.1.2-9, MQTT-3.1.2-14: will flag 1, QoS 1, retain 1 with topic and message.
    let broker = Broker::start();
    let mut raw = Raw::connect(broker.addr);
    let payload = strings(&["will-ok", "will/topic", "bye"]);
    raw.send(&connect_raw("MQTT", 4, 0x2E, 60, &payload));
    assert_eq!(expect_packet(&mut raw), CONNACK_OK);
    assert_alive(&mut raw);
}

#[test]
fn password_without_user_name_closes() {
    // MQTT-3.1.2-22: user name flag 0 → password flag MUST be 0.
    let broker = Broker::start();
    let payload = strings(&["pw", "secret"]);
    assert_closed_without_connack(&broker, &connect_raw("MQTT", 4, 0x42, 60, &payload));
}

#[test]
fn user_name_flag_without_user_name_closes() {
    // MQTT-3.1.2-19: user name flag 1 → a user name MUST be present in the payload.
    let broker = Broker::start();
    assert_closed_without_connack(&broker, &connect_raw("MQTT", 4, 0x82, 60, &strings(&["u"])));
}

#[test]
fn user_name_and_password_are_accepted() {
    // MQTT-3.1.2-19, MQTT-3.1.2-21: both present as flagged; no authentication configured.
    let broker = Broker::start();
    let mut raw = Raw::connect(broker.addr);
    raw.send(&connect_raw(
        "MQTT",
        4,
        0xC2,
        60,
        &strings(&["up", "alice", "secret"]),
    ));
    assert_eq!(expect_packet(&mut raw), CONNACK_OK);
    assert_alive(&mut raw);
}

#[test]
fn client_id_of_23_allowed_characters_is_accepted() {
    // MQTT-3.1.3-5: the server MUST allow 1–23 byte ids of [0-9a-zA-Z].
    let broker = Broker::start();
    let (mut raw, present) = raw_session(broker.addr, "aZ09aZ09aZ09aZ09aZ09aZ0", true);
    assert!(!present);
    assert_alive(&mut raw);
}

#[test]
fn zero_length_client_id_with_clean_session_is_assigned_a_unique_id() {
    // MQTT-3.1.3-6: zero-length id accepted and treated as a unique id.
    // MQTT-3.1.3-7: only with clean session 1.
    let broker = Broker::start();
    let mut first = Raw::connect(broker.addr);
    first.send(&connect_v311("", true, 60));
    assert_eq!(expect_packet(&mut first), CONNACK_OK);
    let mut second = Raw::connect(broker.addr);
    second.send(&connect_v311("", true, 60));
    assert_eq!(expect_packet(&mut second), CONNACK_OK);
    // Two anonymous clients must not take each other over.
    assert_alive(&mut first);
    assert_alive(&mut second);
}

#[test]
fn zero_length_client_id_with_persistent_session_is_refused() {
    // MQTT-3.1.3-8: zero-length id with clean session 0 → CONNACK 0x02, then close.
    let broker = Broker::start();
    let mut raw = Raw::connect(broker.addr);
    raw.send(&connect_v311("", false, 60));
    assert_eq!(expect_packet(&mut raw), CONNACK_BAD_ID);
    wait_closed(&mut raw, SECS5);
}

#[test]
fn connack_session_present_follows_clean_session_and_stored_state() {
    let broker = Broker::start();
    // MQTT-3.2.2-1: clean session 1 → session present 0.
    let mut raw = Raw::connect(broker.addr);
    raw.send(&connect_v311("sp", true, 60));
    assert_eq!(expect_packet(&mut raw), CONNACK_OK);
    raw_disconnect(raw);

    // MQTT-3.2.2-3: clean session 0 without stored session → session present 0.
    let mut raw = Raw::connect(broker.addr);
    raw.send(&connect_v311("sp", false, 60));
    assert_eq!(expect_packet(&mut raw), CONNACK_OK);
    assert_eq!(raw_subscribe(&mut raw, 1, &[("sp/topic", 1)]), vec![1]);
    raw_disconnect(raw);

    // MQTT-3.2.2-2: clean session 0 with stored session → session present 1.
    let mut raw = Raw::connect(broker.addr);
    raw.send(&connect_v311("sp", false, 60));
    assert_eq!(expect_packet(&mut raw), CONNACK_OK_SESSION);
    // MQTT-3.1.2-4: the stored session keeps its subscription.
    let (mut publisher, _) = raw_session(broker.addr, "sp-pub", true);
    publisher.send(&publish_packet("sp/topic", 0, false, false, 0, b"kept"));
    let got = expect_publish(&mut raw);
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("sp/topic", &b"kept"[..])
    );
    raw_disconnect(raw);

    // MQTT-3.1.2-6: clean session 1 discards the stored session...
    let mut raw = Raw::connect(broker.addr);
    raw.send(&connect_v311("sp", true, 60));
    assert_eq!(expect_packet(&mut raw), CONNACK_OK);
    raw_disconnect(raw);
    // ... so the next persistent connect finds none.
    let mut raw = Raw::connect(broker.addr);
    raw.send(&connect_v311("sp", false, 60));
    assert_eq!(expect_packet(&mut raw), CONNACK_OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_connect_with_clean_session() {
    // MQTT-3.2.0-1 / MQTT-3.2.2-1: the first packet from the server is CONNACK, session
    // present 0 for clean session.
    let broker = Broker::start();
    let (_c, ack) = MqttClient::connect(opts(&broker, "rumq-clean")).await;
    assert!(!ack.session_present);
    assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
}

#[test]
fn client_id_takeover_closes_the_old_connection() {
    // MQTT-3.1.4-2: a second client with the same id → the server MUST disconnect the
    // existing client.
    let broker = Broker::start();
    let (mut old, _) = raw_session(broker.addr, "same-id", true);
    let (mut new, _) = raw_session(broker.addr, "same-id", true);
    wait_closed(&mut old, SECS5);
    assert_alive(&mut new);
}

#[test]
fn client_id_takeover_of_a_persistent_session_closes_the_old_connection() {
    // MQTT-3.1.4-2 for clean session 0 on both connections; the session is resumed.
    let broker = Broker::start();
    let (mut old, present) = raw_session(broker.addr, "same-persistent", false);
    assert!(!present);
    let (mut new, present) = raw_session(broker.addr, "same-persistent", false);
    assert!(
        present,
        "takeover of a persistent session must resume it (MQTT-3.2.2-2)"
    );
    wait_closed(&mut old, SECS5);
    assert_alive(&mut new);
}

#[test]
fn clean_connect_takes_over_a_connected_persistent_session() {
    // MQTT-3.1.4-2 with MQTT-3.1.2-6: a clean-session CONNECT discards the stored session,
    // but the connection still using that client id MUST be closed as well.
    let broker = Broker::start();
    let (mut old, _) = raw_session(broker.addr, "persistent-then-clean", false);
    let (mut new, present) = raw_session(broker.addr, "persistent-then-clean", true);
    assert!(!present, "MQTT-3.2.2-1: clean session → session present 0");
    wait_closed(&mut old, SECS5);
    assert_alive(&mut new);
}

#[test]
fn client_id_takeover_across_shards() {
    // MQTT-3.1.4-2 with two shards: successive connections land on either shard; each new
    // one closes the previous one.
    let broker = Broker::start_with(&["--shards", "2"]);
    let (mut current, _) = raw_session(broker.addr, "roamer", false);
    for round in 0..6 {
        let (mut next, _) = raw_session(broker.addr, "roamer", false);
        match next_within(&mut current, SECS5) {
            Next::Closed => {}
            other => panic!("round {round}: old connection not closed: {other:02x?}"),
        }
        assert_alive(&mut next);
        current = next;
    }
}

#[test]
fn connect_timeout_closes_a_silent_socket() {
    // MQTT 3.1.4 (non-normative): a server SHOULD close a connection that sends no CONNECT
    // within a reasonable time; the contract makes it `--connect-timeout`.
    let broker = Broker::start_with(&["--connect-timeout", "2"]);
    let mut raw = Raw::connect(broker.addr);
    expect_silence(&mut raw, Duration::from_millis(500));
    wait_closed(&mut raw, Duration::from_secs(5));
}

#[test]
fn connect_timeout_applies_to_a_partial_connect() {
    // MQTT 3.1.4 (non-normative), as above: a CONNECT that never completes is no CONNECT.
    let broker = Broker::start_with(&["--connect-timeout", "1"]);
    let mut raw = Raw::connect(broker.addr);
    let connect = connect_v311("slow", true, 60);
    raw.send(&connect[..5]);
    wait_closed(&mut raw, Duration::from_secs(4));
}

#[test]
fn keep_alive_expires_after_one_and_a_half_periods() {
    // MQTT-3.1.2-24: no packet within 1.5 × keep-alive → the server MUST disconnect; it
    // must not do so earlier. Contract: 1 s wheel, so up to 1.5k + 2 s.
    let broker = Broker::start();
    let mut raw = Raw::connect(broker.addr);
    raw.send(&connect_v311("ka2", true, 2));
    assert_eq!(expect_packet(&mut raw), CONNACK_OK);
    let started = Instant::now();
    wait_closed(&mut raw, Duration::from_millis(5_500));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2_900),
        "closed after {waited:?}, before 1.5 × 2 s"
    );
}

#[test]
fn pingreq_keeps_the_connection_alive() {
    // MQTT-3.1.2-24 with MQTT-3.12.4-1: packets inside the keep-alive window keep the
    // connection open; once they stop, it is closed.
    let broker = Broker::start();
    let mut raw = Raw::connect(broker.addr);
    raw.send(&connect_v311("ka1", true, 1));
    assert_eq!(expect_packet(&mut raw), CONNACK_OK);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(3_500) {
        std::thread::sleep(Duration::from_millis(700));
        assert_alive(&mut raw);
    }
    wait_closed(&mut raw, Duration::from_millis(4_500));
}

#[test]
fn keep_alive_zero_turns_the_mechanism_off() {
    // MQTT 3.1.2.10: keep-alive 0 turns the keep-alive mechanism off.
    let broker = Broker::start();
    let mut raw = Raw::connect(broker.addr);
    raw.send(&connect_v311("ka0", true, 0));
    assert_eq!(expect_packet(&mut raw), CONNACK_OK);
    expect_silence(&mut raw, Duration::from_secs(4));
    assert_alive(&mut raw);
}

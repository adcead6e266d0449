//! MQTT 5.0 §4.12 Enhanced authentication, with SCRAM-SHA-256 (`--auth-scram-file`), over
//! raw TCP: the AUTH exchange before CONNACK, refusals, protocol errors, re-authentication
//! (§4.12.1), and clients that do not use it.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::auth::*;
use common::*;

fn broker_with(users: &[(&str, &str)], extra: &[&str]) -> Broker {
    let file = scram_file(users);
    let mut args = vec!["--auth-scram-file", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    Broker::start_with(&args)
}

fn alice() -> Broker {
    broker_with(&[("alice", "wonderland"), ("bob", "builder")], &[])
}

const PINGREQ: [u8; 2] = [0xC0, 0x00];

/// The next packet is a CONNACK (kind 2) or DISCONNECT (kind 14) with `reason`, then the
/// broker closes.
fn expect_refusal(raw: &mut Raw, kind: u8, reason: u8) {
    let a = read_answer(raw);
    assert_eq!((a.kind, a.reason), (kind, reason), "{a:?}");
    wait_closed(raw, Duration::from_secs(3));
}

fn assert_alive(raw: &mut Raw) {
    raw.send(&PINGREQ);
    assert_eq!(expect_packet(raw), vec![0xD0, 0x00], "PINGRESP");
}

#[test]
fn scram_exchange_succeeds_and_connack_carries_the_server_signature() {
    let b = alice();
    // [MQTT-4.12.0-2] AUTH 0x18 challenge, [MQTT-4.12.0-3] AUTH 0x18 answer, then CONNACK 0
    // with the same Authentication Method [MQTT-4.12.0-5] and the server-final data.
    let (mut raw, client, ack) = scram_connect(b.addr, "c1", "alice", "wonderland");
    assert_eq!((ack.kind, ack.reason), (2, 0x00), "{ack:?}");
    assert_eq!(ack.method.as_deref(), Some(SCRAM));
    client
        .verify_server_final(&ack.data_str())
        .expect("the broker proves it knows the ServerKey");
    assert_alive(&mut raw);
}

#[test]
fn scram_works_across_a_hand_off_to_the_home_shard() {
    // With 2 shards, some of these ids land on the other shard: the exchange runs on the
    // accepting shard and its result travels with the CONNECT.
    let mut b = broker_with(&[("alice", "wonderland")], &["--shards", "2"]);
    for i in 0..16 {
        let id = format!("handoff-{i}");
        let (mut raw, client, ack) = scram_connect(b.addr, &id, "alice", "wonderland");
        assert_eq!((ack.kind, ack.reason), (2, 0x00), "{id}: {ack:?}");
        client.verify_server_final(&ack.data_str()).unwrap();
        assert_alive(&mut raw);
    }
    // The kernel spreads accepts over both shards: with 16 connections some were handed
    // off (all landing on their home shard has odds of 2^-16).
    assert_eq!(b.terminate(Duration::from_secs(5)), Some(0));
    let log = b.log();
    assert!(log.contains("handoffs="), "no hand-off happened:\n{log}");
    assert!(log.contains("auth_success="), "{log}");
}

#[test]
fn the_exchange_is_bounded_by_the_connect_timeout() {
    let b = broker_with(&[("alice", "wonderland")], &["--connect-timeout", "1"]);
    // A client that never answers the challenge is closed, like one that never sends CONNECT.
    let (mut raw, _, _) = challenged(&b);
    let took = wait_closed(&mut raw, Duration::from_secs(4));
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn wrong_password_gets_connack_not_authorized_and_close() {
    let b = alice();
    // [MQTT-4.12.0-4] the server rejects with CONNACK >= 0x80 and closes.
    let (mut raw, _, ack) = scram_connect(b.addr, "c1", "alice", "looking-glass");
    assert_eq!((ack.kind, ack.reason), (2, 0x87), "{ack:?}");
    assert_eq!(ack.method, None);
    wait_closed(&mut raw, Duration::from_secs(3));
    // An unknown user is refused the same way, at the same step.
    let (mut raw, _, ack) = scram_connect(b.addr, "c2", "mallory", "wonderland");
    assert_eq!((ack.kind, ack.reason), (2, 0x87), "{ack:?}");
    wait_closed(&mut raw, Duration::from_secs(3));
}

#[test]
fn unknown_method_gets_connack_bad_authentication_method() {
    let b = alice();
    // [MQTT-4.12.0-1] unsupported method: CONNACK 0x8C and close; no AUTH is sent.
    let mut raw = Raw::connect(b.addr);
    raw.send(&connect_v5("c1", Some("GS2-KRB5"), Some(b"x")));
    expect_refusal(&mut raw, 2, 0x8C);
    // A broker without any method configured answers the same.
    let plain = Broker::start();
    let mut raw = Raw::connect(plain.addr);
    raw.send(&connect_v5("c1", Some(SCRAM), Some(b"n,,n=alice,r=abc")));
    expect_refusal(&mut raw, 2, 0x8C);
}

/// CONNECT with SCRAM and read the AUTH 0x18 challenge.
fn challenged(b: &Broker) -> (Raw, ScramClient, String) {
    let mut raw = Raw::connect(b.addr);
    let c = ScramClient::new("alice", "wonderland", "nonce42");
    raw.send(&connect_v5(
        "c1",
        Some(SCRAM),
        Some(c.client_first().as_bytes()),
    ));
    let ch = read_answer(&mut raw);
    assert_eq!((ch.kind, ch.reason), (15, 0x18), "{ch:?}");
    (raw, c, ch.data_str())
}

#[test]
fn wrong_auth_reason_or_other_packet_mid_exchange_is_a_protocol_error() {
    let b = alice();
    // [MQTT-4.12.0-3] the client's answer must be AUTH 0x18 (0x19 here).
    let (mut raw, mut c, first) = challenged(&b);
    let fin = c.client_final(&first).unwrap();
    raw.send(&auth_packet(0x19, Some(SCRAM), Some(fin.as_bytes())));
    expect_refusal(&mut raw, 2, 0x82);

    // [MQTT-4.12.0-5] ... with the same method.
    let (mut raw, mut c, first) = challenged(&b);
    let fin = c.client_final(&first).unwrap();
    raw.send(&auth_packet(
        0x18,
        Some("SCRAM-SHA-1"),
        Some(fin.as_bytes()),
    ));
    expect_refusal(&mut raw, 2, 0x82);

    // [MQTT-3.1.2-30] nothing but AUTH or DISCONNECT before the CONNACK.
    let (mut raw, _, _) = challenged(&b);
    raw.send(&PINGREQ);
    expect_refusal(&mut raw, 2, 0x82);
}

#[test]
fn garbled_client_data_is_refused_without_harm() {
    let b = alice();
    let mut raw = Raw::connect(b.addr);
    raw.send(&connect_v5("c1", Some(SCRAM), Some(b"\xff garbage,,,")));
    // Malformed SCRAM data: 0x80 Unspecified error (not a panic, not a hang).
    expect_refusal(&mut raw, 2, 0x80);
    // A method without data (no client-first message) fails too.
    let mut raw = Raw::connect(b.addr);
    raw.send(&connect_v5("c1", Some(SCRAM), None));
    expect_refusal(&mut raw, 2, 0x80);
    // The broker still serves.
    let (_raw, _, ack) = scram_connect(b.addr, "c2", "bob", "builder");
    assert_eq!(ack.reason, 0x00);
}

/// A whole re-authentication (§4.12.1) as `user`: AUTH 0x19 with a client-first message,
/// the broker's AUTH 0x18 challenge, AUTH 0x18 with the proof. Returns the broker's final
/// answer and the client (to check the server signature).
fn reauthenticate(raw: &mut Raw, user: &str, password: &str) -> (Answer, ScramClient) {
    let mut c = ScramClient::new(user, password, "again7");
    // [MQTT-4.12.1-1] AUTH 0x19 with the CONNECT's method starts it.
    raw.send(&auth_packet(
        0x19,
        Some(SCRAM),
        Some(c.client_first().as_bytes()),
    ));
    let ch = read_answer(raw);
    assert_eq!((ch.kind, ch.reason), (15, 0x18), "{ch:?}");
    let fin = c.client_final(&ch.data_str()).unwrap();
    raw.send(&auth_packet(0x18, Some(SCRAM), Some(fin.as_bytes())));
    (read_answer(raw), c)
}

#[test]
fn reauthentication_succeeds_with_auth_success() {
    let b = alice();
    let (mut raw, _, ack) = scram_connect(b.addr, "c1", "alice", "wonderland");
    assert_eq!(ack.reason, 0);
    for _ in 0..2 {
        let (done, c) = reauthenticate(&mut raw, "alice", "wonderland");
        assert_eq!((done.kind, done.reason), (15, 0x00), "{done:?}");
        assert_eq!(done.method.as_deref(), Some(SCRAM));
        c.verify_server_final(&done.data_str()).unwrap();
        assert_alive(&mut raw);
    }
}

#[test]
fn failed_reauthentication_disconnects_with_the_reason() {
    let b = alice();
    // [MQTT-4.12.1-2] wrong password: DISCONNECT 0x87 and close.
    let (mut raw, _, _) = scram_connect(b.addr, "c1", "alice", "wonderland");
    let (d, _) = reauthenticate(&mut raw, "alice", "nope");
    assert_eq!((d.kind, d.reason), (14, 0x87), "{d:?}");
    wait_closed(&mut raw, Duration::from_secs(3));
    // Proving another identity than the CONNECT did is not authorized either.
    let (mut raw, _, _) = scram_connect(b.addr, "c2", "alice", "wonderland");
    let (d, _) = reauthenticate(&mut raw, "bob", "builder");
    assert_eq!((d.kind, d.reason), (14, 0x87), "{d:?}");
    wait_closed(&mut raw, Duration::from_secs(3));
}

#[test]
fn reauthentication_with_another_method_or_out_of_turn_is_a_protocol_error() {
    let b = alice();
    // [MQTT-4.12.1-1] the method must be the one of the CONNECT.
    let (mut raw, _, _) = scram_connect(b.addr, "c1", "alice", "wonderland");
    raw.send(&auth_packet(
        0x19,
        Some("SCRAM-SHA-1"),
        Some(b"n,,n=alice,r=x"),
    ));
    expect_refusal(&mut raw, 14, 0x82);
    // AUTH 0x18 with no re-authentication in progress.
    let (mut raw, _, _) = scram_connect(b.addr, "c2", "alice", "wonderland");
    raw.send(&auth_packet(0x18, Some(SCRAM), Some(b"c=biws,r=x,p=x")));
    expect_refusal(&mut raw, 14, 0x82);
}

#[test]
fn clients_without_enhanced_auth_connect_as_before_but_may_not_send_auth() {
    let b = alice();
    // No Authentication Method: CONNACK 0 without one [MQTT-4.12.0-6].
    let mut raw = Raw::connect(b.addr);
    raw.send(&connect_v5("plain", None, None));
    let ack = read_answer(&mut raw);
    assert_eq!((ack.kind, ack.reason, ack.method), (2, 0x00, None));
    assert_alive(&mut raw);
    // [MQTT-4.12.0-7] such a client must not send AUTH: DISCONNECT 0x82.
    raw.send(&auth_packet(0x19, Some(SCRAM), Some(b"n,,n=alice,r=x")));
    expect_refusal(&mut raw, 14, 0x82);
    // 3.1.1 clients are untouched.
    let (raw, _) = raw_session(b.addr, "v311", true);
    raw_disconnect(raw);
}

#[test]
fn a_bad_credentials_file_stops_the_broker_with_the_line_number() {
    let file = scram_file(&[("alice", "wonderland")]);
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("bob:SCRAM-SHA-256$4096:bm90IGJhc2U2NA$x:y\n");
    std::fs::write(&file, text).unwrap();
    let dir = file.parent().unwrap().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["--listen", "127.0.0.1:0", "--shards", "1", "--data-dir"])
        .arg(&dir)
        .arg("--auth-scram-file")
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .expect("run ringmq");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("scram.txt") && err.contains("line 2"),
        "stderr: {err}"
    );
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
}

//! Resource limits from the broker contract (`--max-packet-size`, `--max-queued-messages`,
//! `--max-inflight`, `--max-connections`) and isolation between clients: one client hitting
//! a limit, or stalling, must not affect the others.

mod common;

use common::*;
use rumqttc::QoS;
use std::time::{Duration, Instant};

const PUBACK: u8 = 0x40;

fn payload_str(p: &rumqttc::Publish) -> String {
    String::from_utf8(p.payload.to_vec()).expect("UTF-8 payload")
}

#[test]
fn oversized_publish_closes_only_that_connection() {
    // Contract --max-packet-size; MQTT 5.0 §3.1.2.11.4 / §4.13 (a packet over the maximum
    // size is an error the server answers by closing), §4.8 of 3.1.1 (close on error).
    let broker = Broker::start_with(&["--max-packet-size", "1024"]);
    let mut sub = TestClient::connect(&broker, "lim-big-sub", true);
    sub.subscribe("lim/big", QoS::AtLeastOnce);

    let (mut raw, _) = raw_session(broker.addr, "lim-big", true);
    raw.send(&publish_packet(
        "lim/big",
        1,
        false,
        false,
        1,
        &[b'x'; 2000],
    ));
    wait_closed(&mut raw, WAIT);

    // The oversized message was not routed, and the other client carries on.
    let mut publisher = TestClient::connect(&broker, "lim-big-pub", true);
    publisher.publish_confirmed("lim/big", QoS::AtLeastOnce, false, vec![b'y'; 900]);
    let p = sub.recv();
    assert_eq!(
        p.payload.len(),
        900,
        "the 2000-byte message must never be delivered"
    );
    sub.expect_no_publish(Duration::from_millis(300));
}

#[test]
fn packet_of_exactly_the_limit_is_accepted() {
    // Boundary of --max-packet-size: a whole packet of exactly 1024 bytes is allowed.
    let broker = Broker::start_with(&["--max-packet-size", "1024"]);
    let (mut raw, _) = raw_session(broker.addr, "lim-edge", true);
    // 1 (type) + 2 (remaining length) + 2+6 (topic) + 2 (pid) + payload = 1024.
    let p = publish_packet("lim/eq", 1, false, false, 1, &[b'z'; 1024 - 13]);
    assert_eq!(p.len(), 1024);
    raw.send(&p);
    assert_eq!(expect_packet(&mut raw), vec![PUBACK, 0x02, 0x00, 0x01]);
}

/// Payloads as integers, in arrival order, until `quiet` passes without a PUBLISH.
fn drain(sub: &mut TestClient, quiet: Duration) -> Vec<u32> {
    let mut got = Vec::new();
    while let Some(p) = sub.recv_within(quiet) {
        got.push(payload_str(&p).parse().expect("numeric payload"));
    }
    got
}

#[test]
fn offline_queue_keeps_first_10_of_20() {
    // Contract --max-queued-messages: when the queue is full the newly arriving message is
    // dropped, so an offline session gets exactly the first 10 of 20 QoS 1 messages.
    let broker = Broker::start_with(&["--max-queued-messages", "10"]);
    let mut sub = TestClient::connect(&broker, "lim-q", false);
    sub.subscribe("lim/q", QoS::AtLeastOnce);
    sub.disconnect();

    let mut publisher = TestClient::connect(&broker, "lim-q-pub", true);
    for i in 0..20 {
        publisher.publish("lim/q", QoS::AtLeastOnce, false, i.to_string());
    }
    publisher.wait_publish_flows(20, QoS::AtLeastOnce);

    let mut sub = TestClient::connect(&broker, "lim-q", false);
    assert!(sub.session_present);
    assert_eq!(
        drain(&mut sub, Duration::from_millis(800)),
        (0..10).collect::<Vec<_>>()
    );
}

#[test]
fn full_queue_drops_qos0_before_qos1() {
    // Contract: when the queue is full, queued QoS 0 messages are dropped first.
    let broker = Broker::start_with(&["--max-queued-messages", "10"]);
    let mut sub = TestClient::connect(&broker, "lim-q0", false);
    sub.subscribe("lim/q0", QoS::AtLeastOnce);
    sub.disconnect();

    let mut publisher = TestClient::connect(&broker, "lim-q0-pub", true);
    for i in 100..105 {
        publisher.publish("lim/q0", QoS::AtMostOnce, false, i.to_string());
    }
    for i in 0..10 {
        publisher.publish("lim/q0", QoS::AtLeastOnce, false, i.to_string());
    }
    publisher.wait_publish_flows(10, QoS::AtLeastOnce);

    let mut sub = TestClient::connect(&broker, "lim-q0", false);
    let got = drain(&mut sub, Duration::from_millis(800));
    assert_eq!(
        got,
        (0..10).collect::<Vec<_>>(),
        "all 10 QoS 1 messages kept, the 5 QoS 0 ones (100..105) dropped to make room"
    );
}

#[test]
fn inflight_window_limits_unacked_qos1() {
    // Contract --max-inflight 2 (MQTT 5.0 Receive Maximum semantics, §4.9): at most two
    // unacknowledged QoS 1 PUBLISH packets to one client; the next one follows a PUBACK,
    // in order (MQTT-4.6.0-6).
    let broker = Broker::start_with(&["--max-inflight", "2"]);
    let (mut raw, _) = raw_session(broker.addr, "lim-inf", true);
    raw_subscribe(&mut raw, 1, &[("lim/inf", 1)]);

    let mut publisher = TestClient::connect(&broker, "lim-inf-pub", true);
    for i in 0..5 {
        publisher.publish("lim/inf", QoS::AtLeastOnce, false, i.to_string());
    }
    publisher.wait_publish_flows(5, QoS::AtLeastOnce);

    let a = expect_publish(&mut raw);
    let b = expect_publish(&mut raw);
    assert_eq!(
        (a.payload.clone(), b.payload.clone()),
        (b"0".to_vec(), b"1".to_vec())
    );
    expect_silence(&mut raw, Duration::from_millis(700));

    raw.send(&ack_v311(PUBACK, a.pkid.unwrap()));
    let c = expect_publish(&mut raw);
    assert_eq!(
        c.payload,
        b"2".to_vec(),
        "third message follows the first PUBACK"
    );
    expect_silence(&mut raw, Duration::from_millis(500));

    raw.send(&ack_v311(PUBACK, b.pkid.unwrap()));
    raw.send(&ack_v311(PUBACK, c.pkid.unwrap()));
    let d = expect_publish(&mut raw);
    let e = expect_publish(&mut raw);
    assert_eq!((d.payload, e.payload), (b"3".to_vec(), b"4".to_vec()));
}

#[test]
fn stalled_subscriber_does_not_block_others() {
    // Isolation (contract: per-session queues and bounds): a subscriber that never reads
    // its socket must not stop delivery to a healthy subscriber of the same topic.
    const N: u32 = 10_000;
    const BATCH: u32 = 500;
    let broker = Broker::start();
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    sock.connect(&broker.addr.into()).expect("connect");
    let stream: std::net::TcpStream = sock.into();
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut stalled = Raw { stream };
    stalled.send(&connect_v311("lim-stalled", true, 0));
    assert_eq!(expect_packet(&mut stalled), vec![0x20, 0x02, 0x00, 0x00]);
    raw_subscribe(&mut stalled, 1, &[("lim/flood", 0)]);
    // From now on `stalled` never reads again.

    let mut good = TestClient::connect(&broker, "lim-good", true);
    good.subscribe("lim/flood", QoS::AtLeastOnce);
    let mut publisher = TestClient::connect(&broker, "lim-flood-pub", true);
    let body = vec![b'.'; 1000];
    let start = Instant::now();
    // Batches of 500 stay below the healthy subscriber's own queue bound (1000), so any
    // loss or stall here comes from the stalled client, not from the healthy one's limits.
    for batch in 0..N / BATCH {
        for i in batch * BATCH..(batch + 1) * BATCH {
            let mut p = format!("{i:06}").into_bytes();
            p.extend_from_slice(&body);
            publisher.publish("lim/flood", QoS::AtLeastOnce, false, p);
        }
        publisher.wait_publish_flows(BATCH as usize, QoS::AtLeastOnce);
        for i in batch * BATCH..(batch + 1) * BATCH {
            let p = good
                .recv_within(Duration::from_secs(10))
                .unwrap_or_else(|| panic!("healthy subscriber stuck at message {i}"));
            assert_eq!(&p.payload[..6], format!("{i:06}").as_bytes(), "order/loss");
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
    drop(stalled);
}

#[test]
fn max_connections_refuses_the_next_one() {
    // Contract --max-connections N: the (N+1)-th concurrent connection is refused (closed,
    // or CONNACK 0x03 "server unavailable" [MQTT-3.2.2-5 then close]); after one client
    // leaves, a new one is accepted again.
    let broker = Broker::start_with(&["--max-connections", "3"]);
    let mut conns: Vec<Raw> = (0..3)
        .map(|i| raw_session(broker.addr, &format!("lim-c{i}"), true).0)
        .collect();

    let mut extra = Raw::connect(broker.addr);
    let _ = try_send(&mut extra, &connect_v311("lim-c3", true, 60));
    match next_within(&mut extra, WAIT) {
        Next::Closed => {}
        Next::Packet(p) => {
            assert_eq!(p[0], 0x20, "only a CONNACK may come back: {p:02x?}");
            assert_ne!(
                p[3], 0x00,
                "the 4th connection must not be accepted: {p:02x?}"
            );
            wait_closed(&mut extra, WAIT);
        }
        Next::Silent => panic!("4th connection neither refused nor closed"),
    }

    // The three admitted clients are unaffected.
    for c in &mut conns {
        c.send(&[0xC0, 0x00]);
        assert_eq!(expect_packet(c), vec![0xD0, 0x00]);
    }

    raw_disconnect(conns.pop().unwrap());
    let deadline = Instant::now() + WAIT;
    loop {
        let mut again = Raw::connect(broker.addr);
        let _ = try_send(&mut again, &connect_v311("lim-c4", true, 60));
        if let Next::Packet(p) = next_within(&mut again, Duration::from_secs(2)) {
            if p == [0x20, 0x02, 0x00, 0x00] {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "a slot freed by a DISCONNECT was not reused"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

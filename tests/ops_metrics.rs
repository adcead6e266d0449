//! The ops HTTP endpoint (issue 7): `/metrics` in the Prometheus text format 0.0.4,
//! `/health`, `/ready`, and the endpoint's bounds. Every scrape goes over a real TCP
//! socket and every exposition is checked line by line (`common::obs::parse_exposition`).

mod common;

use common::obs::*;
use common::*;
use rumqttc::QoS;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn broker(extra: &[&str]) -> (Broker, std::net::SocketAddr) {
    let mut args = vec!["--http-listen", "127.0.0.1:0", "--stats-interval-ms", "100"];
    args.extend_from_slice(extra);
    let b = Broker::start_with(&args);
    let addr = ops_addr(&b);
    (b, addr)
}

/// Value of `key` after minus before.
fn delta(after: &Exposition, before: &Exposition, key: &str) -> f64 {
    after.get(key) - before.samples.get(key).copied().unwrap_or(0.0)
}

#[test]
fn traffic_moves_the_right_counters_by_the_right_amounts() {
    let (b, http) = broker(&["--shards", "2", "--durability", "batch"]);
    let before = scrape(http);
    assert_eq!(before.types["ringmq_messages_received_total"], "counter");
    assert_eq!(before.types["ringmq_journal_sync_seconds"], "histogram");
    assert_eq!(before.types["ringmq_sessions"], "gauge");
    assert!(before.samples.contains_key("ringmq_sessions{shard=\"1\"}"));

    let mut sub = TestClient::connect(&b, "obs-sub", true);
    sub.subscribe("obs/#", QoS::ExactlyOnce);
    let mut publ = TestClient::connect(&b, "obs-pub", true);
    publ.publish_confirmed("obs/0", QoS::AtMostOnce, false, vec![b'a'; 10]);
    publ.publish_confirmed("obs/1", QoS::AtLeastOnce, false, vec![b'b'; 20]);
    publ.publish_confirmed("obs/2", QoS::ExactlyOnce, false, vec![b'c'; 30]);
    for _ in 0..3 {
        sub.recv();
    }
    // A message nobody subscribed to is dropped (counted as no_subscribers).
    publ.publish_confirmed("nobody/here", QoS::AtLeastOnce, false, vec![b'd'; 5]);
    // A connection that closes before CONNECT is a rejected one.
    let raw = Raw::connect(b.addr);
    drop(raw);

    // Shards publish their snapshots independently: wait until both show the traffic.
    let after = scrape_until(http, "the traffic", |e| {
        let sum = |k: &str| e.sum(k, "") - before.sum(k, "");
        sum("ringmq_messages_sent_total") >= 3.0
            && sum("ringmq_messages_received_total") >= 4.0
            && sum("ringmq_connections_accepted_total") >= 3.0
            && delta(
                e,
                &before,
                "ringmq_connections_rejected_total{reason=\"connect_failed\"}",
            ) >= 1.0
            && delta(
                e,
                &before,
                "ringmq_messages_dropped_total{reason=\"no_subscribers\"}",
            ) >= 1.0
            && e.sum("ringmq_sessions", "") == 2.0
    });
    let d = |k: &str| delta(&after, &before, k);
    assert_eq!(d("ringmq_messages_received_total{qos=\"0\"}"), 1.0);
    assert_eq!(d("ringmq_messages_received_total{qos=\"1\"}"), 2.0);
    assert_eq!(d("ringmq_messages_received_total{qos=\"2\"}"), 1.0);
    assert_eq!(d("ringmq_payload_received_bytes_total{qos=\"0\"}"), 10.0);
    assert_eq!(d("ringmq_payload_received_bytes_total{qos=\"1\"}"), 25.0);
    assert_eq!(d("ringmq_payload_received_bytes_total{qos=\"2\"}"), 30.0);
    // Granted QoS 2: each message goes out at the QoS it was published with.
    for q in 0..3 {
        assert_eq!(
            d(&format!("ringmq_messages_sent_total{{qos=\"{q}\"}}")),
            1.0
        );
    }
    assert_eq!(d("ringmq_payload_sent_bytes_total{qos=\"2\"}"), 30.0);
    assert_eq!(
        d("ringmq_messages_dropped_total{reason=\"no_subscribers\"}"),
        1.0
    );
    assert_eq!(
        d("ringmq_connections_rejected_total{reason=\"connect_failed\"}"),
        1.0
    );
    assert_eq!(d("ringmq_connections_accepted_total"), 3.0);
    assert!(d("ringmq_network_received_bytes_total") >= 65.0);
    assert!(d("ringmq_network_sent_bytes_total") >= 60.0);
    assert_eq!(after.sum("ringmq_connections", "shard="), 2.0);
    assert_eq!(after.sum("ringmq_subscriptions", "shard="), 1.0);
    // Durability batch: the QoS 1/2 messages were appended and flushed.
    assert!(d("ringmq_journal_append_seconds_count") >= 2.0);
    assert!(d("ringmq_journal_sync_seconds_count") >= 1.0);
    assert!(d("ringmq_journal_written_bytes_total") > 0.0);
    // Every shard reports its heartbeat and readiness.
    for s in 0..2 {
        assert_eq!(
            after.get(&format!("ringmq_shard_ready{{shard=\"{s}\"}}")),
            1.0
        );
        assert!(
            after.get(&format!(
                "ringmq_shard_heartbeat_age_seconds{{shard=\"{s}\"}}"
            )) < 5.0
        );
    }
}

#[test]
fn queue_full_and_refused_connections_are_counted_by_reason() {
    // --max-queued-messages 1 and --max-inflight 1 with a subscriber that never acks: the
    // third QoS 1 message finds the window and the queue full [contract: queue bound].
    let (b, http) = broker(&[
        "--max-queued-messages",
        "1",
        "--max-inflight",
        "1",
        "--max-connections",
        "3",
        "--slow-consumer-ms",
        "0",
    ]);
    let before = scrape(http);
    let (mut sub, _) = raw_session(b.addr, "obs-stuck", true);
    raw_subscribe(&mut sub, 1, &[("q/#", 1)]);
    let mut publ = TestClient::connect(&b, "obs-q-pub", true);
    for i in 0..4 {
        publ.publish_confirmed("q/x", QoS::AtLeastOnce, false, vec![i]);
    }
    // Third connection fills max_connections; the fourth is refused at accept.
    let _third = Raw::connect(b.addr);
    std::thread::sleep(Duration::from_millis(200));
    let mut fourth = Raw::connect(b.addr);
    fourth.expect_closed();
    let after = scrape_until(http, "the drops", |e| {
        delta(
            e,
            &before,
            "ringmq_messages_dropped_total{reason=\"queue_full\"}",
        ) >= 1.0
            && delta(
                e,
                &before,
                "ringmq_connections_rejected_total{reason=\"max_connections\"}",
            ) >= 1.0
    });
    // Every message is in flight, queued or dropped.
    let held = after.sum("ringmq_queued_messages", "shard=")
        + after.sum("ringmq_inflight_messages", "shard=");
    assert_eq!(after.sum("ringmq_inflight_messages", "shard="), 1.0);
    assert_eq!(
        delta(
            &after,
            &before,
            "ringmq_messages_dropped_total{reason=\"queue_full\"}"
        ),
        4.0 - held
    );
}

#[test]
fn health_ready_and_the_error_paths() {
    let (_b, http) = broker(&[]);
    assert_eq!(http_get(http, "/health"), (200, "ok\n".into()));
    assert_eq!(http_get(http, "/ready"), (200, "ready\n".into()));
    assert_eq!(http_get(http, "/nope").0, 404);
    let (status, head, _) = http_raw(http, b"POST /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 405);
    assert!(head.contains("\r\nAllow: GET"), "{head}");
    assert!(head.contains("\r\nConnection: close"), "{head}");
    assert_eq!(http_raw(http, b"HEAD /health HTTP/1.1\r\n\r\n").0, 405);
    assert_eq!(http_raw(http, b"nonsense\r\n\r\n").0, 400);
    // A request head over 8 KiB is refused.
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    big.extend(std::iter::repeat(b'x').take(9000));
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(http_raw(http, &big).0, 431);
}

#[test]
fn a_slow_client_does_not_block_other_scrapes_and_is_cut_off() {
    let (_b, http) = broker(&[]);
    let mut slow = std::net::TcpStream::connect(http).unwrap();
    slow.write_all(b"GET /met").unwrap();
    let mut slow2 = std::net::TcpStream::connect(http).unwrap();
    slow2.write_all(b"GE").unwrap();
    let t0 = Instant::now();
    scrape(http);
    assert_eq!(http_get(http, "/health").0, 200);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    // The slow one is closed unanswered after the 2 s read timeout.
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let t1 = Instant::now();
    let _ = slow.read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert!(t1.elapsed() < Duration::from_secs(4), "{:?}", t1.elapsed());
}

#[test]
fn connections_beyond_the_limit_are_closed_and_counted() {
    let (_b, http) = broker(&[]);
    // Four idle connections fill the endpoint; the fifth is closed unanswered.
    let idle: Vec<_> = (0..4)
        .map(|_| std::net::TcpStream::connect(http).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = std::net::TcpStream::connect(http).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let _ = extra.write_all(b"GET /health HTTP/1.1\r\n\r\n");
    let mut buf = Vec::new();
    let _ = extra.read_to_end(&mut buf);
    assert!(buf.is_empty(), "answered while busy");
    drop(idle);
    // Once the idle ones time out, the refusal shows.
    let e = scrape_until(http, "the refused connection", |e| {
        e.get("ringmq_http_refused_total") >= 1.0
    });
    assert_eq!(e.get("ringmq_http_refused_total"), 1.0);
}

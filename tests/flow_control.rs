//! Publisher flow control (contract `--slow-consumer-ms`, module `pressure`): publishers that
//! feed a subscriber faster than it drains are paused — no message of a subscriber that keeps
//! up is evicted — and a subscriber that stops reading is declared a slow consumer after the
//! timeout, so it cannot hold its publishers (or the other subscribers) hostage.

mod common;

use common::*;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A subscriber that reads through a buffer (one syscall per many packets).
struct Reader {
    inner: BufReader<TcpStream>,
}

impl Reader {
    fn new(raw: Raw) -> Reader {
        raw.stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Reader {
            inner: BufReader::with_capacity(256 * 1024, raw.stream),
        }
    }

    /// The next PUBLISH as (topic, payload); panics on anything else or a timeout.
    fn publish(&mut self) -> (String, Vec<u8>) {
        let mut first = [0u8; 1];
        self.inner.read_exact(&mut first).expect("read publish");
        assert_eq!(
            first[0] & 0xf0,
            0x30,
            "expected PUBLISH, got {:#04x}",
            first[0]
        );
        let mut len = 0usize;
        for shift in (0..28).step_by(7) {
            let mut b = [0u8; 1];
            self.inner.read_exact(&mut b).expect("read length");
            len |= ((b[0] & 0x7f) as usize) << shift;
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        self.inner.read_exact(&mut body).expect("read body");
        let tlen = u16::from_be_bytes([body[0], body[1]]) as usize;
        let topic = String::from_utf8(body[2..2 + tlen].to_vec()).expect("topic");
        // QoS 0 only in these tests: no packet identifier.
        (topic, body[2 + tlen..].to_vec())
    }
}

fn subscriber(broker: &Broker, id: &str, filter: &str) -> Raw {
    let mut raw = Raw::connect(broker.addr);
    raw.send(&connect_v311(id, true, 0));
    assert_eq!(expect_packet(&mut raw), vec![0x20, 0x02, 0x00, 0x00]);
    raw_subscribe(&mut raw, 1, &[(filter, 0)]);
    raw
}

/// A raw QoS 0 publisher that writes all `n` messages at once (the broker's TCP window, not
/// the client, decides how fast they go in).
fn flood(
    broker: &Broker,
    id: &str,
    topic: &str,
    n: u32,
    body: usize,
) -> std::thread::JoinHandle<()> {
    let mut raw = Raw::connect(broker.addr);
    raw.send(&connect_v311(id, true, 0));
    assert_eq!(expect_packet(&mut raw), vec![0x20, 0x02, 0x00, 0x00]);
    let mut bytes = Vec::new();
    for i in 0..n {
        let mut payload = format!("{i:08}").into_bytes();
        payload.resize(8 + body, b'.');
        bytes.extend_from_slice(&publish_packet(topic, 0, false, false, 0, &payload));
    }
    std::thread::spawn(move || {
        raw.stream.write_all(&bytes).expect("publish flood");
        raw_disconnect(raw);
    })
}

fn seq(payload: &[u8]) -> u32 {
    std::str::from_utf8(&payload[..8])
        .expect("seq")
        .parse()
        .expect("seq")
}

#[test]
fn fan_in_qos0_loses_nothing_while_the_subscriber_keeps_up() {
    // Four publishers flood one wildcard subscriber whose queue holds only 20 messages.
    // Without flow control nearly every message would be evicted (QoS 0 may be dropped,
    // MQTT-4.3.1); with it the publishers are paused instead, so all 4 × 5000 arrive, each
    // publisher's in order [MQTT-4.6.0-6].
    const N: u32 = 5000;
    let broker =
        Broker::start_with(&["--max-queued-messages", "20", "--slow-consumer-ms", "30000"]);
    let mut sub = Reader::new(subscriber(&broker, "fc-sink", "fc/+/data"));
    let pubs: Vec<_> = (0..4)
        .map(|p| {
            flood(
                &broker,
                &format!("fc-pub{p}"),
                &format!("fc/{p}/data"),
                N,
                24,
            )
        })
        .collect();
    let mut next = [0u32; 4];
    for _ in 0..4 * N {
        let (topic, payload) = sub.publish();
        let p: usize = topic
            .strip_prefix("fc/")
            .and_then(|t| t.strip_suffix("/data"))
            .and_then(|d| d.parse().ok())
            .expect("topic fc/<p>/data");
        assert_eq!(seq(&payload), next[p], "publisher {p}: loss or reorder");
        next[p] += 1;
    }
    assert_eq!(next, [N; 4]);
    for p in pubs {
        p.join().expect("publisher thread");
    }
}

#[test]
fn a_stalled_subscriber_is_declared_slow_and_stops_pausing_its_publisher() {
    // A subscriber that never reads must not hold its publisher or a healthy subscriber of
    // the same topic for longer than --slow-consumer-ms: after that it is a slow consumer
    // (logged and counted) and only its own queue bound applies to it.
    const N: u32 = 3000;
    let broker =
        Broker::start_with(&["--max-queued-messages", "100", "--slow-consumer-ms", "1000"]);
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    sock.connect(&broker.addr.into()).expect("connect");
    let stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut stalled = Raw { stream };
    stalled.send(&connect_v311("fc-stalled", true, 0));
    assert_eq!(expect_packet(&mut stalled), vec![0x20, 0x02, 0x00, 0x00]);
    raw_subscribe(&mut stalled, 1, &[("fc/wide", 0)]);
    // From now on `stalled` never reads again.

    let mut good = Reader::new(subscriber(&broker, "fc-good", "fc/wide"));
    let start = Instant::now();
    let publisher = flood(&broker, "fc-wide-pub", "fc/wide", N, 8 * 1024);
    for i in 0..N {
        let (_, payload) = good.publish();
        assert_eq!(seq(&payload), i, "healthy subscriber: loss or reorder");
    }
    publisher.join().expect("publisher thread");
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
    let log = broker.log();
    assert!(
        log.lines()
            .any(|l| l.contains("slow consumer") && l.contains("fc-stalled")),
        "the stalled subscriber was not declared slow; log:\n{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("slow consumer") && l.contains("fc-good")),
        "the healthy subscriber was declared slow"
    );
    drop(stalled);
}

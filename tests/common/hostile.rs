//! Helpers for the hostile-input and per-client limit suites (`tests/hostile_input.rs`,
//! `tests/limits_topic_rate.rs`): a well-behaved client that proves the broker still serves,
//! a check that every connection slot was given back, and the broker's resident memory and
//! shutdown counters.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{
    connect_v311, expect_packet, next_within, packet, publish_packet, raw_session, raw_subscribe,
    Broker, Next, Raw,
};

/// A 3.1.1 client subscribed to its own topic: each [`Good::round_trip`] publishes and
/// waits for the message to come back.
pub struct Good {
    raw: Raw,
    topic: String,
    n: u32,
}

impl Good {
    pub fn connect(addr: SocketAddr, id: &str) -> Good {
        let (mut raw, _) = raw_session(addr, id, true);
        let topic = format!("good/{id}");
        assert_eq!(raw_subscribe(&mut raw, 1, &[(&topic, 0)]), vec![0]);
        Good { raw, topic, n: 0 }
    }

    /// Publish (QoS 0) and receive it back within 5 s; `why` names the attack just made.
    pub fn round_trip(&mut self, why: &str) {
        self.n += 1;
        let payload = self.n.to_be_bytes();
        self.raw
            .send(&publish_packet(&self.topic, 0, false, false, 0, &payload));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match next_within(&mut self.raw, left) {
                Next::Packet(p) if p[0] & 0xF0 == 0x30 && p.ends_with(&payload) => return,
                Next::Packet(_) => continue,
                other => panic!("well-behaved client after {why}: {other:?}"),
            }
        }
    }
}

/// The broker gives back every slot of `--max-connections`: `free` new clients can all
/// connect at once (retrying for up to 5 s while closed connections are still being torn
/// down). They are then disconnected again.
pub fn assert_slots_free(addr: SocketAddr, free: usize, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut probes = Vec::new();
        let mut refused = 0;
        for i in 0..free {
            let mut raw = Raw::connect(addr);
            raw.send(&connect_v311(&format!("probe-{i}"), true, 30));
            match next_within(&mut raw, Duration::from_secs(2)) {
                Next::Packet(p) if p == [0x20, 2, 0, 0] => probes.push(raw),
                _ => refused += 1,
            }
        }
        for mut raw in probes {
            raw.send(&packet(0xE0, &[]));
            let _ = next_within(&mut raw, Duration::from_secs(2));
        }
        if refused == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {why}: {refused} of {free} free connection slots still taken"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Resident memory of the broker process, in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(broker: &Broker) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", broker.pid()))
        .expect("broker /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// Stops the broker and returns its shutdown counter `name` (summed over shards; 0 when
/// absent, as counters at zero are not printed).
pub fn final_counter(broker: &mut Broker, name: &str) -> u64 {
    assert_eq!(
        broker.terminate(Duration::from_secs(10)),
        Some(0),
        "clean exit"
    );
    let key = format!("{name}=");
    broker
        .log()
        .lines()
        .filter(|l| l.contains("counters:"))
        .flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|w| w.strip_prefix(&key).and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// Reads packets until one whose first byte is `first` arrives (5 s each); returns it.
pub fn expect_type(raw: &mut Raw, first: u8) -> Vec<u8> {
    loop {
        let p = expect_packet(raw);
        if p[0] == first {
            return p;
        }
    }
}

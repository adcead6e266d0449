//! `$SYS` topics: the broker's own figures, published by shard 0 every `sys_interval`
//! seconds as retained QoS 0 messages through the normal routing path (so subscribers on
//! every shard get them, and a new `$SYS/#` subscriber gets the latest values at once).
//!
//! Names follow Mosquitto's where one exists (`$SYS/broker/clients/connected`,
//! `$SYS/broker/load/messages/received/1min`, ...); ringmq's own are under
//! `$SYS/broker/ringmq/`. A value is republished only when it changed. They bypass the
//! write ACL (the broker publishes them) but not the read ACL (checked on delivery), are
//! never journaled (`Shard::log_retained` skips them; they are rebuilt after a start),
//! and `#` / `+` never match them [MQTT-4.7.2-1]. Clients may not publish under `$SYS`
//! (see `conn::handle`).
//!
//! Owned by shard 0 (the state of the load averages lives in its task).

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::stats::ShardSnapshot;
use crate::proto::{QoS, Utf8Bytes};
use crate::session::Publication;
use crate::shard::Shard;

/// Whether `topic` is in the broker's `$SYS` tree.
pub fn is_sys_topic(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

/// The load averages' periods, in seconds, and their topic suffixes.
const PERIODS: [(f64, &str); 3] = [(60.0, "1min"), (300.0, "5min"), (900.0, "15min")];

/// Counters whose per-minute rate is averaged: (topic part, reading).
type Reading = fn(&Totals) -> u64;
const LOADS: [(&str, Reading); 5] = [
    ("messages/received", |t| t.msgs_in),
    ("messages/sent", |t| t.msgs_out),
    ("bytes/received", |t| t.bytes_in),
    ("bytes/sent", |t| t.bytes_out),
    ("connections", |t| t.accepted),
];

/// Sums over every shard's snapshot.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub connected: u64,
    pub sessions: u64,
    pub expired: u64,
    pub msgs_in: u64,
    pub msgs_out: u64,
    pub dropped: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub accepted: u64,
    pub subscriptions: u64,
    pub retained: u64,
    pub queued: u64,
    pub stored_bytes: u64,
}

impl Totals {
    pub fn of(snaps: &[ShardSnapshot]) -> Totals {
        let mut t = Totals::default();
        for s in snaps {
            let g = &s.gauges;
            t.connected += g.connections;
            t.sessions += g.sessions;
            t.subscriptions += g.subscriptions;
            t.retained += g.retained;
            t.queued += g.queued;
            t.stored_bytes += g.queued_bytes + g.retained_bytes;
            t.expired += s.counter("sessions_expired", None);
            t.msgs_in += s.counter("publishes_in", None);
            t.msgs_out += s.counter("publishes_out", None);
            t.bytes_in += s.counter("bytes_received", None);
            t.bytes_out += s.counter("bytes_sent", None);
            t.accepted += s.counter("connections_accepted", None);
            t.dropped += [
                "dropped_queue_full",
                "dropped_qos0_evicted",
                "dropped_expired",
                "dropped_too_large_for_client",
                "dropped_shared_no_member",
                "deliveries_denied_acl",
            ]
            .iter()
            .map(|n| s.counter(n, None))
            .sum::<u64>();
        }
        t
    }
}

/// The `$SYS` publisher's memory between rounds.
#[derive(Debug, Default)]
pub struct SysState {
    /// Last published value of each topic.
    last: HashMap<String, String>,
    /// Exponentially weighted per-minute rates, per (load, period).
    loads: [[f64; 3]; LOADS.len()],
    prev: Option<Totals>,
    max_connected: u64,
}

impl SysState {
    /// The values for this round (`uptime` seconds, `secs` since the previous round), as
    /// (topic, value) for those that changed.
    pub fn round(&mut self, t: &Totals, uptime: u64, secs: f64) -> Vec<(String, String)> {
        self.max_connected = self.max_connected.max(t.connected);
        let mut v: Vec<(String, String)> = vec![
            (
                "version".into(),
                format!("ringmq {}", env!("CARGO_PKG_VERSION")),
            ),
            ("uptime".into(), format!("{uptime} seconds")),
            ("clients/connected".into(), t.connected.to_string()),
            ("clients/active".into(), t.connected.to_string()),
            (
                "clients/total".into(),
                t.sessions.max(t.connected).to_string(),
            ),
            (
                "clients/disconnected".into(),
                t.sessions.saturating_sub(t.connected).to_string(),
            ),
            (
                "clients/inactive".into(),
                t.sessions.saturating_sub(t.connected).to_string(),
            ),
            ("clients/maximum".into(), self.max_connected.to_string()),
            ("clients/expired".into(), t.expired.to_string()),
            ("messages/received".into(), t.msgs_in.to_string()),
            ("messages/sent".into(), t.msgs_out.to_string()),
            (
                "messages/stored".into(),
                (t.queued + t.retained).to_string(),
            ),
            (
                "store/messages/count".into(),
                (t.queued + t.retained).to_string(),
            ),
            ("store/messages/bytes".into(), t.stored_bytes.to_string()),
            ("publish/messages/received".into(), t.msgs_in.to_string()),
            ("publish/messages/sent".into(), t.msgs_out.to_string()),
            ("publish/messages/dropped".into(), t.dropped.to_string()),
            ("bytes/received".into(), t.bytes_in.to_string()),
            ("bytes/sent".into(), t.bytes_out.to_string()),
            ("subscriptions/count".into(), t.subscriptions.to_string()),
            ("retained messages/count".into(), t.retained.to_string()),
        ];
        if let Some(prev) = self.prev.filter(|_| secs > 0.0) {
            for (k, (name, read)) in LOADS.iter().enumerate() {
                let per_min = read(t).saturating_sub(read(&prev)) as f64 * 60.0 / secs;
                for (p, (period, suffix)) in PERIODS.iter().enumerate() {
                    // Mosquitto's form: new = rate + e^(-interval/period) * (old - rate).
                    let old = self.loads[k][p];
                    let new = per_min + (-secs / period).exp() * (old - per_min);
                    self.loads[k][p] = new;
                    v.push((format!("load/{name}/{suffix}"), format!("{new:.2}")));
                }
            }
        }
        self.prev = Some(*t);
        let mut changed = Vec::new();
        for (k, val) in v {
            let k = format!("$SYS/broker/{k}");
            if self.last.get(&k) != Some(&val) {
                self.last.insert(k.clone(), val.clone());
                changed.push((k, val));
            }
        }
        changed
    }
}

/// Shard 0's `$SYS` task: every `sys_interval` seconds, publish what changed.
pub async fn run(shard: Rc<Shard>) {
    let every = Duration::from_secs(shard.cfg.sys_interval);
    let mut state = SysState::default();
    let mut last = std::time::Instant::now();
    // Let every shard publish its first snapshot.
    glommio::timer::sleep(Duration::from_millis(300)).await;
    loop {
        if shard.stopping.get() {
            return;
        }
        let board = &shard.global.ops;
        let snaps = board.collect();
        let mut totals = Totals::of(&snaps);
        // This shard's own connections are exact now (the others' are one snapshot old).
        if let Some(me) = snaps.get(shard.id) {
            let now = shard.conns.borrow().len() as u64;
            totals.connected = totals.connected.saturating_sub(me.gauges.connections) + now;
        }
        let secs = last.elapsed().as_secs_f64();
        last = std::time::Instant::now();
        let uptime = board.started.elapsed().as_secs();
        for (topic, value) in state.round(&totals, uptime, secs) {
            let msg = Publication {
                topic: Utf8Bytes::from(topic),
                payload: Bytes::from(value),
                qos: QoS::AtMostOnce,
                retain: true,
                props: None,
                origin: Utf8Bytes::default(),
                expiry: None,
                id: 0,
            };
            shard.publish(Arc::new(msg));
        }
        let until = std::time::Instant::now() + every;
        while std::time::Instant::now() < until {
            if shard.stopping.get() {
                return;
            }
            glommio::timer::sleep(Duration::from_millis(250).min(every)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sys_tree() {
        assert!(is_sys_topic("$SYS/broker/uptime"));
        assert!(is_sys_topic("$SYS"));
        assert!(!is_sys_topic("$SYSTEM/x"));
        assert!(!is_sys_topic("a/$SYS/x"));
    }

    #[test]
    fn only_changed_values_are_republished_and_loads_follow_the_rate() {
        let mut s = SysState::default();
        let mut t = Totals {
            connected: 2,
            ..Totals::default()
        };
        let first = s.round(&t, 1, 0.0);
        assert!(first
            .iter()
            .any(|(k, v)| k == "$SYS/broker/clients/connected" && v == "2"));
        assert!(!first.iter().any(|(k, _)| k.contains("/load/")));
        t.msgs_in = 600; // 600 in 60 s: 600 per minute
        let second = s.round(&t, 61, 60.0);
        assert!(!second
            .iter()
            .any(|(k, _)| k == "$SYS/broker/clients/connected"));
        assert!(second.iter().any(|(k, _)| k == "$SYS/broker/uptime"));
        let one_min = second
            .iter()
            .find(|(k, _)| k == "$SYS/broker/load/messages/received/1min")
            .map(|(_, v)| v.parse::<f64>().unwrap())
            .unwrap();
        // 600 * (1 - e^-1) = 379.27
        assert!((one_min - 379.27).abs() < 0.01, "{one_min}");
    }
}

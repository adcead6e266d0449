//! The Prometheus text exposition (format 0.0.4) of the shards' snapshots.
//!
//! Names are `ringmq_*`; counters end in `_total`, sizes in `_bytes`, times in `_seconds`.
//! Counters are summed over shards unless they describe one shard's traffic (the mesh);
//! gauges of a shard's state carry `shard="N"`. Counters that are one reason (or QoS) of
//! a family are exported as one sample of that family — `dropped_queue_full` is
//! `ringmq_messages_dropped_total{reason="queue_full"}` — and every other counter of
//! [`Metrics`] as `ringmq_<name>_total`, with its doc comment as help. Pure: the HTTP
//! thread calls [`render`] on copies of the slots.

use std::fmt::Write;

use super::stats::{Board, HistSnap, ShardSnapshot};
use crate::metrics::{Histogram, Metrics};

/// Counters exported as one labelled sample of a family: (counter, family, label, value).
const LABELLED: &[(&str, &str, &str, &str)] = &[
    (
        "connections_refused_limit",
        "connections_rejected",
        "reason",
        "max_connections",
    ),
    (
        "connections_refused_listener_limit",
        "connections_rejected",
        "reason",
        "listener_max_connections",
    ),
    (
        "connections_refused_rate_ip",
        "connections_rejected",
        "reason",
        "rate_per_ip",
    ),
    (
        "tls_handshake_failures",
        "connections_rejected",
        "reason",
        "tls_handshake",
    ),
    (
        "connect_failures",
        "connections_rejected",
        "reason",
        "connect_failed",
    ),
    (
        "connections_refused_address",
        "connections_rejected",
        "reason",
        "address",
    ),
    (
        "proxy_untrusted",
        "connections_rejected",
        "reason",
        "proxy_untrusted",
    ),
    (
        "proxy_header_errors",
        "connections_rejected",
        "reason",
        "proxy_header",
    ),
    (
        "ws_upgrades_refused",
        "connections_rejected",
        "reason",
        "ws_upgrade",
    ),
    (
        "dropped_queue_full",
        "messages_dropped",
        "reason",
        "queue_full",
    ),
    (
        "dropped_qos0_evicted",
        "messages_dropped",
        "reason",
        "qos0_evicted",
    ),
    ("dropped_expired", "messages_dropped", "reason", "expired"),
    (
        "dropped_too_large_for_client",
        "messages_dropped",
        "reason",
        "too_large",
    ),
    (
        "dropped_no_subscribers",
        "messages_dropped",
        "reason",
        "no_subscribers",
    ),
    ("deliveries_denied_acl", "messages_dropped", "reason", "acl"),
    (
        "dropped_shared_no_member",
        "messages_dropped",
        "reason",
        "shared_no_member",
    ),
    (
        "dropped_retained_full",
        "messages_dropped",
        "reason",
        "retained_full",
    ),
    ("publishes_denied_acl", "publishes_refused", "reason", "acl"),
    (
        "publishes_denied_sys",
        "publishes_refused",
        "reason",
        "sys_topic",
    ),
    (
        "publishes_refused",
        "publishes_refused",
        "reason",
        "not_supported",
    ),
    (
        "publishes_refused_disk_full",
        "publishes_refused",
        "reason",
        "disk_full",
    ),
    (
        "topic_name_over_limit",
        "publishes_refused",
        "reason",
        "topic_over_limit",
    ),
    (
        "auth_refused_anonymous",
        "auth_refused",
        "reason",
        "anonymous",
    ),
    (
        "auth_refused_credentials",
        "auth_refused",
        "reason",
        "credentials",
    ),
    (
        "auth_refused_not_authorized",
        "auth_refused",
        "reason",
        "not_authorized",
    ),
    (
        "auth_refused_unavailable",
        "auth_refused",
        "reason",
        "unavailable",
    ),
    ("auth_refused_busy", "auth_refused", "reason", "busy"),
    (
        "subscriptions_refused",
        "subscriptions_refused",
        "reason",
        "max_subscriptions",
    ),
    (
        "subscriptions_denied_acl",
        "subscriptions_refused",
        "reason",
        "acl",
    ),
    (
        "topic_filter_over_limit",
        "subscriptions_refused",
        "reason",
        "filter_over_limit",
    ),
    ("bytes_received", "network_received_bytes", "", ""),
    ("bytes_sent", "network_sent_bytes", "", ""),
    ("publishes_in", "messages_received", "qos", ""),
    ("publishes_out", "messages_sent", "qos", ""),
    ("publish_bytes_in", "payload_received_bytes", "qos", ""),
    ("publish_bytes_out", "payload_sent_bytes", "qos", ""),
];

/// Per-shard counters (the mesh): (counter, family, extra label).
const PER_SHARD: &[(&str, &str, &str)] = &[
    (
        "mesh_data_received",
        "mesh_messages_received",
        "mesh=\"data\"",
    ),
    (
        "mesh_ctrl_received",
        "mesh_messages_received",
        "mesh=\"ctrl\"",
    ),
    ("mesh_bytes_sent", "mesh_sent_bytes", ""),
    ("mesh_bytes_received", "mesh_received_bytes", ""),
];

/// Help of the families made of several counters.
const FAMILY_HELP: &[(&str, &str)] = &[
    (
        "connections_rejected",
        "Connections refused or closed before CONNACK, by reason.",
    ),
    (
        "messages_dropped",
        "Messages not delivered (or not stored), by reason.",
    ),
    ("publishes_refused", "PUBLISH packets refused, by reason."),
    (
        "auth_refused",
        "CONNECT authentications refused, by reason.",
    ),
    ("subscriptions_refused", "Subscriptions refused, by reason."),
    (
        "network_received_bytes",
        "Bytes read from connected clients (MQTT bytes, after TLS).",
    ),
    (
        "network_sent_bytes",
        "Bytes written to connected clients (MQTT bytes, before TLS).",
    ),
    (
        "messages_received",
        "PUBLISH packets received from clients, by QoS.",
    ),
    (
        "messages_sent",
        "PUBLISH packets written to clients, by QoS (of the delivery).",
    ),
    (
        "payload_received_bytes",
        "Payload bytes of PUBLISH packets received, by QoS.",
    ),
    (
        "payload_sent_bytes",
        "Payload bytes of PUBLISH packets written, by QoS.",
    ),
    (
        "mesh_messages_received",
        "Items received from other shards, by shard and mesh.",
    ),
    (
        "mesh_sent_bytes",
        "Payload bytes of publications forwarded to other shards.",
    ),
    (
        "mesh_received_bytes",
        "Payload bytes of publications received from other shards.",
    ),
];

/// A sample: (sample name, labels, value).
type Sample = (String, String, String);

/// Families in the order they are written, each with its type, help and samples.
#[derive(Default)]
struct Families {
    list: Vec<(String, &'static str, String, Vec<Sample>)>,
}

impl Families {
    /// A sample named `sample` (the family's name, or a histogram's `_bucket`, `_sum`,
    /// `_count`) of family `name`, which is created at its first sample.
    fn sample(
        &mut self,
        name: &str,
        kind: &'static str,
        help: &str,
        sample: &str,
        labels: String,
        v: String,
    ) {
        let full = format!("ringmq_{name}");
        let i = match self.list.iter().position(|f| f.0 == full) {
            Some(i) => i,
            None => {
                self.list
                    .push((full, kind, help.trim().to_string(), Vec::new()));
                self.list.len() - 1
            }
        };
        self.list[i].3.push((format!("ringmq_{sample}"), labels, v));
    }

    fn counter(&mut self, name: &str, help: &str, labels: String, v: u64) {
        let name = format!("{name}_total");
        self.sample(&name, "counter", help, &name, labels, v.to_string());
    }

    fn gauge(&mut self, name: &str, help: &str, labels: String, v: impl ToString) {
        self.sample(name, "gauge", help, name, labels, v.to_string());
    }

    fn histogram(&mut self, name: &str, help: &str, h: &HistSnap) {
        let mut cumulative = 0;
        let bucket = format!("{name}_bucket");
        for (i, n) in h.buckets.iter().enumerate() {
            cumulative += n;
            let le = match Histogram::upper_seconds(i) {
                Some(b) => b.to_string(),
                None => "+Inf".into(),
            };
            let labels = format!("le=\"{le}\"");
            self.sample(
                name,
                "histogram",
                help,
                &bucket,
                labels,
                cumulative.to_string(),
            );
        }
        let sum = (h.sum_us as f64 / 1e6).to_string();
        self.sample(
            name,
            "histogram",
            help,
            &format!("{name}_sum"),
            String::new(),
            sum,
        );
        let count = cumulative.to_string();
        self.sample(
            name,
            "histogram",
            help,
            &format!("{name}_count"),
            String::new(),
            count,
        );
    }

    fn write(self, out: &mut String) {
        for (name, kind, help, samples) in self.list {
            let help = help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (sample, labels, v) in samples {
                if labels.is_empty() {
                    let _ = writeln!(out, "{sample} {v}");
                } else {
                    let _ = writeln!(out, "{sample}{{{labels}}} {v}");
                }
            }
        }
    }
}

/// One line of help from a counter's doc comment.
fn doc_help(doc: &str) -> String {
    doc.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The exposition of `snaps` (one per shard, index = shard id) and the board's own figures.
pub fn render(board: &Board, snaps: &[ShardSnapshot], open_connections: usize) -> String {
    let mut f = Families::default();
    f.gauge(
        "build_info",
        "The broker's version (value 1).",
        format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
        1,
    );
    f.gauge(
        "uptime_seconds",
        "Seconds since the broker started.",
        String::new(),
        board.started.elapsed().as_secs(),
    );
    f.gauge(
        "connections_open",
        "Client sockets open (counted against max_connections, CONNECT not yet needed).",
        String::new(),
        open_connections,
    );
    // Counters summed over shards.
    let mut totals = vec![0u64; Metrics::KEYS.len()];
    for s in snaps {
        for (t, v) in totals.iter_mut().zip(&s.counters) {
            *t += v;
        }
    }
    for (i, (name, qos, doc)) in Metrics::KEYS.iter().enumerate() {
        if PER_SHARD.iter().any(|p| p.0 == *name) {
            continue;
        }
        let v = totals[i];
        match LABELLED.iter().find(|l| l.0 == *name) {
            Some((_, fam, label, value)) => {
                let help = FAMILY_HELP
                    .iter()
                    .find(|h| h.0 == *fam)
                    .map_or(String::new(), |h| h.1.to_string());
                let labels = match (qos, *label) {
                    (Some(q), l) => format!("{l}=\"{q}\""),
                    (None, "") => String::new(),
                    (None, l) => format!("{l}=\"{value}\""),
                };
                f.counter(fam, &help, labels, v);
            }
            None => f.counter(name, &doc_help(doc), String::new(), v),
        }
    }
    // Per-shard counters and gauges.
    for (shard, s) in snaps.iter().enumerate() {
        let sl = format!("shard=\"{shard}\"");
        for (name, fam, extra) in PER_SHARD {
            let help = FAMILY_HELP.iter().find(|h| h.0 == *fam).map_or("", |h| h.1);
            let labels = if extra.is_empty() {
                sl.clone()
            } else {
                format!("{sl},{extra}")
            };
            f.counter(fam, help, labels, s.counter(name, None));
        }
        let g = &s.gauges;
        let help = "Items queued for other shards, by shard and mesh.";
        f.counter(
            "mesh_messages_sent",
            help,
            format!("{sl},mesh=\"data\""),
            g.data_sent,
        );
        f.counter(
            "mesh_messages_sent",
            help,
            format!("{sl},mesh=\"ctrl\""),
            g.ctrl_sent,
        );
        let help = "Items waiting in a shard's outboxes to other shards, by mesh.";
        f.gauge(
            "mesh_outbox_messages",
            help,
            format!("{sl},mesh=\"data\""),
            g.data_outbox,
        );
        f.gauge(
            "mesh_outbox_messages",
            help,
            format!("{sl},mesh=\"ctrl\""),
            g.ctrl_outbox,
        );
        let gauges: [(&str, &str, u64); 11] = [
            (
                "connections",
                "Client connections served (after CONNECT).",
                g.connections,
            ),
            (
                "sessions",
                "Sessions whose home is the shard (online and offline).",
                g.sessions,
            ),
            (
                "subscriptions",
                "Subscriptions of the shard's sessions.",
                g.subscriptions,
            ),
            (
                "local_filters",
                "Distinct filters with subscribers on the shard.",
                g.local_filters,
            ),
            (
                "route_filters",
                "Filters in the shard's replica of the route table.",
                g.route_filters,
            ),
            (
                "retained_messages",
                "Retained messages the shard owns.",
                g.retained,
            ),
            (
                "retained_bytes",
                "Payload bytes of the shard's retained messages.",
                g.retained_bytes,
            ),
            (
                "queued_messages",
                "Messages queued in the shard's sessions, not yet sent.",
                g.queued,
            ),
            (
                "queued_bytes",
                "Payload bytes queued in the shard's sessions.",
                g.queued_bytes,
            ),
            (
                "inflight_messages",
                "QoS 1/2 messages sent, not yet acknowledged.",
                g.inflight,
            ),
            (
                "stats_snapshot_microseconds",
                "Time the shard took for its last stats snapshot.",
                g.snapshot_us,
            ),
        ];
        for (name, help, v) in gauges {
            f.gauge(name, help, sl.clone(), v);
        }
        let age = board.heartbeat_age_ms(shard) as f64 / 1e3;
        let help = "Seconds since the shard's ticker last ran (a stuck shard grows it).";
        f.gauge("shard_heartbeat_age_seconds", help, sl.clone(), age);
        let help = "1 when the shard accepts connections on every listener.";
        let listening = board.phase(shard) == super::Phase::Listening;
        f.gauge("shard_ready", help, sl.clone(), u8::from(listening));
        if let Some(j) = &s.journal {
            let help = "Bytes of log records in the segments still kept (not yet retired).";
            f.gauge("journal_live_bytes", help, sl.clone(), j.live_bytes);
        }
    }
    // The durable log, summed over shards.
    let journals: Vec<_> = snaps.iter().filter_map(|s| s.journal).collect();
    if !journals.is_empty() {
        let sum = |g: fn(&super::stats::JournalSnap) -> u64| journals.iter().map(g).sum::<u64>();
        let counters: [(&str, &str, u64); 7] = [
            (
                "journal_records",
                "Records appended to the durable log.",
                sum(|j| j.records),
            ),
            (
                "journal_written_bytes",
                "Bytes appended to the durable log.",
                sum(|j| j.bytes_written),
            ),
            (
                "journal_snapshots",
                "Snapshots (compactions) completed.",
                sum(|j| j.snapshots),
            ),
            (
                "journal_segments_created",
                "Log segments created.",
                sum(|j| j.segments_made),
            ),
            (
                "journal_segments_retired",
                "Log segments deleted after a snapshot.",
                sum(|j| j.segments_retired),
            ),
            (
                "journal_segment_waits",
                "Appends that waited for a segment to be made.",
                sum(|j| j.segment_waits),
            ),
            (
                "journal_records_lost",
                "Records the log refused (disk full or after a flush error).",
                sum(|j| j.lost),
            ),
        ];
        for (name, help, v) in counters {
            f.counter(name, help, String::new(), v);
        }
        let mut append = HistSnap::default();
        let mut sync = HistSnap::default();
        for j in &journals {
            append.merge(&j.append);
            sync.merge(&j.sync);
        }
        let help = "Time to append one record to the durable log (a segment roll included).";
        f.histogram("journal_append_seconds", help, &append);
        let help = "Time of one durable-log flush (fdatasync, group commit).";
        f.histogram("journal_sync_seconds", help, &sync);
    }
    let help = "Log lines dropped because stderr did not keep up (the log queue was full).";
    f.counter(
        "log_lines_dropped",
        help,
        String::new(),
        crate::logging::dropped_lines(),
    );
    let help = "Ops HTTP connections closed unanswered: too many at once.";
    let refused = board
        .http_refused
        .load(std::sync::atomic::Ordering::Relaxed);
    f.counter("http_refused", help, String::new(), refused);
    let mut out = String::with_capacity(32 * 1024);
    f.write(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_labelled_counter_exists_and_output_is_well_formed() {
        let names: Vec<&str> = Metrics::KEYS.iter().map(|k| k.0).collect();
        for l in LABELLED {
            assert!(names.contains(&l.0), "{} is not a counter", l.0);
        }
        for p in PER_SHARD {
            assert!(names.contains(&p.0), "{} is not a counter", p.0);
        }
        let board = Board::new(2);
        let m = Metrics::default();
        Metrics::inc(&m.dropped_queue_full);
        let mut snap = ShardSnapshot {
            taken: true,
            ..Default::default()
        };
        m.values_into(&mut snap.counters);
        let text = render(&board, &[snap.clone(), snap], 3);
        assert!(text.contains("ringmq_messages_dropped_total{reason=\"queue_full\"} 2\n"));
        assert!(text.contains("ringmq_connections_open 3\n"));
        assert!(text.contains("ringmq_sessions{shard=\"1\"} 0\n"));
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(typed.insert(rest.split(' ').next().unwrap().to_string()));
            }
        }
    }
}

//! Per-shard counters: plain `Cell`s (no atomics, no sharing), and the latency histogram
//! type the journal records into. Every limit the broker enforces has a counter here, so a
//! drop is never silent. Counting is one `Cell` add on the hot path; the shard's ticker
//! copies them into its slot of the stats board ([`crate::ops::stats`]) every
//! `stats_interval_ms`, from where `/metrics`, `$SYS` and the shutdown log read them.
//!
//! Owned by one shard.

use std::cell::Cell;

/// QoS levels a per-QoS counter is split into.
pub const QOS_LEVELS: usize = 3;

macro_rules! counters {
    (
        $( $(#[doc = $doc:literal])* $name:ident ),* $(,)?
        ; per_qos: $( $(#[doc = $qdoc:literal])* $qname:ident ),* $(,)?
    ) => {
        /// Owned by one shard.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[doc = $doc])* pub $name: Cell<u64>, )*
            $( $(#[doc = $qdoc])* pub $qname: [Cell<u64>; QOS_LEVELS], )*
        }

        impl Metrics {
            /// Every counter as (name, QoS for a per-QoS counter, help), in the order of
            /// [`Metrics::values_into`].
            pub const KEYS: &'static [(&'static str, Option<u8>, &'static str)] = &[
                $( (stringify!($name), None, concat!($($doc),*)), )*
                $(
                    (stringify!($qname), Some(0), concat!($($qdoc),*)),
                    (stringify!($qname), Some(1), concat!($($qdoc),*)),
                    (stringify!($qname), Some(2), concat!($($qdoc),*)),
                )*
            ];

            /// Copy every counter into `out` (cleared first), in the order of [`Metrics::KEYS`].
            pub fn values_into(&self, out: &mut Vec<u64>) {
                out.clear();
                $( out.push(self.$name.get()); )*
                $( out.extend(self.$qname.iter().map(Cell::get)); )*
            }

            /// (name, value) for every counter (per-QoS ones as `name_qosN`).
            pub fn snapshot(&self) -> Vec<(String, u64)> {
                let mut v = Vec::new();
                self.values_into(&mut v);
                Self::KEYS
                    .iter()
                    .zip(v)
                    .map(|((n, q, _), v)| match q {
                        Some(q) => (format!("{n}_qos{q}"), v),
                        None => ((*n).to_string(), v),
                    })
                    .collect()
            }
        }
    };
}

counters! {
    /// TCP connections accepted.
    connections_accepted,
    /// Connections refused because `max_connections` was reached.
    connections_refused_limit,
    /// Connections refused because their listener's `max_connections` was reached.
    connections_refused_listener_limit,
    /// Connections closed at accept: their source address exceeded `connection_rate_per_ip`.
    connections_refused_rate_ip,
    /// Connections closed: their (real) client address is in `deny_from` or outside `allow_from`.
    connections_refused_address,
    /// Connections closed on a `proxy_protocol` listener: the peer is outside `proxy_trusted`.
    proxy_untrusted,
    /// Connections closed on a `proxy_protocol` listener: no valid PROXY header (missing,
    /// malformed, over `max_proxy_header_size`, or not complete within `connect_timeout`).
    proxy_header_errors,
    /// PROXY v2 LOCAL connections (load-balancer health checks) closed before sending a byte.
    proxy_health_checks,
    /// Times a listener's accept loop paused because `connection_rate` was reached.
    accept_rate_limited,
    /// TLS handshakes that failed (bad certificate, protocol error, no client certificate).
    tls_handshake_failures,
    /// Connections closed before/instead of a valid CONNECT (timeout, bad first packet).
    connect_failures,
    /// Enhanced authentications (and re-authentications) that succeeded.
    auth_success,
    /// Authentications refused or broken off: enhanced (and re-authentication), and CONNECT
    /// user name/password (every `auth_refused_*` below).
    auth_failures,
    /// Connections handed to their home shard after CONNECT.
    handoffs,
    /// Sessions whose client id took over a live connection.
    takeovers,
    /// Connections closed for a protocol violation or malformed packet.
    protocol_errors,
    /// Packets rejected for exceeding `max_packet_size`.
    packets_too_large,
    /// Connections closed by the keep-alive timer.
    keepalive_timeouts,
    /// Messages dropped because a session queue was full.
    dropped_queue_full,
    /// Queued QoS 0 messages evicted to make room.
    dropped_qos0_evicted,
    /// Retained messages not stored because `max_retained` was reached.
    dropped_retained_full,
    /// Shared-subscription messages dropped: no member of the group left to take them.
    dropped_shared_no_member,
    /// Unacknowledged messages of a departed shared-subscription member re-sent to another.
    shared_redelivered,
    /// Subscriptions refused because `max_subscriptions` was reached.
    subscriptions_refused,
    /// PUBLISH and will topic names refused for exceeding `max_topic_length` / `max_topic_levels`.
    topic_name_over_limit,
    /// Topic filters (SUBSCRIBE) refused for exceeding `max_topic_length` / `max_topic_levels`.
    topic_filter_over_limit,
    /// Times a client's reading paused because it published faster than `max_publish_rate`.
    publish_rate_throttled,
    /// Will messages published.
    wills_published,
    /// Delayed wills cancelled because the session was resumed in time (5.0).
    wills_cancelled,
    /// Offline sessions removed when their Session Expiry Interval ran out.
    sessions_expired,
    /// Queued messages dropped because their Message Expiry Interval ran out (5.0).
    dropped_expired,
    /// Retained messages removed because their Message Expiry Interval ran out (5.0).
    retained_expired,
    /// Messages not sent to a client because the packet exceeded its Maximum Packet Size.
    dropped_too_large_for_client,
    /// Connections closed for exceeding the Receive Maximum (5.0, 0x93).
    receive_maximum_exceeded,
    /// Connections closed for an invalid topic alias (5.0, 0x94 / 0x82).
    topic_alias_errors,
    /// Publishes refused: QoS above `maximum_qos` or RETAIN with `retain_available` off.
    publishes_refused,
    /// QoS 1/2 publishes refused because the durable log had no space (5.0: 0x97).
    publishes_refused_disk_full,
    /// Times a publisher paused reading because the cross-shard outbox was over budget.
    mesh_backpressure,
    /// Times a connection paused reading because its write buffer was over budget.
    write_backpressure,
    /// Times an online session's queue crossed half its limit (its publishers pause).
    congestions,
    /// Times a publisher paused reading for a congested subscriber.
    publisher_pauses,
    /// Sessions declared slow consumers (congested past `slow_consumer_ms`).
    slow_consumers,
    /// PUBLISH packets refused by the ACL (5.0: PUBACK/PUBREC 0x87; 3.1.x: dropped, acked).
    publishes_denied_acl,
    /// SUBSCRIBE filters refused by the ACL (SUBACK 0x87 / 0x80).
    subscriptions_denied_acl,
    /// Will messages not published because the ACL refused their topic.
    wills_denied_acl,
    /// Messages not delivered to a session because the ACL refused it read access.
    deliveries_denied_acl,
    /// Idle connections parked (tasks dropped, socket watched by the shard's epoll set).
    parks,
    /// Parked connections resumed (input, messages to send, or close).
    unparks,
    /// CONNECT user name/password checks that succeeded (argon2 run or cache hit).
    auth_password_success,
    /// Password checks answered from the cache of recent successes (no argon2 run).
    auth_cache_hits,
    /// Cache entries dropped to make room (`auth_cache_size` reached).
    auth_cache_evictions,
    /// Refused: no user name and anonymous clients not allowed (0x05 / 0x87).
    auth_refused_anonymous,
    /// Refused: wrong password or unknown user (0x04 / 0x86).
    auth_refused_credentials,
    /// Refused: the back end does not authorize the client (0x05 / 0x87).
    auth_refused_not_authorized,
    /// Refused: the back end could not decide (0x03 / 0x88).
    auth_refused_unavailable,
    /// Refused: `auth_verify_queue` checks already waiting on the shard (0x03 / 0x89).
    auth_refused_busy,
    /// Login attempts whose answer was delayed for earlier failures from their address.
    auth_throttled,
    /// Addresses forgotten by the throttle to make room (`auth_throttle_entries` reached).
    auth_throttle_evictions,
    // ---- operations (issue 7: /metrics, $SYS) ----
    /// Bytes read from client sockets once connected (after TLS: MQTT bytes).
    bytes_received,
    /// Bytes written to client sockets once connected (before TLS: MQTT bytes).
    bytes_sent,
    /// Publishes accepted from clients that matched no subscription (retained ones are
    /// still stored).
    dropped_no_subscribers,
    /// PUBLISH packets (and wills) refused because clients may not publish to `$SYS/...`
    /// (5.0 0x87; 3.1.x acknowledged and dropped).
    publishes_denied_sys,
    /// Data-mesh items (publications, barriers) received from other shards.
    mesh_data_received,
    /// Payload bytes of publications forwarded to other shards.
    mesh_bytes_sent,
    /// Payload bytes of publications received from other shards.
    mesh_bytes_received,
    /// Control-mesh messages received from other shards.
    mesh_ctrl_received,
    /// WebSocket upgrades accepted (`websocket = true` listeners).
    ws_upgrades,
    /// WebSocket upgrade requests refused (400/404/405/426/431 answered, then closed).
    ws_upgrades_refused,
    /// WebSocket connections closed for a frame-level violation (unmasked or text frame,
    /// bad fragmentation or control frame, frame over the limit...).
    ws_protocol_errors,
    ; per_qos:
    /// PUBLISH packets received from clients.
    publishes_in,
    /// PUBLISH packets written to clients.
    publishes_out,
    /// Payload bytes of PUBLISH packets received from clients.
    publish_bytes_in,
    /// Payload bytes of PUBLISH packets written to clients.
    publish_bytes_out,
}

impl Metrics {
    pub fn inc(c: &Cell<u64>) {
        c.set(c.get() + 1);
    }

    pub fn add(c: &Cell<u64>, n: u64) {
        c.set(c.get() + n);
    }
}

/// Buckets of a [`Histogram`]: bucket `i` counts observations below 2^i microseconds
/// (bucket 0: under 1 µs); the last one also takes everything longer (+Inf).
pub const HIST_BUCKETS: usize = 26;

/// A latency histogram with power-of-two microsecond buckets: recording is a
/// leading-zero count and two `Cell` adds. Owned by one shard.
#[derive(Debug, Default)]
pub struct Histogram {
    pub buckets: [Cell<u64>; HIST_BUCKETS],
    /// Sum of the observations, in microseconds.
    pub sum_us: Cell<u64>,
}

impl Histogram {
    /// Record one observation of `us` microseconds.
    pub fn record_us(&self, us: u64) {
        let i = (64 - us.leading_zeros() as usize).min(HIST_BUCKETS - 1);
        Metrics::inc(&self.buckets[i]);
        Metrics::add(&self.sum_us, us);
    }

    /// Upper bound of bucket `i` in seconds (`None`: the last, +Inf).
    pub fn upper_seconds(i: usize) -> Option<f64> {
        (i + 1 < HIST_BUCKETS).then(|| (1u64 << i) as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bucket_i_holds_values_below_its_bound() {
        let h = Histogram::default();
        for us in [0, 1, 2, 3, 4, 1000, u64::MAX / 2] {
            h.record_us(us);
        }
        let counts: Vec<u64> = h.buckets.iter().map(Cell::get).collect();
        // 0 -> [0,1); 1 -> [1,2); 2,3 -> [2,4); 4 -> [4,8); 1000 -> [512,1024); huge -> +Inf.
        assert_eq!(&counts[..4], &[1, 1, 2, 1]);
        assert_eq!(counts[10], 1);
        assert_eq!(counts[HIST_BUCKETS - 1], 1);
        for (i, c) in counts.iter().enumerate() {
            if let Some(b) = Histogram::upper_seconds(i) {
                assert!(*c == 0 || b > 0.0);
            }
        }
        assert_eq!(Histogram::upper_seconds(0), Some(1e-6));
        assert_eq!(Histogram::upper_seconds(HIST_BUCKETS - 1), None);
    }

    #[test]
    fn keys_and_values_line_up() {
        let m = Metrics::default();
        Metrics::inc(&m.publishes_in[2]);
        let mut v = Vec::new();
        m.values_into(&mut v);
        assert_eq!(v.len(), Metrics::KEYS.len());
        let i = Metrics::KEYS
            .iter()
            .position(|k| k.0 == "publishes_in" && k.1 == Some(2))
            .unwrap();
        assert_eq!(v[i], 1);
        assert!(Metrics::KEYS.iter().all(|k| !k.2.is_empty()));
    }
}

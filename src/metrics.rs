//! Per-shard counters: plain `Cell`s (no atomics, no sharing). Every limit the broker
//! enforces has a counter here, so a drop is never silent. Totals are logged at shutdown;
//! the scrape endpoint and `$SYS` topics come with the operations work.
//!
//! Owned by one shard.

use std::cell::Cell;

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Owned by one shard.
        #[derive(Debug, Default)]
        pub struct Metrics { $( $(#[$doc])* pub $name: Cell<u64>, )* }

        impl Metrics {
            /// (name, value) for every counter.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![ $( (stringify!($name), self.$name.get()), )* ]
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
    /// PUBLISH packets received from clients.
    publishes_in,
    /// PUBLISH packets written to clients.
    publishes_out,
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
    /// WebSocket upgrades accepted (`websocket = true` listeners).
    ws_upgrades,
    /// WebSocket upgrade requests refused (400/404/405/426/431 answered, then closed).
    ws_upgrades_refused,
    /// WebSocket connections closed for a frame-level violation (unmasked or text frame,
    /// bad fragmentation or control frame, frame over the limit...).
    ws_protocol_errors,
}

impl Metrics {
    pub fn inc(c: &Cell<u64>) {
        c.set(c.get() + 1);
    }
}

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
    /// Connections closed before/instead of a valid CONNECT (timeout, bad first packet).
    connect_failures,
    /// Enhanced authentications (and re-authentications) that succeeded.
    auth_success,
    /// Enhanced authentications (and re-authentications) refused or broken off.
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
    /// Idle connections parked (tasks dropped, socket watched by the shard's epoll set).
    parks,
    /// Parked connections resumed (input, messages to send, or close).
    unparks,
}

impl Metrics {
    pub fn inc(c: &Cell<u64>) {
        c.set(c.get() + 1);
    }
}

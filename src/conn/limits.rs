//! Per-client limits on what a client may send: topic length and depth (`max_topic_length`,
//! `max_topic_levels`) of PUBLISH, will and SUBSCRIBE topics, and the publish rate
//! (`max_publish_rate`).
//!
//! The publish rate is a GCRA token bucket (the "virtual scheduling" form): one timestamp
//! per connection, the theoretical arrival time of the next publish, advanced by one
//! emission interval per publish. Up to one second's worth of publishes may arrive at once;
//! beyond that the reader pauses until the bucket has room again. Nothing is dropped and
//! nothing already acknowledged is lost: the client's bytes wait in its socket, so TCP pushes
//! back on the device. O(1) per publish and no timer unless a client is actually over its
//! rate (then one sleep of at most one emission interval).
//!
//! Owned by the connection's home shard (state lives in [`Conn`]).

use super::*;
use crate::proto::topic::{check_limits, TopicError};

/// Microseconds in the burst: one second's worth of publishes.
const BURST_US: u64 = 1_000_000;

/// `topic` against the configured length and level limits.
pub(super) fn topic_within_limits(shard: &Shard, topic: &str) -> Result<(), TopicError> {
    check_limits(
        topic,
        shard.cfg.max_topic_length,
        shard.cfg.max_topic_levels,
    )
}

/// A CONNECT whose will topic is over the topic limits is refused before the will is kept:
/// 5.0 CONNACK 0x90 Topic Name invalid ("the Will Topic is not malformed, but is not accepted
/// by this Server", §3.2.2.2); 3.1.x has no return code for it, the connection is closed.
/// `true`: refused (the caller drops the connection).
pub(super) async fn refuse_will_over_limit(shard: &Shard, io: &Io, c: &Connect) -> bool {
    let Some(will) = &c.will else {
        return false;
    };
    let Err(e) = topic_within_limits(shard, &will.topic) else {
        return false;
    };
    Metrics::inc(&shard.metrics.topic_name_over_limit);
    tracing::info!(peer = ?io.peer_addr(), "connection refused: will topic: {e}");
    if c.protocol.is_v5() {
        let mut out = BytesMut::new();
        let ack = Packet::ConnAck(ConnAck {
            session_present: false,
            code: reason::TOPIC_NAME_INVALID,
            properties: Default::default(),
        });
        if encode(&ack, c.protocol, &mut out).is_ok() {
            let _ = with_timeout(Duration::from_secs(1), io.write_all(&out)).await;
        }
    }
    true
}

/// Charges one publish to the bucket whose theoretical arrival time is `tat` (µs), at
/// `now_us`, for `rate` publishes per second (not 0). Returns how long the sender must wait,
/// in µs, before its next publish is taken (0: within its rate).
pub fn charge(tat: &mut u64, now_us: u64, rate: u32) -> u64 {
    let interval = (1_000_000 / u64::from(rate)).max(1);
    *tat = (*tat).max(now_us) + interval;
    (*tat - now_us).saturating_sub(BURST_US)
}

/// Microseconds since the first call in this process (the publish-rate clock).
fn clock_us() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_micros() as u64
}

/// Charges a publish from `conn` to its rate bucket: `Some(wait)` when the reader must pause
/// before the next one (`max_publish_rate` exceeded), `None` otherwise or with no limit.
pub(super) fn publish_delay(shard: &Shard, conn: &Conn) -> Option<Duration> {
    let rate = shard.cfg.max_publish_rate;
    if rate == 0 {
        return None;
    }
    let mut tat = conn.publish_tat.get();
    let wait = charge(&mut tat, clock_us(), rate);
    conn.publish_tat.set(tat);
    (wait > 0).then(|| Duration::from_micros(wait))
}

/// Pauses the reader of a client over its publish rate: acknowledgements already earned go
/// out first, then nothing more is read for `wait`. `false`: the connection must end (the
/// log failed, or the connection was killed meanwhile).
pub(super) async fn throttle(shard: &Shard, conn: &Conn, held: &mut Held, wait: Duration) -> bool {
    Metrics::inc(&shard.metrics.publish_rate_throttled);
    if !release_acks(shard, conn, held).await {
        conn.send_disconnect(reason::UNSPECIFIED_ERROR);
        return false;
    }
    if !conn.out.borrow().is_empty() {
        conn.writer_wake.notify();
    }
    crate::rt::sleep(wait).await;
    // The client was sending all along; its pending bytes are not a silence.
    conn.last_seen.set(shard.now());
    !conn.killed.get()
}

#[cfg(test)]
mod tests {
    use super::charge;

    #[test]
    fn a_second_of_burst_then_paced_at_the_rate() {
        let mut tat = 0;
        let now = 5_000_000;
        for i in 0..10 {
            assert_eq!(charge(&mut tat, now, 10), 0, "publish {i} is in the burst");
        }
        assert_eq!(charge(&mut tat, now, 10), 100_000);
        // 100 ms later there is room for exactly one more, then the wait grows again.
        let mut t2 = tat;
        assert_eq!(charge(&mut t2, now + 200_000, 10), 0);
        assert_eq!(charge(&mut t2, now + 200_000, 10), 100_000);
    }

    #[test]
    fn an_idle_client_gets_its_burst_back_but_no_more() {
        let mut tat = 0;
        for _ in 0..50 {
            charge(&mut tat, 1_000, 50);
        }
        let later = 60_000_000;
        for _ in 0..50 {
            assert_eq!(charge(&mut tat, later, 50), 0);
        }
        assert!(charge(&mut tat, later, 50) > 0);
    }

    #[test]
    fn huge_rates_never_divide_to_zero_or_overflow() {
        let mut tat = 0;
        assert_eq!(charge(&mut tat, 1, u32::MAX), 0);
        assert_eq!(tat, 2);
        let mut tat = u64::MAX / 2;
        assert!(charge(&mut tat, 0, 1) > 0);
    }
}

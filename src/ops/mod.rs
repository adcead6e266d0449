//! Operations: what the broker tells its operators while it runs — the stats board every
//! shard publishes its counters and gauges to, the ops HTTP endpoint (`/metrics` in the
//! Prometheus text format, `/health`, `/ready`) and the `$SYS` topics.
//!
//! Shards count in plain `Cell`s ([`crate::metrics`]) and never wait for a reader: their
//! ticker copies the counters into the shard's slot of the [`Board`] every
//! `stats_interval_ms` (a short, uncontended lock held for a copy) and stores a heartbeat
//! (one atomic) every tick. Readers — the HTTP thread and shard 0's `$SYS` task — copy the
//! slots out and do their work outside the locks.
//!
//! | file | owns | lives on |
//! |---|---|---|
//! | `stats` | the board: per-shard slots (snapshot, heartbeat, start-up phase), taking a shard's snapshot | slots shared by every thread; written by their shard |
//! | `prom` | the Prometheus exposition of a set of snapshots | the HTTP thread |
//! | `http` | the ops HTTP/1.1 endpoint: bounded requests, a few connections at a time | its own std threads |
//! | `sys` | the `$SYS/...` values and their publication as retained QoS 0 messages | shard 0 |

pub mod http;
pub mod prom;
pub mod stats;
pub mod sys;

pub use stats::{Board, Phase};

/// Milliseconds on a process-wide monotonic clock (shared by every thread, unlike the
/// shards' own start instants): heartbeats and their age are compared on it.
pub fn clock_ms() -> u64 {
    use std::sync::OnceLock;
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 1
}

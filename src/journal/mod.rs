//! The durable log (issue 5): one append-only log per shard, so that persistent sessions,
//! their subscriptions, queued and in-flight QoS 1/2 messages, incoming QoS 2 state and
//! retained messages survive a crash and a restart.
//!
//! - [`record`]: framing (32-byte header with length, kind, flags, epoch, sequence, body
//!   and header CRC32C; `len == 0` ends the data) and the recovery scan. Pure.
//! - [`body`]: the record kinds and what each says. Pure.
//! - [`segment`]: fixed-size, fallocated, pre-mapped segment files and the per-shard
//!   thread that makes and deletes them (never the shard's thread).
//! - [`writer`]: the shard's single writer, durability modes and group commit (io_uring
//!   `fdatasync`), snapshots and segment retirement.
//! - [`recover`]: reading the last committed generation at start and placing its state on
//!   the shards of this run (any shard count).
//!
//! What is logged and when is decided by the shard (`shard/durable.rs`): a QoS ≥ 1 publish
//! is logged once on the shard that received it, before it is routed; the shards of its
//! persistent subscribers log small delivery records that refer to it by message id.
//! PUBACK/PUBREC/PUBCOMP and SUBACK wait until what they acknowledge is durable.
//!
//! Space: every so often (after `max(compact_bytes, 2 × the last snapshot)` of appends) a shard
//! writes a snapshot of its live state into a fresh segment — sessions, subscriptions,
//! deliveries, retained messages and every logged message still referenced anywhere (a
//! copy keeps its id) — flushes it and deletes every older segment. Disk use is therefore
//! bounded by about three times the live state plus the snapshot interval. A clean shutdown
//! writes a snapshot too, so the next start reads only live state.

pub mod body;
pub mod record;
pub mod recover;
pub mod segment;
pub mod writer;

pub use writer::{Journal, Mode, Refused};

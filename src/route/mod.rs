//! Routing: which shards and which local sessions a publish goes to.
//!
//! - [`trie`]: the topic-filter index both tables are built on.
//! - [`table`]: filter → shards (replicated on every shard).
//! - [`subs`]: filter → local sessions (owned by one shard).
//! - [`retain`]: retained messages (each topic owned by one shard).
//! - [`shared`]: shared subscriptions: per-shard member counts (replicated) and local
//!   members, with the balancing rules.
//! - [`cache`]: a bounded topic → match-result cache.

pub mod cache;
pub mod retain;
pub mod shared;
pub mod subs;
pub mod table;
pub mod trie;

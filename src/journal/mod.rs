//! The durable log (issue 5), one per shard: append-only segments of framed records.
//!
//! So far only the record format and the recovery scan exist ([`record`]), sans-IO and
//! tested against a `Vec` model with torn and corrupt tails; segments, the mapping, group
//! commit and recovery into sessions come next.

pub mod record;

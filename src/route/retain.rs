//! Retained messages: topic → last retained publication.
//!
//! Each topic's retained message is owned by shard hash(topic) % shards. A subscription
//! with a wildcard-free filter asks that one shard; a wildcard subscription asks every shard
//! (scatter/gather over the ctrl mesh). Wildcard queries scan this shard's store; an index
//! for very large retained sets is future work (noted in PERF.md).

use std::sync::Arc;

use ahash::AHashMap;

use crate::proto::topic::matches;
use crate::proto::Utf8Bytes;
use crate::session::Publication;

/// Owned by one shard.
#[derive(Debug, Default)]
pub struct RetainedStore {
    map: AHashMap<Utf8Bytes, Arc<Publication>>,
}

/// Outcome of [`RetainedStore::set`].
#[derive(Debug, PartialEq, Eq)]
pub enum RetainOutcome {
    Stored,
    Replaced,
    Deleted,
    /// The store is at its configured maximum and the topic is new: not stored.
    Full,
}

impl RetainedStore {
    /// Store, replace, or (empty payload) delete [MQTT-3.3.1-5, MQTT-3.3.1-10/11].
    pub fn set(&mut self, msg: Arc<Publication>, max: usize) -> RetainOutcome {
        if msg.payload.is_empty() {
            self.map.remove(&msg.topic);
            return RetainOutcome::Deleted;
        }
        if let Some(slot) = self.map.get_mut(&msg.topic) {
            *slot = msg;
            return RetainOutcome::Replaced;
        }
        if self.map.len() >= max {
            return RetainOutcome::Full;
        }
        self.map.insert(msg.topic.clone(), msg);
        RetainOutcome::Stored
    }

    /// Retained messages whose topic matches `filter`.
    pub fn lookup(&self, filter: &str, out: &mut Vec<Arc<Publication>>) {
        if !filter.contains(['+', '#']) {
            if let Some(m) = self.map.get(filter) {
                out.push(m.clone());
            }
            return;
        }
        out.extend(
            self.map
                .iter()
                .filter(|(t, _)| matches(filter, t.as_str()))
                .map(|(_, m)| m.clone()),
        );
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::QoS;
    use bytes::Bytes;

    fn p(topic: &str, payload: &'static [u8]) -> Arc<Publication> {
        Arc::new(Publication {
            topic: topic.into(),
            payload: Bytes::from_static(payload),
            qos: QoS::AtMostOnce,
            retain: true,
            props: None,
            origin: Utf8Bytes::default(),
            expiry: None,
        })
    }

    #[test]
    fn store_replace_delete_and_bound() {
        let mut s = RetainedStore::default();
        assert_eq!(s.set(p("a/b", b"1"), 2), RetainOutcome::Stored);
        assert_eq!(s.set(p("a/b", b"2"), 2), RetainOutcome::Replaced);
        assert_eq!(s.set(p("$SYS/x", b"3"), 2), RetainOutcome::Stored);
        assert_eq!(s.set(p("c", b"4"), 2), RetainOutcome::Full);
        let mut out = Vec::new();
        s.lookup("#", &mut out);
        assert_eq!(out.len(), 1, "MQTT-4.7.2-1: # does not match $SYS");
        assert_eq!(&out[0].payload[..], b"2");
        assert_eq!(s.set(p("a/b", b""), 2), RetainOutcome::Deleted);
        out.clear();
        s.lookup("a/b", &mut out);
        assert!(out.is_empty());
    }
}

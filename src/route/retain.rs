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
    /// Stored messages with a Message Expiry Interval (the purge scans only when > 0).
    expiring: usize,
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
            if let Some(old) = self.map.remove(&msg.topic) {
                self.expiring -= usize::from(old.expiry.is_some());
            }
            return RetainOutcome::Deleted;
        }
        let adds = usize::from(msg.expiry.is_some());
        if let Some(slot) = self.map.get_mut(&msg.topic) {
            self.expiring = self.expiring + adds - usize::from(slot.expiry.is_some());
            *slot = msg;
            return RetainOutcome::Replaced;
        }
        if self.map.len() >= max {
            return RetainOutcome::Full;
        }
        self.expiring += adds;
        self.map.insert(msg.topic.clone(), msg);
        RetainOutcome::Stored
    }

    /// Retained messages whose topic matches `filter`, leaving out expired ones
    /// [MQTT-3.3.2-5].
    pub fn lookup(&self, filter: &str, out: &mut Vec<Arc<Publication>>) {
        let now = crate::rt::LazyNow::default();
        let live = |m: &Arc<Publication>| m.expiry.is_none() || !m.expired(now.get());
        if !filter.contains(['+', '#']) {
            if let Some(m) = self.map.get(filter).filter(|m| live(m)) {
                out.push(m.clone());
            }
            return;
        }
        out.extend(
            self.map
                .iter()
                .filter(|(t, m)| matches(filter, t.as_str()) && live(m))
                .map(|(_, m)| m.clone()),
        );
    }

    /// Remove retained messages whose Message Expiry Interval ran out; returns how many.
    /// A scan of the store, done only while some stored message has an expiry.
    pub fn purge_expired(&mut self, now: std::time::Instant) -> usize {
        if self.expiring == 0 {
            return 0;
        }
        let before = self.map.len();
        self.map.retain(|_, m| !m.expired(now));
        let gone = before - self.map.len();
        self.expiring -= gone;
        gone
    }

    /// Every stored message (for snapshots of the durable log).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Publication>> {
        self.map.values()
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
        pe(topic, payload, None)
    }

    fn pe(
        topic: &str,
        payload: &'static [u8],
        expiry: Option<std::time::Instant>,
    ) -> Arc<Publication> {
        Arc::new(Publication {
            topic: topic.into(),
            payload: Bytes::from_static(payload),
            qos: QoS::AtMostOnce,
            retain: true,
            props: None,
            origin: Utf8Bytes::default(),
            expiry,
            id: 0,
        })
    }

    #[test]
    fn expired_retained_messages_are_not_found_and_are_purged() {
        use std::time::{Duration, Instant};
        let mut st = RetainedStore::default();
        let past = pe("a/old", b"x", Some(Instant::now() - Duration::from_secs(1)));
        let future = pe(
            "a/new",
            b"y",
            Some(Instant::now() + Duration::from_secs(60)),
        );
        st.set(past, 10);
        st.set(future, 10);
        st.set(p("a/plain", b"z"), 10);
        let mut out = Vec::new();
        st.lookup("a/#", &mut out);
        let mut topics: Vec<_> = out.iter().map(|m| m.topic.to_string()).collect();
        topics.sort();
        assert_eq!(topics, ["a/new", "a/plain"]);
        out.clear();
        st.lookup("a/old", &mut out);
        assert!(out.is_empty());
        assert_eq!(st.purge_expired(Instant::now()), 1);
        assert_eq!(st.len(), 2);
        assert_eq!(
            st.purge_expired(Instant::now() + Duration::from_secs(120)),
            1
        );
        assert_eq!(st.purge_expired(Instant::now()), 0, "nothing expiring left");
        st.set(p("a/plain", b""), 10);
        assert!(st.is_empty());
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

//! Local subscribers: filter → the sessions on this shard subscribed to it, with options.
//!
//! Owned by one shard (the home shard of those sessions).

use crate::proto::{QoS, SubOptions};

use super::trie::TopicTrie;

/// Shard-local session handle (index into the shard's session table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub u64);

/// One subscriber entry for a matched publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub session: SessionKey,
    pub opts: SubOptions,
}

/// Owned by one shard.
#[derive(Debug, Default)]
pub struct LocalSubs {
    trie: TopicTrie<Vec<(SessionKey, SubOptions)>>,
}

impl LocalSubs {
    /// Add or replace a session's subscription. Returns true when the filter gained its
    /// first local subscriber (the route table must learn about it).
    pub fn add(&mut self, filter: &str, session: SessionKey, opts: SubOptions) -> bool {
        let list = self.trie.entry_or_default(filter);
        let first = list.is_empty();
        match list.iter_mut().find(|(s, _)| *s == session) {
            Some(entry) => entry.1 = opts,
            None => list.push((session, opts)),
        }
        first
    }

    /// Remove a session's subscription. Returns true when the filter lost its last local
    /// subscriber.
    pub fn remove(&mut self, filter: &str, session: SessionKey) -> bool {
        let Some(list) = self.trie.get_mut(filter) else {
            return false;
        };
        let before = list.len();
        list.retain(|(s, _)| *s != session);
        if list.is_empty() && before > 0 {
            self.trie.remove(filter);
            return true;
        }
        false
    }

    /// Collect the subscribers of `topic`, one entry per session: where several of a
    /// session's filters match, the entry with the highest QoS wins (documented choice for
    /// overlapping subscriptions: deliver once, at the highest granted QoS).
    pub fn matches(&self, topic: &str, out: &mut Vec<Hit>) {
        out.clear();
        self.trie.for_each_match(topic, |_, list| {
            out.extend(list.iter().map(|(s, o)| Hit {
                session: *s,
                opts: *o,
            }))
        });
        if out.len() > 1 {
            out.sort_unstable_by(|a, b| {
                a.session.cmp(&b.session).then(b.opts.qos.cmp(&a.opts.qos))
            });
            out.dedup_by(|later, first| later.session == first.session);
        }
    }

    pub fn filters(&self) -> usize {
        self.trie.len()
    }
}

/// Delivery QoS: the lower of what was published and what was granted.
pub fn delivery_qos(published: QoS, granted: QoS) -> QoS {
    published.min(granted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_filters_deliver_once_at_highest_qos() {
        let mut s = LocalSubs::default();
        let k = SessionKey(1);
        assert!(s.add("a/+", k, SubOptions::qos(QoS::AtMostOnce)));
        assert!(s.add("a/#", k, SubOptions::qos(QoS::ExactlyOnce)));
        assert!(s.add("a/b", SessionKey(2), SubOptions::qos(QoS::AtLeastOnce)));
        let mut out = Vec::new();
        s.matches("a/b", &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].session, k);
        assert_eq!(out[0].opts.qos, QoS::ExactlyOnce);
        assert!(!s.add("a/+", SessionKey(3), SubOptions::qos(QoS::AtMostOnce)));
        assert!(!s.remove("a/+", k));
        assert!(s.remove("a/+", SessionKey(3)));
        assert!(!s.remove("a/+", SessionKey(3)));
    }
}

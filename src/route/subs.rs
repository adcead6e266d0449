//! Local subscribers: filter → the sessions on this shard subscribed to it, with options
//! and subscription identifier.
//!
//! Owned by one shard (the home shard of those sessions). Shared subscriptions are kept
//! apart in [`LocalGroups`] (see [`super::shared`]): a `$share/...` filter must never
//! match a topic itself.

use crate::proto::{QoS, SubOptions};

use super::shared::LocalGroups;
use super::trie::TopicTrie;

/// Shard-local session handle (index into the shard's session table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub u64);

/// One subscription of one session. Also one entry of a matched publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub session: SessionKey,
    pub opts: SubOptions,
    /// Subscription identifier (v5), 0 for none.
    pub id: u32,
}

/// Owned by one shard.
#[derive(Debug, Default)]
pub struct LocalSubs {
    trie: TopicTrie<Vec<Hit>>,
    /// This shard's members of shared subscriptions.
    pub groups: LocalGroups,
}

impl LocalSubs {
    /// Add or replace a session's subscription (options and identifier are replaced
    /// [MQTT-3.8.4-3]). Returns true when the filter gained its first local subscriber (the
    /// route table must learn about it).
    pub fn add(&mut self, filter: &str, session: SessionKey, opts: SubOptions, id: u32) -> bool {
        let list = self.trie.entry_or_default(filter);
        let first = list.is_empty();
        let hit = Hit { session, opts, id };
        match list.iter_mut().find(|h| h.session == session) {
            Some(entry) => *entry = hit,
            None => list.push(hit),
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
        list.retain(|h| h.session != session);
        if list.is_empty() && before > 0 {
            self.trie.remove(filter);
            return true;
        }
        false
    }

    /// Collect every subscription matching `topic`, sorted by session and, within a
    /// session, highest QoS first. A session with several matching subscriptions gets the
    /// message once (see [`per_session`]).
    pub fn matches(&self, topic: &str, out: &mut Vec<Hit>) {
        out.clear();
        let mut lists = 0;
        self.trie.for_each_match(topic, |_, list| {
            lists += 1;
            out.extend_from_slice(list)
        });
        // One matching filter lists each session once: already one run per session.
        if lists > 1 && out.len() > 1 {
            out.sort_unstable_by(|a, b| {
                a.session.cmp(&b.session).then(b.opts.qos.cmp(&a.opts.qos))
            });
        }
    }

    /// The subscription identifier of `session`'s subscription to `filter` (0: none).
    pub fn sub_id(&self, filter: &str, session: SessionKey) -> u32 {
        let hit = if filter.starts_with(crate::proto::topic::SHARE_PREFIX) {
            self.groups.member(filter, session)
        } else {
            self.trie
                .get(filter)
                .and_then(|l| l.iter().find(|h| h.session == session).copied())
        };
        hit.map_or(0, |h| h.id)
    }

    pub fn filters(&self) -> usize {
        self.trie.len()
    }
}

/// The hits of [`LocalSubs::matches`] grouped by session (one run per session).
pub fn per_session(hits: &[Hit]) -> impl Iterator<Item = &[Hit]> {
    hits.chunk_by(|a, b| a.session == b.session)
}

/// How one session receives a message that matched several of its subscriptions
/// (documented choice for overlapping subscriptions: deliver once, at the highest granted
/// QoS, carrying every matching subscription's identifier [MQTT-3.3.4-4]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub qos: QoS,
    /// Retain As Published on any of the matching subscriptions.
    pub retain_as_published: bool,
    pub ids: SubIds,
}

/// Merge one session's hits, skipping those `skip` rejects (No Local). `None` when none is
/// left.
pub fn merge(run: &[Hit], skip: impl Fn(&Hit) -> bool) -> Option<Merged> {
    let mut m: Option<Merged> = None;
    for h in run.iter().filter(|h| !skip(h)) {
        let e = m.get_or_insert_with(|| Merged {
            qos: h.opts.qos,
            retain_as_published: false,
            ids: SubIds::default(),
        });
        e.qos = e.qos.max(h.opts.qos);
        e.retain_as_published |= h.opts.retain_as_published;
        if h.id != 0 {
            e.ids.push(h.id);
        }
    }
    m
}

/// A few subscription identifiers: up to two inline, more spill to a `Vec`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubIds {
    inline: [u32; 2],
    len: u8,
    spill: Vec<u32>,
}

impl SubIds {
    pub fn push(&mut self, id: u32) {
        if self.len < 2 {
            self.inline[self.len as usize] = id;
            self.len += 1;
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.inline);
            }
            self.spill.push(id);
        }
    }

    pub fn as_slice(&self) -> &[u32] {
        if self.spill.is_empty() {
            &self.inline[..self.len as usize]
        } else {
            &self.spill
        }
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
    fn overlapping_filters_deliver_once_at_highest_qos_with_every_id() {
        let mut s = LocalSubs::default();
        let k = SessionKey(1);
        assert!(s.add("a/+", k, SubOptions::qos(QoS::AtMostOnce), 1));
        assert!(s.add("a/#", k, SubOptions::qos(QoS::ExactlyOnce), 2));
        assert!(s.add("a/b", k, SubOptions::qos(QoS::AtMostOnce), 0));
        assert!(!s.add("a/b", SessionKey(2), SubOptions::qos(QoS::AtLeastOnce), 5));
        let mut out = Vec::new();
        s.matches("a/b", &mut out);
        let runs: Vec<&[Hit]> = per_session(&out).collect();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0][0].session, k);
        let m = merge(runs[0], |_| false).unwrap();
        assert_eq!(m.qos, QoS::ExactlyOnce);
        let mut ids = m.ids.as_slice().to_vec();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 2], "MQTT-3.3.4-4: every matching identifier");
        assert!(merge(runs[0], |_| true).is_none());
        assert!(!s.add("a/+", SessionKey(3), SubOptions::qos(QoS::AtMostOnce), 0));
        assert!(!s.remove("a/+", k));
        assert!(s.remove("a/+", SessionKey(3)));
        assert!(!s.remove("a/+", SessionKey(3)));
    }

    #[test]
    fn resubscribe_replaces_identifier() {
        // MQTT-3.8.4-3: a SUBSCRIBE for an existing filter replaces the subscription.
        let mut s = LocalSubs::default();
        s.add("t", SessionKey(1), SubOptions::qos(QoS::AtMostOnce), 4);
        s.add("t", SessionKey(1), SubOptions::qos(QoS::AtMostOnce), 8);
        let mut out = Vec::new();
        s.matches("t", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].id, 8);
    }

    #[test]
    fn ids_spill_past_two() {
        let mut ids = SubIds::default();
        for i in 1..=4 {
            ids.push(i);
        }
        assert_eq!(ids.as_slice(), &[1, 2, 3, 4]);
    }
}

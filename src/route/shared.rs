//! Shared subscriptions `$share/{ShareName}/{filter}` (MQTT 5.0 §4.8.2; also accepted from
//! 3.1.1 clients, as other brokers do): each message matching a group's filter goes to
//! exactly one member of the group, whichever shard the members live on.
//!
//! # Design
//! A share is identified by its whole filter string (`$share/g/a/+`, the *key*): the same
//! group name with another filter is another share.
//! - [`ShareRoutes`] (part of the replicated route table): inner filter → the shares on it,
//!   each with its member count per shard. A shard broadcasts its local count for a share
//!   whenever it changes (`Ctrl::ShareCount`); a subscribe waits until every peer applied
//!   it (like `RouteAdd`), so no publish accepted after the SUBACK misses the member.
//! - The publishing shard matches the topic against the share filters once and, for each
//!   matching share, picks a destination shard by weighted round robin over the member
//!   counts (one cursor per share: over a cycle of `total` messages each shard gets exactly
//!   its count). The message goes there over the ctrl mesh (`Ctrl::ShareDeliver`), or is
//!   delivered inline when the pick is the publishing shard.
//! - The destination picks one local member from [`LocalGroups`] by round robin, preferring
//!   a member that is online with room in its inflight window, then one that is online,
//!   then an offline persistent session (its queue). If it has only offline members, or no
//!   member any more (a race with an unsubscribe), it passes the message to another shard
//!   with members that has not been tried yet; the last shard of that chain queues it for
//!   an offline member, or, with none, drops it (counted).
//! - When a member's connection ends, the messages it received through a share and has not
//!   acknowledged are taken out of its session and re-sent through the share to another
//!   member: QoS 1 messages sent without PUBACK yet, and QoS 1/2 messages still queued. A
//!   QoS 2 message already sent stays: it must be completed with that client
//!   [MQTT-4.8.2-4] and never go to another one [MQTT-4.8.2-5]. With no other member the
//!   messages stay with a persistent session, or are dropped and counted for a clean one.
//! - Retained messages are not sent on a shared subscribe (§4.8.2), and No Local on a
//!   shared subscription is a protocol error [MQTT-3.8.3-4] (rejected by the decoder).

use std::cell::Cell;

use ahash::AHashMap;

use crate::proto::Utf8Bytes;

use super::subs::{Hit, SessionKey};
use super::table::ShardSet;
use super::trie::TopicTrie;

/// One share as the route table sees it: member counts per shard.
#[derive(Debug, Default)]
struct ShareRoute {
    key: Utf8Bytes,
    /// (shard, members) for every shard with at least one member, by shard.
    counts: Vec<(usize, u32)>,
    /// Weighted round-robin cursor.
    cursor: Cell<u64>,
}

impl ShareRoute {
    /// Weighted round robin over the shards not in `tried`.
    fn pick(&self, tried: ShardSet) -> Option<usize> {
        let total: u64 = self
            .counts
            .iter()
            .filter(|(s, _)| !tried.contains(*s))
            .map(|(_, c)| u64::from(*c))
            .sum();
        if total == 0 {
            return None;
        }
        let n = self.cursor.get();
        self.cursor.set(n.wrapping_add(1));
        let mut pos = n % total;
        for &(shard, c) in self.counts.iter().filter(|(s, _)| !tried.contains(*s)) {
            if pos < u64::from(c) {
                return Some(shard);
            }
            pos -= u64::from(c);
        }
        None
    }
}

/// Inner filter → shares on it, with member counts per shard.
///
/// Replicated on every shard (inside the route table); updated over the ctrl mesh.
#[derive(Debug, Default)]
pub struct ShareRoutes {
    trie: TopicTrie<Vec<ShareRoute>>,
}

impl ShareRoutes {
    /// Record that `shard` has `count` members of share `key` (a validated
    /// `$share/{group}/{filter}`; anything else is ignored).
    pub fn set(&mut self, key: &Utf8Bytes, shard: usize, count: u32) {
        let Some((_, inner)) = crate::proto::topic::parse_shared(key) else {
            return;
        };
        if count == 0 {
            let now_empty = match self.trie.get_mut(inner) {
                Some(list) => {
                    if let Some(r) = list.iter_mut().find(|r| r.key == *key) {
                        r.counts.retain(|(s, _)| *s != shard);
                    }
                    list.retain(|r| !r.counts.is_empty());
                    list.is_empty()
                }
                None => false,
            };
            if now_empty {
                self.trie.remove(inner);
            }
            return;
        }
        let list = self.trie.entry_or_default(inner);
        let i = match list.iter().position(|r| r.key == *key) {
            Some(i) => i,
            None => {
                list.push(ShareRoute {
                    key: key.clone(),
                    ..Default::default()
                });
                list.len() - 1
            }
        };
        let counts = &mut list[i].counts;
        match counts.binary_search_by_key(&shard, |(s, _)| *s) {
            Ok(j) => counts[j].1 = count,
            Err(j) => counts.insert(j, (shard, count)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.trie.is_empty()
    }

    /// For every share whose filter matches `topic`, pick the shard that delivers this
    /// message: `f(key, shard)`.
    pub fn pick(&self, topic: &str, mut f: impl FnMut(&Utf8Bytes, usize)) {
        self.trie.for_each_match(topic, |_, list| {
            for r in list {
                if let Some(shard) = r.pick(ShardSet::default()) {
                    f(&r.key, shard);
                }
            }
        });
    }

    fn route(&self, key: &str) -> Option<&ShareRoute> {
        let (_, inner) = crate::proto::topic::parse_shared(key)?;
        self.trie.get(inner)?.iter().find(|r| r.key.as_str() == key)
    }

    /// A shard outside `tried` with members of `key` (weighted round robin), if any.
    pub fn pick_untried(&self, key: &str, tried: ShardSet) -> Option<usize> {
        self.route(key)?.pick(tried)
    }

    /// Members of `key` on every shard.
    pub fn members(&self, key: &str) -> u32 {
        self.route(key)
            .map_or(0, |r| r.counts.iter().map(|(_, c)| c).sum())
    }
}

/// How suitable a member is to receive the next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Readiness {
    /// The session has no connection (persistent session, offline).
    Offline,
    /// Connected, but its inflight window or queue is full.
    Busy,
    /// Connected with room in its inflight window.
    Ready,
}

#[derive(Debug, Default)]
struct LocalGroup {
    members: Vec<Hit>,
    /// Round-robin cursor: where the next search starts.
    next: usize,
}

/// Share key → this shard's members of it.
///
/// Owned by one shard (the home shard of those sessions).
#[derive(Debug, Default)]
pub struct LocalGroups {
    map: AHashMap<Utf8Bytes, LocalGroup>,
}

impl LocalGroups {
    /// Add or replace a member (its options and identifier); returns the local count.
    pub fn add(&mut self, key: &Utf8Bytes, member: Hit) -> u32 {
        let g = self.map.entry(key.clone()).or_default();
        match g.members.iter_mut().find(|m| m.session == member.session) {
            Some(m) => *m = member,
            None => g.members.push(member),
        }
        g.members.len() as u32
    }

    /// Remove a member; the local count after, or `None` if it was not a member.
    pub fn remove(&mut self, key: &str, session: SessionKey) -> Option<u32> {
        let g = self.map.get_mut(key)?;
        let i = g.members.iter().position(|m| m.session == session)?;
        g.members.remove(i);
        let left = g.members.len() as u32;
        if left == 0 {
            self.map.remove(key);
        }
        Some(left)
    }

    /// Local members of `key`.
    pub fn count(&self, key: &str) -> u32 {
        self.map.get(key).map_or(0, |g| g.members.len() as u32)
    }

    /// `session`'s membership of `key` (options and identifier).
    pub fn member(&self, key: &str, session: SessionKey) -> Option<Hit> {
        self.map
            .get(key)?
            .members
            .iter()
            .find(|m| m.session == session)
            .copied()
    }

    /// Is `session` a member of `key`?
    pub fn is_member(&self, key: &str, session: SessionKey) -> bool {
        self.map
            .get(key)
            .is_some_and(|g| g.members.iter().any(|m| m.session == session))
    }

    /// Pick the member that receives the next message: round robin from the cursor, the
    /// first [`Readiness::Ready`] member, else the first most ready one. `exclude` (a
    /// departing member) is never picked.
    pub fn pick(
        &mut self,
        key: &str,
        exclude: Option<SessionKey>,
        readiness: impl Fn(SessionKey) -> Readiness,
    ) -> Option<(Hit, Readiness)> {
        let g = self.map.get_mut(key)?;
        let n = g.members.len();
        let mut best: Option<(usize, Readiness)> = None;
        for step in 0..n {
            let i = (g.next + step) % n;
            let m = &g.members[i];
            if Some(m.session) == exclude {
                continue;
            }
            let r = readiness(m.session);
            if !matches!(best, Some((_, b)) if b >= r) {
                best = Some((i, r));
                if r == Readiness::Ready {
                    break;
                }
            }
        }
        let (i, r) = best?;
        g.next = (i + 1) % n;
        Some((g.members[i], r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{QoS, SubOptions};

    fn key() -> Utf8Bytes {
        Utf8Bytes::from("$share/g/a/+")
    }

    fn member(s: u64) -> Hit {
        Hit {
            session: SessionKey(s),
            opts: SubOptions::qos(QoS::AtLeastOnce),
            id: 0,
        }
    }

    #[test]
    fn shards_are_picked_in_proportion_to_their_members() {
        let mut r = ShareRoutes::default();
        r.set(&key(), 0, 2);
        r.set(&key(), 2, 1);
        r.set(&key(), 1, 3);
        let mut per = [0u32; 3];
        for _ in 0..600 {
            r.pick("a/x", |k, s| {
                assert_eq!(k, &key());
                per[s] += 1;
            });
        }
        assert_eq!(per, [200, 300, 100]);
        let mut none = 0;
        r.pick("b/x", |_, _| none += 1);
        assert_eq!(none, 0, "the inner filter must match");
        assert_eq!(r.members("$share/g/a/+"), 6);
    }

    #[test]
    fn fallback_skips_tried_shards_and_counts_reach_zero() {
        let mut r = ShareRoutes::default();
        r.set(&key(), 0, 1);
        r.set(&key(), 1, 1);
        let mut tried = ShardSet::default();
        tried.insert(0);
        for _ in 0..4 {
            assert_eq!(r.pick_untried("$share/g/a/+", tried), Some(1));
        }
        tried.insert(1);
        assert_eq!(r.pick_untried("$share/g/a/+", tried), None);
        r.set(&key(), 0, 0);
        r.set(&key(), 1, 0);
        assert!(r.is_empty());
        assert_eq!(r.members("$share/g/a/+"), 0);
    }

    #[test]
    fn groups_with_the_same_name_on_other_filters_are_separate() {
        let mut r = ShareRoutes::default();
        r.set(&key(), 0, 1);
        r.set(&"$share/g/a/#".into(), 1, 1);
        let mut got = Vec::new();
        r.pick("a/b", |k, s| got.push((k.to_string(), s)));
        got.sort();
        assert_eq!(
            got,
            vec![("$share/g/a/#".into(), 1), ("$share/g/a/+".into(), 0)]
        );
    }

    #[test]
    fn local_round_robin_prefers_ready_members() {
        let mut g = LocalGroups::default();
        for s in 1..=3 {
            g.add(&key(), member(s));
        }
        let all_ready = |_| Readiness::Ready;
        let picks: Vec<u64> = (0..6)
            .map(|_| g.pick("$share/g/a/+", None, all_ready).unwrap().0.session.0)
            .collect();
        assert_eq!(picks, vec![1, 2, 3, 1, 2, 3]);
        // Member 2 is busy, 3 offline: 1 gets everything.
        let rank = |s: SessionKey| match s.0 {
            1 => Readiness::Ready,
            2 => Readiness::Busy,
            _ => Readiness::Offline,
        };
        for _ in 0..3 {
            assert_eq!(g.pick("$share/g/a/+", None, rank).unwrap().0.session.0, 1);
        }
        // Excluding the departing member 1: the busy one beats the offline one.
        let (m, r) = g.pick("$share/g/a/+", Some(SessionKey(1)), rank).unwrap();
        assert_eq!((m.session.0, r), (2, Readiness::Busy));
        assert_eq!(g.remove("$share/g/a/+", SessionKey(2)), Some(2));
        assert_eq!(g.remove("$share/g/a/+", SessionKey(2)), None);
        assert_eq!(g.count("$share/g/a/+"), 2);
        g.remove("$share/g/a/+", SessionKey(1));
        g.remove("$share/g/a/+", SessionKey(3));
        assert!(g.pick("$share/g/a/+", None, all_ready).is_none());
    }
}

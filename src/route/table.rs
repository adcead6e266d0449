//! The route table: filter → set of shards that have at least one local subscriber.
//!
//! Replicated on every shard; updated over the ctrl mesh (`RouteAdd`/`RouteDel`), sent by a
//! shard only when its local subscriber count for a filter goes 0→1 or 1→0. A publish is
//! matched once here and forwarded once per destination shard (later: also to the cluster
//! bridge — a destination is not necessarily a local shard, ARCHITECTURE §7). Shared
//! subscriptions keep per-shard member counts instead ([`ShareRoutes`]).

use super::shared::ShareRoutes;
use super::trie::TopicTrie;

/// A set of shards as a bitmask (the broker caps shards at 64).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardSet(pub u64);

impl ShardSet {
    pub fn insert(&mut self, shard: usize) {
        self.0 |= 1 << shard;
    }
    pub fn remove(&mut self, shard: usize) {
        self.0 &= !(1 << shard);
    }
    pub fn contains(&self, shard: usize) -> bool {
        self.0 & (1 << shard) != 0
    }
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = usize> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(i)
        })
    }
}

/// Replicated on every shard; updated over the ctrl mesh.
#[derive(Debug, Default)]
pub struct RouteTable {
    trie: TopicTrie<ShardSet>,
    /// Shared subscriptions: member counts per shard (see [`super::shared`]).
    pub shared: ShareRoutes,
}

impl RouteTable {
    pub fn add(&mut self, filter: &str, shard: usize) {
        self.trie.entry_or_default(filter).insert(shard);
    }

    pub fn remove(&mut self, filter: &str, shard: usize) {
        let now_empty = match self.trie.get_mut(filter) {
            Some(set) => {
                set.remove(shard);
                set.is_empty()
            }
            None => false,
        };
        if now_empty {
            self.trie.remove(filter);
        }
    }

    /// Every shard with a subscriber whose filter matches `topic`.
    pub fn destinations(&self, topic: &str) -> ShardSet {
        let mut set = ShardSet::default();
        self.trie.for_each_match(topic, |_, s| set.0 |= s.0);
        set
    }

    pub fn len(&self) -> usize {
        self.trie.len()
    }

    pub fn is_empty(&self) -> bool {
        self.trie.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_union_over_matching_filters() {
        let mut t = RouteTable::default();
        t.add("a/+", 1);
        t.add("a/#", 3);
        t.add("a/b", 1);
        t.add("c", 2);
        assert_eq!(t.destinations("a/b").iter().collect::<Vec<_>>(), vec![1, 3]);
        t.remove("a/#", 3);
        assert_eq!(t.destinations("a/b").iter().collect::<Vec<_>>(), vec![1]);
        t.remove("a/+", 1);
        t.remove("a/b", 1);
        assert!(t.destinations("a/b").is_empty());
        assert_eq!(t.len(), 1);
    }
}

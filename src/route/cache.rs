//! `MatchCache`: bounded topic → match result cache in front of a `TopicTrie`.
//!
//! Publishers tend to reuse a small set of topics, so the shard keeps the result of the last
//! trie match per topic. Each entry remembers the trie generation it was computed at; a lookup
//! with a different generation is a miss, so any subscribe/unsubscribe invalidates the whole
//! cache in O(1) without touching it.
//!
//! Eviction is CLOCK (second chance): entries hit since the hand last passed survive one more
//! sweep; entries from an old generation are taken first, since they can never hit again. The
//! cache never holds more than `capacity` entries.

use std::rc::Rc;

use ahash::AHashMap;

/// Bounded topic → `Rc<R>` cache, invalidated by trie generation.
///
/// Owned by one shard; never shared (results are `Rc`).
#[derive(Debug)]
pub struct MatchCache<R> {
    /// Topic → slot index.
    index: AHashMap<Rc<str>, u32>,
    slots: Vec<Slot<R>>,
    /// CLOCK hand: next slot to consider for eviction.
    hand: usize,
    capacity: usize,
    hits: u64,
    misses: u64,
}

#[derive(Debug)]
struct Slot<R> {
    topic: Rc<str>,
    generation: u64,
    result: Rc<R>,
    /// Hit since the hand last passed.
    referenced: bool,
}

impl<R> MatchCache<R> {
    /// A cache holding at most `capacity` topics (clamped to `u32::MAX`); 0 disables caching.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.min(u32::MAX as usize);
        MatchCache {
            index: AHashMap::new(),
            slots: Vec::new(),
            hand: 0,
            capacity,
            hits: 0,
            misses: 0,
        }
    }

    /// The cached result for `topic`, if it was computed at `generation`.
    pub fn get(&mut self, topic: &str, generation: u64) -> Option<Rc<R>> {
        if let Some(&i) = self.index.get(topic) {
            let slot = &mut self.slots[i as usize];
            if slot.generation == generation {
                slot.referenced = true;
                self.hits += 1;
                return Some(Rc::clone(&slot.result));
            }
        }
        self.misses += 1;
        None
    }

    /// Caches `result` for `topic` at `generation`, replacing any older entry for the topic
    /// and evicting another topic if the cache is full.
    pub fn insert(&mut self, topic: &str, generation: u64, result: Rc<R>) {
        if let Some(&i) = self.index.get(topic) {
            let slot = &mut self.slots[i as usize];
            slot.generation = generation;
            slot.result = result;
            slot.referenced = true;
            return;
        }
        if self.capacity == 0 {
            return;
        }
        let topic: Rc<str> = Rc::from(topic);
        let slot = Slot {
            topic: Rc::clone(&topic),
            generation,
            result,
            referenced: false,
        };
        let i = if self.slots.len() < self.capacity {
            self.slots.push(slot);
            self.slots.len() - 1
        } else {
            let victim = self.victim(generation);
            let old = std::mem::replace(&mut self.slots[victim], slot);
            self.index.remove(&old.topic);
            victim
        };
        // `i < capacity <= u32::MAX`, see `new`.
        self.index.insert(topic, i as u32);
    }

    /// Advances the CLOCK hand to a slot that is stale or not recently hit. Ends within two
    /// sweeps: the first clears every reference bit it passes.
    fn victim(&mut self, generation: u64) -> usize {
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            let slot = &mut self.slots[i];
            if slot.generation != generation || !slot.referenced {
                return i;
            }
            slot.referenced = false;
        }
    }

    /// Number of cached topics.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Most topics the cache will hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Lookups answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Lookups that found nothing, or an entry from another generation.
    pub fn misses(&self) -> u64 {
        self.misses
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hit_after_insert_same_generation() {
        let mut c = MatchCache::new(4);
        assert_eq!(c.get("a", 1), None);
        c.insert("a", 1, Rc::new(vec!["a/#"]));
        assert_eq!(c.get("a", 1).as_deref(), Some(&vec!["a/#"]));
        assert_eq!((c.hits(), c.misses()), (1, 1));
    }

    #[test]
    fn generation_change_invalidates() {
        let mut c = MatchCache::new(4);
        c.insert("a", 1, Rc::new(1));
        assert_eq!(c.get("a", 2), None);
        c.insert("a", 2, Rc::new(2));
        assert_eq!(c.get("a", 2).as_deref(), Some(&2));
        assert_eq!(c.get("a", 1), None);
        assert_eq!(c.len(), 1, "re-insert updates in place");
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let mut c = MatchCache::new(0);
        c.insert("a", 0, Rc::new(()));
        assert!(c.is_empty());
        assert_eq!(c.get("a", 0), None);
    }

    #[test]
    fn clock_keeps_recently_hit_entries() {
        let mut c = MatchCache::new(2);
        c.insert("hot", 0, Rc::new(0));
        c.insert("cold", 0, Rc::new(1));
        assert!(c.get("hot", 0).is_some());
        c.insert("new", 0, Rc::new(2));
        assert!(c.get("hot", 0).is_some());
        assert!(c.get("cold", 0).is_none());
        assert!(c.get("new", 0).is_some());
    }

    #[test]
    fn stale_entries_are_evicted_first() {
        let mut c = MatchCache::new(2);
        c.insert("a", 0, Rc::new(0));
        c.insert("b", 1, Rc::new(1));
        assert!(c.get("b", 1).is_some());
        c.insert("c", 1, Rc::new(2));
        assert!(c.get("b", 1).is_some());
        assert!(c.get("c", 1).is_some());
    }

    proptest! {
        #[test]
        fn bounded_and_consistent(
            capacity in 0usize..8,
            ops in prop::collection::vec((0u8..16, 0u64..3, any::<bool>()), 1..200),
        ) {
            let mut c = MatchCache::new(capacity);
            // Model: the last value inserted per (topic), with its generation.
            let mut last = std::collections::HashMap::new();
            for (n, (topic, generation, is_insert)) in ops.into_iter().enumerate() {
                let topic = format!("t/{topic}");
                if is_insert {
                    c.insert(&topic, generation, Rc::new(n));
                    last.insert(topic, (generation, n));
                } else if let Some(got) = c.get(&topic, generation) {
                    // A hit must be the latest value stored for that topic and generation.
                    prop_assert_eq!(last.get(&topic), Some(&(generation, *got)));
                }
                prop_assert!(c.len() <= capacity);
                prop_assert_eq!(c.index.len(), c.slots.len());
            }
        }
    }
}

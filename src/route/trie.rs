//! `TopicTrie`: topic filter → value index, matched against every published topic.
//!
//! Layout, chosen for the publish path:
//! - Wildcard-free filters live only in a hash map keyed by the whole filter, because such a
//!   filter matches a topic iff the two are equal: one lookup per publish, whatever their
//!   number.
//! - Filters containing `+` or `#` live in a trie of levels. Nodes sit in an arena
//!   (`Vec<Node>` indexed by `u32`, with a free list), each with a literal-children map and
//!   dedicated `+` and `#` children, so matching costs O(levels × wildcard branching) and is
//!   independent of the number of stored filters.
//! - A node's value slot also stores the filter string, so a match can report which filter it
//!   hit without rebuilding it.
//!
//! Matching rules are those of [`crate::proto::topic::matches`], which is the reference the
//! property tests hold this against. Filters must be validated before they are inserted.

use ahash::AHashMap;

/// Index of the root node; it is never freed.
const ROOT: u32 = 0;

/// Topics with up to this many levels are matched with no heap allocation.
const INLINE_STACK: usize = 32;

/// Sentinel offset: the topic has no levels left.
const END: usize = usize::MAX;

/// Topic filter → `V`, matched against topic names.
///
/// Owned by one shard; never shared.
#[derive(Debug, Clone)]
pub struct TopicTrie<V> {
    /// Wildcard-free filters: matched by a single lookup of the whole topic.
    exact: AHashMap<Box<str>, V>,
    /// Arena of trie nodes for filters with wildcards; `nodes[ROOT]` is the root.
    nodes: Vec<Node<V>>,
    /// Arena slots that are free for reuse.
    free: Vec<u32>,
    /// Filters currently holding a value (exact and wildcard).
    len: usize,
    generation: u64,
}

#[derive(Debug, Clone)]
struct Node<V> {
    children: AHashMap<Box<str>, u32>,
    plus: Option<u32>,
    hash: Option<u32>,
    /// The filter ending at this node and its value.
    value: Option<(Box<str>, V)>,
    /// Parent index, used to prune empty nodes on removal. `ROOT` for the root itself.
    parent: u32,
}

impl<V> Node<V> {
    fn new(parent: u32) -> Self {
        Node {
            children: AHashMap::new(),
            plus: None,
            hash: None,
            value: None,
            parent,
        }
    }

    fn is_empty(&self) -> bool {
        self.value.is_none()
            && self.plus.is_none()
            && self.hash.is_none()
            && self.children.is_empty()
    }
}

/// Is this filter free of `+` and `#` levels (and so stored in the exact map)?
fn is_exact(filter: &str) -> bool {
    filter.split('/').all(|level| level != "+" && level != "#")
}

impl<V> Default for TopicTrie<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> TopicTrie<V> {
    /// An empty trie.
    pub fn new() -> Self {
        TopicTrie {
            exact: AHashMap::new(),
            nodes: vec![Node::new(ROOT)],
            free: Vec::new(),
            len: 0,
            generation: 0,
        }
    }

    /// Number of filters holding a value.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no filter is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Changes whenever what a match could return may have changed: on every insert and
    /// remove, and whenever a `&mut V` is handed out (`get_mut`, `entry_or_default`), since
    /// the caller may change the value in place. Match caches key on it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The value stored for exactly this filter (no wildcard expansion).
    pub fn get(&self, filter: &str) -> Option<&V> {
        if is_exact(filter) {
            return self.exact.get(filter);
        }
        let idx = self.find(filter)?;
        self.nodes[idx as usize].value.as_ref().map(|(_, v)| v)
    }

    /// Mutable access to the value stored for exactly this filter. Bumps the generation when
    /// the filter exists.
    pub fn get_mut(&mut self, filter: &str) -> Option<&mut V> {
        let value = if is_exact(filter) {
            self.exact.get_mut(filter)
        } else {
            let idx = self.find(filter)?;
            self.nodes[idx as usize].value.as_mut().map(|(_, v)| v)
        };
        if value.is_some() {
            self.generation = self.generation.wrapping_add(1);
        }
        value
    }

    /// The value for this filter, inserting `V::default()` first if there is none. Always
    /// bumps the generation.
    pub fn entry_or_default(&mut self, filter: &str) -> &mut V
    where
        V: Default,
    {
        self.generation = self.generation.wrapping_add(1);
        if is_exact(filter) {
            if !self.exact.contains_key(filter) {
                self.exact.insert(filter.into(), V::default());
                self.len += 1;
            }
            return self
                .exact
                .get_mut(filter)
                .expect("entry present: checked or inserted above");
        }
        let idx = self.find_or_create(filter) as usize;
        let slot = &mut self.nodes[idx].value;
        if slot.is_none() {
            *slot = Some((filter.into(), V::default()));
            self.len += 1;
        }
        &mut slot
            .as_mut()
            .expect("value present: checked or inserted above")
            .1
    }

    /// Stores `value` for `filter`, returning the previous value if there was one.
    pub fn insert(&mut self, filter: &str, value: V) -> Option<V> {
        self.generation = self.generation.wrapping_add(1);
        let old = if is_exact(filter) {
            self.exact.insert(filter.into(), value)
        } else {
            let idx = self.find_or_create(filter) as usize;
            let slot = &mut self.nodes[idx].value;
            match slot {
                Some((_, v)) => Some(std::mem::replace(v, value)),
                None => {
                    *slot = Some((filter.into(), value));
                    None
                }
            }
        };
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes `filter` and returns its value. Nodes left with neither a value nor children
    /// go back to the free list.
    pub fn remove(&mut self, filter: &str) -> Option<V> {
        if is_exact(filter) {
            let old = self.exact.remove(filter)?;
            self.len -= 1;
            self.generation = self.generation.wrapping_add(1);
            return Some(old);
        }
        let leaf = self.find(filter)?;
        let (_, old) = self.nodes[leaf as usize].value.take()?;
        self.len -= 1;
        self.generation = self.generation.wrapping_add(1);
        self.prune(leaf, filter);
        Some(old)
    }

    /// Calls `f(filter, value)` once for every stored filter that matches `topic`.
    ///
    /// Allocation-free unless a topic of more than ~`INLINE_STACK` levels keeps matching deep
    /// into the trie.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&str, &V)) {
        if let Some((filter, value)) = self.exact.get_key_value(topic) {
            f(filter, value);
        }
        let root = &self.nodes[ROOT as usize];
        if root.is_empty() {
            return;
        }
        // [MQTT-4.7.2-1]: `$` topics never match a filter starting with `+` or `#`.
        let dollar = topic.starts_with('$');
        let mut stack = Stack::new();
        // Entries are (node, byte offset of the next topic level, or END).
        stack.push((ROOT, 0));
        while let Some((idx, offset)) = stack.pop() {
            let node = &self.nodes[idx as usize];
            let at_root = idx == ROOT;
            // `#` matches the remaining levels, including none (`sport/#` matches `sport`).
            if let Some(h) = node.hash {
                if !(at_root && dollar) {
                    if let Some((filter, value)) = &self.nodes[h as usize].value {
                        f(filter, value);
                    }
                }
            }
            if offset == END {
                if let Some((filter, value)) = &node.value {
                    f(filter, value);
                }
                continue;
            }
            let rest = &topic[offset..];
            let (level, next) = match rest.find('/') {
                Some(i) => (&rest[..i], offset + i + 1),
                None => (rest, END),
            };
            if let Some(p) = node.plus {
                if !(at_root && dollar) {
                    stack.push((p, next));
                }
            }
            if let Some(&child) = node.children.get(level) {
                stack.push((child, next));
            }
        }
    }

    /// Every stored filter and its value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        let exact = self.exact.iter().map(|(k, v)| (&**k, v));
        let wild = self
            .nodes
            .iter()
            .filter_map(|n| n.value.as_ref().map(|(k, v)| (&**k, v)));
        exact.chain(wild)
    }

    /// The node for this (wildcard) filter, if its path exists.
    fn find(&self, filter: &str) -> Option<u32> {
        let mut idx = ROOT;
        for level in filter.split('/') {
            let node = &self.nodes[idx as usize];
            idx = match level {
                "+" => node.plus?,
                "#" => node.hash?,
                _ => *node.children.get(level)?,
            };
        }
        Some(idx)
    }

    /// The node for this (wildcard) filter, creating the missing path.
    fn find_or_create(&mut self, filter: &str) -> u32 {
        let mut idx = ROOT;
        for level in filter.split('/') {
            let existing = {
                let node = &self.nodes[idx as usize];
                match level {
                    "+" => node.plus,
                    "#" => node.hash,
                    _ => node.children.get(level).copied(),
                }
            };
            idx = match existing {
                Some(child) => child,
                None => {
                    let child = self.alloc(idx);
                    let node = &mut self.nodes[idx as usize];
                    match level {
                        "+" => node.plus = Some(child),
                        "#" => node.hash = Some(child),
                        _ => {
                            node.children.insert(level.into(), child);
                        }
                    }
                    child
                }
            };
        }
        idx
    }

    /// Frees `leaf` and its ancestors while they are empty. `filter` is the path to `leaf`;
    /// its levels, read backwards, name each node's edge from its parent.
    fn prune(&mut self, leaf: u32, filter: &str) {
        let mut idx = leaf;
        let mut levels = filter.rsplit('/');
        while idx != ROOT && self.nodes[idx as usize].is_empty() {
            let Some(level) = levels.next() else { break };
            let parent = self.nodes[idx as usize].parent;
            let node = &mut self.nodes[parent as usize];
            match level {
                "+" => node.plus = None,
                "#" => node.hash = None,
                _ => {
                    node.children.remove(level);
                }
            }
            self.free.push(idx);
            idx = parent;
        }
    }

    fn alloc(&mut self, parent: u32) -> u32 {
        if let Some(idx) = self.free.pop() {
            self.nodes[idx as usize].parent = parent;
            return idx;
        }
        let idx = u32::try_from(self.nodes.len()).expect("trie arena exceeds u32::MAX nodes");
        self.nodes.push(Node::new(parent));
        idx
    }
}

/// DFS stack that lives on the call stack for ordinary topics and spills to the heap for
/// very deep ones.
struct Stack {
    inline: [(u32, usize); INLINE_STACK],
    len: usize,
    spill: Vec<(u32, usize)>,
}

impl Stack {
    fn new() -> Self {
        Stack {
            inline: [(0, 0); INLINE_STACK],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, item: (u32, usize)) {
        if self.len < INLINE_STACK {
            self.inline[self.len] = item;
            self.len += 1;
        } else {
            self.spill.push(item);
        }
    }

    fn pop(&mut self) -> Option<(u32, usize)> {
        if let Some(item) = self.spill.pop() {
            return Some(item);
        }
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        Some(self.inline[self.len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::topic::matches;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn matched<V>(trie: &TopicTrie<V>, topic: &str) -> Vec<String> {
        let mut out = Vec::new();
        trie.for_each_match(topic, |f, _| out.push(f.to_string()));
        out.sort();
        out
    }

    fn trie_of(filters: &[&str]) -> TopicTrie<()> {
        let mut t = TopicTrie::new();
        for f in filters {
            t.insert(f, ());
        }
        t
    }

    /// Every live node other than the root carries a value or leads to one, every edge
    /// points back to its parent, and no live node is on the free list.
    fn check_invariants<V>(t: &TopicTrie<V>) {
        let free: BTreeSet<u32> = t.free.iter().copied().collect();
        assert_eq!(free.len(), t.free.len(), "free list holds duplicates");
        let mut seen = 0;
        let mut stack = vec![ROOT];
        while let Some(idx) = stack.pop() {
            seen += 1;
            assert!(!free.contains(&idx), "live node {idx} on the free list");
            let n = &t.nodes[idx as usize];
            if idx != ROOT {
                assert!(!n.is_empty(), "empty node {idx} not pruned");
            }
            let kids = n.children.values().copied().chain(n.plus).chain(n.hash);
            for c in kids {
                assert_eq!(t.nodes[c as usize].parent, idx);
                stack.push(c);
            }
        }
        assert_eq!(seen + t.free.len(), t.nodes.len(), "leaked arena slots");
        assert_eq!(t.iter().count(), t.len());
    }

    #[test]
    fn spec_examples_4_7_1() {
        // MQTT-4.7.1-2, MQTT-4.7.1-3
        let t = trie_of(&[
            "sport/tennis/player1/#",
            "sport/#",
            "sport/tennis/+",
            "sport/+",
            "+/+",
            "/+",
            "+",
            "#",
        ]);
        assert_eq!(
            matched(&t, "sport/tennis/player1"),
            ["#", "sport/#", "sport/tennis/+", "sport/tennis/player1/#"]
        );
        assert_eq!(
            matched(&t, "sport/tennis/player1/score/wimbledon"),
            ["#", "sport/#", "sport/tennis/player1/#"]
        );
        assert_eq!(matched(&t, "sport"), ["#", "+", "sport/#"]);
        assert_eq!(matched(&t, "sport/"), ["#", "+/+", "sport/#", "sport/+"]);
        assert_eq!(matched(&t, "/finance"), ["#", "+/+", "/+"]);
    }

    #[test]
    fn dollar_topics_skip_leading_wildcards() {
        // MQTT-4.7.2-1
        let t = trie_of(&["#", "+/monitor/Clients", "$SYS/#", "$SYS/monitor/+", "$SYS"]);
        assert_eq!(
            matched(&t, "$SYS/monitor/Clients"),
            ["$SYS/#", "$SYS/monitor/+"]
        );
        assert_eq!(matched(&t, "$SYS"), ["$SYS", "$SYS/#"]);
        assert_eq!(matched(&t, "a/monitor/Clients"), ["#", "+/monitor/Clients"]);
    }

    #[test]
    fn empty_levels_are_levels() {
        let t = trie_of(&["a//b", "a/+/b", "+/+/+", "/", "a/b"]);
        assert_eq!(matched(&t, "a//b"), ["+/+/+", "a/+/b", "a//b"]);
        assert_eq!(matched(&t, "/"), ["/"]);
        assert_eq!(matched(&t, "//"), ["+/+/+"]);
    }

    #[test]
    fn insert_get_remove() {
        let mut t = TopicTrie::new();
        assert!(t.is_empty());
        assert_eq!(t.insert("a/+/c", 1), None);
        assert_eq!(t.insert("a/b/c", 2), None);
        assert_eq!(t.insert("a/+/c", 3), Some(1));
        assert_eq!(t.len(), 2);
        assert_eq!(t.get("a/+/c"), Some(&3));
        assert_eq!(t.get("a/b/c"), Some(&2));
        assert_eq!(t.get("a/+"), None);
        assert_eq!(t.get("a/#"), None);
        *t.get_mut("a/b/c").unwrap() += 10;
        assert_eq!(t.get("a/b/c"), Some(&12));
        *t.entry_or_default("x/#") += 5;
        *t.entry_or_default("x/#") += 5;
        assert_eq!(t.get("x/#"), Some(&10));
        *t.entry_or_default("x/y") += 1;
        assert_eq!(t.len(), 4);
        assert_eq!(t.remove("a/+"), None);
        assert_eq!(t.remove("a/+/c"), Some(3));
        assert_eq!(t.remove("a/+/c"), None);
        assert_eq!(t.remove("a/b/c"), Some(12));
        assert_eq!(t.len(), 2);
        check_invariants(&t);
    }

    #[test]
    fn generation_moves_on_every_change() {
        let mut t = TopicTrie::new();
        let g0 = t.generation();
        t.insert("a/#", 1);
        let g1 = t.generation();
        assert_ne!(g0, g1);
        assert_eq!(t.remove("nope/+"), None);
        assert_eq!(t.generation(), g1, "a failed remove changes nothing");
        t.get_mut("a/#");
        let g2 = t.generation();
        assert_ne!(g1, g2);
        t.remove("a/#");
        assert_ne!(t.generation(), g2);
    }

    #[test]
    fn removal_prunes_to_free_list_and_reuses_slots() {
        let mut t = trie_of(&["a/b/+/d", "a/b/#", "+/x"]);
        let arena = t.nodes.len();
        for f in ["a/b/+/d", "a/b/#", "+/x"] {
            t.remove(f);
            check_invariants(&t);
        }
        assert_eq!(t.free.len(), arena - 1, "all but the root freed");
        for f in ["a/b/+/d", "a/b/#", "+/x"] {
            t.insert(f, ());
        }
        assert_eq!(t.nodes.len(), arena, "slots reused");
        check_invariants(&t);
    }

    #[test]
    fn deep_topics_spill_without_panicking() {
        let deep_filter = vec!["+"; 200].join("/");
        let deep_topic = vec!["a"; 200].join("/");
        let mut t = trie_of(&["#", &deep_filter]);
        t.insert(&format!("{deep_filter}/#"), ());
        assert_eq!(
            matched(&t, &deep_topic),
            ["#", deep_filter.as_str(), &format!("{deep_filter}/#")]
        );
        // 70_001 empty levels: "#" and the 200-level "+/.../#" match, the exact one does not.
        assert_eq!(matched(&t, &"/".repeat(70_000)).len(), 2);
    }

    /// Filters over a small alphabet so that random topics hit them often: literal levels,
    /// empty levels, `$`-prefixed levels, `+`, and `#` as a last level.
    fn filter_strategy() -> BoxedStrategy<String> {
        let level = prop_oneof![Just("a"), Just("b"), Just(""), Just("$s"), Just("+")];
        let filter =
            (prop::collection::vec(level, 1..5), any::<bool>()).prop_map(|(levels, hash)| {
                let mut f = levels.join("/");
                if hash {
                    f.push_str("/#");
                }
                f
            });
        prop_oneof![1 => Just("#".to_string()), 9 => filter]
            .prop_filter("filters are non-empty", |f| !f.is_empty())
            .boxed()
    }

    fn topic_strategy() -> impl Strategy<Value = String> {
        let level = prop_oneof![Just("a"), Just("b"), Just(""), Just("$s"), Just("c")];
        prop::collection::vec(level, 1..6)
            .prop_map(|levels| levels.join("/"))
            .prop_filter("topics are non-empty", |t| !t.is_empty())
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, u32),
        Remove(String),
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            (filter_strategy(), any::<u32>()).prop_map(|(f, v)| Op::Insert(f, v)),
            filter_strategy().prop_map(Op::Remove),
        ]
    }

    proptest! {
        #[test]
        fn for_each_match_agrees_with_reference(
            filters in prop::collection::btree_set(filter_strategy(), 0..40),
            topics in prop::collection::vec(topic_strategy(), 1..20),
        ) {
            let mut t = TopicTrie::new();
            for f in &filters {
                prop_assert!(crate::proto::topic::validate_topic_filter(f).is_ok(), "{f}");
                t.insert(f, ());
            }
            for topic in &topics {
                let expected: Vec<String> =
                    filters.iter().filter(|f| matches(f, topic)).cloned().collect();
                // `matched` sorts, and duplicates would show up as extra entries.
                prop_assert_eq!(matched(&t, topic), expected, "topic {:?}", topic);
            }
        }

        #[test]
        fn behaves_like_btreemap(ops in prop::collection::vec(op_strategy(), 1..80),
                                 topics in prop::collection::vec(topic_strategy(), 1..8)) {
            let mut t = TopicTrie::new();
            let mut model = BTreeMap::new();
            for op in &ops {
                match op {
                    Op::Insert(f, v) => prop_assert_eq!(t.insert(f, *v), model.insert(f.clone(), *v)),
                    Op::Remove(f) => prop_assert_eq!(t.remove(f), model.remove(f)),
                }
                prop_assert_eq!(t.len(), model.len());
                check_invariants(&t);
            }
            for (f, v) in &model {
                prop_assert_eq!(t.get(f), Some(v));
            }
            let stored: BTreeMap<String, u32> =
                t.iter().map(|(f, v)| (f.to_string(), *v)).collect();
            prop_assert_eq!(&stored, &model);
            for topic in &topics {
                let expected: Vec<String> =
                    model.keys().filter(|f| matches(f, topic)).cloned().collect();
                prop_assert_eq!(matched(&t, topic), expected);
            }
            // Emptying the trie returns every slot but the root; refilling reuses them.
            let arena = t.nodes.len();
            for f in model.keys() {
                t.remove(f);
            }
            prop_assert!(t.is_empty());
            prop_assert_eq!(t.free.len(), arena - 1);
            for (f, v) in &model {
                t.insert(f, *v);
            }
            prop_assert_eq!(t.nodes.len(), arena);
            check_invariants(&t);
        }
    }
}

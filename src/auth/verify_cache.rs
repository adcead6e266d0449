//! A bounded cache of recent successful password checks, so a reconnect storm of known
//! devices does not cost one argon2 run (tens of ms of CPU) per connection.
//!
//! Entry: user name → HMAC-SHA-256, under a random per-cache key, of the password and the
//! back end's tag for the user's stored secret ([`super::PasswordAuth::cache_tag`]: for the
//! password file, the PHC string). The password itself is never kept, and the MAC cannot
//! be reversed or checked without the key, which never leaves the process. A hit needs the
//! same password *and* the same stored hash, so a changed password misses; a reload drops
//! the whole cache anyway (a new one comes with the new back end).
//!
//! Bounded by `auth_cache_size` entries (0 disables it); when full the oldest entry goes
//! (first in, first out). Striped: [`STRIPES`] mutexes chosen by a hash of the user name,
//! each held only for one map operation, so shards rarely meet on a lock.
//!
//! Owned: one per loaded back end, shared by every shard.

use std::collections::VecDeque;
use std::sync::Mutex;

use ahash::AHashMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Lock stripes.
pub const STRIPES: usize = 16;

type Tag = [u8; 32];

/// See the module docs. Shared by every shard.
pub struct VerifyCache {
    key: [u8; 32],
    hasher: ahash::RandomState,
    /// Entries per stripe.
    per_stripe: usize,
    stripes: Vec<Mutex<Stripe>>,
}

#[derive(Default)]
struct Stripe {
    map: AHashMap<Box<str>, Tag>,
    /// Users in insertion order (each user of `map` exactly once).
    order: VecDeque<Box<str>>,
}

/// What an insertion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored (new or refreshed).
    Stored,
    /// Stored, and the stripe's oldest entry was dropped to make room.
    Evicted,
    /// The cache is disabled (size 0).
    Disabled,
}

impl VerifyCache {
    /// A cache of about `capacity` entries (rounded up to a multiple of the stripes);
    /// 0 disables it, as does a failing OS random source.
    pub fn new(capacity: usize) -> VerifyCache {
        let mut key = [0u8; 32];
        let capacity = match getrandom::fill(&mut key) {
            Ok(()) => capacity,
            Err(e) => {
                tracing::warn!("password cache disabled: no OS randomness: {e}");
                0
            }
        };
        let per_stripe = capacity.div_ceil(STRIPES);
        let stripes = if per_stripe == 0 { 0 } else { STRIPES };
        VerifyCache {
            key,
            hasher: ahash::RandomState::new(),
            per_stripe,
            stripes: (0..stripes).map(|_| Mutex::default()).collect(),
        }
    }

    /// Entries the cache can hold.
    pub fn capacity(&self) -> usize {
        self.per_stripe * self.stripes.len()
    }

    /// Whether `user` last succeeded with this `password` against this stored `tag`.
    pub fn hit(&self, user: &str, password: &[u8], tag: &[u8]) -> bool {
        let Some(stripe) = self.stripe(user) else {
            return false;
        };
        let mac = self.mac(password, tag);
        let guard = match stripe.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard
            .map
            .get(user)
            .is_some_and(|stored| bool::from(stored.ct_eq(&mac)))
    }

    /// Remember a successful check.
    pub fn insert(&self, user: &str, password: &[u8], tag: &[u8]) -> Inserted {
        let Some(stripe) = self.stripe(user) else {
            return Inserted::Disabled;
        };
        let mac = self.mac(password, tag);
        let mut s = match stripe.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(stored) = s.map.get_mut(user) {
            *stored = mac;
            return Inserted::Stored;
        }
        let mut result = Inserted::Stored;
        if s.map.len() >= self.per_stripe {
            if let Some(oldest) = s.order.pop_front() {
                s.map.remove(&oldest);
                result = Inserted::Evicted;
            }
        }
        let user: Box<str> = user.into();
        s.order.push_back(user.clone());
        s.map.insert(user, mac);
        result
    }

    /// Entries held (for tests and logs; takes every stripe's lock).
    pub fn len(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| s.lock().map_or(0, |g| g.map.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn stripe(&self, user: &str) -> Option<&Mutex<Stripe>> {
        if self.stripes.is_empty() {
            return None;
        }
        let i = self.hasher.hash_one(user) as usize % self.stripes.len();
        self.stripes.get(i)
    }

    fn mac(&self, password: &[u8], tag: &[u8]) -> Tag {
        // HMAC takes keys of any length: this cannot fail.
        let Ok(mut m) = <Hmac<Sha256> as Mac>::new_from_slice(&self.key) else {
            return [0; 32];
        };
        // Length-prefixed so (password, tag) pairs cannot run into each other.
        m.update(&(password.len() as u64).to_be_bytes());
        m.update(password);
        m.update(tag);
        m.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_need_the_same_password_and_stored_hash() {
        let c = VerifyCache::new(100);
        assert!(!c.hit("alice", b"pw", b"hash1"));
        assert_eq!(c.insert("alice", b"pw", b"hash1"), Inserted::Stored);
        assert!(c.hit("alice", b"pw", b"hash1"));
        assert!(!c.hit("alice", b"pw2", b"hash1"), "other password");
        assert!(
            !c.hit("alice", b"pw", b"hash2"),
            "password changed in the file"
        );
        assert!(!c.hit("bob", b"pw", b"hash1"), "other user");
        // The length prefix separates password from tag.
        assert!(!c.hit("alice", b"pwh", b"ash1"));
        assert_eq!(c.insert("alice", b"new", b"hash2"), Inserted::Stored);
        assert!(c.hit("alice", b"new", b"hash2"));
        assert!(!c.hit("alice", b"pw", b"hash1"));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn bounded_oldest_first() {
        let c = VerifyCache::new(STRIPES * 2);
        assert_eq!(c.capacity(), STRIPES * 2);
        let mut evicted = 0;
        for i in 0..1000 {
            if c.insert(&format!("user{i}"), b"pw", b"h") == Inserted::Evicted {
                evicted += 1;
            }
        }
        assert_eq!(c.len(), STRIPES * 2);
        assert_eq!(evicted, 1000 - STRIPES * 2);
        // The most recent user of some stripe is still there; the first ones are gone.
        assert!(c.hit("user999", b"pw", b"h"));
        assert!(!c.hit("user0", b"pw", b"h"));
    }

    #[test]
    fn size_zero_disables() {
        let c = VerifyCache::new(0);
        assert_eq!(c.capacity(), 0);
        assert_eq!(c.insert("alice", b"pw", b"h"), Inserted::Disabled);
        assert!(!c.hit("alice", b"pw", b"h"));
        assert!(c.is_empty());
    }
}

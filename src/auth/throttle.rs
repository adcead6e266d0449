//! Slowing down repeated login failures from one source address (sans-IO: the caller passes
//! `now` and sleeps for the answer).
//!
//! Policy: each address (IPv4, or the /64 of an IPv6 address — one host usually holds a
//! whole /64) has a failure count. Once it reaches `auth_throttle_after`, every further
//! attempt from there, good or bad, has its CONNACK delayed by `auth_throttle_base_ms`
//! doubled per failure past the threshold, up to `auth_throttle_max_ms`. A success does not
//! clear the count (an attacker holding one valid account could otherwise reset it between
//! guesses); the entry expires [`WINDOW`] after its last failure.
//!
//! Bounded: at most `auth_throttle_entries` addresses. When full, expired entries go first,
//! then the oldest entry (first in, first out) — counted, since that address starts over.
//!
//! Owned: one per broker, behind a mutex in [`super::service::Passwords`]; taken only for a
//! login attempt's two short updates.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ahash::AHashMap;

/// How long an address' failures are remembered after its last one.
pub const WINDOW: Duration = Duration::from_secs(600);

/// The throttle's limits (from the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Failures before attempts are delayed; 0 disables throttling.
    pub after: u32,
    /// The first delay.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
    /// Addresses remembered.
    pub entries: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            after: 5,
            base: Duration::from_millis(250),
            max: Duration::from_secs(10),
            entries: 65_536,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
}

/// Per-address failure counts. See the module docs.
#[derive(Debug, Default)]
pub struct Throttle {
    s: Settings,
    map: AHashMap<IpAddr, Entry>,
    /// Addresses in insertion order (each key of `map` exactly once).
    order: VecDeque<IpAddr>,
}

/// The address failures are counted under.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

impl Throttle {
    pub fn new(s: Settings) -> Throttle {
        Throttle {
            s,
            ..Throttle::default()
        }
    }

    /// How long the next attempt from `ip` waits before its answer.
    pub fn delay(&self, ip: IpAddr, now: Instant) -> Duration {
        if self.s.after == 0 {
            return Duration::ZERO;
        }
        let Some(e) = self.map.get(&key(ip)) else {
            return Duration::ZERO;
        };
        if now.saturating_duration_since(e.last) >= WINDOW || e.failures < self.s.after {
            return Duration::ZERO;
        }
        let doublings = (e.failures - self.s.after).min(30);
        self.s
            .base
            .saturating_mul(1u32 << doublings)
            .min(self.s.max)
    }

    /// Count a failure from `ip`. True when another address had to be forgotten for room.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.s.after == 0 || self.s.entries == 0 {
            return false;
        }
        let k = key(ip);
        if let Some(e) = self.map.get_mut(&k) {
            if now.saturating_duration_since(e.last) >= WINDOW {
                e.failures = 0;
            }
            e.failures = e.failures.saturating_add(1);
            e.last = now;
            return false;
        }
        let mut evicted = false;
        while self.map.len() >= self.s.entries {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            let expired = self
                .map
                .remove(&oldest)
                .is_some_and(|e| now.saturating_duration_since(e.last) >= WINDOW);
            evicted |= !expired;
        }
        self.order.push_back(k);
        self.map.insert(
            k,
            Entry {
                failures: 1,
                last: now,
            },
        );
        evicted
    }

    /// Addresses remembered.
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

    fn settings() -> Settings {
        Settings {
            after: 3,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            entries: 4,
        }
    }

    #[test]
    fn delays_double_after_the_threshold_up_to_the_cap() {
        let mut t = Throttle::new(settings());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let now = Instant::now();
        let mut delays = Vec::new();
        for _ in 0..8 {
            delays.push(t.delay(ip, now).as_millis());
            t.failed(ip, now);
        }
        assert_eq!(delays, [0, 0, 0, 100, 200, 400, 800, 1000]);
        // Another address is not affected.
        assert_eq!(t.delay("10.0.0.2".parse().unwrap(), now), Duration::ZERO);
        // Remembered for WINDOW after the last failure, then forgotten.
        assert_eq!(t.delay(ip, now + WINDOW / 2).as_millis(), 1000);
        assert_eq!(t.delay(ip, now + WINDOW), Duration::ZERO);
        t.failed(ip, now + WINDOW);
        assert_eq!(t.delay(ip, now + WINDOW), Duration::ZERO, "count restarted");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let mut t = Throttle::new(settings());
        let now = Instant::now();
        for i in 0..3 {
            let a: IpAddr = format!("2001:db8:1:2::{i}").parse().unwrap();
            t.failed(a, now);
        }
        let same64: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert_eq!(t.delay(same64, now).as_millis(), 100);
        let other64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(t.delay(other64, now), Duration::ZERO);
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        for _ in 0..3 {
            t.failed(mapped, now);
        }
        assert_eq!(t.delay(v4, now).as_millis(), 100);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn bounded_expired_first_then_oldest() {
        let mut t = Throttle::new(settings());
        let now = Instant::now();
        let ip = |i: u8| IpAddr::from([10, 0, 0, i]);
        for i in 0..4 {
            assert!(!t.failed(ip(i), now));
        }
        assert_eq!(t.len(), 4);
        // Full: the oldest (10.0.0.0) goes, and that is counted.
        assert!(t.failed(ip(9), now));
        assert_eq!(t.len(), 4);
        // Once they expired, making room is not an eviction.
        let later = now + WINDOW;
        assert!(!t.failed(ip(10), later));
        assert_eq!(t.len(), 4);
        for i in 20..200 {
            t.failed(ip(i), later);
        }
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn disabled_never_delays_or_remembers() {
        let mut t = Throttle::new(Settings {
            after: 0,
            ..settings()
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let now = Instant::now();
        for _ in 0..10 {
            t.failed(ip, now);
        }
        assert_eq!(t.delay(ip, now), Duration::ZERO);
        assert!(t.is_empty());
    }
}

//! Delivery checking: loss, duplicates and per-publisher order, from the sequence numbers
//! subscribers see. Pure: fed `(publisher, seq)` pairs, asked for a verdict once the
//! publishers' final counts are known.
//!
//! Memory is proportional to the number of *gaps*, not messages: a stream that arrives in
//! order costs one counter, so a fan-out run with thousands of subscribers stays small.

use std::collections::BTreeMap;

use ahash::AHashMap;

/// What one received sequence number meant for its publisher's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next expected number.
    InOrder,
    /// Ahead of the next expected number: `skipped` numbers are missing so far (lost, or
    /// still to come out of order).
    Gap { skipped: u64 },
    /// Fills an earlier gap: it arrived after a later number (an order violation unless the
    /// checker is unordered).
    Late,
    /// Already received.
    Duplicate,
}

/// One publisher's stream as seen by one checker.
#[derive(Debug, Clone, Default)]
struct Stream {
    /// One past the highest sequence number received.
    next: u64,
    /// Missing ranges below `next`, start → end (exclusive).
    holes: BTreeMap<u64, u64>,
    /// Total numbers inside `holes`.
    missing: u64,
}

impl Stream {
    fn record(&mut self, seq: u64) -> Arrival {
        if seq == self.next {
            self.next += 1;
            return Arrival::InOrder;
        }
        if seq > self.next {
            let skipped = seq - self.next;
            self.holes.insert(self.next, seq);
            self.missing += skipped;
            self.next = seq + 1;
            return Arrival::Gap { skipped };
        }
        // Below `next`: either fills a hole or is a repeat.
        let Some((&start, &end)) = self.holes.range(..=seq).next_back() else {
            return Arrival::Duplicate;
        };
        if seq >= end {
            return Arrival::Duplicate;
        }
        self.holes.remove(&start);
        if start < seq {
            self.holes.insert(start, seq);
        }
        if seq + 1 < end {
            self.holes.insert(seq + 1, end);
        }
        self.missing -= 1;
        Arrival::Late
    }

    fn unique(&self) -> u64 {
        self.next - self.missing
    }
}

/// Counts kept by a [`Checker`]; summed over subscribers for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Every PUBLISH recorded, duplicates included.
    pub received: u64,
    /// Messages received more than once where the QoS forbids it (0 and 2).
    pub duplicated: u64,
    /// Repeats at QoS 1 carrying the DUP flag, which at-least-once allows; reported, not an
    /// error.
    pub qos1_dups: u64,
    /// Repeats at QoS 1 *without* the DUP flag: a redelivery must be marked
    /// [MQTT-3.3.1-1], so a fresh copy means the broker routed the message twice. An error.
    pub qos1_unflagged: u64,
    /// Arrivals after a later message of the same publisher (ordered checkers only).
    pub out_of_order: u64,
}

/// The delivery verdict once every publisher's final count is known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The receiver's counts.
    pub tally: Tally,
    /// Distinct messages received.
    pub unique: u64,
    /// Expected but never received (holes plus a missing tail).
    pub lost: u64,
    /// Sequence numbers above what the publisher says it sent (a corrupt or foreign payload).
    pub phantom: u64,
}

/// Tracks the streams one receiver (a subscriber, or a whole shared-subscription group) gets.
///
/// Owned by the receiving task on its generator thread; moved to the main thread at the end.
#[derive(Debug, Clone)]
pub struct Checker {
    streams: AHashMap<u32, Stream>,
    /// QoS 1: repeats are allowed and counted apart.
    at_least_once: bool,
    /// Order is not promised (a shared group: members interleave), so late arrivals are
    /// not violations.
    ordered: bool,
    tally: Tally,
}

impl Checker {
    /// `qos` is the delivery QoS; `ordered` is false for a shared-subscription group.
    pub fn new(qos: u8, ordered: bool) -> Checker {
        Checker {
            streams: AHashMap::default(),
            at_least_once: qos == 1,
            ordered,
            tally: Tally::default(),
        }
    }

    /// Records one delivery carrying the DUP flag (or whose flag is unknown) and classifies
    /// it.
    pub fn record(&mut self, publisher: u32, seq: u64) -> Arrival {
        self.record_publish(publisher, seq, true)
    }

    /// Records one delivery and classifies it; `dup` is the PUBLISH's DUP flag, which a QoS 1
    /// repeat must carry.
    pub fn record_publish(&mut self, publisher: u32, seq: u64, dup: bool) -> Arrival {
        self.tally.received += 1;
        let arrival = self.streams.entry(publisher).or_default().record(seq);
        match arrival {
            Arrival::Duplicate if self.at_least_once && dup => self.tally.qos1_dups += 1,
            Arrival::Duplicate if self.at_least_once => self.tally.qos1_unflagged += 1,
            Arrival::Duplicate => self.tally.duplicated += 1,
            Arrival::Late if self.ordered => self.tally.out_of_order += 1,
            _ => {}
        }
        arrival
    }

    /// The counts so far.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// Judges the run. `expected` yields, for each publisher this receiver should hear from,
    /// how many messages it sent; a stream from any other publisher counts as phantom.
    pub fn verdict(&self, expected: impl IntoIterator<Item = (u32, u64)>) -> Verdict {
        let mut v = Verdict {
            tally: self.tally,
            ..Verdict::default()
        };
        let mut heard = ahash::AHashSet::new();
        for (publisher, sent) in expected {
            heard.insert(publisher);
            let Some(s) = self.streams.get(&publisher) else {
                v.lost += sent;
                continue;
            };
            v.unique += s.unique();
            if s.next > sent {
                // Numbers the publisher never sent: count them once, lose the rest.
                let beyond = s.next - sent;
                let holes_beyond: u64 = s
                    .holes
                    .range(..)
                    .map(|(&a, &b)| b.saturating_sub(a.max(sent)))
                    .sum();
                v.phantom += beyond - holes_beyond;
                v.lost += s.missing - holes_beyond;
            } else {
                v.lost += s.missing + (sent - s.next);
            }
        }
        // Streams from publishers this receiver should not hear at all.
        for (publisher, s) in &self.streams {
            if !heard.contains(publisher) {
                v.phantom += s.unique();
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(c: &mut Checker, publisher: u32, seqs: &[u64]) -> Vec<Arrival> {
        seqs.iter().map(|&s| c.record(publisher, s)).collect()
    }

    #[test]
    fn in_order_stream_is_complete() {
        let mut c = Checker::new(1, true);
        feed(&mut c, 7, &[0, 1, 2, 3]);
        let v = c.verdict([(7, 4)]);
        assert_eq!(v.unique, 4);
        assert_eq!(v.lost, 0);
        assert_eq!(v.tally.out_of_order, 0);
        assert_eq!(v.tally.duplicated + v.tally.qos1_dups, 0);
    }

    #[test]
    fn a_gap_and_a_missing_tail_are_loss() {
        let mut c = Checker::new(0, true);
        let a = feed(&mut c, 0, &[0, 1, 4, 5]);
        assert_eq!(a[2], Arrival::Gap { skipped: 2 });
        // Publisher sent 8: 2 and 3 lost in the middle, 6 and 7 at the end.
        let v = c.verdict([(0, 8)]);
        assert_eq!((v.unique, v.lost), (4, 4));
        assert_eq!(v.tally.out_of_order, 0);
    }

    #[test]
    fn late_arrival_fills_the_hole_and_is_an_order_violation() {
        let mut c = Checker::new(2, true);
        assert_eq!(
            feed(&mut c, 0, &[0, 3, 1, 2]),
            [
                Arrival::InOrder,
                Arrival::Gap { skipped: 2 },
                Arrival::Late,
                Arrival::Late
            ]
        );
        let v = c.verdict([(0, 4)]);
        assert_eq!((v.unique, v.lost, v.tally.out_of_order), (4, 0, 2));
    }

    #[test]
    fn unordered_checker_accepts_interleaving() {
        let mut c = Checker::new(1, false);
        feed(&mut c, 0, &[1, 0, 3, 2]);
        let v = c.verdict([(0, 4)]);
        assert_eq!((v.unique, v.lost, v.tally.out_of_order), (4, 0, 0));
    }

    #[test]
    fn duplicates_count_against_qos_0_and_2_but_apart_at_qos_1() {
        for (qos, dup, qos1) in [(0, 2, 0), (1, 0, 2), (2, 2, 0)] {
            let mut c = Checker::new(qos, true);
            let a = feed(&mut c, 0, &[0, 1, 1, 2, 0]);
            assert_eq!(a[2], Arrival::Duplicate);
            assert_eq!(a[4], Arrival::Duplicate);
            let v = c.verdict([(0, 3)]);
            assert_eq!((v.unique, v.lost), (3, 0), "qos {qos}");
            assert_eq!(v.tally.duplicated, dup, "qos {qos}");
            assert_eq!(v.tally.qos1_dups, qos1, "qos {qos}");
            assert_eq!(v.tally.out_of_order, 0, "a repeat is not reordering");
        }
    }

    #[test]
    fn a_qos_1_repeat_must_carry_dup() {
        let mut c = Checker::new(1, true);
        c.record_publish(0, 0, false);
        assert_eq!(c.record_publish(0, 0, true), Arrival::Duplicate);
        assert_eq!(c.record_publish(0, 0, false), Arrival::Duplicate);
        let t = c.tally();
        assert_eq!((t.qos1_dups, t.qos1_unflagged, t.duplicated), (1, 1, 0));
    }

    #[test]
    fn a_duplicate_inside_a_split_hole_is_still_a_duplicate() {
        let mut c = Checker::new(0, true);
        feed(&mut c, 0, &[0, 10, 5]);
        assert_eq!(c.record(0, 5), Arrival::Duplicate);
        assert_eq!(c.record(0, 4), Arrival::Late);
        assert_eq!(c.record(0, 6), Arrival::Late);
        let v = c.verdict([(0, 11)]);
        assert_eq!((v.unique, v.lost), (5, 6));
    }

    #[test]
    fn streams_are_per_publisher_and_silence_is_loss() {
        let mut c = Checker::new(1, true);
        feed(&mut c, 0, &[0, 1]);
        feed(&mut c, 1, &[0]);
        feed(&mut c, 0, &[2]);
        let v = c.verdict([(0, 3), (1, 1), (2, 5)]);
        assert_eq!((v.unique, v.lost, v.tally.out_of_order), (4, 5, 0));
    }

    #[test]
    fn foreign_streams_and_numbers_beyond_the_sent_count_are_phantom() {
        let mut c = Checker::new(1, true);
        feed(&mut c, 0, &[0, 1, 2, 3]);
        feed(&mut c, 9, &[0]);
        let v = c.verdict([(0, 2)]);
        assert_eq!((v.phantom, v.lost), (2 + 1, 0));
    }
}

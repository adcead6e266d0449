//! Topic matching benchmarks for `route::trie::TopicTrie`.
//!
//! `match/{N}_filters/{W}pct_wild`: one `for_each_match` call against a trie of N filters, W%
//! of them with wildcards, IoT-shaped:
//! - exact: `devices/{id}/cmd`
//! - wildcard: `site/{n}/+/temp`, `site/{n}/#` and `fleet/+/{n}/status`, in rotation.
//!
//! Published topics are drawn so that most hit at least one filter: `devices/{id}/cmd`,
//! `site/{n}/{room}/temp` and `fleet/{truck}/{n}/status`. Each trie is built once per benchmark
//! and dropped before the next one is built.
//!
//! `trie/insert` and `trie/remove`: building and emptying a trie of `CHURN_FILTERS` filters.
//!
//! Quick run: `cargo bench --bench topic_match -- --quick 'match/100k'`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringmq::route::trie::TopicTrie;

/// Number of stored filters.
const FILTER_COUNTS: [usize; 3] = [1_000, 100_000, 1_000_000];
/// Percentage of stored filters that contain `+` or `#`.
const WILDCARD_PCTS: [usize; 3] = [10, 50, 90];
/// Distinct topics cycled through by the match benchmarks.
const TOPICS: usize = 4_096;
/// Filters inserted/removed per iteration of `trie/insert` and `trie/remove`.
const CHURN_FILTERS: usize = 10_000;
const CHURN_WILD_PCT: usize = 50;

/// splitmix64: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The i-th of `count` filters; filter i is a wildcard filter for `wild_pct`% of i.
fn filter(i: usize, wild_pct: usize) -> String {
    if i % 100 >= wild_pct {
        return format!("devices/{i}/cmd");
    }
    match i % 3 {
        0 => format!("site/{i}/+/temp"),
        1 => format!("site/{i}/#"),
        _ => format!("fleet/+/{i}/status"),
    }
}

fn filters(count: usize, wild_pct: usize) -> Vec<String> {
    (0..count).map(|i| filter(i, wild_pct)).collect()
}

fn topics(count: usize, rng: &mut Rng) -> Vec<String> {
    (0..TOPICS)
        .map(|_| {
            let i = rng.below(count);
            match rng.below(3) {
                0 => format!("devices/{i}/cmd"),
                1 => format!("site/{i}/room{}/temp", rng.below(16)),
                _ => format!("fleet/truck{}/{i}/status", rng.below(64)),
            }
        })
        .collect()
}

fn label(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

fn bench_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("match");
    group.throughput(Throughput::Elements(1));
    let mut rng = Rng(0x5EED);
    for &count in &FILTER_COUNTS {
        for &wild in &WILDCARD_PCTS {
            let name = format!("{}_filters/{wild}pct_wild", label(count));
            // Skip the (slow) build when a filter on the command line excludes this bench.
            if !selected(&format!("match/{name}")) {
                continue;
            }
            let mut trie = TopicTrie::new();
            for (i, f) in filters(count, wild).iter().enumerate() {
                trie.insert(f, i as u32);
            }
            let topics = topics(count, &mut rng);
            let mut next = 0;
            group.bench_function(&name, |b| {
                b.iter(|| {
                    let topic = &topics[next % TOPICS];
                    next += 1;
                    let mut hits = 0u32;
                    trie.for_each_match(black_box(topic), |_, v| hits = hits.wrapping_add(*v));
                    black_box(hits)
                })
            });
        }
    }
    group.finish();
}

fn bench_churn(c: &mut Criterion) {
    let filters = filters(CHURN_FILTERS, CHURN_WILD_PCT);
    let mut group = c.benchmark_group("trie");
    group.throughput(Throughput::Elements(CHURN_FILTERS as u64));
    let name = format!("{}_filters/{CHURN_WILD_PCT}pct_wild", label(CHURN_FILTERS));
    group.bench_function(format!("insert/{name}"), |b| {
        b.iter(|| {
            let mut trie = TopicTrie::new();
            for f in &filters {
                trie.insert(f, ());
            }
            trie
        })
    });
    group.bench_function(format!("remove/{name}"), |b| {
        b.iter_batched(
            || {
                let mut trie = TopicTrie::new();
                for f in &filters {
                    trie.insert(f, ());
                }
                trie
            },
            |mut trie| {
                for f in &filters {
                    trie.remove(f);
                }
                trie
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// Whether criterion's name filter (the first free argument) would run `id`. Used only to
/// avoid building tries for benchmarks that will not run; criterion still does the real
/// filtering.
fn selected(id: &str) -> bool {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg.starts_with("--") {
            // Options that take a value; skip it.
            if matches!(
                arg.as_str(),
                "--save-baseline"
                    | "--baseline"
                    | "--load-baseline"
                    | "--sample-size"
                    | "--warm-up-time"
                    | "--measurement-time"
                    | "--nresamples"
                    | "--noise-threshold"
                    | "--confidence-level"
                    | "--significance-level"
                    | "--plotting-backend"
                    | "--output-format"
                    | "--color"
                    | "--profile-time"
                    | "--format"
            ) {
                args.next();
            }
            continue;
        }
        // Criterion takes a regex; only plain substrings are judged here.
        let plain = !arg.contains(|c: char| ".*+?()[]{}|^$\\".contains(c));
        return !plain || id.contains(&arg);
    }
    true
}

criterion_group!(benches, bench_match, bench_churn);
criterion_main!(benches);

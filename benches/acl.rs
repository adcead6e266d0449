//! Authorization check cost (`ringmq::acl`): what a publish, a delivery and a SUBSCRIBE pay
//! with an ACL configured.
//!
//! The ACL has `RULES` rules in the `all` section and a user section of 4, IoT-shaped:
//! `site/{n}/+/temp/#`-style literals and wildcards, `%u`/`%c` patterns; topics have 5
//! levels. Names: `acl/{check}/{RULES}_rules/{case}`:
//! - `first`: the first rule decides; `last`: the last one does; `default`: none matches;
//! - `read_user_subst`: a `%u` rule decides after the other rules;
//! - `subscribe_*`: coverage of a filter (`exact`: covered, no deny overlaps).
//!
//! `acl/none`: the fast path without an ACL (one branch on an `Option`).
//!
//! Quick run: `cargo bench --bench acl -- --quick`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ringmq::acl::{Acl, Who};

const RULES: usize = 20;

fn acl_text() -> String {
    let mut t = String::from("default deny\nuser alice\n");
    for n in 0..4 {
        t.push_str(&format!("allow write home/alice/{n}/+/set\n"));
    }
    t.push_str("all\n");
    t.push_str("allow readwrite fleet/first/+/+/x\n");
    for n in 1..RULES - 3 {
        match n % 3 {
            0 => t.push_str(&format!("deny read site/{n}/secret/#\n")),
            1 => t.push_str(&format!("allow write site/{n}/+/temp/#\n")),
            _ => t.push_str(&format!("allow read fleet/{n}/+/status/+\n")),
        }
    }
    t.push_str("allow read users/%u/+/+/+\n");
    t.push_str("allow write devices/%c/+/+/state\n");
    t.push_str("allow readwrite last/+/+/+/#\n");
    t
}

fn bench(c: &mut Criterion) {
    let acl = Acl::parse(&acl_text()).expect("bench ACL parses");
    assert_eq!(acl.rules(), RULES + 4);
    let who = Who::new(Some("alice"), "sensor-0042");
    let mut g = c.benchmark_group("acl");

    let none: Option<&Acl> = black_box(None);
    g.bench_function("none", |b| {
        b.iter(|| none.map_or(true, |a| a.can_read(&who, black_box("a/b/c/d/e"))))
    });
    let name = |check: &str, case: &str| format!("{check}/{RULES}_rules/{case}");
    for (case, topic) in [
        ("first", "fleet/first/a/b/x"),
        ("last", "last/one/two/three/four"),
        ("default", "nothing/matches/this/topic/here"),
    ] {
        g.bench_function(name("write", case), |b| {
            b.iter(|| acl.can_write(black_box(&who), black_box(topic)))
        });
        g.bench_function(name("read", case), |b| {
            b.iter(|| acl.can_read(black_box(&who), black_box(topic)))
        });
    }
    g.bench_function(name("read", "user_subst"), |b| {
        b.iter(|| acl.can_read(black_box(&who), black_box("users/alice/a/b/c")))
    });
    for (case, filter) in [
        ("subscribe_exact", "last/+/+/+/#"),
        ("subscribe_overlap", "#"),
        ("subscribe_denied", "site/3/secret/#"),
    ] {
        g.bench_function(name("subscribe", case), |b| {
            b.iter(|| acl.can_subscribe(black_box(&who), black_box(filter)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

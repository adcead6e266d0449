//! MQTT 3.1.1 section 4.7 (topic names and filters): wildcard matching, empty levels,
//! case sensitivity and `$`-topics, checked by publishing through the real broker.

mod common;

use common::*;
use std::time::Duration;

const SECS5: Duration = Duration::from_secs(5);

/// (filter, topic, should the filter match the topic, the spec statement it exercises)
const CASES: &[(&str, &str, bool, &str)] = &[
    (
        "sport/#",
        "sport",
        true,
        "MQTT 4.7.1.2: `#` also matches the parent level",
    ),
    ("sport/#", "sport/tennis", true, "MQTT 4.7.1.2"),
    (
        "sport/#",
        "sport/tennis/player1",
        true,
        "MQTT 4.7.1.2: any number of levels",
    ),
    (
        "sport/tennis/#",
        "sport/tennis",
        true,
        "MQTT 4.7.1.2: parent level",
    ),
    (
        "sport/#",
        "sports",
        false,
        "MQTT 4.7.1.2: levels, not prefixes",
    ),
    (
        "#",
        "any/thing",
        true,
        "MQTT 4.7.1.2: `#` alone matches every topic",
    ),
    (
        "sport/+",
        "sport/",
        true,
        "MQTT 4.7.1.3: `+` matches an empty level",
    ),
    (
        "sport/+",
        "sport",
        false,
        "MQTT 4.7.1.3: `+` needs a level to match",
    ),
    (
        "sport/+",
        "sport/tennis/player1",
        false,
        "MQTT 4.7.1.3: exactly one level",
    ),
    (
        "sport/+/player1",
        "sport/tennis/player1",
        true,
        "MQTT 4.7.1.3",
    ),
    ("+/+", "/finance", true, "MQTT 4.7.1.3: leading empty level"),
    ("/+", "/finance", true, "MQTT 4.7.1.3"),
    (
        "+",
        "/finance",
        false,
        "MQTT 4.7.1.3: `/finance` has two levels",
    ),
    ("+", "finance", true, "MQTT 4.7.1.3"),
    ("a//b", "a//b", true, "MQTT 4.7.3: empty levels are valid"),
    ("a/+/b", "a//b", true, "MQTT 4.7.3 with 4.7.1.3"),
    ("a/b", "a//b", false, "MQTT 4.7.3: `a//b` has three levels"),
    (
        "a/b/",
        "a/b",
        false,
        "MQTT 4.7.3: trailing `/` adds an empty level",
    ),
    (
        "ACCOUNTS",
        "Accounts",
        false,
        "MQTT 4.7.3: topics are case-sensitive",
    ),
    (
        "with space/x",
        "with space/x",
        true,
        "MQTT 4.7.3: spaces are allowed",
    ),
    // Any topic starting with `$` behaves so; `$TEST`, because clients may not publish
    // under `$SYS`, the broker's own tree (see tests/ops_sys.rs).
    (
        "#",
        "$TEST/test/load",
        false,
        "MQTT-4.7.2-1: `#` does not match `$` topics",
    ),
    (
        "+/test/load",
        "$TEST/test/load",
        false,
        "MQTT-4.7.2-1: nor does a leading `+`",
    ),
    ("+/#", "$TEST/test/load", false, "MQTT-4.7.2-1"),
    (
        "$TEST/#",
        "$TEST/test/load",
        true,
        "MQTT 4.7.2: `$TEST/#` matches",
    ),
    (
        "$TEST/+/load",
        "$TEST/test/load",
        true,
        "MQTT 4.7.2: `$TEST/+/load` matches",
    ),
    (
        "$TEST/#",
        "$TEST",
        true,
        "MQTT 4.7.2 with 4.7.1.2: parent level",
    ),
];

#[test]
fn filters_match_topics_as_specified() {
    let broker = Broker::start();
    let mut subs: Vec<Raw> = CASES
        .iter()
        .enumerate()
        .map(|(i, (filter, _, _, _))| {
            let (mut s, _) = raw_session(broker.addr, &format!("s{i}"), true);
            assert_eq!(
                raw_subscribe(&mut s, 1, &[(filter, 0)]),
                vec![0],
                "{filter}"
            );
            s
        })
        .collect();
    let (mut publ, _) = raw_session(broker.addr, "pub", true);
    for (i, (_, topic, _, _)) in CASES.iter().enumerate() {
        publ.send(&publish_packet(
            topic,
            0,
            false,
            false,
            0,
            i.to_string().as_bytes(),
        ));
    }
    // The publisher's packets are handled in order: this PUBACK means all were routed.
    publ.send(&publish_packet("sync", 1, false, false, 1, b""));
    assert_eq!(expect_packet(&mut publ), vec![0x40, 0x02, 0x00, 0x01]);

    let mut failures = Vec::new();
    for (i, (filter, topic, want, cite)) in CASES.iter().enumerate() {
        let mine = i.to_string().into_bytes();
        let wait = if *want {
            SECS5
        } else {
            Duration::from_millis(300)
        };
        let mut got = false;
        // Drain this subscriber: other cases' topics may match its filter too.
        while let Next::Packet(p) = next_within(&mut subs[i], wait) {
            let p = parse_publish(&p);
            if p.payload == mine {
                assert_eq!(p.topic, *topic);
                got = true;
                if *want {
                    break;
                }
            }
        }
        if got != *want {
            failures.push(format!(
                "filter {filter:?} topic {topic:?}: matched={got}, expected {want} ({cite})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn dollar_topics_retained_are_not_sent_to_leading_wildcards() {
    // MQTT-4.7.2-1: also retained `$` messages are not matched by `#` or `+/...`.
    let broker = Broker::start();
    let (mut publ, _) = raw_session(broker.addr, "pub", true);
    publ.send(&publish_packet("$TEST/ret", 1, true, false, 1, b"d"));
    assert_eq!(expect_packet(&mut publ), vec![0x40, 0x02, 0x00, 0x01]);
    publ.send(&publish_packet("plain", 1, true, false, 2, b"p"));
    assert_eq!(expect_packet(&mut publ), vec![0x40, 0x02, 0x00, 0x02]);

    let (mut all, _) = raw_session(broker.addr, "all", true);
    assert_eq!(
        raw_subscribe(&mut all, 1, &[("#", 0), ("+/ret", 0)]),
        vec![0, 0]
    );
    let got = expect_publish(&mut all);
    assert_eq!((got.first, got.topic.as_str()), (0x31, "plain"));
    expect_silence(&mut all, Duration::from_millis(500));

    let (mut sys, _) = raw_session(broker.addr, "sys", true);
    assert_eq!(raw_subscribe(&mut sys, 1, &[("$TEST/#", 0)]), vec![0]);
    let got = expect_publish(&mut sys);
    assert_eq!(
        (got.first, got.topic.as_str(), &got.payload[..]),
        (0x31, "$TEST/ret", &b"d"[..])
    );
}

#[test]
fn empty_topic_name_closes() {
    // MQTT-4.7.3-1: topic names MUST be at least one character long.
    let broker = Broker::start();
    let (mut sub, _) = raw_session(broker.addr, "sub", true);
    assert_eq!(raw_subscribe(&mut sub, 1, &[("#", 0)]), vec![0]);
    let (mut raw, _) = raw_session(broker.addr, "empty", true);
    raw.send(&publish_packet("", 0, false, false, 0, b"x"));
    wait_closed(&mut raw, SECS5);
    expect_silence(&mut sub, Duration::from_millis(500));
}

#[test]
fn topic_of_one_slash_is_two_empty_levels() {
    // MQTT 4.7.3: `/` is a valid topic of two empty levels; `+/+` and `/#` match it.
    let broker = Broker::start();
    let (mut sub, _) = raw_session(broker.addr, "sub", true);
    assert_eq!(raw_subscribe(&mut sub, 1, &[("+/+", 1)]), vec![1]);
    let (mut publ, _) = raw_session(broker.addr, "pub", true);
    publ.send(&publish_packet("/", 0, false, false, 0, b"slash"));
    let got = expect_publish(&mut sub);
    assert_eq!((got.topic.as_str(), &got.payload[..]), ("/", &b"slash"[..]));
}

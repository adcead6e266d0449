//! Per-client limits on what a client sends: `--max-topic-length`, `--max-topic-levels`,
//! `--max-publish-rate`, and `--max-subscriptions` per client; each counted (the broker's
//! shutdown counters).
//!
//! Over-limit topic names are refused with 5.0 reason 0x90 Topic Name invalid ("the Topic
//! Name is not malformed, but is not accepted by this Server", §3.4.2.1 / §3.5.2.1 on PUBACK
//! and PUBREC, §3.14.2.1 on DISCONNECT for QoS 0, which has no acknowledgement); 3.1.1 can
//! only acknowledge or close the connection [MQTT-3.3.5-2]: the connection is closed.
//! Over-limit filters get a SUBACK failure: 5.0 0x8F Topic Filter invalid (§3.9.3), 3.1.1
//! 0x80 [MQTT-3.9.3-2].

mod common;

use std::time::{Duration, Instant};

use common::hostile::{expect_type, final_counter, Good};
use common::subs::{raw_session_v5, subscribe_v5};
use common::v5::{self, V5Client};
use common::{
    expect_packet, next_within, publish_packet, raw_session, raw_subscribe, Broker, Next, Raw,
};
use ringmq::proto::Properties;

/// A 5.0 PUBLISH without properties.
fn publish_v5(topic: &str, qos: u8, pkid: u16) -> Vec<u8> {
    let mut body = common::mqtt_str(topic);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.push(0);
    body.extend_from_slice(b"m");
    common::packet(0x30 | qos << 1, &body)
}

/// 16 bytes and 4 levels are allowed.
const LIMITS: [&str; 4] = ["--max-topic-length", "16", "--max-topic-levels", "4"];

#[test]
fn over_limit_topic_names_are_refused_before_routing_v5() {
    let mut b = Broker::start_with(&LIMITS);
    let mut sub = raw_session_v5(&b, "sub");
    sub.send(&subscribe_v5(1, None, &[("#", 1)]));
    assert_eq!(expect_type(&mut sub, 0x90), [0x90, 4, 0, 1, 0, 1]);
    let mut raw = raw_session_v5(&b, "pub");
    // Exactly at the limits: accepted and delivered.
    raw.send(&publish_v5("aaaa/bbbb/cc/ddd", 1, 1));
    assert_eq!(expect_packet(&mut raw), [0x40, 2, 0, 1]);
    // 17 bytes; 5 levels: PUBACK / PUBREC 0x90, the connection stays.
    raw.send(&publish_v5("aaaa/bbbb/cc/dddd", 1, 2));
    assert_eq!(expect_packet(&mut raw), [0x40, 3, 0, 2, 0x90]);
    raw.send(&publish_v5("a/b/c/d/e", 2, 3));
    assert_eq!(expect_packet(&mut raw), [0x50, 3, 0, 3, 0x90]);
    // The subscriber got the accepted message only.
    let first = expect_type(&mut sub, 0x32);
    assert!(
        first.windows(16).any(|w| w == b"aaaa/bbbb/cc/ddd"),
        "{first:02x?}"
    );
    assert_eq!(
        next_within(&mut sub, Duration::from_millis(300)),
        Next::Silent
    );
    // QoS 0 has no acknowledgement: DISCONNECT 0x90.
    raw.send(&publish_v5("a/b/c/d/e", 0, 0));
    let d = expect_packet(&mut raw);
    assert_eq!((d[0], d[2]), (0xE0, 0x90), "{d:02x?}");
    assert_eq!(next_within(&mut raw, Duration::from_secs(5)), Next::Closed);
    assert_eq!(final_counter(&mut b, "topic_name_over_limit"), 3);
}

#[test]
fn over_limit_topic_names_close_a_v311_connection() {
    let mut b = Broker::start_with(&LIMITS);
    let mut good = Good::connect(b.addr, "good");
    let (mut raw, _) = raw_session(b.addr, "pub", true);
    raw.send(&publish_packet("a/b/c/d/e", 1, false, false, 1, b"x"));
    assert_eq!(next_within(&mut raw, Duration::from_secs(5)), Next::Closed);
    good.round_trip("over-limit 3.1.1 publish");
    assert_eq!(final_counter(&mut b, "topic_name_over_limit"), 1);
}

#[test]
fn over_limit_filters_get_a_suback_failure() {
    let mut b = Broker::start_with(&LIMITS);
    let (mut raw, _) = raw_session(b.addr, "sub3", true);
    assert_eq!(
        raw_subscribe(
            &mut raw,
            1,
            &[("a/b/c/d/+", 0), ("ok/+", 1), ("0123456789abcdefg", 0)]
        ),
        vec![0x80, 1, 0x80]
    );
    let mut v5 = raw_session_v5(&b, "sub5");
    // A shared subscription counts the levels of its filter: `$share/g/a/b/#` has three.
    v5.send(&subscribe_v5(
        2,
        None,
        &[("a/+/c/d/#", 0), ("$share/g/a/b/#", 1)],
    ));
    assert_eq!(expect_type(&mut v5, 0x90), [0x90, 5, 0, 2, 0, 0x8F, 1]);
    // The granted ones work.
    let (mut p, _) = raw_session(b.addr, "pub", true);
    p.send(&publish_packet("ok/go", 0, false, false, 0, b"x"));
    assert_eq!(expect_type(&mut raw, 0x30)[0], 0x30);
    assert_eq!(final_counter(&mut b, "topic_filter_over_limit"), 3);
}

/// A will topic over the limits refuses the CONNECT: 5.0 CONNACK 0x90 Topic Name invalid
/// (§3.2.2.2: "the Will Topic Name is not malformed, but is not accepted by this Server");
/// 3.1.1 has no return code for it, the connection is closed.
#[test]
fn an_over_limit_will_topic_refuses_the_connect() {
    let mut b = Broker::start_with(&LIMITS);
    let mut c = v5::connect_packet("will5", true, 30, Properties::default());
    c.will = Some(v5::will("a/b/c/d/e", b"gone", Properties::default()));
    let (mut client, ack) = V5Client::connect_with(b.addr, c);
    assert_eq!(ack.code, 0x90);
    assert_eq!(
        next_within(&mut client.raw, Duration::from_secs(5)),
        Next::Closed
    );
    let mut raw = Raw::connect(b.addr);
    raw.send(&common::connect_v311_will(
        "will3",
        true,
        30,
        "0123456789abcdefg",
        b"x",
        0,
        false,
    ));
    assert_eq!(next_within(&mut raw, Duration::from_secs(5)), Next::Closed);
    // Within the limits the will is taken.
    let mut c = v5::connect_packet("will-ok", true, 30, Properties::default());
    c.will = Some(v5::will("a/b/c/d", b"gone", Properties::default()));
    assert_eq!(V5Client::connect_with(b.addr, c).1.code, 0);
    assert_eq!(final_counter(&mut b, "topic_name_over_limit"), 2);
}

/// `--max-publish-rate 20`: 60 QoS 1 publishes sent at once are all acknowledged and
/// delivered, in order, but the broker takes them at 20/s after a burst of 20 (so about two
/// seconds), by not reading from the client meanwhile. Other packets are not charged.
#[test]
fn a_client_over_its_publish_rate_is_slowed_not_dropped() {
    let mut b = Broker::start_with(&["--max-publish-rate", "20"]);
    let (mut sub, _) = raw_session(b.addr, "sub", true);
    assert_eq!(raw_subscribe(&mut sub, 1, &[("rate/#", 1)]), vec![1]);
    let (mut raw, _) = raw_session(b.addr, "pub", true);
    // Only PUBLISH packets count: 60 PINGREQs at once are answered at once.
    let start = Instant::now();
    raw.send(&[0xC0, 0].repeat(60));
    for _ in 0..60 {
        assert_eq!(expect_packet(&mut raw), [0xD0, 0]);
    }
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "pings are not rate limited"
    );
    let all: Vec<u8> = (1..=60u16)
        .flat_map(|i| publish_packet("rate/t", 1, false, false, i, &i.to_be_bytes()))
        .collect();
    let start = Instant::now();
    raw.send(&all);
    for i in 1..=60u16 {
        let ack = expect_packet(&mut raw);
        assert_eq!(ack, [0x40, 2, (i >> 8) as u8, i as u8], "PUBACK {i}");
        if i == 20 {
            assert!(
                start.elapsed() < Duration::from_millis(900),
                "the burst is immediate"
            );
        }
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1700) && took < Duration::from_secs(6),
        "60 publishes at 20/s with a burst of 20 took {took:?}"
    );
    for i in 1..=60u16 {
        let p = expect_type(&mut sub, 0x32);
        assert!(
            p.ends_with(&i.to_be_bytes()),
            "message {i} in order: {p:02x?}"
        );
        let pkid = [p[p.len() - 4], p[p.len() - 3]];
        sub.send(&[0x40, 2, pkid[0], pkid[1]]);
    }
    let throttled = final_counter(&mut b, "publish_rate_throttled");
    assert!(
        (30..=40).contains(&throttled),
        "throttled {throttled} times"
    );
}

/// `--max-subscriptions` holds per client: each of two 5.0 clients gets its own quota, and
/// every refusal (0x97 Quota exceeded, §3.9.3) is counted.
#[test]
fn max_subscriptions_is_per_client_and_counted() {
    let mut b = Broker::start_with(&["--max-subscriptions", "2"]);
    let mut clients: Vec<Raw> = ["one", "two"]
        .iter()
        .map(|id| raw_session_v5(&b, id))
        .collect();
    for c in &mut clients {
        c.send(&subscribe_v5(1, None, &[("a", 0), ("b", 1), ("c", 0)]));
        assert_eq!(expect_type(c, 0x90), [0x90, 6, 0, 1, 0, 0, 1, 0x97]);
    }
    assert_eq!(final_counter(&mut b, "subscriptions_refused"), 2);
}

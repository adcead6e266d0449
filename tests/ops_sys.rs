//! `$SYS` topics (issue 7): the broker's figures as retained QoS 0 messages under
//! `$SYS/broker/...`, published by shard 0 every `--sys-interval` seconds and routed to
//! subscribers on every shard; `#` never matches them [MQTT-4.7.2-1]; clients may not
//! publish there; they are never written to the durable log.

mod common;

use common::obs::*;
use common::v5::*;
use common::*;
use rumqttc::QoS;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn sys_broker(extra: &[&str]) -> Broker {
    let mut args = vec!["--sys-interval", "1", "--stats-interval-ms", "100"];
    args.extend_from_slice(extra);
    Broker::start_with(&args)
}

/// Collect `$SYS` values on `c` until `done` holds for them (at most 6 s).
fn sys_values(
    c: &mut TestClient,
    what: &str,
    done: impl Fn(&HashMap<String, String>) -> bool,
) -> HashMap<String, String> {
    let mut seen = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(6);
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {what} in $SYS: {seen:?}");
        if let Some(p) = c.recv_within(left) {
            let v = String::from_utf8_lossy(&p.payload).to_string();
            seen.insert(p.topic.clone(), v);
        }
    }
    seen
}

#[test]
fn sys_topics_report_version_uptime_and_connected_clients() {
    // Two shards: the values are published on shard 0 and retained on the topic's owner,
    // wherever the subscriber lives.
    let b = sys_broker(&["--shards", "2"]);
    let mut c = TestClient::connect(&b, "sys-watch", true);
    c.subscribe("$SYS/#", QoS::AtMostOnce);
    let seen = sys_values(&mut c, "one connected client", |m| {
        m.get("$SYS/broker/clients/connected").map(String::as_str) == Some("1")
            && m.contains_key("$SYS/broker/uptime")
            && m.contains_key("$SYS/broker/version")
    });
    assert_eq!(
        seen["$SYS/broker/version"],
        format!("ringmq {}", env!("CARGO_PKG_VERSION"))
    );
    let uptime = &seen["$SYS/broker/uptime"];
    let secs = uptime.strip_suffix(" seconds").expect("N seconds");
    assert!(secs.parse::<u64>().is_ok(), "{uptime}");
    // A second client shows up in the next rounds.
    let _other = TestClient::connect(&b, "sys-other", true);
    sys_values(&mut c, "two connected clients", |m| {
        m.get("$SYS/broker/clients/connected").map(String::as_str) == Some("2")
    });
    // A late subscriber gets the retained values at once (RETAIN set).
    let mut late = TestClient::connect(&b, "sys-late", true);
    late.subscribe("$SYS/broker/version", QoS::AtMostOnce);
    let p = late.recv();
    assert!(p.retain);
    assert_eq!(p.topic, "$SYS/broker/version");
}

#[test]
fn multi_level_wildcard_alone_gets_no_sys_topics() {
    // [MQTT-4.7.2-1] The Server MUST NOT match Topic Filters starting with a wildcard
    // character (# or +) with Topic Names beginning with a $ character.
    let b = sys_broker(&[]);
    let mut c = TestClient::connect(&b, "sys-hash", true);
    c.subscribe("#", QoS::AtMostOnce);
    c.subscribe("+/broker/#", QoS::AtMostOnce);
    // Two $SYS rounds pass; a marker shows the subscription works.
    std::thread::sleep(Duration::from_millis(2200));
    let publ = TestClient::connect(&b, "sys-hash-pub", true);
    publ.publish("plain/topic", QoS::AtMostOnce, false, "x");
    let p = c.recv();
    assert_eq!(p.topic, "plain/topic");
    c.expect_no_publish(Duration::from_millis(300));
}

#[test]
fn clients_may_not_publish_to_sys() {
    let b = sys_broker(&["--http-listen", "127.0.0.1:0"]);
    let http = ops_addr(&b);
    let mut watch = TestClient::connect(&b, "sys-guard", true);
    watch.subscribe("$SYS/x", QoS::AtMostOnce);
    // 5.0: PUBACK with 0x87 Not authorized (§3.4.2.1).
    let (mut v5, _) = V5Client::connect(b.addr, "sys-v5", Default::default());
    v5.publish(
        "$SYS/x",
        ringmq::proto::QoS::AtLeastOnce,
        7,
        b"no",
        Default::default(),
    );
    match v5.expect() {
        ringmq::proto::Packet::PubAck(a) => {
            assert_eq!(a.pkid, 7);
            assert_eq!(a.reason, 0x87);
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // 3.1.1 has no refusal: acknowledged [MQTT-3.3.5-2 leaves the choice], then dropped.
    let mut v3 = TestClient::connect(&b, "sys-v3", true);
    v3.publish_confirmed("$SYS/x", QoS::AtLeastOnce, false, "no");
    watch.expect_no_publish(Duration::from_millis(500));
    let e = scrape_until(http, "two refusals", |e| {
        e.get("ringmq_publishes_refused_total{reason=\"sys_topic\"}") >= 2.0
    });
    assert_eq!(
        e.get("ringmq_publishes_refused_total{reason=\"sys_topic\"}"),
        2.0
    );
}

/// Whether any file under `dir` contains `needle`.
fn tree_contains(dir: &std::path::Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            return tree_contains(&p, needle);
        }
        std::fs::read(&p).is_ok_and(|data| data.windows(needle.len()).any(|w| w == needle))
    })
}

#[test]
fn sys_values_are_not_written_to_the_journal() {
    let mut b = sys_broker(&["--durability", "process"]);
    let mut c = TestClient::connect(&b, "sys-journal", true);
    c.subscribe("$SYS/#", QoS::AtMostOnce);
    sys_values(&mut c, "the uptime", |m| {
        m.contains_key("$SYS/broker/uptime")
    });
    // A client's retained message is logged: the check below can see log contents.
    c.publish_confirmed("keep/me", QoS::AtLeastOnce, true, "kept");
    drop(c);
    // The shutdown snapshot restates every retained message; $SYS ones must be left out.
    assert_eq!(b.terminate(Duration::from_secs(10)), Some(0));
    assert!(tree_contains(&b.data_dir, b"keep/me"));
    assert!(!tree_contains(&b.data_dir, b"$SYS/broker"));
}

#[test]
fn a_will_under_sys_is_not_published() {
    // [MQTT-3.1.2-8] asks for the will on an abnormal close, but a client may not write
    // under `$SYS`: the will is dropped like its PUBLISH would be (and counted).
    let b = Broker::start_with(&["--http-listen", "127.0.0.1:0", "--stats-interval-ms", "100"]);
    let http = ops_addr(&b);
    let mut watch = TestClient::connect(&b, "sys-will-watch", true);
    watch.subscribe("$SYS/will", QoS::AtMostOnce);
    let mut o = opts(&b, "sys-will");
    o.set_last_will(rumqttc::LastWill::new(
        "$SYS/will",
        "gone",
        QoS::AtMostOnce,
        false,
    ));
    TestClient::connect_opts(o).drop_abruptly();
    watch.expect_no_publish(Duration::from_millis(800));
    scrape_until(http, "the refused will", |e| {
        e.get("ringmq_publishes_refused_total{reason=\"sys_topic\"}") == 1.0
    });
}

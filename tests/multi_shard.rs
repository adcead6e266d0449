//! The broker with several shards (`--shards 2`, `--shards 3`) must behave exactly like one
//! broker: routing, retained messages, client-id takeover and ordering cross shard borders.
//!
//! Which shard a client lands on is the broker's business; the tests use many client ids
//! and many connections so that, with any sane placement, clients sit on different shards.

mod common;

use common::*;
use rumqttc::QoS;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

fn broker(shards: usize) -> Broker {
    Broker::start_with(&["--shards", &shards.to_string()])
}

fn payload_str(p: &rumqttc::Publish) -> String {
    String::from_utf8(p.payload.to_vec()).expect("UTF-8 payload")
}

/// Every one of `subs` gets each payload in `want` exactly once, nothing more.
fn expect_exactly(subs: &mut [TestClient], want: &BTreeSet<String>) {
    for sub in subs.iter_mut() {
        let mut got = BTreeSet::new();
        for _ in 0..want.len() {
            let p = sub.recv();
            assert!(
                got.insert(payload_str(&p)),
                "{}: duplicate {p:?} [MQTT-4.3.1/4.3.2: no duplicates for fresh deliveries]",
                sub.id
            );
        }
        assert_eq!(&got, want, "{}", sub.id);
        sub.expect_no_publish(Duration::from_millis(300));
    }
}

fn cross_shard_exact_delivery(shards: usize) {
    // MQTT-3.3.2-3 / §4.7: a PUBLISH goes to every matching subscription, wherever the
    // subscriber's session lives.
    let broker = broker(shards);
    let mut subs: Vec<_> = (0..8)
        .map(|i| TestClient::connect(&broker, &format!("ms-sub-{i}"), true))
        .collect();
    for s in &mut subs {
        s.subscribe("ms/exact", QoS::AtLeastOnce);
    }
    let mut want = BTreeSet::new();
    for i in 0..8 {
        let mut publisher = TestClient::connect(&broker, &format!("ms-pub-{i}"), true);
        publisher.publish_confirmed("ms/exact", QoS::AtLeastOnce, false, format!("p{i}"));
        want.insert(format!("p{i}"));
    }
    expect_exactly(&mut subs, &want);
}

#[test]
fn cross_shard_exact_delivery_2_shards() {
    cross_shard_exact_delivery(2);
}

#[test]
fn cross_shard_exact_delivery_3_shards() {
    cross_shard_exact_delivery(3);
}

fn cross_shard_wildcard_delivery(shards: usize) {
    // MQTT-4.7.1-2 / MQTT-4.7.1-3: '#' and '+' filters match across shards; overlapping
    // filters of one client still deliver once (broker contract).
    let broker = broker(shards);
    let filters = ["ms/+/t", "ms/#", "+/a/t", "#", "ms/a/+", "+/+/+"];
    let mut subs: Vec<_> = filters
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut c = TestClient::connect(&broker, &format!("ms-wsub-{i}"), true);
            c.subscribe(f, QoS::AtLeastOnce);
            c
        })
        .collect();
    // One client with two overlapping filters.
    let mut both = TestClient::connect(&broker, "ms-wsub-both", true);
    both.subscribe("ms/#", QoS::AtLeastOnce);
    both.subscribe("ms/a/t", QoS::AtMostOnce);
    subs.push(both);

    let mut want = BTreeSet::new();
    for i in 0..6 {
        let mut publisher = TestClient::connect(&broker, &format!("ms-wpub-{i}"), true);
        publisher.publish_confirmed("ms/a/t", QoS::AtLeastOnce, false, format!("w{i}"));
        want.insert(format!("w{i}"));
    }
    expect_exactly(&mut subs, &want);
}

#[test]
fn cross_shard_wildcard_delivery_2_shards() {
    cross_shard_wildcard_delivery(2);
}

#[test]
fn cross_shard_wildcard_delivery_3_shards() {
    cross_shard_wildcard_delivery(3);
}

fn takeover_keeps_only_newest(shards: usize) {
    // MQTT-3.1.4-2: if the client id is already connected, the server disconnects the
    // existing client. Repeated connections land on various shards.
    let broker = broker(shards);
    let mut conns: Vec<Raw> = Vec::new();
    for _ in 0..6 {
        let (raw, _) = raw_session(broker.addr, "ms-same", true);
        if let Some(prev) = conns.last_mut() {
            // The previous holder of the id is closed by the broker.
            wait_closed(prev, WAIT);
        }
        conns.push(raw);
    }
    // The newest still works.
    let newest = conns.last_mut().unwrap();
    newest.send(&[0xC0, 0x00]);
    assert_eq!(
        expect_packet(newest),
        vec![0xD0, 0x00],
        "PINGRESP on the newest"
    );
    raw_subscribe(newest, 1, &[("ms/same", 1)]);
    let mut publisher = TestClient::connect(&broker, "ms-same-pub", true);
    publisher.publish_confirmed("ms/same", QoS::AtLeastOnce, false, "to newest");
    assert_eq!(expect_publish(newest).payload, b"to newest".to_vec());
}

#[test]
fn takeover_keeps_only_newest_2_shards() {
    takeover_keeps_only_newest(2);
}

#[test]
fn takeover_keeps_only_newest_3_shards() {
    takeover_keeps_only_newest(3);
}

fn concurrent_takeover_leaves_exactly_one(shards: usize) {
    // MQTT-3.1.4-2 under a race: six connections with the same id CONNECT at once; after
    // the dust settles exactly one of them is still connected.
    let broker = broker(shards);
    let addr = broker.addr;
    let handles: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                let mut raw = Raw::connect(addr);
                raw.send(&connect_v311("ms-race", true, 60));
                let ack = raw.read_packet();
                (raw, ack)
            })
        })
        .collect();
    let mut conns = Vec::new();
    for h in handles {
        let (raw, ack) = h.join().expect("connector thread");
        if let Some(ack) = ack {
            assert_eq!(ack, vec![0x20, 0x02, 0x00, 0x00], "CONNACK");
        }
        conns.push(raw);
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut alive = 0;
    for c in &mut conns {
        if try_send(c, &[0xC0, 0x00]) {
            match next_within(c, Duration::from_secs(2)) {
                Next::Packet(p) if p == [0xD0, 0x00] => alive += 1,
                Next::Closed => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(
        alive, 1,
        "exactly one connection for client id ms-race must survive"
    );
}

#[test]
fn concurrent_takeover_leaves_exactly_one_2_shards() {
    concurrent_takeover_leaves_exactly_one(2);
}

#[test]
fn concurrent_takeover_leaves_exactly_one_3_shards() {
    concurrent_takeover_leaves_exactly_one(3);
}

fn retained_reaches_every_shard(shards: usize) {
    // MQTT-3.3.1-6: a new subscription gets the matching retained messages, with RETAIN=1
    // (MQTT-3.3.1-8), whichever shard stored them; wildcard subscriptions gather them all.
    let broker = broker(shards);
    let topics = ["ret/1", "ret/2", "ret/3/x", "ret/4"];
    for (i, t) in topics.iter().enumerate() {
        let mut publisher = TestClient::connect(&broker, &format!("ms-rpub-{i}"), true);
        publisher.publish_confirmed(t, QoS::AtLeastOnce, true, format!("r{i}"));
        publisher.disconnect();
    }
    for i in 0..6 {
        let mut sub = TestClient::connect(&broker, &format!("ms-rsub-{i}"), true);
        sub.subscribe("ret/#", QoS::AtLeastOnce);
        let mut got = HashMap::new();
        for _ in 0..topics.len() {
            let p = sub.recv();
            assert!(p.retain, "MQTT-3.3.1-8: RETAIN=1 for {p:?}");
            got.insert(p.topic.clone(), payload_str(&p));
        }
        for (j, t) in topics.iter().enumerate() {
            assert_eq!(got.get(*t), Some(&format!("r{j}")), "sub {i}: retained {t}");
        }
        sub.subscribe("ret/+/x", QoS::AtMostOnce);
        let p = sub.recv();
        assert_eq!((p.topic.as_str(), p.retain), ("ret/3/x", true));
        sub.subscribe("ret/2", QoS::AtLeastOnce);
        let p = sub.recv();
        assert_eq!((p.topic.as_str(), p.retain), ("ret/2", true));
        sub.expect_no_publish(Duration::from_millis(200));
    }
}

#[test]
fn retained_reaches_every_shard_2_shards() {
    retained_reaches_every_shard(2);
}

#[test]
fn retained_reaches_every_shard_3_shards() {
    retained_reaches_every_shard(3);
}

fn suback_then_publish_never_loses(shards: usize) {
    // MQTT-3.8.4-1 / MQTT-3.3.2-3: once SUBACK is sent the subscription is in force, so a
    // QoS 1 message published by anyone right after the SUBACK must be delivered — also
    // when the publisher sits on another shard.
    let broker = broker(shards);
    let mut subs: Vec<_> = (0..5)
        .map(|i| TestClient::connect(&broker, &format!("ms-fsub-{i}"), true))
        .collect();
    let mut pubs: Vec<_> = (0..5)
        .map(|i| TestClient::connect(&broker, &format!("ms-fpub-{i}"), true))
        .collect();
    for i in 0..50 {
        let sub = &mut subs[i % 5];
        let publisher = &mut pubs[(i / 5) % 5];
        let (filter, topic) = if i % 2 == 0 {
            (format!("fresh/{i}"), format!("fresh/{i}"))
        } else {
            (format!("fresh/{i}/+"), format!("fresh/{i}/x"))
        };
        sub.subscribe(&filter, QoS::AtLeastOnce);
        publisher.publish("fresh/noise", QoS::AtMostOnce, false, "noise");
        publisher.publish(&topic, QoS::AtLeastOnce, false, format!("{i}"));
        let p = sub
            .recv_within(WAIT)
            .unwrap_or_else(|| panic!("iteration {i}: publish right after SUBACK was lost"));
        assert_eq!(
            (p.topic.as_str(), payload_str(&p)),
            (topic.as_str(), format!("{i}"))
        );
    }
    for p in &mut pubs {
        p.wait_publish_flows(10, QoS::AtLeastOnce);
    }
}

#[test]
fn suback_then_publish_never_loses_2_shards() {
    suback_then_publish_never_loses(2);
}

#[test]
fn suback_then_publish_never_loses_3_shards() {
    suback_then_publish_never_loses(3);
}

fn per_publisher_order_across_shards(shards: usize) {
    // MQTT-4.6.0-6: each subscriber sees every publisher's messages in publish order,
    // with publishers and subscribers spread across shards.
    const N: u32 = 200;
    let broker = broker(shards);
    let mut subs: Vec<_> = (0..4)
        .map(|i| {
            let mut c = TestClient::connect(&broker, &format!("ms-osub-{i}"), true);
            c.subscribe("ord/t", QoS::AtLeastOnce);
            c
        })
        .collect();
    let publishers: Vec<_> = (0..4)
        .map(|i| TestClient::connect(&broker, &format!("ms-opub-{i}"), true))
        .collect();
    let threads: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            std::thread::spawn(move || {
                for seq in 0..N {
                    c.publish("ord/t", QoS::AtLeastOnce, false, format!("{i}:{seq}"));
                }
                c.wait_publish_flows(N as usize, QoS::AtLeastOnce);
            })
        })
        .collect();
    for sub in &mut subs {
        let mut next = [0u32; 4];
        for _ in 0..4 * N {
            let p = sub.recv();
            let s = payload_str(&p);
            let (who, seq) = s.split_once(':').expect("payload i:seq");
            let (who, seq): (usize, u32) = (who.parse().unwrap(), seq.parse().unwrap());
            assert_eq!(seq, next[who], "{}: publisher {who} out of order", sub.id);
            next[who] += 1;
        }
        sub.expect_no_publish(Duration::from_millis(200));
    }
    for t in threads {
        t.join().expect("publisher thread");
    }
}

#[test]
fn per_publisher_order_across_shards_2_shards() {
    per_publisher_order_across_shards(2);
}

#[test]
fn per_publisher_order_across_shards_3_shards() {
    per_publisher_order_across_shards(3);
}

fn persistent_session_across_shards(shards: usize) {
    // MQTT-3.1.2-4 / MQTT-3.1.2-5 / MQTT-3.2.2-2: a persistent session keeps its
    // subscriptions and QoS 1 messages while offline, whichever shards the publishers and
    // the reconnecting connection land on; several reconnects move the connection around.
    // One publisher per round: order is guaranteed per publisher [MQTT-4.6.0-6], not across
    // publishers (a PUBACK may leave before a cross-shard forward is flushed, so another
    // client's later message on the subscriber's shard can overtake it).
    let broker = broker(shards);
    let mut sub = TestClient::connect(&broker, "ms-persist", false);
    sub.subscribe("persist/+", QoS::AtLeastOnce);
    sub.disconnect();
    let mut next = 0u32;
    for round in 0..4 {
        let mut publisher = TestClient::connect(&broker, &format!("ms-ppub-{round}"), true);
        for _ in 0..3 {
            publisher.publish_confirmed("persist/x", QoS::AtLeastOnce, false, next.to_string());
            next += 1;
        }
        let mut sub = TestClient::connect(&broker, "ms-persist", false);
        assert!(sub.session_present, "round {round}: session must be found");
        for k in next - 3..next {
            let p = sub.recv();
            assert_eq!(payload_str(&p), k.to_string(), "round {round}");
        }
        sub.expect_no_publish(Duration::from_millis(200));
        sub.disconnect();
    }
}

#[test]
fn persistent_session_across_shards_2_shards() {
    persistent_session_across_shards(2);
}

#[test]
fn persistent_session_across_shards_3_shards() {
    persistent_session_across_shards(3);
}

fn will_reaches_every_shard(shards: usize) {
    // MQTT-3.1.2-8: the will of a client that vanishes is published to all matching
    // subscribers, on every shard.
    let broker = broker(shards);
    let mut subs: Vec<_> = (0..6)
        .map(|i| {
            let mut c = TestClient::connect(&broker, &format!("ms-will-sub-{i}"), true);
            c.subscribe(
                if i % 2 == 0 { "lw/#" } else { "lw/gone" },
                QoS::AtLeastOnce,
            );
            c
        })
        .collect();
    for i in 0..3 {
        let mut raw = Raw::connect(broker.addr);
        raw.send(&connect_v311_will(
            &format!("ms-will-{i}"),
            true,
            0,
            "lw/gone",
            format!("w{i}").as_bytes(),
            1,
            false,
        ));
        assert_eq!(expect_packet(&mut raw), vec![0x20, 0x02, 0x00, 0x00]);
        drop(raw);
    }
    let want: BTreeSet<String> = (0..3).map(|i| format!("w{i}")).collect();
    expect_exactly(&mut subs, &want);
}

#[test]
fn will_reaches_every_shard_2_shards() {
    will_reaches_every_shard(2);
}

#[test]
fn will_reaches_every_shard_3_shards() {
    will_reaches_every_shard(3);
}

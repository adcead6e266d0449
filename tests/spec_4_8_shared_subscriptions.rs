//! MQTT 5.0 §4.8.2 Shared Subscriptions (`$share/{ShareName}/{filter}`), served to 5.0 and
//! 3.1.1 clients alike, on one shard and across shards.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::subs::*;
use common::*;
use rumqttc::v5::mqttbytes::v5::{Filter, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;

const QUIET: Duration = Duration::from_millis(600);

fn payloads(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("m{i:03}")).collect()
}

/// Every payload in `want` arrived exactly once across `got`.
fn assert_exactly_once(got: &[Vec<Vec<u8>>], want: &[String]) {
    let all = tally(got.iter().flatten().map(|p| p.as_slice()));
    let dupes: Vec<_> = all.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dupes.is_empty(),
        "delivered twice through the group: {dupes:?}"
    );
    let missing: Vec<_> = want.iter().filter(|p| !all.contains_key(*p)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert_eq!(all.len(), want.len(), "unexpected payloads: {all:?}");
}

async fn group_of_v5(broker: &Broker, ids: &[String], filter: &str) -> Vec<V5Client> {
    let mut members = Vec::new();
    for id in ids {
        let mut c = V5Client::connect(broker, id).await;
        c.subscribe_qos(filter, QoS::AtLeastOnce).await;
        members.push(c);
    }
    members
}

/// Publish `want` at QoS 1 to `topic`, then collect what every member received.
async fn run_group(
    broker: &Broker,
    members: &mut [V5Client],
    topic: &str,
    want: &[String],
) -> Vec<Vec<Vec<u8>>> {
    let mut publisher = V5Client::connect(broker, "publisher").await;
    for p in want {
        publisher
            .publish(topic, QoS::AtLeastOnce, false, p.as_bytes())
            .await;
    }
    let mut got = Vec::new();
    for m in members.iter_mut() {
        got.push(
            m.drain(QUIET)
                .await
                .into_iter()
                .map(|p| p.payload.to_vec())
                .collect(),
        );
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_goes_to_exactly_one_member_balanced() {
    // §4.8.2: a message matching a Shared Subscription is sent to one session of the
    // group; the broker balances (round robin here).
    let broker = Broker::start();
    let ids: Vec<String> = (0..3).map(|i| format!("w{i}")).collect();
    let mut members = group_of_v5(&broker, &ids, "$share/workers/jobs/+").await;
    let want = payloads(60);
    let got = run_group(&broker, &mut members, "jobs/a", &want).await;
    assert_exactly_once(&got, &want);
    for (i, g) in got.iter().enumerate() {
        assert!(
            (10..=30).contains(&g.len()),
            "member {i} got {} of 60 (want about 20)",
            g.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_shared_subscribers_and_other_groups_still_get_every_message() {
    // §4.8.2: each Shared Subscription is independent; ordinary subscriptions are
    // unaffected. A session both in a group and subscribed non-shared gets both copies.
    let broker = Broker::start();
    let mut a = V5Client::connect(&broker, "a").await;
    a.subscribe_qos("$share/g1/t", QoS::AtLeastOnce).await;
    a.subscribe_qos("t", QoS::AtLeastOnce).await;
    let mut b = V5Client::connect(&broker, "b").await;
    b.subscribe_qos("$share/g1/t", QoS::AtLeastOnce).await;
    let mut c = V5Client::connect(&broker, "c").await;
    c.subscribe_qos("$share/g2/t", QoS::AtLeastOnce).await;
    let mut members = [a, b, c];
    let want = payloads(10);
    let got = run_group(&broker, &mut members, "t", &want).await;
    // a: 10 non-shared + its share of g1; b: the rest of g1; c: all of g2.
    assert_eq!(got[0].len() + got[1].len(), 20);
    assert_eq!(tally(got[2].iter().map(|p| p.as_slice())).len(), 10);
    let g1_of_a = got[0].len() - 10;
    assert!((3..=7).contains(&g1_of_a), "a got {g1_of_a} through g1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_and_v5_members_in_one_group() {
    // Shared subscriptions are served to 3.1.1 clients too (a `$share/...` filter is a
    // valid 3.1.1 filter; the broker gives it the 5.0 meaning).
    let broker = Broker::start();
    let (mut v3, _) = MqttClient::connect(opts(&broker, "v3member")).await;
    let codes = v3
        .subscribe("$share/mixed/t", rumqttc::QoS::AtLeastOnce)
        .await;
    assert_eq!(
        codes,
        vec![rumqttc::SubscribeReasonCode::Success(
            rumqttc::QoS::AtLeastOnce
        )]
    );
    let mut v5 = group_of_v5(&broker, &["v5member".into()], "$share/mixed/t").await;
    let want = payloads(20);
    let mut got = run_group(&broker, &mut v5, "t", &want).await;
    let mut v3_got = Vec::new();
    while let Some(Ok(ev)) = v3.next_event(QUIET).await {
        if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = ev {
            v3_got.push(p.payload.to_vec());
        }
    }
    assert_eq!(v3_got.len(), 10, "round robin over two ready members");
    got.push(v3_got);
    assert_exactly_once(&got, &want);
}

async fn multi_shard_group(shards: usize) {
    let n = shards.to_string();
    let broker = Broker::start_with(&["--shards", &n]);
    // Two members per shard, the publisher on shard 0.
    let ids: Vec<String> = (0..shards * 2)
        .map(|i| id_on_shard(&format!("ms{i}"), i % shards, shards))
        .collect();
    let mut members = group_of_v5(&broker, &ids, "$share/spread/s/#").await;
    let want = payloads(30 * shards);
    let got = run_group(&broker, &mut members, "s/x", &want).await;
    assert_exactly_once(&got, &want);
    let even = want.len() / members.len();
    for (i, g) in got.iter().enumerate() {
        assert!(
            g.len() >= even / 2 && g.len() <= even * 2,
            "member {i} (shard {}) got {} of {}",
            i % shards,
            g.len(),
            want.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_spread_over_two_shards() {
    multi_shard_group(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_spread_over_three_shards() {
    multi_shard_group(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_not_sent_on_a_shared_subscribe() {
    // §4.8.2: "Retained messages are not sent to the Session when it subscribes to a
    // Shared Subscription" (while an ordinary subscription gets them [MQTT-3.3.1-9]).
    let broker = Broker::start();
    let mut p = V5Client::connect(&broker, "p").await;
    p.publish("r/t", QoS::AtLeastOnce, true, b"kept").await;
    let mut s = V5Client::connect(&broker, "s").await;
    s.subscribe_qos("$share/g/r/#", QoS::AtLeastOnce).await;
    s.expect_no_publish(QUIET).await;
    s.subscribe_qos("r/#", QoS::AtLeastOnce).await;
    let got = s.expect_publish().await;
    assert!(got.retain);
    assert_eq!(&got.payload[..], b"kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_subscription_identifier_goes_with_the_message() {
    // [MQTT-3.3.4-3] the identifier of the member's own subscription.
    let broker = Broker::start();
    let mut a = V5Client::connect(&broker, "a").await;
    let codes = a
        .subscribe(Filter::new("$share/g/id/t", QoS::AtLeastOnce), Some(41))
        .await;
    assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    let mut b = V5Client::connect(&broker, "b").await;
    b.subscribe(Filter::new("$share/g/id/t", QoS::AtLeastOnce), Some(42))
        .await;
    let mut members = [a, b];
    let got = {
        let mut p = V5Client::connect(&broker, "p").await;
        for i in 0..4 {
            p.publish("id/t", QoS::AtLeastOnce, false, &[i]).await;
        }
        let mut out = Vec::new();
        for m in members.iter_mut() {
            out.push(m.drain(QUIET).await);
        }
        out
    };
    for (m, want) in got.iter().zip([41, 42]) {
        assert_eq!(m.len(), 2);
        for p in m {
            assert_eq!(sub_ids(p), vec![want]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_move_to_another_member_when_one_leaves() {
    // §4.8.2: QoS 1 messages sent to a member whose connection breaks before it
    // acknowledged them go to another member of the group (the broker does this at once);
    // so do messages still queued for it. Exactly once through the group.
    redelivery(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_move_to_a_member_on_another_shard() {
    redelivery(2).await;
}

async fn redelivery(shards: usize) {
    let n = shards.to_string();
    let broker = Broker::start_with(&["--shards", &n, "--max-inflight", "4"]);
    // The silent member: raw 3.1.1, never acknowledges.
    let silent_id = id_on_shard("silent", 0, shards);
    let (mut silent, _) = raw_session(broker.addr, &silent_id, true);
    assert_eq!(raw_subscribe(&mut silent, 1, &[("$share/g/q", 1)]), vec![1]);
    let other_id = id_on_shard("other", shards - 1, shards);
    let mut other = group_of_v5(&broker, &[other_id], "$share/g/q").await;
    let want = payloads(20);
    let mut publisher = V5Client::connect(&broker, "publisher").await;
    for p in &want {
        publisher
            .publish("q", QoS::AtLeastOnce, false, p.as_bytes())
            .await;
    }
    // The silent member holds up to 4 unacknowledged messages (its window). On one shard
    // the other member, ready, gets the rest; across shards the silent member's shard
    // still gets its half, queued behind the window.
    let mut held = Vec::new();
    while let Next::Packet(p) = next_within(&mut silent, QUIET) {
        let p = parse_publish(&p);
        assert_eq!(p.qos(), 1);
        held.push(p.payload);
    }
    assert!(!held.is_empty(), "the silent member got nothing to hold");
    assert_eq!(held.len(), 4, "the silent member's window");
    let before = other[0].drain(QUIET).await;
    if shards == 1 {
        assert_eq!(before.len() + held.len(), want.len());
    }
    // It leaves without acknowledging.
    drop(silent);
    let after = other[0].drain(Duration::from_millis(1500)).await;
    let after: Vec<Vec<u8>> = after.into_iter().map(|p| p.payload.to_vec()).collect();
    let after_set: BTreeSet<_> = after.iter().cloned().collect();
    for h in &held {
        assert!(after_set.contains(h), "held message {h:?} not redelivered");
    }
    let all: Vec<Vec<u8>> = before.into_iter().map(|p| p.payload.to_vec()).collect();
    assert_exactly_once(&[all, after], &want);
}

#[test]
fn acknowledged_messages_do_not_move_and_qos2_in_flight_stays() {
    // [MQTT-4.8.2-4]/[MQTT-4.8.2-5]: a QoS 2 message already sent stays with its member
    // (and goes to no other); acknowledged QoS 1 messages are done.
    let broker = Broker::start();
    let (mut a, _) = raw_session(broker.addr, "a", true);
    assert_eq!(raw_subscribe(&mut a, 1, &[("$share/g/z", 2)]), vec![2]);
    let (mut b, _) = raw_session(broker.addr, "b", true);
    assert_eq!(raw_subscribe(&mut b, 1, &[("$share/g/z", 2)]), vec![2]);
    let (mut p, _) = raw_session(broker.addr, "p", true);
    // Round robin a, b, a, b: a gets one QoS 2 and one QoS 1 message.
    for (i, qos) in [(1u16, 2u8), (2, 2), (3, 1), (4, 1)] {
        p.send(&publish_packet("z", qos, false, false, i, &[i as u8]));
        expect_packet(&mut p);
    }
    // a acknowledges its QoS 1 messages and leaves its QoS 2 ones unanswered.
    let mut a_got = Vec::new();
    while let Next::Packet(pk) = next_within(&mut a, QUIET) {
        let m = parse_publish(&pk);
        if m.qos() == 1 {
            a.send(&ack_v311(0x40, m.pkid.unwrap()));
        }
        a_got.push(m.qos());
    }
    a_got.sort_unstable();
    assert_eq!(a_got, vec![1, 2]);
    let mut b_got = Vec::new();
    while let Next::Packet(pk) = next_within(&mut b, QUIET) {
        if pk[0] == 0x62 {
            // PUBREL of b's own QoS 2 flow.
            b.send(&ack_v311(0x70, u16::from_be_bytes([pk[2], pk[3]])));
            continue;
        }
        let m = parse_publish(&pk);
        if m.qos() == 2 {
            b.send(&ack_v311(0x50, m.pkid.unwrap()));
        } else {
            b.send(&ack_v311(0x40, m.pkid.unwrap()));
        }
        b_got.push(m.payload);
    }
    assert_eq!(b_got.len(), 2, "round robin");
    drop(a);
    // Nothing of a's moves to b: its QoS 1 messages were acknowledged, its QoS 2 ones
    // were already sent.
    expect_silence(&mut b, QUIET);
}

#[test]
fn invalid_share_names_are_malformed_filters() {
    // [MQTT-4.8.2-1] the ShareName is at least one character; [MQTT-4.8.2-2] it holds no
    // "/", "+" or "#" and is followed by "/" and a topic filter. Such a filter is
    // malformed: 3.1.1 closes the connection; 5.0 sends DISCONNECT 0x8F (Topic Filter
    // invalid) and closes.
    let broker = Broker::start();
    for bad in [
        "$share//t",
        "$share/g+/t",
        "$share/#/t",
        "$share/g",
        "$share/g/",
    ] {
        let (mut raw, _) = raw_session(broker.addr, "v3bad", true);
        raw.send(&subscribe_packet(1, &[(bad, 0)]));
        wait_closed(&mut raw, Duration::from_secs(5));
        let mut raw = raw_session_v5(&broker, "v5bad");
        raw.send(&subscribe_v5(1, None, &[(bad, 0)]));
        let p = expect_packet(&mut raw);
        assert_eq!(disconnect_reason(&p), 0x8F, "{bad}");
        wait_closed(&mut raw, Duration::from_secs(5));
    }
}

#[test]
fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    // [MQTT-3.8.3-4]: DISCONNECT 0x82 (Protocol Error), then close.
    let broker = Broker::start();
    let mut raw = raw_session_v5(&broker, "nl");
    raw.send(&subscribe_v5(1, None, &[("$share/g/t", 0x04 | 1)]));
    let p = expect_packet(&mut raw);
    assert_eq!(disconnect_reason(&p), 0x82);
    wait_closed(&mut raw, Duration::from_secs(5));
}

#[test]
fn unsubscribe_leaves_the_group() {
    // §4.8.2 / [MQTT-3.10.4-1]: UNSUBSCRIBE of the whole `$share/...` filter ends the
    // membership; the rest of the group gets everything. 5.0 UNSUBACK: 0x00, then 0x11
    // (No subscription existed); 3.1.1 UNSUBACK has no codes.
    let broker = Broker::start();
    let mut a = raw_session_v5(&broker, "a");
    a.send(&subscribe_v5(1, None, &[("$share/g/u", 1)]));
    assert_eq!(
        expect_packet(&mut a),
        vec![0x90, 0x04, 0x00, 0x01, 0x00, 0x01]
    );
    let (mut b, _) = raw_session(broker.addr, "b", true);
    assert_eq!(raw_subscribe(&mut b, 1, &[("$share/g/u", 0)]), vec![0]);
    let mut unsub = vec![0x00, 0x02, 0x00];
    unsub.extend(mqtt_str("$share/g/u"));
    a.send(&packet(0xA2, &unsub));
    assert_eq!(
        expect_packet(&mut a),
        vec![0xB0, 0x04, 0x00, 0x02, 0x00, 0x00]
    );
    a.send(&packet(0xA2, &unsub));
    assert_eq!(
        expect_packet(&mut a),
        vec![0xB0, 0x04, 0x00, 0x02, 0x00, 0x11]
    );
    let (mut p, _) = raw_session(broker.addr, "p", true);
    for i in 0..4u8 {
        p.send(&publish_packet("u", 0, false, false, 0, &[i]));
    }
    for i in 0..4u8 {
        assert_eq!(expect_publish(&mut b).payload, vec![i]);
    }
    expect_silence(&mut a, QUIET);
    b.send(&unsubscribe_packet(9, &["$share/g/u"]));
    assert_eq!(expect_packet(&mut b), vec![0xB0, 0x02, 0x00, 0x09]);
    p.send(&publish_packet("u", 0, false, false, 0, b"x"));
    expect_silence(&mut b, QUIET);
}

#[test]
fn an_offline_member_is_passed_over_while_another_is_online() {
    // §4.8.2 leaves the choice of member to the server: a persistent member that is
    // offline gets nothing while an online member (here on another shard) can take it.
    let broker = Broker::start_with(&["--shards", "2"]);
    let away_id = id_on_shard("away", 0, 2);
    let (mut away, _) = raw_session(broker.addr, &away_id, false);
    assert_eq!(raw_subscribe(&mut away, 1, &[("$share/g/o", 1)]), vec![1]);
    raw_disconnect(away);
    let (mut here, _) = raw_session(broker.addr, &id_on_shard("here", 1, 2), true);
    assert_eq!(raw_subscribe(&mut here, 1, &[("$share/g/o", 1)]), vec![1]);
    let (mut p, _) = raw_session(broker.addr, "p", true);
    for i in 0..10u16 {
        p.send(&publish_packet("o", 1, false, false, i + 1, &[i as u8]));
        expect_packet(&mut p);
    }
    // (Order across members and shards is not promised for a shared subscription.)
    let mut got = BTreeSet::new();
    for _ in 0..10 {
        let m = expect_publish(&mut here);
        here.send(&ack_v311(0x40, m.pkid.unwrap()));
        got.insert(m.payload[0]);
    }
    assert_eq!(got, (0..10).collect());
    let (mut away, present) = raw_session(broker.addr, &away_id, false);
    assert!(present);
    expect_silence(&mut away, QUIET);
}

#[test]
fn without_another_member_a_persistent_session_keeps_its_messages() {
    // §4.8.2: the server MAY wait for the client to reconnect and retransmit; with no
    // other member that is what happens (DUP=1, same packet id [MQTT-3.3.1-1]).
    let broker = Broker::start();
    let (mut a, _) = raw_session(broker.addr, "alone", false);
    assert_eq!(raw_subscribe(&mut a, 1, &[("$share/g/k", 1)]), vec![1]);
    let (mut p, _) = raw_session(broker.addr, "p", true);
    p.send(&publish_packet("k", 1, false, false, 1, b"first"));
    expect_packet(&mut p);
    let sent = expect_publish(&mut a);
    assert_eq!(sent.payload, b"first");
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    p.send(&publish_packet("k", 1, false, false, 2, b"second"));
    expect_packet(&mut p);
    let (mut a, present) = raw_session(broker.addr, "alone", false);
    assert!(present);
    let again = expect_publish(&mut a);
    assert_eq!(
        (again.payload.as_slice(), again.dup()),
        (&b"first"[..], true)
    );
    assert_eq!(again.pkid, sent.pkid);
    a.send(&ack_v311(0x40, again.pkid.unwrap()));
    let queued = expect_publish(&mut a);
    assert_eq!(queued.payload, b"second");
}

#[test]
fn an_expiring_session_hands_its_messages_to_the_group() {
    // §4.8.2: "If the Client's Session terminates before the Client reconnects, the Server
    // SHOULD send the Application Message to another Client that is subscribed to the same
    // Shared Subscription." Here no other member existed when the connection ended, so
    // the message stayed with the session; when the session expires it moves.
    let broker = Broker::start();
    let mut body = mqtt_str("MQTT");
    body.extend_from_slice(&[5, 0x02, 0, 60]);
    body.extend_from_slice(&[5, 0x11, 0, 0, 0, 1]); // Session Expiry Interval 1 s
    body.extend(mqtt_str("expiring"));
    let mut a = Raw::connect(broker.addr);
    a.send(&packet(0x10, &body));
    assert_eq!(expect_packet(&mut a)[0], 0x20);
    a.send(&subscribe_v5(1, None, &[("$share/g/e", 1)]));
    assert_eq!(expect_packet(&mut a)[0], 0x90);
    let (mut p, _) = raw_session(broker.addr, "p", true);
    p.send(&publish_packet("e", 1, false, false, 1, b"held"));
    expect_packet(&mut p);
    // (a 5.0 PUBLISH: an empty property section precedes the payload)
    assert_eq!(expect_publish(&mut a).payload, b"\0held");
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    let (mut b, _) = raw_session(broker.addr, "b", true);
    assert_eq!(raw_subscribe(&mut b, 1, &[("$share/g/e", 1)]), vec![1]);
    let m = expect_publish(&mut b);
    assert_eq!(m.payload, b"held");
    expect_silence(&mut b, QUIET);
}

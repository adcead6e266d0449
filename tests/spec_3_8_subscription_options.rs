//! MQTT 5.0 §3.8.3.1 Subscription Options (No Local, Retain As Published, Retain Handling)
//! and §3.8.2.1.2 / §3.3.4 Subscription Identifiers.

mod common;

use std::time::Duration;

use common::subs::*;
use common::*;
use rumqttc::v5::mqttbytes::v5::{Filter, RetainForwardRule};
use rumqttc::v5::mqttbytes::QoS;

const QUIET: Duration = Duration::from_millis(500);

fn filter(path: &str, qos: QoS) -> Filter {
    Filter::new(path, qos)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_identifier_is_sent_with_matching_messages() {
    // [MQTT-3.3.4-3]: the identifier of the matching subscription goes with the message.
    let broker = Broker::start();
    let mut s = V5Client::connect(&broker, "s").await;
    s.subscribe(filter("id/+", QoS::AtLeastOnce), Some(7)).await;
    let mut p = V5Client::connect(&broker, "p").await;
    p.publish("id/a", QoS::AtLeastOnce, false, b"x").await;
    let got = s.expect_publish().await;
    assert_eq!(sub_ids(&got), vec![7]);
    // Without an identifier nothing is added.
    s.subscribe(filter("plain", QoS::AtMostOnce), None).await;
    p.publish("plain", QoS::AtMostOnce, false, b"y").await;
    assert_eq!(sub_ids(&s.expect_publish().await), Vec::<usize>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_deliver_once_with_every_identifier() {
    // [MQTT-3.3.4-4]: one copy carries the identifiers of all matching subscriptions
    // (order not significant); [MQTT-3.3.4-2] it goes at the highest granted QoS here.
    let broker = Broker::start();
    let mut s = V5Client::connect(&broker, "s").await;
    s.subscribe(filter("o/+", QoS::AtMostOnce), Some(1)).await;
    s.subscribe(filter("o/#", QoS::AtLeastOnce), Some(268_435_455))
        .await;
    s.subscribe(filter("o/b", QoS::AtMostOnce), None).await;
    let mut p = V5Client::connect(&broker, "p").await;
    p.publish("o/b", QoS::AtLeastOnce, false, b"once").await;
    let got = s.drain(QUIET).await;
    assert_eq!(got.len(), 1, "delivered once: {got:?}");
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    assert_eq!(sub_ids(&got[0]), vec![1, 268_435_455]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribe_replaces_the_identifier() {
    // [MQTT-3.8.4-3]: a SUBSCRIBE with an existing filter replaces the subscription,
    // identifier included (and removes it when the new SUBSCRIBE has none).
    let broker = Broker::start();
    let mut s = V5Client::connect(&broker, "s").await;
    s.subscribe(filter("r", QoS::AtMostOnce), Some(3)).await;
    s.subscribe(filter("r", QoS::AtMostOnce), Some(4)).await;
    let mut p = V5Client::connect(&broker, "p").await;
    p.publish("r", QoS::AtMostOnce, false, b"1").await;
    assert_eq!(sub_ids(&s.expect_publish().await), vec![4]);
    s.subscribe(filter("r", QoS::AtMostOnce), None).await;
    p.publish("r", QoS::AtMostOnce, false, b"2").await;
    assert_eq!(sub_ids(&s.expect_publish().await), Vec::<usize>::new());
}

#[test]
fn identifiers_are_never_sent_to_v311_subscribers() {
    // 3.1.1 has no properties: the PUBLISH a 3.1.1 subscriber gets is byte-exact
    // (topic, payload, nothing else), even when the publisher is a 5.0 client.
    let broker = Broker::start();
    let (mut sub, _) = raw_session(broker.addr, "v3", true);
    assert_eq!(raw_subscribe(&mut sub, 1, &[("n/t", 0)]), vec![0]);
    let mut v5 = raw_session_v5(&broker, "v5");
    v5.send(&subscribe_v5(1, Some(9), &[("n/t", 0)]));
    expect_packet(&mut v5);
    // v5 PUBLISH QoS 0 with an empty property section.
    let mut body = mqtt_str("n/t");
    body.push(0);
    body.extend_from_slice(b"exact");
    v5.send(&packet(0x30, &body));
    assert_eq!(
        expect_packet(&mut sub),
        publish_packet("n/t", 0, false, false, 0, b"exact")
    );
    // The 5.0 subscriber gets its identifier: properties = [0x0B, 9].
    let got = expect_packet(&mut v5);
    let mut want = mqtt_str("n/t");
    want.extend_from_slice(&[2, 0x0B, 9]);
    want.extend_from_slice(b"exact");
    assert_eq!(got, packet(0x30, &want));
}

#[test]
fn subscription_identifier_zero_is_a_protocol_error() {
    // §3.8.2.1.2: "It is a Protocol Error if the Subscription Identifier has a value of
    // 0" → DISCONNECT 0x82, close.
    let broker = Broker::start();
    let mut raw = raw_session_v5(&broker, "zero");
    raw.send(&subscribe_v5(1, Some(0), &[("t", 0)]));
    assert_eq!(disconnect_reason(&expect_packet(&mut raw)), 0x82);
    wait_closed(&mut raw, Duration::from_secs(5));
}

async fn retained_on_subscribe(rule: RetainForwardRule) -> (usize, usize) {
    let broker = Broker::start();
    let mut p = V5Client::connect(&broker, "p").await;
    p.publish("keep/t", QoS::AtLeastOnce, true, b"kept").await;
    let mut s = V5Client::connect(&broker, "s").await;
    let mut f = filter("keep/#", QoS::AtLeastOnce);
    f.retain_forward_rule = rule;
    s.subscribe(f.clone(), None).await;
    let first = s.drain(QUIET).await;
    assert!(first.iter().all(|m| m.retain && &m.payload[..] == b"kept"));
    s.subscribe(f, None).await;
    let again = s.drain(QUIET).await;
    (first.len(), again.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling_0_sends_retained_on_every_subscribe() {
    // [MQTT-3.3.1-9]
    assert_eq!(
        retained_on_subscribe(RetainForwardRule::OnEverySubscribe).await,
        (1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling_1_sends_retained_only_for_a_new_subscription() {
    // [MQTT-3.3.1-10]
    assert_eq!(
        retained_on_subscribe(RetainForwardRule::OnNewSubscribe).await,
        (1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling_2_never_sends_retained() {
    // [MQTT-3.3.1-11]
    assert_eq!(
        retained_on_subscribe(RetainForwardRule::Never).await,
        (0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_as_published_keeps_the_flag_on_live_messages() {
    // [MQTT-3.3.1-12]: RAP 0 → RETAIN 0 on forwarded messages; [MQTT-3.3.1-13]: RAP 1 →
    // RETAIN as published.
    let broker = Broker::start();
    let mut keep = V5Client::connect(&broker, "keep").await;
    let mut f = filter("rap", QoS::AtMostOnce);
    f.preserve_retain = true;
    keep.subscribe(f, None).await;
    let mut clear = V5Client::connect(&broker, "clear").await;
    clear.subscribe(filter("rap", QoS::AtMostOnce), None).await;
    let mut p = V5Client::connect(&broker, "p").await;
    p.publish("rap", QoS::AtMostOnce, true, b"r").await;
    p.publish("rap", QoS::AtMostOnce, false, b"n").await;
    let k = keep.drain(QUIET).await;
    let c = clear.drain(QUIET).await;
    assert_eq!(
        k.iter().map(|m| m.retain).collect::<Vec<_>>(),
        vec![true, false]
    );
    assert_eq!(
        c.iter().map(|m| m.retain).collect::<Vec<_>>(),
        vec![false, false]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_skips_own_messages_per_subscription() {
    // [MQTT-3.8.3-3]: with No Local, messages are not forwarded to the publishing
    // connection's client id; another overlapping subscription without it still
    // delivers, and other clients are unaffected.
    let broker = Broker::start();
    let mut me = V5Client::connect(&broker, "me").await;
    let mut f = filter("nl/t", QoS::AtMostOnce);
    f.nolocal = true;
    me.subscribe(f, Some(1)).await;
    let mut other = V5Client::connect(&broker, "other").await;
    other.subscribe_qos("nl/t", QoS::AtMostOnce).await;
    me.publish("nl/t", QoS::AtMostOnce, false, b"mine").await;
    assert_eq!(&other.expect_publish().await.payload[..], b"mine");
    me.expect_no_publish(QUIET).await;
    other
        .publish("nl/t", QoS::AtMostOnce, false, b"theirs")
        .await;
    assert_eq!(&me.expect_publish().await.payload[..], b"theirs");
    // An overlapping subscription without No Local: own messages arrive, once, with only
    // that subscription's identifier.
    me.subscribe(filter("nl/#", QoS::AtMostOnce), Some(2)).await;
    me.publish("nl/t", QoS::AtMostOnce, false, b"again").await;
    let got = me.drain(QUIET).await;
    assert_eq!(got.len(), 1);
    assert_eq!(sub_ids(&got[0]), vec![2]);
}

//! MQTT 3.1.1 section 3.10 (UNSUBSCRIBE) and 3.11 (UNSUBACK).

mod common;

use common::*;
use rumqttc::QoS;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(500);
const SECS5: Duration = Duration::from_secs(5);

#[test]
fn unsuback_even_when_not_subscribed() {
    // MQTT-3.10.4-5: the server MUST answer UNSUBACK even if no filter matched;
    // MQTT-3.10.4-4: with the UNSUBSCRIBE's packet id.
    let broker = Broker::start();
    let (mut raw, _) = raw_session(broker.addr, "nobody", true);
    raw.send(&unsubscribe_packet(42, &["never/subscribed"]));
    assert_eq!(expect_packet(&mut raw), vec![0xB0, 0x02, 0x00, 0x2A]);
    raw.send(&unsubscribe_packet(0xBEEF, &["x", "y/+", "#"]));
    assert_eq!(expect_packet(&mut raw), vec![0xB0, 0x02, 0xBE, 0xEF]);
}

#[test]
fn delivery_stops_after_unsuback() {
    // MQTT-3.10.4-1, MQTT-3.10.4-2: the subscription is deleted and no new messages are
    // added for it; other subscriptions are untouched.
    let broker = Broker::start();
    let (mut sub, _) = raw_session(broker.addr, "sub", true);
    assert_eq!(
        raw_subscribe(&mut sub, 1, &[("u/t", 1), ("keep", 0)]),
        vec![1, 0]
    );
    let (mut publ, _) = raw_session(broker.addr, "pub", true);
    publ.send(&publish_packet("u/t", 0, false, false, 0, b"before"));
    assert_eq!(expect_publish(&mut sub).payload, b"before");

    sub.send(&unsubscribe_packet(2, &["u/t"]));
    assert_eq!(expect_packet(&mut sub), vec![0xB0, 0x02, 0x00, 0x02]);
    publ.send(&publish_packet("u/t", 1, false, false, 5, b"after"));
    assert_eq!(expect_packet(&mut publ), vec![0x40, 0x02, 0x00, 0x05]);
    publ.send(&publish_packet("keep", 0, false, false, 0, b"still"));
    let got = expect_publish(&mut sub);
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("keep", &b"still"[..])
    );
    expect_silence(&mut sub, QUIET);
}

#[test]
fn unsubscribe_compares_filters_character_by_character() {
    // MQTT-3.10.4-1: only a filter identical to the subscribed one is removed; a topic that
    // merely matches (`w/x` for `w/+`) or another wildcard (`w/#`) removes nothing.
    let broker = Broker::start();
    let (mut sub, _) = raw_session(broker.addr, "sub", true);
    assert_eq!(raw_subscribe(&mut sub, 1, &[("w/+", 0)]), vec![0]);
    sub.send(&unsubscribe_packet(2, &["w/x", "w/#", "W/+"]));
    assert_eq!(expect_packet(&mut sub), vec![0xB0, 0x02, 0x00, 0x02]);
    let (mut publ, _) = raw_session(broker.addr, "pub", true);
    publ.send(&publish_packet("w/x", 0, false, false, 0, b"kept"));
    assert_eq!(expect_publish(&mut sub).payload, b"kept");

    sub.send(&unsubscribe_packet(3, &["w/+"]));
    assert_eq!(expect_packet(&mut sub), vec![0xB0, 0x02, 0x00, 0x03]);
    publ.send(&publish_packet("w/x", 0, false, false, 0, b"gone"));
    expect_silence(&mut sub, QUIET);
}

#[test]
fn several_filters_get_a_single_unsuback() {
    // MQTT-3.10.4-6: several filters are handled as a sequence with a single UNSUBACK.
    let broker = Broker::start();
    let (mut sub, _) = raw_session(broker.addr, "sub", true);
    assert_eq!(
        raw_subscribe(&mut sub, 1, &[("m/1", 0), ("m/2", 0)]),
        vec![0, 0]
    );
    sub.send(&unsubscribe_packet(9, &["m/1", "m/2"]));
    assert_eq!(expect_packet(&mut sub), vec![0xB0, 0x02, 0x00, 0x09]);
    expect_silence(&mut sub, Duration::from_millis(200));
    let (mut publ, _) = raw_session(broker.addr, "pub", true);
    publ.send(&publish_packet("m/1", 0, false, false, 0, b"x"));
    publ.send(&publish_packet("m/2", 0, false, false, 0, b"x"));
    expect_silence(&mut sub, QUIET);
}

#[test]
fn unsubscribe_without_filters_closes() {
    // MQTT-3.10.3-2: UNSUBSCRIBE MUST contain at least one filter.
    let broker = Broker::start();
    let (mut raw, _) = raw_session(broker.addr, "empty", true);
    raw.send(&[0xA2, 0x02, 0x00, 0x01]);
    wait_closed(&mut raw, SECS5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_unsubscribe_stops_delivery() {
    // MQTT-3.10.4-2, MQTT-3.10.4-4 end to end through rumqttc.
    let broker = Broker::start();
    let (mut sub, _) = MqttClient::connect(opts(&broker, "sub")).await;
    sub.subscribe("ru/t", QoS::AtLeastOnce).await;
    let (mut publ, _) = MqttClient::connect(opts(&broker, "pub")).await;
    publ.publish("ru/t", QoS::AtLeastOnce, false, b"1").await;
    assert_eq!(&sub.expect_publish().await.payload[..], b"1");
    sub.client.unsubscribe("ru/t").await.expect("unsubscribe");
    sub.wait_incoming(SECS5, "UNSUBACK", |p| {
        matches!(p, rumqttc::Packet::UnsubAck(_))
    })
    .await;
    publ.publish("ru/t", QoS::AtLeastOnce, false, b"2").await;
    sub.expect_no_publish(QUIET).await;
}

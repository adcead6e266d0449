//! MQTT 5.0 §3.2.2.3 CONNACK properties, §3.1.2.11 CONNECT properties the server honours, and
//! the server's Maximum QoS / Retain Available (§3.2.2.3.4, §3.2.2.3.5).

mod common;

use std::time::Duration;

use common::v5::{connect_packet, V5Client};
use common::Broker;
use ringmq::proto::{Packet, Properties, QoS};

#[test]
fn connack_announces_the_server_limits() {
    let b = Broker::start();
    let (_c, ack) = V5Client::connect(b.addr, "facts", Properties::default());
    let p = &ack.properties;
    // Defaults: receive_maximum 1024, topic_alias_maximum 64, max_packet_size 16 MiB.
    assert_eq!(p.receive_maximum, Some(1024), "{p:?}");
    assert_eq!(p.topic_alias_maximum, Some(64));
    assert_eq!(p.maximum_packet_size, Some(16 * 1024 * 1024));
    assert_eq!(p.wildcard_subscription_available, Some(1));
    assert_eq!(p.subscription_identifier_available, Some(1));
    assert_eq!(p.shared_subscription_available, Some(1));
    // Maximum QoS 2 and retain available are the defaults: absent [MQTT-3.2.2-9].
    assert_eq!(p.maximum_qos, None);
    assert_eq!(p.retain_available, None);
    // The session expiry asked (absent = 0) is granted: no override.
    assert_eq!(p.session_expiry_interval, None);
    // Not requested: no Response Information [MQTT-3.2.2-?: only when requested].
    assert_eq!(p.response_information, None);
    assert_eq!(p.assigned_client_identifier, None);
    assert_eq!(p.server_keep_alive, None);
}

#[test]
fn empty_client_id_gets_an_assigned_identifier() {
    // [MQTT-3.2.2-16] the server must return the identifier it assigned.
    let b = Broker::start();
    let (mut c, ack) = V5Client::connect(b.addr, "", Properties::default());
    let id = ack
        .properties
        .assigned_client_identifier
        .expect("assigned client identifier");
    assert!(!id.is_empty());
    // The assigned id is a working session: a second client with that id takes it over.
    let (_c2, _) = V5Client::connect(b.addr, id.as_str(), Properties::default());
    let d = c.expect_disconnect();
    assert_eq!(d.reason, 0x8E, "session taken over");
}

#[test]
fn server_keep_alive_overrides_the_clients() {
    // [MQTT-3.2.2-21] the client must use the Server Keep Alive the server sends.
    let b = Broker::start_with(&["--max-keep-alive", "30"]);
    let (_c, ack) = V5Client::connect_with(
        b.addr,
        connect_packet("ka", true, 600, Properties::default()),
    );
    assert_eq!(ack.properties.server_keep_alive, Some(30));
    let (_c, ack) = V5Client::connect_with(
        b.addr,
        connect_packet("ka2", true, 20, Properties::default()),
    );
    assert_eq!(
        ack.properties.server_keep_alive, None,
        "20 s is within the maximum"
    );
}

#[test]
fn session_expiry_is_capped_and_the_cap_announced() {
    // §3.2.2.3.2: the server uses its own Session Expiry Interval when it sends one.
    let b = Broker::start_with(&["--max-session-expiry", "100"]);
    let props = Properties {
        session_expiry_interval: Some(u32::MAX),
        ..Default::default()
    };
    let (_c, ack) = V5Client::connect(b.addr, "cap", props);
    assert_eq!(ack.properties.session_expiry_interval, Some(100));
    let props = Properties {
        session_expiry_interval: Some(50),
        ..Default::default()
    };
    let (_c, ack) = V5Client::connect(b.addr, "nocap", props);
    assert_eq!(ack.properties.session_expiry_interval, None);
}

#[test]
fn response_information_when_requested() {
    let b = Broker::start();
    let props = Properties {
        request_response_information: Some(1),
        ..Default::default()
    };
    let (_c, ack) = V5Client::connect(b.addr, "asker", props);
    assert_eq!(
        ack.properties.response_information.as_deref(),
        Some("response/asker/")
    );
}

#[test]
fn maximum_qos_refuses_higher_publishes() {
    // [MQTT-3.2.2-11] a PUBLISH above the announced Maximum QoS → DISCONNECT 0x9B.
    let b = Broker::start_with(&["--maximum-qos", "1"]);
    let (mut c, ack) = V5Client::connect(b.addr, "q", Properties::default());
    assert_eq!(ack.properties.maximum_qos, Some(1));
    c.publish("t", QoS::AtLeastOnce, 1, b"ok", Properties::default());
    assert!(matches!(c.expect(), Packet::PubAck(_)));
    // A subscription asking for QoS 2 is granted the maximum [MQTT-3.8.4-7].
    let codes = c.subscribe(7, "sub/q", QoS::ExactlyOnce, Properties::default());
    assert_eq!(codes, vec![1]);
    c.publish("t", QoS::ExactlyOnce, 2, b"too high", Properties::default());
    assert_eq!(c.expect_disconnect().reason, 0x9B);
}

#[test]
fn retain_not_available_refuses_retained_publishes() {
    // [MQTT-3.2.2-14] RETAIN 1 when Retain Available is 0 → DISCONNECT 0x9A.
    let b = Broker::start_with(&["--retain-available", "false"]);
    let (mut c, ack) = V5Client::connect(b.addr, "r", Properties::default());
    assert_eq!(ack.properties.retain_available, Some(0));
    let mut p = common::v5::publish("t", QoS::AtMostOnce, 0, b"x", Properties::default());
    p.retain = true;
    c.send(&Packet::Publish(p));
    assert_eq!(c.expect_disconnect().reason, 0x9A);
}

#[tokio::test(flavor = "current_thread")]
async fn rumqttc_v5_reads_the_connack_properties() {
    use rumqttc::v5::mqttbytes::v5::Packet as P;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let b = Broker::start();
    let mut o = MqttOptions::new("rq5", "127.0.0.1", b.port());
    o.set_keep_alive(Duration::from_secs(30));
    let (_client, mut ev) = AsyncClient::new(o, 10);
    let ack = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::Incoming(P::ConnAck(a))) = ev.poll().await {
                return a;
            }
        }
    })
    .await
    .expect("CONNACK within 5 s");
    let p = ack.properties.expect("CONNACK properties");
    assert_eq!(p.receive_max, Some(1024));
    assert_eq!(p.topic_alias_max, Some(64));
    assert_eq!(p.shared_subscription_available, Some(1));
}

#[test]
fn subscriptions_over_the_limit_get_quota_exceeded() {
    // §3.9.3: SUBACK 0x97 Quota exceeded (5.0); 3.1.1 clients get 0x80 Failure.
    let b = Broker::start_with(&["--max-subscriptions", "1"]);
    let (mut c, _) = V5Client::connect(b.addr, "quota", Properties::default());
    assert_eq!(
        c.subscribe(1, "a", QoS::AtMostOnce, Properties::default()),
        vec![0]
    );
    assert_eq!(
        c.subscribe(2, "b", QoS::AtMostOnce, Properties::default()),
        vec![0x97]
    );
    // Re-subscribing an existing filter is a replacement, not a new subscription.
    assert_eq!(
        c.subscribe(3, "a", QoS::AtLeastOnce, Properties::default()),
        vec![1]
    );
    let (mut raw, _) = common::raw_session(b.addr, "quota3", true);
    assert_eq!(
        common::raw_subscribe(&mut raw, 1, &[("a", 0), ("b", 0)]),
        vec![0, 0x80]
    );
}

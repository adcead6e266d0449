//! MQTT 5.0 features end to end with a third-party v5 client (rumqttc's v5 API): session
//! expiry and resumption, request/response properties, message expiry, the will delay, and
//! topic aliases from the client. The raw-byte rules for the same features are in
//! `spec_3_3_publish_v5.rs`, `spec_4_1_session_expiry_v5.rs` and `spec_3_2_connack_v5.rs`.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::subs::V5Client;
use common::Broker;
use rumqttc::v5::mqttbytes::v5::{
    ConnectProperties, LastWill, LastWillProperties, PublishProperties,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::MqttOptions;

fn opts(b: &Broker, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", b.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

fn with_expiry(mut o: MqttOptions, secs: u32, clean: bool) -> MqttOptions {
    let mut p = ConnectProperties::new();
    p.session_expiry_interval = Some(secs);
    o.set_connect_properties(p);
    o.set_clean_start(clean);
    o
}

#[tokio::test(flavor = "current_thread")]
async fn a_session_with_an_expiry_is_resumed_with_its_messages() {
    // §4.1 / [MQTT-3.1.2-23]: the session outlives the connection by its expiry interval.
    let b = Broker::start();
    let mut sub = V5Client::connect_opts(with_expiry(opts(&b, "rs"), 30, true)).await;
    sub.subscribe_qos("rs/t", QoS::AtLeastOnce).await;
    drop(sub); // the connection goes away without DISCONNECT
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut p = V5Client::connect(&b, "rp").await;
    p.publish("rs/t", QoS::AtLeastOnce, false, b"while away")
        .await;
    let mut sub = V5Client::connect_opts(with_expiry(opts(&b, "rs"), 30, false)).await;
    let m = sub.expect_publish().await;
    assert_eq!(&m.payload[..], b"while away");
}

#[tokio::test(flavor = "current_thread")]
async fn request_response_properties_pass_through_and_expiry_counts_down() {
    // §4.10 request/response; [MQTT-3.3.2-6] the forwarded expiry is what is left.
    let b = Broker::start();
    let mut responder = V5Client::connect(&b, "responder").await;
    responder.subscribe_qos("svc/req", QoS::AtLeastOnce).await;
    let requester = V5Client::connect(&b, "requester").await;
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(120),
        response_topic: Some("svc/reply/requester".into()),
        correlation_data: Some(Bytes::from_static(b"req-42")),
        user_properties: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
        content_type: Some("application/json".into()),
        ..Default::default()
    };
    requester
        .client
        .publish_with_properties("svc/req", QoS::AtLeastOnce, false, "{}", props.clone())
        .await
        .expect("publish");
    let m = responder.expect_publish().await;
    let got = m.properties.expect("properties");
    assert_eq!(got.response_topic, props.response_topic);
    assert_eq!(got.correlation_data, props.correlation_data);
    assert_eq!(got.user_properties, props.user_properties, "in order");
    assert_eq!(got.content_type, props.content_type);
    assert_eq!(got.payload_format_indicator, Some(1));
    let left = got.message_expiry_interval.expect("expiry");
    assert!((118..=120).contains(&left), "{left}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_will_with_a_delay_comes_after_the_delay() {
    // §3.1.3.2.2 Will Delay Interval.
    let b = Broker::start();
    let mut watcher = V5Client::connect(&b, "watcher").await;
    watcher
        .subscribe_qos("dev/+/status", QoS::AtLeastOnce)
        .await;
    let mut o = with_expiry(opts(&b, "dev1"), 60, true);
    let wp = LastWillProperties {
        delay_interval: Some(1),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: vec![("why".into(), "lost".into())],
    };
    o.set_last_will(LastWill::new(
        "dev/dev1/status",
        "offline",
        QoS::AtLeastOnce,
        false,
        Some(wp),
    ));
    let dev = V5Client::connect_opts(o).await;
    let gone = Instant::now();
    drop(dev);
    let m = watcher.expect_publish().await;
    assert!(
        gone.elapsed() >= Duration::from_millis(950),
        "{:?}",
        gone.elapsed()
    );
    assert_eq!(&m.payload[..], b"offline");
    let p = m.properties.expect("will properties travel");
    assert_eq!(p.user_properties, vec![("why".into(), "lost".into())]);
}

#[tokio::test(flavor = "current_thread")]
async fn topic_aliases_from_a_v5_client() {
    // §3.3.2.3.4: the first PUBLISH sets alias 1, the next ones use it with an empty topic.
    let b = Broker::start();
    let mut sub = V5Client::connect(&b, "alias-sub").await;
    sub.subscribe_qos("tele/#", QoS::AtMostOnce).await;
    let p = V5Client::connect(&b, "alias-pub").await;
    let alias = |n| PublishProperties {
        topic_alias: Some(n),
        ..Default::default()
    };
    p.client
        .publish_with_properties(
            "tele/very/long/topic",
            QoS::AtMostOnce,
            false,
            "1",
            alias(1),
        )
        .await
        .expect("publish");
    p.client
        .publish_with_properties("", QoS::AtMostOnce, false, "2", alias(1))
        .await
        .expect("publish");
    for want in [&b"1"[..], b"2"] {
        let m = sub.expect_publish().await;
        assert_eq!(&m.topic[..], b"tele/very/long/topic");
        assert_eq!(&m.payload[..], want);
    }
}

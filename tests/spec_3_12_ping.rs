//! MQTT 3.1.1 section 3.12 (PINGREQ) and 3.13 (PINGRESP).

mod common;

use common::*;
use std::time::Duration;

#[test]
fn pingreq_is_answered_with_pingresp() {
    // MQTT-3.12.4-1: the server MUST send PINGRESP (`d0 00`) in response to PINGREQ.
    let broker = Broker::start();
    let (mut raw, _) = raw_session(broker.addr, "ping", true);
    raw.send(&[0xC0, 0x00]);
    assert_eq!(expect_packet(&mut raw), vec![0xD0, 0x00]);
}

#[test]
fn every_pingreq_gets_its_own_pingresp() {
    // MQTT-3.12.4-1, also for PINGREQs arriving in one TCP segment.
    let broker = Broker::start();
    let (mut raw, _) = raw_session(broker.addr, "pings", true);
    raw.send(&[0xC0, 0x00, 0xC0, 0x00, 0xC0, 0x00]);
    for _ in 0..3 {
        assert_eq!(expect_packet(&mut raw), vec![0xD0, 0x00]);
    }
    expect_silence(&mut raw, Duration::from_millis(300));
}

#[test]
fn pingreq_with_a_body_closes() {
    // MQTT 3.12 (no variable header, no payload: Remaining Length 0) / MQTT-4.8.0-1.
    let broker = Broker::start();
    let (mut raw, _) = raw_session(broker.addr, "fat-ping", true);
    raw.send(&[0xC0, 0x01, 0x00]);
    wait_closed(&mut raw, Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_keep_alive_pings_are_answered() {
    // MQTT-3.12.4-1 with MQTT-3.1.2-24: a client pinging every keep-alive period gets
    // PINGRESPs and is not disconnected.
    let broker = Broker::start();
    let mut o = opts(&broker, "rping");
    o.set_keep_alive(Duration::from_secs(1));
    let (mut c, _) = MqttClient::connect(o).await;
    for _ in 0..3 {
        c.wait_incoming(Duration::from_secs(3), "PINGRESP", |p| {
            matches!(p, rumqttc::Packet::PingResp)
        })
        .await;
    }
}

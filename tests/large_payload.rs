//! Large payloads take the writer's zero-copy path (payload written from the shared
//! publication buffer after its header); the bytes on the wire must be exactly a PUBLISH.

mod common;
use common::*;

fn subscribe(raw: &mut Raw, filter: &str, qos: u8) {
    let mut body = vec![0, 1];
    body.extend(mqtt_str(filter));
    body.push(qos);
    raw.send(&packet(0x82, &body));
    let ack = raw.read_packet().expect("SUBACK");
    assert_eq!(
        ack[0],
        0x90,
        "expected SUBACK, got {:02x?}",
        &ack[..ack.len().min(8)]
    );
}

/// Split a PUBLISH into (flags, topic, packet id, payload).
fn parse(p: &[u8]) -> (u8, String, u16, Vec<u8>) {
    let mut i = 1;
    while p[i] & 0x80 != 0 {
        i += 1;
    }
    i += 1;
    let tlen = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
    let topic = String::from_utf8(p[i + 2..i + 2 + tlen].to_vec()).unwrap();
    i += 2 + tlen;
    let qos = (p[0] >> 1) & 3;
    let mut pkid = 0;
    if qos > 0 {
        pkid = u16::from_be_bytes([p[i], p[i + 1]]);
        i += 2;
    }
    (p[0], topic, pkid, p[i..].to_vec())
}

#[test]
fn large_qos1_payload_reaches_every_subscriber_intact() {
    // MQTT-3.3.5-1: the server delivers the application message to every matching subscriber.
    let broker = Broker::start();
    let (mut s1, _) = raw_session(broker.addr, "big-sub-1", true);
    let (mut s2, _) = raw_session(broker.addr, "big-sub-2", true);
    subscribe(&mut s1, "big/#", 1);
    subscribe(&mut s2, "big/x", 0);
    let (mut publisher, _) = raw_session(broker.addr, "big-pub", true);
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    for n in 0..3u16 {
        let mut body = mqtt_str("big/x");
        body.extend_from_slice(&(n + 1).to_be_bytes());
        body.extend_from_slice(&payload);
        publisher.send(&packet(0x32, &body));
        let ack = publisher.read_packet().expect("PUBACK");
        assert_eq!(ack, vec![0x40, 2, 0, (n + 1) as u8]);
    }
    for _ in 0..3 {
        let p = s1.read_packet().expect("PUBLISH to QoS 1 subscriber");
        let (flags, topic, pkid, got) = parse(&p);
        assert_eq!(flags & 0xf0, 0x30);
        assert_eq!((flags >> 1) & 3, 1, "delivered at the granted QoS 1");
        assert_eq!(topic, "big/x");
        assert_ne!(pkid, 0, "MQTT-2.3.1-1");
        assert!(got == payload, "payload corrupted on the zero-copy path");
        s1.send(&[0x40, 2, (pkid >> 8) as u8, pkid as u8]);
        let p = s2.read_packet().expect("PUBLISH to QoS 0 subscriber");
        let (flags, _, _, got) = parse(&p);
        assert_eq!((flags >> 1) & 3, 0, "downgraded to the granted QoS 0");
        assert!(got == payload);
    }
}

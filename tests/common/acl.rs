//! Helpers for the authorization suite (`security_acl.rs`): a broker started with an ACL
//! file, raw CONNECTs with a user name and a will for 3.1.1 and 5.0, and readers for the
//! acknowledgements whose reason codes the ACL sets.

use std::path::PathBuf;

use super::{expect_packet, mqtt_str, packet, remaining_length, Broker, Raw};

/// Write `text` as an ACL file next to a fresh temp dir and start a broker with it.
pub fn acl_broker(text: &str, extra: &[&str]) -> (Broker, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "ringmq-acl-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("acl dir");
    let file = dir.join("acl.conf");
    std::fs::write(&file, text).expect("write acl");
    let mut args = vec!["--acl-file", file.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    (Broker::start_with(&args), file)
}

/// What a raw CONNECT carries.
#[derive(Default, Clone, Copy)]
pub struct Hello<'a> {
    /// 4 = 3.1.1, 5 = 5.0.
    pub version: u8,
    pub client_id: &'a str,
    pub user: Option<&'a str>,
    /// Clean session / clean start.
    pub clean: bool,
    /// (topic, payload, QoS) of a will.
    pub will: Option<(&'a str, &'a [u8], u8)>,
    /// 5.0 Session Expiry Interval.
    pub expiry: u32,
}

/// Encode a CONNECT (user name with a dummy password, since 3.1.1 forbids a password
/// without a user name [MQTT-3.1.2-22] and the broker accepts any when no authentication
/// is configured).
pub fn connect(h: &Hello<'_>) -> Vec<u8> {
    let mut body = mqtt_str("MQTT");
    body.push(h.version);
    let mut flags = if h.clean { 0x02 } else { 0 };
    if let Some((_, _, qos)) = h.will {
        flags |= 0x04 | (qos << 3);
    }
    if h.user.is_some() {
        flags |= 0xC0;
    }
    body.push(flags);
    body.extend_from_slice(&60u16.to_be_bytes());
    if h.version == 5 {
        if h.expiry > 0 {
            body.extend(remaining_length(5));
            body.push(0x11);
            body.extend_from_slice(&h.expiry.to_be_bytes());
        } else {
            body.push(0);
        }
    }
    body.extend(mqtt_str(h.client_id));
    if let Some((topic, payload, _)) = h.will {
        if h.version == 5 {
            body.push(0); // will properties
        }
        body.extend(mqtt_str(topic));
        body.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        body.extend_from_slice(payload);
    }
    if let Some(u) = h.user {
        body.extend(mqtt_str(u));
        body.extend(mqtt_str("x"));
    }
    packet(0x10, &body)
}

/// Connect raw and assert CONNACK success.
pub fn client(b: &Broker, h: Hello<'_>) -> Raw {
    let mut raw = Raw::connect(b.addr);
    raw.send(&connect(&h));
    let ack = expect_packet(&mut raw);
    assert_eq!(ack[0], 0x20, "expected CONNACK, got {ack:02x?}");
    assert_eq!(ack[3], 0x00, "CONNACK refused: {ack:02x?}");
    raw
}

/// A PUBLISH for `version` (5.0: with an empty property list).
pub fn publish(
    version: u8,
    topic: &str,
    qos: u8,
    retain: bool,
    pkid: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = mqtt_str(topic);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    if version == 5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1) | u8::from(retain), &body)
}

/// An acknowledgement (PUBACK, PUBREC, PUBCOMP...): (packet type, packet id, reason code;
/// 0 when it has none).
pub fn read_ack(raw: &mut Raw) -> (u8, u16, u8) {
    let p = expect_packet(raw);
    assert!(p.len() >= 4, "short acknowledgement {p:02x?}");
    (
        p[0] >> 4,
        u16::from_be_bytes([p[2], p[3]]),
        p.get(4).copied().unwrap_or(0),
    )
}

/// SUBSCRIBE (each filter at QoS 1) and return the SUBACK's codes.
pub fn subscribe(raw: &mut Raw, version: u8, pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if version == 5 {
        body.push(0);
    }
    for f in filters {
        body.extend(mqtt_str(f));
        body.push(1);
    }
    raw.send(&packet(0x82, &body));
    let ack = expect_packet(raw);
    assert_eq!(ack[0], 0x90, "expected SUBACK, got {ack:02x?}");
    let hdr = 1 + remaining_length(ack.len() - 2).len();
    assert_eq!(&ack[hdr..hdr + 2], &pkid.to_be_bytes(), "SUBACK packet id");
    let mut codes = &ack[hdr + 2..];
    if version == 5 {
        codes = &codes[1 + codes[0] as usize..];
    }
    codes.to_vec()
}

//! §2.2.2.2: every property identifier on every packet that can carry properties (and the
//! will properties), against the spec's table written out here independently of the
//! decoder's allow list. An allowed property never fails with `PropertyNotAllowed` (other
//! rules may still apply, e.g. Authentication Data without a method); a property not in the
//! table is `PropertyNotAllowed` (Malformed Packet, DISCONNECT 0x81 [MQTT-2.2.2-2]).

use super::*;

/// Where a property can appear (one bit each).
const CONNECT: u16 = 1 << 0;
const CONNACK: u16 = 1 << 1;
const PUBLISH: u16 = 1 << 2;
const WILL: u16 = 1 << 3;
const PUBACK: u16 = 1 << 4;
const PUBREC: u16 = 1 << 5;
const PUBREL: u16 = 1 << 6;
const PUBCOMP: u16 = 1 << 7;
const SUBSCRIBE: u16 = 1 << 8;
const SUBACK: u16 = 1 << 9;
const UNSUBSCRIBE: u16 = 1 << 10;
const UNSUBACK: u16 = 1 << 11;
const DISCONNECT: u16 = 1 << 12;
const AUTH: u16 = 1 << 13;
const ACKS: u16 = PUBACK | PUBREC | PUBREL | PUBCOMP;
const EVERY: u16 = (1 << 14) - 1;

/// The table of §2.2.2.2: identifier, an encoded valid value, where it may appear.
fn table() -> Vec<(u8, Vec<u8>, u16)> {
    let byte = vec![1];
    let two = vec![0, 1];
    let four = vec![0, 0, 0, 1];
    let text = s(b"a");
    let bin = s(&[1]);
    vec![
        (0x01, byte.clone(), PUBLISH | WILL),
        (0x02, four.clone(), PUBLISH | WILL),
        (0x03, text.clone(), PUBLISH | WILL),
        (0x08, text.clone(), PUBLISH | WILL),
        (0x09, bin.clone(), PUBLISH | WILL),
        (0x0B, vec![1], PUBLISH | SUBSCRIBE),
        (0x11, four.clone(), CONNECT | CONNACK | DISCONNECT),
        (0x12, text.clone(), CONNACK),
        (0x13, two.clone(), CONNACK),
        (0x15, text.clone(), CONNECT | CONNACK | AUTH),
        (0x16, bin.clone(), CONNECT | CONNACK | AUTH),
        (0x17, byte.clone(), CONNECT),
        (0x18, four.clone(), WILL),
        (0x19, byte.clone(), CONNECT),
        (0x1A, text.clone(), CONNACK),
        (0x1C, text.clone(), CONNACK | DISCONNECT),
        (
            0x1F,
            text.clone(),
            CONNACK | ACKS | SUBACK | UNSUBACK | DISCONNECT | AUTH,
        ),
        (0x21, two.clone(), CONNECT | CONNACK),
        (0x22, two.clone(), CONNECT | CONNACK),
        (0x23, two.clone(), PUBLISH),
        (0x24, byte.clone(), CONNACK),
        (0x25, byte.clone(), CONNACK),
        (0x26, cat(&[&s(b"k"), &s(b"v")]), EVERY),
        (0x27, four, CONNECT | CONNACK),
        (0x28, byte.clone(), CONNACK),
        (0x29, byte.clone(), CONNACK),
        (0x2A, byte, CONNACK),
    ]
}

/// Decode `packet` carrying the one property `prop` (id + value) in the decoder role that
/// receives that packet.
fn decode_with(packet: u16, prop: &[u8]) -> Result<(), ProtoError> {
    let id = prop[0];
    let (mut d, b) = match packet {
        CONNECT => (Decoder::new(MAX), connect_v5(0x02, prop, &s(b"c"))),
        WILL => {
            let mut will = BytesMut::new();
            put_var_int(&mut will, prop.len());
            will.put_slice(prop);
            let payload = cat(&[&s(b"c"), &will, &s(b"w/t"), &s(b"x")]);
            (Decoder::new(MAX), connect_v5(0x06, &[], &payload))
        }
        CONNACK => (client(V5), pkt(0x20, &v5_body(&[0, 0], prop, &[]))),
        PUBLISH => (client(V5), pkt(0x30, &v5_body(&s(b"t"), prop, &[]))),
        PUBACK => (server(V5), pkt(0x40, &v5_body(&[0, 1, 0], prop, &[]))),
        PUBREC => (server(V5), pkt(0x50, &v5_body(&[0, 1, 0], prop, &[]))),
        PUBREL => (server(V5), pkt(0x62, &v5_body(&[0, 1, 0], prop, &[]))),
        PUBCOMP => (server(V5), pkt(0x70, &v5_body(&[0, 1, 0], prop, &[]))),
        SUBSCRIBE => {
            let tail = cat(&[&s(b"t"), &[0]]);
            (server(V5), pkt(0x82, &v5_body(&[0, 1], prop, &tail)))
        }
        SUBACK => (client(V5), pkt(0x90, &v5_body(&[0, 1], prop, &[0]))),
        UNSUBSCRIBE => (server(V5), pkt(0xA2, &v5_body(&[0, 1], prop, &s(b"t")))),
        UNSUBACK => (client(V5), pkt(0xB0, &v5_body(&[0, 1], prop, &[0]))),
        // Server Reference is the server's; the rest of DISCONNECT's are checked from the
        // client side too.
        DISCONNECT if id == 0x1C => (client(V5), pkt(0xE0, &v5_body(&[0], prop, &[]))),
        DISCONNECT => (server(V5), pkt(0xE0, &v5_body(&[0], prop, &[]))),
        AUTH => (server(V5), pkt(0xF0, &v5_body(&[0x18], prop, &[]))),
        _ => unreachable!("one packet bit at a time"),
    };
    let mut b = b;
    d.decode(&mut b).map(|_| ())
}

#[test]
fn every_property_on_every_packet() {
    // MQTT-2.2.2-2
    let mut checked = 0;
    for (id, value, allowed) in table() {
        let prop = cat(&[&[id], &value]);
        for bit in 0..14 {
            let packet = 1u16 << bit;
            let res = decode_with(packet, &prop);
            let not_allowed =
                matches!(res, Err(ProtoError::PropertyNotAllowed { id: i, .. }) if i == id);
            if allowed & packet != 0 {
                assert!(
                    !not_allowed,
                    "property {id:#04x} must be allowed on packet bit {bit}: {res:?}"
                );
            } else {
                assert!(
                    not_allowed,
                    "property {id:#04x} must be refused on packet bit {bit}, got {res:?}"
                );
                assert_eq!(res.unwrap_err().disconnect_reason(), 0x81);
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 27 * 14);
}

#[test]
fn undefined_identifiers_are_refused_everywhere() {
    // §2.2.2.2: identifiers outside the table (e.g. 0x00, 0x04, 0x2B) are malformed.
    for id in [0x00u8, 0x04, 0x0A, 0x10, 0x2B, 0x7F] {
        for bit in 0..14 {
            let res = decode_with(1 << bit, &[id, 0, 0, 0, 1]);
            assert!(
                res.is_err(),
                "identifier {id:#04x} on packet bit {bit} accepted"
            );
        }
    }
}

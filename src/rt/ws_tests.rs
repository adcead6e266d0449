//! Unit tests of the WebSocket codec (RFC 6455 sections cited per test).

use super::*;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn request(extra: &str) -> String {
    format!(
        "GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Run `input` through a fresh deframer, fed in pieces of `step` bytes.
fn run(input: &[u8], step: usize) -> (Vec<u8>, Vec<Control>, Result<(), WsError>) {
    let mut d = Deframer::new(1 << 20);
    let (mut data, mut ctrl) = (Vec::new(), Vec::new());
    for piece in input.chunks(step.max(1)) {
        let mut b = piece.to_vec();
        match d.deframe(&mut b, &mut ctrl) {
            Ok(n) => data.extend_from_slice(&b[..n]),
            Err(e) => return (data, ctrl, Err(e)),
        }
    }
    (data, ctrl, Ok(()))
}

#[test]
fn accept_key_matches_the_rfc_example() {
    // RFC 6455 §1.3.
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn upgrade_accepted_with_mqtt_subprotocol_and_leftover() {
    let mut req = request("Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\n").into_bytes();
    let head = req.len();
    req.extend_from_slice(b"\x82");
    let a = parse_upgrade(&req, "/mqtt").unwrap().unwrap();
    assert_eq!(a.consumed, head);
    assert_eq!(a.protocol, Some("mqtt"));
    let text = String::from_utf8(a.response).unwrap();
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(text.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
    // Old clients: "mqttv3.1" only.
    let req = request("Sec-WebSocket-Protocol: mqttv3.1\r\n");
    let a = parse_upgrade(req.as_bytes(), "/mqtt").unwrap().unwrap();
    assert_eq!(a.protocol, Some("mqttv3.1"));
    // None offered: accepted without the header.
    let a = parse_upgrade(request("").as_bytes(), "/mqtt")
        .unwrap()
        .unwrap();
    assert_eq!(a.protocol, None);
    assert!(!String::from_utf8(a.response)
        .unwrap()
        .contains("Sec-WebSocket-Protocol"));
}

#[test]
fn incomplete_request_needs_more_and_an_endless_one_is_refused() {
    let req = request("");
    assert_eq!(parse_upgrade(&req.as_bytes()[..20], "/mqtt"), Ok(None));
    let big = vec![b'a'; MAX_REQUEST];
    assert_eq!(parse_upgrade(&big, "/mqtt"), Err(Refusal::TooLarge));
    assert_eq!(Refusal::TooLarge.status(), 431);
}

#[test]
fn bad_upgrades_are_refused_with_the_right_status() {
    // §4.2.1: each required element missing in turn.
    let cases = [
        (request("").replace("/mqtt", "/other"), 404),
        (request("").replace("GET", "POST"), 405),
        (
            request("").replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            400,
        ),
        (
            request("").replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
            400,
        ),
        (request("").replace("Upgrade: websocket\r\n", ""), 426),
        (
            request("").replace("keep-alive, Upgrade", "keep-alive"),
            426,
        ),
        (request("").replace("Version: 13", "Version: 8"), 426),
        (request("").replace("Host: x\r\n", ""), 400),
        (request("").replace("HTTP/1.1", "HTTP/1.0"), 400),
        (request(" folded\r\n"), 400),
        ("GET /mqtt\r\n\r\n".to_string(), 400),
    ];
    for (req, status) in cases {
        let r = parse_upgrade(req.as_bytes(), "/mqtt").expect_err(&req);
        assert_eq!(r.status(), status, "{req:?}: {r}");
        let resp = String::from_utf8(r.response()).unwrap();
        assert!(resp.starts_with(&format!("HTTP/1.1 {status} ")), "{resp}");
        assert!(resp.ends_with("\r\n\r\n"));
    }
    // §4.4: a 426 names the supported version.
    let r = parse_upgrade(
        request("").replace("Version: 13", "Version: 8").as_bytes(),
        "/mqtt",
    )
    .unwrap_err();
    assert!(String::from_utf8(r.response())
        .unwrap()
        .contains("Sec-WebSocket-Version: 13\r\n"));
}

#[test]
fn query_string_is_ignored_and_header_names_are_case_insensitive() {
    let req = request("")
        .replace("/mqtt", "/mqtt?token=1")
        .replace("Sec-WebSocket-Key", "sec-websocket-key");
    assert!(parse_upgrade(req.as_bytes(), "/mqtt").unwrap().is_some());
}

#[test]
fn binary_frames_deframe_in_any_split() {
    // §5.4 fragmentation, §5.3 masking; [MQTT-6.0.0-2] packets need not align with frames.
    let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    let mut wire = client_frame(OP_BINARY, false, MASK, &payload[..7]);
    wire.extend(client_frame(OP_PING, true, [1, 2, 3, 4], b"hi"));
    wire.extend(client_frame(
        OP_CONTINUATION,
        false,
        [9, 8, 7, 6],
        &payload[7..200],
    ));
    wire.extend(client_frame(OP_CONTINUATION, true, MASK, &payload[200..]));
    wire.extend(client_frame(OP_BINARY, true, MASK, b""));
    wire.extend(client_frame(OP_PONG, true, MASK, b"x"));
    for step in [1, 2, 3, 5, 13, 64, wire.len()] {
        let (data, ctrl, res) = run(&wire, step);
        assert_eq!(res, Ok(()), "step {step}");
        assert_eq!(data, payload, "step {step}");
        assert_eq!(ctrl, vec![Control::Ping(b"hi".to_vec())]);
    }
}

#[test]
fn extended_lengths_16_and_64_bit() {
    // §5.2: 126 → 16-bit length, 127 → 64-bit length.
    for len in [125usize, 126, 65535, 65536, 70000] {
        let payload = vec![0xA5u8; len];
        let wire = client_frame(OP_BINARY, true, MASK, &payload);
        let (data, _, res) = run(&wire, 4096);
        assert_eq!(res, Ok(()));
        assert_eq!(data.len(), len);
        assert!(data.iter().all(|b| *b == 0xA5));
    }
}

#[test]
fn violations_close_with_the_right_code() {
    let mut unmasked = client_frame(OP_BINARY, true, MASK, b"abc");
    unmasked[1] &= 0x7F;
    let mut rsv = client_frame(OP_BINARY, true, MASK, b"abc");
    rsv[0] |= 0x40;
    let mut long_len = client_frame(OP_BINARY, true, MASK, &[0; 70000]);
    long_len[2] = 0x80;
    let mut frag_ping = client_frame(OP_PING, true, MASK, b"");
    frag_ping[0] &= 0x7F;
    let mut two_starts = client_frame(OP_BINARY, false, MASK, b"a");
    two_starts.extend(client_frame(OP_BINARY, true, MASK, b"b"));
    let cases: Vec<(Vec<u8>, WsError, u16)> = vec![
        (unmasked, WsError::Unmasked, 1002),
        (
            client_frame(OP_TEXT, true, MASK, b"{}"),
            WsError::Text,
            1003,
        ),
        (rsv, WsError::Reserved, 1002),
        (client_frame(0x3, true, MASK, b""), WsError::Opcode(3), 1002),
        (long_len, WsError::Length, 1002),
        (frag_ping, WsError::Control, 1002),
        (
            client_frame(OP_PING, true, MASK, &[0; 126]),
            WsError::Control,
            1002,
        ),
        (
            client_frame(OP_CONTINUATION, true, MASK, b"a"),
            WsError::Fragmentation,
            1002,
        ),
        (two_starts, WsError::Fragmentation, 1002),
        (
            client_frame(OP_CLOSE, true, MASK, &[3]),
            WsError::BadClose,
            1002,
        ),
        (
            client_frame(OP_CLOSE, true, MASK, &[0x03, 0xED]),
            WsError::BadClose,
            1002,
        ),
        (
            client_frame(OP_CLOSE, true, MASK, &[0x03, 0xE8, 0xFF]),
            WsError::CloseUtf8,
            1007,
        ),
    ];
    for (wire, err, code) in cases {
        for step in [1, wire.len()] {
            let (_, _, res) = run(&wire, step);
            assert_eq!(res, Err(err.clone()), "step {step}");
            assert_eq!(err.close_code(), code);
        }
    }
}

#[test]
fn frame_over_the_limit_is_refused_from_its_header() {
    let mut d = Deframer::new(100);
    let mut wire = client_frame(OP_BINARY, true, MASK, &[0; 101]);
    wire.truncate(8); // header only: no payload needed to refuse
    let r = d.deframe(&mut wire, &mut Vec::new());
    assert_eq!(r, Err(WsError::TooBig { len: 101, max: 100 }));
    assert_eq!(r.unwrap_err().close_code(), 1009);
    assert!(d.is_done());
}

#[test]
fn close_ends_the_stream_and_later_bytes_are_ignored() {
    // §5.5.1: after a close frame no more data frames are processed.
    let mut wire = client_frame(OP_BINARY, true, MASK, b"ab");
    wire.extend(client_frame(
        OP_CLOSE,
        true,
        MASK,
        &[0x03, 0xE8, b'o', b'k'],
    ));
    wire.extend(client_frame(OP_BINARY, true, MASK, b"zz"));
    let (data, ctrl, res) = run(&wire, 3);
    assert_eq!(res, Ok(()));
    assert_eq!(data, b"ab");
    assert_eq!(ctrl, vec![Control::Close(Some(1000))]);
    let (_, ctrl, _) = run(&client_frame(OP_CLOSE, true, MASK, b""), 1);
    assert_eq!(ctrl, vec![Control::Close(None)]);
}

#[test]
fn server_frames_are_unmasked_with_minimal_lengths() {
    // §5.1: server frames are not masked; §5.2: minimal length encoding.
    for (len, hdr) in [(5usize, 2usize), (126, 4), (65536, 10)] {
        let mut out = bytes::BytesMut::new();
        put_frame(&mut out, OP_BINARY, &vec![1; len]);
        assert_eq!(out[0], 0x82);
        assert_eq!(out[1] & 0x80, 0);
        assert_eq!(out.len(), hdr + len);
        assert!(hdr <= MAX_HEADER);
    }
    let mut out = bytes::BytesMut::new();
    put_close(&mut out, close::PROTOCOL_ERROR);
    assert_eq!(&out[..], &[0x88, 2, 0x03, 0xEA]);
}

//! MQTT over WebSocket (MQTT 5.0 §6 / 3.1.1 §6, RFC 6455): `--ws-listen` and `websocket =
//! true` listeners. MQTT.js (npm, run by Node) over ws:// and wss://, both protocol versions,
//! QoS 0/1/2, retained messages, wills, and messages crossing to rumqttc over plain TCP; raw
//! sockets for the upgrade refusals and the frame-level rules.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::time::Duration;

use common::tls::{free_port, free_ports, Pki};
use common::ws::*;
use common::*;
use ringmq::rt::ws::{OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};
use rumqttc::QoS;

/// A broker with a ws:// listener; returns it and the WebSocket address.
fn ws_broker(extra: &[&str]) -> (Broker, SocketAddr) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let listen = addr.to_string();
    let mut args = vec!["--ws-listen", listen.as_str()];
    args.extend_from_slice(extra);
    (Broker::start_with(&args), addr)
}

/// Node and MQTT.js are installed by `.ci/run`; elsewhere the MQTT.js tests are skipped.
fn node_or_skip() -> bool {
    if node_ready() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "node or tests/js/ws/node_modules missing: .ci/run installs them"
    );
    eprintln!("skipped: node or tests/js/ws/node_modules missing (npm ci in tests/js/ws)");
    false
}

fn raw_connect(ws: &mut WsRaw, id: &str) {
    ws.send_mqtt(&connect_v311(id, true, 60));
    assert_eq!(ws.read_packet().expect("CONNACK"), [0x20, 2, 0, 0]);
}

#[test]
fn mqttjs_over_ws_round_trips_qos_0_1_2_and_retained_v311_and_v5() {
    if !node_or_skip() {
        return;
    }
    let (_broker, addr) = ws_broker(&[]);
    let url = format!("ws://{addr}/mqtt");
    run_node(&["roundtrip", &url, "4"]);
    run_node(&["roundtrip", &url, "5"]);
}

#[test]
fn mqttjs_over_wss_round_trips_v311_and_v5() {
    if !node_or_skip() {
        return;
    }
    let pki = Pki::new("wss");
    let port = free_port();
    let config = wss_config(&pki, port);
    let _broker = Broker::start_with(&["--config", config.to_str().unwrap()]);
    let url = format!("wss://localhost:{port}/mqtt");
    let ca = pki.ca.display().to_string();
    run_node(&["roundtrip", &url, "4", &ca]);
    run_node(&["roundtrip", &url, "5", &ca]);
}

#[test]
fn mqttjs_over_ws_and_rumqttc_over_tcp_exchange_messages() {
    if !node_or_skip() {
        return;
    }
    // Two shards: some clients land on a shard that is not their session's home, so the
    // hand-off carries the WebSocket state.
    let (broker, addr) = ws_broker(&["--shards", "2"]);
    let url = format!("ws://{addr}/mqtt");
    // TCP (rumqttc) → WebSocket (MQTT.js).
    let mut sub = spawn_node(&["sub", &url, "5", "x/to-ws", "2"]);
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "READY");
    let mut tcp = TestClient::connect(&broker, "ws-x-tcp", true);
    tcp.publish_confirmed("x/to-ws", QoS::AtLeastOnce, false, "one");
    tcp.publish_confirmed("x/to-ws", QoS::AtMostOnce, false, "two");
    let got: Vec<String> = lines.by_ref().take(2).map(|l| l.unwrap()).collect();
    assert!(got[0].contains("\"payload\":\"one\"") && got[0].contains("\"qos\":1"));
    assert!(got[1].contains("\"payload\":\"two\""), "{got:?}");
    assert!(sub.wait().unwrap().success());
    // WebSocket (MQTT.js) → TCP (rumqttc).
    tcp.subscribe("x/to-tcp", QoS::AtLeastOnce);
    run_node(&["pub", &url, "4", "x/to-tcp", "from-ws", "1"]);
    assert_eq!(&tcp.recv().payload[..], b"from-ws");
}

#[test]
fn mqttjs_browser_bundle_in_headless_chromium_round_trips() {
    // A browser page (MQTT.js's dist bundle, Chromium's own WebSocket) subscribes and
    // receives its own QoS 1 publish.
    if !node_or_skip() {
        return;
    }
    let chromium = std::path::Path::new("/usr/bin/chromium").exists();
    let driver = js_dir().join("node_modules/playwright-core").exists();
    if !(chromium && driver) {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium or playwright-core missing: .ci/run installs them"
        );
        eprintln!("skipped: /usr/bin/chromium or playwright-core missing");
        return;
    }
    let (_broker, addr) = ws_broker(&[]);
    let out = std::process::Command::new("node")
        .current_dir(js_dir())
        .args(["browser.mjs", &format!("ws://{addr}/mqtt")])
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "OK"),
        "browser round trip failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.contains("dbus"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn will_of_a_dropped_ws_client_is_published() {
    // [MQTT-3.1.2-8]: a connection closed without DISCONNECT publishes its will.
    if !node_or_skip() {
        return;
    }
    let (broker, addr) = ws_broker(&[]);
    let mut tcp = TestClient::connect(&broker, "ws-will-watch", true);
    tcp.subscribe("will/ws", QoS::AtLeastOnce);
    let mut node = spawn_node(&["will", &format!("ws://{addr}/mqtt"), "5", "will/ws"]);
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "READY");
    node.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(node.wait().unwrap().success());
    assert_eq!(&tcp.recv().payload[..], b"gone");
}

#[test]
fn bad_upgrades_are_refused_and_closed() {
    // RFC 6455 §4.2.1: a request that is not a valid upgrade gets an HTTP error.
    let (broker, addr) = ws_broker(&["--ws-path", "/mq"]);
    let (mut ws, head) = WsRaw::open(
        addr,
        &upgrade_request("/mqtt", Some("dGhlIHNhbXBsZSBub25jZQ==")),
    );
    assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
    assert!(ws.read_frame().is_none(), "closed after the refusal");
    let (mut ws, head) = WsRaw::open(addr, &upgrade_request("/mq", None));
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    assert!(ws.read_frame().is_none());
    // Plain MQTT on a WebSocket listener is not an upgrade request: refused, closed.
    let mut raw = Raw::connect(addr);
    raw.send(&connect_v311("ws-plain", true, 60));
    raw.send(b"\r\n\r\n");
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut raw.stream, &mut buf);
    assert!(
        buf.starts_with(b"HTTP/1.1 400 "),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    // The right path works.
    let mut ws = WsRaw::upgrade(addr, "/mq");
    raw_connect(&mut ws, "ws-path-ok");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(broker.log().matches("WebSocket upgrade refused").count(), 3);
}

#[test]
fn unmasked_frame_is_closed_with_1002() {
    // RFC 6455 §5.1: the server closes a connection whose client frame is not masked.
    let (_broker, addr) = ws_broker(&[]);
    let mut ws = WsRaw::upgrade(addr, "/mqtt");
    raw_connect(&mut ws, "ws-unmasked");
    let mut frame = ringmq::rt::ws::client_frame(OP_BINARY, true, MASK, &[0xC0, 0]);
    frame[1] &= 0x7F;
    frame.drain(2..6); // no masking key
    frame[2..].copy_from_slice(&[0xC0, 0]);
    ws.send_raw(&frame);
    assert_eq!(
        ws.read_frame(),
        Some((OP_CLOSE, 1002u16.to_be_bytes().to_vec()))
    );
    assert_eq!(ws.read_frame(), None);
}

#[test]
fn text_frame_is_closed_with_1003() {
    // [MQTT-6.0.0-1]: MQTT data must be sent in binary frames; anything else closes.
    let (_broker, addr) = ws_broker(&[]);
    let mut ws = WsRaw::upgrade(addr, "/mqtt");
    raw_connect(&mut ws, "ws-text");
    ws.send_frame(OP_TEXT, true, &[0xC0, 0]);
    assert_eq!(
        ws.read_frame(),
        Some((OP_CLOSE, 1003u16.to_be_bytes().to_vec()))
    );
    assert_eq!(ws.read_frame(), None);
}

#[test]
fn ping_gets_a_pong_with_the_same_payload() {
    // RFC 6455 §5.5.2/§5.5.3, also between the frames of a fragmented message (§5.4).
    let (_broker, addr) = ws_broker(&[]);
    let mut ws = WsRaw::upgrade(addr, "/mqtt");
    ws.send_frame(OP_PING, true, b"before connect");
    assert_eq!(ws.read_frame(), Some((OP_PONG, b"before connect".to_vec())));
    let connect = connect_v311("ws-ping", true, 60);
    ws.send_frame(OP_BINARY, false, &connect[..4]);
    ws.send_frame(OP_PING, true, b"mid-message");
    assert_eq!(ws.read_frame(), Some((OP_PONG, b"mid-message".to_vec())));
    ws.send_frame(OP_CONTINUATION, true, &connect[4..]);
    assert_eq!(ws.read_packet().expect("CONNACK"), [0x20, 2, 0, 0]);
    // MQTT PINGREQ still works over WebSocket.
    ws.send_mqtt(&[0xC0, 0]);
    assert_eq!(ws.read_packet().expect("PINGRESP"), [0xD0, 0]);
}

#[test]
fn packets_split_across_frames_and_packed_in_one_frame_are_both_handled() {
    // [MQTT-6.0.0-2]: the receiver must not assume packets are aligned on frame boundaries.
    let (_broker, addr) = ws_broker(&[]);
    let mut ws = WsRaw::upgrade(addr, "/mqtt");
    // CONNECT across three frames (binary, continuation, continuation).
    let connect = connect_v311("ws-split", true, 60);
    ws.send_frame(OP_BINARY, false, &connect[..3]);
    ws.send_frame(OP_CONTINUATION, false, &connect[3..10]);
    ws.send_frame(OP_CONTINUATION, true, &connect[10..]);
    assert_eq!(ws.read_packet().expect("CONNACK"), [0x20, 2, 0, 0]);
    // SUBSCRIBE and a PUBLISH to it in one frame.
    let mut two = subscribe_packet(1, &[("ws/split", 1)]);
    two.extend(publish_packet("ws/split", 1, false, false, 7, b"packed"));
    ws.send_mqtt(&two);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(ws.read_packet().expect("packet"));
    }
    assert!(got.contains(&vec![0x90, 3, 0, 1, 1]), "SUBACK: {got:02x?}");
    assert!(got.contains(&vec![0x40, 2, 0, 7]), "PUBACK: {got:02x?}");
    let publish = got.iter().find(|p| p[0] & 0xF0 == 0x30).expect("PUBLISH");
    assert!(publish.ends_with(b"packed"));
    // A packet split in the middle of a frame, the rest with the next packet's start.
    let pingreq = [0xC0u8, 0];
    let mut a = publish_packet("ws/split", 0, false, false, 0, b"tail");
    let cut = a.len() - 2;
    let rest = a.split_off(cut);
    ws.send_mqtt(&a);
    let mut b = rest;
    b.extend_from_slice(&pingreq[..1]);
    ws.send_mqtt(&b);
    ws.send_mqtt(&pingreq[1..]);
    // The PUBLISH (delivered to this subscriber) and the PINGRESP, in either order.
    let got = [ws.read_packet(), ws.read_packet()].map(|p| p.expect("packet"));
    assert!(
        got.iter().any(|p| p[0] == 0x30 && p.ends_with(b"tail")),
        "{got:02x?}"
    );
    assert!(got.contains(&vec![0xD0, 0]), "{got:02x?}");
}

#[test]
fn close_frame_is_echoed_and_the_connection_ends() {
    // RFC 6455 §5.5.1: the server answers a close with a close and closes the TCP connection.
    let (_broker, addr) = ws_broker(&[]);
    let mut ws = WsRaw::upgrade(addr, "/mqtt");
    raw_connect(&mut ws, "ws-close");
    ws.send_frame(OP_CLOSE, true, &[0x03, 0xE8, b'b', b'y', b'e']);
    assert_eq!(ws.read_frame(), Some((OP_CLOSE, vec![0x03, 0xE8])));
    assert_eq!(ws.read_frame(), None);
}

#[test]
fn parked_and_handed_off_ws_connections_keep_their_framing() {
    // An idle connection parks (its WebSocket state leaves with the socket) and resumes on
    // input; with two shards some connections are handed to their home shard first.
    let (broker, addr) = ws_broker(&["--shards", "2", "--idle-park-secs", "1"]);
    let mut conns: Vec<WsRaw> = (0..4)
        .map(|i| {
            let mut ws = WsRaw::upgrade(addr, "/mqtt");
            raw_connect(&mut ws, &format!("ws-park-{i}"));
            ws.send_mqtt(&subscribe_packet(1, &[("ws/park", 0)]));
            assert_eq!(ws.read_packet().expect("SUBACK"), [0x90, 3, 0, 1, 0]);
            ws
        })
        .collect();
    std::thread::sleep(Duration::from_millis(3500));
    assert!(broker.log().contains("connection parked"), "nothing parked");
    // A ping wakes a parked connection and is answered...
    conns[0].send_frame(OP_PING, true, b"wake");
    assert_eq!(conns[0].read_frame(), Some((OP_PONG, b"wake".to_vec())));
    // ...and a publish reaches every (parked) subscriber as a binary frame.
    conns[0].send_mqtt(&publish_packet("ws/park", 0, false, false, 0, b"hello"));
    for ws in &mut conns {
        let p = ws.read_packet().expect("PUBLISH");
        assert!(p.ends_with(b"hello"));
    }
}

#[test]
fn cli_and_config_refuse_inconsistent_websocket_settings() {
    let [port] = free_ports::<1>();
    let listen = format!("127.0.0.1:{port}");
    let (code, err) = common::ops::start_fails(&["--ws-path", "/x", "--listen", &listen]);
    assert_ne!(code, Some(0));
    assert!(err.contains("ws_path"));
    let (code, _) = common::ops::start_fails(&["--ws-listen", &listen, "--ws-path", "mqtt"]);
    assert_ne!(code, Some(0));
}

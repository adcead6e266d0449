//! PROXY protocol listeners and address admission (issue 7), against HAProxy's
//! "proxy-protocol.txt" (cited as §2.1 for version 1, §2.2 for version 2): raw sockets
//! writing headers by hand, and a real HAProxy (`send-proxy`, `send-proxy-v2`, `check`) in
//! front of the broker with clients bound to loopback aliases.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::proxy::{broker_with, raw_from, wait_log, HaProxy};
use common::tls::{free_ports, tls_opts, Pki};
use common::*;
use ringmq::proxy::{encode_v1, encode_v2};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A broker with one PROXY listener on a free port (plus the harness' plain one); `more`
/// adds keys to that listener.
fn proxy_broker(tag: &str, more: &str, extra: &[&str]) -> (Broker, SocketAddr) {
    let [port] = free_ports::<1>();
    let toml = format!("[[listeners]]\nbind = \"127.0.0.1:{port}\"\nproxy_protocol = true\n{more}");
    (broker_with(tag, &toml, extra), local(port))
}

fn expect_connack_ok(raw: &mut Raw) {
    let ack = expect_packet(raw);
    assert_eq!(&ack[..], &[0x20, 0x02, 0x00, 0x00], "CONNACK accepted");
}

#[test]
fn v1_header_and_connect_in_one_write_are_served_as_the_real_client() {
    let (broker, addr) = proxy_broker("v1-one", "", &[]);
    let mut raw = Raw::connect(addr);
    let mut bytes = encode_v1(Some((sa("192.0.2.7:4242"), sa("198.51.100.1:1883"))));
    bytes.extend(connect_v311("v1-one", true, 30));
    raw.send(&bytes);
    expect_connack_ok(&mut raw);
    // The broker sees the client's address, not the socket's (127.0.0.1).
    wait_log(&broker, "peer=Some(192.0.2.7:4242)");
    raw_disconnect(raw);
}

#[test]
fn headers_split_across_writes_work_v1_and_v2_with_tlvs() {
    let (broker, addr) = proxy_broker("split", "", &[]);
    // ALPN and a NOOP TLV (§2.2.1, §2.2.4): skipped.
    let tlvs = [&[0x01, 0, 4][..], b"mqtt", &[0x04, 0, 2, 0, 0]].concat();
    let headers = [
        encode_v1(Some((sa("[2001:db8::9]:777"), sa("[2001:db8::1]:1883")))),
        encode_v2(Some((sa("203.0.113.50:6000"), sa("10.0.0.1:1883"))), &tlvs),
    ];
    for (i, h) in headers.iter().enumerate() {
        let mut raw = Raw::connect(addr);
        for piece in [&h[..5], &h[5..14], &h[14..]] {
            raw.send(piece);
            std::thread::sleep(Duration::from_millis(60));
        }
        // Nothing is answered before a CONNECT: the header alone is no packet.
        expect_silence(&mut raw, Duration::from_millis(200));
        raw.send(&connect_v311(&format!("split-{i}"), true, 30));
        expect_connack_ok(&mut raw);
        raw_disconnect(raw);
    }
    wait_log(&broker, "peer=Some([2001:db8::9]:777)");
    wait_log(&broker, "peer=Some(203.0.113.50:6000)");
}

#[test]
fn no_header_or_a_bad_one_is_closed_never_guessed() {
    let (broker, addr) = proxy_broker("bad", "", &["--connect-timeout", "2"]);
    // A plain CONNECT where the header must be (§2: the receiver must not guess).
    let mut raw = Raw::connect(addr);
    raw.send(&connect_v311("no-header", true, 30));
    wait_closed(&mut raw, Duration::from_secs(3));
    for garbage in [
        &b"PROXY TCP4 1.2.3 4.5.6.7 1 2\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c", // v2 signature, version 3
    ] {
        let mut raw = Raw::connect(addr);
        raw.send(garbage);
        wait_closed(&mut raw, Duration::from_secs(3));
    }
    // A header that never completes: closed once connect_timeout runs out.
    let mut raw = Raw::connect(addr);
    raw.send(b"PROXY TCP4 10.0.0.1");
    let took = wait_closed(&mut raw, Duration::from_secs(5));
    assert!(took >= Duration::from_millis(1500), "closed after {took:?}");
    wait_log(&broker, "no PROXY protocol header");
    wait_log(&broker, "no PROXY header within connect_timeout");
    // The plain listener is not affected: no header expected there.
    let (raw, _) = raw_session(broker.addr, "plain", true);
    raw_disconnect(raw);
}

#[test]
fn the_plain_listener_takes_proxy_protocol_from_the_flag() {
    let broker = Broker::start_with(&["--proxy-protocol", "true"]);
    let mut raw = Raw::connect(broker.addr);
    let mut bytes = encode_v2(
        Some((sa("[2001:db8::77]:9"), sa("[2001:db8::1]:1883"))),
        &[],
    );
    bytes.extend(connect_v311("flag", true, 30));
    raw.send(&bytes);
    expect_connack_ok(&mut raw);
    wait_log(&broker, "peer=Some([2001:db8::77]:9)");
    let mut plain = Raw::connect(broker.addr);
    let _ = try_send(&mut plain, &connect_v311("flag-none", true, 30));
    wait_closed(&mut plain, Duration::from_secs(3));
}

#[test]
fn a_peer_outside_proxy_trusted_is_closed() {
    let (_broker, addr) = proxy_broker("untrusted", "proxy_trusted = [\"10.0.0.0/8\"]\n", &[]);
    let mut raw = Raw::connect(addr);
    let mut bytes = encode_v1(Some((sa("192.0.2.1:1"), sa("192.0.2.2:2"))));
    bytes.extend(connect_v311("untrusted", true, 30));
    // The write may race the close; either way no CONNACK comes.
    let _ = try_send(&mut raw, &bytes);
    wait_closed(&mut raw, Duration::from_secs(3));
    let (_b2, addr2) = proxy_broker("trusted", "proxy_trusted = [\"127.0.0.1/32\"]\n", &[]);
    let mut raw = Raw::connect(addr2);
    raw.send(&bytes);
    expect_connack_ok(&mut raw);
}

#[test]
fn deny_and_allow_apply_to_the_address_in_the_header() {
    let more =
        "allow_from = [\"192.0.2.0/24\", \"198.51.100.0/24\"]\ndeny_from = [\"192.0.2.128/25\"]\n";
    let (broker, addr) = proxy_broker("acl", more, &[]);
    for (src, admitted) in [
        ("192.0.2.5:1000", true),
        ("192.0.2.200:1000", false),
        ("198.51.100.3:1000", true),
        ("203.0.113.1:1000", false),
    ] {
        let mut raw = Raw::connect(addr);
        let mut bytes = encode_v2(Some((sa(src), sa("10.0.0.1:1883"))), &[]);
        bytes.extend(connect_v311("acl", true, 30));
        let _ = try_send(&mut raw, &bytes);
        if admitted {
            expect_connack_ok(&mut raw);
        } else {
            wait_closed(&mut raw, Duration::from_secs(3));
        }
    }
    wait_log(&broker, "address refused by allow_from/deny_from");
    // On a listener without PROXY the socket's address is the client's.
    let [port] = free_ports::<1>();
    let toml = format!("[[listeners]]\nbind = \"127.0.0.1:{port}\"\ndeny_from = [\"127.0.0.3\"]\n");
    let _b = broker_with("acl-plain", &toml, &[]);
    let mut raw = raw_from([127, 0, 0, 3], local(port));
    let _ = try_send(&mut raw, &connect_v311("denied", true, 30));
    wait_closed(&mut raw, Duration::from_secs(3));
    let mut raw = raw_from([127, 0, 0, 2], local(port));
    raw.send(&connect_v311("allowed", true, 30));
    expect_connack_ok(&mut raw);
}

#[test]
fn the_real_address_survives_hand_off_and_parking() {
    // Two shards: some client ids live on the other shard (hand-off); parking after 1 s.
    let (broker, addr) = proxy_broker("park", "", &["--shards", "2", "--idle-park-secs", "1"]);
    let mut subs = Vec::new();
    for i in 0..4 {
        let mut raw = Raw::connect(addr);
        let mut bytes = encode_v1(Some((
            sa(&format!("192.0.2.{}:5000", 10 + i)),
            sa("10.0.0.1:1883"),
        )));
        bytes.extend(connect_v311(&format!("park-{i}"), true, 30));
        raw.send(&bytes);
        expect_connack_ok(&mut raw);
        raw_subscribe(&mut raw, 1, &[("park/t", 0)]);
        subs.push(raw);
    }
    std::thread::sleep(Duration::from_millis(2500));
    wait_log(&broker, "connection parked");
    let (mut publisher, _) = raw_session(broker.addr, "park-pub", true);
    publisher.send(&publish_packet("park/t", 0, false, false, 0, b"hi"));
    for raw in &mut subs {
        assert_eq!(expect_publish(raw).payload, b"hi");
    }
    raw_disconnect(publisher);
}

#[test]
fn a_bad_network_fails_the_configuration_with_its_key() {
    let dir = std::env::temp_dir().join(format!("ringmq-proxy-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (bad, key) in [
        ("deny_from = [\"10.0.0.0/33\"]", "deny_from"),
        ("allow_from = [\"not-an-ip\"]", "allow_from"),
        (
            "proxy_protocol = true\nproxy_trusted = [\"10.1.0.0/8\"]",
            "proxy_trusted",
        ),
    ] {
        let file = dir.join("bad.toml");
        std::fs::write(
            &file,
            format!("[[listeners]]\nbind = \"127.0.0.1:1\"\n{bad}\n"),
        )
        .unwrap();
        let (code, _, err) = common::ops::check_config(&file);
        assert_eq!(code, Some(2), "{bad}: {err}");
        assert!(err.contains(key), "{bad}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- Through a real HAProxy ----

/// HAProxy frontends on `v1` (send-proxy) and `v2` (send-proxy-v2, with TCP health checks,
/// which send LOCAL headers, §2.2) to the broker's PROXY listener at `to`.
fn haproxy_in_front(tag: &str, v1: u16, v2: u16, to: SocketAddr) -> HaProxy {
    let cfg = format!(
        "frontend f1\n    bind 127.0.0.1:{v1}\n    default_backend b1\n\
         backend b1\n    server s1 {to} send-proxy\n\n\
         frontend f2\n    bind 127.0.0.1:{v2}\n    default_backend b2\n\
         backend b2\n    server s2 {to} send-proxy-v2 check inter 200ms\n"
    );
    HaProxy::start(tag, &cfg, &[v1, v2])
}

#[test]
fn rumqttc_round_trip_through_haproxy_v1_and_v2_with_health_checks() {
    let (broker, addr) = proxy_broker("hap", "", &[]);
    let [v1, v2] = free_ports::<2>();
    let _hp = haproxy_in_front("rt", v1, v2, addr);
    // Health checks arrive as LOCAL headers and are just closed connections to the broker.
    wait_log(&broker, "local=true");
    let mut sub = TestClient::connect_opts(rumqttc::MqttOptions::new("hap-sub", "127.0.0.1", v1));
    sub.subscribe("hap/t", rumqttc::QoS::AtLeastOnce);
    let mut publ = TestClient::connect_opts(rumqttc::MqttOptions::new("hap-pub", "127.0.0.1", v2));
    publ.publish_confirmed(
        "hap/t",
        rumqttc::QoS::AtLeastOnce,
        false,
        b"through haproxy",
    );
    assert_eq!(&sub.recv().payload[..], b"through haproxy");
    // More health checks later do not disturb the live connections.
    std::thread::sleep(Duration::from_millis(600));
    publ.publish_confirmed("hap/t", rumqttc::QoS::AtLeastOnce, false, b"again");
    assert_eq!(&sub.recv().payload[..], b"again");
    sub.disconnect();
    publ.disconnect();
}

#[test]
fn deny_from_refuses_only_that_client_through_haproxy() {
    let (broker, addr) = proxy_broker("hap-deny", "deny_from = [\"127.0.0.3/32\"]\n", &[]);
    let [v1, v2] = free_ports::<2>();
    let _hp = haproxy_in_front("deny", v1, v2, addr);
    for front in [v1, v2] {
        let mut ok = raw_from([127, 0, 0, 2], local(front));
        ok.send(&connect_v311(&format!("ok-{front}"), true, 30));
        expect_connack_ok(&mut ok);
        let mut denied = raw_from([127, 0, 0, 3], local(front));
        let _ = try_send(&mut denied, &connect_v311(&format!("no-{front}"), true, 30));
        wait_closed(&mut denied, Duration::from_secs(3));
        raw_disconnect(ok);
    }
    wait_log(&broker, "peer=Some(127.0.0.2:");
    wait_log(&broker, "ip=127.0.0.3");
}

#[test]
fn connection_rate_per_ip_counts_real_clients_not_haproxy() {
    let more = "connection_rate_per_ip = 2.0\n";
    let (_broker, addr) = proxy_broker("hap-rate", more, &[]);
    let [v1, v2] = free_ports::<2>();
    let _hp = haproxy_in_front("rate", v1, v2, addr);
    let start = Instant::now();
    let connack = |from: [u8; 4], id: &str| {
        let mut raw = raw_from(from, local(v1));
        let _ = try_send(&mut raw, &connect_v311(id, true, 30));
        matches!(next_within(&mut raw, Duration::from_secs(3)), Next::Packet(p) if p[0] == 0x20)
    };
    assert!(connack([127, 0, 0, 2], "r1"));
    assert!(connack([127, 0, 0, 2], "r2"));
    // A third client address has its own budget (HAProxy itself would be over by now).
    assert!(connack([127, 0, 0, 3], "r3"));
    assert!(connack([127, 0, 0, 4], "r4"));
    if start.elapsed() < Duration::from_millis(400) {
        assert!(!connack([127, 0, 0, 2], "r5"), "127.0.0.2 over its rate");
    }
}

#[test]
fn tls_listener_behind_haproxy_header_then_handshake() {
    let pki = Pki::new("proxy-tls");
    let [port, v1, v2] = free_ports::<3>();
    let toml = format!(
        "[[listeners]]\nbind = \"127.0.0.1:{port}\"\nproxy_protocol = true\ntls_cert = {:?}\ntls_key = {:?}\n",
        pki.server_cert.display().to_string(),
        pki.server_key.display().to_string()
    );
    let broker = broker_with("tls", &toml, &[]);
    let _hp = haproxy_in_front("tls", v1, v2, local(port));
    for front in [v1, v2] {
        let mut c = TestClient::connect_opts(tls_opts(&pki, &format!("tls-{front}"), front, false));
        c.subscribe("tls/t", rumqttc::QoS::AtLeastOnce);
        c.publish_confirmed("tls/t", rumqttc::QoS::AtLeastOnce, false, b"sealed");
        assert_eq!(&c.recv().payload[..], b"sealed");
        c.disconnect();
    }
    // Each client's header came first, then its TLS handshake on the same socket.
    wait_log(&broker, &format!("client=tls-{v1}"));
    wait_log(&broker, &format!("client=tls-{v2}"));
}

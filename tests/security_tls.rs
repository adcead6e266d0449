//! TLS listeners (issue 6): plain and TLS listeners side by side, mutual TLS, the user name
//! from a client certificate, parked TLS connections, large payloads, bad certificate files
//! at start-up, and real third-party clients (mosquitto_pub/sub, Python paho-mqtt) over TLS.
//! Certificates are generated at test time (tests/common/tls.rs).

mod common;

use std::process::Command;
use std::time::Duration;

use common::tls::{free_port, free_ports, start, tls_opts, Pki, CLIENT_CN, CLIENT_SAN};
use common::TestClient;
use rumqttc::QoS;

#[test]
fn tls_and_plain_listeners_deliver_to_each_other() {
    let pki = Pki::new("both");
    let port = free_port();
    let broker = start(&pki.listener_args(port), &["--shards", "2"]);
    // Six TLS subscribers: their client ids live on both shards, so some connections are
    // handed to their home shard together with their TLS session.
    let mut subs: Vec<TestClient> = (0..12)
        .map(|i| {
            let mut c =
                TestClient::connect_opts(tls_opts(&pki, &format!("tls-sub-{i}"), port, false));
            c.subscribe("to/tls", QoS::AtLeastOnce);
            c
        })
        .collect();
    let mut plain = TestClient::connect(&broker, "plain-pub", true);
    plain.publish_confirmed("to/tls", QoS::AtLeastOnce, false, "from plain");
    for s in &mut subs {
        assert_eq!(&s.recv().payload[..], b"from plain");
    }
    let mut plain_sub = TestClient::connect(&broker, "plain-sub", true);
    plain_sub.subscribe("to/plain", QoS::ExactlyOnce);
    let mut tls_pub = TestClient::connect_opts(tls_opts(&pki, "tls-pub", port, false));
    for i in 0..20 {
        tls_pub.publish_confirmed("to/plain", QoS::ExactlyOnce, false, format!("m{i}"));
    }
    for i in 0..20 {
        assert_eq!(plain_sub.recv().payload, format!("m{i}").as_bytes());
    }
    // Sessions live on both shards (so connections accepted on the other one were handed
    // off with their TLS session).
    let log = broker.log();
    let homes: std::collections::HashSet<&str> = log
        .lines()
        .filter(|l| l.contains("client connected") && l.contains("tls-sub-"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("shard=")))
        .collect();
    assert_eq!(homes.len(), 2, "TLS sessions on one shard only:\n{log}");
}

#[test]
fn large_payloads_cross_tls_intact() {
    let pki = Pki::new("large");
    let port = free_port();
    let _broker = start(&pki.listener_args(port), &[]);
    let mut o = tls_opts(&pki, "big-sub", port, false);
    o.set_max_packet_size(8 << 20, 8 << 20);
    let mut sub = TestClient::connect_opts(o);
    sub.subscribe("big", QoS::AtLeastOnce);
    let mut o = tls_opts(&pki, "big-pub", port, false);
    o.set_max_packet_size(8 << 20, 8 << 20);
    let mut publ = TestClient::connect_opts(o);
    let payloads: Vec<Vec<u8>> = (0..3u8)
        .map(|k| {
            (0..(2 << 20))
                .map(|i| (i as u8) ^ k.wrapping_mul(31))
                .collect()
        })
        .collect();
    for p in &payloads {
        publ.publish_confirmed("big", QoS::AtLeastOnce, false, p.clone());
    }
    for p in &payloads {
        let got = sub
            .recv_within(Duration::from_secs(20))
            .expect("large payload");
        assert_eq!(got.payload.len(), p.len());
        assert!(got.payload[..] == p[..], "payload corrupted over TLS");
    }
}

#[test]
fn mutual_tls_refuses_missing_and_untrusted_certificates() {
    let pki = Pki::new("mtls");
    let port = free_port();
    let broker = start(&pki.mutual_args(port), &[]);
    let none = TestClient::try_connect_opts(tls_opts(&pki, "no-cert", port, false));
    assert!(none.is_err(), "a client without a certificate was accepted");
    let mut rogue = tls_opts(&pki, "rogue", port, false);
    rogue.set_transport(pki.transport(Some((&pki.rogue_cert, &pki.rogue_key))));
    assert!(
        TestClient::try_connect_opts(rogue).is_err(),
        "a certificate from an untrusted CA was accepted"
    );
    let mut good = TestClient::connect_opts(tls_opts(&pki, "good", port, true));
    good.subscribe("m/#", QoS::AtMostOnce);
    good.publish("m/x", QoS::AtMostOnce, false, "hi");
    assert_eq!(&good.recv().payload[..], b"hi");
    std::thread::sleep(Duration::from_millis(200));
    let log = broker.log();
    assert!(
        log.contains("TLS handshake failed"),
        "failures not logged:\n{log}"
    );
    // The plain listener is unaffected by the TLS listener's settings.
    let _plain = TestClient::connect(&broker, "plain", true);
}

#[test]
fn optional_client_certificate_and_user_name_from_certificate() {
    let pki = Pki::new("user");
    for (which, name) in [("cn", CLIENT_CN), ("san", CLIENT_SAN)] {
        let port = free_port();
        let mut args = pki.mutual_args(port);
        args.extend(
            [
                "--tls-require-client-cert",
                "false",
                "--tls-username-from",
                which,
            ]
            .map(String::from),
        );
        let broker = start(&args, &[]);
        // The certificate's name replaces whatever user name CONNECT carries.
        let mut o = tls_opts(&pki, &format!("cert-{which}"), port, true);
        o.set_credentials("claimed-user", "pw");
        let _with = TestClient::connect_opts(o);
        // Without a certificate the client is anonymous (allowed here), not "claimed".
        let mut o = tls_opts(&pki, &format!("nocert-{which}"), port, false);
        o.set_credentials("claimed-user", "pw");
        let _without = TestClient::connect_opts(o);
        std::thread::sleep(Duration::from_millis(200));
        let log = broker.log();
        let line = |id: &str| {
            log.lines()
                .find(|l| l.contains("client connected") && l.contains(id))
                .unwrap_or_else(|| panic!("no connect line for {id}:\n{log}"))
                .to_string()
        };
        assert!(line(&format!("cert-{which}")).contains(&format!("user={name}")));
        assert!(!line(&format!("nocert-{which}")).contains("user="));
        assert!(!log.contains("claimed-user"));
    }
}

#[test]
fn parked_tls_connections_resume_and_hear_takeover() {
    let pki = Pki::new("park");
    let port = free_port();
    let broker = start(&pki.listener_args(port), &["--idle-park-secs", "1"]);
    let mut sub = TestClient::connect_opts(tls_opts(&pki, "parked-sub", port, false));
    sub.subscribe("wake/#", QoS::AtLeastOnce);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        broker.log().contains("connection parked"),
        "the TLS connection did not park"
    );
    let mut publ = TestClient::connect(&broker, "waker", true);
    for i in 0..3 {
        publ.publish_confirmed("wake/up", QoS::AtLeastOnce, false, format!("w{i}"));
        assert_eq!(sub.recv().payload, format!("w{i}").as_bytes());
        // Let it park again between messages.
        std::thread::sleep(Duration::from_millis(2200));
    }

    // 5.0: a parked TLS connection taken over hears DISCONNECT 0x8E [MQTT-3.1.4-3], sealed
    // with its parked TLS session.
    use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet};
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let events = |id: &str| {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_transport(pki.transport(None));
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut el) = AsyncClient::new(o, 10);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let _client = client;
                loop {
                    let ev = el.poll().await;
                    let end = ev.is_err();
                    if tx.send(ev.map_err(|e| e.to_string())).is_err() || end {
                        return;
                    }
                }
            });
        });
        rx
    };
    let first = events("same-id");
    let connected = |rx: &std::sync::mpsc::Receiver<Result<Event, String>>| loop {
        match rx.recv_timeout(Duration::from_secs(5)).expect("event") {
            Ok(Event::Incoming(Packet::ConnAck(_))) => break,
            Ok(_) => {}
            Err(e) => panic!("connect failed: {e}"),
        }
    };
    connected(&first);
    std::thread::sleep(Duration::from_millis(2500));
    let second = events("same-id");
    connected(&second);
    let reason = loop {
        match first.recv_timeout(Duration::from_secs(5)).expect("event") {
            Ok(Event::Incoming(Packet::Disconnect(d))) => break Some(d.reason_code),
            Ok(_) => {}
            // rumqttc v5 reports the server's DISCONNECT as the end of its event loop.
            Err(e) if e.contains("SessionTakenOver") => {
                break Some(DisconnectReasonCode::SessionTakenOver)
            }
            Err(e) => panic!("first connection ended without DISCONNECT: {e}"),
        }
    };
    assert_eq!(reason, Some(DisconnectReasonCode::SessionTakenOver));
}

/// Run the broker binary with `args` until it exits (it must, within 10 s).

#[test]
fn bad_certificate_files_stop_the_start_with_a_clear_error() {
    let pki = Pki::new("bad");
    let garbage = pki.dir.join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let missing = pki.dir.join("missing.pem");
    let p = |x: &std::path::Path| x.display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![p(&missing), p(&pki.server_key)],
            "cannot read certificate file",
        ),
        (vec![p(&garbage), p(&pki.server_key)], "no CERTIFICATE"),
        (
            vec![p(&pki.server_cert), p(&garbage)],
            "no usable private key",
        ),
        // The key of another certificate.
        (
            vec![p(&pki.server_cert), p(&pki.client_key)],
            "does the key belong to the certificate",
        ),
    ];
    for (files, want) in cases {
        let (code, err) = common::ops::start_fails(&[
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            &files[0],
            "--tls-key",
            &files[1],
        ]);
        assert_eq!(code, Some(1), "{files:?}: {err}");
        assert!(err.contains(want), "{files:?}: want {want:?} in:\n{err}");
    }
    let (code, err) = common::ops::start_fails(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &p(&pki.server_cert),
        "--tls-key",
        &p(&pki.server_key),
        "--tls-client-ca",
        &p(&garbage),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("client CA file"), "{err}");
    let (code, err) = common::ops::start_fails(&["--tls-listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("needs tls_cert and tls_key"), "{err}");
    // A [[listeners]] entry with half its TLS settings.
    let cfg = pki.dir.join("half.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[listeners]]\nbind = \"127.0.0.1:0\"\ntls_cert = {:?}\n",
            p(&pki.server_cert)
        ),
    )
    .unwrap();
    let (code, err) = common::ops::start_fails(&["--config", &p(&cfg)]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("tls_cert and tls_key go together"), "{err}");
    // Two listeners on one address (SO_REUSEPORT would let both bind and split clients).
    let port = free_port();
    let twice = pki.dir.join("twice.toml");
    std::fs::write(
        &twice,
        format!("[[listeners]]\nbind = \"127.0.0.1:{port}\"\n[[listeners]]\nbind = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let (code, err) = common::ops::start_fails(&["--config", &p(&twice)]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("already uses this address"), "{err}");
}

#[test]
fn listeners_from_the_config_file_each_with_their_settings() {
    let pki = Pki::new("cfg");
    let [tls_port, mtls_port] = free_ports::<2>();
    let cfg = pki.dir.join("listeners.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[listeners]]\nname = \"devices\"\nbind = \"127.0.0.1:{tls_port}\"\ntls_cert = {:?}\ntls_key = {:?}\n\n\
             [[listeners]]\nname = \"fleet\"\nbind = \"127.0.0.1:{mtls_port}\"\ntls_cert = {:?}\ntls_key = {:?}\ntls_client_ca = {:?}\ntls_username_from = \"cn\"\n",
            pki.server_cert, pki.server_key, pki.server_cert, pki.server_key, pki.ca
        ),
    )
    .unwrap();
    let broker = start(&["--config".into(), cfg.display().to_string()], &[]);
    let mut a = TestClient::connect_opts(tls_opts(&pki, "on-devices", tls_port, false));
    a.subscribe("fleet/#", QoS::AtLeastOnce);
    assert!(TestClient::try_connect_opts(tls_opts(&pki, "no-cert", mtls_port, false)).is_err());
    let mut b = TestClient::connect_opts(tls_opts(&pki, "on-fleet", mtls_port, true));
    b.publish_confirmed("fleet/1", QoS::AtLeastOnce, false, "x");
    assert_eq!(&a.recv().payload[..], b"x");
    let log = broker.log();
    assert!(
        log.contains("listener=devices") && log.contains("listener=fleet"),
        "{log}"
    );
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn mosquitto_clients_over_tls_and_mutual_tls() {
    if !have("mosquitto_sub") || !have("mosquitto_pub") {
        eprintln!("SKIP: mosquitto clients not installed (.ci/run installs them)");
        return;
    }
    let pki = Pki::new("mosq");
    let [port, mport] = free_ports::<2>();
    let mut args = pki.listener_args(port);
    // A second, mutual-TLS listener from the same broker.
    let cfg = pki.dir.join("m.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[listeners]]\nbind = \"127.0.0.1:{mport}\"\ntls_cert = {:?}\ntls_key = {:?}\ntls_client_ca = {:?}\n",
            pki.server_cert, pki.server_key, pki.ca
        ),
    )
    .unwrap();
    args.extend(["--config".into(), cfg.display().to_string()]);
    let _broker = start(&args, &[]);
    let ca = pki.ca.display().to_string();
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--cafile", &ca])
        .args(["-t", "mosq/#", "-C", "2", "-W", "10", "-q", "1", "-v"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    std::thread::sleep(Duration::from_millis(700));
    let publ = |p: u16, extra: &[&str], msg: &str| {
        let out = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &p.to_string(), "--cafile", &ca])
            .args(["-t", "mosq/x", "-q", "1", "-m", msg])
            .args(extra)
            .output()
            .expect("mosquitto_pub");
        if !out.status.success() {
            eprintln!(
                "mosquitto_pub {msg}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out.status.success()
    };
    assert!(publ(port, &[], "over-tls"));
    let (cert, key) = (
        pki.client_cert.display().to_string(),
        pki.client_key.display().to_string(),
    );
    assert!(
        !publ(mport, &[], "no-cert"),
        "mutual TLS accepted a client without a certificate"
    );
    assert!(publ(mport, &["--cert", &cert, "--key", &key], "over-mtls"));
    let out = sub.wait_with_output().expect("mosquitto_sub output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["mosq/x over-tls", "mosq/x over-mtls"]
    );
}

#[test]
fn python_paho_client_over_tls() {
    let has_paho = Command::new("python3")
        .args(["-c", "import paho.mqtt.client"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_paho {
        eprintln!("SKIP: python3 paho-mqtt not installed (.ci/run installs it)");
        return;
    }
    let pki = Pki::new("paho");
    let port = free_port();
    let _broker = start(&pki.listener_args(port), &[]);
    let script = r#"
import sys, threading, paho.mqtt.client as mqtt
import ssl
port, ca, version = int(sys.argv[1]), sys.argv[2], sys.argv[3]
got, subscribed = [], threading.Event()
done = threading.Event()
try:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-tls")
except AttributeError:
    c = mqtt.Client(client_id="paho-tls")
ctx = ssl.create_default_context(cafile=ca)
pinned = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3
ctx.minimum_version = ctx.maximum_version = pinned
c.tls_set_context(ctx)
c.on_subscribe = lambda *a: subscribed.set()
def on_message(cl, ud, m):
    got.append(m.payload.decode())
    if len(got) == 3: done.set()
c.on_message = on_message
c.connect("127.0.0.1", port, 30)
c.loop_start()
c.subscribe("paho/#", qos=1)
assert subscribed.wait(5), "no SUBACK"
for i in range(3):
    c.publish("paho/t", "p%d" % i, qos=1).wait_for_publish(5)
assert done.wait(5), "got %r" % got
print(c.socket().version(), ",".join(got))
c.disconnect(); c.loop_stop()
"#;
    // Both protocol versions the listener offers, pinned on the client side.
    for (version, name) in [("1.2", "TLSv1.2"), ("1.3", "TLSv1.3")] {
        let out = Command::new("python3")
            .args([
                "-c",
                script,
                &port.to_string(),
                &pki.ca.display().to_string(),
                version,
            ])
            .output()
            .expect("python3");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "paho (TLS {version}) failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.trim(), format!("{name} p0,p1,p2"));
    }
}

#[test]
fn a_certificate_identity_needs_no_password_and_drives_the_acl() {
    let pki = Pki::new("certacl");
    let port = free_port();
    let pw = common::passwd::password_file(&[("alice", "wonderland")]);
    let acl = pki.dir.join("acl");
    std::fs::write(
        &acl,
        "default deny\nall\nallow read public/#\nuser device-42\nallow readwrite devices/%u/#\n",
    )
    .unwrap();
    let mut args = pki.mutual_args(port);
    args.extend(
        [
            "--tls-require-client-cert",
            "false",
            "--tls-username-from",
            "cn",
            "--password-file",
            pw.to_str().unwrap(),
            "--acl-file",
            acl.to_str().unwrap(),
        ]
        .map(String::from),
    );
    let _broker = start(&args, &[]);
    // The certificate proves who the client is: no password, and CONNECT's user name is
    // ignored; the ACL's `%u` is the certificate's CN.
    let mut o = tls_opts(&pki, "dev", port, true);
    o.set_credentials("alice", "not her password");
    let mut dev = TestClient::connect_opts(o);
    dev.subscribe("devices/device-42/#", QoS::AtLeastOnce);
    dev.publish_confirmed("devices/device-42/t", QoS::AtLeastOnce, false, "mine");
    assert_eq!(&dev.recv().payload[..], b"mine");
    // Without a certificate the password file decides (anonymous clients are refused once
    // a password file is set).
    let mut o = tls_opts(&pki, "nocert-bad", port, false);
    o.set_credentials("alice", "wrong");
    let err = TestClient::try_connect_opts(o)
        .err()
        .expect("wrong password accepted");
    assert!(err.contains("BadUserNamePassword"), "{err}");
    assert!(TestClient::try_connect_opts(tls_opts(&pki, "nocert-anon", port, false)).is_err());
    let mut o = tls_opts(&pki, "nocert-alice", port, false);
    o.set_credentials("alice", "wonderland");
    let _alice = TestClient::connect_opts(o);
}

//! Interoperability with Eclipse Mosquitto's command-line clients (Debian package
//! `mosquitto-clients`): `mosquitto_sub` / `mosquitto_pub` over MQTT 3.1.1 and 5.0.
//!
//! If the binaries are missing the tests fail under CI (env `CI` set; `.ci/run` installs
//! them) and otherwise print a loud skip notice.

mod common;

use common::*;
use rumqttc::QoS;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// `true` if the mosquitto clients can run here.
fn have_mosquitto() -> bool {
    let ok = ["mosquitto_pub", "mosquitto_sub"].iter().all(|b| {
        Command::new(b)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!(
                "mosquitto_pub/mosquitto_sub not found but CI is set (install mosquitto-clients)"
            );
        }
        eprintln!(
            "\n!!!!!!!! SKIPPED: mosquitto_pub/mosquitto_sub not installed \
             (apt-get install mosquitto-clients) !!!!!!!!\n"
        );
    }
    ok
}

/// A running `mosquitto_sub`; its stdout lines arrive over a channel.
struct Sub {
    child: Child,
    lines: Receiver<String>,
}

impl Sub {
    /// Start `mosquitto_sub -d` and wait until its SUBACK is logged (so the subscription
    /// is in force before anything is published).
    fn start(broker: &Broker, args: &[&str]) -> Sub {
        // stdbuf: line-buffer stdout so the SUBACK debug line arrives before exit.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub"])
            .args(["-h", "127.0.0.1", "-p", &broker.port().to_string(), "-d"])
            .args(["-W", "20"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mosquitto_sub");
        let lines = stdout_lines(&mut child, Some);
        let mut sub = Sub { child, lines };
        let deadline = Instant::now() + WAIT;
        loop {
            match sub.next_line(deadline) {
                Some(l) if l.contains("received SUBACK") => return sub,
                Some(_) => {}
                None => panic!("mosquitto_sub got no SUBACK within {WAIT:?}"),
            }
        }
    }

    fn next_line(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.lines.recv_timeout(left).ok()
    }

    /// The message lines (debug lines starting with "Client " are skipped) until the
    /// process exits; asserts a clean exit within [`WAIT`].
    fn messages_until_exit(mut self) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut msgs = Vec::new();
        while let Some(l) = self.next_line(deadline) {
            if !l.starts_with("Client ") && !l.starts_with("Subscribed ") {
                msgs.push(l);
            }
        }
        let status = wait_child(&mut self.child, deadline);
        assert_eq!(status, Some(0), "mosquitto_sub exit status; got {msgs:?}");
        msgs
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait for a child until `deadline`; kills it and returns `None` on timeout.
fn wait_child(child: &mut Child, deadline: Instant) -> Option<i32> {
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Run `mosquitto_pub` to completion (bounded) and assert success.
fn mosquitto_pub(broker: &Broker, args: &[&str]) {
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn mosquitto_pub");
    let status = wait_child(&mut child, Instant::now() + WAIT);
    assert_eq!(status, Some(0), "mosquitto_pub {args:?}");
}

#[test]
fn v311_publish_subscribe_qos_0_1_2() {
    // MQTT-3.3.2-3 / §4.3: messages at QoS 0, 1 and 2 from mosquitto_pub reach
    // mosquitto_sub (protocol level 4, MQTT-3.1.2-2), in order (MQTT-4.6.0-6).
    if !have_mosquitto() {
        return;
    }
    let broker = Broker::start();
    let sub = Sub::start(
        &broker,
        &["-V", "mqttv311", "-q", "2", "-t", "mq/v4", "-C", "3"],
    );
    for q in ["0", "1", "2"] {
        let msg = format!("qos{q}");
        mosquitto_pub(
            &broker,
            &["-V", "mqttv311", "-q", q, "-t", "mq/v4", "-m", &msg],
        );
    }
    assert_eq!(sub.messages_until_exit(), vec!["qos0", "qos1", "qos2"]);
}

#[test]
fn v311_retained_message_reaches_later_subscriber() {
    // MQTT-3.3.1-5 / MQTT-3.3.1-6: a retained publish is stored and sent to a later
    // subscriber.
    if !have_mosquitto() {
        return;
    }
    let broker = Broker::start();
    mosquitto_pub(
        &broker,
        &[
            "-V", "mqttv311", "-q", "1", "-r", "-t", "mq/ret", "-m", "kept",
        ],
    );
    let sub = Sub::start(&broker, &["-V", "mqttv311", "-v", "-t", "mq/#", "-C", "1"]);
    assert_eq!(sub.messages_until_exit(), vec!["mq/ret kept"]);
}

#[test]
fn v5_publish_subscribe() {
    // MQTT 5.0 §3.1.2.2 (protocol version 5) with a basic publish/subscribe at QoS 1 and 2.
    if !have_mosquitto() {
        return;
    }
    let broker = Broker::start();
    let sub = Sub::start(
        &broker,
        &["-V", "mqttv5", "-q", "1", "-t", "mq/v5/+", "-C", "2"],
    );
    mosquitto_pub(
        &broker,
        &["-V", "mqttv5", "-q", "1", "-t", "mq/v5/a", "-m", "five-a"],
    );
    mosquitto_pub(
        &broker,
        &["-V", "mqttv5", "-q", "2", "-t", "mq/v5/b", "-m", "five-b"],
    );
    assert_eq!(sub.messages_until_exit(), vec!["five-a", "five-b"]);
}

#[test]
fn v5_retained_message_reaches_later_subscriber() {
    // MQTT 5.0 MQTT-3.3.1-5 / MQTT-3.3.1-9: retained messages over 5.0.
    if !have_mosquitto() {
        return;
    }
    let broker = Broker::start();
    mosquitto_pub(
        &broker,
        &["-V", "mqttv5", "-r", "-t", "mq/r5", "-m", "kept5"],
    );
    let sub = Sub::start(&broker, &["-V", "mqttv5", "-v", "-t", "mq/r5", "-C", "1"]);
    assert_eq!(sub.messages_until_exit(), vec!["mq/r5 kept5"]);
}

#[test]
fn v5_and_v311_clients_exchange_messages() {
    // A broker serves both protocol versions at once: a 5.0 publisher reaches a 3.1.1
    // subscriber (rumqttc) and a 3.1.1 publisher (rumqttc) reaches a 5.0 subscriber.
    if !have_mosquitto() {
        return;
    }
    let broker = Broker::start();
    let mut v4 = TestClient::connect(&broker, "mq-rumqttc", true);
    v4.subscribe("mq/x/to4", QoS::AtLeastOnce);
    let sub5 = Sub::start(
        &broker,
        &["-V", "mqttv5", "-q", "1", "-t", "mq/x/to5", "-C", "1"],
    );

    mosquitto_pub(
        &broker,
        &["-V", "mqttv5", "-q", "1", "-t", "mq/x/to4", "-m", "from5"],
    );
    let p = v4.recv();
    assert_eq!(&p.payload[..], b"from5");

    v4.publish_confirmed("mq/x/to5", QoS::AtLeastOnce, false, "from4");
    assert_eq!(sub5.messages_until_exit(), vec!["from4"]);
}

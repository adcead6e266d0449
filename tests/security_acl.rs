//! Authorization with an ACL file (`--acl-file`, format in `docs/acl.md`), end to end over
//! real sockets: publish, subscribe, wills, retained messages and every delivery.
//!
//! MQTT leaves authorization to the implementation; what the spec fixes is how a refusal
//! is expressed: 5.0 PUBACK/PUBREC/SUBACK reason 0x87 Not authorized; 3.1.1 SUBACK 0x80
//! Failure [MQTT-3.9.3-1] and, for PUBLISH, either a positive acknowledgement or closing
//! the connection [MQTT-3.3.5-2] (ringmq acknowledges and drops).

mod common;

use std::time::Duration;

use common::acl::{acl_broker, client, publish, read_ack, subscribe, Hello};
use common::{expect_publish, expect_silence, packet, Raw};

const ACL: &str = "\
default deny

all
deny read secret/#
allow read #
allow readwrite users/%u/#
allow readwrite devices/%c/#
allow write public/#

anonymous
allow write anon/#

user alice
deny write public/blocked
allow write alice-only/#

user writer
allow write secret/#
allow write alice-only/#

client admin
allow readwrite $SYS/#
";

const QUIET: Duration = Duration::from_millis(300);

fn v5<'a>(id: &'a str, user: Option<&'a str>) -> Hello<'a> {
    Hello {
        version: 5,
        client_id: id,
        user,
        clean: true,
        ..Hello::default()
    }
}

fn v4<'a>(id: &'a str, user: Option<&'a str>) -> Hello<'a> {
    Hello {
        version: 4,
        ..v5(id, user)
    }
}

/// A 3.1.1 subscriber to `#` (everything but `secret/#` is readable for it).
fn watcher(b: &common::Broker) -> Raw {
    let mut w = client(b, v4("watcher", Some("watch")));
    assert_eq!(subscribe(&mut w, 4, 1, &["#"]), vec![1]);
    w
}

#[test]
fn v5_publish_without_write_permission_gets_0x87_and_reaches_nobody() {
    let (b, _f) = acl_broker(ACL, &[]);
    let mut w = watcher(&b);
    let mut bob = client(&b, v5("bob-c", Some("bob")));
    bob.send(&publish(5, "alice-only/x", 1, false, 7, b"no"));
    assert_eq!(
        read_ack(&mut bob),
        (4, 7, 0x87),
        "PUBACK 0x87 Not authorized"
    );
    bob.send(&publish(5, "alice-only/x", 2, false, 8, b"no"));
    assert_eq!(
        read_ack(&mut bob),
        (5, 8, 0x87),
        "PUBREC 0x87 Not authorized"
    );
    bob.send(&publish(5, "alice-only/x", 0, true, 0, b"no"));
    // Then an allowed one: the first thing the watcher sees.
    bob.send(&publish(5, "public/x", 1, false, 9, b"yes"));
    assert_eq!(read_ack(&mut bob), (4, 9, 0));
    let got = expect_publish(&mut w);
    assert_eq!(
        (got.topic.as_str(), got.payload.as_slice()),
        ("public/x", &b"yes"[..])
    );
    expect_silence(&mut w, QUIET);
    // The refused RETAIN publish stored nothing.
    let mut late = client(&b, v4("late", Some("watch")));
    assert_eq!(subscribe(&mut late, 4, 1, &["alice-only/#"]), vec![1]);
    expect_silence(&mut late, QUIET);
}

#[test]
fn v311_publish_without_write_permission_is_acknowledged_and_dropped() {
    // [MQTT-3.3.5-2]: a positive acknowledgement, the message is not delivered.
    let (b, _f) = acl_broker(ACL, &[]);
    let mut w = watcher(&b);
    let mut bob = client(&b, v4("bob-c", Some("bob")));
    bob.send(&publish(4, "alice-only/x", 1, false, 3, b"no"));
    assert_eq!(read_ack(&mut bob), (4, 3, 0), "PUBACK");
    bob.send(&publish(4, "alice-only/x", 2, false, 4, b"no"));
    assert_eq!(read_ack(&mut bob), (5, 4, 0), "PUBREC");
    bob.send(&packet(0x62, &4u16.to_be_bytes()));
    assert_eq!(read_ack(&mut bob), (7, 4, 0), "PUBCOMP");
    expect_silence(&mut w, QUIET);
    // The connection carries on.
    bob.send(&publish(4, "public/ok", 1, false, 5, b"ok"));
    assert_eq!(read_ack(&mut bob), (4, 5, 0));
    assert_eq!(expect_publish(&mut w).topic, "public/ok");
}

#[test]
fn subscribe_refusals_are_per_filter() {
    // 5.0: 0x87 for the refused filter; 3.1.1: 0x80 Failure [MQTT-3.9.3-1]; the others
    // are granted as usual.
    let (b, _f) = acl_broker(ACL, &[]);
    let filters = [
        "secret/#",
        "public/#",
        "$SYS/#",
        "$share/g/secret/x",
        "$share/g/#",
    ];
    let mut c5 = client(&b, v5("s5", Some("bob")));
    assert_eq!(
        subscribe(&mut c5, 5, 1, &filters),
        vec![0x87, 1, 0x87, 0x87, 1]
    );
    let mut c4 = client(&b, v4("s4", Some("bob")));
    assert_eq!(
        subscribe(&mut c4, 4, 1, &filters),
        vec![0x80, 1, 0x80, 0x80, 1]
    );
}

#[test]
fn sys_topics_only_where_a_rule_names_them() {
    // [MQTT-4.7.2-1]: `allow read #` does not reach `$SYS`. (No `$SYS` values of the
    // broker's own here: only the test's message.) With an ACL, a rule naming `$SYS` may
    // let a client publish there.
    let (b, _f) = acl_broker(ACL, &["--sys-interval", "0"]);
    let mut bob = client(&b, v5("bob-c", Some("bob")));
    assert_eq!(subscribe(&mut bob, 5, 1, &["$SYS/#", "#"]), vec![0x87, 1]);
    let mut admin = client(&b, v5("admin", None));
    assert_eq!(subscribe(&mut admin, 5, 1, &["$SYS/#"]), vec![1]);
    admin.send(&publish(5, "$SYS/test", 1, false, 2, b"s"));
    assert_eq!(read_ack(&mut admin), (4, 2, 0));
    assert_eq!(expect_publish(&mut admin).topic, "$SYS/test");
    expect_silence(&mut bob, QUIET);
}

#[test]
fn users_clients_anonymous_and_substitution() {
    let (b, _f) = acl_broker(ACL, &[]);
    // (identity, topic, refused?)
    let cases: [(Hello<'_>, &str, bool); 10] = [
        (v5("a1", Some("alice")), "alice-only/x", false),
        (v5("a1", Some("alice")), "public/blocked", true), // user section first
        (v5("a1", Some("alice")), "public/other", false),  // then all
        (v5("b1", Some("bob")), "alice-only/x", true),
        (v5("b1", Some("bob")), "users/bob/x", false), // %u
        (v5("b1", Some("bob")), "users/alice/x", true),
        (v5("dev1", Some("bob")), "devices/dev1/t", false), // %c
        (v5("dev1", Some("bob")), "devices/dev2/t", true),
        (v5("anon1", None), "anon/x", false), // anonymous section
        (v5("anon1", None), "users//x", true), // %u never matches anonymous
    ];
    for (i, (hello, topic, refused)) in cases.iter().enumerate() {
        let mut c = client(&b, *hello);
        let pkid = i as u16 + 1;
        c.send(&publish(5, topic, 1, false, pkid, b"p"));
        let (kind, id, reason) = read_ack(&mut c);
        assert_eq!((kind, id), (4, pkid));
        // Accepted: 0x00 or 0x10 (no matching subscribers); refused: 0x87.
        let want = if *refused { 0x87 } else { 0x10 };
        assert_eq!(reason, want, "{:?} -> {topic}", hello.user);
    }
    // Read: bob cannot subscribe to alice's tree but reads his own.
    let mut bob = client(&b, v5("b2", Some("bob")));
    assert_eq!(subscribe(&mut bob, 5, 1, &["users/bob/#"]), vec![1]);
    let mut anon = client(&b, v5("anon2", None));
    assert_eq!(
        subscribe(&mut anon, 5, 1, &["users/+/#", "anon/#"]),
        vec![1, 1]
    );
}

#[test]
fn a_subscriber_to_everything_does_not_receive_unreadable_topics() {
    // The `#` subscription overlaps `deny read secret/#` and is granted; each delivery is
    // checked, including retained messages sent on subscribe.
    let (b, _f) = acl_broker(ACL, &[]);
    let mut w = watcher(&b);
    let mut writer = client(&b, v4("writer-c", Some("writer")));
    for (i, topic) in ["secret/a", "alice-only/a", "secret/b"].iter().enumerate() {
        writer.send(&publish(4, topic, 1, true, i as u16 + 1, topic.as_bytes()));
        assert_eq!(read_ack(&mut writer), (4, i as u16 + 1, 0));
    }
    let got = expect_publish(&mut w);
    assert_eq!(got.topic, "alice-only/a");
    expect_silence(&mut w, QUIET);
    // Retained on subscribe: only the readable one [MQTT-3.3.1-6].
    let mut late = client(&b, v4("late", Some("watch")));
    assert_eq!(subscribe(&mut late, 4, 1, &["#"]), vec![1]);
    let got = expect_publish(&mut late);
    assert_eq!(got.topic, "alice-only/a");
    expect_silence(&mut late, QUIET);
}

#[test]
fn offline_sessions_are_filtered_too() {
    let (b, _f) = acl_broker(ACL, &[]);
    let mut sub = client(
        &b,
        Hello {
            clean: false,
            ..v4("persist", Some("watch"))
        },
    );
    assert_eq!(subscribe(&mut sub, 4, 1, &["#"]), vec![1]);
    sub.send(&[0xE0, 0x00]);
    drop(sub);
    std::thread::sleep(Duration::from_millis(100));
    let mut writer = client(&b, v4("writer-c", Some("writer")));
    writer.send(&publish(4, "secret/x", 1, false, 1, b"s"));
    assert_eq!(read_ack(&mut writer), (4, 1, 0));
    writer.send(&publish(4, "alice-only/x", 1, false, 2, b"a"));
    assert_eq!(read_ack(&mut writer), (4, 2, 0));
    let mut sub = client(
        &b,
        Hello {
            clean: false,
            ..v4("persist", Some("watch"))
        },
    );
    assert_eq!(expect_publish(&mut sub).topic, "alice-only/x");
    expect_silence(&mut sub, QUIET);
}

#[test]
fn a_will_is_authorized_with_its_clients_identity() {
    // The will is published when the connection ends without DISCONNECT [MQTT-3.1.2-8],
    // if the client may write its topic.
    let (b, _f) = acl_broker(ACL, &[]);
    let mut w = watcher(&b);
    let denied = client(
        &b,
        Hello {
            will: Some(("alice-only/will", b"bob", 1)),
            ..v5("bob-w", Some("bob"))
        },
    );
    drop(denied);
    let allowed = client(
        &b,
        Hello {
            will: Some(("alice-only/will", b"alice", 1)),
            ..v4("alice-w", Some("alice"))
        },
    );
    drop(allowed);
    let got = expect_publish(&mut w);
    assert_eq!(
        (got.topic.as_str(), got.payload.as_slice()),
        ("alice-only/will", &b"alice"[..])
    );
    expect_silence(&mut w, QUIET);
}

#[test]
fn default_allow_lets_through_what_no_rule_denies() {
    let (b, _f) = acl_broker(
        "default allow\nall\ndeny write locked/#\ndeny read hidden/#\n",
        &[],
    );
    let mut c = client(&b, v5("c", None));
    assert_eq!(subscribe(&mut c, 5, 1, &["#", "hidden/x"]), vec![1, 0x87]);
    c.send(&publish(5, "locked/x", 1, false, 1, b"l"));
    assert_eq!(read_ack(&mut c), (4, 1, 0x87));
    c.send(&publish(5, "hidden/x", 1, false, 2, b"h"));
    assert_eq!(read_ack(&mut c), (4, 2, 0));
    c.send(&publish(5, "anything", 1, false, 3, b"a"));
    assert_eq!(read_ack(&mut c), (4, 3, 0));
    assert_eq!(expect_publish(&mut c).topic, "anything");
    expect_silence(&mut c, QUIET);
}

#[test]
fn a_bad_acl_file_stops_the_start() {
    let dir = std::env::temp_dir().join(format!("ringmq-acl-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("acl.conf");
    std::fs::write(&file, "all\nallow sometimes x\n").unwrap();
    let (code, err) =
        common::ops::start_fails(&["--shards", "1", "--acl-file", file.to_str().unwrap()]);
    assert_ne!(code, Some(0));
    assert!(err.contains("line 2"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "current_thread")]
async fn rumqttc_clients_with_credentials() {
    // rumqttc 3.1.1: the refused QoS 1 publish completes (PUBACK) and is not delivered.
    let (b, _f) = acl_broker(ACL, &[]);
    let mut o = common::opts(&b, "r-sub");
    o.set_credentials("watch", "x");
    let (mut sub, _) = common::MqttClient::connect(o).await;
    let codes = sub.subscribe("#", rumqttc::QoS::AtLeastOnce).await;
    assert_eq!(
        codes,
        vec![rumqttc::SubscribeReasonCode::Success(
            rumqttc::QoS::AtLeastOnce
        )]
    );
    let codes = sub.subscribe("secret/#", rumqttc::QoS::AtLeastOnce).await;
    assert_eq!(codes, vec![rumqttc::SubscribeReasonCode::Failure]);
    let mut o = common::opts(&b, "r-bob");
    o.set_credentials("bob", "x");
    let (mut bob, _) = common::MqttClient::connect(o).await;
    bob.publish("alice-only/x", rumqttc::QoS::AtLeastOnce, false, b"no")
        .await;
    bob.publish("users/bob/x", rumqttc::QoS::AtLeastOnce, false, b"yes")
        .await;
    let p = sub.expect_publish().await;
    assert_eq!(&p.topic, "users/bob/x");
    sub.expect_no_publish(QUIET).await;

    // rumqttc 5.0: SUBACK Not authorized (rumqttc reports a refused SUBACK as an error of
    // its event loop).
    let mut o = rumqttc::v5::MqttOptions::new("r5", "127.0.0.1", b.port());
    o.set_credentials("bob", "x");
    let (c5, mut el) = rumqttc::v5::AsyncClient::new(o, 10);
    c5.subscribe("secret/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match el.poll().await {
                Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::SubAck(s))) => {
                    return format!("{:?}", s.return_codes)
                }
                Ok(_) => {}
                Err(e) => return e.to_string(),
            }
        }
    })
    .await
    .expect("SUBACK within 5 s");
    assert!(outcome.contains("NotAuthorized"), "{outcome}");
}

#[test]
fn a_session_resumed_by_another_user_reads_with_the_new_identity() {
    // The subscription `users/alice/#` was fully readable for alice; once bob resumes the
    // session (same client id), deliveries are judged for bob.
    let (b, _f) = acl_broker("all\nallow readwrite users/%u/#\n", &[]);
    let as_user = |user| Hello {
        clean: false,
        ..v4("shared-id", Some(user))
    };
    let mut s = client(&b, as_user("alice"));
    assert_eq!(subscribe(&mut s, 4, 1, &["users/alice/#"]), vec![1]);
    let mut alice = client(&b, v4("alice-pub", Some("alice")));
    alice.send(&publish(4, "users/alice/a", 1, false, 1, b"1"));
    assert_eq!(read_ack(&mut alice), (4, 1, 0));
    let got = expect_publish(&mut s);
    assert_eq!(got.topic, "users/alice/a");
    s.send(&packet(0x40, &got.pkid.unwrap().to_be_bytes()));
    s.send(&[0xE0, 0x00]);
    drop(s);
    std::thread::sleep(Duration::from_millis(100));
    let mut s = client(&b, as_user("bob"));
    alice.send(&publish(4, "users/alice/b", 1, false, 2, b"2"));
    assert_eq!(read_ack(&mut alice), (4, 2, 0));
    expect_silence(&mut s, QUIET);
}

//! CONNECT user name/password authentication (3.1.1 §3.1.3.4-5 / §3.2.2.3, 5.0 §3.1.3.5-6 /
//! §3.2.2.2) against a password file of argon2id hashes (`--password-file`), anonymous
//! clients (`--allow-anonymous`), the `ringmq passwd` subcommand and failure throttling.
//! Real clients: raw TCP for exact codes, rumqttc v4 and v5, mosquitto_pub.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::auth::scram_connect;
use common::passwd::*;
use common::*;
use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as V5Code;
use rumqttc::ConnectReturnCode as V4Code;

/// 3.1.1 return codes (§3.2.2.3) and 5.0 reason codes (§3.2.2.2).
const BAD_CREDENTIALS_V311: u8 = 0x04;
const NOT_AUTHORIZED_V311: u8 = 0x05;
const BAD_CREDENTIALS_V5: u8 = 0x86;
const NOT_AUTHORIZED_V5: u8 = 0x87;

fn broker_with_users(extra: &[&str]) -> Broker {
    let file = password_file(&[("alice", "wonderland"), ("bob", "builder")]);
    let mut args = vec!["--password-file", file.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    Broker::start_with(&args)
}

#[test]
fn v311_good_credentials_connect_and_bad_ones_get_0x04_then_close() {
    let b = broker_with_users(&[]);
    // [MQTT-3.1.3-11] the user name, [MQTT-3.1.2-19]/[MQTT-3.1.2-21] flags set: accepted.
    expect_accepted(
        b.addr,
        &connect_v311_login("c1", Some("alice"), Some("wonderland")),
    );
    expect_accepted(
        b.addr,
        &connect_v311_login("c2", Some("bob"), Some("builder")),
    );
    // §3.2.2.3 0x04 "bad user name or password", then close [MQTT-3.2.2-5].
    let wrong = connect_v311_login("c3", Some("alice"), Some("builder"));
    expect_refused(b.addr, &wrong, BAD_CREDENTIALS_V311);
    // An unknown user gets the same answer as a wrong password.
    let unknown = connect_v311_login("c4", Some("mallory"), Some("wonderland"));
    expect_refused(b.addr, &unknown, BAD_CREDENTIALS_V311);
    // A user name without a password is a wrong password.
    expect_refused(
        b.addr,
        &connect_v311_login("c5", Some("alice"), None),
        BAD_CREDENTIALS_V311,
    );
    // With a password file, anonymous clients are refused by default: 0x05 "not authorized".
    expect_refused(
        b.addr,
        &connect_v311_login("c6", None, None),
        NOT_AUTHORIZED_V311,
    );
}

#[test]
fn v311_password_without_user_name_is_a_protocol_error() {
    // [MQTT-3.1.2-22] the password flag needs the user name flag: the decoder refuses the
    // CONNECT and the connection is closed without being accepted.
    let b = broker_with_users(&["--allow-anonymous", "true"]);
    let mut raw = Raw::connect(b.addr);
    raw.send(&connect_v311_login("c1", None, Some("wonderland")));
    match next_within(&mut raw, Duration::from_secs(3)) {
        Next::Closed => {}
        Next::Packet(p) => {
            assert_eq!(p[0], 0x20, "only a CONNACK may come: {p:02x?}");
            assert_ne!(p[3], 0, "not accepted: {p:02x?}");
            wait_closed(&mut raw, Duration::from_secs(3));
        }
        Next::Silent => panic!("the broker neither answered nor closed"),
    }
}

#[test]
fn v5_refusals_are_0x86_and_0x87_then_close() {
    let b = broker_with_users(&[]);
    expect_accepted(
        b.addr,
        &connect_v5_login("c1", Some("alice"), Some("wonderland")),
    );
    // 5.0 §3.2.2.2 0x86 "bad user name or password", [MQTT-3.2.2-7] then close.
    let wrong = connect_v5_login("c2", Some("alice"), Some("nope"));
    expect_refused(b.addr, &wrong, BAD_CREDENTIALS_V5);
    let unknown = connect_v5_login("c3", Some("nobody"), Some("nope"));
    expect_refused(b.addr, &unknown, BAD_CREDENTIALS_V5);
    // 0x87 "not authorized" for an anonymous client; a 5.0 password without a user name
    // [MQTT-3.1.2-18 allows it] still names nobody.
    expect_refused(
        b.addr,
        &connect_v5_login("c4", None, None),
        NOT_AUTHORIZED_V5,
    );
    expect_refused(
        b.addr,
        &connect_v5_login("c5", None, Some("x")),
        NOT_AUTHORIZED_V5,
    );
}

#[tokio::test(flavor = "current_thread")]
async fn rumqttc_v4_and_v5_clients() {
    let b = broker_with_users(&[]);
    let port = b.port();
    let alice = Some(("alice", "wonderland"));
    assert_eq!(rumqttc_v4(port, "v4-good", alice).await, Ok(()));
    assert_eq!(rumqttc_v5(port, "v5-good", alice).await, Ok(()));
    let wrong = Some(("alice", "wrong"));
    let unknown = Some(("eve", "wonderland"));
    assert_eq!(
        rumqttc_v4(port, "v4-wrong", wrong).await,
        Err(V4Code::BadUserNamePassword)
    );
    assert_eq!(
        rumqttc_v4(port, "v4-unknown", unknown).await,
        Err(V4Code::BadUserNamePassword)
    );
    assert_eq!(
        rumqttc_v4(port, "v4-anon", None).await,
        Err(V4Code::NotAuthorized)
    );
    assert_eq!(
        rumqttc_v5(port, "v5-wrong", wrong).await,
        Err(V5Code::BadUserNamePassword)
    );
    assert_eq!(
        rumqttc_v5(port, "v5-unknown", unknown).await,
        Err(V5Code::BadUserNamePassword)
    );
    assert_eq!(
        rumqttc_v5(port, "v5-anon", None).await,
        Err(V5Code::NotAuthorized)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn anonymous_allowed_by_default_without_a_password_file() {
    let b = Broker::start();
    assert_eq!(rumqttc_v4(b.port(), "anon4", None).await, Ok(()));
    assert_eq!(rumqttc_v5(b.port(), "anon5", None).await, Ok(()));
    // Nobody checks a user name here: like mosquitto, an open broker lets it in unverified.
    let with_name = Some(("anyone", "anything"));
    assert_eq!(rumqttc_v4(b.port(), "named4", with_name).await, Ok(()));
    expect_accepted(b.addr, &connect_v5_login("named5", Some("x"), Some("y")));
}

#[test]
fn anonymous_refused_without_a_file_when_asked() {
    let b = Broker::start_with(&["--allow-anonymous", "false"]);
    expect_refused(
        b.addr,
        &connect_v311_login("a", None, None),
        NOT_AUTHORIZED_V311,
    );
    // A closed broker without a password file cannot verify a user name: refused too.
    let named = connect_v5_login("b", Some("alice"), Some("wonderland"));
    expect_refused(b.addr, &named, NOT_AUTHORIZED_V5);
}

#[test]
fn allow_anonymous_with_a_password_file_still_checks_user_names() {
    let b = broker_with_users(&["--allow-anonymous", "true"]);
    expect_accepted(b.addr, &connect_v311_login("anon", None, None));
    expect_accepted(
        b.addr,
        &connect_v311_login("ok", Some("bob"), Some("builder")),
    );
    let wrong = connect_v311_login("bad", Some("bob"), Some("wonderland"));
    expect_refused(b.addr, &wrong, BAD_CREDENTIALS_V311);
}

#[test]
fn scram_client_skips_the_password_check() {
    // §4.12: a client that authenticated with SCRAM-SHA-256 is not asked for a password,
    // even with anonymous clients refused.
    let scram = common::auth::scram_file(&[("carol", "secret")]);
    let b = broker_with_users(&["--auth-scram-file", scram.to_str().expect("utf-8")]);
    let (_raw, _client, ack) = scram_connect(b.addr, "s1", "carol", "secret");
    assert_eq!((ack.kind, ack.reason), (2, 0x00), "{ack:?}");
}

#[test]
fn reconnects_of_a_known_device_stay_accepted_and_fast() {
    // The cache of successful checks: after the first login, reconnects with the same
    // password do not each need an argon2 run; a wrong password is still refused.
    let mut b = broker_with_users(&[]);
    let good = connect_v311_login("dev", Some("alice"), Some("wonderland"));
    let (_first, _) = expect_accepted(b.addr, &good);
    for _ in 0..20 {
        expect_accepted(b.addr, &good);
    }
    let wrong = connect_v311_login("dev", Some("alice"), Some("wonderlanD"));
    expect_refused(b.addr, &wrong, BAD_CREDENTIALS_V311);
    expect_accepted(b.addr, &good);
    // 22 logins accepted, all but the first from the cache.
    assert_eq!(final_counter(&mut b, "auth_cache_hits"), 21);
}

/// True if the mosquitto clients can run here; prints a notice otherwise.
fn have_mosquitto_pub() -> bool {
    let ok = Command::new("mosquitto_pub")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "mosquitto_pub not found but CI is set (install mosquitto-clients)"
        );
        eprintln!("\n!!!!!!!! SKIPPED: mosquitto_pub not installed (apt-get install mosquitto-clients) !!!!!!!!\n");
    }
    ok
}

/// `mosquitto_pub` with `args` (bounded to 10 s); its exit code.
fn mosquitto_pub(b: &Broker, args: &[&str]) -> Option<i32> {
    let port = b.port().to_string();
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-t", "t/auth", "-m", "hi"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mosquitto_pub");
    wait_bounded(&mut child, Duration::from_secs(10), "mosquitto_pub").code()
}

#[test]
fn mosquitto_pub_with_user_and_password() {
    if !have_mosquitto_pub() {
        return;
    }
    let b = broker_with_users(&[]);
    for version in ["mqttv311", "mqttv5"] {
        let v = ["-V", version];
        let good = mosquitto_pub(&b, &[&v[..], &["-u", "alice", "-P", "wonderland"]].concat());
        assert_eq!(good, Some(0), "{version}: good credentials");
        let bad = mosquitto_pub(&b, &[&v[..], &["-u", "alice", "-P", "x"]].concat());
        assert_ne!(bad, Some(0), "{version}: wrong password refused");
        let anon = mosquitto_pub(&b, &v);
        assert_ne!(anon, Some(0), "{version}: anonymous refused");
    }
}

#[test]
fn passwd_add_update_delete_round_trip() {
    let dir = temp_dir("passwd-rt");
    let file = dir.join("users");
    let scram = dir.join("scram");
    let f = file.to_str().expect("utf-8");
    let s = scram.to_str().expect("utf-8");
    // Add: the file is created with mode 0600.
    let (ok, err) = passwd(&[f, "alice", "--scram", s], "first\n");
    assert!(ok, "{err}");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&scram), 0o600);
    // Other lines (comments, other users) are kept as they were.
    let mut text = std::fs::read_to_string(&file).expect("read");
    text.insert_str(0, "# devices of the lab\n");
    std::fs::write(&file, &text).expect("write");
    let (ok, err) = passwd(&[f, "bob"], "builder\r\n");
    assert!(ok, "{err}");
    // Update alice (both files).
    let (ok, err) = passwd(&[f, "alice", "--scram", s], "second\n");
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&file).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], "# devices of the lab");
    assert!(lines[1].starts_with("alice:$argon2id$v=19$"), "{text}");
    assert!(lines[2].starts_with("bob:$argon2id$v=19$"), "{text}");
    // Refusals: an empty password, a user name with ':', deleting a missing user.
    assert!(!passwd(&[f, "carol"], "\n").0);
    assert!(!passwd(&[f, "a:b"], "x\n").0);
    assert!(!passwd(&["-D", f, "carol"], "").0);

    // The broker takes the new password, not the old one, and bob's CRLF-ended one.
    {
        let b = Broker::start_with(&["--password-file", f, "--auth-scram-file", s]);
        expect_accepted(
            b.addr,
            &connect_v311_login("a1", Some("alice"), Some("second")),
        );
        let old = connect_v311_login("a2", Some("alice"), Some("first"));
        expect_refused(b.addr, &old, BAD_CREDENTIALS_V311);
        expect_accepted(
            b.addr,
            &connect_v311_login("b1", Some("bob"), Some("builder")),
        );
        // --scram wrote alice's SCRAM line with the same password.
        let (_raw, _c, ack) = scram_connect(b.addr, "a3", "alice", "second");
        assert_eq!((ack.kind, ack.reason), (2, 0x00), "{ack:?}");
    }

    // Delete bob: gone from the file, the rest kept; the broker refuses him.
    let (ok, err) = passwd(&["-D", f, "bob"], "");
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(!text.contains("bob:"), "{text}");
    assert!(text.starts_with("# devices of the lab\nalice:"), "{text}");
    assert_eq!(mode(&file), 0o600, "the rewrite keeps the mode");
    let b = Broker::start_with(&["--password-file", f]);
    let bob = connect_v311_login("b2", Some("bob"), Some("builder"));
    expect_refused(b.addr, &bob, BAD_CREDENTIALS_V311);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_broken_password_file_stops_the_start_with_its_line() {
    let dir = temp_dir("passwd-bad");
    let file = dir.join("users");
    std::fs::write(&file, "# ok\nalice:not-a-hash\n").expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--password-file", file.to_str().expect("utf-8")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ringmq");
    wait_bounded(
        &mut child,
        Duration::from_secs(10),
        "a broker with a broken file",
    );
    let out = child.wait_with_output().expect("output");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn repeated_failures_delay_the_next_connack_and_a_good_login_still_succeeds() {
    // After 2 failures from 127.0.0.1 every further attempt waits 400 ms, doubled per
    // failure (cap 1600 ms). Only lower bounds are asserted (the machine may be slow).
    let mut b = broker_with_users(&[
        "--auth-throttle-after",
        "2",
        "--auth-throttle-base-ms",
        "400",
        "--auth-throttle-max-ms",
        "1600",
    ]);
    let wrong = connect_v311_login("t", Some("alice"), Some("wrong"));
    for _ in 0..2 {
        expect_refused(b.addr, &wrong, BAD_CREDENTIALS_V311);
    }
    // Third failure: delayed by at least the base delay.
    let third = expect_refused(b.addr, &wrong, BAD_CREDENTIALS_V311);
    assert!(
        third >= Duration::from_millis(380),
        "third failure answered after {third:?}"
    );
    // Anonymous attempts from the address are throttled too (and count as failures).
    let anon = expect_refused(
        b.addr,
        &connect_v5_login("t", None, None),
        NOT_AUTHORIZED_V5,
    );
    assert!(
        anon >= Duration::from_millis(780),
        "4th failure answered after {anon:?}"
    );
    // A good login from the same address still gets in, after the (capped) delay.
    let good = connect_v311_login("t", Some("alice"), Some("wonderland"));
    let (mut raw, took) = expect_accepted(b.addr, &good);
    assert!(
        took >= Duration::from_millis(1500),
        "good login answered after {took:?}"
    );
    // While one attempt waits, the shard keeps serving others: a PINGREQ on the accepted
    // connection is answered at once.
    let mut waiting = Raw::connect(b.addr);
    waiting.send(&wrong);
    std::thread::sleep(Duration::from_millis(100));
    let t = std::time::Instant::now();
    raw.send(&[0xC0, 0x00]);
    assert_eq!(expect_packet(&mut raw), vec![0xD0, 0x00], "PINGRESP");
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "shard blocked: {:?}",
        t.elapsed()
    );
    let ack = waiting.read_packet().expect("the delayed CONNACK");
    assert_eq!(ack[3], BAD_CREDENTIALS_V311);
    drop((raw, waiting));
    // Attempts 3, 4, 5 (the good one) and 6 were delayed.
    assert_eq!(final_counter(&mut b, "auth_throttled"), 4);
}

#[test]
fn logins_work_across_a_hand_off_to_the_home_shard() {
    // The check runs on the accepting shard; the accepted user name travels with the CONNECT.
    let b = broker_with_users(&["--shards", "2"]);
    for i in 0..8 {
        let id = format!("handoff-{i}");
        expect_accepted(
            b.addr,
            &connect_v5_login(&id, Some("alice"), Some("wonderland")),
        );
        let wrong = connect_v5_login(&id, Some("alice"), Some("x"));
        expect_refused(b.addr, &wrong, BAD_CREDENTIALS_V5);
    }
}

#[test]
fn checks_beyond_the_verify_queue_are_refused_as_busy() {
    // One check runs per shard and `--auth-verify-queue 1` may wait: of 20 simultaneous
    // logins needing an argon2 run, some are refused at once with 3.1.1 0x03 "server
    // unavailable" (5.0 would get 0x89 "server busy"); none is accepted or left hanging.
    let b = broker_with_users(&["--auth-verify-queue", "1", "--auth-throttle-after", "0"]);
    let mut conns: Vec<Raw> = (0..20)
        .map(|i| {
            let mut raw = Raw::connect(b.addr);
            raw.send(&connect_v311_login(
                &format!("q{i}"),
                Some("bob"),
                Some("wrong"),
            ));
            raw
        })
        .collect();
    let codes: Vec<u8> = conns
        .iter_mut()
        .map(|raw| raw.read_packet().expect("a CONNACK")[3])
        .collect();
    assert!(
        codes
            .iter()
            .all(|c| *c == 0x03 || *c == BAD_CREDENTIALS_V311),
        "{codes:?}"
    );
    assert!(codes.contains(&0x03), "some refused as busy: {codes:?}");
    assert!(
        codes.contains(&BAD_CREDENTIALS_V311),
        "some checked: {codes:?}"
    );
}

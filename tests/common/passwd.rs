//! Helpers for CONNECT user name/password tests: password files written by the real
//! `ringmq passwd`, raw CONNECTs (3.1.1 and 5.0) with a user name and password, the CONNACK
//! they get and when, and rumqttc v4/v5 connection attempts that report the refusal code.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{mqtt_str, packet, Next, Raw};

/// A fresh, empty temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ringmq-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Run `ringmq passwd ARGS` with `stdin` as its standard input (bounded to 20 s); returns
/// whether it succeeded and its stderr.
pub fn passwd(args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .arg("passwd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringmq passwd");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    let status = wait_bounded(&mut child, Duration::from_secs(20), "ringmq passwd");
    let out = child.wait_with_output().expect("passwd output");
    (
        status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Wait for `child` to exit, at most `limit` (then kill it and fail the test).
pub fn wait_bounded(
    child: &mut std::process::Child,
    limit: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A password file for `users` (user, password), written by `ringmq passwd`.
pub fn password_file(users: &[(&str, &str)]) -> PathBuf {
    let file = temp_dir("passwd").join("passwd");
    for (u, p) in users {
        let (ok, err) = passwd(&[file.to_str().expect("utf-8 path"), u], &format!("{p}\n"));
        assert!(ok, "ringmq passwd failed: {err}");
    }
    file
}

/// A 3.1.1 CONNECT (clean session, keep-alive 60) with an optional user name and password.
pub fn connect_v311_login(client_id: &str, user: Option<&str>, password: Option<&str>) -> Vec<u8> {
    login_packet(4, client_id, user, password)
}

/// A 5.0 CONNECT (clean start, keep-alive 60, no properties) with an optional user name and
/// password (5.0 allows a password without a user name).
pub fn connect_v5_login(client_id: &str, user: Option<&str>, password: Option<&str>) -> Vec<u8> {
    login_packet(5, client_id, user, password)
}

fn login_packet(level: u8, client_id: &str, user: Option<&str>, pw: Option<&str>) -> Vec<u8> {
    let mut body = mqtt_str("MQTT");
    body.push(level);
    let mut flags = 0x02;
    if user.is_some() {
        flags |= 0x80;
    }
    if pw.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend(60u16.to_be_bytes());
    if level == 5 {
        body.push(0);
    }
    body.extend(mqtt_str(client_id));
    for field in [user, pw].into_iter().flatten() {
        body.extend(mqtt_str(field));
    }
    packet(0x10, &body)
}

/// What a login attempt got.
pub struct Login {
    /// The CONNACK's return/reason code.
    pub code: u8,
    /// From sending CONNECT to the CONNACK.
    pub took: Duration,
    /// The connection, for an accepted login.
    pub raw: Raw,
}

/// Send `connect` on a new connection and read the CONNACK (panics on anything else).
pub fn login(addr: SocketAddr, connect: &[u8]) -> Login {
    let mut raw = Raw::connect(addr);
    let t = Instant::now();
    raw.send(connect);
    let ack = raw.read_packet().expect("a CONNACK, not a close");
    let took = t.elapsed();
    assert_eq!(ack[0], 0x20, "expected CONNACK, got {ack:02x?}");
    Login {
        code: ack[3],
        took,
        raw,
    }
}

/// A refused login: `code`, then the broker closes the connection [MQTT-3.2.2-5].
pub fn expect_refused(addr: SocketAddr, connect: &[u8], code: u8) -> Duration {
    let mut l = login(addr, connect);
    assert_eq!(l.code, code, "CONNACK code");
    assert_eq!(
        super::next_within(&mut l.raw, Duration::from_secs(3)),
        Next::Closed,
        "the broker closes after a refusing CONNACK"
    );
    l.took
}

/// An accepted login; the connection stays open (answers PINGREQ).
pub fn expect_accepted(addr: SocketAddr, connect: &[u8]) -> (Raw, Duration) {
    let mut l = login(addr, connect);
    assert_eq!(l.code, 0, "CONNACK code");
    l.raw.send(&[0xC0, 0x00]);
    assert_eq!(
        super::expect_packet(&mut l.raw),
        vec![0xD0, 0x00],
        "PINGRESP"
    );
    (l.raw, l.took)
}

/// A rumqttc v4 (3.1.1) connection attempt: `Ok` when accepted, `Err(code)` when refused;
/// panics on anything else.
pub async fn rumqttc_v4(
    port: u16,
    id: &str,
    creds: Option<(&str, &str)>,
) -> Result<(), rumqttc::ConnectReturnCode> {
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    if let Some((u, p)) = creds {
        o.set_credentials(u, p);
    }
    let (_client, mut ev) = rumqttc::AsyncClient::new(o, 10);
    let first = tokio::time::timeout(Duration::from_secs(5), ev.poll())
        .await
        .expect("rumqttc v4: an answer within 5 s");
    match first {
        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => Ok(()),
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => Err(code),
        other => panic!("rumqttc v4: unexpected {other:?}"),
    }
}

/// As [`rumqttc_v4`] with the MQTT 5 client.
pub async fn rumqttc_v5(
    port: u16,
    id: &str,
    creds: Option<(&str, &str)>,
) -> Result<(), rumqttc::v5::mqttbytes::v5::ConnectReturnCode> {
    use rumqttc::v5::{ConnectionError, Event, Incoming};
    let mut o = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
    if let Some((u, p)) = creds {
        o.set_credentials(u, p);
    }
    let (_client, mut ev) = rumqttc::v5::AsyncClient::new(o, 10);
    let first = tokio::time::timeout(Duration::from_secs(5), ev.poll())
        .await
        .expect("rumqttc v5: an answer within 5 s");
    match first {
        Ok(Event::Incoming(Incoming::ConnAck(_))) => Ok(()),
        Err(ConnectionError::ConnectionRefused(code)) => Err(code),
        other => panic!("rumqttc v5: unexpected {other:?}"),
    }
}

/// The mode bits of `path`.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

/// Stop the broker and sum a shard counter over its `counters:` lines at shutdown.
pub fn final_counter(b: &mut super::Broker, name: &str) -> u64 {
    assert_eq!(b.terminate(Duration::from_secs(10)), Some(0), "clean exit");
    let needle = format!("{name}=");
    b.log()
        .lines()
        .filter(|l| l.contains("counters:"))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|w| w.strip_prefix(needle.as_str())?.parse::<u64>().ok())
        .sum()
}

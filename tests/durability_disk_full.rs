//! Disk full (issue 5): when the durable log cannot get a new segment, QoS 1/2 publishes are
//! refused — 5.0 with PUBACK reason 0x97 (Quota exceeded, §3.4.2.1), 3.1.1 by closing the
//! connection (it has no negative acknowledgement) — while QoS 0 keeps flowing, the broker
//! stays up (segments are fallocated: writing the mapping never meets ENOSPC, so no SIGBUS),
//! and publishing resumes once space is free again.
//!
//! The data directory is a small tmpfs, mounted for the test (needs root, as in CI; skipped
//! with a message otherwise).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::durable::{free_port, publish_bytes, Client, DataDir, DurableBroker, Login, Msg, Pkt};

/// A tmpfs mounted on a directory for the life of the value.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u32) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Write zeros into `path` until the file system is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

/// Segment files anywhere below `dir`.
fn segments(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                segments(&p)
            } else {
                usize::from(p.extension().is_some_and(|x| x == "seg"))
            }
        })
        .sum()
}

const V5_CLEAN: Login = Login {
    v5: true,
    clean: true,
    expiry: 0,
};

fn qos1(pkid: u16, payload: &[u8]) -> Vec<u8> {
    publish_bytes(
        true,
        &Msg {
            topic: "big/x".into(),
            qos: 1,
            dup: false,
            retain: false,
            pkid,
            payload: payload.to_vec(),
        },
    )
}

/// Publish QoS 1 until a PUBACK carries `want` (the reason codes seen on the way are
/// returned); at most `max` publishes.
fn publish_until(c: &mut Client, payload: &[u8], want: impl Fn(u8) -> bool, max: u16) -> Vec<u8> {
    let mut seen = Vec::new();
    for pkid in 1..=max {
        c.send(&qos1(pkid, payload));
        let got = c.wait_for("PUBACK", |p| matches!(p, Pkt::PubAck { .. }));
        let Pkt::PubAck { pkid: id, reason } = got else {
            unreachable!()
        };
        assert_eq!(id, pkid);
        seen.push(reason);
        if want(reason) {
            return seen;
        }
    }
    panic!("no wanted PUBACK reason after {max} publishes: {seen:?}");
}

#[test]
fn disk_full_refuses_qos1_keeps_qos0_and_recovers() {
    let dir = DataDir::new("diskfull");
    let Some(fs) = Tmpfs::mount(&dir.data(), 24) else {
        eprintln!("SKIPPED disk_full test: cannot mount a tmpfs (not root?)");
        return;
    };
    let port = free_port();
    let b = DurableBroker::start(
        &dir,
        port,
        &[
            "--durability",
            "process",
            "--max-packet-size",
            "1048576",
            "--segment-size",
            "4194304",
        ],
    );
    // The journal makes its first two segments at start; fill the disk after that.
    let deadline = Instant::now() + Duration::from_secs(10);
    while segments(&dir.data()) < 2 {
        assert!(Instant::now() < deadline, "the journal made no segments");
        std::thread::sleep(Duration::from_millis(20));
    }
    let filler = fs.0.join("filler");
    fill(&filler);

    let mut sub = Client::connect(b.addr, "sub0", V5_CLEAN);
    sub.subscribe("small/#", 0);
    let mut p5 = Client::connect(b.addr, "pub5", V5_CLEAN);
    let payload = vec![7u8; 100 * 1024];
    // The segments made at start hold ~80 of these; then no new one can be made.
    let seen = publish_until(&mut p5, &payload, |r| r == 0x97, 400);
    assert!(
        seen[..seen.len() - 1]
            .iter()
            .all(|&r| r == 0x00 || r == 0x10),
        "accepted (0x00, or 0x10 no subscribers) until the disk filled: {seen:?}"
    );
    assert!(
        seen.len() > 10,
        "the free segments were used first: {seen:?}"
    );
    // Refused from now on, not once by accident.
    let again = publish_until(&mut p5, &payload, |_| true, 1);
    assert_eq!(again, vec![0x97]);

    // QoS 0 keeps flowing, on the same connection and to the subscriber.
    p5.publish("small/1", 0, false, b"still here");
    let m = sub.expect_publish();
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("small/1", &b"still here"[..])
    );

    // 3.1.1 has no refusal code: the connection is closed without a PUBACK.
    let mut p3 = Client::connect(b.addr, "pub3", Login::CLEAN311);
    let m = Msg {
        topic: "big/y".into(),
        qos: 1,
        dup: false,
        retain: false,
        pkid: 1,
        payload: b"x".to_vec(),
    };
    p3.send(&publish_bytes(false, &m));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match p3.conn.recv(Duration::from_millis(100)) {
            Err(_) => break,
            Ok(Some(Pkt::PubAck { .. })) => panic!("3.1.1 publish acknowledged on a full disk"),
            Ok(_) => assert!(Instant::now() < deadline, "3.1.1 connection not closed"),
        }
    }

    // Space again: publishing resumes without a restart.
    std::fs::remove_file(&filler).expect("remove filler");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pkid = 1000;
    loop {
        pkid += 1;
        p5.send(&qos1(pkid, b"after"));
        let got = p5.wait_for("PUBACK", |p| matches!(p, Pkt::PubAck { .. }));
        if matches!(got, Pkt::PubAck { reason, .. } if reason < 0x80) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after space came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = b.log();
    assert!(
        log.contains("refusing QoS 1/2 publishes"),
        "the full disk is logged:\n{log}"
    );
    assert!(
        log.contains("space available again"),
        "recovery is logged:\n{log}"
    );
    drop(b);
    drop(fs);
}

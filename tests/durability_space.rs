//! Space reclamation of the durable log (issue 5): under a steady QoS 1 load to persistent
//! subscribers the broker writes far more log than it keeps on disk — snapshots copy the
//! live state forward and older segments are deleted — and what it keeps still recovers.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::durable::{free_port, Client, DataDir, DurableBroker, Login};

/// Bytes of all files below `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The value of `key=` in the broker's `journal counters` lines, summed over shards.
fn counter(log: &str, key: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("journal counters"))
        .filter_map(|l| {
            let at = l.find(&format!(" {key}="))? + key.len() + 2;
            l[at..].split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

#[test]
fn disk_use_stays_bounded_under_steady_load() {
    let dir = DataDir::new("space");
    let port = free_port();
    let seg = 1 << 20;
    let mut b = DurableBroker::start(
        &dir,
        port,
        &[
            "--durability",
            "process",
            "--max-packet-size",
            "65536",
            "--segment-size",
            &seg.to_string(),
            "--compact-bytes",
            &(4 * seg).to_string(),
        ],
    );
    let mut gen = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
        .args(["p2p", "--pubs", "10", "--qos", "1", "--persistent"])
        .args(["--duration", "5", "--json", "--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ringmq-bench");
    let journal = dir.data().join("journal");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut peak = 0;
    let status = loop {
        peak = peak.max(dir_bytes(&journal));
        if let Some(s) = gen.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "ringmq-bench did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    if let Some(mut o) = gen.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    assert!(status.success(), "ringmq-bench failed: {out}");
    let json: serde_json::Value =
        serde_json::from_str(out.lines().last().unwrap_or_default()).expect("bench JSON");
    let delivered = json["delivered"].as_u64().unwrap_or(0);
    assert!(delivered > 1000, "the load ran: {json}");

    assert_eq!(b.terminate(), Some(0));
    let log = b.log();
    let written = counter(&log, "bytes");
    let snapshots = counter(&log, "snapshots");
    let retired = counter(&log, "segments_retired");
    eprintln!(
        "delivered {delivered}, log written {written} B, peak on disk {peak} B, \
         {snapshots} snapshots, {retired} segments deleted"
    );
    assert!(snapshots >= 3 && retired >= 3, "compaction ran:\n{log}");
    // Current + spare segment, up to compact_bytes of appends, the snapshot in progress and
    // segments waiting for the segment thread to delete them.
    assert!(
        peak <= 16 * seg as u64,
        "disk use bounded: peak {peak} B with 1 MiB segments and compact_bytes 4 MiB"
    );
    assert!(
        written > 3 * peak,
        "far more was written ({written} B) than kept (peak {peak} B)"
    );

    // What was kept is a complete log: the subscribers' sessions come back.
    b.restart(&[]);
    let prefix = json["client_prefix"].as_str().map(str::to_string);
    if let Some(prefix) = prefix {
        let c = Client::connect(b.addr, &format!("{prefix}-s0"), Login::V311);
        assert!(c.present, "persistent session recovered after compaction");
    }
    let log = b.log();
    assert!(!log.contains("journal damage"), "{log}");
}

//! Process lifecycle from the broker contract: SIGTERM/SIGINT stop the broker quickly with
//! exit code 0 and close every client connection; a data directory is owned by one broker
//! process at a time.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sigterm_exits_zero_quickly_and_closes_clients() {
    // Contract: SIGTERM → stop accepting, close clients, exit code 0. (MQTT 3.1.1 §4.8
    // lets the server close a network connection; clients must observe the close.)
    let mut broker = Broker::start_with(&["--shards", "2"]);
    let mut raws: Vec<Raw> = (0..4)
        .map(|i| raw_session(broker.addr, &format!("sd-raw-{i}"), i % 2 == 0).0)
        .collect();
    let mut client = TestClient::connect(&broker, "sd-rumqttc", false);
    client.subscribe("sd/t", rumqttc::QoS::AtLeastOnce);

    let start = Instant::now();
    let code = broker.terminate(Duration::from_secs(10));
    let took = start.elapsed();
    assert_eq!(
        code,
        Some(0),
        "exit code after SIGTERM (None = still running/killed)"
    );
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");

    for r in &mut raws {
        wait_closed(r, WAIT);
    }
    client.expect_closed();
}

#[test]
fn sigterm_with_idle_broker_exits_zero() {
    // Contract: exit code 0 on SIGTERM, also without any client.
    let mut broker = Broker::start_with(&["--shards", "3"]);
    assert_eq!(broker.terminate(Duration::from_secs(5)), Some(0));
}

/// Start `ringmq` directly (for signals and exit codes the harness does not expose).
fn spawn_broker(data_dir: &std::path::Path) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["--listen", "127.0.0.1:0", "--shards", "1", "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ringmq");
    let rx = stdout_lines(&mut child, listen_address);
    (child, rx)
}

/// Wait for exit until `limit`; kills the process and returns `None` on timeout.
fn exit_code_within(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigint_exits_zero() {
    // Contract: SIGINT behaves like SIGTERM.
    let dir = std::env::temp_dir().join(format!("ringmq-sigint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (mut child, listening) = spawn_broker(&dir);
    let addr = listening
        .recv_timeout(Duration::from_secs(20))
        .expect("broker did not start");
    let (mut raw, _) = raw_session(addr.parse().unwrap(), "sd-int", true);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let code = exit_code_within(&mut child, Duration::from_secs(5));
    wait_closed(&mut raw, WAIT);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, Some(0), "exit code after SIGINT");
}

#[test]
fn second_broker_on_same_data_dir_refuses_to_start() {
    // Contract: one broker per data directory; a second one must fail (non-zero exit)
    // instead of sharing the files, and the first keeps serving. After the first exits,
    // the directory can be used again.
    let mut first = Broker::start();
    let (mut second, listening) = spawn_broker(&first.data_dir);
    let code = exit_code_within(&mut second, Duration::from_secs(10));
    assert!(
        listening.try_recv().is_err(),
        "the second broker must not start listening"
    );
    match code {
        None => panic!("second broker on the same data dir is still running after 10 s"),
        Some(c) => assert_ne!(c, 0, "second broker must exit non-zero"),
    }

    // The first one is unaffected.
    let mut c = TestClient::connect(&first, "sd-first", true);
    c.subscribe("sd/first", rumqttc::QoS::AtLeastOnce);
    c.publish_confirmed("sd/first", rumqttc::QoS::AtLeastOnce, false, "still here");
    assert_eq!(&c.recv().payload[..], b"still here");
    c.disconnect();

    assert_eq!(first.terminate(Duration::from_secs(5)), Some(0));
    let (mut third, listening) = spawn_broker(&first.data_dir);
    let started = listening.recv_timeout(Duration::from_secs(20));
    unsafe {
        libc::kill(third.id() as i32, libc::SIGTERM);
    }
    let third_code = exit_code_within(&mut third, Duration::from_secs(5));
    assert!(
        started.is_ok(),
        "a broker must start on the data dir once the previous owner exited"
    );
    assert_eq!(third_code, Some(0));
}

//! End-to-end checks of the `ringmq-bench` load generator against the real `ringmq` binary:
//! every scenario, tiny and bounded (a few clients, at most a couple of seconds, a message
//! cap), each against its own fresh broker. Asserts the exit code and the JSON summary's
//! counts (delivery, sessions resumed), never timings.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Broker;
use serde_json::Value;

/// Longest a single bench run may take before the test fails (they take ~1–5 s).
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Runs `ringmq-bench ARGS --port P --broker-pid PID --json` against `broker`; returns the
/// exit code and the parsed JSON summary (the last stdout line).
fn bench(broker: &Broker, args: &[&str]) -> (i32, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
        .args(args)
        .arg("--port")
        .arg(broker.port().to_string())
        .arg("--broker-pid")
        .arg(broker.pid().to_string())
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringmq-bench");
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for ringmq-bench") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringmq-bench {args:?} still running after {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut stdout).expect("read bench stdout");
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr).expect("read bench stderr");
    }
    let line = stdout.lines().last().unwrap_or_default();
    let json: Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("ringmq-bench {args:?}: last line is not JSON ({e}): {stdout:?}; stderr: {stderr}")
    });
    let code = status.code().unwrap_or(-1);
    if code != 0 {
        eprintln!("ringmq-bench {args:?} exited {code}: {json}\nstderr: {stderr}");
    }
    (code, json)
}

/// An unsigned field of the summary (dotted path), failing the test if absent.
fn num(j: &Value, path: &str) -> u64 {
    path.split('.')
        .try_fold(j, |v, k| v.get(k))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no unsigned field {path} in {j}"))
}

/// A message flow delivered everything it published, without loss, duplicates or reordering.
fn assert_clean_delivery(j: &Value) {
    assert_eq!(j["ok"], Value::Bool(true), "{j}");
    assert!(num(j, "published") > 0, "{j}");
    assert!(num(j, "delivered") > 0, "{j}");
    assert_eq!(num(j, "delivered"), num(j, "expected"), "{j}");
    assert_eq!(num(j, "lost"), 0, "{j}");
    assert_eq!(num(j, "duplicated"), 0, "{j}");
    assert_eq!(num(j, "out_of_order"), 0, "{j}");
    assert_eq!(num(j, "phantom"), 0, "{j}");
    assert_eq!(num(j, "errors"), 0, "{j}");
}

#[test]
fn conn_holds_every_client() {
    let b = Broker::start();
    let (code, j) = bench(&b, &["conn", "--conns", "50", "--duration", "1"]);
    assert_eq!(code, 0, "{j}");
    assert_eq!(j["scenario"], "conn");
    assert_eq!(num(&j, "connected"), 50);
    assert_eq!(num(&j, "idle_dropped"), 0);
    assert!(j["broker_rss_kib_connected"].is_u64(), "RSS read: {j}");
}

#[test]
fn p2p_qos1_is_lossless() {
    let b = Broker::start();
    let args = [
        "p2p",
        "--pubs",
        "5",
        "--qos",
        "1",
        "--messages",
        "2000",
        "--duration",
        "2",
    ];
    let (code, j) = bench(&b, &args);
    assert_eq!(code, 0, "{j}");
    assert_clean_delivery(&j);
    assert_eq!(num(&j, "published"), 2000);
}

#[test]
fn fanin_qos1_is_lossless() {
    let b = Broker::start();
    let args = [
        "fanin",
        "--pubs",
        "5",
        "--subs",
        "2",
        "--qos",
        "1",
        "--messages",
        "1000",
        "--duration",
        "2",
    ];
    let (code, j) = bench(&b, &args);
    assert_eq!(code, 0, "{j}");
    assert_clean_delivery(&j);
    assert_eq!(num(&j, "expected"), 2000);
}

#[test]
fn fanout_qos2_is_exactly_once() {
    let b = Broker::start();
    let args = [
        "fanout",
        "--subs",
        "5",
        "--qos",
        "2",
        "--messages",
        "500",
        "--duration",
        "2",
    ];
    let (code, j) = bench(&b, &args);
    assert_eq!(code, 0, "{j}");
    assert_clean_delivery(&j);
    assert_eq!(num(&j, "expected"), 2500);
    assert_eq!(num(&j, "qos1_dups"), 0);
}

#[test]
fn large_payloads_arrive_whole() {
    let b = Broker::start();
    let args = [
        "large",
        "--payload",
        "65536",
        "--subs",
        "3",
        "--qos",
        "1",
        "--inflight",
        "4",
        "--messages",
        "20",
        "--duration",
        "2",
    ];
    let (code, j) = bench(&b, &args);
    assert_eq!(code, 0, "{j}");
    assert_clean_delivery(&j);
    assert_eq!(num(&j, "payload"), 65536);
    assert_eq!(num(&j, "delivered"), 60);
}

#[test]
fn shared_is_judged_or_skipped() {
    let b = Broker::start();
    let args = [
        "shared",
        "--pubs",
        "2",
        "--subs",
        "2",
        "--qos",
        "1",
        "--messages",
        "200",
        "--duration",
        "1",
    ];
    let (code, j) = bench(&b, &args);
    assert_eq!(code, 0, "{j}");
    if j.get("skipped").is_none() {
        assert_clean_delivery(&j);
    }
}

#[test]
fn backlog_is_kept_for_offline_sessions_and_drained() {
    let b = Broker::start();
    let args = ["backlog", "--subs", "5", "--messages", "2000"];
    let (code, j) = bench(&b, &args);
    assert_eq!(code, 0, "{j}");
    assert_eq!(num(&j, "qos"), 1, "backlog defaults to QoS 1");
    assert_clean_delivery(&j);
    assert_eq!(num(&j, "backlog.queued"), 2000);
    assert_eq!(num(&j, "backlog.per_session"), 400);
    assert_eq!(num(&j, "backlog.offline"), 5);
    assert_eq!(num(&j, "backlog.resumed"), 5);
    assert_eq!(num(&j, "backlog.session_missing"), 0);
    assert!(j["backlog"]["drain_msgs_per_s"].is_number(), "{j}");
}

#[test]
fn backlog_beyond_the_queue_limit_is_reported_as_loss() {
    let b = Broker::start_with(&["--max-queued-messages", "100"]);
    let args = [
        "backlog",
        "--subs",
        "2",
        "--messages",
        "400",
        "--drain",
        "2",
    ];
    let (code, j) = bench(&b, &args);
    assert_eq!(code, 1, "loss at QoS 1 fails the run: {j}");
    assert_eq!(j["ok"], Value::Bool(false));
    // 200 queued per session where the broker keeps 100: the rest is reported lost.
    assert_eq!(num(&j, "backlog.per_session"), 200);
    assert!(num(&j, "lost") > 0, "{j}");
    assert!(num(&j, "delivered") < num(&j, "expected"), "{j}");
}

#[test]
fn storm_resumes_every_session() {
    let b = Broker::start();
    let (code, j) = bench(&b, &["storm", "--conns", "50"]);
    assert_eq!(code, 0, "{j}");
    assert_eq!(j["ok"], Value::Bool(true), "{j}");
    assert_eq!(j["storm"]["close"], "abrupt");
    assert_eq!(num(&j, "storm.offline"), 50);
    assert_eq!(num(&j, "storm.reconnected"), 50);
    assert_eq!(num(&j, "storm.session_present"), 50);
    assert_eq!(num(&j, "storm.session_missing"), 0);
    assert_eq!(num(&j, "storm.echoed"), 50);
    assert_eq!(num(&j, "errors"), 0);
}

#[test]
fn storm_after_clean_disconnects_resumes_too() {
    let b = Broker::start();
    let args = [
        "storm",
        "--conns",
        "20",
        "--storm-close",
        "clean",
        "--version",
        "5",
    ];
    let (code, j) = bench(&b, &args);
    assert_eq!(code, 0, "{j}");
    assert_eq!(j["storm"]["close"], "clean");
    assert_eq!(num(&j, "storm.reconnected"), 20);
    assert_eq!(num(&j, "storm.session_present"), 20);
    assert_eq!(num(&j, "storm.echoed"), 20);
}

#[test]
fn slow_subscriber_does_not_cost_the_fast_ones_a_message() {
    let b = Broker::start();
    let args = [
        "slow",
        "--subs",
        "4",
        "--qos",
        "1",
        "--rate",
        "2000",
        "--duration",
        "1",
    ];
    let (code, j) = bench(&b, &args);
    assert_eq!(code, 0, "{j}");
    assert_clean_delivery(&j);
    let published = num(&j, "published");
    assert_eq!(
        num(&j, "expected"),
        published * 3,
        "the slow one is not expected"
    );
    assert_eq!(num(&j, "slow.subs"), 1);
    assert_eq!(num(&j, "slow.fast_subs"), 3);
    let slow = num(&j, "slow.received");
    assert!(slow >= 1 && slow <= published, "{j}");
    assert_eq!(num(&j, "slow.expected"), published);
    assert!(j["broker_hwm_kib"].is_u64(), "RSS read: {j}");
}

#[test]
fn rate_is_an_upper_bound_per_publisher() {
    let b = Broker::start();
    let args = [
        "p2p",
        "--pubs",
        "2",
        "--qos",
        "1",
        "--rate",
        "300",
        "--duration",
        "1",
    ];
    let (code, j) = bench(&b, &args);
    assert_eq!(code, 0, "{j}");
    assert_clean_delivery(&j);
    // One message per 1/300 s at most, from each publisher's own instant on.
    assert!(num(&j, "published") <= 2 * 301, "{j}");
}

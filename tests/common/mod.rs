//! Shared test harness: starts the real `ringmq` binary on a free loopback port and offers
//! raw-TCP helpers for malformed-input tests.
//!
//! Every test gets its own broker process (own data directory, own port), so tests can run
//! in parallel. The broker prints `ringmq listening on ADDR` on stdout once every shard
//! accepts; `Broker::start` waits for that line.
//!
//! ## The broker contract these tests are written against
//! - Binary `ringmq` of this crate. `tests/common/mod.rs` (already committed — read it, extend it only by
//!   adding new helper fns at the end, never changing existing ones; if you and the other test engineer
//!   both need a helper, put it in your own test file instead) starts it with
//!   `--listen 127.0.0.1:0 --data-dir <tmp> --log-level debug --shards 1` plus your extra args and waits for
//!   the stdout line `ringmq listening on ADDR`. `Broker::start_with(&["--shards","2", ...])`.
//! - CLI flags (each also a TOML key in snake_case): `--config FILE`, `--listen ADDR:PORT` (default
//!   0.0.0.0:1883), `--shards N`, `--data-dir DIR`, `--log-level LEVEL`, `--max-packet-size BYTES` (default
//!   16 MiB), `--max-inflight N` (per-session outgoing QoS 1/2 window, default 32), `--max-queued-messages N`
//!   (per session, default 1000), `--max-queued-bytes BYTES` (per session, default 64 MiB),
//!   `--max-connections N`, `--connect-timeout SECS` (close if no CONNECT arrives in time, default 10),
//!   `--max-keep-alive SECS` (default 65535).
//! - SIGTERM/SIGINT: stop accepting, close clients, exit code 0.
//! - Semantics where the spec leaves a choice:
//!   - Any protocol violation / malformed packet → the broker closes the TCP connection (after CONNACK with
//!     return code 0x01 for an unsupported protocol level, 0x02 for a rejected client id). In 3.1.1 an
//!     invalid topic filter in SUBSCRIBE also closes the connection (no SUBACK).
//!   - Overlapping subscriptions of one client: a message is delivered **once**, at the highest QoS granted
//!     among the matching subscriptions (capped by the published QoS).
//!   - Granted QoS = requested QoS (max 2). Delivery QoS = min(publish QoS, granted QoS).
//!   - Per-session queue bound (`--max-queued-messages`/`--max-queued-bytes`), applies to messages waiting
//!     for an offline persistent session or behind a full inflight window: when full, queued QoS 0
//!     messages are dropped first, otherwise the newly arriving message is dropped (counted).
//!   - Persistent session (clean session 0): subscriptions and QoS 1/2 messages are kept while offline
//!     (QoS 0 messages too, within the bounds); on reconnect, unacknowledged outgoing QoS 1/2 PUBLISH are
//!     resent with DUP=1 first (same packet ids), then PUBRELs for QoS 2 flows past PUBREC, then the queue.
//!   - Client id takeover: a new CONNECT with an id already connected closes the old connection (also
//!     across shards). (Don't assert whether the old one's will is published on takeover.)
//!   - Will: published on any close that is not preceded by DISCONNECT (keep-alive timeout, socket
//!     error/EOF, protocol violation), with the will's QoS and retain flag; never after DISCONNECT.
//!   - Keep-alive k>0: the broker closes the connection if nothing arrives for 1.5×k seconds (a 1 s wheel, so
//!     allow up to 1.5k + 2 s); keep-alive 0 = off.
//!   - Retained: stored per topic, replaced by a newer retained publish, deleted by a retained publish with
//!     an empty payload; a new subscription gets matching retained messages with RETAIN=1 and QoS
//!     min(stored, granted); messages forwarded to already-existing subscribers have RETAIN=0
//!     [MQTT-3.3.1-9]. Works across shards (wildcard subscribe gathers from every shard).
//!   - Ordering: messages from one publisher to one topic arrive in order at each subscriber (spec 4.6),
//!     across shards too.
//!   - Zero-length client id with clean session 1 is accepted (broker assigns an id); with clean session 0
//!     → CONNACK 0x02 then close [MQTT-3.1.3-8].
//!   - `$`-topics: `#` and `+/...` filters never match topics starting with `$` [MQTT-4.7.2-1].
//! - rumqttc 0.24 notes: `MqttOptions::set_max_packet_size(in, out)` (default incoming limit is 10 KiB),
//!   `set_clean_session`, `set_last_will`, `AsyncClient::new(opts, cap)` + `eventloop.poll().await` loop;
//!   v5 API is `rumqttc::v5`. Use `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` or
//!   current_thread; bound every wait with `tokio::time::timeout`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A running broker process; killed (SIGTERM, then SIGKILL) on drop.
pub struct Broker {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: std::path::PathBuf,
    stderr_log: std::path::PathBuf,
}

impl Broker {
    /// Start with one shard and default limits.
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// Start with extra CLI arguments (e.g. `&["--shards", "2"]`).
    pub fn start_with(args: &[&str]) -> Broker {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let data_dir = std::env::temp_dir().join(format!(
            "ringmq-test-{}-{}-{}",
            std::process::id(),
            n,
            Instant::now().elapsed().as_nanos()
        ));
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        let stderr_log = data_dir.with_extension("stderr.log");
        let stderr = std::fs::File::create(&stderr_log).expect("stderr log");
        let has_shards = args.contains(&"--shards");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringmq"));
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--log-level")
            .arg("debug");
        if !has_shards {
            cmd.arg("--shards").arg("1");
        }
        // Tests that are not about durability log in `process` mode with the smallest
        // segments the default packet size allows: no zero-filled, flushed 64 MiB segments
        // for each of the hundreds of brokers the suite starts. (The durability tests pick
        // their modes; the default `batch` is covered there.)
        if !args.contains(&"--durability") {
            cmd.args(["--durability", "process"]);
        }
        if !args.contains(&"--segment-size") && !args.contains(&"--max-packet-size") {
            cmd.args(["--segment-size", "33619968"]);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let mut child = cmd.spawn().expect("spawn ringmq");
        let rx = stdout_lines(&mut child, listen_address);
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(&stderr_log).unwrap_or_default();
                panic!("broker did not start within 20 s; stderr:\n{log}");
            }
        };
        Broker {
            child: Some(child),
            addr,
            data_dir,
            stderr_log,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The broker's stderr (its log) so far (see [`settled_log`]).
    pub fn log(&self) -> String {
        settled_log(&self.stderr_log)
    }

    /// The broker's pid (for signals).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Send SIGTERM and wait (up to `timeout`) for exit; returns the exit status code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if std::thread::panicking() {
            eprintln!("---- broker log ----\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let _ = std::fs::remove_file(&self.stderr_log);
    }
}

/// Forward a child's stdout, line by line, to a channel from a reader thread; `keep` maps a
/// line to what is sent (`None`: skip it). The child must have been spawned with a piped
/// stdout.
pub fn stdout_lines(
    child: &mut Child,
    keep: impl Fn(String) -> Option<String> + Send + 'static,
) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(l) = keep(line) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// The address in ringmq's `ringmq listening on ADDR` line.
pub fn listen_address(line: String) -> Option<String> {
    line.strip_prefix("ringmq listening on ")
        .map(|a| a.trim().to_string())
}

/// A raw TCP connection for hand-crafted packets.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Raw { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Read one whole MQTT packet (fixed header + body). `None` if the broker closed the
    /// connection (EOF or reset) before a complete packet arrived.
    pub fn read_packet(&mut self) -> Option<Vec<u8>> {
        let mut first = [0u8; 1];
        self.read_exact_or_eof(&mut first)?;
        let mut packet = vec![first[0]];
        let mut len: usize = 0;
        let mut shift = 0;
        loop {
            let mut b = [0u8; 1];
            self.read_exact_or_eof(&mut b)?;
            packet.push(b[0]);
            len |= ((b[0] & 0x7f) as usize) << shift;
            shift += 7;
            if b[0] & 0x80 == 0 {
                break;
            }
            if shift > 21 {
                panic!("broker sent a malformed remaining length");
            }
        }
        let mut body = vec![0u8; len];
        self.read_exact_or_eof(&mut body)?;
        packet.extend_from_slice(&body);
        Some(packet)
    }

    fn read_exact_or_eof(&mut self, buf: &mut [u8]) -> Option<()> {
        match self.stream.read_exact(buf) {
            Ok(()) => Some(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                None
            }
            Err(e) => panic!("read from broker failed: {e}"),
        }
    }

    /// Assert the broker closes the connection (without sending anything else first)
    /// within the read timeout.
    pub fn expect_closed(&mut self) {
        if let Some(p) = self.read_packet() {
            panic!("expected the broker to close the connection, got packet {p:02x?}");
        }
    }
}

/// Encode an MQTT remaining length.
pub fn remaining_length(mut len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            return out;
        }
    }
}

/// A length-prefixed MQTT string.
pub fn mqtt_str(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

/// Build a packet from a first byte and a body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    p.extend(remaining_length(body.len()));
    p.extend_from_slice(body);
    p
}

/// A v3.1.1 CONNECT with the given client id, clean-session flag and keep-alive.
pub fn connect_v311(client_id: &str, clean: bool, keep_alive: u16) -> Vec<u8> {
    let mut body = mqtt_str("MQTT");
    body.push(4);
    body.push(if clean { 0x02 } else { 0x00 });
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.extend(mqtt_str(client_id));
    packet(0x10, &body)
}

/// Connect raw, send CONNECT v3.1.1 and assert CONNACK accepted; returns the connection and
/// the session-present flag.
pub fn raw_session(addr: SocketAddr, client_id: &str, clean: bool) -> (Raw, bool) {
    let mut raw = Raw::connect(addr);
    raw.send(&connect_v311(client_id, clean, 60));
    let ack = raw.read_packet().expect("CONNACK");
    assert_eq!(ack[0], 0x20, "expected CONNACK, got {ack:02x?}");
    assert_eq!(ack[3], 0x00, "CONNACK refused: {ack:02x?}");
    (raw, ack[2] & 1 == 1)
}

/// rumqttc v3.1.1 options for a test client.
pub fn opts(broker: &Broker, id: &str) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", broker.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

// ---- Helpers added for integration suite A (spec_2 … spec_4_7). ----

/// What the broker did within a bounded wait on a raw connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A whole packet arrived.
    Packet(Vec<u8>),
    /// The broker closed the connection (EOF or reset).
    Closed,
    /// Nothing arrived and the connection is still open.
    Silent,
}

/// Wait up to `within` for the next packet, a close, or neither.
pub fn next_within(raw: &mut Raw, within: Duration) -> Next {
    raw.stream
        .set_read_timeout(Some(within))
        .expect("set timeout");
    let mut b = [0u8; 1];
    let peeked = raw.stream.peek(&mut b);
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set timeout");
    match peeked {
        Ok(0) => Next::Closed,
        Ok(_) => match raw.read_packet() {
            Some(p) => Next::Packet(p),
            None => Next::Closed,
        },
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Next::Silent
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ) =>
        {
            Next::Closed
        }
        Err(e) => panic!("read from broker failed: {e}"),
    }
}

/// Assert nothing arrives for `dur` and the connection stays open.
pub fn expect_silence(raw: &mut Raw, dur: Duration) {
    match next_within(raw, dur) {
        Next::Silent => {}
        other => panic!("expected silence for {dur:?}, got {other:02x?}"),
    }
}

/// Read the next packet, failing the test on close or after 5 s.
pub fn expect_packet(raw: &mut Raw) -> Vec<u8> {
    match next_within(raw, Duration::from_secs(5)) {
        Next::Packet(p) => p,
        other => panic!("expected a packet, got {other:?}"),
    }
}

/// Wait (at most `max`) for the broker to close the connection without sending anything;
/// returns how long that took.
pub fn wait_closed(raw: &mut Raw, max: Duration) -> Duration {
    let start = Instant::now();
    match next_within(raw, max) {
        Next::Closed => start.elapsed(),
        other => panic!(
            "expected the broker to close within {max:?}, got {other:02x?} after {:?}",
            start.elapsed()
        ),
    }
}

/// Send DISCONNECT, half-close, and wait (bounded) for the broker to close its side.
pub fn raw_disconnect(mut raw: Raw) {
    raw.send(&[0xE0, 0x00]);
    let _ = raw.stream.shutdown(std::net::Shutdown::Write);
    wait_closed(&mut raw, Duration::from_secs(5));
}

/// A v3.1.1 PUBLISH. `pkid` is written only for QoS > 0.
pub fn publish_packet(
    topic: &str,
    qos: u8,
    retain: bool,
    dup: bool,
    pkid: u16,
    payload: &[u8],
) -> Vec<u8> {
    let first = 0x30 | (u8::from(dup) << 3) | (qos << 1) | u8::from(retain);
    let mut body = mqtt_str(topic);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(first, &body)
}

/// A SUBSCRIBE with (filter, requested QoS byte) pairs.
pub fn subscribe_packet(pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    for (f, q) in filters {
        body.extend(mqtt_str(f));
        body.push(*q);
    }
    packet(0x82, &body)
}

/// An UNSUBSCRIBE with the given filters.
pub fn unsubscribe_packet(pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    for f in filters {
        body.extend(mqtt_str(f));
    }
    packet(0xA2, &body)
}

/// Subscribe on a raw connection and return the SUBACK's return codes (after checking the
/// packet type and packet id).
pub fn raw_subscribe(raw: &mut Raw, pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    raw.send(&subscribe_packet(pkid, filters));
    let ack = expect_packet(raw);
    assert_eq!(ack[0], 0x90, "expected SUBACK, got {ack:02x?}");
    let hdr = 1 + remaining_length(ack.len() - 2).len();
    assert_eq!(&ack[hdr..hdr + 2], &pkid.to_be_bytes(), "SUBACK packet id");
    ack[hdr + 2..].to_vec()
}

/// A PUBLISH as received on a raw connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPublish {
    pub first: u8,
    pub topic: String,
    pub pkid: Option<u16>,
    pub payload: Vec<u8>,
}

impl RawPublish {
    pub fn qos(&self) -> u8 {
        (self.first >> 1) & 3
    }
    pub fn retain(&self) -> bool {
        self.first & 1 == 1
    }
    pub fn dup(&self) -> bool {
        self.first & 0x08 != 0
    }
}

/// Parse a whole PUBLISH packet (as returned by `Raw::read_packet`).
pub fn parse_publish(p: &[u8]) -> RawPublish {
    assert_eq!(p[0] >> 4, 3, "expected PUBLISH, got {p:02x?}");
    let mut i = 1;
    while p[i] & 0x80 != 0 {
        i += 1;
    }
    i += 1;
    let tlen = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
    let topic = String::from_utf8(p[i + 2..i + 2 + tlen].to_vec()).expect("utf-8 topic");
    i += 2 + tlen;
    let qos = (p[0] >> 1) & 3;
    let pkid = if qos > 0 {
        let id = u16::from_be_bytes([p[i], p[i + 1]]);
        i += 2;
        Some(id)
    } else {
        None
    };
    RawPublish {
        first: p[0],
        topic,
        pkid,
        payload: p[i..].to_vec(),
    }
}

/// Read the next packet and require it to be a PUBLISH.
pub fn expect_publish(raw: &mut Raw) -> RawPublish {
    parse_publish(&expect_packet(raw))
}

/// A rumqttc v3.1.1 client whose event loop runs on its own tokio task. The loop stops at
/// the first connection error (so rumqttc never silently reconnects); events reach the
/// test over a std channel, polled with a bounded wait.
pub struct MqttClient {
    pub client: rumqttc::AsyncClient,
    events: std::sync::mpsc::Receiver<Result<rumqttc::Event, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl MqttClient {
    /// Connect and wait (5 s) for the CONNACK; panics if refused or closed.
    pub async fn connect(opts: rumqttc::MqttOptions) -> (MqttClient, rumqttc::ConnAck) {
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 100);
        let (tx, events) = std::sync::mpsc::channel();
        let task = tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await;
                let stop = ev.is_err();
                if tx.send(ev.map_err(|e| e.to_string())).is_err() || stop {
                    break;
                }
            }
        });
        let mut c = MqttClient {
            client,
            events,
            task,
        };
        match c.next_event(Duration::from_secs(5)).await {
            Some(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack)))) => (c, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// The next event (or the connection error that ended the loop), `None` after `within`.
    pub async fn next_event(&mut self, within: Duration) -> Option<Result<rumqttc::Event, String>> {
        next_from(&self.events, within).await
    }

    /// Wait for an incoming packet satisfying `want`, skipping others; panics on a
    /// connection error or after `within`.
    pub async fn wait_incoming(
        &mut self,
        within: Duration,
        what: &str,
        mut want: impl FnMut(&rumqttc::Packet) -> bool,
    ) -> rumqttc::Packet {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Some(Ok(rumqttc::Event::Incoming(p))) if want(&p) => return p,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("connection failed while waiting for {what}: {e}"),
                None => panic!("no {what} within {within:?}"),
            }
        }
    }

    /// The next incoming PUBLISH within 5 s.
    pub async fn expect_publish(&mut self) -> rumqttc::Publish {
        match self
            .wait_incoming(Duration::from_secs(5), "PUBLISH", |p| {
                matches!(p, rumqttc::Packet::Publish(_))
            })
            .await
        {
            rumqttc::Packet::Publish(p) => p,
            _ => unreachable!(),
        }
    }

    /// Assert that no PUBLISH arrives (and the connection stays up) for `dur`.
    pub async fn expect_no_publish(&mut self, dur: Duration) {
        let deadline = Instant::now() + dur;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                None => return,
                Some(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => {
                    panic!("unexpected PUBLISH {p:?}")
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("connection failed: {e}"),
            }
        }
    }

    /// Subscribe and return the SUBACK return codes.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: rumqttc::QoS,
    ) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        match self
            .wait_incoming(Duration::from_secs(5), "SUBACK", |p| {
                matches!(p, rumqttc::Packet::SubAck(_))
            })
            .await
        {
            rumqttc::Packet::SubAck(s) => s.return_codes,
            _ => unreachable!(),
        }
    }

    /// Publish and wait until the flow completes on the publisher side: written (QoS 0),
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2).
    pub async fn publish(&mut self, topic: &str, qos: rumqttc::QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .expect("publish");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let done = match self.next_event(left).await {
                Some(Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(_)))) => {
                    qos == rumqttc::QoS::AtMostOnce
                }
                Some(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => {
                    qos == rumqttc::QoS::AtLeastOnce
                }
                Some(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubComp(_)))) => {
                    qos == rumqttc::QoS::ExactlyOnce
                }
                Some(Ok(_)) => false,
                Some(Err(e)) => panic!("connection failed while publishing: {e}"),
                None => panic!("publish to {topic} at {qos:?} did not complete within 5 s"),
            };
            if done {
                return;
            }
        }
    }

    /// Wait (at most `within`) for the broker to end the connection.
    pub async fn expect_disconnected(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Some(Err(_)) => return,
                Some(Ok(_)) => {}
                None => panic!("connection still open after {within:?}"),
            }
        }
    }
}

impl Drop for MqttClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------
// Helpers for the session, will, shard, limit, interop and shutdown suites.
// ---------------------------------------------------------------------------------------

/// Upper bound for any single network wait in a test.
pub const WAIT: Duration = Duration::from_secs(5);

/// A rumqttc (v3.1.1) client whose event loop runs on its own thread (own tokio runtime).
/// Its events arrive over a channel so every wait is a bounded `recv_timeout`. PUBLISH
/// packets that arrive while the test waits for something else are kept and handed out by
/// [`TestClient::recv`] in arrival order. The loop stops at the first connection error (no
/// silent reconnects) or when [`TestClient::drop_abruptly`] raises the stop flag, which
/// drops the socket without DISCONNECT.
pub struct TestClient {
    pub client: rumqttc::AsyncClient,
    pub id: String,
    pub session_present: bool,
    events: std::sync::mpsc::Receiver<Result<rumqttc::Event, String>>,
    stash: std::collections::VecDeque<rumqttc::Publish>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl TestClient {
    /// Connect with [`opts`] and the given clean-session flag; panics unless CONNACK accepts.
    pub fn connect(broker: &Broker, id: &str, clean: bool) -> TestClient {
        let mut o = opts(broker, id);
        o.set_clean_session(clean);
        TestClient::connect_opts(o)
    }

    /// Connect with explicit options; panics unless CONNACK accepts.
    pub fn connect_opts(o: rumqttc::MqttOptions) -> TestClient {
        let id = o.client_id();
        TestClient::try_connect_opts(o)
            .unwrap_or_else(|e| panic!("client {id}: connect failed: {e}"))
    }

    /// Connect with explicit options; `Err` with the error text if the connection fails.
    pub fn try_connect_opts(o: rumqttc::MqttOptions) -> Result<TestClient, String> {
        let id = o.client_id();
        let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 1000);
        let (tx, events) = std::sync::mpsc::channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_flag = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("client runtime");
            rt.block_on(async move {
                let stopped = async {
                    while !stop_flag.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                tokio::pin!(stopped);
                loop {
                    tokio::select! {
                        ev = eventloop.poll() => {
                            let end = ev.is_err();
                            if tx.send(ev.map_err(|e| e.to_string())).is_err() || end {
                                return;
                            }
                        }
                        _ = &mut stopped => return,
                    }
                }
            });
        });
        let mut c = TestClient {
            client,
            id,
            session_present: false,
            events,
            stash: Default::default(),
            stop,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            match c.next_event(deadline) {
                None => return Err("no CONNACK within the time limit".into()),
                Some(Err(e)) => return Err(e),
                Some(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack)))) => {
                    if ack.code != rumqttc::ConnectReturnCode::Success {
                        return Err(format!("CONNACK refused: {:?}", ack.code));
                    }
                    c.session_present = ack.session_present;
                    return Ok(c);
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// Next event before `deadline`; `None` on timeout; `Some(Err)` once the connection ended.
    fn next_event(&mut self, deadline: Instant) -> Option<Result<rumqttc::Event, String>> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.events.recv_timeout(left) {
            Ok(ev) => Some(ev),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Some(Err("event loop ended".into()))
            }
        }
    }

    /// Wait (up to [`WAIT`]) for an incoming packet accepted by `want`; PUBLISH packets that
    /// are not wanted are stashed for [`TestClient::recv`].
    pub fn wait_incoming(
        &mut self,
        what: &str,
        want: impl Fn(&rumqttc::Packet) -> bool,
    ) -> rumqttc::Packet {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next_event(deadline) {
                None => panic!("client {}: no {what} within {WAIT:?}", self.id),
                Some(Err(e)) => panic!(
                    "client {}: connection ended waiting for {what}: {e}",
                    self.id
                ),
                Some(Ok(rumqttc::Event::Incoming(p))) => {
                    if want(&p) {
                        return p;
                    }
                    if let rumqttc::Packet::Publish(publish) = p {
                        self.stash.push_back(publish);
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// Subscribe and wait for the SUBACK; returns its return codes.
    pub fn subscribe(
        &mut self,
        filter: &str,
        qos: rumqttc::QoS,
    ) -> Vec<rumqttc::SubscribeReasonCode> {
        futures_lite::future::block_on(self.client.subscribe(filter, qos))
            .expect("queue SUBSCRIBE");
        match self.wait_incoming("SUBACK", |p| matches!(p, rumqttc::Packet::SubAck(_))) {
            rumqttc::Packet::SubAck(ack) => {
                assert_eq!(
                    ack.return_codes,
                    vec![rumqttc::SubscribeReasonCode::Success(qos)],
                    "client {}: SUBACK for {filter}",
                    self.id
                );
                ack.return_codes
            }
            _ => unreachable!(),
        }
    }

    /// Queue a PUBLISH without waiting.
    pub fn publish(
        &self,
        topic: &str,
        qos: rumqttc::QoS,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) {
        futures_lite::future::block_on(self.client.publish(topic, qos, retain, payload))
            .expect("queue PUBLISH");
    }

    /// Publish and wait until the flow completes: written (QoS 0), PUBACK (QoS 1) or
    /// PUBCOMP (QoS 2).
    pub fn publish_confirmed(
        &mut self,
        topic: &str,
        qos: rumqttc::QoS,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) {
        self.publish(topic, qos, retain, payload);
        self.wait_publish_flows(1, qos);
    }

    /// Wait until `n` outgoing publishes of the given QoS have completed their flow.
    pub fn wait_publish_flows(&mut self, n: usize, qos: rumqttc::QoS) {
        let deadline = Instant::now() + WAIT + Duration::from_millis(5 * n as u64);
        let mut done = 0;
        while done < n {
            match self.next_event(deadline) {
                None => panic!(
                    "client {}: only {done} of {n} {qos:?} publishes completed in time",
                    self.id
                ),
                Some(Err(e)) => {
                    panic!("client {}: connection ended while publishing: {e}", self.id)
                }
                Some(Ok(ev)) => {
                    use rumqttc::{Event, Outgoing, Packet, QoS};
                    match (qos, ev) {
                        (QoS::AtMostOnce, Event::Outgoing(Outgoing::Publish(_)))
                        | (QoS::AtLeastOnce, Event::Incoming(Packet::PubAck(_)))
                        | (QoS::ExactlyOnce, Event::Incoming(Packet::PubComp(_))) => done += 1,
                        (_, Event::Incoming(Packet::Publish(p))) => self.stash.push_back(p),
                        _ => {}
                    }
                }
            }
        }
    }

    /// The next PUBLISH within `limit`, or `None`.
    pub fn recv_within(&mut self, limit: Duration) -> Option<rumqttc::Publish> {
        if let Some(p) = self.stash.pop_front() {
            return Some(p);
        }
        let deadline = Instant::now() + limit;
        loop {
            match self.next_event(deadline) {
                None => return None,
                Some(Err(e)) => panic!(
                    "client {}: connection ended waiting for PUBLISH: {e}",
                    self.id
                ),
                Some(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => return Some(p),
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next PUBLISH; panics if none arrives within [`WAIT`].
    pub fn recv(&mut self) -> rumqttc::Publish {
        self.recv_within(WAIT)
            .unwrap_or_else(|| panic!("client {}: no PUBLISH within {WAIT:?}", self.id))
    }

    /// Assert that no PUBLISH arrives within `quiet`.
    pub fn expect_no_publish(&mut self, quiet: Duration) {
        if let Some(p) = self.recv_within(quiet) {
            panic!("client {}: unexpected PUBLISH {p:?}", self.id);
        }
    }

    /// Assert the broker closes this connection within [`WAIT`].
    pub fn expect_closed(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next_event(deadline) {
                None => panic!("client {}: connection still open after {WAIT:?}", self.id),
                Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Send DISCONNECT and wait (bounded) until the connection is gone.
    pub fn disconnect(mut self) {
        futures_lite::future::block_on(self.client.disconnect()).expect("queue DISCONNECT");
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next_event(deadline) {
                None => panic!("client {}: DISCONNECT did not complete in time", self.id),
                Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Close the TCP connection without DISCONNECT and wait (bounded) until it is gone.
    pub fn drop_abruptly(self) {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("client {}: event loop did not stop in time", self.id)
                }
            }
        }
    }
}

/// A v3.1.1 CONNECT carrying a will message.
pub fn connect_v311_will(
    client_id: &str,
    clean: bool,
    keep_alive: u16,
    will_topic: &str,
    will_payload: &[u8],
    will_qos: u8,
    will_retain: bool,
) -> Vec<u8> {
    let mut flags = 0x04 | (will_qos << 3);
    if clean {
        flags |= 0x02;
    }
    if will_retain {
        flags |= 0x20;
    }
    let mut body = mqtt_str("MQTT");
    body.push(4);
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.extend(mqtt_str(client_id));
    body.extend(mqtt_str(will_topic));
    body.extend_from_slice(&(will_payload.len() as u16).to_be_bytes());
    body.extend_from_slice(will_payload);
    packet(0x10, &body)
}

/// PUBACK (0x40), PUBREC (0x50), PUBREL (0x62) or PUBCOMP (0x70) for `pid`.
pub fn ack_v311(first: u8, pid: u16) -> Vec<u8> {
    let p = pid.to_be_bytes();
    vec![first, 0x02, p[0], p[1]]
}

/// Write without panicking; `false` if the connection is already gone.
pub fn try_send(raw: &mut Raw, bytes: &[u8]) -> bool {
    raw.stream.write_all(bytes).is_ok()
}
/// The next item a client's event-loop task sent (or "event loop ended" once it is gone),
/// `None` after `within`. Shared by the v3 and v5 rumqttc test clients.
pub async fn next_from<T>(
    events: &std::sync::mpsc::Receiver<Result<T, String>>,
    within: Duration,
) -> Option<Result<T, String>> {
    let deadline = Instant::now() + within;
    loop {
        match events.try_recv() {
            Ok(ev) => return Some(ev),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                return Some(Err("event loop ended".into()))
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub mod acl;
pub mod auth;
pub mod durable;
pub mod hostile;
pub mod obs;
pub mod ops;
pub mod passwd;
pub mod proxy;
pub mod subs;
pub mod tls;
pub mod v5;
pub mod ws;

/// A broker's log file once it has stopped growing for 50 ms (at most 2 s of waiting): the
/// broker writes its log from a background thread, a moment after the event, so a line about
/// what just happened is there.
pub fn settled_log(path: &std::path::Path) -> String {
    let read = || std::fs::read_to_string(path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last = read();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = read();
        if now.len() == last.len() || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

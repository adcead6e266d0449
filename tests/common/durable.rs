//! Harness for the durability tests (issue 5): a broker process that is started on a given
//! data directory and a fixed port, crashed with SIGKILL or stopped with SIGTERM, and
//! started again with other arguments; plus a small raw MQTT client (3.1.1 and 5.0) that
//! never panics on a dead connection, because the crash tests kill the broker under it.
//!
//! `Broker::start_with` is not reused: it always picks its own `--data-dir` and port, and a
//! restart must find the same journal and let clients reconnect to the same address.
//!
//! The broker contract assumed here (issue 5): `--durability none|process|batch|always`,
//! `--segment-size BYTES`; the journal lives in `DIR/journal/gen-<N>/shard-<K>/*.seg`,
//! fixed-size segments zero-filled after their data; recovery finishes before the
//! `ringmq listening on ADDR` line; damage found by recovery is logged at WARN with the
//! words `journal damage` and the segment path; SIGTERM is a clean shutdown (exit 0).

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{ack_v311, connect_v311, listen_address, mqtt_str, packet, publish_packet};
use super::{stdout_lines, subs::subscribe_v5, subscribe_packet, WAIT};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A scratch folder holding one data directory and the broker's stderr of every run;
/// removed on drop.
pub struct DataDir {
    pub base: PathBuf,
}

impl DataDir {
    pub fn new(tag: &str) -> DataDir {
        let base = std::env::temp_dir().join(format!(
            "ringmq-durable-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("data")).expect("create data dir");
        DataDir { base }
    }

    /// The broker's `--data-dir`.
    pub fn data(&self) -> PathBuf {
        self.base.join("data")
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(data dir kept for inspection: {})", self.base.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// How a broker run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: clean shutdown (the broker writes a checkpoint).
    Term,
    /// SIGKILL: a crash.
    Kill,
}

/// A broker process on a fixed data directory and port that can be crashed and restarted.
/// Killed with SIGKILL on drop; every run's stderr is printed if the test panics.
pub struct DurableBroker {
    child: Option<Child>,
    pub addr: SocketAddr,
    base: PathBuf,
    runs: usize,
}

impl DurableBroker {
    /// Start on `dir` listening on 127.0.0.1:`port` with `--log-level info`, `--shards 1`
    /// unless `args` say otherwise, and `args`.
    pub fn start(dir: &DataDir, port: u16, args: &[&str]) -> DurableBroker {
        let mut b = DurableBroker {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            base: dir.base.clone(),
            runs: 0,
        };
        b.spawn(args);
        b
    }

    fn log_path(&self, run: usize) -> PathBuf {
        self.base.join(format!("run-{run}.stderr.log"))
    }

    fn spawn(&mut self, args: &[&str]) {
        assert!(
            self.child.is_none(),
            "the previous broker run is still alive"
        );
        self.runs += 1;
        let log = self.log_path(self.runs);
        let stderr = std::fs::File::create(&log).expect("stderr log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringmq"));
        cmd.arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.base.join("data"))
            .arg("--log-level")
            .arg("info");
        if !args.contains(&"--shards") {
            cmd.arg("--shards").arg("1");
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let mut child = cmd.spawn().expect("spawn ringmq");
        let rx = stdout_lines(&mut child, listen_address);
        // Recovery happens before the listening line; allow it some time, but notice an
        // early exit (bad flag, refused data dir) at once.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(a) => {
                    let got: SocketAddr = a.parse().expect("listen address");
                    assert_eq!(got.port(), self.addr.port(), "broker listens elsewhere");
                    self.child = Some(child);
                    return;
                }
                Err(_) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "broker run {} did not listen within 30 s; args {args:?}; stderr:\n{}",
                        self.runs,
                        self.log()
                    );
                }
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!(
                            "broker run {} exited before listening ({status}); args {args:?}; \
                             stderr:\n{}",
                            self.runs,
                            self.log()
                        );
                    }
                }
            }
        }
    }

    /// Start again on the same data directory and port (the previous run must be stopped).
    pub fn restart(&mut self, args: &[&str]) {
        self.spawn(args);
    }

    /// Stop the running broker the given way; returns the exit code for [`Stop::Term`].
    pub fn stop(&mut self, how: Stop) -> Option<i32> {
        match how {
            Stop::Kill => {
                self.kill9();
                None
            }
            Stop::Term => self.terminate(),
        }
    }

    /// SIGKILL the broker and reap it (its data dir lock and port are free afterwards).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: a signal to our own child, which has not been reaped yet.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (10 s at most, then SIGKILL); the exit code if it exited by itself.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: a signal to our own child, which has not been reaped yet.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("broker did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The stderr of the current (or last) run.
    pub fn log(&self) -> String {
        super::settled_log(&self.log_path(self.runs))
    }

    /// The stderr of every run so far, each under a heading.
    pub fn all_logs(&self) -> String {
        (1..=self.runs)
            .map(|r| {
                let text = std::fs::read_to_string(self.log_path(r)).unwrap_or_default();
                format!("---- broker run {r} ----\n{text}")
            })
            .collect()
    }
}

impl Drop for DurableBroker {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let logs = self.all_logs();
            // The crash test makes long logs; the end of each run is what explains a failure.
            let tail: String = logs.lines().rev().take(400).collect::<Vec<_>>().join("\n");
            let tail: String = tail.lines().rev().collect::<Vec<_>>().join("\n");
            eprintln!("{tail}");
        }
    }
}

// ---- a raw client that survives the broker's death ----------------------------------------

/// Which protocol a raw client speaks and how it asks for its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Login {
    pub v5: bool,
    /// 3.1.1 Clean Session / 5.0 Clean Start.
    pub clean: bool,
    /// 5.0 Session Expiry Interval (sent when non-zero); ignored for 3.1.1.
    pub expiry: u32,
}

impl Login {
    /// 3.1.1 persistent session (clean session 0).
    pub const V311: Login = Login {
        v5: false,
        clean: false,
        expiry: 0,
    };

    /// 3.1.1 clean session (state lasts as long as the connection).
    pub const CLEAN311: Login = Login {
        v5: false,
        clean: true,
        expiry: 0,
    };

    /// 5.0, clean start 0, the given session expiry.
    pub fn v5(expiry: u32) -> Login {
        Login {
            v5: true,
            clean: false,
            expiry,
        }
    }
}

/// A received PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub topic: String,
    pub qos: u8,
    pub dup: bool,
    pub retain: bool,
    /// 0 for QoS 0.
    pub pkid: u16,
    pub payload: Vec<u8>,
}

/// A packet from the broker, parsed far enough for these tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pkt {
    ConnAck { present: bool, code: u8 },
    Publish(Msg),
    PubAck { pkid: u16, reason: u8 },
    PubRec { pkid: u16, reason: u8 },
    PubRel { pkid: u16 },
    PubComp { pkid: u16 },
    SubAck { pkid: u16, codes: Vec<u8> },
    PingResp,
    Disconnect { reason: u8 },
    Other(Vec<u8>),
}

/// Parse one whole packet; `v5` decides whether properties follow the variable header.
pub fn parse(p: &[u8], v5: bool) -> Pkt {
    let mut i = 1;
    while p[i] & 0x80 != 0 {
        i += 1;
    }
    let b = &p[i + 1..];
    let pkid = || u16::from_be_bytes([b[0], b[1]]);
    let reason = || if b.len() > 2 { b[2] } else { 0 };
    match p[0] >> 4 {
        2 => Pkt::ConnAck {
            present: b[0] & 1 == 1,
            code: b[1],
        },
        3 => {
            let qos = (p[0] >> 1) & 3;
            let tlen = u16::from_be_bytes([b[0], b[1]]) as usize;
            let topic = String::from_utf8_lossy(&b[2..2 + tlen]).into_owned();
            let mut j = 2 + tlen;
            let mut id = 0;
            if qos > 0 {
                id = u16::from_be_bytes([b[j], b[j + 1]]);
                j += 2;
            }
            if v5 {
                let (plen, n) = var_int_at(&b[j..]);
                j += n + plen;
            }
            Pkt::Publish(Msg {
                topic,
                qos,
                dup: p[0] & 0x08 != 0,
                retain: p[0] & 1 == 1,
                pkid: id,
                payload: b[j..].to_vec(),
            })
        }
        4 => Pkt::PubAck {
            pkid: pkid(),
            reason: reason(),
        },
        5 => Pkt::PubRec {
            pkid: pkid(),
            reason: reason(),
        },
        6 => Pkt::PubRel { pkid: pkid() },
        7 => Pkt::PubComp { pkid: pkid() },
        9 => {
            let mut j = 2;
            if v5 {
                let (plen, n) = var_int_at(&b[j..]);
                j += n + plen;
            }
            Pkt::SubAck {
                pkid: pkid(),
                codes: b[j..].to_vec(),
            }
        }
        13 => Pkt::PingResp,
        14 => Pkt::Disconnect {
            reason: b.first().copied().unwrap_or(0),
        },
        _ => Pkt::Other(p.to_vec()),
    }
}

/// A variable byte integer at the start of `b`: (value, bytes used).
fn var_int_at(b: &[u8]) -> (usize, usize) {
    let mut v = 0;
    for (n, byte) in b.iter().enumerate().take(4) {
        v |= ((byte & 0x7f) as usize) << (7 * n);
        if byte & 0x80 == 0 {
            return (v, n + 1);
        }
    }
    panic!("malformed variable byte integer {b:02x?}");
}

/// CONNECT for `login` (keep-alive 60).
pub fn connect_packet(id: &str, login: Login) -> Vec<u8> {
    if !login.v5 {
        return connect_v311(id, login.clean, 60);
    }
    let mut body = mqtt_str("MQTT");
    body.push(5);
    body.push(if login.clean { 0x02 } else { 0 });
    body.extend_from_slice(&60u16.to_be_bytes());
    if login.expiry > 0 {
        body.push(5);
        body.push(0x11); // Session Expiry Interval
        body.extend_from_slice(&login.expiry.to_be_bytes());
    } else {
        body.push(0);
    }
    body.extend(mqtt_str(id));
    packet(0x10, &body)
}

/// PUBLISH in either protocol (5.0: no properties).
pub fn publish_bytes(v5: bool, m: &Msg) -> Vec<u8> {
    if !v5 {
        return publish_packet(&m.topic, m.qos, m.retain, m.dup, m.pkid, &m.payload);
    }
    let first = 0x30 | (u8::from(m.dup) << 3) | (m.qos << 1) | u8::from(m.retain);
    let mut body = mqtt_str(&m.topic);
    if m.qos > 0 {
        body.extend_from_slice(&m.pkid.to_be_bytes());
    }
    body.push(0);
    body.extend_from_slice(&m.payload);
    packet(first, &body)
}

/// A TCP connection to the broker with its own read buffer. Every call returns an error
/// instead of panicking when the broker is gone.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pub v5: bool,
}

impl Conn {
    /// Connect and log in; `(conn, session present, CONNACK code)`.
    pub fn open(addr: SocketAddr, id: &str, login: Login) -> std::io::Result<(Conn, bool, u8)> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        let mut c = Conn {
            stream,
            buf: Vec::new(),
            v5: login.v5,
        };
        c.send(&connect_packet(id, login))?;
        match c.recv(WAIT)? {
            Some(Pkt::ConnAck { present, code }) => Ok((c, present, code)),
            other => Err(std::io::Error::other(format!(
                "expected CONNACK, got {other:?}"
            ))),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next packet within `within`: `Ok(None)` if none came, `Err` once the connection
    /// is closed or broken.
    pub fn recv(&mut self, within: Duration) -> std::io::Result<Option<Pkt>> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(p) = self.take_packet() {
                return Ok(Some(parse(&p, self.v5)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Split one whole packet off the buffer, if there is one.
    fn take_packet(&mut self) -> Option<Vec<u8>> {
        let mut len = 0usize;
        let mut i = 1;
        loop {
            let b = *self.buf.get(i)?;
            len |= ((b & 0x7f) as usize) << (7 * (i - 1));
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            assert!(i <= 4, "broker sent a malformed remaining length");
        }
        if self.buf.len() < i + len {
            return None;
        }
        Some(self.buf.drain(..i + len).collect())
    }
}

/// A raw client for the restart tests: panics (the test fails) on anything unexpected,
/// with every wait bounded by [`WAIT`]. PUBLISH packets that arrive while it waits for
/// something else are kept for [`Client::expect_publish`].
pub struct Client {
    pub conn: Conn,
    pub id: String,
    /// The CONNACK's Session Present flag.
    pub present: bool,
    next_pkid: u16,
    stash: VecDeque<Msg>,
}

impl Client {
    /// Connect; panics unless the CONNACK accepts.
    pub fn connect(addr: SocketAddr, id: &str, login: Login) -> Client {
        let (conn, present, code) = Conn::open(addr, id, login)
            .unwrap_or_else(|e| panic!("client {id}: connect failed: {e}"));
        assert_eq!(code, 0, "client {id}: CONNACK refused");
        Client {
            conn,
            id: id.to_string(),
            present,
            next_pkid: 0,
            stash: VecDeque::new(),
        }
    }

    fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid % 60000 + 1;
        self.next_pkid
    }

    pub fn send(&mut self, bytes: &[u8]) {
        let id = &self.id;
        self.conn
            .send(bytes)
            .unwrap_or_else(|e| panic!("client {id}: write failed: {e}"));
    }

    /// The next packet within `within` (`None` if nothing came); panics on a closed
    /// connection. Stashed PUBLISH packets come first.
    pub fn next(&mut self, within: Duration) -> Option<Pkt> {
        if let Some(m) = self.stash.pop_front() {
            return Some(Pkt::Publish(m));
        }
        let id = &self.id;
        self.conn
            .recv(within)
            .unwrap_or_else(|e| panic!("client {id}: connection ended: {e}"))
    }

    /// Wait for a packet that `want` accepts, stashing PUBLISH packets on the way.
    pub fn wait_for(&mut self, what: &str, want: impl Fn(&Pkt) -> bool) -> Pkt {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let id = &self.id;
            match self.conn.recv(left) {
                Ok(Some(p)) if want(&p) => return p,
                Ok(Some(Pkt::Publish(m))) => self.stash.push_back(m),
                Ok(Some(other)) => panic!("client {id}: waiting for {what}, got {other:?}"),
                Ok(None) => panic!("client {id}: no {what} within {WAIT:?}"),
                Err(e) => panic!("client {id}: connection ended waiting for {what}: {e}"),
            }
        }
    }

    /// Subscribe to one filter and require the requested QoS to be granted.
    pub fn subscribe(&mut self, filter: &str, qos: u8) {
        let pkid = self.pkid();
        let bytes = if self.conn.v5 {
            subscribe_v5(pkid, None, &[(filter, qos)])
        } else {
            subscribe_packet(pkid, &[(filter, qos)])
        };
        self.send(&bytes);
        let got = self.wait_for("SUBACK", |p| matches!(p, Pkt::SubAck { .. }));
        assert_eq!(
            got,
            Pkt::SubAck {
                pkid,
                codes: vec![qos]
            },
            "client {}: SUBACK for {filter}",
            self.id
        );
    }

    /// Publish and wait until the broker has taken the message: PUBACK (QoS 1), PUBREC
    /// then PUBCOMP (QoS 2), or a PINGRESP after it (QoS 0: packets on one connection are
    /// handled in order).
    pub fn publish(&mut self, topic: &str, qos: u8, retain: bool, payload: &[u8]) {
        let pkid = if qos > 0 { self.pkid() } else { 0 };
        let m = Msg {
            topic: topic.into(),
            qos,
            dup: false,
            retain,
            pkid,
            payload: payload.to_vec(),
        };
        self.send(&publish_bytes(self.conn.v5, &m));
        let ok = |r: u8| r < 0x80;
        match qos {
            0 => {
                self.send(&[0xC0, 0x00]);
                self.wait_for("PINGRESP", |p| *p == Pkt::PingResp);
            }
            1 => {
                let got = self.wait_for("PUBACK", |p| matches!(p, Pkt::PubAck { .. }));
                assert!(
                    matches!(got, Pkt::PubAck { pkid: id, reason } if id == pkid && ok(reason)),
                    "client {}: publish to {topic}: {got:?}",
                    self.id
                );
            }
            _ => {
                let got = self.wait_for("PUBREC", |p| matches!(p, Pkt::PubRec { .. }));
                assert!(
                    matches!(got, Pkt::PubRec { pkid: id, reason } if id == pkid && ok(reason)),
                    "client {}: publish to {topic}: {got:?}",
                    self.id
                );
                self.send(&ack_v311(0x62, pkid));
                let got = self.wait_for("PUBCOMP", |p| matches!(p, Pkt::PubComp { .. }));
                assert_eq!(got, Pkt::PubComp { pkid }, "client {}", self.id);
            }
        }
    }

    /// The next PUBLISH within [`WAIT`] (not acknowledged: see [`Client::complete`]).
    pub fn expect_publish(&mut self) -> Msg {
        match self.next(WAIT) {
            Some(Pkt::Publish(m)) => m,
            other => panic!("client {}: expected a PUBLISH, got {other:?}", self.id),
        }
    }

    /// Finish the receiver's side of a delivery: PUBACK, or PUBREC → PUBREL → PUBCOMP.
    pub fn complete(&mut self, m: &Msg) {
        match m.qos {
            0 => {}
            1 => self.send(&ack_v311(0x40, m.pkid)),
            _ => {
                self.send(&ack_v311(0x50, m.pkid));
                let got = self.wait_for("PUBREL", |p| matches!(p, Pkt::PubRel { .. }));
                assert_eq!(got, Pkt::PubRel { pkid: m.pkid }, "client {}", self.id);
                self.send(&ack_v311(0x70, m.pkid));
            }
        }
    }

    /// Receive `n` messages, completing each flow; returns them in arrival order.
    pub fn receive(&mut self, n: usize) -> Vec<Msg> {
        (0..n)
            .map(|_| {
                let m = self.expect_publish();
                self.complete(&m);
                m
            })
            .collect()
    }

    /// Assert no packet arrives for `quiet`.
    pub fn expect_quiet(&mut self, quiet: Duration) {
        if let Some(p) = self.next(quiet) {
            panic!("client {}: expected nothing, got {p:?}", self.id);
        }
    }

    /// DISCONNECT (normal) and wait for the broker to close the connection.
    pub fn disconnect(mut self) {
        self.send(&[0xE0, 0x00]);
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match self.conn.recv(Duration::from_millis(50)) {
                Err(_) => return,
                Ok(Some(p)) => panic!("client {}: got {p:?} after DISCONNECT", self.id),
                Ok(None) => {}
            }
        }
        panic!(
            "client {}: broker kept the connection after DISCONNECT",
            self.id
        );
    }
}

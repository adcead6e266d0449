//! MQTT over WebSocket test helpers: a raw WebSocket client over TCP (hand-made upgrade
//! requests and masked frames) and a runner for the MQTT.js script in tests/js/ws.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ringmq::rt::ws::{client_frame, OP_BINARY};

/// A mask for client frames (any value works; RFC 6455 §5.3).
pub const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

/// An upgrade request for `path` with the `mqtt` subprotocol; `key` = None leaves the
/// Sec-WebSocket-Key header out.
pub fn upgrade_request(path: &str, key: Option<&str>) -> String {
    let key = key.map_or(String::new(), |k| format!("Sec-WebSocket-Key: {k}\r\n"));
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         {key}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
}

/// A raw WebSocket connection.
pub struct WsRaw {
    pub stream: TcpStream,
    /// Bytes read after the HTTP response head, not yet parsed as frames.
    buf: Vec<u8>,
    /// De-framed binary payload not yet taken as MQTT packets.
    data: Vec<u8>,
}

impl WsRaw {
    /// Connect and send `request`; returns the connection and the response head.
    pub fn open(addr: SocketAddr, request: &str) -> (WsRaw, String) {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        let mut ws = WsRaw {
            stream,
            buf: Vec::new(),
            data: Vec::new(),
        };
        ws.stream.write_all(request.as_bytes()).expect("write");
        let head = loop {
            if let Some(end) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&ws.buf[..end + 4]).to_string();
                ws.buf.drain(..end + 4);
                break head;
            }
            if !ws.fill() {
                break String::from_utf8_lossy(&ws.buf).to_string();
            }
        };
        (ws, head)
    }

    /// Upgrade on `path` and assert 101.
    pub fn upgrade(addr: SocketAddr, path: &str) -> WsRaw {
        let (ws, head) = WsRaw::open(
            addr,
            &upgrade_request(path, Some("dGhlIHNhbXBsZSBub25jZQ==")),
        );
        assert!(head.starts_with("HTTP/1.1 101 "), "upgrade refused: {head}");
        assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(head.contains("Sec-WebSocket-Protocol: mqtt\r\n"), "{head}");
        ws
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Send one masked frame.
    pub fn send_frame(&mut self, opcode: u8, fin: bool, payload: &[u8]) {
        self.send_raw(&client_frame(opcode, fin, MASK, payload));
    }

    /// Send MQTT bytes in one binary frame.
    pub fn send_mqtt(&mut self, bytes: &[u8]) {
        self.send_frame(OP_BINARY, true, bytes);
    }

    /// The next server frame (opcode, payload); `None` on EOF. Asserts server frames are
    /// final and unmasked (RFC 6455 §5.1).
    pub fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let (b0, b1) = (self.buf[0], self.buf[1]);
                assert_eq!(b1 & 0x80, 0, "server frames are not masked");
                assert_eq!(b0 & 0x80, 0x80, "server frames are final");
                let (hdr, len) = match b1 & 0x7F {
                    126 if self.buf.len() >= 4 => {
                        (4, u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize)
                    }
                    127 if self.buf.len() >= 10 => {
                        let mut l = [0u8; 8];
                        l.copy_from_slice(&self.buf[2..10]);
                        (10, u64::from_be_bytes(l) as usize)
                    }
                    126 | 127 => (usize::MAX, 0),
                    l => (2, l as usize),
                };
                if hdr != usize::MAX && self.buf.len() >= hdr + len {
                    let payload = self.buf[hdr..hdr + len].to_vec();
                    self.buf.drain(..hdr + len);
                    return Some((b0 & 0x0F, payload));
                }
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// The next whole MQTT packet from binary frames; `None` when the connection closed
    /// (a close frame or EOF) first.
    pub fn read_packet(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(len) = whole_packet(&self.data) {
                return Some(self.data.drain(..len).collect());
            }
            match self.read_frame()? {
                (OP_BINARY, p) => self.data.extend_from_slice(&p),
                (0x8, _) => return None,
                (op, _) => panic!("unexpected frame opcode {op:#x}"),
            }
        }
    }
}

/// The length of the whole MQTT packet at the start of `d`, if complete.
fn whole_packet(d: &[u8]) -> Option<usize> {
    let mut len = 0usize;
    for i in 1..5 {
        let b = *d.get(i)?;
        len |= ((b & 0x7F) as usize) << (7 * (i - 1));
        if b & 0x80 == 0 {
            let total = i + 1 + len;
            return (d.len() >= total).then_some(total);
        }
    }
    None
}

/// The directory of the MQTT.js script (and its node_modules).
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/ws")
}

/// Whether `node` and the installed mqtt package are there (`.ci/run` installs them).
pub fn node_ready() -> bool {
    let ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    ok && js_dir().join("node_modules/mqtt/package.json").exists()
}

/// Start `node mqttjs.mjs ARGS` with piped stdin/stdout.
pub fn spawn_node(args: &[&str]) -> Child {
    Command::new("node")
        .current_dir(js_dir())
        .arg("mqttjs.mjs")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node")
}

/// Run `node mqttjs.mjs ARGS` to the end (the script has its own 8 s timeout); panics with
/// its output unless it printed OK and exited 0.
pub fn run_node(args: &[&str]) -> String {
    let out = spawn_node(args).wait_with_output().expect("node output");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "OK"),
        "node {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A config file with one wss:// listener on `port` (TLS from the test PKI).
pub fn wss_config(pki: &super::tls::Pki, port: u16) -> PathBuf {
    let path = pki.dir.join("wss.toml");
    let text = format!(
        "[[listeners]]\nbind = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
         websocket = true\n",
        pki.server_cert.display(),
        pki.server_key.display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

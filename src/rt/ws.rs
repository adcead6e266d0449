//! WebSocket (RFC 6455), server side, for MQTT over WebSocket (MQTT 5.0 §6, 3.1.1 §6):
//! the HTTP/1.1 upgrade ([`parse_upgrade`]) and a streaming frame decoder ([`Deframer`]) plus
//! the few server frames we send. Sans-IO: bytes in, bytes and actions out; `rt::net::Io`
//! moves them (and seals them with TLS for `wss://`).
//!
//! Why our own code: the server side MQTT needs is small (binary messages, ping/pong, close,
//! no extensions), and the decoder must work in place on the chunks `Io` reads, hand MQTT
//! bytes on as they arrive (never buffer a whole frame) and keep a state small enough to be
//! carried by a parked or handed-off connection. tungstenite wants a blocking/async stream
//! and buffers whole messages.
//!
//! A [`Deframer`] is owned by one connection (inside its `Io` while active, in the `Conn`
//! while parked, in the `Handoff` on its way to the home shard); it is `Send`.

use std::fmt::Write as _;

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// Largest upgrade request (request line and headers) read before refusing it.
pub const MAX_REQUEST: usize = 8 * 1024;
/// RFC 6455 §1.3: appended to `Sec-WebSocket-Key` before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Close status codes we send (RFC 6455 §7.4.1).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const TOO_BIG: u16 = 1009;
}

/// An accepted upgrade request.
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The `101 Switching Protocols` answer to send.
    pub response: Vec<u8>,
    /// Bytes of the input the request took; what follows is already WebSocket frames.
    pub consumed: usize,
    /// The subprotocol chosen: "mqtt" when offered, else "mqttv3.1", else none.
    pub protocol: Option<&'static str>,
}

/// Why an upgrade request was refused; [`Refusal::response`] is the HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not parseable as an HTTP/1.1 request head (400).
    #[error("malformed HTTP request")]
    Malformed,
    /// The request head exceeds [`MAX_REQUEST`] (431).
    #[error("request head larger than {MAX_REQUEST} bytes")]
    TooLarge,
    /// RFC 6455 §4.2.1 item 1: the method must be GET (405).
    #[error("method {0:?} is not GET")]
    NotGet(String),
    /// The request target is not the listener's `ws_path` (404).
    #[error("path {0:?} is not the WebSocket path")]
    WrongPath(String),
    /// §4.2.1 items 3, 4: no `Upgrade: websocket` / `Connection: Upgrade` (426).
    #[error("not a WebSocket upgrade request")]
    NotUpgrade,
    /// §4.2.1 item 6: `Sec-WebSocket-Version` must be 13 (426 naming 13, §4.4).
    #[error("Sec-WebSocket-Version {0:?} is not 13")]
    Version(String),
    /// §4.2.1 item 5: `Sec-WebSocket-Key` missing or not 16 base64-encoded bytes (400).
    #[error("Sec-WebSocket-Key missing or invalid")]
    BadKey,
    /// §4.2.1 item 2: a Host header is required (400).
    #[error("Host header missing")]
    NoHost,
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Malformed | Refusal::BadKey | Refusal::NoHost => 400,
            Refusal::TooLarge => 431,
            Refusal::NotGet(_) => 405,
            Refusal::WrongPath(_) => 404,
            Refusal::NotUpgrade | Refusal::Version(_) => 426,
        }
    }

    /// The HTTP answer (the connection is closed after it).
    pub fn response(&self) -> Vec<u8> {
        let (status, text) = match self.status() {
            400 => (400, "Bad Request"),
            404 => (404, "Not Found"),
            405 => (405, "Method Not Allowed"),
            426 => (426, "Upgrade Required"),
            s => (s, "Request Header Fields Too Large"),
        };
        let mut r =
            format!("HTTP/1.1 {status} {text}\r\nConnection: close\r\nContent-Length: 0\r\n");
        match self {
            Refusal::NotGet(_) => r.push_str("Allow: GET\r\n"),
            Refusal::NotUpgrade | Refusal::Version(_) => {
                r.push_str("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n")
            }
            _ => {}
        }
        r.push_str("\r\n");
        r.into_bytes()
    }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2 item 5.4).
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Parse an upgrade request at the start of `buf` for the WebSocket path `path` (compared
/// exactly, query string ignored). `Ok(None)`: the head is not complete yet (read more).
pub fn parse_upgrade(buf: &[u8], path: &str) -> Result<Option<Accepted>, Refusal> {
    let window = &buf[..buf.len().min(MAX_REQUEST)];
    let Some(end) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_REQUEST {
            Err(Refusal::TooLarge)
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| Refusal::Malformed)?;
    let mut lines = head.split("\r\n");
    let request = lines.next().ok_or(Refusal::Malformed)?;
    let mut parts = request.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed);
    };
    if version != "HTTP/1.1" {
        return Err(Refusal::Malformed);
    }
    if method != "GET" {
        return Err(Refusal::NotGet(clip(method)));
    }
    let target_path = target.split_once('?').map_or(target, |(p, _)| p);
    if target_path != path {
        return Err(Refusal::WrongPath(clip(target_path)));
    }
    let mut h = Headers::default();
    for line in lines {
        // Obsolete line folding is not allowed in requests (RFC 9112 §5.2).
        if line.starts_with([' ', '\t']) {
            return Err(Refusal::Malformed);
        }
        let (name, value) = line.split_once(':').ok_or(Refusal::Malformed)?;
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(Refusal::Malformed);
        }
        h.add(name, value.trim_matches([' ', '\t']));
    }
    if !has_token(&h.upgrade, "websocket") {
        return Err(Refusal::NotUpgrade);
    }
    if !has_token(&h.connection, "upgrade") {
        return Err(Refusal::NotUpgrade);
    }
    if h.version.trim() != "13" {
        return Err(Refusal::Version(clip(&h.version)));
    }
    let key = h.key.trim();
    let decoded = base64::engine::general_purpose::STANDARD.decode(key);
    if !matches!(decoded, Ok(k) if k.len() == 16) {
        return Err(Refusal::BadKey);
    }
    if !h.host {
        return Err(Refusal::NoHost);
    }
    // MQTT 5.0 §6 [MQTT-6.0.0-3]/[MQTT-6.0.0-4]: the subprotocol is "mqtt"; MQTT 3.1 clients
    // offer "mqttv3.1".
    let protocol = if has_token(&h.protocol, "mqtt") {
        Some("mqtt")
    } else if has_token(&h.protocol, "mqttv3.1") {
        Some("mqttv3.1")
    } else {
        None
    };
    let mut response = String::with_capacity(160);
    let _ = write!(
        response,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n",
        accept_key(key)
    );
    if let Some(p) = protocol {
        let _ = write!(response, "Sec-WebSocket-Protocol: {p}\r\n");
    }
    response.push_str("\r\n");
    Ok(Some(Accepted {
        response: response.into_bytes(),
        consumed: end + 4,
        protocol,
    }))
}

/// A client-supplied string, shortened for errors and logs.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The request headers the upgrade looks at; repeated headers are joined as lists.
#[derive(Default)]
struct Headers {
    upgrade: String,
    connection: String,
    version: String,
    key: String,
    protocol: String,
    host: bool,
}

impl Headers {
    fn add(&mut self, name: &str, value: &str) {
        let slot = if name.eq_ignore_ascii_case("upgrade") {
            &mut self.upgrade
        } else if name.eq_ignore_ascii_case("connection") {
            &mut self.connection
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            &mut self.version
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            &mut self.key
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            &mut self.protocol
        } else {
            if name.eq_ignore_ascii_case("host") {
                self.host = true;
            }
            return;
        };
        if !slot.is_empty() {
            slot.push(',');
        }
        slot.push_str(value);
    }
}

/// Whether a comma-separated header list holds `token` (case-insensitive).
fn has_token(list: &str, token: &str) -> bool {
    list.split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A frame-level violation; the connection is closed with [`WsError::close_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// §5.1: a client frame must be masked.
    #[error("unmasked client frame (RFC 6455 §5.1)")]
    Unmasked,
    /// §5.2: RSV bits set without a negotiated extension.
    #[error("reserved bits set (RFC 6455 §5.2)")]
    Reserved,
    /// §5.2: an opcode RFC 6455 reserves.
    #[error("unknown opcode {0:#x} (RFC 6455 §5.2)")]
    Opcode(u8),
    /// [MQTT-6.0.0-1]: MQTT travels in binary frames only.
    #[error("[MQTT-6.0.0-1] text frame")]
    Text,
    /// §5.5: control frames are not fragmented and carry at most 125 bytes.
    #[error("fragmented or oversized control frame (RFC 6455 §5.5)")]
    Control,
    /// §5.4: a continuation frame without a message to continue, or a new data message
    /// before the previous one finished.
    #[error("bad fragmentation (RFC 6455 §5.4)")]
    Fragmentation,
    /// §5.2: the most significant bit of a 64-bit length must be 0.
    #[error("invalid payload length (RFC 6455 §5.2)")]
    Length,
    /// A frame longer than the listener allows (derived from `max_packet_size`).
    #[error("frame of {len} bytes over the limit of {max}")]
    TooBig { len: u64, max: u64 },
    /// §5.5.1 / §7.4: a close frame with a 1-byte body or an invalid status code.
    #[error("invalid close frame (RFC 6455 §5.5.1)")]
    BadClose,
    /// §5.5.1: the close reason must be UTF-8.
    #[error("close reason is not UTF-8 (RFC 6455 §5.5.1)")]
    CloseUtf8,
}

impl WsError {
    /// The status code of the close frame sent for it (§7.4.1).
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::Text => close::UNSUPPORTED_DATA,
            WsError::TooBig { .. } => close::TOO_BIG,
            WsError::CloseUtf8 => close::INVALID_PAYLOAD,
            _ => close::PROTOCOL_ERROR,
        }
    }
}

/// A control frame the connection must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Answer with a pong carrying the same payload (§5.5.2, §5.5.3).
    Ping(Vec<u8>),
    /// The client closes (status code, if it sent one): echo a close and end (§5.5.1).
    Close(Option<u16>),
}

/// Streaming decoder of client frames. [`Deframer::deframe`] unmasks a received chunk in
/// place and compacts the data-frame payload to its front, so MQTT bytes go on as soon as
/// they arrive whatever the frame boundaries; only control payloads (≤ 125 bytes) are copied.
#[derive(Debug, Clone)]
pub struct Deframer {
    /// Largest payload length accepted in one frame.
    max_frame: u64,
    /// Header bytes collected so far (a header is at most 14 bytes).
    hdr: [u8; 14],
    hdr_len: u8,
    /// A frame's header is complete and `left` payload bytes remain.
    in_frame: bool,
    left: u64,
    opcode: u8,
    fin: bool,
    mask: [u8; 4],
    /// Position in the mask of the next payload byte.
    mask_at: u8,
    /// A fragmented data message is open (its next frame is a continuation).
    open_message: bool,
    /// Payload of the control frame being read.
    ctrl: Vec<u8>,
    /// A close frame or an error ended the stream: later bytes are ignored.
    done: bool,
}

impl Deframer {
    pub fn new(max_frame: u64) -> Deframer {
        Deframer {
            max_frame,
            hdr: [0; 14],
            hdr_len: 0,
            in_frame: false,
            left: 0,
            opcode: 0,
            fin: false,
            mask: [0; 4],
            mask_at: 0,
            open_message: false,
            ctrl: Vec::new(),
            done: false,
        }
    }

    /// The stream ended (close frame or violation).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// De-frame `buf` in place: returns how many bytes at its front are MQTT data (the
    /// payload of binary and continuation frames, unmasked); control frames completed in it
    /// are appended to `ctrl`. After a close frame the rest is ignored (§5.5.1).
    pub fn deframe(&mut self, buf: &mut [u8], ctrl: &mut Vec<Control>) -> Result<usize, WsError> {
        let res = self.run(buf, ctrl);
        if res.is_err() {
            self.done = true;
        }
        res
    }

    fn run(&mut self, buf: &mut [u8], ctrl: &mut Vec<Control>) -> Result<usize, WsError> {
        let (mut r, mut w) = (0, 0);
        while r < buf.len() && !self.done {
            if !self.in_frame {
                r += self.header(&buf[r..])?;
                if self.in_frame && self.left == 0 {
                    self.end_frame(ctrl)?;
                }
                continue;
            }
            let n = (buf.len() - r).min(usize::try_from(self.left).unwrap_or(usize::MAX));
            unmask(&mut buf[r..r + n], self.mask, self.mask_at);
            self.mask_at = ((self.mask_at as usize + n) % 4) as u8;
            if self.opcode & 0x8 == 0 {
                buf.copy_within(r..r + n, w);
                w += n;
            } else {
                self.ctrl.extend_from_slice(&buf[r..r + n]);
            }
            r += n;
            self.left -= n as u64;
            if self.left == 0 {
                self.end_frame(ctrl)?;
            }
        }
        Ok(w)
    }

    /// Take header bytes from `input`; returns how many were used. Sets `in_frame` once the
    /// header is complete and valid.
    fn header(&mut self, input: &[u8]) -> Result<usize, WsError> {
        let mut used = 0;
        loop {
            let want = if self.hdr_len < 2 {
                2
            } else {
                2 + ext_len(self.hdr[1]) + 4
            };
            let have = self.hdr_len as usize;
            let take = (want - have).min(input.len() - used);
            self.hdr[have..have + take].copy_from_slice(&input[used..used + take]);
            self.hdr_len += take as u8;
            used += take;
            if (self.hdr_len as usize) < want {
                return Ok(used);
            }
            if want == 2 {
                // Checked as soon as possible: an unmasked or text frame is refused
                // before its payload is even looked at.
                self.check_first_two()?;
                continue;
            }
            break;
        }
        let b1 = self.hdr[1];
        let len = match b1 & 0x7F {
            126 => u16::from_be_bytes([self.hdr[2], self.hdr[3]]) as u64,
            127 => {
                let mut l = [0u8; 8];
                l.copy_from_slice(&self.hdr[2..10]);
                let l = u64::from_be_bytes(l);
                if l >> 63 != 0 {
                    return Err(WsError::Length);
                }
                l
            }
            l => l as u64,
        };
        if len > self.max_frame {
            return Err(WsError::TooBig {
                len,
                max: self.max_frame,
            });
        }
        let m = 2 + ext_len(b1);
        self.mask.copy_from_slice(&self.hdr[m..m + 4]);
        self.mask_at = 0;
        self.left = len;
        self.in_frame = true;
        self.hdr_len = 0;
        let op = self.hdr[0] & 0x0F;
        self.opcode = op;
        self.fin = self.hdr[0] & 0x80 != 0;
        if op & 0x8 == 0 {
            // Data frames: binary starts a message, continuation goes on with it (§5.4).
            self.open_message = !self.fin;
        } else {
            self.ctrl.clear();
        }
        Ok(used)
    }

    /// Checks possible on the first two header bytes.
    fn check_first_two(&mut self) -> Result<(), WsError> {
        let (b0, b1) = (self.hdr[0], self.hdr[1]);
        if b0 & 0x70 != 0 {
            return Err(WsError::Reserved);
        }
        if b1 & 0x80 == 0 {
            return Err(WsError::Unmasked);
        }
        let op = b0 & 0x0F;
        match op {
            OP_TEXT => return Err(WsError::Text),
            OP_BINARY if self.open_message => return Err(WsError::Fragmentation),
            OP_CONTINUATION if !self.open_message => return Err(WsError::Fragmentation),
            OP_BINARY | OP_CONTINUATION => {}
            OP_CLOSE | OP_PING | OP_PONG => {
                if b0 & 0x80 == 0 || b1 & 0x7F > 125 {
                    return Err(WsError::Control);
                }
            }
            other => return Err(WsError::Opcode(other)),
        }
        Ok(())
    }

    fn end_frame(&mut self, ctrl: &mut Vec<Control>) -> Result<(), WsError> {
        self.in_frame = false;
        match self.opcode {
            OP_PING => ctrl.push(Control::Ping(std::mem::take(&mut self.ctrl))),
            OP_CLOSE => {
                let body = std::mem::take(&mut self.ctrl);
                let code = match body.len() {
                    0 => None,
                    1 => return Err(WsError::BadClose),
                    _ => {
                        let c = u16::from_be_bytes([body[0], body[1]]);
                        if !valid_close_code(c) {
                            return Err(WsError::BadClose);
                        }
                        if std::str::from_utf8(&body[2..]).is_err() {
                            return Err(WsError::CloseUtf8);
                        }
                        Some(c)
                    }
                };
                self.done = true;
                ctrl.push(Control::Close(code));
            }
            // Unsolicited pongs are allowed and need no answer (§5.5.3).
            OP_PONG => self.ctrl = Vec::new(),
            _ => {}
        }
        Ok(())
    }
}

/// Bytes of extended payload length announced by the second header byte.
fn ext_len(b1: u8) -> usize {
    match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    }
}

/// Status codes a peer may send in a close frame (§7.4.1, §7.4.2).
fn valid_close_code(c: u16) -> bool {
    matches!(c, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// XOR `data` with `mask`, starting at mask position `at` (§5.3).
fn unmask(data: &mut [u8], mask: [u8; 4], at: u8) {
    let at = at as usize;
    let mb = [0, 1, 2, 3].map(|i| mask[(at + i) % 4]);
    // Word at a time: both sides in native order, so the XOR is byte-wise.
    let m = u32::from_ne_bytes(mb);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ m;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mb[i];
    }
}

/// Largest server frame header: FIN/opcode, 127, 8-byte length.
pub const MAX_HEADER: usize = 10;

/// Append an unmasked, final server frame header for `len` payload bytes (§5.2).
pub fn put_header(out: &mut bytes::BytesMut, opcode: u8, len: usize) {
    out.extend_from_slice(&[0x80 | opcode]);
    if len < 126 {
        out.extend_from_slice(&[len as u8]);
    } else if len <= u16::MAX as usize {
        out.extend_from_slice(&[126]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[127]);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Append a whole server frame.
pub fn put_frame(out: &mut bytes::BytesMut, opcode: u8, payload: &[u8]) {
    put_header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// Append a server close frame with `code` (§5.5.1).
pub fn put_close(out: &mut bytes::BytesMut, code: u16) {
    put_frame(out, OP_CLOSE, &code.to_be_bytes());
}

/// A client frame (masked with `mask`), for tests and fuzzing.
pub fn client_frame(opcode: u8, fin: bool, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    put_header(&mut out, opcode, payload.len());
    if !fin {
        out[0] &= 0x7F;
    }
    out[1] |= 0x80;
    out.extend_from_slice(&mask);
    let at = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[at..], mask, 0);
    out.to_vec()
}

#[cfg(test)]
#[path = "ws_tests.rs"]
mod tests;

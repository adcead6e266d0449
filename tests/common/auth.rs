//! Raw MQTT 5 packets for enhanced-authentication tests (§4.12): CONNECT / AUTH with the
//! Authentication Method and Data properties, a reader for CONNACK / AUTH / DISCONNECT
//! answers, SCRAM credentials files, and a whole SCRAM-SHA-256 handshake.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{mqtt_str, packet, remaining_length, Raw};

#[path = "scram_client.rs"]
mod scram_client;
pub use scram_client::ScramClient;

pub const SCRAM: &str = "SCRAM-SHA-256";

/// v5 properties: Authentication Method (0x15) and Data (0x16), with their length prefix.
pub fn auth_props(method: Option<&str>, data: Option<&[u8]>) -> Vec<u8> {
    let mut p = Vec::new();
    if let Some(m) = method {
        p.push(0x15);
        p.extend(mqtt_str(m));
    }
    if let Some(d) = data {
        p.push(0x16);
        p.extend((d.len() as u16).to_be_bytes());
        p.extend_from_slice(d);
    }
    let mut out = remaining_length(p.len());
    out.extend(p);
    out
}

/// A v5 CONNECT (clean start, keep-alive 60) with optional authentication properties.
pub fn connect_v5(client_id: &str, method: Option<&str>, data: Option<&[u8]>) -> Vec<u8> {
    let mut body = mqtt_str("MQTT");
    body.push(5);
    body.push(0x02);
    body.extend(60u16.to_be_bytes());
    body.extend(auth_props(method, data));
    body.extend(mqtt_str(client_id));
    packet(0x10, &body)
}

/// An AUTH packet with a reason code and authentication properties.
pub fn auth_packet(reason: u8, method: Option<&str>, data: Option<&[u8]>) -> Vec<u8> {
    let mut body = vec![reason];
    body.extend(auth_props(method, data));
    packet(0xF0, &body)
}

/// A CONNACK, AUTH or DISCONNECT from the broker, with its authentication properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Packet type (2 CONNACK, 14 DISCONNECT, 15 AUTH).
    pub kind: u8,
    pub reason: u8,
    pub method: Option<String>,
    pub data: Option<Vec<u8>>,
}

impl Answer {
    pub fn data_str(&self) -> String {
        String::from_utf8(self.data.clone().unwrap_or_default()).expect("UTF-8 data")
    }
}

fn var_int(b: &[u8], at: &mut usize) -> usize {
    let (mut v, mut shift) = (0usize, 0);
    loop {
        let x = b[*at];
        *at += 1;
        v |= ((x & 0x7f) as usize) << shift;
        shift += 7;
        if x & 0x80 == 0 {
            return v;
        }
    }
}

/// Parse a CONNACK / AUTH / DISCONNECT (v5), skipping properties other than 0x15 / 0x16.
pub fn parse_answer(p: &[u8]) -> Answer {
    let kind = p[0] >> 4;
    let mut at = 1;
    let len = var_int(p, &mut at);
    let end = at + len;
    assert_eq!(end, p.len(), "one whole packet: {p:02x?}");
    if kind == 2 {
        at += 1; // acknowledge flags
    }
    let mut a = Answer {
        kind,
        reason: 0,
        method: None,
        data: None,
    };
    if at == end {
        return a; // AUTH / DISCONNECT with remaining length 0: reason 0x00
    }
    a.reason = p[at];
    at += 1;
    if at == end {
        return a;
    }
    let props_end = {
        let n = var_int(p, &mut at);
        at + n
    };
    let u16_at = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]) as usize;
    while at < props_end {
        let id = p[at];
        at += 1;
        match id {
            0x15 => {
                let n = u16_at(at);
                a.method = Some(String::from_utf8(p[at + 2..at + 2 + n].to_vec()).unwrap());
                at += 2 + n;
            }
            0x16 => {
                let n = u16_at(at);
                a.data = Some(p[at + 2..at + 2 + n].to_vec());
                at += 2 + n;
            }
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => at += 1,
            0x13 | 0x21 | 0x22 | 0x23 => at += 2,
            0x02 | 0x11 | 0x18 | 0x27 => at += 4,
            0x0B => {
                var_int(p, &mut at);
            }
            0x03 | 0x08 | 0x09 | 0x12 | 0x1A | 0x1C | 0x1F => at += 2 + u16_at(at),
            0x26 => {
                at += 2 + u16_at(at);
                at += 2 + u16_at(at);
            }
            other => panic!("unknown property 0x{other:02x} in {p:02x?}"),
        }
    }
    a
}

/// Read the next packet as an [`Answer`]; panics if the broker closed instead.
pub fn read_answer(raw: &mut Raw) -> Answer {
    let p = raw
        .read_packet()
        .expect("a packet from the broker, not a close");
    parse_answer(&p)
}

/// Write a SCRAM credentials file for `users` (user, password) in a fresh temp directory.
pub fn scram_file(users: &[(&str, &str)]) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ringmq-auth-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let lines: Vec<String> = users
        .iter()
        .map(|(u, p)| ringmq::auth::scram::derive_line(u, p, 4096).expect("derive"))
        .collect();
    let file = dir.join("scram.txt");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write scram file");
    file
}

/// CONNECT with SCRAM-SHA-256 as `user`, answer the broker's challenge; returns the
/// connection, the client (to check the server signature) and the broker's final answer
/// (CONNACK on success or refusal).
pub fn scram_connect(
    addr: SocketAddr,
    client_id: &str,
    user: &str,
    password: &str,
) -> (Raw, ScramClient, Answer) {
    let mut raw = Raw::connect(addr);
    let mut c = ScramClient::new(user, password, "cNonce1");
    raw.send(&connect_v5(
        client_id,
        Some(SCRAM),
        Some(c.client_first().as_bytes()),
    ));
    let challenge = read_answer(&mut raw);
    assert_eq!(
        (
            challenge.kind,
            challenge.reason,
            challenge.method.as_deref()
        ),
        (15, 0x18, Some(SCRAM)),
        "expected AUTH 0x18 with the method: {challenge:?}"
    );
    let fin = c.client_final(&challenge.data_str()).expect("server-first");
    raw.send(&auth_packet(0x18, Some(SCRAM), Some(fin.as_bytes())));
    let last = read_answer(&mut raw);
    (raw, c, last)
}

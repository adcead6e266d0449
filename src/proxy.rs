//! The PROXY protocol header (HAProxy's "proxy-protocol.txt", versions 1 and 2) that a load
//! balancer sends ahead of the client's bytes to tell the broker the client's real address.
//!
//! Sans-IO and pure: [`parse`] looks at the bytes received so far and says either how to read
//! on ([`Parse::NeedExact`], [`Parse::NeedLine`]) or what the complete header says. The reading
//! shell (`conn::proxy_flow`) never takes a byte past the header from the socket, so whatever
//! follows it (a TLS ClientHello, a CONNECT) stays in the kernel for the next layer: it reads
//! at most the count `NeedExact` gives, and for a version 1 line peeks and takes the bytes up
//! to the first `\n`.
//!
//! Bounds: a version 1 line is at most [`V1_MAX`] bytes (the spec's limit); a version 2 header
//! at most the caller's `max` (the spec allows 16 + 65535 bytes; TLVs are skipped, not kept).
//! A header that breaks the rules is an error, never a guess [spec §2: "the receiver must not
//! try to guess whether the protocol header is present or not"].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The version 2 signature (12 bytes, §2.2).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest version 1 line, "\r\n" included (§2.1: 107 bytes).
pub const V1_MAX: usize = 107;
/// Fixed part of a version 2 header: signature, version/command, family, length.
pub const V2_FIXED: usize = 16;
/// Smallest `max` that still admits every version 2 address block (UNIX: 216 bytes).
pub const V2_MIN_MAX: usize = V2_FIXED + 216;
/// Largest header the spec allows.
pub const V2_SPEC_MAX: usize = V2_FIXED + 65_535;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// 1 or 2.
    pub version: u8,
    /// The client's address and port, and the address it connected to; `None` when the
    /// header carries none the broker uses (v1 UNKNOWN, v2 LOCAL, v2 UNSPEC/UNIX/UDP): the
    /// connection's own socket addresses then apply.
    pub addrs: Option<(SocketAddr, SocketAddr)>,
    /// Version 2 LOCAL command: the proxy's own connection (a health check), §2.2.
    pub local: bool,
}

impl Header {
    /// The client's real address, if the header carries one.
    pub fn source(&self) -> Option<SocketAddr> {
        self.addrs.map(|(s, _)| s)
    }
}

/// How parsing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// Read at most this many more bytes (all of them belong to the header), then parse again.
    NeedExact(usize),
    /// A version 1 line: read on up to and including the next `\n` (at most
    /// `V1_MAX - received` bytes), then parse again.
    NeedLine,
    /// The header is complete: `len` bytes, the start of the buffer.
    Done { len: usize, header: Header },
}

/// Why a header is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The bytes start neither with "PROXY " nor with the version 2 signature (§2).
    #[error("no PROXY protocol header (neither \"PROXY \" nor the v2 signature)")]
    NoHeader,
    /// No "\r\n" within the first 107 bytes (§2.1).
    #[error("PROXY v1 line longer than 107 bytes")]
    V1TooLong,
    /// The version 1 line breaks its grammar (§2.1); says which part.
    #[error("malformed PROXY v1 line: {0}")]
    V1Malformed(&'static str),
    /// Version nibble other than 2 (§2.2: "other values are invalid").
    #[error("PROXY v2 header with version {0} (only 2 exists)")]
    V2Version(u8),
    /// Command other than LOCAL (0) or PROXY (1) (§2.2: "other values are unassigned and
    /// must not be emitted by senders. Receivers must drop connections presenting
    /// unexpected values here").
    #[error("PROXY v2 header with unknown command {0}")]
    V2Command(u8),
    /// Address family or protocol byte with unassigned values.
    #[error("PROXY v2 header with unknown family/protocol byte {0:#04x}")]
    V2Family(u8),
    /// The length is too short for the address block of the announced family.
    #[error("PROXY v2 address block of {len} bytes is too short for family {family:#04x}")]
    V2ShortAddress { family: u8, len: usize },
    /// The whole header would exceed the configured bound.
    #[error("PROXY v2 header of {len} bytes exceeds the limit of {max}")]
    V2TooLarge { len: usize, max: usize },
}

/// Parse the start of `buf` (everything received so far); `max` bounds a version 2 header
/// (clamped to at least [`V2_MIN_MAX`]).
pub fn parse(buf: &[u8], max: usize) -> Result<Parse, ProxyError> {
    let max = max.max(V2_MIN_MAX);
    let sig = buf.len().min(V2_SIGNATURE.len());
    let head = buf.len().min(6);
    let (v2, v1) = (
        buf[..sig] == V2_SIGNATURE[..sig],
        buf[..head] == b"PROXY "[..head],
    );
    if !v1 && !v2 {
        return Err(ProxyError::NoHeader);
    }
    if buf.len() < V2_SIGNATURE.len() {
        // 12 bytes are less than any header of either version (v1: 15, v2: 16).
        return Ok(Parse::NeedExact(V2_SIGNATURE.len() - buf.len()));
    }
    if v2 {
        parse_v2(buf, max)
    } else {
        parse_v1(buf)
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parse, ProxyError> {
    let Some(nl) = buf.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::V1TooLong)
        } else {
            Ok(Parse::NeedLine)
        };
    };
    let len = nl + 1;
    let line = buf[..nl]
        .strip_suffix(b"\r")
        .ok_or(ProxyError::V1Malformed("line not ended by \\r\\n"))?;
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::V1Malformed("not ASCII"))?;
    let rest = &line["PROXY ".len()..];
    if rest == "UNKNOWN" || rest.starts_with("UNKNOWN ") {
        // §2.1: the rest of the line up to the CRLF is ignored.
        return Ok(Parse::Done {
            len,
            header: Header {
                version: 1,
                addrs: None,
                local: false,
            },
        });
    }
    let mut parts = rest.split(' ');
    let (Some(proto), Some(src), Some(dst), Some(sport), Some(dport), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(ProxyError::V1Malformed(
            "expected protocol, two addresses and two ports separated by single spaces",
        ));
    };
    let (src, dst): (IpAddr, IpAddr) = match proto {
        "TCP4" => (
            IpAddr::V4(src.parse().map_err(|_| bad_v1("source IPv4 address"))?),
            IpAddr::V4(
                dst.parse()
                    .map_err(|_| bad_v1("destination IPv4 address"))?,
            ),
        ),
        "TCP6" => (
            IpAddr::V6(src.parse().map_err(|_| bad_v1("source IPv6 address"))?),
            IpAddr::V6(
                dst.parse()
                    .map_err(|_| bad_v1("destination IPv6 address"))?,
            ),
        ),
        _ => return Err(bad_v1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let sport = port(sport).ok_or(bad_v1("source port"))?;
    let dport = port(dport).ok_or(bad_v1("destination port"))?;
    Ok(Parse::Done {
        len,
        header: Header {
            version: 1,
            addrs: Some((SocketAddr::new(src, sport), SocketAddr::new(dst, dport))),
            local: false,
        },
    })
}

fn bad_v1(what: &'static str) -> ProxyError {
    ProxyError::V1Malformed(what)
}

/// A decimal port 0..=65535: digits only, no sign, no leading zero (§2.1).
fn port(s: &str) -> Option<u16> {
    let ok = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse().ok()).flatten()
}

fn parse_v2(buf: &[u8], max: usize) -> Result<Parse, ProxyError> {
    if buf.len() < V2_FIXED {
        return Ok(Parse::NeedExact(V2_FIXED - buf.len()));
    }
    let (ver_cmd, fam) = (buf[12], buf[13]);
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::V2Version(ver_cmd >> 4));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        c => return Err(ProxyError::V2Command(c)),
    };
    if fam >> 4 > 3 || fam & 0x0f > 2 {
        return Err(ProxyError::V2Family(fam));
    }
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = V2_FIXED + body;
    if len > max {
        return Err(ProxyError::V2TooLarge { len, max });
    }
    if buf.len() < len {
        return Ok(Parse::NeedExact(len - buf.len()));
    }
    let block = &buf[V2_FIXED..len];
    // The address block must fit the announced family even when it is not used (LOCAL).
    let need = match fam >> 4 {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if block.len() < need {
        return Err(ProxyError::V2ShortAddress {
            family: fam,
            len: block.len(),
        });
    }
    // LOCAL: "the receiver must ... use the real connection endpoints"; UNSPEC family,
    // UNIX sockets and UDP carry no TCP client address: same. TLVs after the block are
    // skipped.
    let addrs = match (local, fam) {
        (false, 0x11) => {
            let ip = |at: usize| {
                Ipv4Addr::from([block[at], block[at + 1], block[at + 2], block[at + 3]])
            };
            let p = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            Some((
                SocketAddr::new(ip(0).into(), p(8)),
                SocketAddr::new(ip(4).into(), p(10)),
            ))
        }
        (false, 0x21) => {
            let ip = |at: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&block[at..at + 16]);
                Ipv6Addr::from(o)
            };
            let p = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            Some((
                SocketAddr::new(ip(0).into(), p(32)),
                SocketAddr::new(ip(16).into(), p(34)),
            ))
        }
        _ => None,
    };
    Ok(Parse::Done {
        len,
        header: Header {
            version: 2,
            addrs,
            local,
        },
    })
}

/// How many of `peeked` (bytes waiting on the socket after the `received` ones) belong to a
/// version 1 line: up to and including the first `\n`, and no more than the line's bound.
pub fn v1_take(received: usize, peeked: &[u8]) -> usize {
    let room = V1_MAX.saturating_sub(received).min(peeked.len());
    match peeked[..room].iter().position(|&b| b == b'\n') {
        Some(i) => i + 1,
        None => room,
    }
}

/// A version 1 header for `addrs` (`None`: UNKNOWN). For tests and tools; the broker only
/// reads headers.
pub fn encode_v1(addrs: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let line = match addrs {
        None => "PROXY UNKNOWN\r\n".to_string(),
        Some((s, d)) => {
            let proto = if s.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {proto} {} {} {} {}\r\n",
                s.ip(),
                d.ip(),
                s.port(),
                d.port()
            )
        }
    };
    line.into_bytes()
}

/// A version 2 header: PROXY with `addrs` (TCP over IPv4 or IPv6; the two must be of one
/// family), or LOCAL when `addrs` is `None`, followed by `tlvs` (raw TLV bytes).
pub fn encode_v2(addrs: Option<(SocketAddr, SocketAddr)>, tlvs: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    let (cmd, fam) = match addrs {
        None => (0x20, 0x00),
        Some((s, d)) => {
            let fam = match (s.ip(), d.ip()) {
                (IpAddr::V4(a), IpAddr::V4(b)) => {
                    block.extend(a.octets());
                    block.extend(b.octets());
                    0x11
                }
                (a, b) => {
                    block.extend(v6(a).octets());
                    block.extend(v6(b).octets());
                    0x21
                }
            };
            block.extend(s.port().to_be_bytes());
            block.extend(d.port().to_be_bytes());
            (0x21, fam)
        }
    };
    block.extend_from_slice(tlvs);
    let mut out = V2_SIGNATURE.to_vec();
    out.push(cmd);
    out.push(fam);
    out.extend((block.len() as u16).to_be_bytes());
    out.extend(block);
    out
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

#[cfg(test)]
mod tests;

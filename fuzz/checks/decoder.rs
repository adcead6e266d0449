//! The properties of the packet decoder ([`ringmq::proto::Decoder`]) on any byte stream.
//! Shared, through a `#[path]` include, by the cargo-fuzz target `decoder` and by
//! `tests/fuzz_corpus.rs` (the stable replay of the corpus): both check exactly this.
//!
//! Input layout: byte 0 picks the decoder (`% 4`: 0 a server-side decoder that must see a
//! CONNECT first, 1/2/3 an established 3.1.1 / 5.0 / 3.1 decoder that accepts both
//! directions), byte 1 the maximum packet size (`16 + 4 * b`, so 16..=1036 bytes: small, to
//! make the size bound bite), byte 2 how the stream is cut into reads (0: all at once,
//! otherwise pseudo-random reads of 1..=17 bytes seeded by it); the rest is the stream.
//!
//! Properties: no panic; the packets decoded and the error that ends the stream are the same
//! however the stream is cut; each decoded packet re-encodes (to `encoded_len` bytes, no more
//! than the frame it came from) and decodes back to itself; the receive buffer never grows
//! past what the feeding put in it or the maximum packet size (a declared length over the
//! limit is refused from the fixed header, before its body is buffered).

use bytes::BytesMut;
use ringmq::proto::codec::MAX_REMAINING_LENGTH;
use ringmq::proto::{encode, encoded_len, Decoder, Packet, ProtocolVersion};

/// What one decoder made of a whole stream.
#[derive(Debug, PartialEq)]
struct Outcome {
    packets: Vec<Packet>,
    /// The error that ended the stream, if any.
    error: Option<String>,
    /// Bytes left undecoded (an incomplete packet) when the stream ended without an error.
    pending: usize,
}

/// Check every property of the decoder on `data` (see the module docs for its layout).
pub fn check(data: &[u8]) -> Result<(), String> {
    let [mode, size, cut, stream @ ..] = data else {
        return Ok(());
    };
    let max = 16 + 4 * usize::from(*size);
    let fresh = || match mode % 4 {
        0 => Decoder::new(max),
        1 => Decoder::with_version(ProtocolVersion::V311, max),
        2 => Decoder::with_version(ProtocolVersion::V5, max),
        _ => Decoder::with_version(ProtocolVersion::V31, max),
    };
    let whole = run(fresh(), stream, &[stream.len()], max)?;
    if *cut != 0 {
        let reads = cuts(*cut, stream.len());
        let split = run(fresh(), stream, &reads, max)?;
        if split != whole {
            return Err(format!(
                "[cut-independent] reads {reads:?} give {split:?}, all at once {whole:?}"
            ));
        }
    }
    Ok(())
}

/// Read sizes of 1..=17 bytes covering `len`, from a xorshift generator seeded by `seed`.
fn cuts(seed: u8, len: usize) -> Vec<usize> {
    let mut x = u32::from(seed).wrapping_mul(0x9E37_79B9) | 1;
    let mut out = Vec::new();
    let mut left = len;
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (1 + x % 17) as usize;
        out.push(n.min(left));
        left -= n.min(left);
    }
    out
}

/// Feeds `stream` in reads of the given sizes, decoding after each until more bytes are
/// needed or an error ends the stream, checking the buffer bound and the round trip.
fn run(mut dec: Decoder, stream: &[u8], reads: &[usize], max: usize) -> Result<Outcome, String> {
    let mut packets = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut at = 0;
    for &n in reads {
        // A fresh buffer of exactly the bytes at hand, so any growth is the decoder's doing.
        let mut buf = BytesMut::with_capacity(pending.len() + n);
        buf.extend_from_slice(&pending);
        buf.extend_from_slice(&stream[at..at + n]);
        at += n;
        let fed = buf.capacity();
        loop {
            let before = buf.len();
            let res = dec.decode(&mut buf);
            if buf.capacity() > (2 * fed).max(max) {
                return Err(format!(
                    "[buffer-bounded] buffer grew to {} bytes (fed {fed}, max packet size {max})",
                    buf.capacity()
                ));
            }
            match res {
                Ok(Some(p)) => {
                    let frame = before - buf.len();
                    round_trip(&p, dec.version(), frame)?;
                    packets.push(p);
                }
                Ok(None) => {
                    if buf.len() != before {
                        return Err("[need-more-consumes-nothing] bytes consumed".into());
                    }
                    break;
                }
                Err(e) => {
                    return Ok(Outcome {
                        packets,
                        error: Some(e.to_string()),
                        pending: 0,
                    })
                }
            }
        }
        pending = buf.to_vec();
    }
    Ok(Outcome {
        packets,
        error: None,
        pending: pending.len(),
    })
}

/// `p` (decoded from a `frame`-byte packet) encodes to `encoded_len` bytes, at most `frame`,
/// and those decode back to `p`.
fn round_trip(p: &Packet, version: Option<ProtocolVersion>, frame: usize) -> Result<(), String> {
    let Some(v) = version else {
        return Err(format!("[version-known] decoded {p:?} without a version"));
    };
    let mut out = BytesMut::new();
    encode(p, v, &mut out).map_err(|e| format!("[re-encodes] {p:?}: {e}"))?;
    if out.len() != encoded_len(p, v) {
        return Err(format!(
            "[encoded-len] {p:?}: encoded_len {}, encoded {} bytes",
            encoded_len(p, v),
            out.len()
        ));
    }
    if out.len() > frame {
        return Err(format!(
            "[re-encoding-no-longer] {p:?}: {} bytes, received in {frame}",
            out.len()
        ));
    }
    let big = 1 + 4 + MAX_REMAINING_LENGTH;
    let mut again = match p {
        Packet::Connect(_) => Decoder::new(big),
        _ => Decoder::with_version(v, big),
    };
    match again.decode(&mut out) {
        Ok(Some(q)) if q == *p && out.is_empty() => Ok(()),
        other => Err(format!(
            "[round-trip] {p:?} ({v:?}) re-decodes as {other:?}, {} bytes left",
            out.len()
        )),
    }
}

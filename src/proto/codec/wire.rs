//! Wire primitives: a bounds-checked reader over one packet's body and variable byte integers.
//!
//! Every read is checked against the remaining length, so no client input can index out of
//! bounds; slices share the packet's allocation (`Bytes::slice`), so nothing is copied.

use bytes::{BufMut, Bytes, BytesMut};

use crate::proto::error::ProtoError;
use crate::proto::packet::{PacketId, Utf8Bytes};

/// Decodes a variable byte integer (§1.5.5) from the front of `b`.
///
/// `Ok(None)` when `b` ends before the integer does (fewer than 4 bytes, all with the
/// continuation bit); the caller decides whether that means "need more bytes" or truncation.
pub(super) fn parse_var_int(
    b: &[u8],
    what: &'static str,
) -> Result<Option<(u32, usize)>, ProtoError> {
    let mut value: u32 = 0;
    for (i, &byte) in b.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // A minimal encoding never ends in a zero group after the first byte.
            if i > 0 && byte == 0 {
                return Err(ProtoError::NonMinimalVarInt { what });
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if b.len() >= 4 {
        Err(ProtoError::MalformedVarInt { what })
    } else {
        Ok(None)
    }
}

/// Bytes needed to encode `v` as a variable byte integer (values above the maximum count 4).
pub(super) fn var_int_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Appends `v` (at most [`MAX_REMAINING_LENGTH`](super::MAX_REMAINING_LENGTH)) as a variable
/// byte integer.
pub(super) fn put_var_int(out: &mut BytesMut, mut v: usize) {
    loop {
        let byte = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}

/// Appends a two-byte length prefix and `data`.
pub(super) fn put_binary(
    out: &mut BytesMut,
    what: &'static str,
    data: &[u8],
) -> Result<(), ProtoError> {
    let len = u16::try_from(data.len()).map_err(|_| ProtoError::FieldTooLong {
        what,
        len: data.len(),
    })?;
    out.put_u16(len);
    out.put_slice(data);
    Ok(())
}

/// Cursor over one packet's variable header and payload.
pub(super) struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub(super) fn new(buf: Bytes) -> Reader {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub(super) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn slice(&mut self, n: usize, what: &'static str) -> Result<&[u8], ProtoError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(ProtoError::Truncated { what })?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(ProtoError::Truncated { what })?;
        self.pos = end;
        Ok(s)
    }

    pub(super) fn u8(&mut self, what: &'static str) -> Result<u8, ProtoError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(ProtoError::Truncated { what })?;
        self.pos += 1;
        Ok(b)
    }

    pub(super) fn u16(&mut self, what: &'static str) -> Result<u16, ProtoError> {
        let s = self.slice(2, what)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }

    pub(super) fn u32(&mut self, what: &'static str) -> Result<u32, ProtoError> {
        let s = self.slice(4, what)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    /// A packet identifier, which is never 0 on the wire.
    pub(super) fn packet_id(&mut self) -> Result<PacketId, ProtoError> {
        match self.u16("packet identifier")? {
            // MQTT-2.3.1-1
            0 => Err(ProtoError::ZeroPacketId),
            id => Ok(id),
        }
    }

    pub(super) fn var_int(&mut self, what: &'static str) -> Result<u32, ProtoError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let (v, n) = parse_var_int(rest, what)?.ok_or(ProtoError::Truncated { what })?;
        self.pos += n;
        Ok(v)
    }

    /// The next `n` bytes as a zero-copy slice.
    pub(super) fn take(&mut self, n: usize, what: &'static str) -> Result<Bytes, ProtoError> {
        if n > self.remaining() {
            return Err(ProtoError::Truncated { what });
        }
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    /// Binary data: two-byte length, then that many bytes (§1.5.6).
    pub(super) fn binary(&mut self, what: &'static str) -> Result<Bytes, ProtoError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }

    /// UTF-8 string (§1.5.3): well-formed, no U+0000.
    pub(super) fn string(&mut self, what: &'static str) -> Result<Utf8Bytes, ProtoError> {
        let raw = self.binary(what)?;
        Utf8Bytes::try_from_bytes(raw).map_err(|raw| {
            if std::str::from_utf8(&raw).is_ok() {
                // MQTT-1.5.3-2
                ProtoError::NullCharacter { what }
            } else {
                // MQTT-1.5.3-1
                ProtoError::InvalidUtf8 { what }
            }
        })
    }

    /// A sub-reader over the next `n` bytes (a 5.0 property block).
    pub(super) fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader, ProtoError> {
        self.take(n, what).map(Reader::new)
    }

    /// Everything not yet read (a PUBLISH payload, SUBACK codes).
    pub(super) fn rest(&mut self) -> Bytes {
        let b = self.buf.slice(self.pos.min(self.buf.len())..);
        self.pos = self.buf.len();
        b
    }

    /// Fails if bytes are left after the packet's last field.
    pub(super) fn finish(&self, packet: &'static str) -> Result<(), ProtoError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(ProtoError::TrailingBytes { packet, extra }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_int_boundaries() {
        for v in [
            0usize,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let mut out = BytesMut::new();
            put_var_int(&mut out, v);
            assert_eq!(out.len(), var_int_len(v), "{v}");
            assert_eq!(
                parse_var_int(&out, "t").unwrap(),
                Some((v as u32, out.len()))
            );
        }
    }

    #[test]
    fn var_int_incomplete_and_overlong() {
        assert_eq!(parse_var_int(&[0x80, 0x80], "t").unwrap(), None);
        assert_eq!(parse_var_int(&[], "t").unwrap(), None);
        // §1.5.5: at most 4 bytes.
        assert_eq!(
            parse_var_int(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F], "t"),
            Err(ProtoError::MalformedVarInt { what: "t" })
        );
        // MQTT-1.5.5-1: 0 encoded in two bytes.
        assert_eq!(
            parse_var_int(&[0x80, 0x00], "t"),
            Err(ProtoError::NonMinimalVarInt { what: "t" })
        );
    }

    #[test]
    fn reader_is_bounded() {
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x05, b'a']));
        assert_eq!(r.string("s"), Err(ProtoError::Truncated { what: "s" }));
        let mut r = Reader::new(Bytes::from_static(&[0x01]));
        assert_eq!(r.u16("x"), Err(ProtoError::Truncated { what: "x" }));
        assert_eq!(r.u8("y"), Ok(1));
        assert_eq!(r.u8("z"), Err(ProtoError::Truncated { what: "z" }));
        assert!(r.rest().is_empty());
    }
}

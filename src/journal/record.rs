//! Record framing of the durable log and the recovery scan.
//!
//! A record is a 32-byte header and a body, padded to 8 bytes:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | body length (u32 LE); **0 = end of data** (segments are zero-filled) |
//! | 4 | kind |
//! | 5 | flags |
//! | 6..8 | reserved, 0 |
//! | 8..12 | epoch (u32 LE): bumped at every recovery, so a stale tail never passes for new |
//! | 12..16 | reserved, 0 |
//! | 16..24 | sequence (u64 LE), strictly increasing within a log |
//! | 24..28 | CRC32C of the body |
//! | 28..32 | CRC32C of bytes 0..28 (the header) |
//!
//! The scan reads records until the end marker or the first record that fails a check (torn
//! write, corruption, non-zero or missing padding, out of order); everything before it is
//! valid, and where and why it stopped is reported so recovery can log the damage. Pure: no
//! I/O.

/// Header size in bytes.
pub const HEADER: usize = 32;
/// Largest body accepted by the scan (a corrupt length must not send it far off).
pub const MAX_BODY: usize = 256 * 1024 * 1024;

/// One record's header fields (what the writer chooses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: u8,
    pub flags: u8,
    pub epoch: u32,
    pub seq: u64,
}

/// Bytes a record with a body of `len` bytes occupies (header + body, 8-byte aligned).
pub fn framed_len(len: usize) -> usize {
    HEADER + len.div_ceil(8) * 8
}

/// Append one record to `out`. Panics only on a body over [`MAX_BODY`] (a broker bug: the
/// broker bounds what it logs by `max_packet_size`).
pub fn encode(out: &mut Vec<u8>, meta: Meta, body: &[u8]) {
    let start = out.len();
    out.resize(start + framed_len(body.len()), 0);
    encode_into(&mut out[start..], meta, body);
}

/// Write one record into `dst` (exactly [`framed_len`] bytes, e.g. a slice of a mapped
/// segment). The padding is written as zeros. The body goes in before the header, so a
/// reader that finds a valid header checksum also finds the body it describes in place
/// (the body checksum still decides).
pub fn encode_into(dst: &mut [u8], meta: Meta, body: &[u8]) {
    assert!(
        !body.is_empty() && body.len() <= MAX_BODY,
        "record body must be 1..=MAX_BODY bytes"
    );
    assert_eq!(dst.len(), framed_len(body.len()), "record slot size");
    let (h, rest) = dst.split_at_mut(HEADER);
    rest[..body.len()].copy_from_slice(body);
    rest[body.len()..].fill(0);
    let mut hd = [0u8; HEADER];
    hd[0..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
    hd[4] = meta.kind;
    hd[5] = meta.flags;
    hd[8..12].copy_from_slice(&meta.epoch.to_le_bytes());
    hd[16..24].copy_from_slice(&meta.seq.to_le_bytes());
    hd[24..28].copy_from_slice(&crc32c::crc32c(body).to_le_bytes());
    let hcrc = crc32c::crc32c(&hd[..28]);
    hd[28..32].copy_from_slice(&hcrc.to_le_bytes());
    h.copy_from_slice(&hd);
}

/// A valid record found by the scan: its header and where its body lies in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub meta: Meta,
    pub offset: usize,
    pub body: std::ops::Range<usize>,
}

/// Why the scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A zero length: the end of the data.
    End,
    /// The buffer ended (a full segment, or a header cut short).
    Exhausted,
    /// The header checksum failed (torn or corrupt header).
    BadHeader,
    /// The body checksum failed, the body or its padding runs past the buffer (torn write),
    /// or the padding is not zeros.
    BadBody,
    /// Reserved bytes set, a length over [`MAX_BODY`], or a sequence not above the previous.
    Invalid,
}

/// The outcome of [`scan`]: every valid record in order, and where and why it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub records: Vec<Found>,
    /// Offset of the first byte after the last valid record: where appending resumes (and
    /// from where recovery zeroes a damaged tail).
    pub end: usize,
    pub stop: Stop,
}

impl Scan {
    /// Whether the scan stopped at damage rather than at the end of data.
    pub fn damaged(&self) -> bool {
        !matches!(self.stop, Stop::End | Stop::Exhausted)
    }
}

/// Read records from `buf` (a segment) until the end marker or the first invalid record.
pub fn scan(buf: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut at = 0;
    let mut last_seq: Option<u64> = None;
    let stop = loop {
        let Some(h) = buf.get(at..at + HEADER) else {
            break Stop::Exhausted;
        };
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if len == 0 {
            break Stop::End;
        }
        let hcrc = u32::from_le_bytes([h[28], h[29], h[30], h[31]]);
        if crc32c::crc32c(&h[..28]) != hcrc {
            break Stop::BadHeader;
        }
        let seq = u64::from_le_bytes(h[16..24].try_into().unwrap_or([0; 8]));
        let reserved = h[6] != 0 || h[7] != 0 || h[12..16] != [0; 4];
        if reserved || len > MAX_BODY || last_seq.is_some_and(|l| seq <= l) {
            break Stop::Invalid;
        }
        let body = at + HEADER..at + HEADER + len;
        let Some(bytes) = buf.get(body.clone()) else {
            break Stop::BadBody;
        };
        let bcrc = u32::from_le_bytes([h[24], h[25], h[26], h[27]]);
        let padding = buf.get(body.end..at + framed_len(len));
        if crc32c::crc32c(bytes) != bcrc || !padding.is_some_and(|p| p.iter().all(|&b| b == 0)) {
            break Stop::BadBody;
        }
        records.push(Found {
            meta: Meta {
                kind: h[4],
                flags: h[5],
                epoch: u32::from_le_bytes([h[8], h[9], h[10], h[11]]),
                seq,
            },
            offset: at,
            body,
        });
        last_seq = Some(seq);
        at += framed_len(len);
    };
    Scan {
        records,
        end: at,
        stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta(seq: u64) -> Meta {
        Meta {
            kind: (seq % 7) as u8,
            flags: 1,
            epoch: 3,
            seq,
        }
    }

    /// A zero-filled segment holding `bodies` as records 1..=n.
    fn segment(bodies: &[Vec<u8>], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, b) in bodies.iter().enumerate() {
            encode(&mut out, meta(i as u64 + 1), b);
        }
        assert!(out.len() <= size);
        out.resize(size, 0);
        out
    }

    #[test]
    fn records_round_trip_and_the_end_marker_stops() {
        let bodies = vec![b"a".to_vec(), vec![7; 8], vec![9; 100]];
        let seg = segment(&bodies, 4096);
        let s = scan(&seg);
        assert_eq!(s.stop, Stop::End);
        assert!(!s.damaged());
        assert_eq!(s.records.len(), 3);
        for (r, b) in s.records.iter().zip(&bodies) {
            assert_eq!(&seg[r.body.clone()], &b[..]);
            assert_eq!(r.offset % 8, 0, "records are 8-byte aligned");
        }
        assert_eq!(s.records[2].meta, meta(3));
        assert_eq!(s.end, framed_len(1) + framed_len(8) + framed_len(100));
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_record_ends_the_scan_before_it() {
        let bodies = vec![vec![1; 10], vec![2; 20], vec![3; 30]];
        let seg = segment(&bodies, 1024);
        let second = framed_len(10);
        for bit in 0..(HEADER + 20) * 8 {
            let mut s = seg.clone();
            s[second + bit / 8] ^= 1 << (bit % 8);
            let got = scan(&s);
            assert_eq!(got.records.len(), 1, "bit {bit}");
            assert_eq!(got.end, second);
            assert!(got.damaged(), "bit {bit}: {:?}", got.stop);
        }
    }

    #[test]
    fn sequence_must_increase() {
        let mut out = Vec::new();
        encode(&mut out, meta(5), b"x");
        encode(&mut out, meta(5), b"y");
        out.resize(512, 0);
        let s = scan(&out);
        assert_eq!((s.records.len(), s.stop), (1, Stop::Invalid));
    }

    proptest! {
        /// The `Vec` model: whatever prefix of the log survives a torn write (the buffer cut
        /// at any byte, the rest zero or garbage), the scan returns exactly the records that
        /// were completely written before the cut, and resumes appending right after them.
        #[test]
        fn torn_tails_keep_exactly_the_complete_records(
            bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..64), 1..20),
            cut_frac in 0.0f64..1.0,
            garbage in any::<bool>(),
            noise in any::<u8>(),
        ) {
            let mut full = Vec::new();
            let mut spans = Vec::new();
            for (i, b) in bodies.iter().enumerate() {
                let at = full.len();
                encode(&mut full, meta(i as u64 + 1), b);
                spans.push((at, at + HEADER + b.len(), full.len()));
            }
            let cut = (full.len() as f64 * cut_frac) as usize;
            let mut seg = full[..cut].to_vec();
            seg.resize(full.len() + 64, if garbage { noise } else { 0 });
            let s = scan(&seg);
            // A record survives when its header and body bytes are all still as written:
            // wholly before the cut, or (zero fill after a cut through zero bytes) restored
            // byte for byte. Padding must be intact too (zeros).
            let complete = spans
                .iter()
                .take_while(|(at, _, end)| seg[*at..*end] == full[*at..*end])
                .count();
            prop_assert_eq!(s.records.len(), complete);
            prop_assert_eq!(s.end, if complete == 0 { 0 } else { spans[complete - 1].2 });
            for (r, b) in s.records.iter().zip(&bodies) {
                prop_assert_eq!(&seg[r.body.clone()], &b[..]);
            }
        }

        /// Arbitrary bytes never panic the scan and never yield a record past the buffer.
        #[test]
        fn random_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..2048)) {
            let s = scan(&buf);
            prop_assert!(s.end <= buf.len());
            for r in &s.records {
                prop_assert!(r.body.end <= buf.len());
            }
        }
    }
}

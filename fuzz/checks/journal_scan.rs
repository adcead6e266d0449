//! The properties of the journal recovery scan ([`ringmq::journal::record::scan`]) on any
//! bytes. Shared, through a `#[path]` include, by the cargo-fuzz target `journal_scan` and by
//! `tests/fuzz_corpus.rs`, which replays the corpus on stable: both check exactly this.
//!
//! Random bytes almost never carry a valid CRC32C, so a fuzzer would seldom get past the first
//! header. Every input is therefore checked twice: as it is, and [`repair`]ed (the checksums of
//! its records recomputed), which leaves lengths, sequences, reserved bytes and padding, the
//! fields the scan has to judge by itself, in the fuzzer's hands.
//!
//! A violation is returned, not panicked, so the corpus replay can list every failing file at
//! once; the fuzz target panics on it unless its property is in `JOURNAL_SCAN_TOLERATE` (to
//! keep fuzzing past a finding already reported).

use ringmq::journal::record::{
    encode, framed_len, scan, Found, Meta, Scan, Stop, HEADER, MAX_BODY,
};

/// A property the scan broke on some input.
#[derive(Debug)]
pub struct Violation {
    /// Short name of the property, e.g. `padding-zero`.
    pub property: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.property, self.detail)
    }
}

fn fail<T>(property: &'static str, detail: String) -> Result<T, Violation> {
    Err(Violation { property, detail })
}

/// Check every property of the scan on `data` and on its CRC-repaired copy.
pub fn check(data: &[u8]) -> Result<(), Violation> {
    let given = check_buf(data).map_err(|v| Violation {
        detail: format!("input as given: {}", v.detail),
        ..v
    });
    given?;
    check_buf(&repair(data)).map_err(|v| Violation {
        detail: format!("input with CRCs repaired: {}", v.detail),
        ..v
    })
}

/// `data` with the body and header CRC of each record rewritten, walking the records as the
/// writer lays them out, until a zero length or a record that would run past the end. Nothing
/// else changes: a bad sequence, reserved byte or padding is still there for the scan to see.
pub fn repair(data: &[u8]) -> Vec<u8> {
    let mut buf = data.to_vec();
    let mut at = 0;
    while let Some(h) = buf.get(at..at + HEADER) {
        let len = le32(&h[0..4]) as usize;
        let body = at + HEADER..at + HEADER + len;
        if len == 0 || body.end > buf.len() {
            break;
        }
        let bcrc = crc32c::crc32c(&buf[body]);
        buf[at + 24..at + 28].copy_from_slice(&bcrc.to_le_bytes());
        let hcrc = crc32c::crc32c(&buf[at..at + 28]);
        buf[at + 28..at + 32].copy_from_slice(&hcrc.to_le_bytes());
        at += framed_len(len);
    }
    buf
}

/// The properties in order; a bad padding is reported only after the rest were checked, so a
/// run tolerating it still tests everything else on the same input.
fn check_buf(buf: &[u8]) -> Result<(), Violation> {
    let s = scan(buf);
    let padding = records_are_what_the_writer_wrote(buf, &s)?;
    stop_is_explained(buf, &s)?;
    prefix_scans_the_same(buf, &s)?;
    appended_records_are_found(buf, &s)?;
    padding.map_or(Ok(()), Err)
}

/// Records start at 0, follow each other without gap or overlap, are 8-byte aligned, lie in
/// the buffer padding included, have strictly increasing sequences, and re-encoding each gives
/// back its bytes exactly, zero padding included (the scan accepts only what `encode` can
/// produce); `end` is the offset after the last record. A non-zero padding byte is returned
/// as `Ok(Some(_))`, for [`check_buf`] to report last.
fn records_are_what_the_writer_wrote(buf: &[u8], s: &Scan) -> Result<Option<Violation>, Violation> {
    let mut padding = None;
    let mut at = 0;
    let mut last: Option<u64> = None;
    for (i, r) in s.records.iter().enumerate() {
        let off = r.offset;
        if off != at || off % 8 != 0 {
            return fail(
                "records-contiguous",
                format!("record {i} at {off}, expected at {at} (8-byte aligned)"),
            );
        }
        if r.body.start != off + HEADER || r.body.is_empty() || r.body.len() > MAX_BODY {
            return fail(
                "body-range",
                format!("record {i} at {off}: body {:?}", r.body),
            );
        }
        let framed = off + framed_len(r.body.len());
        if framed > buf.len() {
            return fail(
                "record-inside-buffer",
                format!(
                    "record {i} at {off}: framed bytes {off}..{framed} run past the buffer ({})",
                    buf.len()
                ),
            );
        }
        if last.is_some_and(|l| r.meta.seq <= l) {
            let seq = r.meta.seq;
            return fail(
                "seq-increasing",
                format!("record {i} at {off}: sequence {seq}"),
            );
        }
        let mut again = Vec::new();
        encode(&mut again, r.meta, &buf[r.body.clone()]);
        if let Some(d) = again
            .iter()
            .zip(&buf[off..framed])
            .position(|(a, b)| a != b)
        {
            let v = Violation {
                property: if off + d < r.body.end {
                    "re-encodes-exactly"
                } else {
                    "padding-zero"
                },
                detail: format!(
                    "record {i} at {off}: byte {} is {:#04x}, encode writes {:#04x}",
                    off + d,
                    buf[off + d],
                    again[d]
                ),
            };
            if v.property != "padding-zero" {
                return Err(v);
            }
            padding = padding.or(Some(v));
        }
        last = Some(r.meta.seq);
        at = framed;
    }
    if s.end != at {
        return fail(
            "end-after-last",
            format!("end {}, last record ends at {at}", s.end),
        );
    }
    Ok(padding)
}

/// The header at `end` really is what the stop reason says: none (`Exhausted`), a zero length
/// (`End`), a bad header CRC, an invalid field, or a bad or cut body (padding included: a
/// non-zero or missing padding byte is damage too, `BadBody`), judged in that order.
fn stop_is_explained(buf: &[u8], s: &Scan) -> Result<(), Violation> {
    let at = s.end;
    let Some(h) = buf.get(at..at + HEADER) else {
        return match s.stop {
            Stop::Exhausted => Ok(()),
            stop => fail(
                "stop-explained",
                format!("{stop:?} but no full header at {at}"),
            ),
        };
    };
    let len = le32(&h[0..4]) as usize;
    let seq = u64::from_le_bytes(std::array::from_fn(|i| h[16 + i]));
    let reserved = h[6..8] != [0; 2] || h[12..16] != [0; 4];
    // A body is whole with its padding, zeroed as `encode` writes it.
    let body_ok = buf
        .get(at + HEADER..at + HEADER + len)
        .is_some_and(|b| crc32c::crc32c(b) == le32(&h[24..28]))
        && buf
            .get(at + HEADER + len..at + framed_len(len))
            .is_some_and(|pad| pad.iter().all(|&p| p == 0));
    let expected = if len == 0 {
        Stop::End
    } else if crc32c::crc32c(&h[..28]) != le32(&h[28..32]) {
        Stop::BadHeader
    } else if reserved || len > MAX_BODY || s.records.last().is_some_and(|r| seq <= r.meta.seq) {
        Stop::Invalid
    } else if !body_ok {
        Stop::BadBody
    } else {
        return fail(
            "stop-explained",
            format!("{:?} before a valid record at {at}", s.stop),
        );
    };
    if s.stop != expected {
        return fail(
            "stop-explained",
            format!("{:?} at {at}, expected {expected:?}", s.stop),
        );
    }
    Ok(())
}

/// Scanning only `buf[..end]` finds the same records and runs out of bytes right there.
fn prefix_scans_the_same(buf: &[u8], s: &Scan) -> Result<(), Violation> {
    let p = scan(&buf[..s.end]);
    if p.records != s.records || p.end != s.end || p.stop != Stop::Exhausted {
        return fail(
            "prefix-same",
            format!(
                "prefix ..{}: {} records, end {}, {:?}; whole buffer: {} records",
                s.end,
                p.records.len(),
                p.end,
                p.stop,
                s.records.len()
            ),
        );
    }
    Ok(())
}

/// Records the writer appends at `end` are found after the old ones: always once the tail
/// from `end` is zeroed (what recovery does), and, after a clean stop (`End`, `Exhausted`),
/// even over the bytes left in place.
fn appended_records_are_found(buf: &[u8], s: &Scan) -> Result<(), Violation> {
    let (fresh, bytes) = fresh_records(buf, s);
    let mut expected = s.records.clone();
    expected.extend(fresh);
    let new_end = s.end + bytes.len();

    let mut zeroed = buf[..s.end].to_vec();
    zeroed.extend_from_slice(&bytes);
    zeroed.resize(buf.len().max(new_end), 0);
    let z = scan(&zeroed);
    let stop = if zeroed.len() >= new_end + HEADER {
        Stop::End
    } else {
        Stop::Exhausted
    };
    if z.records != expected || z.end != new_end || z.stop != stop {
        return fail(
            "append-over-zeroed-tail",
            format!(
                "{} appended at {}: found {} of {} records, end {} (expected {new_end}), {:?}",
                expected.len() - s.records.len(),
                s.end,
                z.records.len(),
                expected.len(),
                z.end,
                z.stop
            ),
        );
    }

    if matches!(s.stop, Stop::End | Stop::Exhausted) {
        let mut kept = buf.to_vec();
        kept.resize(kept.len().max(new_end), 0);
        kept[s.end..new_end].copy_from_slice(&bytes);
        let k = scan(&kept);
        if k.records.get(..expected.len()) != Some(&expected[..]) {
            return fail(
                "append-after-clean-stop",
                format!(
                    "appended at {} after {:?}: found {} records, expected at least {}",
                    s.end,
                    s.stop,
                    k.records.len(),
                    expected.len()
                ),
            );
        }
    }
    Ok(())
}

/// Two records (one if the sequence space runs out, none if it has) that the writer could
/// append after `s`, as `Found`s and as bytes; bodies and fields vary with the input.
fn fresh_records(buf: &[u8], s: &Scan) -> (Vec<Found>, Vec<u8>) {
    let first_seq = match s.records.last() {
        Some(r) => r.meta.seq.checked_add(1),
        None => Some(u64::from(buf.first().copied().unwrap_or(1))),
    };
    let head = &buf[..buf.len().min(13)];
    let bodies: [&[u8]; 2] = [if head.is_empty() { b"x" } else { head }, b"appended"];
    let mut found = Vec::new();
    let mut bytes = Vec::new();
    let mut seq = first_seq;
    for (i, body) in bodies.into_iter().enumerate() {
        let Some(n) = seq else { break };
        let meta = Meta {
            kind: buf.last().copied().unwrap_or(0),
            flags: i as u8,
            epoch: buf.len() as u32,
            seq: n,
        };
        let offset = s.end + bytes.len();
        encode(&mut bytes, meta, body);
        found.push(Found {
            meta,
            offset,
            body: offset + HEADER..offset + HEADER + body.len(),
        });
        seq = n.checked_add(1);
    }
    (found, bytes)
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

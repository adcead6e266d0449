//! The benchmark header every generated payload starts with.
//!
//! Layout (20 bytes, big-endian): publisher id `u32`, sequence `u64`, send timestamp `u64`
//! (nanoseconds on the process-wide monotonic clock, [`now_ns`]). The rest of the payload
//! is filler. Pure: no I/O, no executor.

use std::sync::OnceLock;
use std::time::Instant;

/// Bytes taken by [`Header`] at the front of a payload; the smallest payload the generator
/// sends.
pub const HEADER_LEN: usize = 20;

/// What a subscriber needs to check one delivery and time it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Dense index of the publishing client within the run (0-based).
    pub publisher: u32,
    /// Per-publisher sequence number, starting at 0, without gaps on the sending side.
    pub seq: u64,
    /// [`now_ns`] when the PUBLISH was encoded.
    pub sent_ns: u64,
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `payload`.
    ///
    /// # Panics
    /// If `payload` is shorter than [`HEADER_LEN`] (the CLI enforces the minimum).
    pub fn write(&self, payload: &mut [u8]) {
        payload[0..4].copy_from_slice(&self.publisher.to_be_bytes());
        payload[4..12].copy_from_slice(&self.seq.to_be_bytes());
        payload[12..20].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    /// Reads the header back; `None` if the payload is too short to hold one (a payload
    /// the generator did not produce, counted as an error by the caller).
    pub fn read(payload: &[u8]) -> Option<Header> {
        let h = payload.get(..HEADER_LEN)?;
        Some(Header {
            publisher: u32::from_be_bytes(h[0..4].try_into().ok()?),
            seq: u64::from_be_bytes(h[4..12].try_into().ok()?),
            sent_ns: u64::from_be_bytes(h[12..20].try_into().ok()?),
        })
    }
}

/// Nanoseconds since the first call in this process, on the monotonic clock. Every generator
/// thread shares the same origin, so a timestamp written by one thread can be subtracted by
/// another.
pub fn now_ns() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrips_at_the_front_of_a_payload() {
        let h = Header {
            publisher: 0xDEAD_BEEF,
            seq: u64::MAX - 1,
            sent_ns: 123_456_789,
        };
        let mut payload = vec![0xAA; 64];
        h.write(&mut payload);
        assert_eq!(Header::read(&payload), Some(h));
        assert!(
            payload[HEADER_LEN..].iter().all(|&b| b == 0xAA),
            "filler untouched"
        );
    }

    #[test]
    fn short_payload_has_no_header() {
        assert_eq!(Header::read(&[0u8; HEADER_LEN - 1]), None);
        assert!(Header::read(&[0u8; HEADER_LEN]).is_some());
    }

    #[test]
    fn clock_is_monotonic_across_threads() {
        let a = now_ns();
        let b = std::thread::spawn(now_ns).join().unwrap();
        assert!(b >= a);
    }
}

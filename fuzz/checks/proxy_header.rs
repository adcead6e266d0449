//! The properties of the PROXY protocol header parser (`ringmq::proxy`) on any input, read
//! the way the broker's socket shell reads it. Shared, through a `#[path]` include, by the
//! cargo-fuzz target `proxy_header` and by `tests/fuzz_corpus.rs`.
//!
//! Input layout: byte 0 picks the v2 bound (`232 + b * 16` bytes) and byte 1 the size of
//! each read (1..=16); the rest is the byte stream the peer sends.

use ringmq::proxy::{encode_v1, encode_v2, parse, v1_take, Parse, V1_MAX};

/// Check every property on `data` (see the module docs for its layout).
pub fn check(data: &[u8]) -> Result<(), String> {
    let [max_b, cut_b, stream @ ..] = data else {
        return Ok(());
    };
    let max = 232 + usize::from(*max_b) * 16;
    let cut = usize::from(*cut_b % 16) + 1;
    // Whole-buffer parse: a header never claims more bytes than given.
    let whole = parse(stream, max);
    if let Ok(Parse::Done { len, .. }) = whole {
        if len > stream.len() {
            return Err(format!(
                "[inside] header of {len} bytes in {}",
                stream.len()
            ));
        }
    }
    // Read as the shell reads: never past the header, never over its bound, and the same
    // outcome as the whole-buffer parse once it has all the header's bytes.
    let mut got = 0usize;
    let outcome = loop {
        let step = match parse(&stream[..got], max) {
            Err(e) => break Err(e),
            Ok(Parse::Done { len, header }) => {
                if len != got {
                    return Err(format!("[exact] done at {len} after reading {got}"));
                }
                break Ok((len, header));
            }
            Ok(Parse::NeedExact(0)) => return Err("[progress] NeedExact(0)".into()),
            Ok(Parse::NeedExact(n)) => n,
            Ok(Parse::NeedLine) => v1_take(got, &stream[got..]),
        };
        let n = step.min(cut).min(stream.len() - got);
        if n == 0 {
            return Ok(()); // the peer has not sent the rest (yet)
        }
        got += n;
        if got > max.max(V1_MAX) {
            return Err(format!("[bound] read {got} bytes, bound {max}"));
        }
    };
    match (&outcome, &whole) {
        (
            Ok((len, h)),
            Ok(Parse::Done {
                len: l2,
                header: h2,
            }),
        ) if len == l2 && h == h2 => {}
        (Err(a), Err(b)) if a == b => {}
        _ => {
            return Err(format!(
                "[same] read in pieces {outcome:?}, whole {whole:?}"
            ))
        }
    }
    // A parsed header re-encodes to a header that parses to the same addresses.
    if let Ok((_, h)) = outcome {
        let again = if h.version == 1 {
            encode_v1(h.addrs)
        } else {
            encode_v2(if h.local { None } else { h.addrs }, &[])
        };
        match parse(&again, max) {
            Ok(Parse::Done { header, .. }) if header.addrs == h.addrs => {}
            other => return Err(format!("[re-encode] {h:?} -> {other:?}")),
        }
    }
    Ok(())
}

//! The properties of the WebSocket codec (`ringmq::rt::ws`) on any input. Shared, through a
//! `#[path]` include, by the cargo-fuzz target `ws` and by `tests/fuzz_corpus.rs`.
//!
//! Input layout: byte 0 picks the piece size the stream is fed in (`b % 17 + 1`); byte 1
//! the frame size of the round trip (`b + 1`); the rest is both a received byte stream
//! (de-framed whole and in pieces: same data, same control frames, same verdict), an
//! upgrade request (parsed without panic; an accepted one consumed no more than its input)
//! and a binary message (masked into frames, it de-frames back to itself).

use ringmq::rt::ws::{
    client_frame, parse_upgrade, Control, Deframer, WsError, OP_BINARY, OP_CONTINUATION, OP_PING,
};

type Outcome = (Vec<u8>, Vec<Control>, Result<(), WsError>);

fn deframe_in(input: &[u8], piece: usize, max: u64) -> Outcome {
    let mut d = Deframer::new(max);
    let (mut data, mut ctrl) = (Vec::new(), Vec::new());
    for p in input.chunks(piece) {
        let mut b = p.to_vec();
        match d.deframe(&mut b, &mut ctrl) {
            Ok(n) if n <= b.len() => data.extend_from_slice(&b[..n]),
            Ok(n) => {
                return (
                    data,
                    ctrl,
                    Err(WsError::TooBig {
                        len: n as u64,
                        max: 0,
                    }),
                )
            }
            Err(e) => return (data, ctrl, Err(e)),
        }
    }
    (data, ctrl, Ok(()))
}

/// Check every property on `data` (see the module docs for its layout).
pub fn check(data: &[u8]) -> Result<(), String> {
    let [piece_b, frame_b, rest @ ..] = data else {
        return Ok(());
    };
    let piece = usize::from(*piece_b) % 17 + 1;
    // [split] Feeding the stream in pieces changes nothing but where data is returned;
    // data returned before an error is a prefix of the whole run's.
    let whole = deframe_in(rest, rest.len().max(1), 4096);
    let split = deframe_in(rest, piece, 4096);
    if whole.2 != split.2 || whole.1 != split.1 {
        return Err(format!(
            "[split] whole {:?} vs pieces of {piece} {:?}",
            whole.2, split.2
        ));
    }
    if whole.0 != split.0 && whole.2.is_ok() {
        return Err(format!("[split] data differs in pieces of {piece}"));
    }
    // [upgrade] never panics; an accepted request lies within the input.
    if let Ok(Some(a)) = parse_upgrade(rest, "/mqtt") {
        if a.consumed > rest.len() || !a.response.starts_with(b"HTTP/1.1 101 ") {
            return Err("[upgrade] accepted beyond the input or without 101".into());
        }
    }
    // [round-trip] A message in masked frames, with a ping between two of them, de-frames
    // back to itself.
    let size = usize::from(*frame_b) + 1;
    let mut wire = Vec::new();
    let frames: Vec<&[u8]> = rest.chunks(size).collect();
    for (i, f) in frames.iter().enumerate() {
        let op = if i == 0 { OP_BINARY } else { OP_CONTINUATION };
        let mask = [*frame_b, *piece_b, i as u8, 0x5A];
        wire.extend(client_frame(op, i + 1 == frames.len(), mask, f));
        if i == 0 {
            wire.extend(client_frame(OP_PING, true, mask, &f[..f.len().min(125)]));
        }
    }
    let (got, ctrl, res) = deframe_in(&wire, piece, size as u64);
    if res.is_err() || got != rest || ctrl.len() != usize::from(!rest.is_empty()) {
        return Err(format!(
            "[round-trip] {res:?}, {} of {} bytes",
            got.len(),
            rest.len()
        ));
    }
    Ok(())
}

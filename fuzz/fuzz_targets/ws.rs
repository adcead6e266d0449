//! Fuzz the WebSocket upgrade parser and frame decoder: every input must satisfy the
//! properties in `checks/ws.rs` (shared with the stable corpus replay in `tests/fuzz_corpus.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/ws.rs"]
mod ws;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = ws::check(data) {
        panic!("ws property violated: {violation}");
    }
});

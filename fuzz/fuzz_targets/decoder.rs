//! Fuzz the packet decoder (3.1, 3.1.1, 5.0; server and client side) on any byte stream cut
//! at any points: every input must satisfy the properties in `checks/decoder.rs` (shared
//! with the stable corpus replay in `tests/fuzz_corpus.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/decoder.rs"]
mod decoder;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = decoder::check(data) {
        panic!("decoder property violated: {violation}");
    }
});

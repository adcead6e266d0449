//! Fuzz the SCRAM-SHA-256 client-message parser, raw and as damaged real exchanges: every
//! input must satisfy the properties in `checks/scram.rs` (shared with the stable corpus
//! replay in `tests/fuzz_corpus.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/scram.rs"]
mod scram;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = scram::check(data) {
        panic!("scram property violated: {violation}");
    }
});

//! Fuzz topic name / filter validation, the configured limits and the reference matcher:
//! every input must satisfy the properties in `checks/topic.rs` (shared with the stable
//! corpus replay in `tests/fuzz_corpus.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/topic.rs"]
mod topic;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = topic::check(data) {
        panic!("topic property violated: {violation}");
    }
});

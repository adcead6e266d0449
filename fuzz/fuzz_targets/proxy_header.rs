//! Fuzz the PROXY protocol header parser as the socket shell drives it: every input must
//! satisfy the properties in `checks/proxy_header.rs` (shared with the stable corpus replay
//! in `tests/fuzz_corpus.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/proxy_header.rs"]
mod proxy_header;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = proxy_header::check(data) {
        panic!("proxy_header property violated: {violation}");
    }
});

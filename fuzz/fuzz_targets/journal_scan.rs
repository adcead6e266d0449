//! Fuzz the journal recovery scan: any bytes, as given and with their record CRCs repaired,
//! must satisfy every property in `checks/journal_scan.rs` (shared with the stable corpus
//! replay in `tests/fuzz_corpus.rs`).
//!
//! `JOURNAL_SCAN_TOLERATE=padding-zero,record-inside-buffer` (property names, comma separated)
//! lets a run go on past findings already reported; the stable replay never tolerates.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../checks/journal_scan.rs"]
mod journal_scan;

fn tolerated() -> &'static [String] {
    static TOLERATED: OnceLock<Vec<String>> = OnceLock::new();
    TOLERATED.get_or_init(|| {
        std::env::var("JOURNAL_SCAN_TOLERATE")
            .unwrap_or_default()
            .split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Err(v) = journal_scan::check(data) {
        if !tolerated().iter().any(|p| p == v.property) {
            panic!("journal scan property violated: {v}");
        }
    }
});

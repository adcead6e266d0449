//! The fuzz corpora on stable Rust: every file of every `fuzz/corpus/<target>/` directory goes
//! through the same checks as the cargo-fuzz target of that name (shared by `#[path]`), so CI
//! exercises the seeds and whatever the fuzzer has found without nightly. See fuzz/README.md.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringmq::journal::record::{encode, framed_len, scan, Meta, Stop};

#[path = "../fuzz/checks/decoder.rs"]
mod decoder;
#[path = "../fuzz/checks/journal_scan.rs"]
mod journal_scan;
#[path = "../fuzz/checks/proxy_header.rs"]
mod proxy_header;
#[path = "../fuzz/checks/scram.rs"]
mod scram;
#[path = "../fuzz/checks/topic.rs"]
mod topic;
#[path = "../fuzz/checks/ws.rs"]
mod ws;

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

/// A fuzz target's checks: a message naming the broken property, if any.
type Checks = fn(&[u8]) -> Result<(), String>;

/// The checks of the fuzz target a corpus directory belongs to.
fn checks_for(target: &str) -> Option<Checks> {
    match target {
        "journal_scan" => Some(|data| journal_scan::check(data).map_err(|v| v.to_string())),
        "decoder" => Some(decoder::check),
        "topic" => Some(topic::check),
        "scram" => Some(scram::check),
        "proxy_header" => Some(proxy_header::check),
        "ws" => Some(ws::check),
        _ => None,
    }
}

#[test]
fn every_corpus_file_passes_its_fuzz_target_checks() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    let mut dirs: Vec<_> = std::fs::read_dir(corpus_root())
        .expect("fuzz/corpus exists")
        .map(|e| e.expect("readable corpus entry").path())
        .collect();
    dirs.sort();
    for dir in dirs {
        let target = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let check = checks_for(target)
            .unwrap_or_else(|| panic!("no checks wired for fuzz/corpus/{target}: add it here"));
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("readable corpus dir")
            .map(|e| e.expect("readable corpus entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "fuzz/corpus/{target} is empty");
        for file in files {
            let data = std::fs::read(&file).expect("readable corpus file");
            let name = file
                .strip_prefix(corpus_root())
                .unwrap_or(&file)
                .display()
                .to_string();
            match std::panic::catch_unwind(|| check(&data)) {
                Ok(Ok(())) => {}
                Ok(Err(violation)) => failures.push(format!("{name}: {violation}")),
                Err(_) => failures.push(format!("{name}: panicked (message above)")),
            }
            replayed += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {replayed} corpus files fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A buffer of `n` one-byte records (the most records per byte), then an end marker.
fn tiny_records(n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for seq in 1..=n {
        let meta = Meta {
            kind: 1,
            flags: 0,
            epoch: 1,
            seq,
        };
        encode(&mut out, meta, &[seq as u8]);
    }
    out.resize(out.len() + 64, 0);
    out
}

fn fastest_scan(buf: &[u8], expected: usize) -> Duration {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            let s = scan(buf);
            let took = t.elapsed();
            assert_eq!((s.records.len(), s.stop), (expected, Stop::End));
            took
        })
        .min()
        .unwrap_or_default()
}

/// The scan does linear work: sixteen times the records take far less than 256 times as long
/// (what quadratic work would take); the slack absorbs a busy machine.
#[test]
fn scan_time_grows_linearly_with_the_log() {
    let small = 20_000;
    let (a, b) = (tiny_records(small), tiny_records(16 * small));
    assert_eq!(a.len(), small as usize * framed_len(1) + 64);
    let t1 = fastest_scan(&a, small as usize);
    let t16 = fastest_scan(&b, 16 * small as usize);
    assert!(
        t16 < t1 * 64 + Duration::from_millis(50),
        "20k records: {t1:?}, 320k records: {t16:?}"
    );
}

/// Writes the seed corpus of `journal_scan` (run by hand after changing it:
/// `cargo test --release --test fuzz_corpus -- --ignored`): small valid logs, torn tails and
/// bit flips. Entries the fuzzer adds are named by their SHA-1 and are not touched.
#[test]
#[ignore]
fn write_journal_scan_seeds() {
    let dir = corpus_root().join("journal_scan");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for (name, bytes) in journal_scan_seeds() {
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed written");
    }
}

fn log(seqs: &[u64], bodies: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (&seq, body)) in seqs.iter().zip(bodies).enumerate() {
        let meta = Meta {
            kind: i as u8 + 1,
            flags: (i % 2) as u8,
            epoch: 7,
            seq,
        };
        encode(&mut out, meta, body);
    }
    out
}

fn zero_tail(mut v: Vec<u8>, size: usize) -> Vec<u8> {
    v.resize(size, 0);
    v
}

fn journal_scan_seeds() -> Vec<(String, Vec<u8>)> {
    let bodies: [&[u8]; 5] = [b"a", b"seven b", b"eight by", b"nine byte", &[0x5a; 30]];
    let five = log(&[1, 2, 3, 4, 5], &bodies);
    let five_end = five.len();
    let third = framed_len(1) + framed_len(7);
    let mut seeds = vec![
        ("empty".to_string(), vec![0; 64]),
        ("one-record".into(), zero_tail(log(&[1], &[b"x"]), 96)),
        (
            "five-records-end-marker".into(),
            zero_tail(five.clone(), 512),
        ),
        ("five-records-full-buffer".into(), five.clone()),
        (
            "seq-max".into(),
            zero_tail(log(&[u64::MAX], &[b"last"]), 128),
        ),
        (
            "seq-repeats".into(),
            zero_tail(log(&[4, 4], &[b"a", b"b"]), 128),
        ),
        (
            "seq-goes-down".into(),
            zero_tail(log(&[9, 3], &[b"a", b"b"]), 128),
        ),
    ];
    // A record after the end marker must not be read: the stale tail of an earlier life.
    let mut stale = zero_tail(log(&[1, 2], &[b"a", b"b"]), framed_len(1) * 2 + 32);
    stale.extend(log(&[3], &[b"stale"]));
    seeds.push(("record-after-end-marker".into(), stale));
    // Torn tails: cut inside the third header, inside its body, right after the fourth body
    // (9 bytes, before its padding), inside the last padding; the rest zero, garbage or gone.
    let fourth = third + framed_len(8);
    for (what, cut) in [
        ("header", third + 20),
        ("body", third + 32 + 4),
        ("body-end", fourth + 32 + 9),
        ("padding", five_end - 1),
    ] {
        let mut zero = five[..cut].to_vec();
        zero.resize(five_end + 64, 0);
        seeds.push((format!("torn-in-{what}-zero-fill"), zero));
        let mut junk = five[..cut].to_vec();
        junk.resize(five_end + 64, 0xa7);
        seeds.push((format!("torn-in-{what}-garbage-fill"), junk));
        seeds.push((format!("torn-in-{what}-buffer-ends"), five[..cut].to_vec()));
    }
    // Bit flips in each field of the third record (offset in the record, name).
    for (at, field) in [
        (0, "length"),
        (4, "kind"),
        (6, "reserved"),
        (9, "epoch"),
        (13, "reserved-2"),
        (17, "sequence"),
        (25, "body-crc"),
        (30, "header-crc"),
        (33, "body"),
    ] {
        let mut flipped = zero_tail(five.clone(), five_end + 64);
        flipped[third + at] ^= 0x10;
        seeds.push((format!("bit-flip-{field}"), flipped));
    }
    // The last record's padding (the body is 30 bytes, padded to 32).
    let mut padded = zero_tail(five.clone(), five_end + 64);
    padded[five_end - 1] = 0x01;
    seeds.push(("bit-flip-padding".into(), padded));
    seeds
}

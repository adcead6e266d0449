//! Durable log: appending records into a mapped segment, and the recovery scan.
//!
//! Names: `journal/append/msg/{16B,256B,4096B}` (a QoS 1 message record, what every
//! persisted publish costs on the shard's thread), `journal/append/delivery` (an `ENQ`
//! record, per persistent subscriber), `journal/scan/{16B,256B}` (recovery read speed).
//! Appends run inside a glommio executor on real segment files in the temp directory
//! (process mode: no flushes; the group commit's cost is measured end to end by the
//! benchmark harness). Run: `cargo bench --bench journal`.

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use ringmq::journal::body::{msg_id, DeliveryRec, Rec};
use ringmq::journal::record;
use ringmq::journal::writer::{MsgParts, Settings};
use ringmq::journal::{Journal, Mode};
use ringmq::proto::QoS;

const TOPIC: &str = "sensors/building-7/floor-3/room-12/temperature";
const SIZES: [usize; 3] = [16, 256, 4096];

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ringmq-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

async fn open(name: &str) -> std::rc::Rc<Journal> {
    let s = Settings {
        shard: 0,
        mode: Mode::Process,
        dir: dir(name),
        epoch: 1,
        segment_size: 256 << 20,
        sync_interval: Duration::from_millis(1),
        compact_after: u64::MAX,
    };
    Journal::open(s).await.expect("open journal")
}

fn appends(c: &mut Criterion) {
    let ex = glommio::LocalExecutorBuilder::default()
        .make()
        .expect("executor");
    ex.run(async {
        let j = open("append").await;
        let mut g = c.benchmark_group("journal/append");
        for size in SIZES {
            let payload = Bytes::from(vec![0xA5; size]);
            let parts = MsgParts {
                topic: TOPIC.as_bytes(),
                payload: &payload,
                qos: QoS::AtLeastOnce,
                retain: false,
                props: None,
                origin: b"",
                expiry_ms: 0,
            };
            g.throughput(Throughput::Elements(1));
            g.bench_function(format!("msg/{size}B"), |b| {
                b.iter(|| j.append_msg(false, 0, &parts).expect("append"))
            });
        }
        let d = DeliveryRec {
            sid: 7,
            msg: msg_id(0, 12345),
            qos: 1,
            retain: false,
            sub_ids: Vec::new(),
            share: &[],
        };
        g.bench_function("delivery", |b| {
            b.iter(|| j.append(&Rec::Enq(d.clone())).expect("append"))
        });
        g.finish();
        let _ = std::fs::remove_dir_all(&j.dir);
    });
}

fn scans(c: &mut Criterion) {
    let mut g = c.benchmark_group("journal/scan");
    for size in [16usize, 256] {
        let mut seg = Vec::new();
        let body = vec![0x5Au8; size];
        let mut n = 0u64;
        while seg.len() < 8 << 20 {
            n += 1;
            let meta = record::Meta {
                kind: 1,
                flags: 0,
                epoch: 1,
                seq: n,
            };
            record::encode(&mut seg, meta, &body);
        }
        seg.extend_from_slice(&[0u8; 64]);
        g.throughput(Throughput::Bytes(seg.len() as u64));
        g.bench_function(format!("{size}B"), |b| {
            b.iter(|| {
                let s = record::scan(&seg);
                assert_eq!(s.records.len() as u64, n);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, appends, scans);
criterion_main!(benches);

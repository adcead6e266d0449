//! Codec throughput: decode and encode per packet type.
//!
//! Names are greppable: `codec/{decode,encode}/publish/{16B,256B,4096B,65536B}`,
//! `codec/{decode,encode}/connect/v5`, `codec/{decode,encode}/subscribe/4_filters`.
//! Run: `cargo bench --bench codec`.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};

use ringmq::proto::{
    encode, encode_publish, Connect, Decoder, LastWill, Packet, Properties, ProtocolVersion, QoS,
    SubOptions, Subscribe, Utf8Bytes,
};

/// PUBLISH payload sizes, from sensor readings to large blobs.
const PAYLOAD_SIZES: [usize; 4] = [16, 256, 4096, 65536];
const TOPIC: &str = "sensors/building-7/floor-3/room-12/temperature";
const MAX_PACKET: usize = 1 << 20;

fn encoded(packet: &Packet, v: ProtocolVersion) -> Bytes {
    let mut out = BytesMut::new();
    encode(packet, v, &mut out).expect("encodable");
    out.freeze()
}

fn publish(size: usize) -> Packet {
    Packet::Publish(ringmq::proto::Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: Utf8Bytes::from(TOPIC),
        pkid: 42,
        payload: Bytes::from(vec![0xA5; size]),
        properties: Properties::default(),
    })
}

fn connect() -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 60,
        client_id: Utf8Bytes::from("bench-client-0001"),
        will: Some(LastWill {
            topic: Utf8Bytes::from("clients/bench-client-0001/status"),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties {
                will_delay_interval: Some(5),
                ..Properties::default()
            },
        }),
        username: Some(Utf8Bytes::from("user")),
        password: Some(Bytes::from_static(b"secret")),
        properties: Properties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(100),
            maximum_packet_size: Some(1 << 20),
            user_properties: vec![(Utf8Bytes::from("region"), Utf8Bytes::from("eu"))],
            ..Properties::default()
        },
    }))
}

fn subscribe() -> Packet {
    let filters = [
        "sensors/+/floor-3/#",
        "alerts/#",
        "cmd/bench-client-0001",
        "$share/g/jobs/+",
    ]
    .into_iter()
    .map(|f| (Utf8Bytes::from(f), SubOptions::qos(QoS::AtLeastOnce)))
    .collect();
    Packet::Subscribe(Subscribe {
        pkid: 7,
        filters,
        properties: Properties::default(),
    })
}

/// Decodes `wire` with a decoder in the right state, buffer set up outside the timing.
fn bench_decode(c: &mut Criterion, group: &str, id: &str, wire: Bytes, fresh: fn() -> Decoder) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function(BenchmarkId::from_parameter(id), |b| {
        b.iter_batched(
            || (fresh(), BytesMut::from(&wire[..])),
            |(mut d, mut buf)| d.decode(&mut buf).expect("valid").expect("complete"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_encode(c: &mut Criterion, group: &str, id: &str, packet: &Packet, v: ProtocolVersion) {
    let mut g = c.benchmark_group(group);
    let mut out = BytesMut::with_capacity(MAX_PACKET);
    g.throughput(Throughput::Bytes(encoded(packet, v).len() as u64));
    g.bench_function(BenchmarkId::from_parameter(id), |b| {
        b.iter(|| {
            out.clear();
            encode(packet, v, &mut out).expect("encodable");
        })
    });
    g.finish();
}

fn connected() -> Decoder {
    Decoder::with_version(ProtocolVersion::V311, MAX_PACKET)
}

fn server() -> Decoder {
    Decoder::new(MAX_PACKET)
}

fn publish_benches(c: &mut Criterion) {
    let v = ProtocolVersion::V311;
    for size in PAYLOAD_SIZES {
        let id = format!("{size}B");
        let p = publish(size);
        bench_decode(c, "codec/decode/publish", &id, encoded(&p, v), connected);
        bench_encode(c, "codec/encode/publish", &id, &p, v);
    }
    // The fan-out path: straight from topic and payload slices into a write buffer.
    let mut g = c.benchmark_group("codec/encode_publish");
    let mut out = BytesMut::with_capacity(MAX_PACKET);
    for size in PAYLOAD_SIZES {
        let payload = vec![0xA5; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::from_parameter(format!("{size}B")), |b| {
            b.iter(|| {
                out.clear();
                encode_publish(
                    &mut out,
                    v,
                    TOPIC.as_bytes(),
                    &payload,
                    QoS::AtLeastOnce,
                    false,
                    false,
                    42,
                    None,
                )
                .expect("encodable");
            })
        });
    }
    g.finish();
}

fn control_benches(c: &mut Criterion) {
    let v5 = ProtocolVersion::V5;
    let conn = connect();
    bench_decode(c, "codec/decode/connect", "v5", encoded(&conn, v5), server);
    bench_encode(c, "codec/encode/connect", "v5", &conn, v5);
    let sub = subscribe();
    let v = ProtocolVersion::V311;
    bench_decode(
        c,
        "codec/decode/subscribe",
        "4_filters",
        encoded(&sub, v),
        connected,
    );
    bench_encode(c, "codec/encode/subscribe", "4_filters", &sub, v);
}

criterion_group!(benches, publish_benches, control_benches);
criterion_main!(benches);

//! Writes the seed corpora of the protocol fuzz targets `decoder`, `topic` and `scram` (run
//! by hand after changing them: `cargo test --release --test fuzz_seeds_proto -- --ignored`).
//! Seeds are named `seed-*`; entries the fuzzer adds are named by their SHA-1 and are not
//! touched. The layouts of the inputs are described in `fuzz/checks/<target>.rs`; the corpus
//! is replayed on stable by `tests/fuzz_corpus.rs`.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use ringmq::proto::{
    encode, Auth, ConnAck, Connect, Disconnect, LastWill, Packet, Properties, ProtocolVersion,
    PubResp, Publish, QoS, SubAck, SubOptions, Subscribe, UnsubAck, Unsubscribe,
};

fn corpus(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    dir
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    std::fs::write(corpus(target).join(format!("seed-{name}")), bytes).expect("seed written");
}

fn bytes_of(packets: &[Packet], v: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    for p in packets {
        encode(p, v, &mut out).expect("seed packet encodes");
    }
    out.to_vec()
}

fn connect(v: ProtocolVersion, will: bool, props: Properties) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: v,
        clean_start: true,
        keep_alive: 30,
        client_id: "fuzz".into(),
        will: will.then(|| LastWill {
            topic: "w/t".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::default(),
        }),
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p")),
        properties: props,
    }))
}

fn publish(qos: QoS, pkid: u16, props: Properties) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: qos == QoS::AtLeastOnce,
        topic: "a/b/c".into(),
        pkid,
        payload: Bytes::from_static(b"hello"),
        properties: props,
    })
}

fn resp(pkid: u16, reason: u8) -> PubResp {
    PubResp {
        pkid,
        reason,
        properties: Properties::default(),
    }
}

/// What a client sends in a session, in `v`.
fn client_session(v: ProtocolVersion) -> Vec<Packet> {
    let v5 = v.is_v5();
    let mut pprops = Properties::default();
    let mut sprops = Properties::default();
    if v5 {
        pprops.message_expiry_interval = Some(60);
        pprops.topic_alias = Some(1);
        pprops.content_type = Some("text/plain".into());
        pprops.user_properties = vec![("k".into(), "v".into())];
        sprops.subscription_identifiers = vec![7];
    }
    let opts = |qos| SubOptions {
        qos,
        no_local: v5,
        retain_as_published: v5,
        retain_handling: if v5 { 1 } else { 0 },
    };
    vec![
        Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![
                ("a/+/c".into(), opts(QoS::ExactlyOnce)),
                (
                    "$share/g/x/#".into(),
                    SubOptions {
                        no_local: false,
                        ..opts(QoS::AtMostOnce)
                    },
                ),
            ],
            properties: sprops,
        }),
        publish(QoS::AtMostOnce, 0, Properties::default()),
        publish(QoS::AtLeastOnce, 2, pprops.clone()),
        publish(QoS::ExactlyOnce, 3, pprops),
        Packet::PubAck(resp(9, 0)),
        Packet::PubRec(resp(10, if v5 { 0x10 } else { 0 })),
        Packet::PubRel(resp(3, 0)),
        Packet::PubComp(resp(11, 0)),
        Packet::Unsubscribe(Unsubscribe {
            pkid: 4,
            filters: vec!["a/+/c".into()],
            properties: Properties::default(),
        }),
        Packet::PingReq,
        Packet::Disconnect(Disconnect {
            reason: if v5 { 0x04 } else { 0 },
            properties: Properties::default(),
        }),
    ]
}

/// What a server sends, in `v` (for the established decoders, which take both directions).
fn server_session(v: ProtocolVersion) -> Vec<Packet> {
    let v5 = v.is_v5();
    let mut cprops = Properties::default();
    if v5 {
        cprops.receive_maximum = Some(10);
        cprops.maximum_packet_size = Some(1000);
        cprops.assigned_client_identifier = Some("auto-1".into());
        cprops.topic_alias_maximum = Some(5);
    }
    let mut ps = vec![
        Packet::ConnAck(ConnAck {
            session_present: true,
            code: 0,
            properties: cprops,
        }),
        Packet::SubAck(SubAck {
            pkid: 1,
            codes: vec![0, 1, if v5 { 0x97 } else { 0x80 }],
            properties: Properties::default(),
        }),
        Packet::UnsubAck(UnsubAck {
            pkid: 4,
            codes: if v5 { vec![0, 0x11] } else { vec![] },
            properties: Properties::default(),
        }),
        Packet::PingResp,
    ];
    if v5 {
        let aprops = Properties {
            authentication_method: Some("SCRAM-SHA-256".into()),
            authentication_data: Some(Bytes::from_static(b"r=abc")),
            ..Properties::default()
        };
        ps.push(Packet::Auth(Auth {
            reason: 0x18,
            properties: aprops,
        }));
    }
    ps
}

/// `decoder` inputs: [decoder kind, max size byte, cut seed, stream...].
#[test]
#[ignore]
fn write_decoder_seeds() {
    let size = 255; // 1036 bytes: every seed packet fits
    for (kind, v, name) in [
        (1u8, ProtocolVersion::V311, "v311"),
        (2, ProtocolVersion::V5, "v5"),
        (3, ProtocolVersion::V31, "v31"),
    ] {
        let mut props = Properties::default();
        if v.is_v5() {
            props.session_expiry_interval = Some(100);
            props.receive_maximum = Some(20);
            props.request_problem_information = Some(0);
        }
        let mut server = vec![0, size, 0];
        server.extend(bytes_of(&[connect(v, true, props)], v));
        server.extend(bytes_of(&client_session(v), v));
        write("decoder", &format!("server-{name}-session"), &server);
        let mut cut = server.clone();
        cut[2] = 0x5d;
        write("decoder", &format!("server-{name}-session-cut"), &cut);

        let mut client = vec![kind, size, 7];
        client.extend(bytes_of(&server_session(v), v));
        client.extend(bytes_of(&client_session(v)[1..4], v));
        write("decoder", &format!("established-{name}"), &client);
    }
    // Oversized: a PUBLISH declaring 2 MB against a 64-byte limit.
    write(
        "decoder",
        "declared-over-max",
        &[1, 12, 0, 0x30, 0x80, 0x80, 0x80, 0x01, 0, 1, b'a'],
    );
    // Five-byte remaining length and a truncated CONNECT.
    write(
        "decoder",
        "five-byte-length",
        &[0, 255, 0, 0x10, 0xff, 0xff, 0xff, 0xff, 0x01],
    );
    let c = bytes_of(
        &[connect(ProtocolVersion::V5, false, Properties::default())],
        ProtocolVersion::V5,
    );
    let mut t = vec![0, 255, 3];
    t.extend_from_slice(&c[..c.len() - 3]);
    write("decoder", "truncated-connect", &t);
}

/// `topic` inputs: [length limit byte, level limit byte, `a` '\n' `b`].
#[test]
#[ignore]
fn write_topic_seeds() {
    for (name, a, b) in [
        ("plain", "sport/tennis/player1", "sport/tennis/player1"),
        ("plus", "sport/+/player1", "sport/tennis/player1"),
        ("hash-parent", "sport/#", "sport"),
        ("dollar", "#", "$SYS/uptime"),
        ("empty-levels", "a//+/", "a//b/"),
        ("shared", "$share/group/a/+", "a/b"),
        ("shared-bad", "$share//a", "a"),
        ("misplaced", "a/b#/c", "a+b"),
        ("nul", "a\0b", "a/\0"),
        ("unicode", "é/€/😀", "é/€/😀"),
    ] {
        write("topic", name, format!("\x10\x08{a}\n{b}").as_bytes());
    }
    write(
        "topic",
        "deep",
        format!("\x02\x01{}\nx", "a/".repeat(60)).as_bytes(),
    );
}

/// `scram` inputs: [mode, ...] (even: raw messages split by 0xFF; odd: a damaged exchange).
#[test]
#[ignore]
fn write_scram_seeds() {
    write("scram", "raw-first", b"\x00n,,n=user,r=abcdef");
    write(
        "scram",
        "raw-first-final",
        b"\x00n,,n=user,r=abc\xffc=biws,r=abcxyz,p=AAAA",
    );
    write("scram", "raw-escapes", b"\x00n,,n=u=2Cs=3Der,r=abc");
    write("scram", "raw-cbind", b"\x00y,,n=user,r=abc");
    write("scram", "honest-known", b"\x01abcdefgh");
    write("scram", "honest-unknown", b"\x03abcdefgh");
    write("scram", "damaged-proof", b"\x01abcdefgh\x60\x01");
    write("scram", "damaged-first", b"\x01abcdefgh\x05\x20");
}

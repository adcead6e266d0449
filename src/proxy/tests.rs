//! Unit and property tests of the PROXY header parser. Examples follow HAProxy's
//! "proxy-protocol.txt" (§2.1 version 1, §2.2 version 2).

use super::*;
use proptest::prelude::*;

const MAX: usize = 4096;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Feed `stream` the way the socket shell does (exact reads, v1 line peeks), in pieces no
/// larger than `cuts` say; returns the header, the bytes consumed, or the error.
fn drive(stream: &[u8], cuts: &[usize]) -> Result<Option<(usize, Header)>, ProxyError> {
    let mut got = 0usize;
    let mut cut = cuts.iter().cycle();
    loop {
        let step = match parse(&stream[..got], MAX)? {
            Parse::Done { len, header } => {
                assert_eq!(len, got, "the shell never reads past the header");
                return Ok(Some((len, header)));
            }
            Parse::NeedExact(n) => n,
            Parse::NeedLine => {
                let avail = &stream[got..];
                v1_take(got, avail)
            }
        };
        let piece = (*cut.next().unwrap_or(&usize::MAX)).max(1);
        let n = step.min(piece).min(stream.len() - got);
        if n == 0 {
            return Ok(None);
        }
        got += n;
    }
}

#[test]
fn v1_tcp4_tcp6_unknown() {
    let h = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
    assert_eq!(
        parse(h, MAX),
        Ok(Parse::Done {
            len: h.len(),
            header: Header {
                version: 1,
                addrs: Some((sa("192.168.0.1:56324"), sa("192.168.0.11:443"))),
                local: false,
            }
        })
    );
    let h = b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\nMQTT";
    match parse(h, MAX) {
        Ok(Parse::Done { len, header }) => {
            assert_eq!(len, h.len() - 4);
            assert_eq!(header.source(), Some(sa("[2001:db8::1]:65535")));
        }
        other => panic!("{other:?}"),
    }
    for h in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN ffff::1 ::2 1 2\r\n",
    ] {
        match parse(h, MAX) {
            Ok(Parse::Done { len, header }) => {
                assert_eq!((len, header.addrs), (h.len(), None));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn v1_malformed_lines_are_refused() {
    for bad in [
        &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        b"PROXY TCP4 ::1 ::1 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
        b"PROXY \r\n\r\n\r\n",
        b"PROXY UNKNOWNX\r\n",
    ] {
        assert!(
            matches!(parse(bad, MAX), Err(ProxyError::V1Malformed(_))),
            "{:?}: {:?}",
            String::from_utf8_lossy(bad),
            parse(bad, MAX)
        );
    }
    let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(100));
    assert_eq!(parse(long.as_bytes(), MAX), Err(ProxyError::V1TooLong));
    // A line of exactly 107 bytes is allowed.
    let edge = format!("PROXY UNKNOWN {}\r\n", "x".repeat(107 - 16));
    assert_eq!(edge.len(), V1_MAX);
    assert!(matches!(
        parse(edge.as_bytes(), MAX),
        Ok(Parse::Done { len: 107, .. })
    ));
}

#[test]
fn no_header_is_refused_at_the_first_wrong_byte() {
    // An MQTT CONNECT where a header should be: refused at once, never guessed.
    assert_eq!(parse(&[0x10], MAX), Err(ProxyError::NoHeader));
    assert_eq!(parse(b"PROXZ", MAX), Err(ProxyError::NoHeader));
    assert_eq!(
        parse(b"\r\n\r\n\0\r\nQUIT!", MAX),
        Err(ProxyError::NoHeader)
    );
    assert_eq!(parse(b"", MAX), Ok(Parse::NeedExact(12)));
    assert_eq!(parse(b"PRO", MAX), Ok(Parse::NeedExact(9)));
    assert_eq!(parse(b"\r\n\r", MAX), Ok(Parse::NeedExact(9)));
    assert_eq!(parse(b"PROXY TCP4 1", MAX), Ok(Parse::NeedLine));
}

#[test]
fn v2_proxy_local_tlvs_and_unused_families() {
    let addrs = Some((sa("10.1.2.3:4000"), sa("10.9.9.9:1883")));
    let h = encode_v2(addrs, &[]);
    assert_eq!(h.len(), 16 + 12);
    assert_eq!(
        parse(&h, MAX),
        Ok(Parse::Done {
            len: 28,
            header: Header {
                version: 2,
                addrs,
                local: false
            }
        })
    );
    // TLVs (ALPN "mqtt", a NOOP with padding) are skipped.
    let tlvs = [&[0x01, 0, 4][..], b"mqtt", &[0x04, 0, 3, 0, 0, 0]].concat();
    let h = encode_v2(addrs, &tlvs);
    assert!(
        matches!(parse(&h, MAX), Ok(Parse::Done { len, header }) if len == h.len() && header.addrs == addrs)
    );
    // LOCAL (a health check): the socket's own addresses apply.
    let h = encode_v2(None, &[]);
    assert!(
        matches!(parse(&h, MAX), Ok(Parse::Done { len: 16, header }) if header.local && header.addrs.is_none())
    );
    // UNIX stream and TCP-over-UDP: no TCP client address.
    for fam in [0x31u8, 0x12] {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend([0x21, fam, 0, 216]);
        h.extend([7u8; 216]);
        assert!(matches!(parse(&h, MAX), Ok(Parse::Done { header, .. }) if header.addrs.is_none()));
    }
    let six = Some((sa("[2001:db8::5]:1"), sa("[::1]:2")));
    assert!(
        matches!(parse(&encode_v2(six, &[]), MAX), Ok(Parse::Done { len: 52, header }) if header.addrs == six)
    );
}

#[test]
fn v2_bad_fields_are_refused() {
    let good = encode_v2(Some((sa("1.2.3.4:5"), sa("6.7.8.9:10"))), &[]);
    let with = |at: usize, v: u8| {
        let mut h = good.clone();
        h[at] = v;
        parse(&h, MAX)
    };
    assert_eq!(with(12, 0x11), Err(ProxyError::V2Version(1)));
    assert_eq!(with(12, 0x22), Err(ProxyError::V2Command(2)));
    assert_eq!(with(13, 0x41), Err(ProxyError::V2Family(0x41)));
    assert_eq!(with(13, 0x13), Err(ProxyError::V2Family(0x13)));
    // An IPv6 family in a block sized for IPv4.
    assert_eq!(
        with(13, 0x21),
        Err(ProxyError::V2ShortAddress {
            family: 0x21,
            len: 12
        })
    );
    // Over the bound: refused from the fixed part alone, before reading the body.
    let mut big = V2_SIGNATURE.to_vec();
    big.extend([0x21, 0x11, 0xff, 0xff]);
    assert_eq!(
        parse(&big, MAX),
        Err(ProxyError::V2TooLarge {
            len: 16 + 65535,
            max: MAX
        })
    );
    assert!(matches!(
        parse(&big, V2_SPEC_MAX),
        Ok(Parse::NeedExact(65535))
    ));
}

#[test]
fn header_split_anywhere_parses_the_same_and_leaves_what_follows() {
    let v1 = encode_v1(Some((sa("127.0.0.2:5000"), sa("127.0.0.1:1883"))));
    let v2 = encode_v2(
        Some((sa("127.0.0.3:5001"), sa("127.0.0.1:1883"))),
        b"\x04\x00\x01\x00",
    );
    for h in [v1, v2] {
        let mut stream = h.clone();
        stream.extend([0x10, 0x0c, 0, 4]); // the start of a CONNECT
        for piece in 1..=h.len() {
            let got = drive(&stream, &[piece]).unwrap().unwrap();
            assert_eq!(got.0, h.len(), "piece {piece}");
        }
    }
}

fn any_addrs() -> impl Strategy<Value = Option<(SocketAddr, SocketAddr)>> {
    let v4 = (
        any::<[u8; 4]>(),
        any::<[u8; 4]>(),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(a, b, p, q)| Some((SocketAddr::from((a, p)), SocketAddr::from((b, q)))));
    let v6 = (
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(a, b, p, q)| Some((SocketAddr::from((a, p)), SocketAddr::from((b, q)))));
    prop_oneof![Just(None), v4, v6]
}

proptest! {
    /// encode → parse is the identity (v1 and v2), in any read pieces, with any bytes after.
    #[test]
    fn round_trip_in_any_pieces(
        addrs in any_addrs(),
        v2 in any::<bool>(),
        tlvs in proptest::collection::vec(any::<u8>(), 0..64),
        after in proptest::collection::vec(any::<u8>(), 0..32),
        cuts in proptest::collection::vec(1usize..20, 1..8),
    ) {
        let h = if v2 { encode_v2(addrs, &tlvs) } else { encode_v1(addrs) };
        let mut stream = h.clone();
        stream.extend(&after);
        let (len, header) = drive(&stream, &cuts).unwrap().unwrap();
        prop_assert_eq!(len, h.len());
        prop_assert_eq!(header.version, if v2 { 2 } else { 1 });
        prop_assert_eq!(header.addrs, addrs);
        prop_assert_eq!(header.local, v2 && addrs.is_none());
    }

    /// Any bytes: no panic; a header is never longer than what was given or its bound; what
    /// the shell reads is never more than what belongs to the header.
    #[test]
    fn arbitrary_bytes_are_bounded(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        prefix in 0usize..3,
        cuts in proptest::collection::vec(1usize..40, 1..4),
    ) {
        let mut stream = match prefix {
            0 => Vec::new(),
            1 => b"PROXY ".to_vec(),
            _ => V2_SIGNATURE.to_vec(),
        };
        stream.extend(bytes);
        if let Ok(Some((len, _))) = drive(&stream, &cuts) {
            prop_assert!(len <= stream.len());
            prop_assert!(len <= MAX);
            if stream.starts_with(b"PROXY") {
                prop_assert!(len <= V1_MAX);
            }
        }
        if let Ok(Parse::Done { len, .. }) = parse(&stream, MAX) {
            prop_assert!(len <= stream.len());
        }
    }
}

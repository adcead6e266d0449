//! A raw MQTT 5.0 client for property and reason-code tests: packets are built and parsed
//! with ringmq's own codec (itself tested byte by byte in `proto::codec::spec_tests`), so a
//! test states the properties it sends and reads back every property the broker sent.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ringmq::proto::{
    encode, ConnAck, Connect, Decoder, Disconnect, LastWill, Packet, Properties, ProtocolVersion,
    PubResp, Publish, QoS, SubOptions, Subscribe,
};

use super::{next_within, Next, Raw};

pub struct V5Client {
    pub raw: Raw,
    dec: Decoder,
    buf: BytesMut,
}

/// What the next read found. (Test code: the size of `Packet` does not matter here.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Got {
    Packet(Packet),
    Closed,
    Silent,
}

pub fn connect_packet(id: &str, clean: bool, keep_alive: u16, props: Properties) -> Connect {
    Connect {
        protocol: ProtocolVersion::V5,
        clean_start: clean,
        keep_alive,
        client_id: id.into(),
        will: None,
        username: None,
        password: None,
        properties: props,
    }
}

pub fn will(topic: &str, payload: &'static [u8], props: Properties) -> LastWill {
    LastWill {
        topic: topic.into(),
        payload: Bytes::from_static(payload),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: props,
    }
}

impl V5Client {
    /// Open a connection and send `c`; returns the client and the CONNACK (panics on
    /// anything else).
    pub fn connect_with(addr: SocketAddr, c: Connect) -> (V5Client, ConnAck) {
        let mut me = V5Client {
            raw: Raw::connect(addr),
            dec: Decoder::with_version(ProtocolVersion::V5, 1 << 28),
            buf: BytesMut::new(),
        };
        me.send(&Packet::Connect(Box::new(c)));
        match me.expect() {
            Packet::ConnAck(a) => (me, a),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connect with clean start, keep-alive 60 and `props`; asserts CONNACK 0x00.
    pub fn connect(addr: SocketAddr, id: &str, props: Properties) -> (V5Client, ConnAck) {
        let (c, a) = V5Client::connect_with(addr, connect_packet(id, true, 60, props));
        assert_eq!(a.code, 0, "CONNACK refused: {a:?}");
        (c, a)
    }

    pub fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        encode(p, ProtocolVersion::V5, &mut out).expect("encode");
        self.raw.send(&out);
    }

    /// The next packet within `within`, a close, or silence.
    pub fn next(&mut self, within: Duration) -> Got {
        loop {
            match self.dec.decode(&mut self.buf) {
                Ok(Some(p)) => return Got::Packet(p),
                Ok(None) => {}
                Err(e) => panic!("broker sent an undecodable packet: {e}"),
            }
            match next_within(&mut self.raw, within) {
                Next::Packet(bytes) => self.buf.extend_from_slice(&bytes),
                Next::Closed => return Got::Closed,
                Next::Silent => return Got::Silent,
            }
        }
    }

    /// The next packet (5 s at most); panics on close or silence.
    pub fn expect(&mut self) -> Packet {
        match self.next(Duration::from_secs(5)) {
            Got::Packet(p) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// The next PUBLISH, acknowledging it when QoS 1.
    pub fn expect_publish(&mut self) -> Publish {
        match self.expect() {
            Packet::Publish(p) => {
                if p.qos == QoS::AtLeastOnce {
                    self.send(&Packet::PubAck(resp(p.pkid)));
                }
                p
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Expect a DISCONNECT from the broker and then the close; returns its reason code.
    pub fn expect_disconnect(&mut self) -> Disconnect {
        loop {
            match self.next(Duration::from_secs(5)) {
                Got::Packet(Packet::Disconnect(d)) => match self.next(Duration::from_secs(5)) {
                    Got::Closed => return d,
                    other => panic!("expected close after DISCONNECT, got {other:?}"),
                },
                // Acks for what the test sent before the violation may come first.
                Got::Packet(Packet::PubAck(_) | Packet::PubRec(_) | Packet::SubAck(_)) => {}
                other => panic!("expected DISCONNECT, got {other:?}"),
            }
        }
    }

    /// Nothing arrives for `dur` and the connection stays open.
    pub fn expect_silence(&mut self, dur: Duration) {
        match self.next(dur) {
            Got::Silent => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    pub fn subscribe(&mut self, pkid: u16, filter: &str, qos: QoS, props: Properties) -> Vec<u8> {
        self.send(&Packet::Subscribe(Subscribe {
            pkid,
            filters: vec![(filter.into(), SubOptions::qos(qos))],
            properties: props,
        }));
        match self.expect() {
            Packet::SubAck(a) => {
                assert_eq!(a.pkid, pkid);
                a.codes
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub fn publish(&mut self, topic: &str, qos: QoS, pkid: u16, payload: &[u8], props: Properties) {
        self.send(&Packet::Publish(publish(topic, qos, pkid, payload, props)));
    }
}

pub fn publish(topic: &str, qos: QoS, pkid: u16, payload: &[u8], props: Properties) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: Bytes::copy_from_slice(payload),
        properties: props,
    }
}

pub fn resp(pkid: u16) -> PubResp {
    PubResp {
        pkid,
        reason: 0,
        properties: Properties::default(),
    }
}

pub fn disconnect(reason: u8, props: Properties) -> Packet {
    Packet::Disconnect(Disconnect {
        reason,
        properties: props,
    })
}

//! What a 5.0 connection negotiated in CONNECT/CONNACK, and the per-connection state that
//! comes with it: topic aliases in both directions, the client's Maximum Packet Size and
//! whether it wants problem information. Owned by the [`Conn`]; 3.1.x connections carry
//! none of it (`Conn::v5` is `None`), so they pay one pointer.
//!
//! Also builds the CONNACK properties and the per-delivery PUBLISH properties (Message
//! Expiry Interval reduced by the time waited, the topic alias).

use ahash::AHashMap;

use super::*;
use crate::config::{Config, PROTOCOL_MAX_PACKET};
use crate::proto::Properties;

/// Per-connection 5.0 state. Boxed in [`Conn`].
pub struct V5 {
    /// The client's Maximum Packet Size: nothing larger is ever sent to it [MQTT-3.1.2-24].
    pub max_packet_out: usize,
    /// The client's Topic Alias Maximum: aliases the broker may assign when sending.
    alias_out_max: u16,
    /// Client-set aliases: alias − 1 → topic. Grown on first use, at most our maximum.
    aliases_in: RefCell<Vec<Utf8Bytes>>,
    /// Broker-assigned aliases for this connection: topic → alias. Allocated on first use.
    aliases_out: RefCell<Option<Box<AHashMap<Utf8Bytes, u16>>>>,
}

/// Why an incoming PUBLISH's topic alias was refused: the DISCONNECT reason code.
pub type AliasViolation = u8;

impl V5 {
    pub fn from_connect(p: &Properties) -> V5 {
        V5 {
            max_packet_out: p
                .maximum_packet_size
                .map_or(PROTOCOL_MAX_PACKET, |m| m as usize),
            alias_out_max: p.topic_alias_maximum.unwrap_or(0),
            aliases_in: RefCell::new(Vec::new()),
            aliases_out: RefCell::new(None),
        }
    }

    /// Resolve (and record) the topic alias of an incoming PUBLISH [MQTT-3.3.2-7..12]:
    /// alias 0 or above our maximum → 0x94; an empty topic with an unknown alias → 0x82.
    pub fn resolve_alias(
        &self,
        topic: &mut Utf8Bytes,
        alias: u16,
        max: u16,
    ) -> Result<(), AliasViolation> {
        if alias == 0 || alias > max {
            return Err(0x94);
        }
        let i = usize::from(alias - 1);
        let mut map = self.aliases_in.borrow_mut();
        if topic.is_empty() {
            match map.get(i) {
                Some(t) if !t.is_empty() => *topic = t.clone(),
                _ => return Err(0x82),
            }
        } else {
            if map.len() <= i {
                map.resize(i + 1, Utf8Bytes::default());
            }
            // A compact copy: the decoded topic is a slice of the whole read buffer.
            map[i] = Utf8Bytes::from(topic.as_str());
        }
        Ok(())
    }

    /// Take back the alias a PUBLISH that was not sent would have established.
    pub fn undo_alias(&self, po: &PublishOut) {
        if let (Some(topic), Some(map)) = (po.assigned, self.aliases_out.borrow_mut().as_mut()) {
            map.remove(topic.as_str());
        }
    }

    /// The alias to use for `topic` when sending: `(alias, first)` where `first` means the
    /// topic must still be sent alongside it. `None` when the client takes no aliases or
    /// all are in use (aliases are assigned first come, for the life of the connection).
    fn alias_for(&self, topic: &Utf8Bytes) -> Option<(u16, bool)> {
        if self.alias_out_max == 0 {
            return None;
        }
        let mut slot = self.aliases_out.borrow_mut();
        let map = slot.get_or_insert_with(Box::default);
        if let Some(a) = map.get(topic.as_str()) {
            return Some((*a, false));
        }
        if map.len() >= usize::from(self.alias_out_max) {
            return None;
        }
        let a = map.len() as u16 + 1;
        map.insert(Utf8Bytes::from(topic.as_str()), a);
        Some((a, true))
    }
}

/// What a PUBLISH to a 5.0 client carries besides the message: its properties (the
/// publisher's, with the Message Expiry Interval reduced to what is left, plus this
/// subscriber's subscription identifiers and topic alias) and the topic to put in the packet
/// (empty when an established alias stands for it). Small on purpose: it is built per
/// message per subscriber, so changed properties are boxed, never moved around inline.
pub struct PublishOut<'a> {
    pub topic: &'a [u8],
    props: OutProps<'a>,
    /// An alias assigned by this very packet (undone if the packet is not sent).
    assigned: Option<&'a Utf8Bytes>,
}

enum OutProps<'a> {
    None,
    Borrowed(&'a Properties),
    Owned(Box<Properties>),
}

impl PublishOut<'_> {
    pub fn props(&self) -> Option<&Properties> {
        match &self.props {
            OutProps::None => None,
            OutProps::Borrowed(p) => Some(p),
            OutProps::Owned(p) => Some(p),
        }
    }

    /// The properties to change: a copy of the publisher's on first change.
    fn props_mut(&mut self) -> &mut Properties {
        if !matches!(self.props, OutProps::Owned(_)) {
            let copy = Box::new(self.props().cloned().unwrap_or_default());
            self.props = OutProps::Owned(copy);
        }
        match &mut self.props {
            OutProps::Owned(p) => p,
            _ => unreachable!("just made owned"),
        }
    }
}

/// The topic and properties to send delivery `d` with on a connection of `version`
/// (5.0 state `v5`). 3.1.x: the topic, no properties.
#[inline]
pub fn publish_out<'a>(
    version: ProtocolVersion,
    v5: Option<&V5>,
    d: &'a Delivery,
    now: &crate::rt::LazyNow,
) -> PublishOut<'a> {
    let out = PublishOut {
        topic: d.msg.topic.as_bytes(),
        props: OutProps::None,
        assigned: None,
    };
    if !version.is_v5() {
        return out;
    }
    publish_out_v5(out, v5, d, now)
}

fn publish_out_v5<'a>(
    mut out: PublishOut<'a>,
    v5: Option<&V5>,
    d: &'a Delivery,
    now: &crate::rt::LazyNow,
) -> PublishOut<'a> {
    let m = &*d.msg;
    if let Some(p) = m.props.as_ref() {
        out.props = OutProps::Borrowed(p);
    }
    if let Some(left) = m.expiry.and_then(|_| m.expiry_left(now.get())) {
        // [MQTT-3.3.2-6] the interval sent is what is left of it.
        out.props_mut().message_expiry_interval = Some(left);
    }
    if d.has_sub_ids() {
        // [MQTT-3.3.4-3] every matching subscription's identifier.
        out.props_mut().subscription_identifiers = d.sub_ids().collect();
    }
    if let Some((alias, first)) = v5.and_then(|v| v.alias_for(&m.topic)) {
        out.props_mut().topic_alias = Some(alias);
        if first {
            out.assigned = Some(&m.topic);
        } else {
            out.topic = b"";
        }
    }
    out
}

/// What the CONNACK tells a 5.0 client about this server (§3.2.2.3).
pub struct ConnackFacts<'a> {
    pub cfg: &'a Config,
    /// Session Expiry Interval the client asked for, and what it got.
    pub expiry_asked: u32,
    pub expiry_granted: u32,
    /// The client id, when the broker assigned it [MQTT-3.2.2-16].
    pub assigned: Option<&'a Utf8Bytes>,
    /// Keep-alive, when the broker changed the client's [MQTT-3.2.2-21].
    pub server_keep_alive: Option<u16>,
    /// The client set Request Response Information to 1.
    pub wants_response_info: bool,
    pub client_id: &'a str,
}

pub fn connack_properties(f: &ConnackFacts) -> Properties {
    let cfg = f.cfg;
    let mut p = Properties::default();
    if f.expiry_granted != f.expiry_asked {
        p.session_expiry_interval = Some(f.expiry_granted);
    }
    if cfg.receive_maximum != u16::MAX {
        p.receive_maximum = Some(cfg.receive_maximum);
    }
    if cfg.maximum_qos < 2 {
        p.maximum_qos = Some(cfg.maximum_qos);
    }
    if !cfg.retain_available {
        p.retain_available = Some(0);
    }
    if cfg.max_packet_size < PROTOCOL_MAX_PACKET {
        p.maximum_packet_size = Some(cfg.max_packet_size as u32);
    }
    p.assigned_client_identifier = f.assigned.cloned();
    if cfg.topic_alias_maximum > 0 {
        p.topic_alias_maximum = Some(cfg.topic_alias_maximum);
    }
    p.wildcard_subscription_available = Some(1);
    p.subscription_identifier_available = Some(1);
    p.shared_subscription_available = Some(1);
    p.server_keep_alive = f.server_keep_alive;
    if f.wants_response_info && !cfg.response_information.is_empty() {
        let info = cfg.response_information.replace("%c", f.client_id);
        p.response_information = Some(Utf8Bytes::from(info));
    }
    p
}

/// The Session Expiry Interval a connection gets: 5.0 asks for one (absent = 0), 3.1.x
/// clean session 0 means "as long as the server keeps sessions", capped by
/// `max_session_expiry` either way. 0xFFFFFFFF means never.
pub fn session_expiry(version: ProtocolVersion, clean: bool, asked: u32, max: u32) -> u32 {
    if version.is_v5() {
        asked.min(max)
    } else if clean {
        0
    } else {
        max
    }
}

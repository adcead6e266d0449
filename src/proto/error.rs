//! Errors of the MQTT codec.
//!
//! Every decode error means the connection must be closed: the stream position is lost and the
//! peer violated the protocol. Before closing, the broker may owe the peer a CONNACK (when the
//! CONNECT itself was bad, see [`ProtoError::connack_code`]) or, in 5.0, a DISCONNECT with a
//! reason code ([`ProtoError::disconnect_reason`]).
//!
//! Spec ids in brackets (`[MQTT-x.y.z-n]`) are normative statements; where the rule has no id
//! the message cites the section (`§x.y.z`). Ids follow MQTT 3.1.1 numbering unless the rule
//! exists only in 5.0. "Need more bytes" is not an error: the decoder returns `Ok(None)`.

use thiserror::Error;

use super::packet::ProtocolVersion;
use super::topic::TopicError;

/// A malformed packet, a protocol violation, or a packet the encoder cannot represent.
///
/// Created by the codec; owned by the connection that hit it (which then closes).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtoError {
    // ---- framing -------------------------------------------------------------------------
    /// The fixed header announces a packet larger than the configured maximum packet size.
    /// Detected from the header alone, before the body is buffered.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes (§3.1.2.11.4)")]
    PacketTooLarge {
        /// Total packet size announced by the fixed header (header included).
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// A variable byte integer (the remaining length, or a 5.0 property length/value) has a
    /// continuation bit set on its fourth byte.
    #[error("malformed packet: variable byte integer ({what}) is longer than 4 bytes (§1.5.5)")]
    MalformedVarInt {
        /// Which integer.
        what: &'static str,
    },
    /// A variable byte integer does not use the minimum number of bytes.
    #[error("[MQTT-1.5.5-1] variable byte integer ({what}) is not minimally encoded")]
    NonMinimalVarInt {
        /// Which integer.
        what: &'static str,
    },
    /// Control packet type 0, or 15 (AUTH) outside MQTT 5.0.
    #[error("malformed packet: reserved control packet type {0} (§2.2.1)")]
    ReservedPacketType(u8),
    /// The low nibble of the fixed header is not what the packet type requires.
    #[error(
        "[MQTT-2.2.2-2] invalid fixed header flags {flags:#06b} for packet type {packet_type}"
    )]
    InvalidHeaderFlags {
        /// Control packet type.
        packet_type: u8,
        /// The flags received.
        flags: u8,
    },
    /// A field runs past the end of the packet as given by the remaining length.
    #[error("malformed packet: {what} extends past the remaining length")]
    Truncated {
        /// Which field.
        what: &'static str,
    },
    /// Bytes are left over after all of a packet's fields were read.
    #[error("malformed packet: {extra} unexpected bytes after the fields of {packet}")]
    TrailingBytes {
        /// Packet name.
        packet: &'static str,
        /// Number of leftover bytes.
        extra: usize,
    },
    /// A UTF-8 string field is not well-formed UTF-8.
    #[error("[MQTT-1.5.3-1] {what} is not well-formed UTF-8")]
    InvalidUtf8 {
        /// Which field.
        what: &'static str,
    },
    /// A UTF-8 string field contains U+0000.
    #[error("[MQTT-1.5.3-2] {what} contains the null character U+0000")]
    NullCharacter {
        /// Which field.
        what: &'static str,
    },

    // ---- connection state ----------------------------------------------------------------
    /// The first packet from a client is not CONNECT.
    #[error("[MQTT-3.1.0-1] first packet must be CONNECT, got packet type {0}")]
    FirstPacketNotConnect(u8),
    /// A CONNECT after the connection is established (or sent to a client).
    #[error("[MQTT-3.1.0-2] CONNECT received on an established connection")]
    UnexpectedConnect,
    /// A server-side decoder received a packet only a server may send
    /// (CONNACK, SUBACK, UNSUBACK, PINGRESP).
    #[error("protocol error: packet type {0} is only sent by a server (§2.1.2)")]
    ServerOnlyPacket(u8),

    // ---- CONNECT -------------------------------------------------------------------------
    /// Protocol name is neither "MQTT" nor "MQIsdp". No CONNACK is sent.
    #[error("[MQTT-3.1.2-1] protocol name is neither \"MQTT\" nor \"MQIsdp\"")]
    InvalidProtocolName,
    /// Protocol level not supported (or not matching the protocol name).
    #[error("[MQTT-3.1.2-2] unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// CONNECT flags bit 0 is set.
    #[error("[MQTT-3.1.2-3] CONNECT reserved flag (bit 0) is set")]
    ConnectReservedFlag,
    /// Will QoS is non-zero although the will flag is 0.
    #[error("[MQTT-3.1.2-13] will QoS is non-zero but the will flag is 0")]
    WillQoSWithoutWill,
    /// Will retain is set although the will flag is 0.
    #[error("[MQTT-3.1.2-15] will retain is set but the will flag is 0")]
    WillRetainWithoutWill,
    /// Will QoS is 3.
    #[error("[MQTT-3.1.2-14] will QoS is 3")]
    InvalidWillQoS,
    /// Password flag without user name flag (3.1.x only; 5.0 allows it).
    #[error("[MQTT-3.1.2-22] password flag is set without the user name flag")]
    PasswordWithoutUsername,
    /// Zero-length client identifier with clean session 0 (3.1.1).
    #[error("[MQTT-3.1.3-8] zero-length client identifier requires clean session 1")]
    EmptyClientIdWithoutCleanSession,
    /// Zero-length client identifier in MQTT 3.1, which requires 1 to 23 characters.
    #[error("identifier rejected: MQTT 3.1 requires a non-empty client identifier (3.1 §3.1)")]
    EmptyClientIdV31,
    /// Authentication data without an authentication method (5.0).
    #[error("protocol error: authentication data without an authentication method (§3.1.2.11.10)")]
    AuthDataWithoutMethod,

    // ---- PUBLISH -------------------------------------------------------------------------
    /// PUBLISH with both QoS bits set.
    #[error("[MQTT-3.3.1-4] PUBLISH QoS is 3")]
    InvalidQoS,
    /// DUP flag on a QoS 0 PUBLISH.
    #[error("[MQTT-3.3.1-2] DUP flag set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    /// A packet identifier of 0.
    #[error("[MQTT-2.3.1-1] packet identifier is 0")]
    ZeroPacketId,
    /// Empty topic name (in 5.0: and no topic alias).
    #[error("[MQTT-4.7.3-1] topic name is empty (and carries no topic alias)")]
    EmptyTopicName,
    /// A topic name (PUBLISH or will topic) breaks the topic rules.
    #[error("invalid topic name: {0}")]
    InvalidTopicName(TopicError),
    /// Topic alias property with value 0 (5.0).
    #[error("[MQTT-3.3.2-8] topic alias 0 is not permitted")]
    TopicAliasZero,
    /// A PUBLISH from a client carries a subscription identifier (5.0).
    #[error("[MQTT-3.3.4-6] PUBLISH from a client carries a subscription identifier")]
    SubscriptionIdFromClient,
    /// The response topic property contains wildcards or is otherwise not a topic name (5.0).
    #[error("[MQTT-3.3.2-14] invalid response topic: {0}")]
    InvalidResponseTopic(TopicError),

    // ---- SUBSCRIBE / UNSUBSCRIBE ---------------------------------------------------------
    /// SUBSCRIBE without any topic filter.
    #[error("[MQTT-3.8.3-3] SUBSCRIBE carries no topic filter")]
    EmptySubscribe,
    /// UNSUBSCRIBE without any topic filter.
    #[error("[MQTT-3.10.3-2] UNSUBSCRIBE carries no topic filter")]
    EmptyUnsubscribe,
    /// A topic filter breaks the wildcard or shared subscription rules.
    #[error("invalid topic filter: {0}")]
    InvalidTopicFilter(TopicError),
    /// Reserved bits of the requested QoS (3.1.x) / subscription options (5.0) byte are set.
    #[error("[MQTT-3-8.3-4] reserved bits set in subscription options {0:#04x}")]
    SubscribeReservedBits(u8),
    /// Requested QoS 3.
    #[error("[MQTT-3-8.3-4] requested QoS is 3")]
    InvalidRequestedQoS,
    /// Retain handling 3 (5.0).
    #[error("protocol error: retain handling 3 (§3.8.3.1)")]
    InvalidRetainHandling,
    /// No Local set on a shared subscription (5.0).
    #[error("[MQTT-3.8.3-4] no local set on a shared subscription")]
    NoLocalOnSharedSubscription,

    // ---- acknowledgements ----------------------------------------------------------------
    /// CONNACK acknowledge flags bits 7-1 are not zero.
    #[error("malformed packet: CONNACK reserved flag bits are set ({0:#04x}) (§3.2.2.1)")]
    ConnAckReservedFlags(u8),
    /// CONNACK with session present and a non-zero return code.
    #[error("[MQTT-3.2.2-4] session present set with a non-zero return code")]
    SessionPresentOnError,
    /// A reason/return code not defined for this packet type.
    #[error("{rule} reason code {code:#04x} is not allowed on {packet}")]
    InvalidReasonCode {
        /// Citation: the normative statement (`[MQTT-x]`) or section (`(§x)`) listing the codes.
        rule: &'static str,
        /// Packet name.
        packet: &'static str,
        /// The code received.
        code: u8,
    },
    /// SUBACK (or 5.0 UNSUBACK) without any reason code.
    #[error("protocol error: {0} carries no reason code (§3.9.3)")]
    NoReasonCodes(&'static str),

    // ---- 5.0 properties ------------------------------------------------------------------
    /// A property identifier that is unknown or not allowed on this packet.
    #[error("malformed packet: property {id:#04x} is not allowed on {packet} (§2.2.2.2)")]
    PropertyNotAllowed {
        /// Property identifier.
        id: u8,
        /// Packet (or "will properties").
        packet: &'static str,
    },
    /// A property that may appear once appears twice.
    #[error("protocol error: property {id:#04x} appears more than once in {packet} (§2.2.2.2)")]
    DuplicateProperty {
        /// Property identifier.
        id: u8,
        /// Packet (or "will properties").
        packet: &'static str,
    },
    /// A property value outside its defined range (e.g. a boolean byte of 2, receive maximum 0).
    #[error("protocol error: property {id:#04x} has invalid value {value} (§3)")]
    InvalidPropertyValue {
        /// Property identifier.
        id: u8,
        /// The value received.
        value: u32,
    },
    /// Subscription identifier 0.
    #[error("protocol error: subscription identifier 0 (§3.8.2.1.2)")]
    SubscriptionIdZero,

    // ---- encoding ------------------------------------------------------------------------
    /// The encoded packet would exceed the protocol maximum remaining length (268,435,455).
    #[error("cannot encode: remaining length {0} exceeds 268,435,455 (§2.2.3)")]
    EncodeTooLarge(usize),
    /// A string or binary field longer than 65,535 bytes cannot be length-prefixed.
    #[error("cannot encode: {what} is {len} bytes, longer than 65,535 (§1.5.3)")]
    FieldTooLong {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A variable byte integer value above 268,435,455 (e.g. a subscription identifier).
    #[error("cannot encode: {what} value {value} exceeds 268,435,455 (§1.5.5)")]
    VarIntOutOfRange {
        /// Which value.
        what: &'static str,
        /// The value.
        value: u32,
    },
}

/// How the 5.0 spec classifies an error (§4.13), which picks the reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Malformed,
    ProtocolError,
    TooLarge,
    TopicName,
    TopicFilter,
    TopicAlias,
    ClientId,
    Unsupported,
    /// Not a received-packet error (encoder side).
    Local,
}

impl ProtoError {
    fn class(&self) -> Class {
        use ProtoError::*;
        match self {
            PacketTooLarge { .. } => Class::TooLarge,
            MalformedVarInt { .. }
            | NonMinimalVarInt { .. }
            | ReservedPacketType(_)
            | InvalidHeaderFlags { .. }
            | Truncated { .. }
            | TrailingBytes { .. }
            | InvalidUtf8 { .. }
            | NullCharacter { .. }
            | InvalidProtocolName
            | ConnectReservedFlag
            | WillQoSWithoutWill
            | WillRetainWithoutWill
            | InvalidWillQoS
            | PasswordWithoutUsername
            | InvalidQoS
            | DupOnQoS0
            | SubscribeReservedBits(_)
            | InvalidRequestedQoS
            | ConnAckReservedFlags(_)
            | PropertyNotAllowed { .. } => Class::Malformed,
            FirstPacketNotConnect(_)
            | UnexpectedConnect
            | ServerOnlyPacket(_)
            | AuthDataWithoutMethod
            | ZeroPacketId
            | EmptyTopicName
            | SubscriptionIdFromClient
            | InvalidResponseTopic(_)
            | EmptySubscribe
            | EmptyUnsubscribe
            | InvalidRetainHandling
            | NoLocalOnSharedSubscription
            | SessionPresentOnError
            | InvalidReasonCode { .. }
            | NoReasonCodes(_)
            | DuplicateProperty { .. }
            | InvalidPropertyValue { .. }
            | SubscriptionIdZero => Class::ProtocolError,
            InvalidTopicName(_) => Class::TopicName,
            InvalidTopicFilter(_) => Class::TopicFilter,
            TopicAliasZero => Class::TopicAlias,
            EmptyClientIdWithoutCleanSession | EmptyClientIdV31 => Class::ClientId,
            UnsupportedProtocolLevel(_) => Class::Unsupported,
            EncodeTooLarge(_) | FieldTooLong { .. } | VarIntOutOfRange { .. } => Class::Local,
        }
    }

    /// True for errors the 5.0 spec calls a Malformed Packet (reason 0x81).
    pub fn is_malformed(&self) -> bool {
        self.class() == Class::Malformed
    }

    /// The CONNACK return code (3.1.x) / reason code (5.0) to send before closing, when the
    /// CONNECT packet itself was rejected. `version` is what the decoder learnt from the
    /// CONNECT ([`Decoder::version`](super::Decoder::version) is set as soon as the protocol
    /// level is parsed, even if a later field fails).
    ///
    /// `None` means close without a CONNACK: a wrong protocol name [MQTT-3.1.2-1], and every
    /// 3.1.x error the spec does not give a return code for.
    pub fn connack_code(&self, version: Option<ProtocolVersion>) -> Option<u8> {
        let v5 = version == Some(ProtocolVersion::V5);
        match self.class() {
            // [MQTT-3.1.2-2]: 0x01 "unacceptable protocol version"; a level we do not know is
            // answered in the 3.1.1 format, which every client can parse.
            Class::Unsupported => Some(if v5 { 0x84 } else { 0x01 }),
            // [MQTT-3.1.3-8] / [MQTT-3.1.3-9]: 0x02 "identifier rejected".
            Class::ClientId => Some(if v5 { 0x85 } else { 0x02 }),
            _ if !v5 => None,
            _ if *self == ProtoError::InvalidProtocolName => None,
            Class::Malformed => Some(0x81),
            Class::ProtocolError | Class::TopicAlias | Class::TopicFilter => Some(0x82),
            Class::TooLarge => Some(0x95),
            Class::TopicName => Some(0x90),
            Class::Local => Some(0x83),
        }
    }

    /// The 5.0 DISCONNECT reason code to send before closing after this error (§4.13).
    pub fn disconnect_reason(&self) -> u8 {
        match self.class() {
            Class::Malformed => 0x81,
            Class::ProtocolError | Class::Unsupported | Class::ClientId => 0x82,
            Class::TooLarge => 0x95,
            Class::TopicName => 0x90,
            Class::TopicFilter => 0x8F,
            Class::TopicAlias => 0x94,
            Class::Local => 0x83,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProtocolVersion::*;

    #[test]
    fn connack_codes() {
        // MQTT-3.1.2-2
        let e = ProtoError::UnsupportedProtocolLevel(6);
        assert_eq!(e.connack_code(None), Some(0x01));
        assert_eq!(e.connack_code(Some(V311)), Some(0x01));
        assert_eq!(e.connack_code(Some(V5)), Some(0x84));
        // MQTT-3.1.3-8
        let e = ProtoError::EmptyClientIdWithoutCleanSession;
        assert_eq!(e.connack_code(Some(V311)), Some(0x02));
        assert_eq!(
            ProtoError::EmptyClientIdV31.connack_code(Some(V31)),
            Some(0x02)
        );
        // MQTT-3.1.2-1: just close.
        assert_eq!(ProtoError::InvalidProtocolName.connack_code(None), None);
        assert_eq!(ProtoError::InvalidProtocolName.connack_code(Some(V5)), None);
        // 3.1.x has no code for a malformed CONNECT; 5.0 has 0x81 / 0x82.
        assert_eq!(
            ProtoError::ConnectReservedFlag.connack_code(Some(V311)),
            None
        );
        assert_eq!(
            ProtoError::ConnectReservedFlag.connack_code(Some(V5)),
            Some(0x81)
        );
        assert_eq!(
            ProtoError::AuthDataWithoutMethod.connack_code(Some(V5)),
            Some(0x82)
        );
        let too_large = ProtoError::PacketTooLarge { size: 10, max: 5 };
        assert_eq!(too_large.connack_code(Some(V5)), Some(0x95));
    }

    #[test]
    fn disconnect_reasons() {
        assert_eq!(ProtoError::InvalidQoS.disconnect_reason(), 0x81);
        assert_eq!(ProtoError::ZeroPacketId.disconnect_reason(), 0x82);
        assert_eq!(
            ProtoError::PacketTooLarge { size: 10, max: 5 }.disconnect_reason(),
            0x95
        );
        assert_eq!(ProtoError::TopicAliasZero.disconnect_reason(), 0x94);
        assert_eq!(
            ProtoError::InvalidTopicName(TopicError::WildcardInName).disconnect_reason(),
            0x90
        );
        assert_eq!(
            ProtoError::InvalidTopicFilter(TopicError::MisplacedHash).disconnect_reason(),
            0x8F
        );
    }

    #[test]
    fn messages_cite_the_spec() {
        let msg = ProtoError::InvalidQoS.to_string();
        assert!(msg.starts_with("[MQTT-3.3.1-4]"), "{msg}");
        let msg = ProtoError::InvalidTopicName(TopicError::WildcardInName).to_string();
        assert!(msg.contains("[MQTT-3.3.2-2]"), "{msg}");
    }
}

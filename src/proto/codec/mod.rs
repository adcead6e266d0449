//! Streaming, zero-copy MQTT decoder and encoder for 3.1, 3.1.1 and 5.0.
//!
//! Sans-IO: [`Decoder::decode`] takes the connection's receive buffer and returns at most one
//! packet; [`encode`] / [`encode_publish`] append to a write buffer. Nothing here touches a
//! socket or the executor, so every rule is tested by feeding raw bytes.
//!
//! Layout:
//! - `wire`: bounded reader and variable byte integers, the only code that touches raw bytes;
//! - `props`: 5.0 properties, which ones each packet allows, and their value rules;
//! - `decode`: [`Decoder`] (fixed header, connection state, one function per packet type);
//! - `encode`: [`encode`], [`encoded_len`] and the hot-path [`encode_publish`].
//!
//! Bounds: a packet is rejected from its fixed header alone when it announces more than the
//! decoder's maximum packet size, and a remaining length longer than 4 bytes is malformed, so
//! a peer can never make the broker buffer more than `max_packet_size` bytes per connection.
//! Decoded strings and payloads are slices of the received packet (`Bytes`), never copies.

mod decode;
mod encode;
mod props;
mod wire;

#[cfg(test)]
mod roundtrip_tests;
#[cfg(test)]
mod spec_tests;

pub use decode::Decoder;
pub use encode::{encode, encode_publish, encode_publish_header, encoded_len};

/// Largest remaining length the 4-byte variable byte integer can express (§2.2.3).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

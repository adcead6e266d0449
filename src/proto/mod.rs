//! Sans-IO MQTT codec for 3.1 ("MQIsdp"), 3.1.1 and 5.0: packet types, properties, topic
//! validation, a streaming decoder and an encoder. Never touches the executor or a socket;
//! pure functions over `bytes` buffers, unit-, property- and fuzz-testable.

pub mod codec;
pub mod error;
pub mod packet;
pub mod properties;
pub mod topic;

pub use codec::{encode, encode_publish, encode_publish_header, encoded_len, Decoder};
pub use error::ProtoError;
pub use packet::*;
pub use properties::Properties;

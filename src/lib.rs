//! ringmq: a thread-per-core io_uring MQTT broker.
pub mod config;
pub mod proto;
pub mod rt;
pub mod session;
pub mod route;

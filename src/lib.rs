//! ringmq: a thread-per-core io_uring MQTT broker (MQTT 3.1, 3.1.1 and 5.0 codec).
//!
//! # Layout
//! | module | owns | lives on |
//! |---|---|---|
//! | [`proto`] | sans-IO codec: packets, properties, topic rules, decoder/encoder | pure |
//! | [`session`] | per-client state: subscriptions, queue, inflight window, QoS 2 ids | the session's home shard |
//! | [`route`] | topic trie, route table (filter → shards; shared subscriptions: members per shard), local subscribers and share-group members, retained store | route table replicated on every shard; the rest per shard |
//! | [`conn`] | per-connection tasks: handshake, hand-off, reader, writer, keep-alive, per-client limits (topic length/levels, publish rate) | the connection's home shard |
//! | [`shard`] | one executor's state and its mesh drain/ticker tasks | one shard |
//! | [`expiry`] | session lifetimes after their connection, session expiry, delayed wills | one shard |
//! | [`journal`] | the durable log: record framing, segments, the writer with group commit, snapshots, recovery | one shard (recovery: the main thread before shards start) |
//! | [`pressure`] | publisher flow control: congested subscribers pause their publishers, slow consumers | one shard |
//! | [`listener`] | listener settings (plain/TLS/WebSocket, per-listener limits) and connection admission: counts, accept rate, per-address rate, allowed/denied networks, PROXY protocol | built at start, shared by every shard; each accept loop owns its rate bucket |
//! | [`proxy`] | the PROXY protocol header (v1 text, v2 binary) a load balancer sends first: sans-IO parser, bounded | pure |
//! | [`cidr`] | CIDR networks for address admission (`allow_from`, `deny_from`, `proxy_trusted`) | parsed at config load, shared read-only |
//! | [`tls`] | TLS settings → rustls server config (PEM files, mutual TLS), user name from a client certificate | built at start, shared read-only; a connection's record layer is `rt::tls` |
//! | [`acl`] | authorization: the ACL file (sections, allow/deny rules, `%u`/`%c` patterns), read/write/subscribe decisions, lock-free reload | parsed once per (re)load, shared read-only by every shard |
//! | [`auth`] | MQTT 5 enhanced authentication: method trait, registry, SCRAM-SHA-256 (sans-IO); CONNECT user name/password: back-end trait, argon2id password file, cache of successful checks, failure throttle, `ringmq passwd` | registry built at start, shared read-only by every shard; an exchange per connection; the password back end in `shard::Global` (swapped on reload), its hashes run on each shard's blocking pool |
//! | [`rt`] | the only glommio-facing code: sockets (with their TLS and WebSocket layers; the sans-IO WebSocket codec is `rt::ws`), mesh outboxes, notify primitives, the parking lot for idle sockets | per shard |
//! | [`metrics`] | per-shard counters (every enforced limit is counted), latency histograms | one shard |
//! | [`ops`] | the stats board (each shard's published snapshot, heartbeat, phase), the ops HTTP endpoint (`/metrics`, `/health`, `/ready`), `$SYS` topics | board shared by every thread, each slot written by its shard; HTTP on its own threads; `$SYS` on shard 0 |
//! | [`config`] | defaults, TOML file, CLI flags | read-only copy per shard |
//! | [`logging`] | the server binary's log subscriber: text or JSON lines, reloadable level, a writer thread with a bounded queue (shards never block on stderr) | process-wide |
//! | [`broker`] | start-up checks, data-dir lock, pool, signals, shutdown | main thread |
//! | [`bench`] | `ringmq-bench` load generator: MQTT clients, delivery checker, report | its own generator threads (not the broker) |
//!
//! Data flow of a publish: `conn` decodes it → `shard::publish` matches the replicated
//! route table once → one forward per destination shard over the data mesh (local
//! delivery inline) → each destination matches its local subscriber trie → `session`
//! queues → the subscriber's `conn` writer encodes and writes.

pub mod acl;
pub mod auth;
pub mod bench;
pub mod broker;
pub mod cidr;
pub mod config;
pub mod conn;
pub mod expiry;
pub mod journal;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod pressure;
pub mod proto;
pub mod proxy;
pub mod route;
pub mod rt;
pub mod session;
pub mod shard;
pub mod tls;

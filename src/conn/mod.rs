//! Per-connection tasks: accept, the CONNECT handshake and hand-off to the home shard, the
//! reader (decode → session/route actions) and the writer (session queue → socket).
//!
//! Owned by the connection's home shard. An active connection is two tasks sharing one
//! [`Conn`]: the reader owns the receive side and all protocol handling; the writer drains
//! the control-packet buffer and the session queue into one coalesced write per wake-up.
//! After `idle_park_secs` without traffic the connection *parks*: both tasks end, the socket
//! goes to the shard's parking lot ([`crate::rt::park`]) and only the `Conn` and its session
//! remain; [`Shard::resume_conn`] (or input on the socket) starts the tasks again.
//!
//! This file: [`Conn`] and `serve` (a connection's start on its home shard). `accept`:
//! accepting, the handshake and the hand-off. `lifecycle`: the reader loop, park/resume, tear-down. `handle`: one packet from
//! a client. `limits`: topic length/depth and publish-rate limits. `writer`: encoding and
//! writing queued messages. `auth_flow`: MQTT 5 enhanced authentication (§4.12) in the
//! handshake and re-authentication. `password_flow`: CONNECT user name/password
//! authentication and anonymous clients in the handshake. `proxy_flow`: the PROXY protocol
//! header and admission by the client's address, the handshake's first step.

use std::cell::{Cell, RefCell};
use std::os::unix::io::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use glommio::net::{TcpListener, TcpStream};

use crate::listener::{Bucket, Listener};
use crate::metrics::Metrics;
use crate::proto::{
    encode, encode_publish, encode_publish_header, ConnAck, Connect, Decoder, LastWill, Packet,
    ProtoError, ProtocolVersion, PubResp, QoS, SubAck, SubOptions, Subscribe, UnsubAck,
    Unsubscribe, Utf8Bytes,
};
use crate::route::table::ShardSet;
use crate::rt::net::{attach_stream, close_fd, detach_stream, send_nonblocking, Io};
use crate::rt::sync::Notify;
use crate::rt::with_timeout;
use crate::session::{Delivery, Outgoing, PubRecResult, Publication};
use crate::shard::{Ctrl, Handoff, PkidRec, SessionCell, Shard};

mod accept;
mod auth_flow;
mod ending;
mod handle;
mod lifecycle;
mod limits;
mod password_flow;
mod proxy_flow;
mod v5;
mod writer;

use accept::ws_violation;
pub use accept::{accept_loop, adopt};
use auth_flow::{authenticate, conn_auth, connack_properties, reauthenticate, ConnAuth};
pub use ending::Ending;
use handle::*;
pub use lifecycle::run_parking;
use lifecycle::*;
use writer::*;

/// The writer pulls queued messages until this many bytes are buffered, then writes.
const WRITE_BATCH: usize = 64 * 1024;
/// The reader stops reading while this many control bytes wait to be written (a client
/// that sends but never reads is slowed by TCP backpressure, not by broker memory).
const WRITE_HIGH_WATER: usize = 1024 * 1024;
/// Publishers pause reading while this many forwards wait in the cross-shard outboxes.
const MESH_HIGH_WATER: usize = 64 * 1024;
/// Largest single read.
const READ_MAX: usize = 64 * 1024;

/// One live client connection. Owned by its home shard; shared by its reader and writer
/// tasks and referenced from its session and the shard's connection table.
pub struct Conn {
    pub id: u64,
    /// The socket while the connection is active; `None` while parked.
    io: RefCell<Option<Rc<Io>>>,
    /// The raw socket while parked (watched by the shard's parking lot), else -1.
    parked_fd: Cell<RawFd>,
    /// The TLS session while parked (keys and rustls state; no buffers of ours).
    parked_tls: Cell<Option<Box<rustls::ServerConnection>>>,
    /// The WebSocket decoder state while parked (WebSocket listeners).
    parked_ws: Cell<Option<Box<crate::rt::ws::Deframer>>>,
    /// The shard asked the reader to park the connection.
    parking: Cell<bool>,
    /// The reader asked the writer to exit once it has nothing to write.
    writer_stop: Cell<bool>,
    /// The writer is waiting for work (nothing buffered, nothing sendable).
    writer_idle: Cell<bool>,
    /// Something was written since the last park check.
    wrote: Cell<bool>,
    /// A park check for this connection is in the shard's wheel.
    pub park_armed: Cell<bool>,
    /// The connection is in the shard's resume queue.
    pub resume_queued: Cell<bool>,
    /// [`crate::rt::clock_ms`] of the last bytes the socket accepted (slow-consumer check).
    progress_ms: Cell<u32>,
    pub version: ProtocolVersion,
    /// Control packets (acks, CONNACK, SUBACK...) waiting for the writer.
    out: RefCell<BytesMut>,
    writer_wake: Notify,
    reader_wake: Notify,
    writer_done: Cell<bool>,
    /// The reader wants the writer to flush what is buffered and then close.
    closing: Cell<bool>,
    killed: Cell<bool>,
    keep_alive: u16,
    last_seen: Cell<u64>,
    /// Theoretical arrival time of the next PUBLISH, in µs (`max_publish_rate`; see `limits`).
    publish_tat: Cell<u64>,
    will: RefCell<Option<Box<LastWill>>>,
    /// Enhanced authentication (method, identity, a re-authentication in progress); `None`
    /// for connections that did not use it.
    auth: RefCell<Option<Box<ConnAuth>>>,
    /// Who the client is for authorization: the CONNECT user name once authentication
    /// accepted it (the SCRAM identity, or the TLS client certificate's name when the
    /// listener takes the user name from it); `None` for anonymous clients.
    user: Option<Utf8Bytes>,
    /// Index of the listener that accepted the connection (its count is released at the end).
    pub listener: u8,
    pub session: Rc<SessionCell>,
    /// What a 5.0 client negotiated (topic aliases, its maximum packet size...).
    v5: Option<Box<v5::V5>>,
    /// The first cause of the connection's end (for the "client disconnected" line).
    ending: Cell<Ending>,
    /// Shard-clock second the connection was served from.
    since: u32,
    /// The client's address: from the PROXY header on such a listener, else the socket's
    /// (kept for a parked connection's rebuilt `Io`).
    peer: Option<std::net::SocketAddr>,
}

/// Server-initiated DISCONNECT reason codes (5.0 §3.14.2.1).
pub mod reason {
    pub const UNSPECIFIED_ERROR: u8 = 0x80;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const RETAIN_NOT_SUPPORTED: u8 = 0x9A;
    pub const QOS_NOT_SUPPORTED: u8 = 0x9B;

    /// The Reason String sent with a server DISCONNECT.
    pub fn text(code: u8) -> &'static str {
        match code {
            UNSPECIFIED_ERROR => "durable log failed",
            0x81 => "malformed packet",
            PROTOCOL_ERROR => "protocol error",
            SERVER_SHUTTING_DOWN => "server shutting down",
            KEEP_ALIVE_TIMEOUT => "keep alive timeout",
            SESSION_TAKEN_OVER => "session taken over",
            0x8F => "topic filter invalid",
            TOPIC_NAME_INVALID => "topic name invalid",
            RECEIVE_MAXIMUM_EXCEEDED => "receive maximum exceeded",
            0x94 => "topic alias invalid",
            0x95 => "packet too large",
            RETAIN_NOT_SUPPORTED => "retain not supported",
            QOS_NOT_SUPPORTED => "QoS not supported",
            _ => "",
        }
    }
}

impl Conn {
    pub fn wake_writer(&self) {
        self.writer_wake.notify();
    }

    /// Close the connection from outside, first telling a 5.0 client why with a DISCONNECT
    /// (takeover 0x8E, keep-alive 0x8D, shutdown 0x8B) when that can be written at once: the
    /// socket is parked, or the writer is idle with nothing buffered (a half-written packet
    /// must not be interleaved). Best effort; the close follows either way.
    pub fn kill_with(&self, reason_code: u8) {
        self.note_end(Ending::Server(reason_code));
        if self.killed.get() || !self.version.is_v5() {
            return self.kill();
        }
        let mut buf = BytesMut::new();
        if encode(&self.disconnect_packet(reason_code), self.version, &mut buf).is_ok() {
            let fd = self.parked_fd.get();
            if fd >= 0 {
                // Over WebSocket the packet travels in a binary frame [MQTT-6.0.0-1].
                let ws = self.parked_ws.take();
                if ws.is_some() {
                    let mut framed = BytesMut::new();
                    crate::rt::ws::put_frame(&mut framed, crate::rt::ws::OP_BINARY, &buf);
                    buf = framed;
                }
                self.parked_ws.set(ws);
                let mut tls = self.parked_tls.take();
                match tls.as_deref_mut() {
                    None => {
                        let _ = send_nonblocking(fd, &buf);
                    }
                    // Sealed with the parked session; the session ends with the kill.
                    Some(s) => crate::tls::send_sealed(fd, s, &buf),
                }
                self.parked_tls.set(tls);
            } else if self.writer_idle.get() && self.out.borrow().is_empty() {
                if let Some(io) = self.io.borrow().as_ref() {
                    let _ = io.try_send(&buf);
                }
            }
        }
        self.kill();
    }

    /// Close the connection from outside (takeover, keep-alive, shutdown). A parked
    /// connection must then be resumed to run its tear-down: use [`Shard::kill_conn`].
    pub fn kill(&self) {
        if !self.killed.replace(true) {
            if let Some(io) = self.io.borrow().as_ref() {
                io.shutdown();
            }
            self.writer_wake.notify();
            self.reader_wake.notify();
        }
    }

    /// Note why the connection ends; the first cause noted wins.
    pub(crate) fn note_end(&self, why: Ending) {
        if self.ending.get() == Ending::Unknown {
            self.ending.set(why);
        }
    }

    /// The client's address (its real one behind a PROXY-protocol load balancer).
    pub fn peer(&self) -> Option<std::net::SocketAddr> {
        self.peer
    }

    /// The authenticated user name (see the field); `None` when anonymous.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn is_parked(&self) -> bool {
        self.parked_fd.get() >= 0
    }

    /// [`crate::rt::clock_ms`] when the socket last accepted bytes from the writer.
    pub fn progress_ms(&self) -> u32 {
        self.progress_ms.get()
    }

    pub fn is_killed(&self) -> bool {
        self.killed.get()
    }

    /// Seconds-clock time of the last byte received.
    pub fn last_seen(&self) -> u64 {
        self.last_seen.get()
    }

    /// Whether the connection has been busy since the last call (it wrote, or is writing).
    pub fn take_busy(&self) -> bool {
        self.wrote.replace(false) || !self.writer_idle.get() || !self.out.borrow().is_empty()
    }

    /// Ask the reader to park the connection at its next wake-up.
    pub fn request_park(&self) {
        self.parking.set(true);
        self.reader_wake.notify();
    }

    /// The first whole second (shard clock) at which 1.5 × keep-alive has surely passed
    /// since the last packet. `last_seen` is the second the packet arrived in, rounded down,
    /// so one second is added: closing at `last_seen + 1.5 × keep-alive` could come up to a
    /// second early, which [MQTT-3.1.2-24] does not allow.
    pub fn keepalive_deadline(&self) -> Option<u64> {
        if self.keep_alive == 0 {
            return None;
        }
        Some(self.last_seen.get() + (self.keep_alive as u64 * 3).div_ceil(2) + 1)
    }

    fn send(&self, p: &Packet) {
        let mut out = self.out.borrow_mut();
        if let Err(e) = encode(p, self.version, &mut out) {
            tracing::error!(conn = self.id, "cannot encode {:?}: {e}", p.type_id());
        }
    }

    /// Queue a DISCONNECT with `reason_code` for a 5.0 client (no-op for 3.1.x, which has
    /// no server DISCONNECT); the writer flushes it before closing.
    fn send_disconnect(&self, reason_code: u8) {
        self.note_end(Ending::Server(reason_code));
        if self.version.is_v5() {
            self.send(&self.disconnect_packet(reason_code));
        }
    }

    /// A server DISCONNECT with a Reason String saying what happened (allowed on DISCONNECT
    /// whatever Request Problem Information says, [MQTT-3.1.2-29]), unless that would make
    /// it larger than the client's Maximum Packet Size [MQTT-3.1.2-25].
    fn disconnect_packet(&self, reason_code: u8) -> Packet {
        let text = reason::text(reason_code);
        let fits = self
            .v5
            .as_deref()
            .map_or(true, |v| text.len() + 16 <= v.max_packet_out);
        let mut properties = crate::proto::Properties::default();
        if fits && !text.is_empty() {
            properties.reason_string = Some(Utf8Bytes::from(text));
        }
        Packet::Disconnect(crate::proto::Disconnect {
            reason: reason_code,
            properties,
        })
    }
}

/// Serve an accepted CONNECT on the client's home shard until the connection ends.
/// What a connection keeps from its CONNECT. Built by a plain function so the (large)
/// decoded CONNECT is freed before the connection's long-lived task starts.
struct Hello {
    version: ProtocolVersion,
    clean_start: bool,
    keep_alive: u16,
    client_id: Utf8Bytes,
    will: Option<Box<LastWill>>,
    /// The broker chose the client id (5.0: sent back in CONNACK).
    assigned: bool,
    /// The CONNECT properties (5.0 only).
    props: Option<Box<crate::proto::Properties>>,
    auth: Option<Box<ConnAuth>>,
    /// The user name authentication accepted.
    user: Option<Utf8Bytes>,
    /// Index of the listener that accepted the connection.
    listener: u8,
}

impl From<Box<Connect>> for Hello {
    fn from(c: Box<Connect>) -> Hello {
        let mut c = *c;
        let v5 = c.protocol.is_v5();
        Hello {
            auth: conn_auth(&mut c),
            // A compact copy, as for the client id.
            user: c.username.as_deref().map(Utf8Bytes::from),
            version: c.protocol,
            clean_start: c.clean_start,
            keep_alive: c.keep_alive,
            // A compact copy: the decoded id is a slice of the whole CONNECT buffer.
            client_id: Utf8Bytes::from(c.client_id.as_str()),
            will: c.will.map(Box::new),
            assigned: false,
            listener: 0,
            props: v5.then(|| Box::new(c.properties)),
        }
    }
}

async fn serve(shard: Rc<Shard>, io: Rc<Io>, hello: Hello, rest: BytesMut) {
    let Hello {
        version,
        clean_start,
        mut keep_alive,
        client_id,
        will,
        assigned,
        props,
        mut auth,
        user,
        listener,
    } = hello;
    let cfg = &shard.cfg;
    let asked_ka = keep_alive;
    let max_ka = cfg.max_keep_alive;
    if max_ka < u16::MAX && (keep_alive == 0 || keep_alive > max_ka) {
        keep_alive = max_ka;
    }
    let props = props.unwrap_or_default();
    let expiry_asked = props.session_expiry_interval.unwrap_or(0);
    let expiry = v5::session_expiry(version, clean_start, expiry_asked, cfg.max_session_expiry);
    let (cell, present) = shard.open_session(&client_id, clean_start, expiry, user.as_ref());
    cell.state
        .borrow_mut()
        .set_window(props.receive_maximum, shard.limits.max_inflight);
    let conn = Rc::new(Conn {
        id: shard.next_conn_id(),
        io: RefCell::new(None),
        parked_fd: Cell::new(-1),
        parked_tls: Cell::new(None),
        parked_ws: Cell::new(None),
        parking: Cell::new(false),
        writer_stop: Cell::new(false),
        writer_idle: Cell::new(false),
        wrote: Cell::new(false),
        park_armed: Cell::new(false),
        resume_queued: Cell::new(false),
        progress_ms: Cell::new(crate::rt::clock_ms()),
        version,
        out: RefCell::new(BytesMut::new()),
        writer_wake: Notify::new(),
        reader_wake: Notify::new(),
        writer_done: Cell::new(false),
        closing: Cell::new(false),
        killed: Cell::new(false),
        keep_alive,
        last_seen: Cell::new(shard.now()),
        publish_tat: Cell::new(0),
        will: RefCell::new(will),
        auth: RefCell::new(None),
        user,
        listener,
        session: cell.clone(),
        v5: version
            .is_v5()
            .then(|| Box::new(v5::V5::from_connect(&props))),
        ending: Cell::new(Ending::Unknown),
        since: shard.now() as u32,
        peer: io.peer_addr(),
    });
    if let Some(old) = cell.conn.replace(Some(conn.clone())) {
        // [MQTT-3.1.4-2] a second connection with the same client id closes the first
        // (5.0: with DISCONNECT 0x8E, [MQTT-3.1.4-3]).
        Metrics::inc(&shard.metrics.takeovers);
        tracing::debug!(client = %client_id, "session taken over");
        shard.kill_conn(&old, reason::SESSION_TAKEN_OVER);
    }
    shard.conns.borrow_mut().insert(conn.id, conn.clone());
    shard.arm_keepalive(&conn);
    let properties = if version.is_v5() {
        v5::connack_properties(&v5::ConnackFacts {
            cfg,
            expiry_asked,
            expiry_granted: expiry,
            assigned: assigned.then_some(&client_id),
            server_keep_alive: (keep_alive != asked_ka).then_some(keep_alive),
            wants_response_info: props.request_response_information == Some(1),
            client_id: client_id.as_str(),
        })
    } else {
        Default::default()
    };
    let mut properties = properties;
    let auth_props = connack_properties(auth.as_deref_mut());
    properties.authentication_method = auth_props.authentication_method;
    properties.authentication_data = auth_props.authentication_data;
    drop(props);
    conn.send(&Packet::ConnAck(ConnAck {
        session_present: present,
        code: 0,
        properties,
    }));
    conn.auth.replace(auth);
    if present {
        // [MQTT-4.4.0-1] resend unacknowledged PUBLISH (DUP) and PUBREL, in order.
        let resend = cell.state.borrow().resend();
        let mut out = conn.out.borrow_mut();
        let now = crate::rt::LazyNow::default();
        for o in resend {
            if let Wrote::Discarded(pkid) = write_outgoing(&shard, &mut out, &conn, o, &now, false)
            {
                let mut st = cell.state.borrow_mut();
                forget(&shard, &cell, &mut st, pkid);
            }
        }
    }
    tracing::info!(
        client = %client_id,
        conn = conn.id,
        peer = conn.peer().map(tracing::field::display),
        // Omitted for anonymous clients.
        user = conn.user().map(tracing::field::display),
        listener = shard.global.listeners.get(listener as usize).map_or("", |l| l.name.as_str()),
        protocol = version.name(),
        clean_start,
        keep_alive,
        session_present = present,
        shard = shard.id,
        "client connected"
    );
    drop(client_id);
    run(shard, conn, io, rest).await;
}

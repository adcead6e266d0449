//! Per-connection tasks: accept, the CONNECT handshake and hand-off to the home shard, the
//! reader (decode → session/route actions) and the writer (session queue → socket).
//!
//! Owned by the connection's home shard. An active connection is two tasks sharing one
//! [`Conn`]: the reader owns the receive side and all protocol handling; the writer drains
//! the control-packet buffer and the session queue into one coalesced write per wake-up.
//! After `idle_park_secs` without traffic the connection *parks*: both tasks end, the socket
//! goes to the shard's parking lot ([`crate::rt::park`]) and only the `Conn` and its session
//! remain; [`Shard::resume_conn`] (or input on the socket) starts the tasks again.

use std::cell::{Cell, RefCell};
use std::os::unix::io::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use glommio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;
use crate::proto::{
    encode, encode_publish, encode_publish_header, ConnAck, Connect, Decoder, LastWill, Packet,
    ProtoError, ProtocolVersion, PubResp, QoS, SubAck, SubOptions, Subscribe, UnsubAck,
    Unsubscribe, Utf8Bytes,
};
use crate::rt::net::{attach_stream, close_fd, detach_stream, Io};
use crate::rt::sync::Notify;
use crate::rt::with_timeout;
use crate::session::{Delivery, Outgoing, PubRecResult, Publication};
use crate::shard::{Ctrl, Handoff, SessionCell, Shard};

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
    will: RefCell<Option<Box<LastWill>>>,
    pub session: Rc<SessionCell>,
}

impl Conn {
    pub fn wake_writer(&self) {
        self.writer_wake.notify();
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

    /// When the keep-alive expires given the last activity: 1.5 × keep-alive.
    pub fn keepalive_deadline(&self) -> Option<u64> {
        if self.keep_alive == 0 {
            return None;
        }
        Some(self.last_seen.get() + (self.keep_alive as u64 * 3).div_ceil(2))
    }

    fn send(&self, p: &Packet) {
        let mut out = self.out.borrow_mut();
        if let Err(e) = encode(p, self.version, &mut out) {
            tracing::error!(conn = self.id, "cannot encode {:?}: {e}", p.type_id());
        }
    }
}

/// Accept connections on this shard until shutdown.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shard.stop.notified().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::warn!(shard = shard.id, "accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shard.stopping.get() {
            return;
        }
        Metrics::inc(&shard.metrics.connections_accepted);
        let n = shard.global.connections.fetch_add(1, Ordering::Relaxed);
        if n >= shard.cfg.max_connections {
            shard.global.connections.fetch_sub(1, Ordering::Relaxed);
            Metrics::inc(&shard.metrics.connections_refused_limit);
            tracing::warn!(
                limit = shard.cfg.max_connections,
                "max_connections reached; refusing a connection"
            );
            drop(stream);
            continue;
        }
        let s = shard.clone();
        let fut = async move {
            let counted = handshake(s.clone(), stream).await;
            if !counted {
                s.global.connections.fetch_sub(1, Ordering::Relaxed);
            }
        };
        glommio::spawn_local(fut).detach();
    }
}

enum First {
    Connect(Box<Connect>, BytesMut),
    Closed,
    Violation(ProtoError, Option<ProtocolVersion>),
}

/// Read the CONNECT packet (bounded by `connect_timeout`), then serve here or hand the
/// socket to the client id's home shard. Returns true if the connection lives on (its
/// global count is then released by whoever ends it).
async fn handshake(shard: Rc<Shard>, stream: TcpStream) -> bool {
    let io = Io::new(stream);
    let mut dec = Decoder::new(shard.cfg.max_packet_size);
    let first = with_timeout(Duration::from_secs(shard.cfg.connect_timeout), async {
        let mut buf = BytesMut::new();
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(Packet::Connect(c))) => return First::Connect(c, buf),
                Ok(Some(other)) => {
                    // The decoder rejects these itself; stay defensive.
                    tracing::debug!("first packet type {} is not CONNECT", other.type_id());
                    return First::Closed;
                }
                Ok(None) => {}
                Err(e) => return First::Violation(e, dec.version()),
            }
            match io.read(&shard.arena, READ_MAX).await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                Ok(None) | Err(_) => return First::Closed,
            }
        }
    })
    .await;
    let (mut connect, rest) = match first {
        Some(First::Connect(c, rest)) => (c, rest),
        Some(First::Closed) => {
            Metrics::inc(&shard.metrics.connect_failures);
            return false;
        }
        Some(First::Violation(e, version)) => {
            Metrics::inc(&shard.metrics.protocol_errors);
            tracing::info!(peer = ?io.peer_addr(), "closing connection: {e}");
            if let Some(code) = e.connack_code(version) {
                let mut out = BytesMut::new();
                let ack = Packet::ConnAck(ConnAck {
                    session_present: false,
                    code,
                    properties: Default::default(),
                });
                let v = version.unwrap_or(ProtocolVersion::V311);
                if encode(&ack, v, &mut out).is_ok() {
                    let _ = with_timeout(Duration::from_secs(1), io.write_all(&out)).await;
                }
            }
            return false;
        }
        None => {
            Metrics::inc(&shard.metrics.connect_failures);
            tracing::debug!(peer = ?io.peer_addr(), "no CONNECT within connect_timeout");
            return false;
        }
    };
    if connect.client_id.is_empty() {
        // [MQTT-3.1.3-6] assign an id; pick one whose home is this shard (no hand-off).
        connect.client_id = assign_client_id(&shard);
    }
    let home = shard.shard_of(connect.client_id.as_bytes());
    if home == shard.id {
        // A task of its own: the handshake's state is not carried for the connection's life.
        glommio::spawn_local(serve(shard, io, Hello::from(connect), rest)).detach();
        return true;
    }
    let stream = match io.into_stream() {
        Ok(s) => s,
        Err(_) => return false,
    };
    match detach_stream(stream) {
        Ok(fd) => {
            Metrics::inc(&shard.metrics.handoffs);
            shard.ctrl.push(
                home,
                Ctrl::Handoff(Box::new(Handoff::new(fd, rest, connect))),
            );
            true
        }
        Err(e) => {
            tracing::warn!("cannot hand off connection: {e}");
            false
        }
    }
}

fn assign_client_id(shard: &Shard) -> Utf8Bytes {
    loop {
        let n = shard.next_conn_id();
        let id = format!("ringmq-{}-{:x}-{}", shard.id, std::process::id(), n);
        if shard.shard_of(id.as_bytes()) == shard.id {
            return Utf8Bytes::from(id);
        }
    }
}

/// Continue a handed-off connection on its home shard.
pub fn adopt(shard: Rc<Shard>, mut h: Handoff) {
    let fd = h.take_fd();
    // SAFETY: the fd was detached from its original shard and is owned by this hand-off.
    let stream = unsafe { attach_stream(fd) };
    let rest = std::mem::take(&mut h.rest);
    let connect = std::mem::replace(
        &mut h.connect,
        Box::new(Connect {
            protocol: ProtocolVersion::V311,
            clean_start: true,
            keep_alive: 0,
            client_id: Utf8Bytes::default(),
            will: None,
            username: None,
            password: None,
            properties: Default::default(),
        }),
    );
    glommio::spawn_local(serve(shard, Io::new(stream), Hello::from(connect), rest)).detach();
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
}

impl From<Box<Connect>> for Hello {
    fn from(c: Box<Connect>) -> Hello {
        let c = *c;
        Hello {
            version: c.protocol,
            clean_start: c.clean_start,
            keep_alive: c.keep_alive,
            // A compact copy: the decoded id is a slice of the whole CONNECT buffer.
            client_id: Utf8Bytes::from(c.client_id.as_str()),
            will: c.will.map(Box::new),
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
    } = hello;
    let max_ka = shard.cfg.max_keep_alive;
    if max_ka < u16::MAX && (keep_alive == 0 || keep_alive > max_ka) {
        keep_alive = max_ka;
    }
    let (cell, present) = shard.open_session(&client_id, clean_start);
    let conn = Rc::new(Conn {
        id: shard.next_conn_id(),
        io: RefCell::new(None),
        parked_fd: Cell::new(-1),
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
        will: RefCell::new(will),
        session: cell.clone(),
    });
    if let Some(old) = cell.conn.replace(Some(conn.clone())) {
        // [MQTT-3.1.4-2] a second connection with the same client id closes the first.
        Metrics::inc(&shard.metrics.takeovers);
        tracing::debug!(client = %client_id, "session taken over");
        shard.kill_conn(&old);
    }
    shard.conns.borrow_mut().insert(conn.id, conn.clone());
    shard.arm_keepalive(&conn);
    conn.send(&Packet::ConnAck(ConnAck {
        session_present: present,
        code: 0,
        properties: Default::default(),
    }));
    if present {
        // [MQTT-4.4.0-1] resend unacknowledged PUBLISH (DUP) and PUBREL, in order.
        let resend = cell.state.borrow().resend();
        let mut out = conn.out.borrow_mut();
        for o in resend {
            write_outgoing(&shard, &mut out, version, o);
        }
    }
    tracing::debug!(client = %client_id, shard = shard.id, present, "client connected");
    drop(client_id);
    run(shard, conn, io, rest).await;
}

/// Continue a parked connection whose socket became readable, that has messages to send,
/// or that must be closed. No-op unless it is parked.
fn resume(shard: &Rc<Shard>, conn: &Rc<Conn>) {
    conn.resume_queued.set(false);
    let fd = conn.parked_fd.replace(-1);
    if fd < 0 {
        return;
    }
    if let Some(lot) = shard.parking_lot_any() {
        lot.unpark(fd);
    }
    Metrics::inc(&shard.metrics.unparks);
    // SAFETY: the fd was detached from its glommio stream when the connection parked and
    // has been owned by `parked_fd` since.
    let stream = unsafe { attach_stream(fd) };
    glommio::spawn_local(run(
        shard.clone(),
        conn.clone(),
        Io::new(stream),
        BytesMut::new(),
    ))
    .detach();
}

/// The shard's parking task: resumes parked connections whose sockets became readable,
/// and those queued by [`Shard::resume_conn`] (messages to send, kill).
pub async fn run_parking(shard: Rc<Shard>) {
    let mut keys = Vec::new();
    loop {
        keys.clear();
        let ready = futures_lite::future::or(
            async {
                match shard.parking_lot() {
                    Some(lot) => lot.ready(&mut keys).await,
                    None => std::future::pending().await,
                }
            },
            async {
                shard.resume_wake.notified().await;
                Ok(())
            },
        )
        .await;
        for c in shard.take_resumes() {
            resume(&shard, &c);
        }
        if let Err(e) = ready {
            tracing::error!(shard = shard.id, "parking lot failed: {e}; parking stops");
            shard.parking_failed.set(true);
            let parked: Vec<_> = shard
                .conns
                .borrow()
                .values()
                .filter(|c| c.is_parked())
                .cloned()
                .collect();
            for c in parked {
                resume(&shard, &c);
            }
            continue;
        }
        for k in &keys {
            let conn = shard.conns.borrow().get(k).cloned();
            if let Some(c) = conn {
                resume(&shard, &c);
            }
        }
    }
}

/// Serve a connection until it parks or ends (then tear it down).
async fn run(shard: Rc<Shard>, conn: Rc<Conn>, io: Rc<Io>, mut rest: BytesMut) {
    let graceful = loop {
        *conn.io.borrow_mut() = Some(io.clone());
        conn.writer_done.set(false);
        conn.writer_stop.set(false);
        conn.parking.set(false);
        shard.arm_park_check(&conn);
        glommio::spawn_local(writer(shard.clone(), conn.clone(), io.clone())).detach();
        let mut dec = Decoder::with_version(conn.version, shard.cfg.max_packet_size);
        let end = read_loop(&shard, &conn, &io, &mut dec, std::mem::take(&mut rest)).await;
        if end != End::Park {
            break end == End::Disconnect;
        }
        // Park: stop the writer, then give the socket to the parking lot — unless work
        // arrived meanwhile.
        conn.writer_stop.set(true);
        conn.writer_wake.notify();
        let stopped = with_timeout(Duration::from_secs(1), async {
            while !conn.writer_done.get() {
                conn.reader_wake.notified().await;
            }
        })
        .await
        .is_some();
        if !stopped || conn.killed.get() {
            break false;
        }
        let idle = conn.out.borrow().is_empty() && !conn.session.state.borrow().has_sendable();
        if idle {
            conn.io.borrow_mut().take();
            match park(&shard, &conn, io) {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(conn = conn.id, "cannot park: {e}; closing");
                    return teardown(&shard, &conn, false);
                }
            }
        }
        // Work arrived while parking: carry on with a fresh writer.
    };
    conn.closing.set(true);
    conn.writer_wake.notify();
    let _ = with_timeout(Duration::from_secs(2), async {
        while !conn.writer_done.get() {
            conn.reader_wake.notified().await;
        }
    })
    .await;
    teardown(&shard, &conn, graceful);
}

/// Hand the socket to the shard's parking lot; the connection keeps its place in the
/// connection table, its session and its keep-alive deadline, but no task.
fn park(shard: &Rc<Shard>, conn: &Rc<Conn>, io: Rc<Io>) -> std::io::Result<()> {
    let stream = io
        .into_stream()
        .map_err(|_| std::io::Error::other("socket still shared"))?;
    let fd = detach_stream(stream)?;
    let parked = match shard.parking_lot() {
        Some(lot) => lot.park(fd, conn.id),
        None => Err(std::io::Error::other("parking is off")),
    };
    if let Err(e) = parked {
        close_fd(fd);
        return Err(e);
    }
    conn.parked_fd.set(fd);
    Metrics::inc(&shard.metrics.parks);
    tracing::debug!(conn = conn.id, "connection parked");
    shard.arm_park_check(conn);
    Ok(())
}

/// The end of a connection: table, session, will, counters.
fn teardown(shard: &Rc<Shard>, conn: &Rc<Conn>, graceful: bool) {
    conn.kill();
    conn.io.borrow_mut().take();
    let cell = conn.session.clone();
    shard.conns.borrow_mut().remove(&conn.id);
    let current = matches!(cell.conn.borrow().as_ref(), Some(c) if Rc::ptr_eq(c, conn));
    if current {
        cell.conn.replace(None);
        shard.pressure.release(&cell);
    }
    if !graceful {
        if let Some(will) = conn.will.borrow_mut().take() {
            // [MQTT-3.1.2-8] publish the will when the connection ends without DISCONNECT.
            Metrics::inc(&shard.metrics.wills_published);
            shard.publish(Arc::new(Publication {
                topic: will.topic,
                payload: will.payload,
                qos: will.qos,
                retain: will.retain,
                props: None,
                origin: cell.state.borrow().client_id.clone(),
            }));
        }
    }
    if current && cell.clean.get() {
        shard.remove_session(&cell);
    }
    shard.global.connections.fetch_sub(1, Ordering::Relaxed);
    tracing::debug!(conn = conn.id, graceful, "connection closed");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client sent DISCONNECT.
    Disconnect,
    /// EOF, error, violation or kill.
    Abrupt,
    /// Idle: the shard asked for the connection to park.
    Park,
}

async fn read_loop(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    io: &Io,
    dec: &mut Decoder,
    mut buf: BytesMut,
) -> End {
    loop {
        loop {
            match dec.decode(&mut buf) {
                // Boxed: subscribing is rare and its future is large; the per-connection
                // reader state stays small.
                Ok(Some(Packet::Subscribe(sub))) => Box::pin(subscribe(shard, conn, sub)).await,
                Ok(Some(p)) => {
                    match handle(shard, conn, p) {
                        Flow::Continue => {}
                        Flow::Disconnect => return End::Disconnect,
                        Flow::Close => return End::Abrupt,
                    }
                    if shard.pressure.take_hit() {
                        // A subscriber this publisher feeds is behind: stop reading (the
                        // rest stays in `buf` and the socket) until it catches up. Boxed:
                        // the wait is rare and would otherwise enlarge every reader.
                        if !conn.out.borrow().is_empty() {
                            conn.writer_wake.notify();
                        }
                        Box::pin(shard.pressure.wait(&shard.metrics)).await;
                        if conn.killed.get() {
                            return End::Abrupt;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    Metrics::inc(&shard.metrics.protocol_errors);
                    if matches!(e, ProtoError::PacketTooLarge { .. }) {
                        Metrics::inc(&shard.metrics.packets_too_large);
                    }
                    tracing::info!(conn = conn.id, client = %conn.session.state.borrow().client_id, "closing connection: {e}");
                    return End::Abrupt;
                }
            }
        }
        if buf.is_empty() {
            // Release the arena chunk this buffer pointed into; idle connections hold none.
            buf = BytesMut::new();
        }
        flush_inline(shard, conn, io);
        if !conn.out.borrow().is_empty() {
            conn.writer_wake.notify();
        }
        // Fairness: a read that finds data never suspends, so a flooding publisher would
        // run until its socket is empty while the subscribers' writers it just woke wait
        // (and their queues overflow). Let them run after every chunk.
        futures_lite::future::yield_now().await;
        // Backpressure: never buffer without bound on behalf of a client.
        while conn.out.borrow().len() > WRITE_HIGH_WATER && !conn.killed.get() {
            Metrics::inc(&shard.metrics.write_backpressure);
            conn.reader_wake.notified().await;
        }
        while shard.data.backlog() > MESH_HIGH_WATER && !conn.killed.get() {
            Metrics::inc(&shard.metrics.mesh_backpressure);
            glommio::timer::sleep(Duration::from_micros(200)).await;
        }
        loop {
            if conn.killed.get() {
                return End::Abrupt;
            }
            if conn.parking.get() && buf.is_empty() {
                return End::Park;
            }
            // The read races the reader's wake-up (kill, park request, writer progress).
            let read = futures_lite::future::or(
                async { Some(io.read(&shard.arena, READ_MAX).await) },
                async {
                    conn.reader_wake.notified().await;
                    None
                },
            )
            .await;
            match read {
                None => continue,
                Some(Ok(Some(chunk))) => {
                    conn.last_seen.set(shard.now());
                    conn.parking.set(false);
                    if buf.is_empty() {
                        buf = chunk;
                    } else {
                        buf.extend_from_slice(&chunk);
                    }
                    break;
                }
                Some(Ok(None)) | Some(Err(_)) => return End::Abrupt,
            }
        }
    }
}

enum Flow {
    Continue,
    Disconnect,
    Close,
}

fn handle(shard: &Rc<Shard>, conn: &Rc<Conn>, p: Packet) -> Flow {
    match p {
        Packet::Publish(p) => {
            Metrics::inc(&shard.metrics.publishes_in);
            let pkid = p.pkid;
            let qos = p.qos;
            let fresh = match qos {
                QoS::ExactlyOnce => conn.session.state.borrow_mut().incoming_qos2(pkid),
                _ => true,
            };
            if fresh {
                shard.pressure.take_hit(); // only this publish's deliveries count
                                           // No Local (v5) compares the publisher's client id; a 3.1.x publisher can
                                           // never be its own No Local subscriber, so skip the per-message clone.
                let origin = if conn.version.is_v5() {
                    conn.session.state.borrow().client_id.clone()
                } else {
                    Utf8Bytes::default()
                };
                shard.publish(Arc::new(Publication {
                    topic: p.topic,
                    payload: p.payload,
                    qos,
                    retain: p.retain,
                    props: if conn.version.is_v5() && !p.properties.is_empty() {
                        Some(p.properties)
                    } else {
                        None
                    },
                    origin,
                }));
            }
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => conn.send(&Packet::PubAck(ack(pkid))),
                QoS::ExactlyOnce => conn.send(&Packet::PubRec(ack(pkid))),
            }
        }
        Packet::PubAck(r) => {
            if conn.session.state.borrow_mut().on_puback(r.pkid) {
                conn.wake_writer();
            }
        }
        Packet::PubRec(r) => {
            let res = conn.session.state.borrow_mut().on_pubrec(r.pkid);
            let mut rel = ack(r.pkid);
            if res == PubRecResult::Unknown && conn.version.is_v5() {
                rel.reason = 0x92; // packet identifier not found
            }
            conn.send(&Packet::PubRel(rel));
        }
        Packet::PubRel(r) => {
            let known = conn.session.state.borrow_mut().incoming_pubrel(r.pkid);
            let mut comp = ack(r.pkid);
            if !known && conn.version.is_v5() {
                comp.reason = 0x92;
            }
            conn.send(&Packet::PubComp(comp));
        }
        Packet::PubComp(r) => {
            if conn.session.state.borrow_mut().on_pubcomp(r.pkid) {
                conn.wake_writer();
            }
        }
        Packet::Unsubscribe(u) => unsubscribe(shard, conn, u),
        Packet::PingReq => conn.send(&Packet::PingResp),
        Packet::Disconnect(_) => {
            // [MQTT-3.14.4-3] discard the will on DISCONNECT.
            conn.will.replace(None);
            return Flow::Disconnect;
        }
        other => {
            // CONNACK, SUBACK, UNSUBACK, PINGRESP, AUTH (3.1.x) from a client: protocol error.
            Metrics::inc(&shard.metrics.protocol_errors);
            tracing::info!(
                conn = conn.id,
                "closing connection: unexpected packet type {} from a client",
                other.type_id()
            );
            return Flow::Close;
        }
    }
    Flow::Continue
}

fn ack(pkid: u16) -> PubResp {
    PubResp {
        pkid,
        reason: 0,
        properties: Default::default(),
    }
}

async fn subscribe(shard: &Rc<Shard>, conn: &Rc<Conn>, s: Subscribe) {
    let key = conn.session.key;
    let mut codes = Vec::with_capacity(s.filters.len());
    let mut new_routes = Vec::new();
    let mut granted: Vec<(Utf8Bytes, SubOptions)> = Vec::new();
    for (filter, opts) in s.filters {
        if filter.starts_with("$share/") {
            // Shared subscriptions arrive with the MQTT 5 work; refuse rather than mis-serve.
            codes.push(0x80);
            continue;
        }
        {
            let mut st = conn.session.state.borrow_mut();
            if !st.subs.contains_key(filter.as_str())
                && st.subs.len() >= shard.cfg.max_subscriptions
            {
                Metrics::inc(&shard.metrics.subscriptions_refused);
                codes.push(0x80);
                continue;
            }
            st.subs.insert(filter.clone(), opts);
        }
        if shard.subscribe_local(&filter, key, opts) {
            new_routes.push(filter.clone());
        }
        codes.push(opts.qos as u8);
        granted.push((filter, opts));
    }
    shard.announce_routes(&new_routes).await;
    conn.send(&Packet::SubAck(SubAck {
        pkid: s.pkid,
        codes,
        properties: Default::default(),
    }));
    // [MQTT-3.3.1-6] retained messages for each new subscription, after the SUBACK.
    for (filter, opts) in granted {
        if opts.retain_handling == 2 {
            continue;
        }
        for msg in shard.retained_for(&filter).await {
            let qos = msg.qos.min(opts.qos);
            shard.deliver(
                &conn.session,
                Delivery {
                    msg,
                    qos,
                    retain: true,
                },
            );
        }
    }
    conn.wake_writer();
}

fn unsubscribe(shard: &Rc<Shard>, conn: &Rc<Conn>, u: Unsubscribe) {
    let key = conn.session.key;
    let mut codes = Vec::new();
    for filter in &u.filters {
        let existed = conn
            .session
            .state
            .borrow_mut()
            .subs
            .remove(filter.as_str())
            .is_some();
        if existed {
            shard.unsubscribe_local(filter, key);
        }
        codes.push(if existed { 0x00 } else { 0x11 });
    }
    if !conn.version.is_v5() {
        codes.clear();
    }
    conn.send(&Packet::UnsubAck(UnsubAck {
        pkid: u.pkid,
        codes,
        properties: Default::default(),
    }));
}

fn write_outgoing(shard: &Shard, out: &mut BytesMut, version: ProtocolVersion, o: Outgoing) {
    match o {
        Outgoing::Publish {
            pkid,
            dup,
            delivery,
        } => {
            Metrics::inc(&shard.metrics.publishes_out);
            let m = &delivery.msg;
            let res = encode_publish(
                out,
                version,
                m.topic.as_bytes(),
                &m.payload,
                delivery.qos,
                delivery.retain,
                dup,
                pkid,
                if version.is_v5() {
                    m.props.as_ref()
                } else {
                    None
                },
            );
            if let Err(e) = res {
                tracing::warn!(topic = %m.topic, "cannot encode publish: {e}");
            }
        }
        Outgoing::PubRel(pkid) => {
            let _ = encode(&Packet::PubRel(ack(pkid)), version, out);
        }
    }
}

/// Send acks and small queued messages straight from the reader after it processed a chunk,
/// instead of waiting for the writer's turn behind every other runnable task (a QoS 1/2
/// window refill or a publisher's PUBACK then leaves within the same poll). Only while the
/// writer is idle, so nothing of its own is half written; what the socket does not take
/// stays in `out` for the writer, in order. Large payloads stay with the writer (zero-copy).
fn flush_inline(shard: &Shard, conn: &Conn, io: &Io) {
    if !conn.writer_idle.get() || conn.writer_done.get() || conn.killed.get() {
        return;
    }
    let mut out = conn.out.borrow_mut();
    {
        let mut st = conn.session.state.borrow_mut();
        while out.len() < WRITE_BATCH {
            match st.next_payload_len() {
                Some(len) if len < ZERO_COPY_PAYLOAD => {}
                _ => break,
            }
            match st.next_outgoing() {
                Some(o) => write_outgoing(shard, &mut out, conn.version, o),
                None => break,
            }
        }
        shard.pressure.on_dequeue(&conn.session, &st);
    }
    if out.is_empty() {
        return;
    }
    match io.try_send(&out) {
        Ok(0) => {}
        Ok(n) => {
            conn.progress_ms.set(crate::rt::clock_ms());
            conn.wrote.set(true);
            if n == out.len() {
                // All sent: hold no write buffer while idle.
                *out = BytesMut::new();
            } else {
                bytes::Buf::advance(&mut *out, n);
            }
        }
        // The writer meets the same error on its next write and ends the connection.
        Err(_) => {}
    }
}

/// Payloads at least this large are written from their shared buffer, not copied into the
/// connection's write buffer (one payload, any number of subscribers, no copies).
const ZERO_COPY_PAYLOAD: usize = 16 * 1024;

/// The writer task: coalesces control packets and queued messages into one write; a large
/// payload goes out straight from the publication's shared buffer after its header.
async fn writer(shard: Rc<Shard>, conn: Rc<Conn>, io: Rc<Io>) {
    loop {
        let mut tail: Option<bytes::Bytes> = None;
        let buf = {
            let mut out = conn.out.borrow_mut();
            if !conn.killed.get() {
                let mut st = conn.session.state.borrow_mut();
                while out.len() < WRITE_BATCH {
                    match st.next_outgoing() {
                        Some(Outgoing::Publish {
                            pkid,
                            dup,
                            delivery,
                        }) if delivery.msg.payload.len() >= ZERO_COPY_PAYLOAD => {
                            let m = &delivery.msg;
                            let res = encode_publish_header(
                                &mut out,
                                conn.version,
                                m.topic.as_bytes(),
                                m.payload.len(),
                                delivery.qos,
                                delivery.retain,
                                dup,
                                pkid,
                                if conn.version.is_v5() {
                                    m.props.as_ref()
                                } else {
                                    None
                                },
                            );
                            match res {
                                Ok(()) => {
                                    Metrics::inc(&shard.metrics.publishes_out);
                                    tail = Some(m.payload.clone());
                                    break;
                                }
                                Err(e) => {
                                    tracing::warn!(topic = %m.topic, "cannot encode publish: {e}")
                                }
                            }
                        }
                        Some(o) => write_outgoing(&shard, &mut out, conn.version, o),
                        None => break,
                    }
                }
                shard.pressure.on_dequeue(&conn.session, &st);
            }
            std::mem::take(&mut *out)
        };
        if buf.is_empty() {
            if conn.closing.get() || conn.killed.get() || conn.writer_stop.get() {
                break;
            }
            // Idle: hold no write buffer while waiting.
            *conn.out.borrow_mut() = BytesMut::new();
            conn.writer_idle.set(true);
            conn.writer_wake.notified().await;
            conn.writer_idle.set(false);
            continue;
        }
        if conn.killed.get() {
            break;
        }
        if io.write_all_tracked(&buf, &conn.progress_ms).await.is_err() {
            break;
        }
        if let Some(payload) = tail {
            if io
                .write_all_tracked(&payload, &conn.progress_ms)
                .await
                .is_err()
            {
                break;
            }
        }
        conn.wrote.set(true);
        conn.reader_wake.notify();
        let mut buf = buf;
        if buf.capacity() <= 16 * 1024 {
            buf.clear();
            let mut out = conn.out.borrow_mut();
            if out.is_empty() {
                *out = buf;
            }
        }
    }
    conn.writer_done.set(true);
    conn.reader_wake.notify();
    if conn.closing.get() {
        io.shutdown();
    }
}

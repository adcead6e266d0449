//! A served connection's life on its home shard: the reader loop, parking an idle
//! connection and resuming it, and the tear-down (table, session, will, counters).

use super::*;

/// Continue a parked connection whose socket became readable, that has messages to send,
/// or that must be closed. No-op unless it is parked.
pub(super) fn resume(shard: &Rc<Shard>, conn: &Rc<Conn>) {
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
    let io = Io::with_layers(stream, conn.parked_tls.take(), conn.parked_ws.take());
    if let Some(addr) = conn.peer {
        io.set_peer(addr);
    }
    glommio::spawn_local(run(shard.clone(), conn.clone(), io, BytesMut::new())).detach();
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
pub(super) async fn run(shard: Rc<Shard>, conn: Rc<Conn>, io: Rc<Io>, mut rest: BytesMut) {
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
        let idle = conn.out.borrow().is_empty()
            && !io.has_output()
            && !conn.session.state.borrow().has_sendable();
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
pub(super) fn park(shard: &Rc<Shard>, conn: &Rc<Conn>, io: Rc<Io>) -> std::io::Result<()> {
    let parts = io
        .into_parts()
        .map_err(|_| std::io::Error::other("socket still shared"))?;
    let fd = detach_stream(parts.stream)?;
    let parked = match shard.parking_lot() {
        Some(lot) => lot.park(fd, conn.id),
        None => Err(std::io::Error::other("parking is off")),
    };
    if let Err(e) = parked {
        close_fd(fd);
        return Err(e);
    }
    conn.parked_fd.set(fd);
    conn.parked_tls.set(parts.tls);
    conn.parked_ws.set(parts.ws);
    Metrics::inc(&shard.metrics.parks);
    tracing::debug!(conn = conn.id, "connection parked");
    shard.arm_park_check(conn);
    Ok(())
}

/// The end of a connection: table, session, will, counters.
pub(super) fn teardown(shard: &Rc<Shard>, conn: &Rc<Conn>, graceful: bool) {
    conn.kill();
    conn.io.borrow_mut().take();
    let cell = conn.session.clone();
    shard.conns.borrow_mut().remove(&conn.id);
    let current = matches!(cell.conn.borrow().as_ref(), Some(c) if Rc::ptr_eq(c, conn));
    if current {
        cell.conn.replace(None);
        shard.pressure.release(&cell);
        shard.shared_member_left(&cell);
    }
    // A normal DISCONNECT already discarded the will [MQTT-3.14.4-3]; what is left is
    // published now or after its delay ([`crate::expiry`]).
    let will = conn.will.borrow_mut().take();
    shard.connection_ended(&cell, current, will, conn.user.clone());
    shard.release_connection(conn.listener);
    tracing::info!(
        client = %cell.state.borrow().client_id,
        conn = conn.id,
        peer = conn.peer().map(tracing::field::display),
        reason = %conn.ending.get().describe(),
        graceful,
        connected_secs = shard.now().saturating_sub(conn.since as u64),
        "client disconnected"
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// The client sent DISCONNECT.
    Disconnect,
    /// EOF, error, violation or kill.
    Abrupt,
    /// Idle: the shard asked for the connection to park.
    Park,
}

pub(super) async fn read_loop(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    io: &Io,
    dec: &mut Decoder,
    mut buf: BytesMut,
) -> End {
    let mut held = Held::default();
    loop {
        loop {
            match dec.decode(&mut buf) {
                // Boxed: subscribing is rare and its future is large; the per-connection
                // reader state stays small.
                Ok(Some(Packet::Subscribe(sub))) => Box::pin(subscribe(shard, conn, sub)).await,
                Ok(Some(p)) => {
                    let over_rate = match &p {
                        Packet::Publish(_) => limits::publish_delay(shard, conn),
                        _ => None,
                    };
                    if let Some(wait) = over_rate {
                        // Over `max_publish_rate`: stop reading until the bucket refills.
                        if !Box::pin(limits::throttle(shard, conn, &mut held, wait)).await {
                            return End::Abrupt;
                        }
                    }
                    match handle(shard, conn, p, &mut held) {
                        Flow::Continue => {}
                        Flow::Disconnect => {
                            // Acknowledge what came before the DISCONNECT (best effort).
                            release_acks(shard, conn, &mut held).await;
                            return End::Disconnect;
                        }
                        Flow::Close => return End::Abrupt,
                        Flow::Violation(code) => {
                            conn.send_disconnect(code);
                            return End::Abrupt;
                        }
                    }
                    if shard.pressure.take_hit() {
                        // A subscriber this publisher feeds is behind: stop reading (the
                        // rest stays in `buf` and the socket) until it catches up. Boxed:
                        // the wait is rare and would otherwise enlarge every reader.
                        if !Box::pin(release_acks(shard, conn, &mut held)).await {
                            conn.send_disconnect(reason::UNSPECIFIED_ERROR);
                            return End::Abrupt;
                        }
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
                    // 5.0: say why first [MQTT-4.13.1-1] (0x81 malformed, 0x82 protocol
                    // error, 0x95 packet too large, ...).
                    conn.send_disconnect(e.disconnect_reason());
                    return End::Abrupt;
                }
            }
        }
        if buf.is_empty() {
            // Release the arena chunk this buffer pointed into; idle connections hold none.
            buf = BytesMut::new();
        }
        // Acknowledgements go out once the log made durable what they acknowledge: one
        // wait per chunk read, however many publishes it held. Boxed: only durability
        // batch/always waits, and the future would otherwise enlarge every reader.
        if !held.buf.is_empty() && !Box::pin(release_acks(shard, conn, &mut held)).await {
            conn.send_disconnect(reason::UNSPECIFIED_ERROR);
            return End::Abrupt;
        }
        flush_inline(shard, conn, io);
        // With TLS, ciphertext the socket did not take (also handshake and key-update
        // answers) is the writer's to send.
        if !conn.out.borrow().is_empty() || io.has_output() {
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
                    Metrics::add(&shard.metrics.bytes_received, chunk.len() as u64);
                    conn.last_seen.set(shard.now());
                    conn.parking.set(false);
                    if buf.is_empty() {
                        buf = chunk;
                    } else {
                        buf.extend_from_slice(&chunk);
                    }
                    break;
                }
                Some(Ok(None)) => {
                    conn.note_end(Ending::PeerClosed);
                    return End::Abrupt;
                }
                Some(Err(e)) => {
                    tracing::debug!(conn = conn.id, "read failed: {e}");
                    conn.note_end(Ending::SocketError);
                    ws_violation(shard, io, &e);
                    return End::Abrupt;
                }
            }
        }
    }
}

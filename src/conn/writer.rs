//! The write side: encoding queued messages, the writer task (coalesced writes, zero-copy
//! large payloads) and the reader's inline flush of acks and small messages.

use super::*;

/// Encode one queued item for `conn`. A PUBLISH that would exceed the client's Maximum
/// Packet Size is not written: it is counted and its packet id returned, and the caller
/// drops it from the session as if delivered [MQTT-3.1.2-25].
pub(super) fn write_outgoing(
    shard: &Shard,
    out: &mut BytesMut,
    conn: &Conn,
    o: Outgoing,
    now: &crate::rt::LazyNow,
) -> Option<u16> {
    match o {
        Outgoing::Publish {
            pkid,
            dup,
            delivery,
        } => {
            let m = &delivery.msg;
            let po = v5::publish_out(conn.version, conn.v5.as_deref(), &delivery, now);
            let before = out.len();
            let res = encode_publish(
                out,
                conn.version,
                po.topic,
                &m.payload,
                delivery.qos,
                delivery.retain,
                dup,
                pkid,
                po.props(),
            );
            if let Err(e) = res {
                tracing::warn!(topic = %m.topic, "cannot encode publish: {e}");
                return None;
            }
            if let Some(v) = conn.v5.as_deref() {
                if out.len() - before > v.max_packet_out {
                    out.truncate(before);
                    v.undo_alias(&po);
                    Metrics::inc(&shard.metrics.dropped_too_large_for_client);
                    return (pkid != 0).then_some(pkid);
                }
            }
            Metrics::inc(&shard.metrics.publishes_out);
        }
        Outgoing::PubRel(pkid) => {
            let _ = encode(&Packet::PubRel(ack(pkid)), conn.version, out);
        }
    }
    None
}

/// Take the next sendable item from the session, first dropping expired messages
/// (counted) [MQTT-3.3.2-5].
pub(super) fn next_sendable(
    shard: &Shard,
    st: &mut crate::session::Session,
    now: &crate::rt::LazyNow,
) -> Option<Outgoing> {
    let expired = st.drop_expired(now);
    if expired > 0 {
        let c = &shard.metrics.dropped_expired;
        c.set(c.get() + expired as u64);
    }
    st.next_outgoing()
}

/// Send acks and small queued messages straight from the reader after it processed a chunk,
/// instead of waiting for the writer's turn behind every other runnable task (a QoS 1/2
/// window refill or a publisher's PUBACK then leaves within the same poll). Only while the
/// writer is idle, so nothing of its own is half written; what the socket does not take
/// stays in `out` for the writer, in order. Large payloads stay with the writer (zero-copy).
pub(super) fn flush_inline(shard: &Shard, conn: &Conn, io: &Io) {
    if !conn.writer_idle.get() || conn.writer_done.get() || conn.killed.get() {
        return;
    }
    let mut out = conn.out.borrow_mut();
    {
        let mut st = conn.session.state.borrow_mut();
        let now = crate::rt::LazyNow::default();
        while out.len() < WRITE_BATCH {
            match st.next_payload_len() {
                Some(len) if len < ZERO_COPY_PAYLOAD => {}
                _ => break,
            }
            match next_sendable(shard, &mut st, &now) {
                Some(o) => {
                    if let Some(pkid) = write_outgoing(shard, &mut out, conn, o, &now) {
                        st.forget(pkid);
                    }
                }
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
pub(super) const ZERO_COPY_PAYLOAD: usize = 16 * 1024;

/// The writer task: coalesces control packets and queued messages into one write; a large
/// payload goes out straight from the publication's shared buffer after its header.
pub(super) async fn writer(shard: Rc<Shard>, conn: Rc<Conn>, io: Rc<Io>) {
    loop {
        let mut tail: Option<bytes::Bytes> = None;
        let buf = {
            let mut out = conn.out.borrow_mut();
            if !conn.killed.get() {
                let mut st = conn.session.state.borrow_mut();
                let now = crate::rt::LazyNow::default();
                while out.len() < WRITE_BATCH {
                    match next_sendable(&shard, &mut st, &now) {
                        Some(Outgoing::Publish {
                            pkid,
                            dup,
                            delivery,
                        }) if delivery.msg.payload.len() >= ZERO_COPY_PAYLOAD => {
                            let m = &delivery.msg;
                            let po =
                                v5::publish_out(conn.version, conn.v5.as_deref(), &delivery, &now);
                            let before = out.len();
                            let res = encode_publish_header(
                                &mut out,
                                conn.version,
                                po.topic,
                                m.payload.len(),
                                delivery.qos,
                                delivery.retain,
                                dup,
                                pkid,
                                po.props(),
                            );
                            if let Err(e) = res {
                                tracing::warn!(topic = %m.topic, "cannot encode publish: {e}");
                                continue;
                            }
                            let size = out.len() - before + m.payload.len();
                            if let Some(v) = conn.v5.as_deref() {
                                if size > v.max_packet_out {
                                    // [MQTT-3.1.2-25] discarded as if sent.
                                    out.truncate(before);
                                    v.undo_alias(&po);
                                    Metrics::inc(&shard.metrics.dropped_too_large_for_client);
                                    if pkid != 0 {
                                        st.forget(pkid);
                                    }
                                    continue;
                                }
                            }
                            Metrics::inc(&shard.metrics.publishes_out);
                            tail = Some(m.payload.clone());
                            break;
                        }
                        Some(o) => {
                            if let Some(pkid) = write_outgoing(&shard, &mut out, &conn, o, &now) {
                                st.forget(pkid);
                            }
                        }
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
        if buf.len() > WRITE_HIGH_WATER {
            // Only then can the reader be waiting for write backpressure (it alone fills
            // `out`). Waking it after every write would cost a futile read per write now
            // that its read races `reader_wake`.
            conn.reader_wake.notify();
        }
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

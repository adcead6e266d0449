//! The write side: encoding queued messages, the writer task (coalesced writes, zero-copy
//! large payloads) and the reader's inline flush of acks and small messages.

use super::*;

/// What [`write_outgoing`] did with one queued item.
pub(super) enum Wrote {
    /// Encoded into the buffer.
    Done,
    /// The header is in the buffer; this payload goes out after it from its shared buffer.
    Tail(bytes::Bytes),
    /// Not written: over the client's Maximum Packet Size. Counted; the caller drops this
    /// packet id (if not 0) from the session as if delivered [MQTT-3.1.2-25].
    Discarded(u16),
}

/// Encode one queued item for `conn`. With `zero_copy`, a payload of at least
/// [`ZERO_COPY_PAYLOAD`] bytes is not copied: only its header is written and the payload
/// is returned as [`Wrote::Tail`].
pub(super) fn write_outgoing(
    shard: &Shard,
    out: &mut BytesMut,
    conn: &Conn,
    o: Outgoing,
    now: &crate::rt::LazyNow,
    zero_copy: bool,
) -> Wrote {
    let (pkid, dup, delivery) = match o {
        Outgoing::Publish {
            pkid,
            dup,
            delivery,
        } => (pkid, dup, delivery),
        Outgoing::PubRel(pkid) => {
            let _ = encode(&Packet::PubRel(ack(pkid)), conn.version, out);
            return Wrote::Done;
        }
    };
    let m = &delivery.msg;
    let tail = zero_copy && m.payload.len() >= ZERO_COPY_PAYLOAD;
    let po = v5::publish_out(conn.version, conn.v5.as_deref(), &delivery, now);
    let before = out.len();
    let (q, r) = (delivery.qos, delivery.retain);
    let res = if tail {
        let len = m.payload.len();
        encode_publish_header(
            out,
            conn.version,
            po.topic,
            len,
            q,
            r,
            dup,
            pkid,
            po.props(),
        )
    } else {
        encode_publish(
            out,
            conn.version,
            po.topic,
            &m.payload,
            q,
            r,
            dup,
            pkid,
            po.props(),
        )
    };
    if let Err(e) = res {
        tracing::warn!(topic = %m.topic, "cannot encode publish: {e}");
        return Wrote::Done;
    }
    let size = out.len() - before + if tail { m.payload.len() } else { 0 };
    if let Some(v) = conn.v5.as_deref() {
        if size > v.max_packet_out {
            out.truncate(before);
            v.undo_alias(&po);
            Metrics::inc(&shard.metrics.dropped_too_large_for_client);
            return Wrote::Discarded(pkid);
        }
    }
    Metrics::inc(&shard.metrics.publishes_out[q as usize]);
    Metrics::add(
        &shard.metrics.publish_bytes_out[q as usize],
        m.payload.len() as u64,
    );
    if tail {
        Wrote::Tail(m.payload.clone())
    } else {
        Wrote::Done
    }
}

/// Take the next sendable item from the session, first dropping expired messages
/// (counted) [MQTT-3.3.2-5].
pub(super) fn next_sendable(
    shard: &Shard,
    cell: &SessionCell,
    st: &mut crate::session::Session,
    now: &crate::rt::LazyNow,
) -> Option<Outgoing> {
    let (expired, logged) = st.drop_expired(now);
    if expired > 0 {
        let c = &shard.metrics.dropped_expired;
        c.set(c.get() + expired as u64);
        shard.log_dropped_front(cell, st, logged);
    }
    let o = st.next_outgoing()?;
    if let Outgoing::Publish { pkid, delivery, .. } = &o {
        if delivery.logged() {
            shard.log_pkid(cell, st, PkidRec::Send, *pkid);
        }
    }
    Some(o)
}

/// Drop an in-flight message that was discarded instead of sent (as if delivered).
pub(super) fn forget(
    shard: &Shard,
    cell: &SessionCell,
    st: &mut crate::session::Session,
    pkid: u16,
) {
    st.forget(pkid);
    if pkid != 0 {
        shard.log_pkid(cell, st, PkidRec::Ack, pkid);
    }
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
            match next_sendable(shard, &conn.session, &mut st, &now) {
                Some(o) => {
                    if let Wrote::Discarded(pkid) =
                        write_outgoing(shard, &mut out, conn, o, &now, false)
                    {
                        forget(shard, &conn.session, &mut st, pkid);
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
            Metrics::add(&shard.metrics.bytes_sent, n as u64);
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
                    let Some(o) = next_sendable(&shard, &conn.session, &mut st, &now) else {
                        break;
                    };
                    match write_outgoing(&shard, &mut out, &conn, o, &now, true) {
                        Wrote::Done => {}
                        Wrote::Tail(payload) => {
                            tail = Some(payload);
                            break;
                        }
                        Wrote::Discarded(pkid) => forget(&shard, &conn.session, &mut st, pkid),
                    }
                }
                shard.pressure.on_dequeue(&conn.session, &st);
            }
            std::mem::take(&mut *out)
        };
        if buf.is_empty() {
            if io.has_output() && !conn.killed.get() {
                // TLS records sealed outside this task (inline flush, handshake answers).
                if io.flush(&conn.progress_ms).await.is_err() {
                    break;
                }
                continue;
            }
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
        Metrics::add(&shard.metrics.bytes_sent, buf.len() as u64);
        if let Some(payload) = tail {
            if io
                .write_all_tracked(&payload, &conn.progress_ms)
                .await
                .is_err()
            {
                break;
            }
            Metrics::add(&shard.metrics.bytes_sent, payload.len() as u64);
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

//! The write side: encoding queued messages, the writer task (coalesced writes, zero-copy
//! large payloads) and the reader's inline flush of acks and small messages.

use super::*;

pub(super) fn write_outgoing(
    shard: &Shard,
    out: &mut BytesMut,
    version: ProtocolVersion,
    o: Outgoing,
) {
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
pub(super) fn flush_inline(shard: &Shard, conn: &Conn, io: &Io) {
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

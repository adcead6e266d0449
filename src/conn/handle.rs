//! Protocol handling of one decoded packet from a client: publishes, acknowledgements,
//! (un)subscriptions, pings and DISCONNECT.

use super::*;

pub(super) enum Flow {
    Continue,
    Disconnect,
    Close,
    /// Close after telling a 5.0 client why (DISCONNECT with this reason code).
    Violation(u8),
}

/// Whether this server takes the PUBLISH at all: QoS within `maximum_qos`
/// [MQTT-3.2.2-11] and RETAIN only when retained messages are available [MQTT-3.2.2-14].
fn admit_publish(shard: &Shard, conn: &Conn, p: &crate::proto::Publish) -> Result<(), u8> {
    let cfg = &shard.cfg;
    let code = if p.qos as u8 > cfg.maximum_qos {
        reason::QOS_NOT_SUPPORTED
    } else if p.retain && !cfg.retain_available {
        reason::RETAIN_NOT_SUPPORTED
    } else {
        return Ok(());
    };
    Metrics::inc(&shard.metrics.publishes_refused);
    tracing::info!(
        conn = conn.id,
        qos = p.qos as u8,
        retain = p.retain,
        "closing connection: publish not supported (maximum_qos / retain_available)"
    );
    Err(code)
}

/// A PUBLISH whose topic is over `max_topic_length` / `max_topic_levels`, refused before it
/// is logged or routed. 5.0: 0x90 Topic Name invalid, "the Topic Name is not malformed, but
/// is not accepted by this Server" (§3.4.2.1, §3.14.2.1): on the PUBACK / PUBREC of a QoS 1/2
/// publish, which ends that flow without a re-send loop and keeps the connection, and as a
/// DISCONNECT for QoS 0, which has no acknowledgement to carry it. 3.1.x has no way to refuse
/// a publish: acknowledge it as usual or close the connection [MQTT-3.3.5-2]; we close, as
/// acknowledging would tell the client that a message nobody gets was delivered.
fn refuse_topic_over_limit(
    shard: &Shard,
    conn: &Conn,
    held: &mut Held,
    p: &crate::proto::Publish,
    e: crate::proto::topic::TopicError,
) -> Flow {
    Metrics::inc(&shard.metrics.topic_name_over_limit);
    tracing::debug!(conn = conn.id, qos = p.qos as u8, "publish refused: {e}");
    if !conn.version.is_v5() || p.qos == QoS::AtMostOnce {
        return Flow::Violation(reason::TOPIC_NAME_INVALID);
    }
    let mut a = ack(p.pkid);
    a.reason = reason::TOPIC_NAME_INVALID;
    match p.qos {
        QoS::ExactlyOnce => send_ack(shard, conn, held, &Packet::PubRec(a)),
        _ => send_ack(shard, conn, held, &Packet::PubAck(a)),
    }
    Flow::Continue
}

/// Acknowledgements of one read chunk that must wait until the log has made durable what
/// they acknowledge (durability batch/always). The reader releases them into the
/// connection's write buffer, in order, once the log's flush covers `wait`.
#[derive(Default)]
pub(super) struct Held {
    pub buf: BytesMut,
    pub wait: u64,
    /// Peers the chunk's logged publications went to (data mesh, ctrl mesh): they must
    /// confirm they logged their deliveries first.
    pub peers: (ShardSet, ShardSet),
    /// Incoming QoS 2 packet ids of the chunk: once the peers confirmed, they are routed.
    pub q2: Vec<u16>,
}

/// Send an acknowledgement (PUBACK, PUBREC, PUBCOMP, UNSUBACK): at once without a log;
/// with one, at the end of the chunk, once everything logged so far is durable and the
/// peers that took the chunk's publications have logged their deliveries.
fn send_ack(shard: &Shard, conn: &Conn, held: &mut Held, p: &Packet) {
    match shard.journal() {
        Some(j) => {
            held.wait = held.wait.max(j.last_seq());
            if let Err(e) = encode(p, conn.version, &mut held.buf) {
                tracing::error!(conn = conn.id, "cannot encode {:?}: {e}", p.type_id());
            }
        }
        None => conn.send(p),
    }
}

/// Release held acknowledgements once durable. `false`: the log failed and they never
/// will be — the connection must end without them.
pub(super) async fn release_acks(shard: &Shard, conn: &Conn, held: &mut Held) -> bool {
    if held.buf.is_empty() {
        return true;
    }
    if let Some(j) = shard.journal() {
        if j.wait_durable(held.wait).await.is_err() {
            return false;
        }
    }
    let (data, ctrl) = std::mem::take(&mut held.peers);
    if !shard.barrier(data, ctrl).await {
        return false;
    }
    if !held.q2.is_empty() {
        let mut st = conn.session.state.borrow_mut();
        for pkid in held.q2.drain(..) {
            shard.log_q2_routed(&conn.session, &mut st, pkid);
        }
    }
    conn.out.borrow_mut().extend_from_slice(&held.buf);
    held.buf.clear();
    if held.buf.capacity() > 16 * 1024 {
        held.buf = BytesMut::new();
    }
    true
}

pub(super) fn handle(shard: &Rc<Shard>, conn: &Rc<Conn>, p: Packet, held: &mut Held) -> Flow {
    match p {
        Packet::Publish(p) => {
            Metrics::inc(&shard.metrics.publishes_in[p.qos as usize]);
            Metrics::add(
                &shard.metrics.publish_bytes_in[p.qos as usize],
                p.payload.len() as u64,
            );
            if let Err(code) = admit_publish(shard, conn, &p) {
                return Flow::Violation(code);
            }
            if let Err(e) = super::limits::topic_within_limits(shard, &p.topic) {
                return refuse_topic_over_limit(shard, conn, held, &p, e);
            }
            let mut p = p;
            if let Some(alias) = p.properties.topic_alias.take() {
                let resolved = match conn.v5.as_deref() {
                    Some(v) => v.resolve_alias(&mut p.topic, alias, shard.cfg.topic_alias_maximum),
                    None => Err(reason::PROTOCOL_ERROR),
                };
                if let Err(code) = resolved {
                    Metrics::inc(&shard.metrics.topic_alias_errors);
                    tracing::info!(
                        conn = conn.id,
                        alias,
                        "closing connection: invalid topic alias"
                    );
                    return Flow::Violation(code);
                }
            }
            let pkid = p.pkid;
            let qos = p.qos;
            if crate::ops::sys::is_sys_topic(&p.topic) && shard.global.acl.is_none() {
                // `$SYS/...` is the broker's own tree: refused like an ACL denial. (With
                // an ACL, only a rule naming `$SYS` can allow it: `#` never matches it.)
                Metrics::inc(&shard.metrics.publishes_denied_sys);
                tracing::debug!(conn = conn.id, topic = %p.topic, "publish to $SYS refused");
                refuse_acl(shard, conn, held, qos, pkid);
                return Flow::Continue;
            }
            if !shard.acl_may_publish(conn, &p.topic) {
                // Checked before anything is logged or routed: a refused message never
                // reaches the log, the retained store or a subscriber.
                refuse_acl(shard, conn, held, qos, pkid);
                return Flow::Continue;
            }
            let fresh = match qos {
                QoS::ExactlyOnce => {
                    let mut st = conn.session.state.borrow_mut();
                    if st.incoming_qos2_pending() >= usize::from(shard.cfg.receive_maximum)
                        && conn.version.is_v5()
                    {
                        // [MQTT-3.3.4-7]: more unacknowledged QoS 2 publishes than our
                        // Receive Maximum.
                        drop(st);
                        Metrics::inc(&shard.metrics.receive_maximum_exceeded);
                        tracing::info!(
                            conn = conn.id,
                            "closing connection: receive maximum exceeded"
                        );
                        return Flow::Violation(reason::RECEIVE_MAXIMUM_EXCEEDED);
                    }
                    st.incoming_qos2(pkid)
                }
                _ => true,
            };
            let mut routed = true;
            if fresh {
                shard.pressure.take_hit(); // only this publish's deliveries count
                let v5 = conn.version.is_v5();
                // No Local (v5) compares the publisher's client id; a 3.1.x publisher can
                // never be its own No Local subscriber, so skip the per-message clone.
                let origin = if v5 {
                    conn.session.state.borrow().client_id.clone()
                } else {
                    Utf8Bytes::default()
                };
                let (props, expiry) = if v5 && !p.properties.is_empty() {
                    let expiry = crate::expiry::expiry_of(&p.properties);
                    (Some(p.properties), expiry)
                } else {
                    (None, None)
                };
                let msg = Publication {
                    topic: p.topic,
                    payload: p.payload,
                    qos,
                    retain: p.retain,
                    props,
                    origin,
                    expiry,
                    id: 0,
                };
                match shard.admit_logged(msg) {
                    Ok(msg) => {
                        if qos == QoS::ExactlyOnce && msg.id != 0 {
                            // Logged before routing: a retransmission after a crash is then a
                            // duplicate, and recovery finishes routing what was cut short.
                            shard.log_q2in(&conn.session, pkid, &msg);
                            held.q2.push(pkid);
                        }
                        shard.take_touched();
                        routed = shard.publish(msg);
                        let (d, c) = shard.take_touched();
                        held.peers.0 .0 |= d.0;
                        held.peers.1 .0 |= c.0;
                    }
                    Err((refused, _)) => {
                        return refuse_unlogged(shard, conn, held, qos, pkid, refused)
                    }
                }
            }
            if !routed {
                Metrics::inc(&shard.metrics.dropped_no_subscribers);
            }
            let mut a = ack(pkid);
            if !routed && conn.version.is_v5() {
                // §3.4.2.1: accepted, but no subscription matched (a retained message is
                // still stored).
                a.reason = 0x10;
            }
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => send_ack(shard, conn, held, &Packet::PubAck(a)),
                QoS::ExactlyOnce => send_ack(shard, conn, held, &Packet::PubRec(a)),
            }
        }
        Packet::PubAck(r) => {
            let mut st = conn.session.state.borrow_mut();
            if st.on_puback(r.pkid) {
                shard.log_pkid(&conn.session, &st, PkidRec::Ack, r.pkid);
                conn.wake_writer();
            }
        }
        Packet::PubRec(r) => {
            let res = {
                let mut st = conn.session.state.borrow_mut();
                let res = st.on_pubrec(r.pkid);
                if res == PubRecResult::Release {
                    shard.log_pkid(&conn.session, &st, PkidRec::Rel, r.pkid);
                }
                res
            };
            let mut rel = ack(r.pkid);
            if res == PubRecResult::Unknown && conn.version.is_v5() {
                rel.reason = 0x92; // packet identifier not found
            }
            conn.send(&Packet::PubRel(rel));
        }
        Packet::PubRel(r) => {
            let known = {
                let mut st = conn.session.state.borrow_mut();
                let known = st.incoming_pubrel(r.pkid);
                if known {
                    shard.log_pkid(&conn.session, &st, PkidRec::Q2Rel, r.pkid);
                }
                known
            };
            let mut comp = ack(r.pkid);
            if !known && conn.version.is_v5() {
                comp.reason = 0x92;
            }
            send_ack(shard, conn, held, &Packet::PubComp(comp));
        }
        Packet::PubComp(r) => {
            let mut st = conn.session.state.borrow_mut();
            if st.on_pubcomp(r.pkid) {
                shard.log_pkid(&conn.session, &st, PkidRec::Ack, r.pkid);
                conn.wake_writer();
            }
        }
        Packet::Unsubscribe(u) => unsubscribe(shard, conn, u, held),
        Packet::PingReq => conn.send(&Packet::PingResp),
        Packet::Disconnect(d) => {
            if let Some(e) = d.properties.session_expiry_interval {
                let cell = &conn.session;
                if cell.expiry.get() == 0 && e != 0 {
                    // [MQTT-3.14.2-2] a session that was to end with the connection cannot
                    // be extended at DISCONNECT.
                    Metrics::inc(&shard.metrics.protocol_errors);
                    tracing::info!(
                        conn = conn.id,
                        "closing connection: DISCONNECT sets a session expiry after CONNECT set 0"
                    );
                    return Flow::Violation(reason::PROTOCOL_ERROR);
                }
                cell.expiry.set(e.min(shard.cfg.max_session_expiry));
            }
            // [MQTT-3.14.4-3] discard the will on DISCONNECT, except "Disconnect with Will
            // Message" (0x04), which asks for it to be published.
            if d.reason != 0x04 {
                conn.will.replace(None);
            }
            conn.note_end(Ending::ClientDisconnect(d.reason));
            return Flow::Disconnect;
        }
        Packet::Auth(a) => return reauthenticate(shard, conn, a),
        other => {
            // CONNACK, SUBACK, UNSUBACK, PINGRESP, AUTH (3.1.x) from a client: protocol error.
            Metrics::inc(&shard.metrics.protocol_errors);
            tracing::info!(
                conn = conn.id,
                "closing connection: unexpected packet type {} from a client",
                other.type_id()
            );
            conn.note_end(Ending::Server(reason::PROTOCOL_ERROR));
            return Flow::Close;
        }
    }
    Flow::Continue
}

/// A QoS ≥ 1 publish the log did not take. Disk full: 5.0 gets PUBACK/PUBREC 0x97 (Quota
/// exceeded) and the connection carries on (QoS 0 keeps flowing); 3.1.x has no way to say
/// no, so the connection is closed without an acknowledgement (the client re-sends later).
/// A failed log: nothing is acknowledged any more; the connection ends (5.0: DISCONNECT
/// 0x80 Unspecified error).
fn refuse_unlogged(
    shard: &Shard,
    conn: &Conn,
    held: &mut Held,
    qos: QoS,
    pkid: u16,
    refused: crate::journal::Refused,
) -> Flow {
    if qos == QoS::ExactlyOnce {
        // Not taken: a re-send must not count as a duplicate.
        let mut st = conn.session.state.borrow_mut();
        if st.incoming_pubrel(pkid) {
            shard.log_pkid(&conn.session, &st, PkidRec::Q2Rel, pkid);
        }
    }
    if refused == crate::journal::Refused::Failed {
        tracing::error!(conn = conn.id, "closing connection: the durable log failed");
        return Flow::Violation(reason::UNSPECIFIED_ERROR);
    }
    if !conn.version.is_v5() {
        tracing::warn!(
            conn = conn.id,
            "closing 3.1.x connection: disk full, QoS {} publish refused",
            qos as u8
        );
        conn.note_end(Ending::Server(reason::QUOTA_EXCEEDED));
        return Flow::Close;
    }
    let mut a = ack(pkid);
    a.reason = reason::QUOTA_EXCEEDED;
    match qos {
        QoS::ExactlyOnce => send_ack(shard, conn, held, &Packet::PubRec(a)),
        _ => send_ack(shard, conn, held, &Packet::PubAck(a)),
    }
    Flow::Continue
}

/// A publish the ACL refused. 5.0: PUBACK/PUBREC 0x87 (Not authorized); 3.1.x has no way
/// to say no but closing, and the spec allows a positive acknowledgement instead
/// [MQTT-3.3.5-2]: the message is dropped and acknowledged as usual. QoS 0: dropped.
fn refuse_acl(shard: &Shard, conn: &Conn, held: &mut Held, qos: QoS, pkid: u16) {
    let mut a = ack(pkid);
    if conn.version.is_v5() {
        a.reason = reason::NOT_AUTHORIZED;
    }
    match qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => send_ack(shard, conn, held, &Packet::PubAck(a)),
        // Nothing is remembered: 5.0 ends the exchange with the failure code; a 3.1.x
        // PUBREL for it is answered with PUBCOMP like any unknown one.
        QoS::ExactlyOnce => send_ack(shard, conn, held, &Packet::PubRec(a)),
    }
}

pub(super) fn ack(pkid: u16) -> PubResp {
    PubResp {
        pkid,
        reason: 0,
        properties: Default::default(),
    }
}

pub(super) async fn subscribe(shard: &Rc<Shard>, conn: &Rc<Conn>, s: Subscribe) {
    let key = conn.session.key;
    // At most one identifier (the decoder rejects 0 and repeats); never from 3.1.x.
    let sub_id = s
        .properties
        .subscription_identifiers
        .first()
        .copied()
        .unwrap_or(0);
    let mut codes = Vec::with_capacity(s.filters.len());
    let mut new_routes = Vec::new();
    let mut retained: Vec<(Utf8Bytes, SubOptions)> = Vec::new();
    // Granted QoS is capped by the server's Maximum QoS (§3.2.2.3.4, [MQTT-3.8.4-7]).
    let max_qos = QoS::from_u8(shard.cfg.maximum_qos).unwrap_or(QoS::ExactlyOnce);
    for (filter, mut opts) in s.filters {
        opts.qos = opts.qos.min(max_qos);
        // The decoder validated `$share/{name}/{filter}` [MQTT-4.8.2-1, MQTT-4.8.2-2] and
        // refused No Local on it [MQTT-3.8.3-4].
        let shared = filter.starts_with(crate::proto::topic::SHARE_PREFIX);
        if let Err(e) = super::limits::topic_within_limits(shard, &filter) {
            Metrics::inc(&shard.metrics.topic_filter_over_limit);
            tracing::debug!(conn = conn.id, "subscription refused: {e}");
            // 5.0: 0x8F Topic Filter invalid (§3.9.3); 3.1.1: 0x80 Failure [MQTT-3.9.3-2].
            codes.push(if conn.version.is_v5() { 0x8F } else { 0x80 });
            continue;
        }
        if !shard.acl_may_subscribe(conn, &filter) {
            // 5.0: 0x87 Not authorized; 3.1.1: 0x80 Failure [MQTT-3.9.3-1]. The other
            // filters of the SUBSCRIBE are handled as usual.
            codes.push(if conn.version.is_v5() {
                reason::NOT_AUTHORIZED
            } else {
                0x80
            });
            continue;
        }
        let existed = {
            let mut st = conn.session.state.borrow_mut();
            if !st.subs.contains_key(filter.as_str())
                && st.subs.len() >= shard.cfg.max_subscriptions
            {
                Metrics::inc(&shard.metrics.subscriptions_refused);
                // 5.0: 0x97 Quota exceeded; 3.1.1: 0x80 Failure.
                codes.push(if conn.version.is_v5() { 0x97 } else { 0x80 });
                continue;
            }
            st.subs.insert(filter.clone(), opts).is_some()
        };
        if shard.subscribe_local(&filter, key, opts, sub_id) {
            new_routes.push(filter.clone());
        }
        shard.log_sub(&conn.session, &filter, &opts, sub_id);
        codes.push(opts.qos as u8);
        // Retained messages: none for a shared subscription (§4.8.2); Retain Handling 0
        // always, 1 only if the subscription is new, 2 never [MQTT-3.3.1-9..11].
        let send = match opts.retain_handling {
            _ if shared => false,
            0 => true,
            1 => !existed,
            _ => false,
        };
        if send {
            retained.push((filter, opts));
        }
    }
    shard.announce_routes(&new_routes).await;
    // The SUBACK says the subscription exists: once logged, it must survive a crash.
    if let Some(j) = shard.journal().filter(|j| j.gates_acks()) {
        if j.wait_durable(j.last_seq()).await.is_err() {
            conn.kill_with(reason::UNSPECIFIED_ERROR);
            return;
        }
    }
    tracing::debug!(
        conn = conn.id,
        client = %conn.session.state.borrow().client_id,
        codes = ?codes,
        "subscribed"
    );
    conn.send(&Packet::SubAck(SubAck {
        pkid: s.pkid,
        codes,
        properties: Default::default(),
    }));
    // [MQTT-3.3.1-6] retained messages for each new subscription, after the SUBACK.
    for (filter, opts) in retained {
        for msg in shard.retained_for(&filter).await {
            let qos = msg.qos.min(opts.qos);
            shard.deliver(
                &conn.session,
                Delivery::new(msg, qos, true).with_sub_ids(&[sub_id]),
            );
        }
    }
    conn.wake_writer();
}

pub(super) fn unsubscribe(shard: &Rc<Shard>, conn: &Rc<Conn>, u: Unsubscribe, held: &mut Held) {
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
            shard.log_unsub(&conn.session, filter);
        }
        codes.push(if existed { 0x00 } else { 0x11 });
    }
    if !conn.version.is_v5() {
        codes.clear();
    }
    send_ack(
        shard,
        conn,
        held,
        &Packet::UnsubAck(UnsubAck {
            pkid: u.pkid,
            codes,
            properties: Default::default(),
        }),
    );
}

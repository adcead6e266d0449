//! Enhanced authentication on a connection (MQTT 5.0 §4.12): the AUTH exchange between
//! CONNECT and CONNACK, the authentication properties of the CONNACK, and re-authentication
//! of a connected client. The methods themselves are in [`crate::auth`] (sans-IO).
//!
//! Seams with the rest of `conn`: [`authenticate`] runs in `handshake()` on the accepting
//! shard, before any hand-off; on success the CONNECT's Authentication Data is replaced by
//! the server's final data and its user name by the authenticated one, so both travel with
//! the CONNECT to the home shard. `serve()` turns that into the connection's [`ConnAuth`]
//! and the CONNACK properties ([`connack_properties`]). `handle()` passes AUTH packets of a
//! connected client to [`reauthenticate`].

use bytes::Bytes;

use super::*;
use crate::auth::{Exchange, Step};
use crate::proto::{Auth, Disconnect, Properties};

const CONTINUE: u8 = 0x18;
const REAUTHENTICATE: u8 = 0x19;
const PROTOCOL_ERROR: u8 = 0x82;

/// What a connection that authenticated with a method keeps. Boxed on [`Conn`], absent for
/// every other connection; owned by the connection's home shard.
pub(super) struct ConnAuth {
    method: Utf8Bytes,
    /// Who authenticated; a re-authentication must prove the same identity.
    user: Utf8Bytes,
    /// The server's final data, until the CONNACK carries it.
    final_data: Option<Bytes>,
    /// A re-authentication in progress.
    exchange: Option<Box<dyn Exchange>>,
}

/// The authentication a CONNECT went through in `handshake()`, if any.
pub(super) fn conn_auth(c: &mut Connect) -> Option<Box<ConnAuth>> {
    let method = c.properties.authentication_method.take()?;
    Some(Box::new(ConnAuth {
        method: Utf8Bytes::from(method.as_str()),
        user: c
            .username
            .as_deref()
            .map(Utf8Bytes::from)
            .unwrap_or_default(),
        final_data: c.properties.authentication_data.take(),
        exchange: None,
    }))
}

/// The CONNACK properties for a successful enhanced authentication: the same Authentication
/// Method as the CONNECT [MQTT-4.12.0-5] and the server's final data; empty otherwise
/// [MQTT-4.12.0-6].
pub(super) fn connack_properties(auth: Option<&mut ConnAuth>) -> Properties {
    match auth {
        Some(a) => auth_properties(&a.method, a.final_data.take()),
        None => Properties::default(),
    }
}

fn auth_properties(method: &Utf8Bytes, data: Option<Bytes>) -> Properties {
    Properties {
        authentication_method: Some(method.clone()),
        authentication_data: data,
        ..Properties::default()
    }
}

/// Run the exchange for a v5 CONNECT with an Authentication Method, before the CONNACK.
/// `Some(rest)` (bytes read past the exchange) to continue the connection; `None` when it
/// was refused and closed. A CONNECT without a method passes through untouched.
pub(super) async fn authenticate(
    shard: &Rc<Shard>,
    io: &Io,
    dec: &mut Decoder,
    connect: &mut Connect,
    mut buf: BytesMut,
    started: std::time::Instant,
) -> Option<BytesMut> {
    let Some(method) = connect.properties.authentication_method.clone() else {
        return Some(buf);
    };
    let mut exchange = match shard.auth.start(&method) {
        Ok(ex) => ex,
        Err(f) => {
            // [MQTT-4.12.0-1] an unsupported method: CONNACK 0x8C and close.
            tracing::info!(peer = ?io.peer_addr(), %method, "unsupported authentication method");
            return refuse(shard, io, f.reason_code()).await;
        }
    };
    let first = connect.properties.authentication_data.take();
    let limit = Duration::from_secs(shard.cfg.connect_timeout).saturating_sub(started.elapsed());
    let outcome = with_timeout(limit, async {
        let mut step = exchange.step(first.as_deref().unwrap_or_default());
        loop {
            let data = match step {
                Step::Continue(data) => data,
                done => return Ok(done),
            };
            // [MQTT-4.12.0-2] the server's challenge is an AUTH 0x18 with the method
            // [MQTT-4.12.0-5].
            let auth = Packet::Auth(Auth {
                reason: CONTINUE,
                properties: auth_properties(&method, Some(data)),
            });
            let mut out = BytesMut::new();
            if encode(&auth, ProtocolVersion::V5, &mut out).is_err() || io.write_all(&out).await.is_err() {
                return Err(None);
            }
            // [MQTT-3.1.2-30] until the CONNACK only AUTH or DISCONNECT may arrive, and
            // [MQTT-4.12.0-3] the answer is AUTH 0x18 with the same method.
            match next_packet(shard, io, dec, &mut buf).await? {
                Packet::Auth(a)
                    if a.reason == CONTINUE
                        && a.properties.authentication_method.as_ref() == Some(&method) =>
                {
                    step = exchange.step(a.properties.authentication_data.as_deref().unwrap_or_default());
                }
                Packet::Disconnect(_) => return Err(None),
                other => {
                    tracing::info!(peer = ?io.peer_addr(), "packet type {} (AUTH reason or method wrong) during authentication", other.type_id());
                    return Err(Some(PROTOCOL_ERROR));
                }
            }
        }
    })
    .await;
    match outcome {
        Some(Ok(Step::Success { data, user })) => {
            Metrics::inc(&shard.metrics.auth_success);
            tracing::debug!(client = %connect.client_id, %user, %method, "authenticated");
            // Carried to serve() (possibly on another shard) inside the CONNECT.
            connect.properties.authentication_data = data;
            connect.username = Some(Utf8Bytes::from(user));
            Some(buf)
        }
        Some(Ok(Step::Failure(f))) => {
            tracing::info!(peer = ?io.peer_addr(), client = %connect.client_id, %method, "authentication failed: {f:?}");
            refuse(shard, io, f.reason_code()).await
        }
        // `step` only ends the loop with Success or Failure.
        Some(Ok(Step::Continue(_))) | Some(Err(None)) | None => {
            Metrics::inc(&shard.metrics.auth_failures);
            Metrics::inc(&shard.metrics.connect_failures);
            tracing::debug!(peer = ?io.peer_addr(), "authentication abandoned (close, timeout or bad packet)");
            None
        }
        Some(Err(Some(code))) => {
            Metrics::inc(&shard.metrics.protocol_errors);
            refuse(shard, io, code).await
        }
    }
}

/// The next packet during the exchange; `Err(Some(code))` for a violation that gets a
/// CONNACK, `Err(None)` when the connection closed.
async fn next_packet(
    shard: &Shard,
    io: &Io,
    dec: &mut Decoder,
    buf: &mut BytesMut,
) -> Result<Packet, Option<u8>> {
    loop {
        match dec.decode(buf) {
            Ok(Some(p)) => return Ok(p),
            Ok(None) => {}
            Err(e) => {
                tracing::info!(peer = ?io.peer_addr(), "closing connection during authentication: {e}");
                return Err(e.connack_code(Some(ProtocolVersion::V5)));
            }
        }
        match io.read(&shard.arena, READ_MAX).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            Ok(None) | Err(_) => return Err(None),
        }
    }
}

/// Send a refusing CONNACK and let the caller close ([MQTT-4.12.0-4]).
async fn refuse(shard: &Shard, io: &Io, code: u8) -> Option<BytesMut> {
    Metrics::inc(&shard.metrics.auth_failures);
    Metrics::inc(&shard.metrics.connect_failures);
    let ack = Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties: Default::default(),
    });
    let mut out = BytesMut::new();
    if encode(&ack, ProtocolVersion::V5, &mut out).is_ok() {
        let _ = with_timeout(Duration::from_secs(1), io.write_all(&out)).await;
    }
    None
}

/// An AUTH packet from a connected client (§4.12.1): start or continue a re-authentication.
pub(super) fn reauthenticate(shard: &Rc<Shard>, conn: &Rc<Conn>, a: Auth) -> Flow {
    let mut slot = conn.auth.borrow_mut();
    let Some(st) = slot.as_mut() else {
        // [MQTT-4.12.0-7] no Authentication Method in CONNECT: no AUTH from the client.
        return protocol_error(
            shard,
            conn,
            "AUTH from a client that did not use enhanced auth",
        );
    };
    if a.properties.authentication_method.as_ref() != Some(&st.method) {
        // [MQTT-4.12.1-1] re-authentication uses the method of the CONNECT.
        return protocol_error(shard, conn, "AUTH with a different authentication method");
    }
    let data = a
        .properties
        .authentication_data
        .as_deref()
        .unwrap_or_default();
    let step = match (a.reason, st.exchange.as_mut()) {
        (REAUTHENTICATE, None) => match shard.auth.start(&st.method) {
            Ok(ex) => st.exchange.insert(ex).step(data),
            Err(f) => Step::Failure(f),
        },
        (CONTINUE, Some(ex)) => ex.step(data),
        _ => return protocol_error(shard, conn, "AUTH reason code out of turn"),
    };
    match step {
        Step::Continue(d) => {
            conn.send(&Packet::Auth(Auth {
                reason: CONTINUE,
                properties: auth_properties(&st.method, Some(d)),
            }));
            Flow::Continue
        }
        Step::Success { data, user } if user == st.user.as_str() => {
            st.exchange = None;
            Metrics::inc(&shard.metrics.auth_success);
            tracing::debug!(conn = conn.id, %user, "re-authenticated");
            conn.send(&Packet::Auth(Auth {
                reason: 0x00,
                properties: auth_properties(&st.method, data),
            }));
            Flow::Continue
        }
        failed => {
            // [MQTT-4.12.1-2] a failed re-authentication: DISCONNECT with the reason, close.
            // Proving a different identity than the CONNECT did counts as not authorized.
            let code = match failed {
                Step::Failure(f) => f.reason_code(),
                _ => crate::auth::Failure::NotAuthorized.reason_code(),
            };
            st.exchange = None;
            Metrics::inc(&shard.metrics.auth_failures);
            tracing::info!(
                conn = conn.id,
                code,
                "re-authentication failed; disconnecting"
            );
            disconnect(conn, code)
        }
    }
}

fn protocol_error(shard: &Shard, conn: &Conn, why: &str) -> Flow {
    Metrics::inc(&shard.metrics.protocol_errors);
    tracing::info!(conn = conn.id, "closing connection: {why} (§4.12)");
    disconnect(conn, PROTOCOL_ERROR)
}

/// DISCONNECT with `reason`, then close once the writer has flushed it.
fn disconnect(conn: &Conn, reason: u8) -> Flow {
    conn.note_end(super::Ending::Server(reason));
    conn.send(&Packet::Disconnect(Disconnect {
        reason,
        properties: Properties::default(),
    }));
    Flow::Close
}

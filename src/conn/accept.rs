//! Accepting connections and the CONNECT handshake on the accepting shard: admission
//! (limits, rates, addresses), the PROXY header, TLS, the WebSocket upgrade, authentication,
//! then serving here or handing the socket to the client id's home shard ([`adopt`]).

use super::*;

/// Accept connections on this shard until shutdown. Runs in the shard's accept task queue
/// (see `broker::shard_main`), as do the handshakes it starts.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, lst: Arc<Listener>) {
    // This shard's share of the listener's accept rate.
    let rate = lst.rate / shard.shards as f64;
    let mut bucket = Bucket::full(rate, std::time::Instant::now());
    loop {
        // Checked before every wait on `stop` (an edge that may already have passed).
        if shard.stopping.get() {
            return;
        }
        if rate > 0.0 {
            let wait = bucket.take(rate, std::time::Instant::now());
            if wait > 0.0 {
                // Over the rate: stop accepting for a while; clients wait in the backlog.
                Metrics::inc(&shard.metrics.accept_rate_limited);
                let stop = futures_lite::future::or(
                    async {
                        glommio::timer::sleep(Duration::from_secs_f64(wait)).await;
                        false
                    },
                    async {
                        shard.stop.wait().await;
                        true
                    },
                )
                .await;
                if stop {
                    return;
                }
                continue;
            }
        }
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shard.stop.wait().await;
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
        // Address admission (a PROXY listener: only the proxy's trust; the client's address
        // is checked once its header is read).
        if !proxy_flow::at_accept(&shard, &stream, &lst) {
            continue;
        }
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
        if !lst.try_acquire() {
            shard.global.connections.fetch_sub(1, Ordering::Relaxed);
            Metrics::inc(&shard.metrics.connections_refused_listener_limit);
            tracing::warn!(
                listener = %lst.name,
                limit = lst.max_connections,
                "listener max_connections reached; refusing a connection"
            );
            continue;
        }
        let s = shard.clone();
        let l = lst.clone();
        let fut = async move {
            let counted = handshake(s.clone(), stream, &l).await;
            if !counted {
                s.release_connection(l.index);
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
async fn handshake(shard: Rc<Shard>, mut stream: TcpStream, lst: &Listener) -> bool {
    let started = std::time::Instant::now();
    // The PROXY header, TLS handshake and CONNECT share `connect_timeout`.
    let limit = Duration::from_secs(shard.cfg.connect_timeout);
    let mut real_peer = None;
    if lst.proxy_protocol {
        match proxy_flow::read_and_admit(&shard, &mut stream, lst, limit).await {
            Ok(addr) => real_peer = addr,
            Err(proxy_flow::Refused) => return false,
        }
    }
    let tls = match &lst.tls {
        None => None,
        Some(cfg) => match rustls::ServerConnection::new(cfg.clone()) {
            Ok(c) => Some(Box::new(c)),
            Err(e) => {
                tracing::warn!("cannot start a TLS session: {e}");
                return false;
            }
        },
    };
    let ws = lst.ws_path.as_ref().map(|_| ws_state(&shard));
    let io = Io::with_layers(stream, tls, ws);
    if let Some(addr) = real_peer {
        io.set_peer(addr);
    }
    let mut dec = Decoder::new(shard.cfg.max_packet_size);
    // The PROXY header, the TLS handshake, the WebSocket upgrade and the CONNECT share
    // `connect_timeout`.
    let first = with_timeout(limit.saturating_sub(started.elapsed()), async {
        let mut buf = match io.handshake(&shard.arena).await {
            Ok(early) => early,
            Err(e) => {
                Metrics::inc(&shard.metrics.tls_handshake_failures);
                tracing::info!(peer = ?io.peer_addr(), listener = %lst.name, "TLS handshake failed: {e}");
                return First::Closed;
            }
        };
        if let Some(path) = &lst.ws_path {
            match io.ws_upgrade(&shard.arena, buf, path).await {
                Ok(rest) => {
                    Metrics::inc(&shard.metrics.ws_upgrades);
                    buf = rest;
                }
                Err(e) => {
                    ws_upgrade_failed(&shard, &io, lst, &e);
                    return First::Closed;
                }
            }
        }
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
                Ok(None) => return First::Closed,
                Err(e) => {
                    ws_violation(&shard, &io, &e);
                    return First::Closed;
                }
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
    let mut cert_user = false;
    if let Some(which) = lst.username_from {
        // Mutual TLS: the certificate's name is the user name, whatever CONNECT said.
        let name = io.tls().and_then(|t| {
            t.with_peer_certificates(|c| c?.first().and_then(|d| crate::tls::cert_name(d, which)))
        });
        match name {
            Some(n) => {
                connect.username = Some(Utf8Bytes::from(n));
                cert_user = true;
            }
            None if shard.global.passwords.current().is_some() => {
                // No certificate (tls_require_client_cert = false) or no such name: the
                // password back end checks the CONNECT's user name instead.
            }
            None => {
                // Nothing could verify a claimed name on a listener that takes names from
                // certificates: the client is anonymous.
                connect.username = None;
            }
        }
    }
    // §4.12 enhanced authentication, before the CONNACK and any hand-off.
    let Some(rest) = authenticate(&shard, &io, &mut dec, &mut connect, rest, started).await else {
        return false;
    };
    // User name/password (password file), anonymous clients, failure throttling. A user
    // name taken from a verified client certificate needs no password.
    if !cert_user && !password_flow::check_password(&shard, &io, &mut connect).await {
        return false;
    }
    if limits::refuse_will_over_limit(&shard, &io, &connect).await {
        return false;
    }
    let assigned = connect.client_id.is_empty();
    if assigned {
        // [MQTT-3.1.3-6] assign an id; pick one whose home is this shard (no hand-off).
        connect.client_id = assign_client_id(&shard);
    }
    let home = shard.shard_of(connect.client_id.as_bytes());
    if home == shard.id {
        // A task of its own: the handshake's state is not carried for the connection's life.
        let mut hello = Hello::from(connect);
        hello.assigned = assigned;
        hello.listener = lst.index;
        // Served in the shard's main task queue, not the accept queue.
        let q = shard.main_queue;
        if let Ok(t) = glommio::spawn_local_into(serve(shard, io, hello, rest), q) {
            t.detach();
            return true;
        }
        return false;
    }
    // A TLS session is handed over with nothing left to send (post-handshake records).
    if io.has_output() && io.flush(&Cell::new(0)).await.is_err() {
        return false;
    }
    let parts = match io.into_parts() {
        Ok(parts) => parts,
        Err(_) => return false,
    };
    match detach_stream(parts.stream) {
        Ok(fd) => {
            Metrics::inc(&shard.metrics.handoffs);
            let h = Handoff::new(fd, parts.tls, parts.ws, real_peer, lst.index, rest, connect);
            shard.ctrl.push(home, Ctrl::Handoff(Box::new(h)));
            true
        }
        Err(e) => {
            tracing::warn!("cannot hand off connection: {e}");
            false
        }
    }
}

/// A fresh WebSocket decoder. A frame may carry a whole packet and the start of the next
/// ([MQTT-6.0.0-2]): frames up to twice `max_packet_size` are accepted (at least 64 KiB).
/// The bound protects nothing in memory (frames are de-framed as they stream in); it refuses
/// lengths no MQTT client would send.
fn ws_state(shard: &Shard) -> Box<crate::rt::ws::Deframer> {
    let max = (shard.cfg.max_packet_size as u64)
        .saturating_mul(2)
        .max(64 * 1024);
    Box::new(crate::rt::ws::Deframer::new(max))
}

/// Count and log a WebSocket upgrade that did not happen.
fn ws_upgrade_failed(shard: &Shard, io: &Io, lst: &Listener, e: &crate::rt::net::UpgradeError) {
    use crate::rt::net::UpgradeError;
    match e {
        UpgradeError::Refused(r) => {
            Metrics::inc(&shard.metrics.ws_upgrades_refused);
            tracing::info!(peer = ?io.peer_addr(), listener = %lst.name, status = r.status(), "WebSocket upgrade refused: {r}");
        }
        UpgradeError::Io(err) => {
            if !ws_violation(shard, io, err) {
                tracing::debug!(peer = ?io.peer_addr(), listener = %lst.name, "{e}");
            }
        }
    }
}

/// Count and log a read error that is a WebSocket protocol violation (the close frame was
/// sent by `Io`); false for other errors.
pub(crate) fn ws_violation(shard: &Shard, io: &Io, e: &std::io::Error) -> bool {
    let Some(ws) = crate::rt::net::is_ws_error(e) else {
        return false;
    };
    Metrics::inc(&shard.metrics.ws_protocol_errors);
    tracing::info!(peer = ?io.peer_addr(), code = ws.close_code(), "closing WebSocket connection: {ws}");
    true
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
    let tls = h.tls.take();
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
    let io = Io::with_layers(stream, tls, h.ws.take());
    if let Some(addr) = h.peer {
        io.set_peer(addr);
    }
    let mut hello = Hello::from(connect);
    hello.listener = h.listener;
    glommio::spawn_local(serve(shard, io, hello, rest)).detach();
}

//! The first step of a connection: who the client is by address. On a `proxy_protocol`
//! listener, the peer must be a trusted proxy and must send a PROXY header (read from the raw
//! socket, before TLS and CONNECT, within `connect_timeout`); the client's address in it then
//! stands for the socket's everywhere (logs, the per-address rate, the login throttle).
//! Every listener then admits the client by that address: `deny_from` / `allow_from` and
//! `connection_rate_per_ip`.
//!
//! The header is read without taking a byte past it from the socket: exact reads of what
//! [`proxy::parse`] says belongs to it, and for a version 1 line a `peek` first, so the bytes
//! after the header (a TLS ClientHello, a CONNECT) stay in the kernel for the next step.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;

use crate::listener::Listener;
use crate::metrics::Metrics;
use crate::proxy::{self, Header, Parse, ProxyError};
use crate::rt::with_timeout;
use crate::shard::Shard;

/// The connection was closed and counted.
pub(super) struct Refused;

/// At accept: the address checks that need nothing read. On a PROXY listener only whether
/// the peer may speak for a client; otherwise the client's admission by its address.
pub(super) fn at_accept(shard: &Shard, stream: &TcpStream, lst: &Listener) -> bool {
    if !lst.proxy_protocol && !lst.checks_address() {
        // Nothing to check: no getpeername per connection.
        return true;
    }
    let Ok(peer) = stream.peer_addr() else {
        // Gone already; the handshake's first read will see it.
        return true;
    };
    if !lst.proxy_protocol {
        return admit_address(shard, lst, peer.ip());
    }
    if !lst.proxy_peer_trusted(peer.ip()) {
        Metrics::inc(&shard.metrics.proxy_untrusted);
        tracing::warn!(listener = %lst.name, %peer, "PROXY header from a peer outside proxy_trusted; closing");
        return false;
    }
    true
}

/// On a PROXY listener: read the header (within `limit`), then admit the client by its
/// address. The client's real address when the header carries one (`None`: a LOCAL
/// health check or UNKNOWN family: the socket's address stands).
pub(super) async fn read_and_admit(
    shard: &Shard,
    stream: &mut TcpStream,
    lst: &Listener,
    limit: Duration,
) -> Result<Option<SocketAddr>, Refused> {
    let socket_peer = stream.peer_addr().ok();
    let max = shard.cfg.max_proxy_header_size;
    let header = match with_timeout(limit, read_header(stream, max)).await {
        Some(Ok(h)) => h,
        Some(Err(e)) => {
            Metrics::inc(&shard.metrics.proxy_header_errors);
            tracing::info!(listener = %lst.name, peer = ?socket_peer, "closing connection: {e}");
            return Err(Refused);
        }
        None => {
            Metrics::inc(&shard.metrics.proxy_header_errors);
            tracing::info!(listener = %lst.name, peer = ?socket_peer, "no PROXY header within connect_timeout; closing");
            return Err(Refused);
        }
    };
    let real = header.source();
    tracing::debug!(
        listener = %lst.name,
        peer = ?real.or(socket_peer),
        proxy = ?socket_peer,
        version = header.version,
        local = header.local,
        "PROXY header"
    );
    if let Some(ip) = real.or(socket_peer).map(|a| a.ip()) {
        if !admit_address(shard, lst, ip) {
            return Err(Refused);
        }
    }
    if header.local && closes_silently(stream, limit).await {
        // A load balancer's health check (LOCAL, then close): not a failed TLS handshake or
        // CONNECT, which is what every check would otherwise count and log.
        Metrics::inc(&shard.metrics.proxy_health_checks);
        return Err(Refused);
    }
    Ok(real)
}

/// `deny_from` / `allow_from`, then `connection_rate_per_ip`, for the client's address.
fn admit_address(shard: &Shard, lst: &Listener, ip: IpAddr) -> bool {
    if !lst.address_allowed(ip) {
        Metrics::inc(&shard.metrics.connections_refused_address);
        tracing::info!(listener = %lst.name, %ip, "address refused by allow_from/deny_from; closing");
        return false;
    }
    if lst.rate_per_ip > 0.0 && !lst.admit_address(ip, Instant::now()) {
        Metrics::inc(&shard.metrics.connections_refused_rate_ip);
        tracing::debug!(listener = %lst.name, %ip, "connection rate per address exceeded; closing");
        return false;
    }
    true
}

/// Whether the peer closes (or fails) before sending a byte; waits for its first byte (left
/// in the socket) at most `limit`. A silent peer is not closed here: the handshake's own
/// timeout follows.
async fn closes_silently(stream: &TcpStream, limit: Duration) -> bool {
    let mut one = [0u8; 1];
    matches!(
        with_timeout(limit, stream.peek(&mut one)).await,
        Some(Ok(0) | Err(_))
    )
}

/// Why no header was read.
#[derive(Debug, thiserror::Error)]
enum HeaderError {
    #[error("{0}")]
    Bad(#[from] ProxyError),
    #[error("connection closed inside the PROXY header")]
    Eof,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

async fn read_header(stream: &mut TcpStream, max: usize) -> Result<Header, HeaderError> {
    let mut buf = Vec::with_capacity(proxy::V1_MAX);
    loop {
        let want = match proxy::parse(&buf, max)? {
            Parse::Done { header, .. } => return Ok(header),
            Parse::NeedExact(n) => n,
            Parse::NeedLine => {
                let mut peeked = [0u8; proxy::V1_MAX];
                let room = proxy::V1_MAX - buf.len();
                let n = stream
                    .peek(&mut peeked[..room])
                    .await
                    .map_err(std::io::Error::from)?;
                if n == 0 {
                    return Err(HeaderError::Eof);
                }
                proxy::v1_take(buf.len(), &peeked[..n])
            }
        };
        let at = buf.len();
        buf.resize(at + want, 0);
        let n = stream.read(&mut buf[at..]).await?;
        if n == 0 {
            return Err(HeaderError::Eof);
        }
        buf.truncate(at + n);
    }
}

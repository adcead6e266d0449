//! The ops HTTP endpoint: `/metrics`, `/health`, `/ready` over HTTP/1.1, GET only.
//!
//! It runs on its own std threads, not on a shard, so that `/health` still answers when a
//! shard is stuck (and names it). It is deliberately small and bounded: a request head of
//! at most [`MAX_REQUEST`] bytes, read within [`READ_TIMEOUT`], at most [`MAX_CLIENTS`]
//! connections served at once (more are closed at once and counted in
//! `ringmq_http_refused_total`), one request per connection (`Connection: close`). No
//! HTTP crate: the whole protocol needed here is a request line and a fixed response, and
//! a server library would bring an async runtime or a thread pool into a broker that has
//! its own.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Phase;
use crate::shard::Global;

/// Largest request head accepted (request line and headers).
pub const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once.
pub const MAX_CLIENTS: usize = 4;

/// What the endpoint needs from the broker.
pub struct Ops {
    pub global: Arc<Global>,
    /// A shard whose heartbeat is older than this is reported stuck by `/health`.
    pub stale_ms: u64,
}

/// Bind `addr` and serve it from a thread for the life of the process. Returns the bound
/// address (port 0 resolved).
pub fn start(addr: SocketAddr, ops: Ops) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let ops = Arc::new(ops);
    std::thread::Builder::new()
        .name("ringmq-ops-http".into())
        .spawn(move || serve(listener, ops))?;
    Ok(bound)
}

fn serve(listener: TcpListener, ops: Arc<Ops>) {
    let busy = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
            busy.fetch_sub(1, Ordering::AcqRel);
            ops.global.ops.http_refused.fetch_add(1, Ordering::Relaxed);
            continue; // dropped: closed unanswered
        }
        let (ops2, busy2) = (ops.clone(), busy.clone());
        let spawned = std::thread::Builder::new()
            .name("ringmq-ops-conn".into())
            .spawn(move || {
                answer(stream, &ops2);
                busy2.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            tracing::warn!("ops endpoint: cannot start a connection thread: {e}");
            busy.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Read one request head and answer it.
fn answer(mut s: TcpStream, ops: &Ops) {
    let _ = s.set_read_timeout(Some(READ_TIMEOUT));
    let _ = s.set_write_timeout(Some(READ_TIMEOUT));
    let deadline = std::time::Instant::now() + READ_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break Some(i);
        }
        if buf.len() > MAX_REQUEST || std::time::Instant::now() > deadline {
            break None;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let _ = s.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    ops.global.ops.http_requests.fetch_add(1, Ordering::Relaxed);
    let resp = match head_end {
        Some(end) if end <= MAX_REQUEST => route(&buf[..end], ops),
        None if buf.len() <= MAX_REQUEST => return, // too slow: nothing useful to say
        _ => reply(431, "request head too large\n"),
    };
    let _ = s.write_all(&resp);
    let _ = s.flush();
}

/// The response (status line, headers, body) to the request `head`.
pub fn route(head: &[u8], ops: &Ops) -> Vec<u8> {
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target), Some(version)) = (method, target, version) else {
        return reply(400, "bad request line\n");
    };
    if !version.starts_with("HTTP/1.") {
        return reply(505, "HTTP/1.x only\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    let known = matches!(path, "/metrics" | "/health" | "/ready");
    if !known {
        return reply(404, "not found (try /metrics, /health, /ready)\n");
    }
    if method != "GET" {
        let mut r = reply(405, "GET only\n");
        // Insert `Allow` before the blank line ending the head.
        if let Some(i) = r.windows(4).position(|w| w == b"\r\n\r\n") {
            r.splice(i + 2..i + 2, b"Allow: GET\r\n".iter().copied());
        }
        return r;
    }
    let board = &ops.global.ops;
    match path {
        "/metrics" => {
            let snaps = board.collect();
            let open = ops.global.connections.load(Ordering::Relaxed);
            let body = super::prom::render(board, &snaps, open);
            respond(200, "text/plain; version=0.0.4; charset=utf-8", &body)
        }
        "/health" => {
            let stuck: Vec<String> = (0..board.slots.len())
                .filter_map(|i| {
                    let age = board.heartbeat_age_ms(i);
                    (age > ops.stale_ms).then(|| format!("shard {i} stuck for {age} ms"))
                })
                .collect();
            if stuck.is_empty() {
                reply(200, "ok\n")
            } else {
                reply(503, &(stuck.join("\n") + "\n"))
            }
        }
        _ => {
            if ops.global.shutdown.load(Ordering::Relaxed) {
                return reply(503, "shutting down\n");
            }
            let waiting: Vec<String> = (0..board.slots.len())
                .filter(|i| board.phase(*i) != Phase::Listening)
                .map(|i| format!("shard {i}: {:?}", board.phase(i)))
                .collect();
            if waiting.is_empty() {
                reply(200, "ready\n")
            } else {
                reply(503, &(waiting.join("\n") + "\n"))
            }
        }
    }
}

fn reply(status: u16, body: &str) -> Vec<u8> {
    respond(status, "text/plain; charset=utf-8", body)
}

fn respond(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    };
    let mut r = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body.as_bytes());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops() -> Ops {
        let global = Global {
            ops: super::super::Board::new(1),
            ..Global::default()
        };
        Ops {
            global: Arc::new(global),
            stale_ms: 5000,
        }
    }

    fn status(r: &[u8]) -> String {
        String::from_utf8_lossy(r)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    }

    #[test]
    fn routes_methods_and_paths() {
        let o = ops();
        assert_eq!(
            status(&route(b"GET /nope HTTP/1.1", &o)),
            "HTTP/1.1 404 Not Found"
        );
        let r = route(b"POST /metrics HTTP/1.1", &o);
        assert_eq!(status(&r), "HTTP/1.1 405 Method Not Allowed");
        assert!(String::from_utf8_lossy(&r).contains("\r\nAllow: GET\r\n"));
        assert_eq!(status(&route(b"garbage", &o)), "HTTP/1.1 400 Bad Request");
        // No shard listening yet.
        assert_eq!(
            status(&route(b"GET /ready HTTP/1.1", &o)),
            "HTTP/1.1 503 Service Unavailable"
        );
        o.global.ops.set_phase(0, Phase::Listening);
        assert_eq!(
            status(&route(b"GET /ready?x HTTP/1.0", &o)),
            "HTTP/1.1 200 OK"
        );
        o.global.ops.beat(0);
        assert_eq!(
            status(&route(b"GET /health HTTP/1.1", &o)),
            "HTTP/1.1 200 OK"
        );
        assert_eq!(
            status(&route(b"GET /metrics HTTP/1.1", &o)),
            "HTTP/1.1 200 OK"
        );
        o.global.shutdown.store(true, Ordering::Relaxed);
        let r = route(b"GET /ready HTTP/1.1", &o);
        assert_eq!(status(&r), "HTTP/1.1 503 Service Unavailable");
    }

    #[test]
    fn health_names_a_stuck_shard() {
        let mut o = ops();
        o.stale_ms = 0;
        std::thread::sleep(Duration::from_millis(5));
        let r = String::from_utf8(route(b"GET /health HTTP/1.1", &o)).unwrap();
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.contains("shard 0 stuck for"), "{r}");
    }
}

//! Sockets: the per-shard listener, the connection I/O wrapper and fd hand-off.
//!
//! Every shard binds its own listener on the same address with `SO_REUSEPORT`, so the kernel
//! spreads accepts across shards. (A second *process* could join that group too; the data
//! directory lock in `broker` prevents a second ringmq on the same data dir.)

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::os::unix::io::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::{TcpListener, TcpStream};
use rustls::ServerConnection;

use super::tls::Tls;
use super::ws::Deframer;
use socket2::{Domain, Protocol, Socket, Type};

/// A TCP socket bound to `addr` with `SO_REUSEPORT`, not yet listening. Binding one of these
/// to port 0 reserves a port that every shard can then bind too.
pub fn bound_socket(addr: SocketAddr) -> io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let sk = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    sk.set_reuse_port(true)?;
    sk.set_reuse_address(true)?;
    sk.bind(&addr.into())?;
    Ok(sk)
}

/// Build a listening socket with `SO_REUSEPORT` and our own backlog (glommio's `bind`
/// hard-codes 1024 and panics on unresolvable addresses).
pub fn listener_socket(addr: SocketAddr, backlog: i32) -> io::Result<Socket> {
    let sk = bound_socket(addr)?;
    sk.listen(backlog)?;
    Ok(sk)
}

/// Adopt a listening socket on the current shard's reactor.
pub fn adopt_listener(sk: Socket) -> TcpListener {
    sk.set_nonblocking(true).ok();
    // SAFETY: the fd is a freshly created, listening TCP socket we own.
    unsafe { TcpListener::from_raw_fd(sk.into_raw_fd()) }
}

/// Hand a connected stream's fd out of this shard: duplicate the fd, drop the glommio
/// stream (which cancels its pending poll sources and closes the original fd).
pub fn detach_stream(stream: TcpStream) -> io::Result<RawFd> {
    // SAFETY: dup of a valid fd we own.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    drop(stream);
    Ok(fd)
}

/// Adopt a handed-off fd on the current shard.
///
/// # Safety
/// `fd` must be an open, connected TCP socket that nothing else owns.
pub unsafe fn attach_stream(fd: RawFd) -> TcpStream {
    TcpStream::from_raw_fd(fd)
}

/// Close a handed-off fd that could not be delivered.
pub fn close_fd(fd: RawFd) {
    // SAFETY: the caller owns fd.
    unsafe {
        libc::close(fd);
    }
}

/// Per-shard receive scratch area. Reads land here and are split off as their own
/// `BytesMut` (sharing one allocation), so an idle connection holds no receive buffer and a
/// decoded payload is a zero-copy slice of what the kernel wrote.
pub struct ReadArena {
    buf: RefCell<BytesMut>,
    chunk: usize,
}

impl ReadArena {
    pub fn new(chunk: usize) -> ReadArena {
        ReadArena {
            buf: RefCell::new(BytesMut::with_capacity(chunk)),
            chunk,
        }
    }
}

/// A connection's socket, shared by its reader and writer tasks, with its TLS layer when the
/// listener has one. Each poll borrows the stream only for the duration of the (synchronous)
/// poll call. Owned by the connection's home shard.
///
/// With TLS, [`Io::read`] returns decrypted bytes (possibly an empty chunk when a record
/// carried none) and the writes encrypt; ciphertext the socket did not take waits in the
/// [`Tls`] output, which [`Io::flush`] (the writer) drains.
///
/// With WebSocket (`net_ws`), reads return the de-framed MQTT bytes and each write goes out
/// as one binary frame (sealed with TLS for `wss://`); frames the socket did not take wait in
/// the WebSocket output (`ws://`) or the TLS output (`wss://`).
pub struct Io {
    stream: RefCell<TcpStream>,
    tls: Option<Tls>,
    /// The client's real address when a PROXY protocol header gave one (else the socket's).
    peer: std::cell::Cell<Option<SocketAddr>>,
    ws: Option<Box<Ws>>,
}

#[path = "net_ws.rs"]
mod net_ws;
use net_ws::Ws;
pub use net_ws::{is_ws_error, UpgradeError};

/// What a connection's `Io` is made of, taken apart to park it or hand it to another shard.
pub struct Parts {
    pub stream: TcpStream,
    /// The TLS session (TLS listeners).
    pub tls: Option<Box<ServerConnection>>,
    /// The WebSocket decoder state (WebSocket listeners, after the upgrade).
    pub ws: Option<Box<Deframer>>,
}

/// Bytes waiting for the socket: the TLS output, or the WebSocket output of a `ws://`
/// connection.
trait Output {
    fn has_output(&self) -> bool;
    /// Poll `f` with the waiting bytes (it returns how many it took).
    fn with_output_dyn(
        &self,
        f: &mut dyn FnMut(&[u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>>;
    /// `n` of the waiting bytes were sent.
    fn consumed(&self, n: usize);
}

impl Output for Tls {
    fn has_output(&self) -> bool {
        Tls::has_output(self)
    }
    fn with_output_dyn(
        &self,
        f: &mut dyn FnMut(&[u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        Tls::with_output(self, f)
    }
    fn consumed(&self, n: usize) {
        Tls::consumed(self, n)
    }
}

impl Io {
    pub fn new(stream: TcpStream) -> Rc<Io> {
        Self::with_layers(stream, None, None)
    }

    /// A connection with its TLS session and/or WebSocket state (a WebSocket listener's
    /// connection before its upgrade has a fresh [`Deframer`]; see [`Io::ws_upgrade`]).
    pub fn with_layers(
        stream: TcpStream,
        tls: Option<Box<ServerConnection>>,
        ws: Option<Box<Deframer>>,
    ) -> Rc<Io> {
        stream.set_nodelay(true).ok();
        Rc::new(Io {
            stream: RefCell::new(stream),
            tls: tls.map(Tls::new),
            peer: std::cell::Cell::new(None),
            ws: ws.map(Ws::new),
        })
    }

    /// The client's address: the one set by [`Io::set_peer`], else the socket's peer.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
            .get()
            .or_else(|| self.stream.borrow().peer_addr().ok())
    }

    /// Use `addr` as the client's address (from a PROXY protocol header).
    pub fn set_peer(&self, addr: SocketAddr) {
        self.peer.set(Some(addr));
    }

    /// The TLS layer, if the connection has one.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// Ciphertext or WebSocket frames are waiting for the socket (the writer must
    /// [`Io::flush`]).
    pub fn has_output(&self) -> bool {
        self.output().is_some_and(|o| o.has_output())
    }

    /// Where bytes wait for the socket: TLS output first (a `wss://` connection seals its
    /// frames at once, so its WebSocket output stays empty).
    fn output(&self) -> Option<&dyn Output> {
        match (&self.tls, &self.ws) {
            (Some(t), _) => Some(t),
            (None, Some(w)) => Some(&**w),
            (None, None) => None,
        }
    }

    /// Read whatever is available (up to `max` bytes) into a buffer carved from the arena;
    /// with TLS, the plaintext it decrypts to; with WebSocket, the MQTT bytes the frames
    /// carried (never an empty chunk). `Ok(None)` on EOF.
    pub async fn read(&self, arena: &ReadArena, max: usize) -> io::Result<Option<BytesMut>> {
        match &self.ws {
            None => self.read_plain(arena, max).await,
            Some(ws) => self.read_ws(ws, arena, max).await,
        }
    }

    /// [`Io::read`] below the WebSocket layer.
    async fn read_plain(&self, arena: &ReadArena, max: usize) -> io::Result<Option<BytesMut>> {
        let Some(tls) = &self.tls else {
            return self.read_raw(arena, max).await;
        };
        if tls.at_eof() {
            return Ok(None);
        }
        let Some(cipher) = self.read_raw(arena, max).await? else {
            return Ok(None);
        };
        let plain = tls.feed(&cipher);
        // Handshake answers, key updates and alerts go out at once when the socket takes
        // them; what it does not take waits for the writer.
        self.try_flush();
        plain.map(Some)
    }

    async fn read_raw(&self, arena: &ReadArena, max: usize) -> io::Result<Option<BytesMut>> {
        poll_fn(|cx| {
            let mut buf = arena.buf.borrow_mut();
            // Invariant: `buf` is empty between polls and its spare capacity is initialised
            // memory (the chunk is allocated zeroed), so exposing it to read() is sound.
            if buf.capacity() < 512 {
                *buf = BytesMut::zeroed(arena.chunk);
                buf.clear();
            }
            let room = buf.capacity().min(max.max(1));
            // SAFETY: see the invariant above; [0, room) is initialised.
            unsafe { buf.set_len(room) };
            let res = Pin::new(&mut *self.stream.borrow_mut()).poll_read(cx, &mut buf[..room]);
            let out = match res {
                Poll::Ready(Ok(0)) => Poll::Ready(Ok(None)),
                Poll::Ready(Ok(n)) => Poll::Ready(Ok(Some(buf.split_to(n)))),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            };
            buf.clear();
            out
        })
        .await
    }

    /// Complete the TLS handshake (no-op without TLS). Returns plaintext that arrived with
    /// the client's last handshake flight (the start of its CONNECT).
    pub async fn handshake(&self, arena: &ReadArena) -> io::Result<BytesMut> {
        let Some(tls) = &self.tls else {
            return Ok(BytesMut::new());
        };
        let mut early = BytesMut::new();
        while tls.is_handshaking() {
            self.flush_tracked(&std::cell::Cell::new(0)).await?;
            let Some(cipher) = self.read_raw(arena, READ_HANDSHAKE).await? else {
                return Err(io::ErrorKind::UnexpectedEof.into());
            };
            match tls.feed(&cipher) {
                Ok(plain) => early.extend_from_slice(&plain),
                Err(e) => {
                    // Tell the client why (the alert rustls queued), best effort.
                    self.try_flush();
                    return Err(e);
                }
            }
        }
        // Session tickets and the server's last flight.
        self.flush_tracked(&std::cell::Cell::new(0)).await?;
        Ok(early)
    }

    /// Write all of `data`.
    pub async fn write_all(&self, data: &[u8]) -> io::Result<()> {
        self.write_all_tracked(data, &std::cell::Cell::new(0)).await
    }

    /// Write all of `data`; `progress` is set to [`super::clock_ms`] after every partial
    /// write (so a long write to a client that does read is not mistaken for a stall).
    pub async fn write_all_tracked(
        &self,
        data: &[u8],
        progress: &std::cell::Cell<u32>,
    ) -> io::Result<()> {
        match &self.ws {
            None => self.write_plain(data, progress).await,
            Some(ws) => self.write_ws(ws, data, progress).await,
        }
    }

    /// [`Io::write_all_tracked`] below the WebSocket layer.
    async fn write_plain(
        &self,
        mut data: &[u8],
        progress: &std::cell::Cell<u32>,
    ) -> io::Result<()> {
        if let Some(tls) = &self.tls {
            // Seal and write a piece at a time: a large payload is never held twice.
            self.flush_tracked(progress).await?;
            while !data.is_empty() {
                let n = data.len().min(TLS_WRITE_PIECE);
                tls.seal(&data[..n])?;
                data = &data[n..];
                self.flush_tracked(progress).await?;
            }
            return Ok(());
        }
        self.write_raw(data, progress).await
    }

    /// Write the waiting ciphertext (no-op without TLS).
    pub async fn flush(&self, progress: &std::cell::Cell<u32>) -> io::Result<()> {
        self.flush_tracked(progress).await
    }

    async fn flush_tracked(&self, progress: &std::cell::Cell<u32>) -> io::Result<()> {
        let Some(out) = self.output() else {
            return Ok(());
        };
        while out.has_output() {
            let n = poll_fn(|cx| {
                out.with_output_dyn(&mut |bytes| {
                    Pin::new(&mut *self.stream.borrow_mut()).poll_write(cx, bytes)
                })
            })
            .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            out.consumed(n);
            progress.set(super::clock_ms());
        }
        Ok(())
    }

    async fn write_raw(&self, mut data: &[u8], progress: &std::cell::Cell<u32>) -> io::Result<()> {
        while !data.is_empty() {
            let n =
                poll_fn(|cx| Pin::new(&mut *self.stream.borrow_mut()).poll_write(cx, data)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            progress.set(super::clock_ms());
            data = &data[n..];
        }
        Ok(())
    }

    /// Send waiting ciphertext (or frames) without blocking; what the socket does not take
    /// stays queued.
    fn try_flush(&self) -> usize {
        let Some(out) = self.output() else {
            return 0;
        };
        let fd = self.stream.borrow().as_raw_fd();
        let mut sent = 0;
        while out.has_output() {
            match out.with_output_dyn(&mut |bytes| Poll::Ready(send_nonblocking(fd, bytes))) {
                Poll::Ready(Ok(0) | Err(_)) | Poll::Pending => break,
                Poll::Ready(Ok(n)) => {
                    out.consumed(n);
                    sent += n;
                }
            }
        }
        sent
    }

    /// One non-blocking send of `data` straight from the caller (no task hop): the bytes the
    /// socket took, 0 if it would block. With TLS all of `data` is sealed and the ciphertext
    /// the socket did not take waits for [`Io::flush`] (check [`Io::has_output`]); the call
    /// returns 0 without sealing if ciphertext is already waiting (order).
    pub fn try_send(&self, data: &[u8]) -> io::Result<usize> {
        if let Some(ws) = &self.ws {
            return self.try_send_ws(ws, data);
        }
        if let Some(tls) = &self.tls {
            if tls.has_output() {
                return Ok(0);
            }
            tls.seal(data)?;
            self.try_flush();
            return Ok(data.len());
        }
        send_nonblocking(self.stream.borrow().as_raw_fd(), data)
    }

    /// Shut the socket down in both directions (wakes any pending read with EOF).
    pub fn shutdown(&self) {
        if let Some(ws) = &self.ws {
            self.ws_closing(ws);
        }
        if let Some(tls) = &self.tls {
            // A clean TLS close tells the client nothing was truncated.
            tls.close_notify();
            self.try_flush();
        }
        let fd = self.stream.borrow().as_raw_fd();
        // SAFETY: fd is valid while the stream lives.
        unsafe {
            libc::shutdown(fd, libc::SHUT_RDWR);
        }
    }

    /// Give up the socket, the TLS and the WebSocket state (parking, hand-off). Fails if
    /// another task still holds the `Io` or bytes are still waiting for the socket.
    pub fn into_parts(self: Rc<Io>) -> Result<Parts, Rc<Io>> {
        if self.has_output() {
            return Err(self);
        }
        let io = Rc::try_unwrap(self)?;
        Ok(Parts {
            stream: io.stream.into_inner(),
            tls: io.tls.map(Tls::into_session),
            ws: io.ws.map(|w| (*w).into_state()),
        })
    }
}

/// Largest read during a TLS handshake (a client flight is a few KB).
const READ_HANDSHAKE: usize = 16 * 1024;
/// Plaintext sealed per write with TLS.
const TLS_WRITE_PIECE: usize = 64 * 1024;

/// One non-blocking `send` on a raw socket: bytes taken, 0 when it would block.
pub fn send_nonblocking(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: the caller owns fd; data is a valid slice.
    let n = unsafe {
        libc::send(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(0)
    } else {
        Err(e)
    }
}

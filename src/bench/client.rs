//! The generator's MQTT client connection on glommio: TCP connect from a chosen source
//! address, the CONNECT/CONNACK and SUBSCRIBE/SUBACK handshakes, a write path shared by a
//! connection's tasks, and a streaming packet reader. The codec is `crate::proto`; the
//! socket wrapper is the broker's own [`Io`].
//!
//! Lives on one generator thread (`Rc`, never `Send`).

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::io::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use glommio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::proto::{
    encode, ConnAck, Connect, Decoder, Disconnect, Packet, Properties, ProtoError, ProtocolVersion,
    QoS, SubOptions, Subscribe, Utf8Bytes,
};
use crate::rt::net::{Io, ReadArena};

/// Bytes asked of the socket per read.
pub const READ_MAX: usize = 256 * 1024;

/// How long a TCP connect or an MQTT handshake may take before it counts as failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a client connection failed. Every variant is counted as an error in the report.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A socket call failed (connect refused, reset, fd limit...).
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// The broker sent bytes the codec rejects.
    #[error("protocol: {0}")]
    Proto(#[from] ProtoError),
    /// CONNACK carried a non-zero return / reason code.
    #[error("CONNACK refused with code {0:#04x}")]
    Refused(u8),
    /// SUBACK carried a failure code (0x80 or a 5.0 reason ≥ 0x80).
    #[error("SUBACK refused {filter} with code {code:#04x}")]
    SubscribeRefused { filter: String, code: u8 },
    /// The broker closed the connection (EOF or DISCONNECT) before the run finished.
    #[error("connection closed by the broker{0}")]
    Closed(String),
    /// A packet that has no place at this point of the exchange.
    #[error("unexpected {0} packet")]
    Unexpected(&'static str),
    /// TCP connect or handshake took longer than the handshake timeout.
    #[error("timed out during {0}")]
    Timeout(&'static str),
}

/// Connects a TCP socket to `dst`, bound first to `src` when given (so several loopback
/// addresses can each use their own ephemeral port range).
pub async fn tcp_connect(src: Option<Ipv4Addr>, dst: SocketAddr) -> io::Result<TcpStream> {
    let domain = if dst.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let sk = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    sk.set_nonblocking(true)?;
    if let (Some(ip), false) = (src, dst.is_ipv6()) {
        // Pick the port at connect time, per destination, not at bind time.
        let one: libc::c_int = 1;
        // SAFETY: valid fd, option value is a c_int of the right size.
        unsafe {
            libc::setsockopt(
                sk.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sk.bind(&SocketAddr::new(ip.into(), 0).into())?;
    }
    match sk.connect(&dst.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => wait_connected(&sk).await?,
        Err(e) => return Err(e),
    }
    // SAFETY: a connected, non-blocking TCP socket that we own and hand over whole.
    Ok(unsafe { TcpStream::from_raw_fd(sk.into_raw_fd()) })
}

/// Waits for a non-blocking connect to finish. On loopback it almost always has by the first
/// check; a full accept backlog makes the kernel retry the SYN after a second or more.
async fn wait_connected(sk: &Socket) -> io::Result<()> {
    let deadline = std::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let mut pause = Duration::from_micros(100);
    loop {
        let mut pfd = libc::pollfd {
            fd: sk.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n > 0 {
            return match sk.take_error()? {
                Some(e) => Err(e),
                None => Ok(()),
            };
        }
        if std::time::Instant::now() > deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        glommio::timer::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// The sending half of a connection, shared by the tasks that write on it (a publisher and
/// its ack reader, a subscriber's acks, the closer). Whoever appends calls [`Conn::flush`];
/// if a flush is already running it carries the new bytes too, so writes never interleave.
pub struct Conn {
    /// The socket, shared with the connection's [`Reader`].
    pub io: Rc<Io>,
    /// The socket, for checks `Io` does not offer (peeking whether the peer closed).
    pub fd: RawFd,
    /// Protocol level the packets are encoded for.
    pub version: ProtocolVersion,
    out: RefCell<BytesMut>,
    spare: RefCell<BytesMut>,
    flushing: Cell<bool>,
}

impl Conn {
    /// A connection with nothing pending.
    pub fn new(io: Rc<Io>, fd: RawFd, version: ProtocolVersion) -> Rc<Conn> {
        Rc::new(Conn {
            io,
            fd,
            version,
            out: RefCell::new(BytesMut::new()),
            spare: RefCell::new(BytesMut::new()),
            flushing: Cell::new(false),
        })
    }

    /// Appends one packet to the pending output.
    pub fn queue(&self, p: &Packet) {
        // Only packets the generator builds itself are encoded; they always fit.
        let _ = encode(p, self.version, &mut self.out.borrow_mut());
    }

    /// The pending output, for the publish hot path (`encode_publish` straight into it).
    pub fn out(&self) -> std::cell::RefMut<'_, BytesMut> {
        self.out.borrow_mut()
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.out.borrow().len()
    }

    /// Writes everything pending. Returns at once if another task is already flushing (it
    /// will write these bytes too).
    pub async fn flush(&self) -> io::Result<()> {
        if self.flushing.replace(true) {
            return Ok(());
        }
        let result = loop {
            let spare = std::mem::take(&mut *self.spare.borrow_mut());
            let mut buf = std::mem::replace(&mut *self.out.borrow_mut(), spare);
            if buf.is_empty() {
                // Put the (empty) spare back where it came from.
                std::mem::swap(&mut *self.out.borrow_mut(), &mut buf);
                *self.spare.borrow_mut() = buf;
                break Ok(());
            }
            let r = self.io.write_all(&buf).await;
            buf.clear();
            *self.spare.borrow_mut() = buf;
            if let Err(e) = r {
                break Err(e);
            }
        };
        self.flushing.set(false);
        result
    }
}

/// The receiving half: the connection's partial input and its decoder.
pub struct Reader {
    io: Rc<Io>,
    acc: BytesMut,
    dec: Decoder,
}

impl Reader {
    /// A reader decoding `version` packets of at most `max_packet` bytes.
    pub fn new(io: Rc<Io>, version: ProtocolVersion, max_packet: usize) -> Reader {
        Reader {
            io,
            acc: BytesMut::new(),
            dec: Decoder::with_version(version, max_packet),
        }
    }

    /// The next packet already buffered, without reading.
    pub fn try_next(&mut self) -> Result<Option<Packet>, ClientError> {
        Ok(self.dec.decode(&mut self.acc)?)
    }

    /// Reads more bytes; `false` on EOF.
    pub async fn fill(&mut self, arena: &ReadArena) -> Result<bool, ClientError> {
        match self.io.read(arena, READ_MAX).await? {
            None => Ok(false),
            Some(chunk) if self.acc.is_empty() => {
                self.acc = chunk;
                Ok(true)
            }
            Some(chunk) => {
                self.acc.extend_from_slice(&chunk);
                Ok(true)
            }
        }
    }

    /// The next packet, reading as needed; `Ok(None)` on EOF.
    pub async fn next(&mut self, arena: &ReadArena) -> Result<Option<Packet>, ClientError> {
        loop {
            if let Some(p) = self.try_next()? {
                return Ok(Some(p));
            }
            if !self.fill(arena).await? {
                return Ok(None);
            }
        }
    }
}

/// The name of a packet type, for error messages.
pub fn kind(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect(_) => "DISCONNECT",
        Packet::Auth(_) => "AUTH",
    }
}

/// What a connection setup needs to know.
pub struct Dial<'a> {
    /// Loopback source address to bind, if any.
    pub src: Option<Ipv4Addr>,
    /// The broker.
    pub dst: SocketAddr,
    /// Protocol level.
    pub version: ProtocolVersion,
    /// Client identifier.
    pub client_id: &'a str,
    /// Keep-alive seconds.
    pub keepalive: u16,
    /// Largest packet accepted (announced as Maximum Packet Size in 5.0).
    pub max_packet: usize,
    /// Clean session (3.1.1) / clean start (5.0). A persistent 5.0 session asks for
    /// [`SESSION_EXPIRY`] so it outlives the connection but not the benchmark by much.
    pub clean: bool,
}

/// Session Expiry Interval (seconds) a 5.0 client with a persistent session asks for.
pub const SESSION_EXPIRY: u32 = 300;

/// TCP connect, CONNECT, CONNACK (accepted). Returns the two halves and the CONNACK.
pub async fn open(
    d: &Dial<'_>,
    arena: &ReadArena,
) -> Result<(Rc<Conn>, Reader, ConnAck), ClientError> {
    let fut = async {
        let stream = tcp_connect(d.src, d.dst).await?;
        let fd = stream.as_raw_fd();
        let io = Io::new(stream);
        let conn = Conn::new(io.clone(), fd, d.version);
        let mut rx = Reader::new(io, d.version, d.max_packet);
        let mut properties = Properties::default();
        if d.version.is_v5() {
            properties.maximum_packet_size = Some(d.max_packet as u32);
            if !d.clean {
                properties.session_expiry_interval = Some(SESSION_EXPIRY);
            }
        }
        conn.queue(&Packet::Connect(Box::new(Connect {
            protocol: d.version,
            clean_start: d.clean,
            keep_alive: d.keepalive,
            client_id: Utf8Bytes::from(d.client_id),
            will: None,
            username: None,
            password: None,
            properties,
        })));
        conn.flush().await?;
        match rx.next(arena).await? {
            Some(Packet::ConnAck(ack)) if ack.code == 0 => Ok((conn, rx, ack)),
            Some(Packet::ConnAck(ack)) => Err(ClientError::Refused(ack.code)),
            Some(p) => Err(ClientError::Unexpected(kind(&p))),
            None => Err(ClientError::Closed(" before CONNACK".into())),
        }
    };
    with_timeout(fut, "connect").await
}

/// SUBSCRIBE to one filter and wait for its SUBACK.
pub async fn subscribe(
    conn: &Conn,
    rx: &mut Reader,
    arena: &ReadArena,
    filter: &str,
    qos: QoS,
) -> Result<(), ClientError> {
    conn.queue(&Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![(Utf8Bytes::from(filter), SubOptions::qos(qos))],
        properties: Properties::default(),
    }));
    conn.flush().await?;
    let fut = async {
        loop {
            match rx.next(arena).await? {
                Some(Packet::SubAck(ack)) => {
                    return match ack.codes.first() {
                        Some(&code) if code < 0x80 => Ok(()),
                        code => Err(ClientError::SubscribeRefused {
                            filter: filter.to_string(),
                            code: code.copied().unwrap_or(0x80),
                        }),
                    };
                }
                Some(Packet::PingResp) => {}
                Some(p) => return Err(ClientError::Unexpected(kind(&p))),
                None => return Err(ClientError::Closed(" before SUBACK".into())),
            }
        }
    };
    with_timeout(fut, "subscribe").await
}

/// Sends DISCONNECT and waits (bounded by the handshake timeout) for the broker to close
/// the connection, so the session is known to be offline when this returns. Packets that
/// arrive meanwhile are discarded.
pub async fn leave(conn: &Conn, rx: &mut Reader, arena: &ReadArena) -> Result<(), ClientError> {
    conn.queue(&Packet::Disconnect(Disconnect {
        reason: 0,
        properties: Properties::default(),
    }));
    conn.flush().await?;
    let fut = async {
        loop {
            match rx.next(arena).await {
                Ok(Some(_)) => {}
                // EOF or a reset: either way the broker has let go.
                Ok(None) | Err(ClientError::Io(_)) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    };
    let r = with_timeout(fut, "disconnect").await;
    conn.io.shutdown();
    r
}

async fn with_timeout<T>(
    fut: impl std::future::Future<Output = Result<T, ClientError>>,
    what: &'static str,
) -> Result<T, ClientError> {
    futures_lite::future::or(fut, async {
        glommio::timer::sleep(HANDSHAKE_TIMEOUT).await;
        Err(ClientError::Timeout(what))
    })
    .await
}

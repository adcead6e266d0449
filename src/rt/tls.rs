//! The TLS record layer of one connection: rustls state plus the ciphertext waiting for the
//! socket. Sans-socket: [`Tls::feed`] turns received ciphertext into plaintext, [`Tls::seal`]
//! turns plaintext into ciphertext queued in [`Tls::out`]; `rt::net::Io` moves the bytes.
//!
//! Owned by one connection on its home shard (inside its `Io` while active). While the
//! connection is parked only the rustls state is kept ([`Tls::into_session`]), so an idle TLS
//! client holds no ciphertext buffer; rustls itself keeps its keys and a small receive buffer.
//! A `ServerConnection` is `Send`, so a TLS connection can be handed to another shard.
//!
//! Ordering: every send of ciphertext takes bytes from the front of `out`, whichever task
//! sends, so records reach the socket in the order they were sealed.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};

use bytes::{Buf, BufMut, BytesMut};
use rustls::ServerConnection;

/// Plaintext is sealed in pieces of this size (one TLS record each at most).
const SEAL_PIECE: usize = 16 * 1024;

/// A connection's TLS state while it is active.
pub struct Tls {
    conn: RefCell<Box<ServerConnection>>,
    /// Ciphertext not yet taken by the socket.
    out: RefCell<BytesMut>,
    /// The peer sent close_notify: after the plaintext already returned, the stream is at EOF.
    eof: Cell<bool>,
}

impl Tls {
    pub fn new(conn: Box<ServerConnection>) -> Tls {
        Tls {
            conn: RefCell::new(conn),
            out: RefCell::new(BytesMut::new()),
            eof: Cell::new(false),
        }
    }

    /// Give up the ciphertext buffer and keep only the rustls state (parking, hand-off).
    /// The caller checks [`Tls::has_output`] first: every operation moves what rustls wants
    /// to send into the output at once, so an empty output means nothing is pending.
    pub fn into_session(self) -> Box<ServerConnection> {
        self.conn.into_inner()
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.borrow().is_handshaking()
    }

    pub fn at_eof(&self) -> bool {
        self.eof.get()
    }

    /// Ciphertext is waiting for the socket.
    pub fn has_output(&self) -> bool {
        !self.out.borrow().is_empty()
    }

    /// The DER certificates the client presented (mutual TLS), if any.
    pub fn with_peer_certificates<R>(
        &self,
        f: impl FnOnce(Option<&[rustls_pki_types::CertificateDer<'static>]>) -> R,
    ) -> R {
        f(self.conn.borrow().peer_certificates())
    }

    /// Decrypt received ciphertext. Returns the plaintext it carried (possibly empty: a
    /// handshake message, a key update, a partial record). Handshake and alert records the
    /// processing produces are queued in the output. A TLS violation is an `InvalidData`
    /// error (the alert rustls wants to send is queued first).
    pub fn feed(&self, mut data: &[u8]) -> io::Result<BytesMut> {
        let mut conn = self.conn.borrow_mut();
        let mut plain = BytesMut::new();
        while !data.is_empty() && !self.eof.get() {
            let took = conn.read_tls(&mut data)?;
            let state = match conn.process_new_packets() {
                Ok(s) => s,
                Err(e) => {
                    self.queue_output(&mut conn);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let at = plain.len();
                plain.resize(at + n, 0);
                conn.reader().read_exact(&mut plain[at..])?;
            }
            if state.peer_has_closed() {
                self.eof.set(true);
            } else if took == 0 {
                // rustls refused to buffer more without yielding a record: never loop.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS record buffer full",
                ));
            }
        }
        self.queue_output(&mut conn);
        Ok(plain)
    }

    /// Encrypt `data` into the output queue (all of it).
    pub fn seal(&self, mut data: &[u8]) -> io::Result<()> {
        let mut conn = self.conn.borrow_mut();
        while !data.is_empty() {
            let piece = data.len().min(SEAL_PIECE);
            let n = conn.writer().write(&data[..piece])?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            data = &data[n..];
            self.queue_output(&mut conn);
        }
        Ok(())
    }

    /// Queue a close_notify alert.
    pub fn close_notify(&self) {
        let mut conn = self.conn.borrow_mut();
        conn.send_close_notify();
        self.queue_output(&mut conn);
    }

    /// Move everything rustls wants to send into `out`.
    fn queue_output(&self, conn: &mut ServerConnection) {
        let mut out = self.out.borrow_mut();
        let mut w = (&mut *out).writer();
        while conn.wants_write() {
            // Writing into memory cannot fail.
            if conn.write_tls(&mut w).is_err() {
                break;
            }
        }
    }

    /// Peek at the output for an async write; see [`Tls::consumed`].
    pub fn with_output<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&self.out.borrow())
    }

    /// `n` bytes of the output were written.
    pub fn consumed(&self, n: usize) {
        let mut out = self.out.borrow_mut();
        let n = n.min(out.len());
        out.advance(n);
        if out.is_empty() && out.capacity() > SEAL_PIECE * 4 {
            *out = BytesMut::new();
        }
    }
}

//! The WebSocket layer of [`Io`] (MQTT over WebSocket, MQTT 5.0 §6): the upgrade, de-framing
//! on read, framing on write, control frames. The codec is `rt::ws`; this file moves its
//! bytes. Placed between TLS and MQTT: `wss://` frames are sealed by the TLS layer at once,
//! `ws://` frames wait in [`Ws::out`] like ciphertext waits in the TLS output.
//!
//! Owned by one connection on its home shard, inside its `Io`.

use std::cell::{Cell, RefCell};
use std::io;
use std::task::Poll;

use bytes::{Buf, BytesMut};

use super::{Io, Output, ReadArena};
use crate::rt::ws::{
    close, parse_upgrade, put_frame, put_header, Control, Deframer, Refusal, WsError, MAX_REQUEST,
    OP_BINARY, OP_CLOSE, OP_PONG,
};

/// Payload bytes framed (and copied) per step of a large write.
const WS_WRITE_PIECE: usize = 64 * 1024;

/// A connection's WebSocket state while it is active.
pub(super) struct Ws {
    dec: RefCell<Box<Deframer>>,
    /// Frames not yet taken by the socket (`ws://` only).
    out: RefCell<BytesMut>,
    /// A close frame was received, sent or a violation ended the stream: reads are at EOF.
    eof: Cell<bool>,
    /// A frame is being written in pieces: nothing else may be framed in between.
    writing: Cell<bool>,
}

impl Ws {
    pub(super) fn new(dec: Box<Deframer>) -> Box<Ws> {
        Box::new(Ws {
            dec: RefCell::new(dec),
            out: RefCell::new(BytesMut::new()),
            eof: Cell::new(false),
            writing: Cell::new(false),
        })
    }

    /// Keep only the decoder state (parking, hand-off); the caller checked the output.
    pub(super) fn into_state(self) -> Box<Deframer> {
        self.dec.into_inner()
    }
}

impl Output for Ws {
    fn has_output(&self) -> bool {
        !self.out.borrow().is_empty()
    }
    fn with_output_dyn(
        &self,
        f: &mut dyn FnMut(&[u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        f(&self.out.borrow())
    }
    fn consumed(&self, n: usize) {
        let mut out = self.out.borrow_mut();
        let n = n.min(out.len());
        out.advance(n);
        if out.is_empty() && out.capacity() > WS_WRITE_PIECE * 2 {
            *out = BytesMut::new();
        }
    }
}

/// Why a WebSocket upgrade did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The request was refused (the HTTP answer was sent).
    #[error("WebSocket upgrade refused: {0}")]
    Refused(Refusal),
    /// The socket failed or closed, or the first frames broke the protocol.
    #[error("WebSocket upgrade failed: {0}")]
    Io(#[from] io::Error),
}

/// Whether a read error is a WebSocket protocol violation (for counting and logging).
pub fn is_ws_error(e: &io::Error) -> Option<&WsError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<WsError>())
}

impl Io {
    /// Read and answer a WebSocket listener's upgrade request (RFC 6455 §4.2), after the TLS
    /// handshake: `early` is what TLS already decrypted. Returns the MQTT bytes that arrived
    /// after the request. No-op (returns `early`) on a connection without WebSocket. The
    /// request is bounded by [`MAX_REQUEST`]; the caller bounds the time.
    pub async fn ws_upgrade(
        &self,
        arena: &ReadArena,
        mut buf: BytesMut,
        path: &str,
    ) -> Result<BytesMut, UpgradeError> {
        let Some(ws) = &self.ws else {
            return Ok(buf);
        };
        loop {
            match parse_upgrade(&buf, path) {
                Ok(Some(accepted)) => {
                    self.write_plain(&accepted.response, &Cell::new(0)).await?;
                    let rest = buf.split_off(accepted.consumed);
                    return Ok(self.ws_input(ws, rest)?);
                }
                Ok(None) => {
                    let room = MAX_REQUEST.saturating_sub(buf.len()).max(1);
                    match self.read_plain(arena, room).await? {
                        Some(chunk) => buf.extend_from_slice(&chunk),
                        None => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                    }
                }
                Err(refusal) => {
                    // Best effort: the client learns why, then the connection closes.
                    let _ = self.write_plain(&refusal.response(), &Cell::new(0)).await;
                    return Err(UpgradeError::Refused(refusal));
                }
            }
        }
    }

    /// [`Io::read`] with WebSocket: reads until frames yield MQTT bytes, answering control
    /// frames on the way. Cancel-safe: everything read is either returned or fully handled.
    pub(super) async fn read_ws(
        &self,
        ws: &Ws,
        arena: &ReadArena,
        max: usize,
    ) -> io::Result<Option<BytesMut>> {
        loop {
            if ws.eof.get() {
                return Ok(None);
            }
            let Some(chunk) = self.read_plain(arena, max).await? else {
                return Ok(None);
            };
            let data = self.ws_input(ws, chunk)?;
            if !data.is_empty() {
                return Ok(Some(data));
            }
            // Only control frames or a partial header: not MQTT traffic, so the caller
            // (keep-alive, [MQTT-3.1.2-24]) does not see it as activity.
        }
    }

    /// De-frame received bytes in place; answer pings, echo a close, and on a violation
    /// send a close with its status code (RFC 6455 §7.1.7) and fail with the `WsError`.
    fn ws_input(&self, ws: &Ws, mut chunk: BytesMut) -> io::Result<BytesMut> {
        let mut ctrl = Vec::new();
        let res = ws.dec.borrow_mut().deframe(&mut chunk, &mut ctrl);
        for c in &ctrl {
            match c {
                // §5.5.2: a pong with the ping's payload, as soon as practical.
                Control::Ping(payload) => self.ws_frame(ws, OP_PONG, payload)?,
                // §5.5.1: echo the close (with the status code received) and end.
                Control::Close(code) => {
                    let body = code.map(u16::to_be_bytes);
                    self.ws_frame(ws, OP_CLOSE, body.as_ref().map_or(&[], |b| &b[..]))?;
                    ws.eof.set(true);
                }
            }
        }
        match res {
            Ok(n) => {
                chunk.truncate(n);
                if !ctrl.is_empty() {
                    self.try_flush();
                }
                Ok(chunk)
            }
            Err(e) => {
                if !ws.eof.replace(true) {
                    self.ws_frame(ws, OP_CLOSE, &e.close_code().to_be_bytes())?;
                }
                self.try_flush();
                Err(io::Error::new(io::ErrorKind::InvalidData, e))
            }
        }
    }

    /// Queue one whole server frame (sealed at once with TLS). Nothing is queued while a
    /// piecewise write is in progress (control answers never split a data frame; a pong
    /// lost that way is allowed, only the latest ping needs one, §5.5.3).
    fn ws_frame(&self, ws: &Ws, opcode: u8, payload: &[u8]) -> io::Result<()> {
        if ws.writing.get() {
            return Ok(());
        }
        put_frame(&mut ws.out.borrow_mut(), opcode, payload);
        self.seal_ws_out(ws)
    }

    /// With TLS, move the queued frame bytes into the TLS output.
    fn seal_ws_out(&self, ws: &Ws) -> io::Result<()> {
        if let Some(tls) = &self.tls {
            let mut out = ws.out.borrow_mut();
            tls.seal(&out)?;
            out.clear();
        }
        Ok(())
    }

    /// [`Io::write_all_tracked`] with WebSocket: all of `data` as one binary frame, framed
    /// and written a piece at a time.
    pub(super) async fn write_ws(
        &self,
        ws: &Ws,
        mut data: &[u8],
        progress: &Cell<u32>,
    ) -> io::Result<()> {
        self.flush_tracked(progress).await?;
        if data.is_empty() {
            return Ok(());
        }
        put_header(&mut ws.out.borrow_mut(), OP_BINARY, data.len());
        ws.writing.set(true);
        let res = async {
            while !data.is_empty() {
                let n = data.len().min(WS_WRITE_PIECE);
                ws.out.borrow_mut().extend_from_slice(&data[..n]);
                self.seal_ws_out(ws)?;
                data = &data[n..];
                self.flush_tracked(progress).await?;
            }
            Ok(())
        }
        .await;
        ws.writing.set(false);
        res
    }

    /// [`Io::try_send`] with WebSocket: `data` as one binary frame.
    pub(super) fn try_send_ws(&self, ws: &Ws, data: &[u8]) -> io::Result<usize> {
        if self.has_output() || ws.writing.get() {
            return Ok(0);
        }
        self.ws_frame(ws, OP_BINARY, data)?;
        self.try_flush();
        Ok(data.len())
    }

    /// The server closes: queue a close frame (1000) unless one was exchanged already.
    pub(super) fn ws_closing(&self, ws: &Ws) {
        if !ws.eof.replace(true) {
            let _ = self.ws_frame(ws, OP_CLOSE, &close::NORMAL.to_be_bytes());
        }
    }
}

//! Why a connection ended, for its "client disconnected" log line: the first cause noted
//! wins (a kill that follows a protocol error does not hide the error).
//!
//! Seams: [`Conn::note_end`] is called where a connection's end is decided (the client's
//! DISCONNECT, end of input, a violation, a kill); `lifecycle::teardown` logs the line.

use super::reason;

/// The first cause of a connection's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ending {
    /// Nothing noted (the writer's socket failed, or the tear-down had no recorded cause).
    #[default]
    Unknown,
    /// The client sent DISCONNECT with this reason code (0 normal, 0x04 with will...).
    ClientDisconnect(u8),
    /// The client closed the socket without DISCONNECT.
    PeerClosed,
    /// Reading the socket failed (reset, TLS or WebSocket error).
    SocketError,
    /// The broker ended it with this reason code (protocol error, keep-alive timeout,
    /// takeover, shutdown...); also for 3.1.x clients, which get no DISCONNECT.
    Server(u8),
}

impl Ending {
    /// The reason, for a log field.
    pub fn describe(self) -> String {
        match self {
            Ending::Unknown => "closed".into(),
            Ending::ClientDisconnect(0) => "client disconnected".into(),
            Ending::ClientDisconnect(4) => "client disconnected with will".into(),
            Ending::ClientDisconnect(c) => format!("client disconnected with reason 0x{c:02X}"),
            Ending::PeerClosed => "connection closed by client without DISCONNECT".into(),
            Ending::SocketError => "socket error".into(),
            Ending::Server(c) => match server_text(c) {
                "" => format!("closed by broker (0x{c:02X})"),
                t => format!("{t} (0x{c:02X})"),
            },
        }
    }
}

/// Operator-facing text for a server reason code (the wire's Reason String says less for
/// some codes, e.g. 0x80).
fn server_text(code: u8) -> &'static str {
    match code {
        reason::UNSPECIFIED_ERROR => "unspecified error (durable log, or a wait that failed)",
        0x87 => "not authorized",
        0x89 => "server busy",
        0x8C => "bad authentication method",
        reason::QUOTA_EXCEEDED => "quota exceeded",
        0x98 => "administrative action",
        c => reason::text(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_reads_as_a_reason() {
        assert_eq!(
            Ending::ClientDisconnect(0).describe(),
            "client disconnected"
        );
        assert_eq!(
            Ending::Server(reason::KEEP_ALIVE_TIMEOUT).describe(),
            "keep alive timeout (0x8D)"
        );
        assert_eq!(Ending::Server(0xA2).describe(), "closed by broker (0xA2)");
    }
}

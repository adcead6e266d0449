//! The runtime seam: the only module that names glommio (plus the connection shell, which
//! holds glommio's `TcpStream`). Single-thread notification primitives, the listener, the
//! cross-shard mesh outboxes and fd hand-off helpers live here, so a move to another
//! thread-per-core runtime stays contained.

pub mod mesh;
pub mod net;
pub mod park;
pub mod sync;

pub use glommio::timer::sleep;
pub use glommio::{spawn_local, yield_if_needed, Task};

/// Milliseconds since the first call in this process (wraps after ~49 days: compare with
/// `wrapping_sub`). Four bytes where a per-connection timestamp must stay small.
pub fn clock_ms() -> u32 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u32
}

/// Run `fut` for at most `d`; `None` if time ran out (the future is dropped).
pub async fn with_timeout<T>(
    d: std::time::Duration,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        sleep(d).await;
        None
    })
    .await
}

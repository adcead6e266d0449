//! The runtime seam: the only module that names glommio (plus the connection shell, which
//! holds glommio's `TcpStream`). Single-thread notification primitives, the listener, the
//! cross-shard mesh outboxes and fd hand-off helpers live here, so a move to another
//! thread-per-core runtime stays contained.

pub mod fs;
pub mod mesh;
pub mod net;
pub mod park;
pub mod sync;
pub mod tls;
pub mod ws;

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

/// "Now", read from the clock on first use only: a batch of writes asks for the time once,
/// and not at all when no message in it carries an expiry.
#[derive(Default)]
pub struct LazyNow(std::cell::Cell<Option<std::time::Instant>>);

impl LazyNow {
    pub fn get(&self) -> std::time::Instant {
        match self.0.get() {
            Some(t) => t,
            None => {
                let t = std::time::Instant::now();
                self.0.set(Some(t));
                t
            }
        }
    }
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

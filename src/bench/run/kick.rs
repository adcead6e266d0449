//! A watchdog that wakes a generator thread whose glommio executor went to sleep with work
//! still queued.
//!
//! glommio 0.9.0's run loop (`LocalExecutor::run`) treats "the preemption timer had already
//! expired before any task queue ran" like "no task queue has work" and parks the thread in
//! `io_uring_enter`. If no timer is registered at that moment and every task is runnable
//! rather than waiting on I/O, nothing ever completes and the thread sleeps for good with
//! work queued (fixed upstream in glommio/glommio#53, not in the release we use). A 1 ms
//! preemption timer (the `readers` queue's `Latency::Matters`) on a loaded machine, where
//! the thread can lose the CPU for more than that between arming the timer and running
//! the queues, hits it every few hundred runs: the watcher's 1 ms timer has just fired, the
//! sockets' readiness has just been consumed, and the generator stalls with unread acks in
//! its sockets.
//!
//! Any signal that interrupts `io_uring_enter` (EINTR) puts the executor back through its
//! loop, which then runs the queued tasks. Each thread's watcher bumps a heartbeat every
//! [`super::ctx`] watch period; [`watchdog`] sends `SIGURG` (handled by a no-op, with
//! `SA_RESTART`) to a thread whose heartbeat has not moved for [`STALE_AFTER`].

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// How long a heartbeat may stand still before the thread is kicked.
pub const STALE_AFTER: Duration = Duration::from_millis(10);

/// The signal used to interrupt a parked executor. Its default action is to ignore it, so a
/// stray one (before the handler is installed) is harmless.
const KICK: libc::c_int = libc::SIGURG;

/// One generator thread, as seen by the watchdog.
#[derive(Default)]
pub struct Heart {
    /// Kernel thread id while the thread runs its executor; 0 before and after.
    tid: AtomicI32,
    /// Bumped by the thread's watcher on every round.
    beats: AtomicU64,
}

impl Heart {
    /// Called on the generator thread when it starts.
    pub fn register(&self) {
        // SAFETY: gettid has no preconditions.
        self.tid.store(unsafe { libc::gettid() }, Relaxed);
    }

    /// Called on the generator thread before it returns: no more kicks.
    pub fn unregister(&self) {
        self.tid.store(0, Relaxed);
    }

    /// One round of the thread's watcher.
    pub fn beat(&self) {
        self.beats.fetch_add(1, Relaxed);
    }
}

extern "C" fn ignore(_: libc::c_int) {}

/// Installs the no-op `SIGURG` handler (once per process is enough; repeating is harmless).
/// `SA_RESTART` so the generator's other blocking calls resume instead of failing; an
/// `io_uring_enter` wait returns EINTR regardless, which is the point.
pub fn install_handler() {
    // SAFETY: a zeroed sigaction is valid; the handler is async-signal-safe (does nothing).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ignore as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(KICK, &sa, std::ptr::null_mut());
    }
}

/// Interrupts thread `tid` of this process.
pub fn kick(tid: i32) {
    // SAFETY: tgkill on our own process; a thread that exited meanwhile gives ESRCH.
    unsafe {
        libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, KICK);
    }
}

/// Watches `hearts` until `stop`, kicking every registered thread whose heartbeat has not
/// moved for [`STALE_AFTER`]. Returns the number of kicks sent.
pub fn watchdog(hearts: &[Heart], stop: &AtomicBool) -> u64 {
    let mut last: Vec<u64> = hearts.iter().map(|h| h.beats.load(Relaxed)).collect();
    let mut kicks = 0;
    while !stop.load(Relaxed) {
        std::thread::sleep(STALE_AFTER);
        for (h, seen) in hearts.iter().zip(last.iter_mut()) {
            let now = h.beats.load(Relaxed);
            let tid = h.tid.load(Relaxed);
            if now == *seen && tid != 0 {
                kick(tid);
                kicks += 1;
            }
            *seen = now;
        }
    }
    kicks
}

/// Starts [`watchdog`] on its own thread; set the returned flag to stop it.
pub fn spawn_watchdog(hearts: Arc<Vec<Heart>>) -> Arc<AtomicBool> {
    install_handler();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("bench-watchdog".into())
        .spawn(move || watchdog(&hearts, &flag))
        .expect("spawn the watchdog thread");
    stop
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// The lost park, after glommio's own reproducer (glommio/glommio#53): with a 20 µs
    /// preemption timer, the timer often expires between being armed and the queues
    /// running, and `run` parks with its future still runnable. Without the kicks, 2000
    /// runs never finished (5 of 5 tries hung within 5 s on the 2-core dev box); with them
    /// they take well under a second. (1 ns would not do: the timer would always be expired,
    /// so no kick could help either.) Returns whether the runs finished within `limit`.
    fn runs_finish_kicked(limit: Duration) -> bool {
        let hearts = Arc::new(vec![Heart::default()]);
        let stop = spawn_watchdog(hearts.clone());
        let (tx, rx) = mpsc::channel();
        let h = hearts.clone();
        std::thread::spawn(move || {
            h[0].register();
            let ex = glommio::LocalExecutorBuilder::default()
                .preempt_timer(Duration::from_micros(20))
                .make()
                .expect("executor");
            for _ in 0..2000 {
                ex.run(async {});
            }
            h[0].unregister();
            let _ = tx.send(());
        });
        let done = rx.recv_timeout(limit).is_ok();
        stop.store(true, Relaxed);
        // A hung thread is leaked (it owns nothing the other tests use).
        done
    }

    #[test]
    fn a_parked_executor_with_queued_work_is_woken() {
        assert!(
            runs_finish_kicked(Duration::from_secs(20)),
            "executor stayed parked despite the kicks"
        );
    }
}

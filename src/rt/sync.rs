//! Single-shard async primitives (`!Send`, no atomics): a wake-one notifier and a one-shot
//! reply slot. Owned by one shard; used between tasks of that shard only.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Wakes one waiting task. A `notify` with no waiter is remembered (one permit), so a
/// notification between "check" and "wait" is never lost.
#[derive(Default)]
pub struct Notify {
    permit: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Notify {
    pub fn new() -> Notify {
        Notify::default()
    }

    pub fn notify(&self) {
        self.permit.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Resolves once a permit is available, consuming it.
    pub fn notified(&self) -> Notified<'_> {
        Notified { n: self }
    }
}

pub struct Notified<'a> {
    n: &'a Notify,
}

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.n.permit.replace(false) {
            Poll::Ready(())
        } else {
            self.n.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }
}

/// Wakes every waiting task (a broadcast edge): `wait` resolves at the first
/// `notify_all` after the wait began. Waiters re-check their condition afterwards.
#[derive(Default)]
pub struct Signal {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Signal {
    pub fn new() -> Signal {
        Signal::default()
    }

    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Resolves at the next `notify_all`.
    pub fn wait(&self) -> SignalWait<'_> {
        SignalWait {
            s: self,
            seen: self.generation.get(),
        }
    }
}

pub struct SignalWait<'a> {
    s: &'a Signal,
    seen: u64,
}

impl Future for SignalWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.s.generation.get() != self.seen {
            Poll::Ready(())
        } else {
            // A waiter polled again before the edge may already be listed; a duplicate
            // waker only costs a spurious wake-up, so keep the list short but simple.
            let mut w = self.s.waiters.borrow_mut();
            if !w.iter().any(|x| x.will_wake(cx.waker())) {
                w.push(cx.waker().clone());
            }
            Poll::Pending
        }
    }
}

/// A one-shot reply slot: `fill` once, `wait` resolves with the value (or `None` if the
/// slot was dropped unfilled by `cancel`).
pub struct Reply<T> {
    inner: Rc<ReplyInner<T>>,
}

struct ReplyInner<T> {
    value: RefCell<Option<T>>,
    done: Cell<bool>,
    notify: Notify,
}

impl<T> Clone for Reply<T> {
    fn clone(&self) -> Self {
        Reply {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Default for Reply<T> {
    fn default() -> Self {
        Reply {
            inner: Rc::new(ReplyInner {
                value: RefCell::new(None),
                done: Cell::new(false),
                notify: Notify::new(),
            }),
        }
    }
}

impl<T> Reply<T> {
    pub fn new() -> Reply<T> {
        Reply::default()
    }

    pub fn fill(&self, v: T) {
        *self.inner.value.borrow_mut() = Some(v);
        self.inner.done.set(true);
        self.inner.notify.notify();
    }

    pub fn cancel(&self) {
        self.inner.done.set(true);
        self.inner.notify.notify();
    }

    pub async fn wait(&self) -> Option<T> {
        while !self.inner.done.get() {
            self.inner.notify.notified().await;
        }
        self.inner.value.borrow_mut().take()
    }
}

/// Counts outstanding acknowledgements; `wait` resolves when all arrived.
pub struct Countdown {
    left: Cell<usize>,
    notify: Notify,
}

impl Countdown {
    pub fn new(n: usize) -> Rc<Countdown> {
        Rc::new(Countdown {
            left: Cell::new(n),
            notify: Notify::new(),
        })
    }

    pub fn tick(&self) {
        let l = self.left.get().saturating_sub(1);
        self.left.set(l);
        if l == 0 {
            self.notify.notify();
        }
    }

    pub async fn wait(&self) {
        while self.left.get() > 0 {
            self.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_before_wait_is_not_lost_and_reply_delivers() {
        glommio::LocalExecutor::default().run(async {
            let n = Rc::new(Notify::new());
            n.notify();
            n.notified().await;
            let r: Reply<u32> = Reply::new();
            let r2 = r.clone();
            glommio::spawn_local(async move { r2.fill(7) }).detach();
            assert_eq!(r.wait().await, Some(7));
            let c = Countdown::new(2);
            let c2 = c.clone();
            glommio::spawn_local(async move {
                c2.tick();
                c2.tick();
            })
            .detach();
            c.wait().await;
        });
    }

    #[test]
    fn signal_wakes_every_waiter_once_per_edge() {
        glommio::LocalExecutor::default().run(async {
            let s = Rc::new(Signal::new());
            let woke = Rc::new(Cell::new(0));
            let mut tasks = Vec::new();
            for _ in 0..3 {
                let (s, woke) = (s.clone(), woke.clone());
                tasks.push(glommio::spawn_local(async move {
                    s.wait().await;
                    woke.set(woke.get() + 1);
                }));
            }
            futures_lite::future::yield_now().await;
            assert_eq!(woke.get(), 0);
            s.notify_all();
            for t in tasks {
                t.await;
            }
            assert_eq!(woke.get(), 3);
        });
    }
}

//! Publisher tasks: connect, wait for the start, publish the quota (paced per message by
//! [`Pacer`] when `--rate` is set, or as fast as the QoS 1/2 [`Window`] allows), then wait
//! for the last acknowledgements. A second task per publisher reads the acks.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use glommio::sync::Semaphore;
use glommio::timer::sleep;

use super::ctx::Ctx;
use crate::bench::client::{kind, ClientError, Conn, Reader};
use crate::bench::header::{now_ns, Header};
use crate::proto::{encode_publish, Packet, Properties, PubResp, QoS};

/// Flush a publisher's pending output once it holds this many bytes.
const WRITE_BATCH: usize = 16 * 1024;

/// The most a late paced publisher catches up in one burst: past this lag the schedule
/// slides forward instead of owing the messages.
pub const MAX_LAG_NS: u64 = 5_000_000;

/// The send schedule of one paced publisher: one message every `1/rate` seconds, each due
/// at its own instant (never a per-second burst).
///
/// Publisher `j` of `n` starts `j/n` of an interval after the common start, so the
/// publishers' messages interleave evenly instead of all leaving at the same instant. A
/// publisher that falls behind (a full window, a busy generator thread) sends the missed
/// messages back to back, but at most [`MAX_LAG_NS`] worth of them. Pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacer {
    start: u64,
    next: u64,
    interval: u64,
    max_lag: u64,
    tick: u64,
}

impl Pacer {
    /// The schedule of publisher `j` of `n` at `rate` messages per second from `start_ns`;
    /// `None` when unpaced (`rate` 0, or too high to space on a nanosecond clock).
    pub fn new(start_ns: u64, rate: u64, j: usize, n: usize) -> Option<Pacer> {
        let interval = 1_000_000_000u64.checked_div(rate).filter(|&i| i > 0)?;
        let offset = interval * j as u64 / n.max(1) as u64;
        Some(Pacer {
            start: start_ns,
            next: start_ns + offset,
            interval,
            max_lag: MAX_LAG_NS.max(interval),
            tick: 0,
        })
    }

    /// Wake only on a grid of `tick_ns` from the common start (0: per message), so every
    /// publisher of a thread shares one wake-up per tick.
    pub fn with_tick(mut self, tick_ns: u64) -> Pacer {
        self.tick = tick_ns;
        self
    }

    /// When the next message is due ([`now_ns`] time).
    pub fn due(&self) -> u64 {
        self.next
    }

    /// When to wake for the next message: its due time, rounded up to the tick grid.
    pub fn wake_at(&self) -> u64 {
        if self.tick == 0 {
            return self.next;
        }
        let since = self.next - self.start;
        self.start + since.div_ceil(self.tick) * self.tick
    }

    /// Records that the due message left at `now`: the next one is due one interval later,
    /// or at `now - max_lag` if that is later (a bounded catch-up).
    pub fn sent(&mut self, now: u64) {
        self.next = (self.next + self.interval).max(now.saturating_sub(self.max_lag));
    }
}

/// A publisher's QoS 1/2 window: packet ids in use and a semaphore of free slots.
/// Owned by the publisher's tasks (writer and ack reader) on one thread.
pub struct Window {
    slots: Semaphore,
    size: u64,
    used: RefCell<Vec<bool>>,
    next: Cell<u16>,
}

impl Window {
    fn new(size: u16) -> Window {
        Window {
            slots: Semaphore::new(u64::from(size)),
            size: u64::from(size),
            used: RefCell::new(vec![false; 65536]),
            next: Cell::new(1),
        }
    }

    /// A free packet id; the caller holds a slot, so one exists.
    fn alloc(&self) -> u16 {
        let mut used = self.used.borrow_mut();
        loop {
            let id = self.next.get();
            self.next.set(if id == u16::MAX { 1 } else { id + 1 });
            if !used[usize::from(id)] {
                used[usize::from(id)] = true;
                return id;
            }
        }
    }

    /// Frees `id` and its slot; false if it was not in flight.
    fn release(&self, id: u16) -> bool {
        let was = std::mem::replace(&mut self.used.borrow_mut()[usize::from(id)], false);
        if was {
            self.slots.signal(1);
        }
        was
    }
}

/// Publisher `j`: connect, report ready, publish from the start until its quota, the
/// deadline or the stop flag, then wait (up to `--drain`) for its last acks.
pub async fn publisher(ctx: Rc<Ctx>, j: usize) {
    let k = ctx.plan.sub_filters.len() + j;
    let id = format!("{}-p{j}", ctx.plan.client_prefix);
    let link = match ctx.dial(k, &id, true, false).await {
        Ok(l) => l,
        Err(e) => {
            ctx.sh.setup_failed.fetch_add(1, Relaxed);
            return ctx.error("connect", &e);
        }
    };
    let conn = link.conn;
    ctx.sh.pubs_ready.fetch_add(1, Relaxed);
    ctx.start.wait().await;
    let window = Rc::new(Window::new(ctx.plan.inflight));
    let reader = glommio::spawn_local_into(
        ack_reader(ctx.clone(), conn.clone(), link.rx, window.clone()),
        ctx.readers,
    )
    .expect("task queue exists");
    let mut seq = 0;
    if !ctx.finishing.get() {
        if let Err(e) = publish(&ctx, &conn, j, &window, &mut seq).await {
            ctx.error("publisher", &e);
        }
    }
    ctx.sh.sent[j].store(seq, Relaxed);
    ctx.sh.last_publish_ns.fetch_max(now_ns(), Relaxed);
    if ctx.plan.qos > 0 {
        // Wait for the last acks: every slot back.
        futures_lite::future::or(
            async {
                let _ = window.slots.acquire(window.size).await;
            },
            sleep(ctx.plan.drain),
        )
        .await;
    }
    ctx.sh.pubs_done.fetch_add(1, Relaxed);
    reader.await;
}

/// Publishes until the quota, the deadline or the stop flag; `seq` ends as the count sent.
async fn publish(
    ctx: &Ctx,
    conn: &Conn,
    j: usize,
    window: &Window,
    seq: &mut u64,
) -> Result<(), ClientError> {
    let p = &ctx.plan;
    let (topic, quota) = (&p.pubs[j].0, p.pubs[j].1);
    let qos = ctx.qos();
    let start = ctx.sh.start_ns.load(Relaxed);
    let deadline = start + p.duration.as_nanos() as u64;
    let mut pacer = Pacer::new(start, p.rate, j, p.pubs.len()).map(|x| x.with_tick(p.tick_ns));
    let mut payload = vec![0x5Au8; p.payload];
    while *seq < quota {
        let mut now = now_ns();
        if now >= deadline || ctx.sh.stop.load(Relaxed) {
            break;
        }
        if let Some(pacer) = pacer {
            if pacer.due() > now {
                conn.flush().await?;
                sleep(Duration::from_nanos(pacer.wake_at().saturating_sub(now))).await;
                now = now_ns();
            }
        }
        let pkid = if qos == QoS::AtMostOnce {
            0
        } else {
            let closed = |_| ClientError::Closed(" (ack reader ended)".into());
            if !window.slots.try_acquire(1).map_err(closed)? {
                conn.flush().await?;
                window.slots.acquire(1).await.map_err(closed)?;
                now = now_ns();
            }
            window.alloc()
        };
        Header {
            publisher: j as u32,
            seq: *seq,
            sent_ns: now,
        }
        .write(&mut payload);
        encode_publish(
            &mut conn.out(),
            p.version,
            topic.as_bytes(),
            &payload,
            qos,
            false,
            false,
            pkid,
            None,
        )?;
        *seq += 1;
        if let Some(pacer) = pacer.as_mut() {
            pacer.sent(now);
        }
        if conn.pending() >= WRITE_BATCH {
            conn.flush().await?;
            // A loopback write usually completes without suspending; yield so the
            // subscribers on this thread get to read.
            futures_lite::future::yield_now().await;
        }
    }
    conn.flush().await?;
    Ok(())
}

/// A publisher's read loop: PUBACK / PUBREC→PUBREL / PUBCOMP free window slots.
async fn ack_reader(ctx: Rc<Ctx>, conn: Rc<Conn>, mut rx: Reader, window: Rc<Window>) {
    let r: Result<(), ClientError> = async {
        loop {
            while let Some(p) = rx.try_next()? {
                match p {
                    Packet::PubAck(r) if ctx.plan.qos == 1 => {
                        if !window.release(r.pkid) {
                            ctx.error("publisher", &format!("PUBACK for unknown id {}", r.pkid));
                        } else if r.reason >= 0x80 {
                            ctx.error("publisher", &format!("PUBACK reason {:#04x}", r.reason));
                        }
                    }
                    Packet::PubRec(r) if ctx.plan.qos == 2 => {
                        if r.reason >= 0x80 {
                            window.release(r.pkid);
                            ctx.error("publisher", &format!("PUBREC reason {:#04x}", r.reason));
                        } else {
                            conn.queue(&Packet::PubRel(PubResp {
                                pkid: r.pkid,
                                reason: 0,
                                properties: Properties::default(),
                            }));
                        }
                    }
                    Packet::PubComp(r) if ctx.plan.qos == 2 => {
                        if !window.release(r.pkid) {
                            ctx.error("publisher", &format!("PUBCOMP for unknown id {}", r.pkid));
                        }
                    }
                    Packet::PingResp => {}
                    Packet::Disconnect(d) => {
                        return Err(ClientError::Closed(format!(
                            ": DISCONNECT {:#04x}",
                            d.reason
                        )))
                    }
                    other => return Err(ClientError::Unexpected(kind(&other))),
                }
            }
            if conn.pending() > 0 {
                conn.flush().await?;
            }
            if !rx.fill(&ctx.arena).await? {
                return if ctx.finishing.get() {
                    Ok(())
                } else {
                    Err(ClientError::Closed(String::new()))
                };
            }
        }
    }
    .await;
    if let Err(e) = r {
        if !ctx.finishing.get() {
            ctx.error("publisher", &e);
        }
    }
    // Wake a writer blocked on the window.
    window.slots.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `count` messages, each as soon as it is due, but none before `busy_until` (a
    /// sender held up until then); returns the send times.
    fn drive(p: &mut Pacer, count: usize, busy_until: u64) -> Vec<u64> {
        let mut now = 0;
        let mut out = Vec::new();
        for _ in 0..count {
            now = now.max(p.due()).max(busy_until);
            out.push(now);
            p.sent(now);
        }
        out
    }

    #[test]
    fn unpaced_without_a_rate() {
        assert_eq!(Pacer::new(0, 0, 0, 1), None);
        assert_eq!(Pacer::new(0, 2_000_000_000, 0, 1), None);
    }

    #[test]
    fn every_message_has_its_own_instant() {
        // 1000 msgs/s: one per millisecond, not 1000 at the top of each second.
        let mut p = Pacer::new(5, 1000, 0, 1).unwrap();
        let t = drive(&mut p, 2500, 0);
        for (i, w) in t.windows(2).enumerate() {
            assert_eq!(w[1] - w[0], 1_000_000, "gap before message {}", i + 1);
        }
        assert_eq!(t[0], 5);
    }

    #[test]
    fn a_tick_grid_batches_the_wake_ups() {
        // 10 000 msgs/s on a 1 ms grid: wake once per millisecond, then send the ten
        // messages due by then; the rate over time stays the same.
        let p = Pacer::new(7, 10_000, 0, 1).unwrap().with_tick(1_000_000);
        let mut p2 = p;
        assert_eq!(p.wake_at(), 7, "the first message is due at the start");
        p2.sent(7);
        assert_eq!(p2.due(), 100_007);
        assert_eq!(p2.wake_at(), 1_000_007, "next grid point");
        let mut q = Pacer::new(7, 10_000, 0, 1).unwrap().with_tick(1_000_000);
        let mut wakes = std::collections::BTreeSet::new();
        let mut now = 0;
        for _ in 0..1000 {
            if q.due() > now {
                now = q.wake_at();
                wakes.insert(now);
            }
            q.sent(now);
        }
        // Due times 0 … 99.9 ms after the start: the start plus every grid point to 100 ms.
        assert_eq!(wakes.len(), 101, "one wake per tick");
        assert!(wakes.iter().all(|w| (w - 7) % 1_000_000 == 0));
    }

    #[test]
    fn publishers_are_staggered_within_the_interval() {
        let firsts: Vec<u64> = (0..4)
            .map(|j| Pacer::new(100, 1000, j, 4).unwrap().due())
            .collect();
        assert_eq!(firsts, [100, 250_100, 500_100, 750_100]);
    }

    #[test]
    fn a_late_publisher_catches_up_in_a_bounded_burst() {
        // 10 000 msgs/s (100 µs apart), but the sender is stuck for the first second.
        let mut p = Pacer::new(0, 10_000, 0, 1).unwrap();
        let t = drive(&mut p, 200, 1_000_000_000);
        let burst = t.iter().filter(|&&x| x == 1_000_000_000).count() as u64;
        // The missed second is forgiven; only MAX_LAG_NS worth (both ends of the window
        // included) is sent back to back.
        assert!(burst <= MAX_LAG_NS / 100_000 + 2, "burst of {burst}");
        let last = t.windows(2).last().unwrap();
        assert_eq!(last[1] - last[0], 100_000, "back on the schedule");
    }
}

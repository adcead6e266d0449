//! Subscriber tasks: connect and subscribe, then check, time and acknowledge every PUBLISH
//! until the run ends. Two variants ride on the same read loop:
//!
//! - `backlog`: the subscriber uses a persistent session, leaves (DISCONNECT) right after
//!   its SUBACK, and comes back when the coordinator opens the resume gate, expecting the
//!   broker to still hold its session and the messages queued meanwhile;
//! - `slow`: the last subscriber is throttled by a token bucket filled by the fast
//!   subscribers' progress ([`allowance`]), so it processes `--slow-factor` of what each of
//!   them does and leaves the rest in its socket for the broker to cope with.
//!
//! Also the idle clients of `conn`.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use glommio::timer::sleep;

use super::ctx::{Ctx, Link};
use crate::bench::check::Checker;
use crate::bench::cli::Audience;
use crate::bench::client::{self, kind, ClientError, Conn, Reader};
use crate::bench::header::{now_ns, Header};
use crate::proto::{Packet, Properties, PubResp, QoS};

/// Error text for a persistent session that existed before the run.
pub const STALE: &str = "the broker already had a session for this client id (an earlier run \
                         with the same --client-prefix?): its old messages may show as phantom";

/// How long a throttled subscriber waits for more tokens.
const SLOW_TICK: Duration = Duration::from_millis(1);

/// Messages a slow subscriber may have processed when the fast ones have received
/// `fast_delivered` in total between `fast_subs` of them: `factor` of one fast subscriber's
/// count, plus one so it never starts at a standstill. Pure.
pub fn allowance(fast_delivered: u64, fast_subs: usize, factor: f64) -> u64 {
    1 + (fast_delivered as f64 / fast_subs.max(1) as f64 * factor) as u64
}

/// Idle client `c` of the `conn` scenario: connect and stay connected (the registry keeps
/// the connection open until the end).
pub async fn idle_client(ctx: Rc<Ctx>, c: usize) {
    let k = ctx.plan.sub_filters.len() + ctx.plan.pubs.len() + c;
    let id = format!("{}-c{c}", ctx.plan.client_prefix);
    match ctx.dial(k, &id, true, false).await {
        Ok(_) => {
            ctx.sh.idle_connected.fetch_add(1, Relaxed);
        }
        Err(e) => {
            ctx.sh.setup_failed.fetch_add(1, Relaxed);
            ctx.error("connect", &e);
        }
    }
}

/// Subscriber `i`: connect, subscribe, (`backlog`: go offline and come back), then receive
/// until the end. Its checker goes to the thread's result.
pub async fn subscriber(ctx: Rc<Ctx>, i: usize) {
    let own = RefCell::new(Checker::new(ctx.plan.qos, true));
    let group = ctx.plan.audience == Audience::Group;
    let checker = if group { &ctx.group } else { &own };
    if let Some(Link { conn, mut rx, .. }) = set_up(&ctx, i).await {
        let slow = ctx.plan.is_slow(i);
        if let Err(e) = receive(&ctx, &conn, &mut rx, checker, slow).await {
            if !ctx.finishing.get() {
                ctx.error("subscriber", &e);
            }
        }
    }
    if !group {
        ctx.stats.borrow_mut().checkers.push((i, own.into_inner()));
    }
}

/// Connects and subscribes subscriber `i`; for an offline subscriber also leaves and
/// resumes. `None` when it has nothing to receive (failed, or the run ended first).
async fn set_up(ctx: &Ctx, i: usize) -> Option<Link> {
    let p = &ctx.plan;
    let id = format!("{}-s{i}", p.client_prefix);
    let persistent = p.offline_subs || p.persistent_subs;
    let mut link = match ctx.dial(i, &id, !persistent, false).await {
        Ok(l) => l,
        Err(e) => {
            ctx.sh.setup_failed.fetch_add(1, Relaxed);
            ctx.error("connect", &e);
            return None;
        }
    };
    if persistent && link.session_present {
        ctx.error("connect", &STALE);
    }
    let filter = &p.sub_filters[i];
    match client::subscribe(&link.conn, &mut link.rx, &ctx.arena, filter, ctx.qos()).await {
        Ok(()) => {}
        Err(e @ ClientError::SubscribeRefused { .. }) => {
            ctx.sh.refused.fetch_add(1, Relaxed);
            ctx.error("subscribe", &e);
            return None;
        }
        Err(e) => {
            ctx.sh.setup_failed.fetch_add(1, Relaxed);
            ctx.error("subscribe", &e);
            return None;
        }
    }
    if !p.offline_subs {
        ctx.sh.subs_ready.fetch_add(1, Relaxed);
        return Some(link);
    }
    // Offline until the publishers are done: the broker queues for the session.
    if let Err(e) = client::leave(&link.conn, &mut link.rx, &ctx.arena).await {
        ctx.error("disconnect", &e);
    }
    ctx.forget(link.slot);
    drop(link);
    ctx.sh.offline.fetch_add(1, Relaxed);
    ctx.sh.subs_ready.fetch_add(1, Relaxed);
    ctx.resume.wait().await;
    if ctx.finishing.get() {
        return None;
    }
    resume(ctx, i, &id).await
}

/// Reconnects offline client `k` with its persistent session; counts the outcome and a
/// session the broker no longer had. Shared by `backlog` and `storm`.
pub async fn resume(ctx: &Ctx, k: usize, id: &str) -> Option<Link> {
    match ctx.dial(k, id, false, true).await {
        Ok(l) => {
            ctx.sh.resumed.fetch_add(1, Relaxed);
            if !l.session_present {
                ctx.sh.session_missing.fetch_add(1, Relaxed);
                ctx.error("resume", &format!("{id}: CONNACK session present = 0"));
            }
            Some(l)
        }
        Err(e) => {
            ctx.sh.resume_failed.fetch_add(1, Relaxed);
            ctx.error("reconnect", &e);
            None
        }
    }
}

/// The acknowledgement a received PUBLISH calls for, if any.
pub fn ack_for(qos: QoS, pkid: u16) -> Option<Packet> {
    let ack = PubResp {
        pkid,
        reason: 0,
        properties: Properties::default(),
    };
    match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce => Some(Packet::PubAck(ack)),
        QoS::ExactlyOnce => Some(Packet::PubRec(ack)),
    }
}

/// A subscriber's read loop: check and time every PUBLISH, ack per QoS, until EOF. A `slow`
/// subscriber processes only what [`allowance`] grants and otherwise leaves the input
/// unread (its socket fills, the broker has to hold or drop).
async fn receive(
    ctx: &Ctx,
    conn: &Conn,
    rx: &mut Reader,
    checker: &RefCell<Checker>,
    slow: bool,
) -> Result<(), ClientError> {
    let fast_subs = ctx.plan.fast_subs();
    let mut processed = 0u64;
    loop {
        let budget = if slow {
            allowance(
                ctx.sh.delivered.load(Relaxed),
                fast_subs,
                ctx.plan.slow_factor,
            )
            .saturating_sub(processed)
        } else {
            u64::MAX
        };
        let now = now_ns();
        let mut n = 0u64;
        let mut drained = false;
        {
            let mut stats = ctx.stats.borrow_mut();
            let mut checker = checker.borrow_mut();
            while n < budget {
                let Some(p) = rx.try_next()? else {
                    drained = true;
                    break;
                };
                match p {
                    Packet::Publish(p) => {
                        n += 1;
                        match Header::read(&p.payload) {
                            Some(h) => {
                                if !slow {
                                    let age = now.saturating_sub(h.sent_ns).max(1);
                                    stats.latency.saturating_record(age);
                                }
                                checker.record_publish(h.publisher, h.seq, p.dup);
                            }
                            None => stats.error("subscriber", &"payload without bench header"),
                        }
                        if let Some(ack) = ack_for(p.qos, p.pkid) {
                            conn.queue(&ack);
                        }
                    }
                    Packet::PubRel(r) => conn.queue(&Packet::PubComp(PubResp {
                        pkid: r.pkid,
                        reason: 0,
                        properties: Properties::default(),
                    })),
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
        }
        processed += n;
        if n > 0 {
            let (count, last) = if slow {
                (&ctx.sh.slow_delivered, &ctx.sh.slow_last_ns)
            } else {
                (&ctx.sh.delivered, &ctx.sh.last_delivery_ns)
            };
            count.fetch_add(n, Relaxed);
            last.fetch_max(now, Relaxed);
        }
        if conn.pending() > 0 {
            conn.flush().await?;
        }
        if !drained {
            // Out of tokens with input waiting: let the others get ahead.
            if ctx.finishing.get() {
                return Ok(());
            }
            sleep(SLOW_TICK).await;
            continue;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slow_subscriber_keeps_its_fraction_of_one_fast_one() {
        assert_eq!(allowance(0, 9, 0.01), 1);
        // 9 fast subscribers with 100 000 messages each: 1 % of one of them.
        assert_eq!(allowance(900_000, 9, 0.01), 1001);
        assert_eq!(allowance(500, 5, 1.0), 101);
        assert_eq!(
            allowance(10, 0, 0.5),
            6,
            "no fast subscriber: no division by zero"
        );
    }

    #[test]
    fn acks_follow_the_delivery_qos() {
        assert!(ack_for(QoS::AtMostOnce, 0).is_none());
        assert!(matches!(ack_for(QoS::AtLeastOnce, 7), Some(Packet::PubAck(r)) if r.pkid == 7));
        assert!(matches!(ack_for(QoS::ExactlyOnce, 9), Some(Packet::PubRec(r)) if r.pkid == 9));
    }
}

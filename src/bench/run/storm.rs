//! The `storm` scenario: N persistent sessions, each subscribed to its own topic, lose
//! their connections at once (socket closed without DISCONNECT, or a clean DISCONNECT with
//! `--storm-close clean`) and then all reconnect at once.
//!
//! Measured: the reconnect rate and CONNACK latency of the storm alone, reconnects that
//! failed, and resumes whose CONNACK said "no session" (session present = 0). Then every
//! client publishes one message to its own topic and waits for it to come back, which
//! proves the broker resumed the subscription too, not just the session flag.
//!
//! Client side: [`storm_client`] on the generator threads; coordinator side: [`coordinate`].

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use glommio::timer::sleep;

use super::ctx::{Ctx, Link};
use super::subscriber::{ack_for, resume, STALE};
use super::{wait_for, Outcome, Resume, Shared, PHASE_RESUME, PHASE_VERIFY};
use crate::bench::cli::{Plan, StormClose};
use crate::bench::client::{self, kind, ClientError};
use crate::bench::header::{now_ns, Header, HEADER_LEN};
use crate::proto::{encode_publish, Packet, Properties, PubResp, QoS};

/// Time between the last connection gone and the reconnect storm, so the broker has seen
/// every close (a reconnect that overtakes its own close is a takeover instead).
const SETTLE: Duration = Duration::from_millis(500);

/// How long a storm client waits for its echo.
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

/// Storm client `c`: connect with a persistent session, subscribe to its topic, drop the
/// connection at the start, reconnect at the resume, echo one message at the verify, then
/// hold the connection until the end.
pub async fn storm_client(ctx: Rc<Ctx>, c: usize) {
    let p = &ctx.plan;
    let k = p.sub_filters.len() + p.pubs.len() + p.idle_conns + c;
    let id = format!("{}-t{c}", p.client_prefix);
    let topic = p.storm_topic(c);
    let mut link = match ctx.dial(k, &id, false, false).await {
        Ok(l) => l,
        Err(e) => {
            ctx.sh.setup_failed.fetch_add(1, Relaxed);
            return ctx.error("connect", &e);
        }
    };
    if link.session_present {
        ctx.error("connect", &STALE);
    }
    match client::subscribe(&link.conn, &mut link.rx, &ctx.arena, &topic, ctx.qos()).await {
        Ok(()) => {}
        Err(e @ ClientError::SubscribeRefused { .. }) => {
            ctx.sh.refused.fetch_add(1, Relaxed);
            return ctx.error("subscribe", &e);
        }
        Err(e) => {
            ctx.sh.setup_failed.fetch_add(1, Relaxed);
            return ctx.error("subscribe", &e);
        }
    }
    ctx.sh.idle_connected.fetch_add(1, Relaxed);
    ctx.start.wait().await;
    if ctx.finishing.get() {
        return;
    }
    match p.storm_close {
        StormClose::Abrupt => link.conn.io.shutdown(),
        StormClose::Clean => {
            if let Err(e) = client::leave(&link.conn, &mut link.rx, &ctx.arena).await {
                ctx.error("disconnect", &e);
            }
        }
    }
    ctx.forget(link.slot);
    drop(link);
    ctx.sh.offline.fetch_add(1, Relaxed);
    ctx.resume.wait().await;
    if ctx.finishing.get() {
        return;
    }
    let Some(mut link) = resume(&ctx, k, &id).await else {
        return;
    };
    ctx.verify.wait().await;
    if ctx.finishing.get() {
        return;
    }
    let echoed = futures_lite::future::or(
        async { echo(&ctx, &mut link, c, &topic).await.map(Some) },
        async {
            sleep(ECHO_TIMEOUT).await;
            Ok(None)
        },
    )
    .await;
    match echoed {
        Ok(Some(())) => {
            ctx.sh.echoed.fetch_add(1, Relaxed);
        }
        Ok(None) => {
            ctx.sh.echo_failed.fetch_add(1, Relaxed);
            ctx.error("echo", &format!("{id}: own message not back within 10 s"));
        }
        Err(e) => {
            ctx.sh.echo_failed.fetch_add(1, Relaxed);
            if !ctx.finishing.get() {
                ctx.error("echo", &e);
            }
        }
    }
    // Hold the connection (answering the broker) until the end closes it.
    if let Err(e) = answer_until_eof(&ctx, &mut link).await {
        if !ctx.finishing.get() {
            ctx.error("storm client", &e);
        }
    }
}

/// Publishes one message to the client's own topic and returns once it came back.
async fn echo(ctx: &Ctx, link: &mut Link, c: usize, topic: &str) -> Result<(), ClientError> {
    let qos = ctx.qos();
    let mut payload = [0u8; HEADER_LEN];
    let sent_ns = now_ns();
    Header {
        publisher: c as u32,
        seq: 0,
        sent_ns,
    }
    .write(&mut payload);
    let pkid = if qos == QoS::AtMostOnce { 0 } else { 1 };
    encode_publish(
        &mut link.conn.out(),
        ctx.plan.version,
        topic.as_bytes(),
        &payload,
        qos,
        false,
        false,
        pkid,
        None,
    )?;
    link.conn.flush().await?;
    loop {
        let Some(p) = link.rx.next(&ctx.arena).await? else {
            return Err(ClientError::Closed(" before the echo".into()));
        };
        let mine = answer(link, &p)?;
        link.conn.flush().await?;
        if mine.is_some_and(|h| h.publisher == c as u32 && h.seq == 0) {
            let rtt = now_ns().saturating_sub(sent_ns).max(1);
            ctx.stats.borrow_mut().latency.saturating_record(rtt);
            return Ok(());
        }
    }
}

/// Answers one packet as a client that both publishes and subscribes; returns the header
/// of a received PUBLISH.
fn answer(link: &Link, p: &Packet) -> Result<Option<Header>, ClientError> {
    let resp = |pkid| PubResp {
        pkid,
        reason: 0,
        properties: Properties::default(),
    };
    match p {
        Packet::Publish(m) => {
            if let Some(ack) = ack_for(m.qos, m.pkid) {
                link.conn.queue(&ack);
            }
            return Ok(Header::read(&m.payload));
        }
        Packet::PubRel(r) => link.conn.queue(&Packet::PubComp(resp(r.pkid))),
        Packet::PubRec(r) => link.conn.queue(&Packet::PubRel(resp(r.pkid))),
        Packet::PubAck(_) | Packet::PubComp(_) | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            return Err(ClientError::Closed(format!(
                ": DISCONNECT {:#04x}",
                d.reason
            )))
        }
        other => return Err(ClientError::Unexpected(kind(other))),
    }
    Ok(None)
}

async fn answer_until_eof(ctx: &Ctx, link: &mut Link) -> Result<(), ClientError> {
    while let Some(p) = link.rx.next(&ctx.arena).await? {
        answer(link, &p)?;
        link.conn.flush().await?;
    }
    if ctx.finishing.get() {
        Ok(())
    } else {
        Err(ClientError::Closed(String::new()))
    }
}

/// The coordinator's storm phases, once every client is connected and subscribed: drop,
/// settle, reconnect, verify. Every wait is bounded by `limit`.
pub fn coordinate(plan: &Plan, sh: &Shared, out: &mut Outcome, limit: Duration) {
    let n = plan.storm_conns;
    sh.start_ns.store(now_ns(), Relaxed);
    wait_for(limit, || sh.offline.load(Relaxed) >= n);
    let offline = sh.offline.load(Relaxed);
    std::thread::sleep(SETTLE);
    let resume_ns = now_ns();
    sh.resume_ns.store(resume_ns, Relaxed);
    sh.phase.store(PHASE_RESUME, Relaxed);
    let settled = || sh.resumed.load(Relaxed) + sh.resume_failed.load(Relaxed) >= offline;
    wait_for(limit, settled);
    if !settled() {
        eprintln!(
            "ringmq-bench: stall: {} of {offline} reconnects unfinished after {:.0} s",
            offline - sh.resumed.load(Relaxed) - sh.resume_failed.load(Relaxed),
            limit.as_secs_f64()
        );
    }
    let resumed = sh.resumed.load(Relaxed);
    sh.phase.store(PHASE_VERIFY, Relaxed);
    wait_for(ECHO_TIMEOUT + Duration::from_secs(1), || {
        sh.echoed.load(Relaxed) + sh.echo_failed.load(Relaxed) >= resumed
    });
    out.resume = Some(Resume {
        echoed: sh.echoed.load(Relaxed),
        // Still waiting counts as failed.
        echo_failed: resumed - sh.echoed.load(Relaxed).min(resumed),
        ..Resume::from_shared(sh, offline, resumed)
    });
}

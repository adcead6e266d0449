//! Running a [`Plan`]: one glommio executor per generator thread runs the clients; the
//! calling thread coordinates the phases over atomics and collects the results.
//!
//! Phases: connect (and subscribe) every client → start (publishers get the same epoch and
//! deadline) → stop publishing at `--duration` / `--messages` → publishers wait for their last
//! acks → drain (up to `--drain`, or until every expected delivery arrived) → finish
//! (DISCONNECT everyone) → join and judge.

use std::cell::{Cell, RefCell};
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt;
use glommio::sync::Semaphore;
use glommio::timer::sleep;
use glommio::{Latency, LocalExecutorBuilder, Placement, Shares, TaskQueueHandle};
use hdrhistogram::Histogram;

use super::check::Checker;
use super::cli::{Audience, Plan, Scenario};
use super::client::{self, kind, ClientError, Conn, Dial, Reader};
use super::header::{now_ns, Header};
use crate::proto::{encode_publish, Disconnect, Packet, Properties, PubResp, QoS};
use crate::rt::net::ReadArena;

/// Flush a publisher's pending output once it holds this many bytes.
const WRITE_BATCH: usize = 16 * 1024;
/// How often the per-thread watcher looks at the coordinator's atomics.
const WATCH_EVERY: Duration = Duration::from_millis(1);

/// Coordinator ↔ generator threads. Atomics only; counters are totals over all threads.
#[derive(Default)]
pub struct Shared {
    /// [`now_ns`] when the run began (connect pacing origin).
    pub epoch_ns: AtomicU64,
    pub subs_ready: AtomicUsize,
    pub pubs_ready: AtomicUsize,
    pub idle_connected: AtomicUsize,
    /// Clients whose connect or subscribe failed.
    pub setup_failed: AtomicUsize,
    /// Subscriptions the broker refused (SUBACK ≥ 0x80).
    pub refused: AtomicUsize,
    pub first_connect_ns: AtomicU64,
    pub last_connack_ns: AtomicU64,
    /// [`now_ns`] of the publishing start; 0 until then.
    pub start_ns: AtomicU64,
    /// Publishers stop at their next message.
    pub stop: AtomicBool,
    pub pubs_done: AtomicUsize,
    pub last_publish_ns: AtomicU64,
    /// Final message count of each publisher (valid once it is done).
    pub sent: Vec<AtomicU64>,
    pub delivered: AtomicU64,
    pub last_delivery_ns: AtomicU64,
    /// Close every connection and return.
    pub finish: AtomicBool,
}

/// What one generator thread measured. Sent back to the coordinator at the end.
pub struct ThreadResult {
    /// Publish → delivery, nanoseconds.
    pub latency: Histogram<u64>,
    /// TCP connect start → CONNACK, nanoseconds.
    pub connack: Histogram<u64>,
    /// Checker of each subscriber on this thread, by subscriber index.
    pub checkers: Vec<(usize, Checker)>,
    /// The shared group's checker (shared scenario, thread 0 only).
    pub group: Option<Checker>,
    pub errors: u64,
    /// The first few error messages, for the report.
    pub error_samples: Vec<String>,
    /// Idle clients (`conn`) the broker had closed by the end.
    pub idle_dropped: u64,
}

impl ThreadResult {
    fn new() -> ThreadResult {
        ThreadResult {
            latency: new_hist(),
            connack: new_hist(),
            checkers: Vec::new(),
            group: None,
            errors: 0,
            error_samples: Vec::new(),
            idle_dropped: 0,
        }
    }

    fn error(&mut self, what: &str, e: &dyn std::fmt::Display) {
        self.errors += 1;
        if self.error_samples.len() < 5 {
            self.error_samples.push(format!("{what}: {e}"));
        }
    }
}

/// Nanosecond histogram from 1 ns to 10 minutes, 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("static bounds are valid")
}

/// Everything the coordinator measured, for [`super::report`].
pub struct Outcome {
    pub threads: Vec<ThreadResult>,
    pub sent: Vec<u64>,
    pub expected: u64,
    pub delivered: u64,
    /// Publishing start → last publish written, seconds.
    pub publish_secs: f64,
    /// Publishing start → last delivery, seconds.
    pub deliver_secs: f64,
    /// First connect → last CONNACK, seconds.
    pub connect_secs: f64,
    pub connected: usize,
    pub setup_failed: usize,
    pub refused: usize,
    /// Broker VmRSS (KiB) before connecting, after connecting, at the end.
    pub rss_kib: [Option<u64>; 3],
    pub broker_hwm_kib: Option<u64>,
}

/// Runs the plan to completion. `Err` only when the generator itself cannot start.
pub fn run(plan: Plan) -> Result<Outcome, String> {
    let plan = Arc::new(plan);
    let sh = Arc::new(Shared {
        sent: (0..plan.pubs.len()).map(|_| AtomicU64::new(0)).collect(),
        first_connect_ns: AtomicU64::new(u64::MAX),
        ..Shared::default()
    });
    let rss_before = plan.broker_pid.and_then(|p| proc_status_kib(p, "VmRSS:"));
    sh.epoch_ns.store(now_ns(), Relaxed);
    let mut handles = Vec::new();
    for t in 0..plan.threads {
        let (plan, sh) = (plan.clone(), sh.clone());
        let h = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("bench-{t}"))
            .ring_depth(1024)
            .spawn(move || thread_main(plan, sh, t))
            .map_err(|e| format!("cannot start generator thread {t}: {e}"))?;
        handles.push(h);
    }
    // Joined on a helper thread so a client task that never ends (a socket that will not
    // close) bounds the run instead of hanging it.
    let join = |sh: &Shared, handles: Vec<glommio::ExecutorJoinHandle<ThreadResult>>| {
        sh.finish.store(true, Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|e| format!("generator thread failed: {e}"))
                })
                .collect::<Result<Vec<_>, _>>();
            let _ = tx.send(r);
        });
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| {
                Err(
                    "stall: generator threads did not finish within 10 s of closing every \
                 connection"
                        .into(),
                )
            })
    };

    // Connect (and subscribe) everyone.
    let clients = plan.clients();
    let setup_limit = Duration::from_secs(60)
        + Duration::from_secs_f64(clients as f64 / plan.connect_rate.max(1000) as f64);
    let settled = |sh: &Shared| {
        sh.subs_ready.load(Relaxed)
            + sh.pubs_ready.load(Relaxed)
            + sh.idle_connected.load(Relaxed)
            + sh.setup_failed.load(Relaxed)
            + sh.refused.load(Relaxed)
            >= clients
    };
    wait_for(setup_limit, || settled(&sh));
    if !settled(&sh) {
        eprintln!(
            "ringmq-bench: stall: set-up unfinished after {:.0} s: {} subscribed, {} publishers \
             and {} idle clients connected, {} failed",
            setup_limit.as_secs_f64(),
            sh.subs_ready.load(Relaxed),
            sh.pubs_ready.load(Relaxed),
            sh.idle_connected.load(Relaxed),
            sh.setup_failed.load(Relaxed)
        );
    }
    let connected =
        sh.subs_ready.load(Relaxed) + sh.pubs_ready.load(Relaxed) + sh.idle_connected.load(Relaxed);
    let connect_secs = secs(
        sh.last_connack_ns
            .load(Relaxed)
            .saturating_sub(sh.first_connect_ns.load(Relaxed)),
    );
    let mut out = Outcome {
        threads: Vec::new(),
        sent: vec![0; plan.pubs.len()],
        expected: 0,
        delivered: 0,
        publish_secs: 0.0,
        deliver_secs: 0.0,
        connect_secs,
        connected,
        setup_failed: clients - connected - sh.refused.load(Relaxed),
        refused: sh.refused.load(Relaxed),
        rss_kib: [rss_before, None, None],
        broker_hwm_kib: None,
    };
    let rss = |out: &mut Outcome, slot: usize| {
        out.rss_kib[slot] = plan.broker_pid.and_then(|p| proc_status_kib(p, "VmRSS:"));
        out.broker_hwm_kib = plan.broker_pid.and_then(|p| proc_status_kib(p, "VmHWM:"));
    };

    if connected < clients {
        out.threads = join(&sh, handles)?;
        return Ok(out);
    }
    if plan.scenario == Scenario::Conn {
        // Let the broker finish its per-connection set-up before reading its memory.
        std::thread::sleep(Duration::from_secs(1));
        rss(&mut out, 1);
        std::thread::sleep(plan.duration);
        rss(&mut out, 2);
        out.threads = join(&sh, handles)?;
        return Ok(out);
    }
    rss(&mut out, 1);

    // Publish.
    let start = now_ns();
    sh.start_ns.store(start, Relaxed);
    let publishers = plan.pubs.len();
    wait_for(plan.duration, || sh.pubs_done.load(Relaxed) == publishers);
    sh.stop.store(true, Relaxed);
    // Publishers wait up to `drain` for their last acks before reporting done.
    wait_for(plan.drain + Duration::from_secs(10), || {
        sh.pubs_done.load(Relaxed) == publishers
    });
    let done = sh.pubs_done.load(Relaxed);
    if done < publishers {
        eprintln!(
            "ringmq-bench: stall: {} of {publishers} publishers still waiting for acks {:.1} s \
             after the stop; delivered so far {}",
            publishers - done,
            plan.drain.as_secs_f64() + 10.0,
            sh.delivered.load(Relaxed)
        );
    }
    out.sent = sh.sent.iter().map(|s| s.load(Relaxed)).collect();
    out.expected = plan.expected_deliveries(&out.sent);
    wait_for(plan.drain, || sh.delivered.load(Relaxed) >= out.expected);
    out.delivered = sh.delivered.load(Relaxed);
    out.publish_secs = secs(sh.last_publish_ns.load(Relaxed).saturating_sub(start));
    out.deliver_secs = secs(sh.last_delivery_ns.load(Relaxed).saturating_sub(start));
    rss(&mut out, 2);
    out.threads = join(&sh, handles)?;
    Ok(out)
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Polls `done` until it holds or `limit` passes (coordinator thread only).
fn wait_for(limit: Duration, done: impl Fn() -> bool) {
    let end = std::time::Instant::now() + limit;
    while !done() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A `Kb` field of /proc/PID/status (e.g. `VmRSS:`), in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A one-shot broadcast: tasks wait until it opens. (Closing a glommio semaphore wakes
/// every waiter.)
struct Gate(Semaphore);

impl Gate {
    fn new() -> Gate {
        Gate(Semaphore::new(0))
    }
    async fn wait(&self) {
        let _ = self.0.acquire(1).await;
    }
    fn open(&self) {
        self.0.close();
    }
}

/// One generator thread's state. Owned by that thread's executor.
struct Ctx {
    plan: Arc<Plan>,
    sh: Arc<Shared>,
    arena: ReadArena,
    stats: RefCell<ThreadResult>,
    /// Every open connection, for the final DISCONNECT.
    conns: RefCell<Vec<Rc<Conn>>>,
    /// Handshakes in flight.
    handshakes: Semaphore,
    start: Gate,
    /// Subscribers and publishers' ack readers: ten times the publishers' CPU share, so a
    /// saturated generator thread starves its senders, never its receivers (which would
    /// show up as broker latency and loss).
    readers: TaskQueueHandle,
    finishing: Cell<bool>,
    group: RefCell<Checker>,
}

async fn thread_main(plan: Arc<Plan>, sh: Arc<Shared>, thread: usize) -> ThreadResult {
    let ctx = Rc::new(Ctx {
        arena: ReadArena::new(READ_ARENA),
        stats: RefCell::new(ThreadResult::new()),
        conns: RefCell::new(Vec::new()),
        handshakes: Semaphore::new(plan.connect_concurrency as u64),
        start: Gate::new(),
        readers: glommio::executor().create_task_queue(
            Shares::Static(1000),
            Latency::Matters(Duration::from_millis(1)),
            "readers",
        ),
        finishing: Cell::new(false),
        group: RefCell::new(Checker::new(plan.qos, false)),
        plan,
        sh,
    });
    let writers = glommio::executor().create_task_queue(
        Shares::Static(100),
        Latency::NotImportant,
        "publishers",
    );
    let spawn = |f, tq| glommio::spawn_local_into(f, tq).expect("task queue exists");
    let watcher = glommio::spawn_local(watch(ctx.clone()));
    let p = &ctx.plan;
    let mut tasks = Vec::new();
    for i in (0..p.sub_filters.len()).filter(|&i| p.sub_thread(i) == thread) {
        tasks.push(spawn(subscriber(ctx.clone(), i).boxed_local(), ctx.readers));
    }
    for j in (0..p.pubs.len()).filter(|j| j % p.threads == thread) {
        tasks.push(spawn(publisher(ctx.clone(), j).boxed_local(), writers));
    }
    for c in (0..p.idle_conns).filter(|c| c % p.threads == thread) {
        tasks.push(spawn(
            idle_client(ctx.clone(), c).boxed_local(),
            ctx.readers,
        ));
    }
    watcher.await;
    close_all(&ctx).await;
    for t in tasks {
        t.await;
    }
    let mut stats = ctx.stats.take();
    if p.audience == Audience::Group && thread == 0 {
        stats.group = Some(ctx.group.borrow().clone());
    }
    stats
}

const READ_ARENA: usize = 512 * 1024;

impl Default for ThreadResult {
    fn default() -> Self {
        ThreadResult::new()
    }
}

/// Mirrors the coordinator's phase flags into this thread's gates.
async fn watch(ctx: Rc<Ctx>) {
    loop {
        if ctx.sh.start_ns.load(Relaxed) != 0 {
            ctx.start.open();
        }
        if ctx.sh.finish.load(Relaxed) {
            ctx.finishing.set(true);
            ctx.start.open();
            return;
        }
        sleep(WATCH_EVERY).await;
    }
}

/// DISCONNECT and shut down every connection; counts idle clients the broker had dropped.
/// The DISCONNECTs get one second in total: a broker that stopped reading must not hold
/// the generator up (shutting the sockets down ends any write still pending).
async fn close_all(ctx: &Ctx) {
    let conns = ctx.conns.take();
    if ctx.plan.scenario == Scenario::Conn {
        let dropped = conns.iter().filter(|c| peer_closed(c)).count();
        ctx.stats.borrow_mut().idle_dropped += dropped as u64;
    }
    let flushes: Vec<_> = conns
        .iter()
        .map(|c| {
            c.queue(&Packet::Disconnect(Disconnect {
                reason: 0,
                properties: Properties::default(),
            }));
            let c = c.clone();
            glommio::spawn_local(async move {
                let _ = c.flush().await;
            })
        })
        .collect();
    futures_lite::future::or(
        async {
            for f in flushes {
                f.await;
            }
        },
        sleep(Duration::from_secs(1)),
    )
    .await;
    for c in &conns {
        c.io.shutdown();
    }
}

/// True if the peer closed (EOF or error pending) a connection we never read from.
fn peer_closed(c: &Conn) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: valid fd, one-byte buffer.
    let n = unsafe {
        libc::recv(
            c.fd,
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0 || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock)
}

impl Ctx {
    /// Connects client number `k` (global over the run) at its scheduled time.
    async fn dial(&self, k: usize, id: String) -> Result<(Rc<Conn>, Reader), ClientError> {
        let p = &self.plan;
        if let Some(gap) = 1_000_000_000u64.checked_div(p.connect_rate) {
            let due = self.sh.epoch_ns.load(Relaxed) + k as u64 * gap;
            let now = now_ns();
            if due > now {
                sleep(Duration::from_nanos(due - now)).await;
            }
        }
        let _slot = self.handshakes.acquire_permit(1).await;
        let src = match p.broker {
            std::net::SocketAddr::V4(a) if a.ip().is_loopback() => Some(Ipv4Addr::from(
                u32::from(p.source_base) + (k / p.conns_per_addr) as u32,
            )),
            _ => None,
        };
        let t0 = now_ns();
        self.sh.first_connect_ns.fetch_min(t0, Relaxed);
        let dial = Dial {
            src,
            dst: p.broker,
            version: p.version,
            client_id: &id,
            keepalive: p.keepalive,
            max_packet: p.max_packet,
        };
        let (conn, rx, _ack) = client::open(&dial, &self.arena).await?;
        let t1 = now_ns();
        self.sh.last_connack_ns.fetch_max(t1, Relaxed);
        self.stats
            .borrow_mut()
            .connack
            .saturating_record((t1 - t0).max(1));
        self.conns.borrow_mut().push(conn.clone());
        Ok((conn, rx))
    }

    fn error(&self, what: &str, e: &dyn std::fmt::Display) {
        self.stats.borrow_mut().error(what, e);
    }

    fn qos(&self) -> QoS {
        QoS::from_u8(self.plan.qos).unwrap_or(QoS::AtMostOnce)
    }
}

async fn idle_client(ctx: Rc<Ctx>, c: usize) {
    let k = ctx.plan.sub_filters.len() + ctx.plan.pubs.len() + c;
    match ctx
        .dial(k, format!("{}-c{c}", ctx.plan.client_prefix))
        .await
    {
        Ok(_) => {
            ctx.sh.idle_connected.fetch_add(1, Relaxed);
        }
        Err(e) => {
            ctx.sh.setup_failed.fetch_add(1, Relaxed);
            ctx.error("connect", &e);
        }
    }
}

async fn subscriber(ctx: Rc<Ctx>, i: usize) {
    let own = RefCell::new(Checker::new(ctx.plan.qos, true));
    let group = ctx.plan.audience == Audience::Group;
    let checker = if group { &ctx.group } else { &own };
    let id = format!("{}-s{i}", ctx.plan.client_prefix);
    let (conn, mut rx) = match ctx.dial(i, id).await {
        Ok(c) => c,
        Err(e) => {
            ctx.sh.setup_failed.fetch_add(1, Relaxed);
            return ctx.error("connect", &e);
        }
    };
    let filter = &ctx.plan.sub_filters[i];
    match client::subscribe(&conn, &mut rx, &ctx.arena, filter, ctx.qos()).await {
        Ok(()) => {
            ctx.sh.subs_ready.fetch_add(1, Relaxed);
        }
        Err(e @ ClientError::SubscribeRefused { .. }) => {
            ctx.sh.refused.fetch_add(1, Relaxed);
            return ctx.error("subscribe", &e);
        }
        Err(e) => {
            ctx.sh.setup_failed.fetch_add(1, Relaxed);
            return ctx.error("subscribe", &e);
        }
    }
    if let Err(e) = receive(&ctx, &conn, &mut rx, checker).await {
        if !ctx.finishing.get() {
            ctx.error("subscriber", &e);
        }
    }
    if !group {
        ctx.stats.borrow_mut().checkers.push((i, own.into_inner()));
    }
}

/// A subscriber's read loop: check and time every PUBLISH, ack per QoS, until EOF.
async fn receive(
    ctx: &Ctx,
    conn: &Conn,
    rx: &mut Reader,
    checker: &RefCell<Checker>,
) -> Result<(), ClientError> {
    loop {
        let now = now_ns();
        let mut n = 0u64;
        {
            let mut stats = ctx.stats.borrow_mut();
            let mut checker = checker.borrow_mut();
            while let Some(p) = rx.try_next()? {
                match p {
                    Packet::Publish(p) => {
                        n += 1;
                        match Header::read(&p.payload) {
                            Some(h) => {
                                stats
                                    .latency
                                    .saturating_record(now.saturating_sub(h.sent_ns).max(1));
                                checker.record(h.publisher, h.seq);
                            }
                            None => stats.error("subscriber", &"payload without bench header"),
                        }
                        let ack = PubResp {
                            pkid: p.pkid,
                            reason: 0,
                            properties: Properties::default(),
                        };
                        match p.qos {
                            QoS::AtMostOnce => {}
                            QoS::AtLeastOnce => conn.queue(&Packet::PubAck(ack)),
                            QoS::ExactlyOnce => conn.queue(&Packet::PubRec(ack)),
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
        if n > 0 {
            ctx.sh.delivered.fetch_add(n, Relaxed);
            ctx.sh.last_delivery_ns.fetch_max(now, Relaxed);
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

/// A publisher's QoS 1/2 window: packet ids in use and a semaphore of free slots.
/// Owned by the publisher's tasks (writer and ack reader) on one thread.
struct Window {
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

async fn publisher(ctx: Rc<Ctx>, j: usize) {
    let k = ctx.plan.sub_filters.len() + j;
    let (conn, rx) = match ctx
        .dial(k, format!("{}-p{j}", ctx.plan.client_prefix))
        .await
    {
        Ok(c) => c,
        Err(e) => {
            ctx.sh.setup_failed.fetch_add(1, Relaxed);
            return ctx.error("connect", &e);
        }
    };
    ctx.sh.pubs_ready.fetch_add(1, Relaxed);
    ctx.start.wait().await;
    let window = Rc::new(Window::new(ctx.plan.inflight));
    let reader = glommio::spawn_local_into(
        ack_reader(ctx.clone(), conn.clone(), rx, window.clone()),
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
    let interval = 1_000_000_000u64.checked_div(p.rate).unwrap_or(0);
    let mut payload = vec![0x5Au8; p.payload];
    while *seq < quota {
        let mut now = now_ns();
        if now >= deadline || ctx.sh.stop.load(Relaxed) {
            break;
        }
        if interval > 0 {
            let due = start + *seq * interval;
            if due > now {
                conn.flush().await?;
                sleep(Duration::from_nanos(due - now)).await;
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

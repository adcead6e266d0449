//! One generator thread: its state ([`Ctx`]), the phase gates that mirror the coordinator's
//! atomics, connection set-up ([`Ctx::dial`], paced and counted), the registry of open
//! connections and the final close.

use std::cell::{Cell, RefCell};
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt;
use glommio::sync::Semaphore;
use glommio::timer::sleep;
use glommio::{Latency, Shares, TaskQueueHandle};

use super::{publisher, storm, subscriber, Shared, ThreadResult, PHASE_RESUME, PHASE_VERIFY};
use crate::bench::check::Checker;
use crate::bench::cli::{Audience, Plan, Scenario};
use crate::bench::client::{self, ClientError, Conn, Dial, Reader};
use crate::bench::header::now_ns;
use crate::proto::{Disconnect, Packet, Properties, QoS};
use crate::rt::net::ReadArena;

/// How often the per-thread watcher looks at the coordinator's atomics.
const WATCH_EVERY: Duration = Duration::from_millis(1);

/// Bytes of each read buffer carved by a thread's arena.
const READ_ARENA: usize = 512 * 1024;

/// A one-shot broadcast: tasks wait until it opens. (Closing a glommio semaphore wakes
/// every waiter.)
pub struct Gate(Semaphore);

impl Gate {
    fn new() -> Gate {
        Gate(Semaphore::new(0))
    }

    /// Returns once the gate is open.
    pub async fn wait(&self) {
        let _ = self.0.acquire(1).await;
    }

    fn open(&self) {
        self.0.close();
    }
}

/// A connection just set up: its two halves, whether the broker had a session for it, and
/// its slot in the thread's registry (for [`Ctx::forget`]).
pub struct Link {
    /// The sending half.
    pub conn: Rc<Conn>,
    /// The receiving half.
    pub rx: Reader,
    /// CONNACK's session-present flag.
    pub session_present: bool,
    /// Index in the registry of open connections.
    pub slot: usize,
}

/// One generator thread's state. Owned by that thread's executor.
pub struct Ctx {
    /// The run.
    pub plan: Arc<Plan>,
    /// The coordinator's atomics.
    pub sh: Arc<Shared>,
    /// Read buffers for every connection of the thread.
    pub arena: ReadArena,
    /// What the thread measured so far.
    pub stats: RefCell<ThreadResult>,
    /// Every open connection, for the final DISCONNECT (`None` once forgotten).
    conns: RefCell<Vec<Option<Rc<Conn>>>>,
    /// Handshakes in flight.
    handshakes: Semaphore,
    /// Publishing starts (`storm`: the clients drop their connections).
    pub start: Gate,
    /// Offline sessions come back (`backlog`, `storm`).
    pub resume: Gate,
    /// Storm clients check that their subscription survived.
    pub verify: Gate,
    /// Subscribers and publishers' ack readers: ten times the publishers' CPU share, so a
    /// saturated generator thread starves its senders, never its receivers (which would
    /// show up as broker latency and loss).
    pub readers: TaskQueueHandle,
    /// The run is over: connections are about to close, EOF is expected.
    pub finishing: Cell<bool>,
    /// The shared group's checker (`shared` scenario, thread 0).
    pub group: RefCell<Checker>,
}

/// Body of generator thread `thread`: spawns its clients, follows the phases, closes
/// everything once the coordinator says so and returns what it measured.
pub async fn thread_main(plan: Arc<Plan>, sh: Arc<Shared>, thread: usize) -> ThreadResult {
    sh.hearts[thread].register();
    let ctx = Rc::new(Ctx {
        arena: ReadArena::new(READ_ARENA),
        stats: RefCell::new(ThreadResult::default()),
        conns: RefCell::new(Vec::new()),
        handshakes: Semaphore::new(plan.connect_concurrency as u64),
        start: Gate::new(),
        resume: Gate::new(),
        verify: Gate::new(),
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
    let watcher = glommio::spawn_local(watch(ctx.clone(), thread));
    let p = &ctx.plan;
    let mut tasks = Vec::new();
    for i in (0..p.sub_filters.len()).filter(|&i| p.sub_thread(i) == thread) {
        tasks.push(spawn(
            subscriber::subscriber(ctx.clone(), i).boxed_local(),
            ctx.readers,
        ));
    }
    for j in (0..p.pubs.len()).filter(|j| j % p.threads == thread) {
        tasks.push(spawn(
            publisher::publisher(ctx.clone(), j).boxed_local(),
            writers,
        ));
    }
    for c in (0..p.idle_conns).filter(|c| c % p.threads == thread) {
        tasks.push(spawn(
            subscriber::idle_client(ctx.clone(), c).boxed_local(),
            ctx.readers,
        ));
    }
    for c in (0..p.storm_conns).filter(|c| c % p.threads == thread) {
        tasks.push(spawn(
            storm::storm_client(ctx.clone(), c).boxed_local(),
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
    ctx.sh.hearts[thread].unregister();
    stats
}

/// Mirrors the coordinator's phase flags into this thread's gates; finishing opens them
/// all, so no task waits forever. Beats the thread's heart every round until then.
async fn watch(ctx: Rc<Ctx>, thread: usize) {
    loop {
        ctx.sh.hearts[thread].beat();
        if ctx.sh.start_ns.load(Relaxed) != 0 {
            ctx.start.open();
        }
        let phase = ctx.sh.phase.load(Relaxed);
        if phase >= PHASE_RESUME {
            ctx.resume.open();
        }
        if phase >= PHASE_VERIFY {
            ctx.verify.open();
        }
        if ctx.sh.finish.load(Relaxed) {
            ctx.finishing.set(true);
            ctx.start.open();
            ctx.resume.open();
            ctx.verify.open();
            return;
        }
        sleep(WATCH_EVERY).await;
    }
}

/// DISCONNECT and shut down every connection; counts idle clients the broker had dropped.
/// The DISCONNECTs get one second in total: a broker that stopped reading must not hold
/// the generator up (shutting the sockets down ends any write still pending).
async fn close_all(ctx: &Ctx) {
    let conns: Vec<Rc<Conn>> = ctx.conns.take().into_iter().flatten().collect();
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
    /// Connects client number `k` (global over the run) at its scheduled time with client id
    /// `id`. `again` marks a reconnect of an offline session (`backlog`, `storm`): it is
    /// paced from the resume instant and timed into the reconnect figures.
    pub async fn dial(
        &self,
        k: usize,
        id: &str,
        clean: bool,
        again: bool,
    ) -> Result<Link, ClientError> {
        let p = &self.plan;
        if let Some(gap) = 1_000_000_000u64.checked_div(p.connect_rate) {
            let origin = if again {
                &self.sh.resume_ns
            } else {
                &self.sh.epoch_ns
            };
            let due = origin.load(Relaxed) + k as u64 * gap;
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
        let (first, last) = if again {
            (&self.sh.re_first_connect_ns, &self.sh.re_last_connack_ns)
        } else {
            (&self.sh.first_connect_ns, &self.sh.last_connack_ns)
        };
        let t0 = now_ns();
        first.fetch_min(t0, Relaxed);
        let dial = Dial {
            src,
            dst: p.broker,
            version: p.version,
            client_id: id,
            keepalive: p.keepalive,
            max_packet: p.max_packet,
            clean,
        };
        let (conn, rx, ack) = client::open(&dial, &self.arena).await?;
        let t1 = now_ns();
        last.fetch_max(t1, Relaxed);
        {
            let mut stats = self.stats.borrow_mut();
            let h = if again {
                &mut stats.reconnack
            } else {
                &mut stats.connack
            };
            h.saturating_record((t1 - t0).max(1));
        }
        let mut conns = self.conns.borrow_mut();
        conns.push(Some(conn.clone()));
        Ok(Link {
            conn,
            rx,
            session_present: ack.session_present,
            slot: conns.len() - 1,
        })
    }

    /// Drops the registry's reference to a connection the caller has closed itself.
    pub fn forget(&self, slot: usize) {
        if let Some(c) = self.conns.borrow_mut().get_mut(slot) {
            *c = None;
        }
    }

    /// Counts an error and keeps the first few messages.
    pub fn error(&self, what: &str, e: &dyn std::fmt::Display) {
        self.stats.borrow_mut().error(what, e);
    }

    /// The run's QoS.
    pub fn qos(&self) -> QoS {
        QoS::from_u8(self.plan.qos).unwrap_or(QoS::AtMostOnce)
    }
}

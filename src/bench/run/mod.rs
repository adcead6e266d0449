//! Running a [`Plan`]: one glommio executor per generator thread runs the clients; the
//! calling thread coordinates the phases over atomics and collects the results.
//!
//! Phases of a message flow (p2p, fanin, fanout, shared, large, slow, backlog): connect
//! (and subscribe) every client → start (publishers get the same epoch and deadline) → stop
//! publishing at `--duration` / `--messages` → publishers wait for their last acks →
//! (`backlog`: the offline sessions resume) → drain (up to `--drain`, or until every
//! expected delivery arrived) → finish (DISCONNECT everyone) → join and judge. `conn` stays
//! idle instead of publishing; `storm` drops and resumes its sessions ([`storm`]).
//!
//! Submodules: [`ctx`] (one generator thread: state, gates, dialing, closing),
//! [`publisher`], [`subscriber`] (incl. the `backlog` and `slow` variants) and [`storm`].

pub mod ctx;
pub mod kick;
pub mod publisher;
pub mod storm;
pub mod subscriber;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

use super::check::Checker;
use super::cli::{Plan, Scenario};
use super::header::now_ns;

/// [`Shared::phase`]: offline sessions reconnect (`backlog`, `storm`).
pub const PHASE_RESUME: u32 = 1;
/// [`Shared::phase`]: storm clients echo a message on their own topic.
pub const PHASE_VERIFY: u32 = 2;

/// Coordinator ↔ generator threads. Atomics only; counters are totals over all threads.
#[derive(Default)]
pub struct Shared {
    /// [`now_ns`] when the run began (connect pacing origin).
    pub epoch_ns: AtomicU64,
    /// Subscribers subscribed (`backlog`: and offline again).
    pub subs_ready: AtomicUsize,
    /// Publishers connected.
    pub pubs_ready: AtomicUsize,
    /// Idle (`conn`) or storm clients connected (and subscribed).
    pub idle_connected: AtomicUsize,
    /// Clients whose connect or subscribe failed.
    pub setup_failed: AtomicUsize,
    /// Subscriptions the broker refused (SUBACK ≥ 0x80).
    pub refused: AtomicUsize,
    /// Earliest connect start.
    pub first_connect_ns: AtomicU64,
    /// Latest CONNACK.
    pub last_connack_ns: AtomicU64,
    /// [`now_ns`] of the publishing start (`storm`: of the drop); 0 until then.
    pub start_ns: AtomicU64,
    /// Publishers stop at their next message.
    pub stop: AtomicBool,
    /// Publishers done (quota sent and acked, or given up).
    pub pubs_done: AtomicUsize,
    /// Latest publish written.
    pub last_publish_ns: AtomicU64,
    /// Final message count of each publisher (valid once it is done).
    pub sent: Vec<AtomicU64>,
    /// Deliveries to fast (not slow) subscribers.
    pub delivered: AtomicU64,
    /// Latest delivery to a fast subscriber.
    pub last_delivery_ns: AtomicU64,
    /// Deliveries to slow subscribers.
    pub slow_delivered: AtomicU64,
    /// Latest delivery to a slow subscriber.
    pub slow_last_ns: AtomicU64,
    /// Scenario phase past the start: [`PHASE_RESUME`], [`PHASE_VERIFY`].
    pub phase: AtomicU32,
    /// [`now_ns`] of the resume (reconnect pacing origin).
    pub resume_ns: AtomicU64,
    /// Sessions that went offline.
    pub offline: AtomicUsize,
    /// Offline sessions reconnected.
    pub resumed: AtomicUsize,
    /// Reconnects that failed.
    pub resume_failed: AtomicUsize,
    /// Reconnects whose CONNACK said session present = 0.
    pub session_missing: AtomicUsize,
    /// Earliest reconnect start.
    pub re_first_connect_ns: AtomicU64,
    /// Latest reconnect CONNACK.
    pub re_last_connack_ns: AtomicU64,
    /// Storm clients whose own message came back.
    pub echoed: AtomicUsize,
    /// Storm clients whose echo failed.
    pub echo_failed: AtomicUsize,
    /// Close every connection and return.
    pub finish: AtomicBool,
    /// Each generator thread's heartbeat, for the [`kick`] watchdog.
    pub hearts: Arc<Vec<kick::Heart>>,
}

/// What one generator thread measured. Sent back to the coordinator at the end.
pub struct ThreadResult {
    /// Publish → delivery at the fast subscribers (`storm`: echo round trip), nanoseconds.
    pub latency: Histogram<u64>,
    /// TCP connect start → CONNACK, nanoseconds.
    pub connack: Histogram<u64>,
    /// The same for reconnects of offline sessions (`backlog`, `storm`).
    pub reconnack: Histogram<u64>,
    /// Checker of each subscriber on this thread, by subscriber index.
    pub checkers: Vec<(usize, Checker)>,
    /// The shared group's checker (shared scenario, thread 0 only).
    pub group: Option<Checker>,
    /// Errors counted.
    pub errors: u64,
    /// The first few error messages, for the report.
    pub error_samples: Vec<String>,
    /// Idle clients (`conn`) the broker had closed by the end.
    pub idle_dropped: u64,
}

impl Default for ThreadResult {
    fn default() -> Self {
        ThreadResult {
            latency: new_hist(),
            connack: new_hist(),
            reconnack: new_hist(),
            checkers: Vec::new(),
            group: None,
            errors: 0,
            error_samples: Vec::new(),
            idle_dropped: 0,
        }
    }
}

impl ThreadResult {
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

/// How offline sessions came back (`backlog`, `storm`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Resume {
    /// Sessions that went offline.
    pub offline: usize,
    /// Reconnects accepted.
    pub resumed: usize,
    /// Reconnects that failed.
    pub failed: usize,
    /// Accepted reconnects without the session (session present = 0).
    pub session_missing: usize,
    /// First reconnect → last CONNACK, seconds.
    pub secs: f64,
    /// `backlog`: resume → last delivery, seconds.
    pub drain_secs: f64,
    /// `storm`: clients whose own message came back.
    pub echoed: usize,
    /// `storm`: resumed clients whose message did not come back.
    pub echo_failed: usize,
}

impl Resume {
    /// The reconnect phase's counters as they stand in `sh`; `offline` and `resumed` are the
    /// caller's snapshot, the scenario-specific fields start at zero.
    pub fn from_shared(sh: &Shared, offline: usize, resumed: usize) -> Resume {
        Resume {
            offline,
            resumed,
            failed: sh.resume_failed.load(Relaxed),
            session_missing: sh.session_missing.load(Relaxed),
            secs: secs(
                sh.re_last_connack_ns
                    .load(Relaxed)
                    .saturating_sub(sh.re_first_connect_ns.load(Relaxed)),
            ),
            drain_secs: 0.0,
            echoed: 0,
            echo_failed: 0,
        }
    }
}

/// Everything the coordinator measured, for [`super::report`].
pub struct Outcome {
    /// Each generator thread's measurements.
    pub threads: Vec<ThreadResult>,
    /// Messages each publisher sent.
    pub sent: Vec<u64>,
    /// Deliveries expected at the fast subscribers.
    pub expected: u64,
    /// Deliveries at the fast subscribers.
    pub delivered: u64,
    /// Deliveries at the slow subscribers.
    pub slow_delivered: u64,
    /// Publishing start → last publish written, seconds.
    pub publish_secs: f64,
    /// Publishing start (`backlog`: resume) → last delivery to a fast subscriber, seconds.
    pub deliver_secs: f64,
    /// Publishing start → last delivery to a slow subscriber, seconds.
    pub slow_secs: f64,
    /// First connect → last CONNACK, seconds.
    pub connect_secs: f64,
    /// Clients connected during set-up.
    pub connected: usize,
    /// Clients whose set-up failed.
    pub setup_failed: usize,
    /// Subscriptions refused.
    pub refused: usize,
    /// Broker VmRSS (KiB) before connecting, after connecting, at the end.
    pub rss_kib: [Option<u64>; 3],
    /// Broker VmHWM (KiB) at the end.
    pub broker_hwm_kib: Option<u64>,
    /// Offline sessions coming back (`backlog`, `storm`).
    pub resume: Option<Resume>,
}

/// Runs the plan to completion. `Err` only when the generator itself cannot start.
pub fn run(plan: Plan) -> Result<Outcome, String> {
    let plan = Arc::new(plan);
    let sh = Arc::new(Shared {
        sent: (0..plan.pubs.len()).map(|_| AtomicU64::new(0)).collect(),
        first_connect_ns: AtomicU64::new(u64::MAX),
        re_first_connect_ns: AtomicU64::new(u64::MAX),
        hearts: Arc::new((0..plan.threads).map(|_| kick::Heart::default()).collect()),
        ..Shared::default()
    });
    let watchdog = kick::spawn_watchdog(sh.hearts.clone());
    let rss_before = plan.broker_pid.and_then(|p| proc_status_kib(p, "VmRSS:"));
    sh.epoch_ns.store(now_ns(), Relaxed);
    let mut handles = Vec::new();
    for t in 0..plan.threads {
        let (plan, sh) = (plan.clone(), sh.clone());
        let h = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("bench-{t}"))
            .ring_depth(1024)
            .spawn(move || ctx::thread_main(plan, sh, t))
            .map_err(|e| format!("cannot start generator thread {t}: {e}"))?;
        handles.push(h);
    }

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
             and {} idle/storm clients connected, {} failed",
            setup_limit.as_secs_f64(),
            sh.subs_ready.load(Relaxed),
            sh.pubs_ready.load(Relaxed),
            sh.idle_connected.load(Relaxed),
            sh.setup_failed.load(Relaxed)
        );
    }
    let connected =
        sh.subs_ready.load(Relaxed) + sh.pubs_ready.load(Relaxed) + sh.idle_connected.load(Relaxed);
    let mut out = Outcome {
        threads: Vec::new(),
        sent: vec![0; plan.pubs.len()],
        expected: 0,
        delivered: 0,
        slow_delivered: 0,
        publish_secs: 0.0,
        deliver_secs: 0.0,
        slow_secs: 0.0,
        connect_secs: secs(
            sh.last_connack_ns
                .load(Relaxed)
                .saturating_sub(sh.first_connect_ns.load(Relaxed)),
        ),
        connected,
        setup_failed: clients - connected - sh.refused.load(Relaxed),
        refused: sh.refused.load(Relaxed),
        rss_kib: [rss_before, None, None],
        broker_hwm_kib: None,
        resume: None,
    };

    if connected == clients {
        if plan.scenario == Scenario::Conn {
            // Let the broker finish its per-connection set-up before reading its memory.
            std::thread::sleep(Duration::from_secs(1));
            read_rss(&plan, &mut out, 1);
            std::thread::sleep(plan.duration);
        } else if plan.scenario == Scenario::Storm {
            read_rss(&plan, &mut out, 1);
            storm::coordinate(&plan, &sh, &mut out, setup_limit);
        } else {
            read_rss(&plan, &mut out, 1);
            flow(&plan, &sh, &mut out);
        }
        read_rss(&plan, &mut out, 2);
    }
    let joined = join(&sh, handles);
    watchdog.store(true, Relaxed);
    out.threads = joined?;
    Ok(out)
}

/// The publishing phases of a message flow, from the start to the end of the drain.
fn flow(plan: &Plan, sh: &Shared, out: &mut Outcome) {
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
    out.expected = if plan.hold_offline {
        0
    } else {
        plan.expected_deliveries(&out.sent)
    };
    out.publish_secs = secs(sh.last_publish_ns.load(Relaxed).saturating_sub(start));
    let mut origin = start;
    if plan.offline_subs && !plan.hold_offline {
        // Everything is queued at the broker: bring the sessions back.
        origin = now_ns();
        sh.resume_ns.store(origin, Relaxed);
        sh.phase.store(PHASE_RESUME, Relaxed);
        let offline = sh.offline.load(Relaxed);
        let limit = Duration::from_secs(10) + Duration::from_millis(offline as u64);
        wait_for(limit, || {
            sh.resumed.load(Relaxed) + sh.resume_failed.load(Relaxed) >= offline
        });
    }
    wait_for(plan.drain, || sh.delivered.load(Relaxed) >= out.expected);
    out.delivered = sh.delivered.load(Relaxed);
    out.slow_delivered = sh.slow_delivered.load(Relaxed);
    out.deliver_secs = secs(sh.last_delivery_ns.load(Relaxed).saturating_sub(origin));
    out.slow_secs = secs(sh.slow_last_ns.load(Relaxed).saturating_sub(start));
    if plan.offline_subs && !plan.hold_offline {
        out.resume = Some(Resume {
            drain_secs: out.deliver_secs,
            ..Resume::from_shared(sh, sh.offline.load(Relaxed), sh.resumed.load(Relaxed))
        });
    }
}

/// Raises the finish flag and joins the generator threads, on a helper thread so a client
/// task that never ends (a socket that will not close) bounds the run instead of hanging it.
fn join(
    sh: &Shared,
    handles: Vec<glommio::ExecutorJoinHandle<ThreadResult>>,
) -> Result<Vec<ThreadResult>, String> {
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
                "stall: generator threads did not finish within 10 s of closing every connection"
                    .into(),
            )
        })
}

/// Reads the broker's RSS into `out.rss_kib[slot]` and its peak into `out.broker_hwm_kib`.
fn read_rss(plan: &Plan, out: &mut Outcome, slot: usize) {
    out.rss_kib[slot] = plan.broker_pid.and_then(|p| proc_status_kib(p, "VmRSS:"));
    out.broker_hwm_kib = plan.broker_pid.and_then(|p| proc_status_kib(p, "VmHWM:"));
}

/// Nanoseconds to seconds.
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

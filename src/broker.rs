//! Start-up and shutdown: limits, the data-directory lock, the executor pool with an explicit
//! CPU map, mesh join with a timeout, listeners, and SIGTERM/SIGINT handling.

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use glommio::{CpuSet, LocalExecutorPoolBuilder, PoolPlacement};

use crate::auth::Registry;
use crate::config::Config;
use crate::listener::Listener;
use crate::rt::mesh::{join, new_mesh, Outbox};
use crate::rt::net::{adopt_listener, bound_socket, listener_socket};
use crate::shard::{watch_shutdown, Global, Shard};

/// The accept queue's share of a busy shard (the main queue has glommio's default, 1000).
const ACCEPT_SHARES: usize = 100;
/// Capacity of each SPSC ring (in batches).
const MESH_RING: usize = 1024;
/// glommio refuses to start an executor below this memlock limit.
const MIN_MEMLOCK: u64 = 512 * 1024;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be created or locked.
    #[error("data directory {path}: {why}")]
    DataDir { path: String, why: String },
    /// Another process holds the data directory lock.
    #[error("another ringmq is already running with data directory {0} (lock held)")]
    AlreadyRunning(String),
    /// io_uring is not available.
    #[error("io_uring is disabled on this kernel (/proc/sys/kernel/io_uring_disabled = {0}); ringmq needs it")]
    NoIoUring(String),
    /// A resource limit is too low and cannot be raised.
    #[error("{0}")]
    Limit(String),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A TLS listener's certificate, key or client CA is unusable.
    #[error("TLS listener {addr}: {source}")]
    Tls {
        addr: SocketAddr,
        source: crate::tls::TlsError,
    },
    /// The enhanced-authentication credentials could not be loaded.
    #[error("{0}")]
    Auth(#[from] crate::auth::scram::CredentialError),
    /// The ACL file could not be loaded.
    #[error("{0}")]
    Acl(#[from] crate::acl::AclError),
    /// The password file could not be loaded.
    #[error("{0}")]
    Passwords(String),
    /// An executor failed to start or run.
    #[error("shard failed: {0}")]
    Shard(String),
    /// The durable log could not be read or committed at start.
    #[error("durable log: {0}")]
    Journal(String),
}

/// What the shards need to open their logs and install recovered state.
struct JournalPlan {
    generation: u64,
    dirs: Vec<std::path::PathBuf>,
    states: std::sync::Mutex<Vec<Option<crate::journal::recover::ShardState>>>,
    /// Set by the main thread once the new generation is committed: shards may listen.
    go: std::sync::atomic::AtomicBool,
}

impl JournalPlan {
    fn take(&self, shard: usize) -> crate::journal::recover::ShardState {
        self.states
            .lock()
            .ok()
            .and_then(|mut v| v.get_mut(shard).and_then(Option::take))
            .unwrap_or_default()
    }
}

/// Start-up progress reported by a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Recovered state installed and the start-up snapshot durable.
    Recovered,
    /// Accepting connections.
    Listening,
}

/// Lock `dir` exclusively for the life of the process (SO_REUSEPORT would otherwise let a
/// second broker silently share our port).
pub fn lock_data_dir(dir: &Path) -> Result<File, StartError> {
    let err = |why: String| StartError::DataDir {
        path: dir.display().to_string(),
        why,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let f = File::create(dir.join("LOCK")).map_err(|e| err(e.to_string()))?;
    // SAFETY: flock on an fd we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(StartError::AlreadyRunning(dir.display().to_string()));
    }
    Ok(f)
}

/// Raise soft limits to the hard limits and check what glommio and `max_connections` need.
pub fn check_limits(cfg: &Config) -> Result<(), StartError> {
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        let v = v.trim().to_string();
        if v == "2" {
            return Err(StartError::NoIoUring(v));
        }
    }
    let nofile = raise(libc::RLIMIT_NOFILE);
    let want = cfg.max_connections as u64 + 64;
    if nofile < want {
        tracing::warn!(
            nofile,
            max_connections = cfg.max_connections,
            "open-file limit is below max_connections; connections beyond ~{} will fail to accept",
            nofile.saturating_sub(64)
        );
    }
    let memlock = raise(libc::RLIMIT_MEMLOCK);
    if memlock < MIN_MEMLOCK {
        return Err(StartError::Limit(format!(
            "RLIMIT_MEMLOCK is {memlock} bytes; glommio needs at least {MIN_MEMLOCK} per shard \
             (run `ulimit -l unlimited` or set LimitMEMLOCK=infinity)"
        )));
    }
    Ok(())
}

fn raise(res: libc::__rlimit_resource_t) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on our own process.
    unsafe {
        if libc::getrlimit(res, &mut r) != 0 {
            return 0;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(res, &want) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
    }
    r.rlim_cur
}

/// Shard → CPU map: the configured list, else the first N online CPUs; unpinned when
/// there are more shards than CPUs.
fn placement(cfg: &Config) -> Result<(PoolPlacement, String), StartError> {
    let online = CpuSet::online().map_err(|e| StartError::Shard(e.to_string()))?;
    let mut cpus: Vec<usize> = cfg.cpu_list().map_err(StartError::Limit)?;
    if cpus.is_empty() {
        let mut all: Vec<usize> = online.clone().into_iter().map(|l| l.cpu).collect();
        all.sort_unstable();
        if all.len() < cfg.shards {
            return Ok((
                PoolPlacement::Unbound(cfg.shards),
                format!("{} shards unpinned ({} CPUs online)", cfg.shards, all.len()),
            ));
        }
        cpus = all.into_iter().take(cfg.shards).collect();
    }
    cpus.truncate(cfg.shards);
    let sets = cpus
        .iter()
        .map(|c| online.clone().filter(|l| l.cpu == *c))
        .collect::<Vec<_>>();
    if sets.iter().any(|s| s.is_empty()) {
        return Err(StartError::Limit(format!(
            "cpus {cpus:?}: not all are online"
        )));
    }
    let map = cpus
        .iter()
        .enumerate()
        .map(|(s, c)| format!("shard {s} -> cpu {c}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok((PoolPlacement::Custom(sets), map))
}

/// The files the configuration names (credentials, ACL), loaded and checked.
struct Files {
    auth: Registry,
    acl: Option<crate::acl::AclStore>,
    passwords: crate::auth::Passwords,
}

impl Files {
    fn load(cfg: &Config) -> Result<Files, StartError> {
        let auth = Registry::from_config(cfg.auth_scram_file.as_deref())?;
        let acl = match &cfg.acl_file {
            Some(path) => {
                let store = crate::acl::AclStore::load(path)?;
                tracing::info!("ACL {}: {}", path.display(), store.current().summary());
                Some(store)
            }
            None => None,
        };
        let passwords = crate::auth::Passwords::load(cfg.passwords())
            .map_err(|e| StartError::Passwords(e.to_string()))?;
        Ok(Files {
            auth,
            acl,
            passwords,
        })
    }
}

/// `ringmq check-config`: everything start-up reads and checks before it binds — the
/// settings (already validated by [`Config::load`]), the TLS certificates and keys of every
/// listener, duplicate listener addresses, the SCRAM and password files and the ACL — without
/// touching the data directory or any socket. Returns one line per listener.
pub fn check(cfg: &Config) -> Result<Vec<String>, StartError> {
    Files::load(cfg)?;
    let mut lines = Vec::new();
    let configs = cfg.listener_configs();
    for (i, lc) in configs.iter().enumerate() {
        if lc.bind.port() != 0 && configs[..i].iter().any(|o| o.bind == lc.bind) {
            return Err(StartError::Listen {
                addr: lc.bind,
                source: std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "two listeners on this address",
                ),
            });
        }
        let l =
            Listener::new(i as u8, lc, lc.bind, 0.0, 0.0).map_err(|source| StartError::Tls {
                addr: lc.bind,
                source,
            })?;
        let kind = match l.kind() {
            "tcp" => String::new(),
            k => format!(" ({k})"),
        };
        lines.push(format!("listener {} on {}{kind}", l.name, l.addr));
    }
    Ok(lines)
}

/// What the broker does on SIGHUP, on the signal thread: the binary re-reads its
/// configuration, applies the log level and reloads what [`Global::reload`] covers.
pub type OnHangup = Box<dyn FnMut(&Global) + Send>;

/// Run the broker until SIGTERM/SIGINT. `on_ready` is called with the listeners (bound
/// addresses resolved) once every shard is accepting on all of them; `on_hup` at each SIGHUP.
pub fn run(
    cfg: Config,
    on_ready: impl FnOnce(&[Arc<Listener>]),
    on_hup: OnHangup,
) -> Result<(), StartError> {
    check_limits(&cfg)?;
    let _lock = lock_data_dir(&cfg.data_dir)?;
    let recovery = recover_journal(&cfg)?;
    let plan = recovery.as_ref().map(|r| {
        Arc::new(JournalPlan {
            generation: r.generation,
            dirs: (0..cfg.shards).map(|k| r.shard_dir(k)).collect(),
            states: std::sync::Mutex::new(Vec::new()),
            go: std::sync::atomic::AtomicBool::new(false),
        })
    });
    let mut recovery = recovery;
    if let (Some(r), Some(p)) = (recovery.as_mut(), plan.as_ref()) {
        let states = std::mem::take(&mut r.shards);
        if let Ok(mut v) = p.states.lock() {
            *v = states.into_iter().map(Some).collect();
        }
    }
    let Files {
        auth,
        acl,
        passwords,
    } = Files::load(&cfg)?;
    let auth = Arc::new(auth);
    // Resolve port 0 once so every shard binds the same port: bind (no listen) a
    // reuseport socket to learn the port, keep it until the shards are listening.
    let mut probes = Vec::new();
    let mut listeners = Vec::new();
    for (i, lc) in cfg.listener_configs().iter().enumerate() {
        let probe = bound_socket(lc.bind).map_err(|source| StartError::Listen {
            addr: lc.bind,
            source,
        })?;
        let addr = probe
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(lc.bind);
        let l = Listener::new(
            i as u8,
            lc,
            addr,
            cfg.max_connection_rate,
            cfg.max_connection_rate_per_ip,
        )
        .map_err(|source| StartError::Tls { addr, source })?;
        if let Some(other) = listeners.iter().find(|o: &&Arc<Listener>| o.addr == addr) {
            // SO_REUSEPORT would let both bind and the kernel would split clients between
            // them: refuse the configuration instead.
            return Err(StartError::Listen {
                addr,
                source: std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("listener {} already uses this address", other.name),
                ),
            });
        }
        probes.push(probe);
        listeners.push(Arc::new(l));
    }
    let global = Arc::new(Global {
        listeners: listeners.clone(),
        acl,
        passwords,
        ops: crate::ops::Board::new(cfg.shards),
        ..Global::default()
    });
    install_signals(global.clone(), on_hup);
    if let crate::config::Listen::Addr(addr) = cfg.http_listen {
        // Up before the shards, so `/ready` answers 503 during recovery.
        let ops = crate::ops::http::Ops {
            global: global.clone(),
            stale_ms: cfg.health_stale_ms,
        };
        let bound = crate::ops::http::start(addr, ops)
            .map_err(|source| StartError::Listen { addr, source })?;
        tracing::info!("ops endpoint listening on http://{bound}");
    }
    let cfg = Arc::new(cfg);

    let (placement, map) = placement(&cfg)?;
    tracing::info!(shards = cfg.shards, "placement: {map}");

    let data_mesh = new_mesh(cfg.shards, MESH_RING);
    let ctrl_mesh = new_mesh(cfg.shards, MESH_RING);
    let (ready_tx, ready_rx) = crossbeam::channel::unbounded::<Result<Phase, String>>();
    let mut builder = LocalExecutorPoolBuilder::new(placement)
        .ring_depth(1024)
        // Each shard's blocking pool runs argon2 password checks (one at a time per shard,
        // see conn::password_flow) and glommio's own blocking file calls (rename, remove).
        // Two threads so file calls never queue behind a hash; unbound, because glommio's
        // default pins every shard's pool to the first shard's CPU.
        .blocking_thread_pool_placement(PoolPlacement::Unbound(2))
        .detect_stalls(Some(Box::new(|| {
            Box::new(glommio::DefaultStallDetectionHandler {})
        })));
    if cfg.spin_before_park_us > 0 {
        builder = builder.spin_before_park(Duration::from_micros(cfg.spin_before_park_us));
    }
    let shard_cfg = cfg.clone();
    let shard_global = global.clone();
    let shard_auth = auth.clone();
    let shard_plan = plan.clone();
    let handles = builder
        .on_all_shards(move || {
            let cfg = shard_cfg.clone();
            let global = shard_global.clone();
            let auth = shard_auth.clone();
            let data_mesh = data_mesh.clone();
            let ctrl_mesh = ctrl_mesh.clone();
            let ready = ready_tx.clone();
            let plan = shard_plan.clone();
            async move {
                let res = shard_main(cfg, auth, global, data_mesh, ctrl_mesh, plan, &ready).await;
                if let Err(e) = &res {
                    let _ = ready.send(Err(e.clone()));
                }
                res
            }
        })
        .map_err(|e| StartError::Shard(e.to_string()))?;

    if let (Some(r), Some(p)) = (recovery.as_ref(), plan.as_ref()) {
        // Every shard installed its share and flushed it into the new generation: commit
        // it (the old one is deleted), then let them listen.
        wait_phase(&ready_rx, cfg.shards, Phase::Recovered, 3600, &global)?;
        r.commit()
            .map_err(|e| StartError::Journal(format!("cannot commit the new generation: {e}")))?;
        tracing::info!(
            generation = r.generation,
            "journal: recovered state committed"
        );
        p.go.store(true, Ordering::Release);
    }
    wait_phase(&ready_rx, cfg.shards, Phase::Listening, 30, &global)?;
    drop(probes);
    on_ready(&listeners);

    for r in handles.join_all() {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StartError::Shard(e)),
            Err(e) => return Err(StartError::Shard(e.to_string())),
        }
    }
    tracing::info!("ringmq stopped");
    Ok(())
}

/// Wait until `n` shards reported `phase` (other phases are ignored), at most `secs`
/// seconds; on a shard error or time-out the other shards are told to stop.
fn wait_phase(
    rx: &crossbeam::channel::Receiver<Result<Phase, String>>,
    n: usize,
    phase: Phase,
    secs: u64,
    global: &Global,
) -> Result<(), StartError> {
    let mut seen = 0;
    while seen < n {
        let err = match rx.recv_timeout(Duration::from_secs(secs)) {
            Ok(Ok(p)) => {
                seen += usize::from(p == phase);
                continue;
            }
            Ok(Err(e)) => e,
            Err(_) => format!("shards did not reach {phase:?} within {secs} s"),
        };
        global.shutdown.store(true, Ordering::Relaxed);
        return Err(StartError::Shard(err));
    }
    Ok(())
}

/// Read the last committed generation of the durable log (unless durability is none).
fn recover_journal(cfg: &Config) -> Result<Option<crate::journal::recover::Recovery>, StartError> {
    if cfg.durability == crate::journal::Mode::None {
        tracing::info!("durability none: the journal is neither read nor written");
        let old = cfg.data_dir.join("journal");
        if old.exists() {
            tracing::warn!(
                "durability none: the journal in {} is ignored; it is recovered again if \
                 durability is turned back on (delete it to start afresh)",
                old.display()
            );
        }
        return Ok(None);
    }
    let wall = crate::journal::writer::wall_ms();
    let r = crate::journal::recover::recover(&cfg.data_dir, cfg.shards, wall)
        .map_err(|e| StartError::Journal(format!("{}: {e}", cfg.data_dir.display())))?;
    let rep = &r.report;
    tracing::info!(
        generation = rep.generation,
        segments = rep.segments,
        records = rep.records,
        sessions = rep.sessions,
        sessions_expired = rep.sessions_expired,
        messages = rep.messages,
        retained = rep.retained,
        dangling = rep.dangling,
        orphans = rep.orphans,
        redelivered = rep.redelivered,
        damaged = rep.damage.len(),
        millis = rep.millis,
        "journal: recovered"
    );
    Ok(Some(r))
}

type Meshes<T> = crate::rt::mesh::Mesh<Vec<T>>;

async fn shard_main(
    cfg: Arc<Config>,
    auth: Arc<Registry>,
    global: Arc<Global>,
    data_mesh: Meshes<crate::shard::Fwd>,
    ctrl_mesh: Meshes<crate::shard::Ctrl>,
    plan: Option<Arc<JournalPlan>>,
    ready: &crossbeam::channel::Sender<Result<Phase, String>>,
) -> Result<(), String> {
    let (data_tx, data_rx) = join(data_mesh, Duration::from_secs(10)).await?;
    let (ctrl_tx, ctrl_rx) = join(ctrl_mesh, Duration::from_secs(10)).await?;
    let data = Outbox::new(data_tx);
    let ctrl = Outbox::new(ctrl_tx);
    let me = data.me();
    let journal = match &plan {
        None => None,
        Some(p) => Some(
            crate::journal::Journal::open(crate::journal::writer::Settings {
                shard: me,
                mode: cfg.durability,
                dir: p.dirs[me].clone(),
                epoch: p.generation as u32,
                segment_size: cfg.segment_size,
                sync_interval: Duration::from_micros(cfg.sync_interval_us),
                compact_after: cfg.compact_bytes,
            })
            .await
            .map_err(|e| format!("shard {me}: cannot open the journal: {e}"))?,
        ),
    };
    let shard = Shard::new(
        cfg.clone(),
        auth,
        global,
        data.clone(),
        ctrl.clone(),
        journal.clone(),
    );
    glommio::spawn_local(data.clone().run_flusher()).detach();
    glommio::spawn_local(ctrl.clone().run_flusher()).detach();
    shard.spawn_drains(data_rx, ctrl_rx);
    glommio::spawn_local(shard.clone().run_ticker()).detach();
    glommio::spawn_local(crate::conn::run_parking(shard.clone())).detach();
    if let (Some(j), Some(p)) = (&journal, &plan) {
        let s = shard.clone();
        glommio::spawn_local(j.clone().run_syncer(move || s.stopping.get())).detach();
        glommio::spawn_local(shard.clone().run_compactor()).detach();
        let filters = shard.install(p.take(me));
        shard.announce_routes(&filters).await;
        shard
            .snapshot()
            .await
            .map_err(|e| format!("shard {me}: cannot write the start-up snapshot: {e:?}"))?;
        shard.global.ops.set_phase(me, crate::ops::Phase::Recovered);
        let _ = ready.send(Ok(Phase::Recovered));
        while !p.go.load(Ordering::Acquire) {
            if shard.global.shutdown.load(Ordering::Relaxed) {
                return Ok(());
            }
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
    }

    // Accepting and handshakes (TLS included) run in a task queue with a small share: when
    // the shard is busy, a connection flood gets a tenth of it and established clients keep
    // the rest.
    let accept_queue = glommio::executor().create_task_queue(
        glommio::Shares::Static(ACCEPT_SHARES),
        glommio::Latency::NotImportant,
        "accept",
    );
    let mut accepts = Vec::new();
    for l in &shard.global.listeners {
        let sk = listener_socket(l.addr, cfg.listen_backlog)
            .map_err(|e| format!("shard {}: cannot listen on {}: {e}", shard.id, l.addr))?;
        let listener = adopt_listener(sk);
        tracing::info!(shard = shard.id, listener = %l.name, addr = %l.addr, "accepting");
        let task = glommio::spawn_local_into(
            crate::conn::accept_loop(shard.clone(), listener, l.clone()),
            accept_queue,
        )
        .map_err(|e| format!("shard {}: cannot start accepting: {e}", shard.id))?;
        accepts.push(task);
    }
    shard.publish_stats().await;
    shard.global.ops.set_phase(me, crate::ops::Phase::Listening);
    let _ = ready.send(Ok(Phase::Listening));
    if me == 0 && cfg.sys_interval > 0 {
        glommio::spawn_local(crate::ops::sys::run(shard.clone())).detach();
    }

    watch_shutdown(shard.clone()).await;
    shard.global.ops.set_phase(me, crate::ops::Phase::Stopping);
    for a in accepts {
        a.await;
    }
    // Close every client, give writers a moment to flush, then stop.
    let conns: Vec<_> = shard.conns.borrow().values().cloned().collect();
    for c in conns {
        shard.kill_conn(&c, crate::conn::reason::SERVER_SHUTTING_DOWN);
    }
    let _ = crate::rt::with_timeout(Duration::from_secs(2), async {
        while !shard.conns.borrow().is_empty() {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    if let Some(j) = &journal {
        // Checkpoint: the next start reads only the live state.
        if shard.snapshot().await.is_ok() {
            tracing::info!(shard = shard.id, "journal: shutdown snapshot written");
        }
        let st = &j.stats;
        tracing::info!(
            shard = shard.id,
            records = st.records.get(),
            bytes = st.bytes.get(),
            syncs = st.syncs.get(),
            sync_us_avg = st.sync_us_total.get() / st.syncs.get().max(1),
            segments_made = st.segments_made.get(),
            segments_retired = st.segments_retired.get(),
            segment_waits = st.segment_waits.get(),
            snapshots = st.snapshots.get(),
            lost = st.lost.get(),
            "journal counters"
        );
    }
    let totals: Vec<String> = shard
        .metrics
        .snapshot()
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    tracing::info!(shard = shard.id, "counters: {}", totals.join(" "));
    data.close();
    ctrl.close();
    Ok(())
}

fn install_signals(global: Arc<Global>, mut on_hup: OnHangup) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(mut signals) => {
            std::thread::Builder::new()
                .name("ringmq-signals".into())
                .spawn(move || {
                    for sig in signals.forever() {
                        if sig == SIGHUP {
                            tracing::info!("SIGHUP: reloading");
                            on_hup(&global);
                            continue;
                        }
                        tracing::info!(signal = sig, "shutting down");
                        global.shutdown.store(true, Ordering::Relaxed);
                        break;
                    }
                })
                .ok();
        }
        Err(e) => tracing::warn!("cannot install signal handlers: {e}"),
    }
}

//! One shard: the state a single executor thread owns, and the tasks that keep it moving.
//!
//! A shard owns its connections, the sessions whose home it is (hash(client id) % shards),
//! its local subscriber trie, a replica of the route table, the retained messages whose
//! topic hashes to it, and its counters. Nothing here is shared with another thread except
//! through the two meshes: `data` (publications forwarded to subscriber shards, batched) and
//! `ctrl` (route updates, connection hand-offs, retained queries, shared-subscription
//! member counts and deliveries). Shared-subscription delivery is in `shard/share.rs`.

use std::cell::{Cell, RefCell};
use std::os::unix::io::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::BytesMut;
use futures_lite::StreamExt;
use glommio::channels::channel_mesh::Receivers;

use crate::auth::Registry;
use crate::config::Config;
use crate::conn::Conn;
use crate::metrics::Metrics;
use crate::pressure::{Pressure, Standing};
use crate::proto::topic::parse_shared;
use crate::proto::{Connect, Utf8Bytes};
use crate::route::retain::{RetainOutcome, RetainedStore};
use crate::route::subs::{delivery_qos, merge, per_session, Hit, LocalSubs, SessionKey};
use crate::route::table::{RouteTable, ShardSet};
use crate::rt::mesh::Outbox;
use crate::rt::net::{close_fd, ReadArena};
use crate::rt::park::Parking;
use crate::rt::sync::{Countdown, Notify};
use crate::session::{Delivery, Enqueued, Limits, Publication, Session};

mod acl;
mod durable;
mod share;

pub use durable::PkidRec;

/// How long a shard waits for its peers to acknowledge a route change or answer a
/// retained query before giving up (a peer only misses this if it is shutting down).
const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a publisher's acknowledgement waits for peers to confirm they logged its
/// message before the connection is closed without it (a peer this slow is broken).
const BARRIER_TIMEOUT: Duration = Duration::from_secs(30);

/// Process-wide state shared by all shards (atomics and lock-free swaps only).
#[derive(Debug, Default)]
pub struct Global {
    /// Open client connections across all shards (for `max_connections`).
    pub connections: AtomicUsize,
    /// Set by the signal thread on SIGTERM/SIGINT.
    pub shutdown: AtomicBool,
    /// Every listener, in configuration order (a connection's `listener` indexes it).
    pub listeners: Vec<Arc<crate::listener::Listener>>,
    /// The ACL (`acl_file`), reloadable; `None`: no authorization, every check passes.
    pub acl: Option<crate::acl::AclStore>,
    /// CONNECT user name/password authentication (reloadable password file).
    pub passwords: crate::auth::Passwords,
    /// Each shard's published stats, heartbeat and start-up phase (`/metrics`, `$SYS`).
    pub ops: crate::ops::Board,
}

impl Global {
    /// Re-read the files that may change while the broker runs (SIGHUP); connections stay.
    /// Each part logs what it did; a file that fails to load leaves the old state in force.
    pub fn reload(&self) {
        match self.passwords.reload() {
            Ok(summary) => tracing::info!("password file reloaded: {summary}"),
            Err(e) => tracing::error!("password file not reloaded (the previous one stays): {e}"),
        }
        if let Some(acl) = &self.acl {
            match acl.reload() {
                Ok(summary) => tracing::info!("ACL reloaded: {summary}"),
                Err(e) => tracing::error!("ACL not reloaded (the previous one stays): {e}"),
            }
        }
    }
}

/// What travels on the data mesh.
pub enum Fwd {
    /// A publication for the receiving shard's subscribers.
    Msg(Arc<Publication>),
    /// Everything `from` sent on this channel before is logged by the receiver (durable, in
    /// durability batch/always) once the receiver answers `Ctrl::Ack { req }`: a publisher's
    /// acknowledgement waits for that when its message went to other shards.
    Barrier { from: usize, req: u64 },
}

/// Control-plane messages between shards.
pub enum Ctrl {
    /// As [`Fwd::Barrier`], for what `from` sent on the ctrl mesh (shared-subscription
    /// deliveries, retained messages).
    Barrier {
        from: usize,
        req: u64,
    },
    /// `from` has its first local subscriber for `filter`; answer with `Ack { req }`.
    RouteAdd {
        filter: Utf8Bytes,
        from: usize,
        req: u64,
    },
    /// `from` lost its last local subscriber for `filter`.
    RouteDel {
        filter: Utf8Bytes,
        from: usize,
    },
    Ack {
        req: u64,
    },
    /// A connection whose CONNECT landed on the wrong shard, for its home shard.
    Handoff(Box<Handoff>),
    /// Store/replace/delete a retained message owned by the receiving shard.
    RetainSet(Arc<Publication>),
    RetainQuery {
        filter: Utf8Bytes,
        from: usize,
        req: u64,
    },
    RetainReply {
        req: u64,
        msgs: Vec<Arc<Publication>>,
    },
    /// `from` now has `count` local members of the shared subscription `key`
    /// (`$share/{group}/{filter}`); answer with `Ack { req }` unless `req` is 0.
    ShareCount {
        key: Utf8Bytes,
        from: usize,
        count: u32,
        req: u64,
    },
    /// Give `msg` to one local member of the shared subscription `key`; the shards in
    /// `tried` had none.
    ShareDeliver {
        key: Utf8Bytes,
        msg: Arc<Publication>,
        tried: ShardSet,
    },
}

/// A connected socket on its way to its home shard, with the bytes read after CONNECT.
pub struct Handoff {
    fd: RawFd,
    /// The TLS session, for a connection accepted on a TLS listener.
    pub tls: Option<Box<rustls::ServerConnection>>,
    /// Index of the listener that accepted it.
    pub listener: u8,
    pub rest: BytesMut,
    pub connect: Box<Connect>,
    /// The client's address from a PROXY protocol header (else the socket's stands).
    pub peer: Option<std::net::SocketAddr>,
    /// The WebSocket decoder state, for a connection accepted on a WebSocket listener.
    pub ws: Option<Box<crate::rt::ws::Deframer>>,
}

impl Handoff {
    pub fn new(
        fd: RawFd,
        tls: Option<Box<rustls::ServerConnection>>,
        ws: Option<Box<crate::rt::ws::Deframer>>,
        peer: Option<std::net::SocketAddr>,
        listener: u8,
        rest: BytesMut,
        connect: Box<Connect>,
    ) -> Handoff {
        Handoff {
            fd,
            tls,
            listener,
            rest,
            connect,
            peer,
            ws,
        }
    }

    /// Take the fd out; the hand-off no longer closes it.
    pub fn take_fd(&mut self) -> RawFd {
        std::mem::replace(&mut self.fd, -1)
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        if self.fd >= 0 {
            close_fd(self.fd);
        }
    }
}

enum Pending {
    Acks(Rc<Countdown>),
    Retained(Rc<RefCell<Vec<Arc<Publication>>>>, Rc<Countdown>),
}

/// A session and the connection currently attached to it (if any).
/// Owned by the session's home shard.
pub struct SessionCell {
    pub key: SessionKey,
    pub state: RefCell<Session>,
    pub conn: RefCell<Option<Rc<Conn>>>,
    /// Seconds the session outlives its connection (Session Expiry Interval): 0 = it ends
    /// with the connection, `u32::MAX` = never. Set by each connection (and DISCONNECT).
    pub expiry: Cell<u32>,
    /// [`Shard::now_ms`] at which this offline session expires; 0 = not scheduled.
    pub expires_at: Cell<u64>,
    /// Flow-control standing towards publishers.
    pub standing: Cell<Standing>,
    /// The session is in the durable log (it outlives its connection).
    pub logged: Cell<bool>,
    /// A record of this session could not be logged: restate it with the next one.
    pub log_broken: Cell<bool>,
    /// Wall-clock ms since when the session has been offline (0 = online); logged.
    pub offline_ms: Cell<u64>,
    /// The user name of the session's latest connection (`None`: anonymous); deliveries to
    /// the session are authorized with it, also while it is offline. Logged.
    pub user: RefCell<Option<Utf8Bytes>>,
    /// ACL generation under which every subscription of the session, for its current
    /// user, was fully covered by an allow rule that no deny overlaps: its deliveries need
    /// no read check while the generation stays. 0: unknown, check each delivery.
    pub acl_clean: Cell<u64>,
}

#[derive(Default)]
struct Sessions {
    by_id: AHashMap<Utf8Bytes, SessionKey>,
    cells: AHashMap<SessionKey, Rc<SessionCell>>,
    next: u64,
}

/// Keep-alive timing wheel: one slot per second, lazily re-armed (activity only updates
/// the connection's `last_seen`; the wheel re-checks when the slot comes round).
struct Wheel {
    slots: Vec<Vec<(u64, u64)>>,
    done: u64,
}

const WHEEL_SLOTS: usize = 1024;
/// Wheel entries with this bit set are park checks, not keep-alive checks.
const PARK_CHECK: u64 = 1 << 63;

impl Wheel {
    fn schedule(&mut self, conn: u64, at: u64) {
        let at = at.max(self.done + 1);
        self.slots[(at as usize) % WHEEL_SLOTS].push((conn, at));
    }
}

/// Everything one shard owns. Lives in an `Rc` on the shard's thread.
pub struct Shard {
    /// Idle connections' sockets; `None` when parking is off or unavailable.
    parking: Option<Parking>,
    /// The parking lot stopped working: park no more.
    pub parking_failed: Cell<bool>,
    resume_queue: RefCell<Vec<Rc<Conn>>>,
    pub resume_wake: Notify,
    pub id: usize,
    pub shards: usize,
    pub cfg: Arc<Config>,
    /// Enhanced-authentication methods; shared read-only with every shard.
    pub auth: Arc<Registry>,
    pub global: Arc<Global>,
    pub data: Rc<Outbox<Fwd>>,
    pub ctrl: Rc<Outbox<Ctrl>>,
    /// Peers a logged publication was sent to since the reader last took them (data mesh,
    /// ctrl mesh): its acknowledgement waits for their barriers.
    touched: Cell<(ShardSet, ShardSet)>,
    pub routes: RefCell<RouteTable>,
    pub subs: RefCell<LocalSubs>,
    pub retained: RefCell<RetainedStore>,
    sessions: RefCell<Sessions>,
    pending: RefCell<AHashMap<u64, Pending>>,
    next_req: Cell<u64>,
    pub metrics: Metrics,
    pub arena: ReadArena,
    started: Instant,
    wheel: RefCell<Wheel>,
    hits: RefCell<Vec<Hit>>,
    /// Scratch for the shared-subscription picks of one publish (reused, no allocation).
    share_picks: RefCell<Vec<(Utf8Bytes, usize)>>,
    pub conns: RefCell<AHashMap<u64, Rc<Conn>>>,
    next_conn: Cell<u64>,
    pub stopping: Cell<bool>,
    /// The task queue connections are served in (accepting and handshakes use another).
    pub main_queue: glommio::TaskQueueHandle,
    pub stop: crate::rt::sync::Signal,
    pub limits: Limits,
    pub pressure: Pressure,
    /// Offline sessions' expiry and delayed wills.
    pub timers: RefCell<crate::expiry::SessionTimers>,
    /// The latest QoS 2 messages this shard delivered (restated in snapshots as `SEEN`).
    recent_seen: RefCell<std::collections::VecDeque<u64>>,
    /// The durable log (`None` with durability none).
    journal: Option<Rc<crate::journal::Journal>>,
    /// This shard's copy of the ACL in force and the store generation it was taken at
    /// (see `shard/acl.rs`).
    acl_cache: RefCell<Arc<crate::acl::Acl>>,
    acl_gen: Cell<u64>,
}

/// Stable hash (FNV-1a) for placing client ids and retained topics on shards. Stable
/// across processes and machines, because placement will become part of on-disk state.
pub fn stable_hash(s: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Shard {
    pub fn new(
        cfg: Arc<Config>,
        auth: Arc<Registry>,
        global: Arc<Global>,
        data: Rc<Outbox<Fwd>>,
        ctrl: Rc<Outbox<Ctrl>>,
        journal: Option<Rc<crate::journal::Journal>>,
    ) -> Rc<Shard> {
        // Config validation keeps these within u32.
        let limits = Limits {
            max_inflight: cfg.max_inflight as u32,
            max_queued_messages: cfg.max_queued_messages.min(u32::MAX as usize) as u32,
            max_queued_bytes: cfg.max_queued_bytes.min(u32::MAX as usize) as u32,
        };
        let pressure = Pressure::new(&limits, cfg.slow_consumer_ms);
        let parking = if cfg.idle_park_secs == 0 {
            None
        } else {
            match Parking::new() {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(
                        "cannot create the parking lot ({e}); idle connections will not park"
                    );
                    None
                }
            }
        };
        Rc::new(Shard {
            parking,
            parking_failed: Cell::new(false),
            resume_queue: RefCell::default(),
            resume_wake: Notify::new(),
            id: data.me(),
            shards: cfg.shards,
            cfg,
            auth,
            global,
            data,
            ctrl,
            touched: Cell::default(),
            routes: RefCell::default(),
            subs: RefCell::default(),
            retained: RefCell::default(),
            sessions: RefCell::default(),
            pending: RefCell::default(),
            next_req: Cell::new(1),
            metrics: Metrics::default(),
            arena: ReadArena::new(64 * 1024),
            started: Instant::now(),
            wheel: RefCell::new(Wheel {
                slots: (0..WHEEL_SLOTS).map(|_| Vec::new()).collect(),
                done: 0,
            }),
            hits: RefCell::default(),
            share_picks: RefCell::default(),
            conns: RefCell::default(),
            next_conn: Cell::new(1),
            stopping: Cell::new(false),
            stop: crate::rt::sync::Signal::new(),
            // Shards are built by their executor's first task, in the default queue.
            main_queue: glommio::executor().current_task_queue(),
            pressure,
            limits,
            timers: RefCell::default(),
            recent_seen: RefCell::default(),
            journal,
            acl_cache: RefCell::default(),
            acl_gen: Cell::new(0),
        })
    }

    /// Home shard of a client id, or owner shard of a retained topic.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        (stable_hash(key) % self.shards as u64) as usize
    }

    /// Seconds since the shard started (the keep-alive clock).
    pub fn now(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Milliseconds since the shard started (session expiry and will delays).
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A connection counted at accept (globally and on listener `listener`) ended.
    pub fn release_connection(&self, listener: u8) {
        self.global.connections.fetch_sub(1, Ordering::Relaxed);
        if let Some(l) = self.global.listeners.get(listener as usize) {
            l.release();
        }
    }

    pub fn next_conn_id(&self) -> u64 {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        id
    }

    // ---- sessions ---------------------------------------------------------------------

    /// Find or create the session for `client_id`, connected as `user`. With `clean`, an
    /// existing session is discarded first [MQTT-3.1.2-6]. Returns the cell and whether
    /// state was resumed (the CONNACK session-present flag).
    pub fn open_session(
        self: &Rc<Self>,
        client_id: &Utf8Bytes,
        clean: bool,
        expiry: u32,
        user: Option<&Utf8Bytes>,
    ) -> (Rc<SessionCell>, bool) {
        let existing = {
            let s = self.sessions.borrow();
            s.by_id
                .get(client_id.as_str())
                .and_then(|k| s.cells.get(k).cloned())
        };
        if let Some(cell) = existing {
            if !clean {
                cell.expiry.set(expiry);
                if cell.user.replace(user.cloned()).as_ref() != user {
                    // Its subscriptions were judged for another user.
                    cell.acl_clean.set(0);
                }
                self.session_resumed(&cell);
                self.log_session_open(&cell);
                return (cell, true);
            }
            // Clean start over a live session: close its connection first
            // [MQTT-3.1.4-2], then discard its state [MQTT-3.1.2-6] (which ends it: a
            // delayed will is published).
            let old = cell.conn.borrow_mut().take();
            if let Some(old) = old {
                Metrics::inc(&self.metrics.takeovers);
                self.kill_conn(&old, crate::conn::reason::SESSION_TAKEN_OVER);
            }
            self.end_session(&cell);
        }
        let cell = self.new_session(client_id, expiry);
        cell.user.replace(user.cloned());
        self.log_session_open(&cell);
        (cell, false)
    }

    /// Register a new, empty session (not logged yet).
    fn new_session(&self, client_id: &Utf8Bytes, expiry: u32) -> Rc<SessionCell> {
        let mut s = self.sessions.borrow_mut();
        s.next += 1;
        let key = SessionKey(s.next);
        let cell = Rc::new(SessionCell {
            key,
            state: RefCell::new(Session::new(client_id.clone(), self.limits)),
            conn: RefCell::new(None),
            expiry: Cell::new(expiry),
            expires_at: Cell::new(0),
            standing: Cell::new(Standing::Clear),
            logged: Cell::new(false),
            log_broken: Cell::new(false),
            offline_ms: Cell::new(0),
            user: RefCell::new(None),
            acl_clean: Cell::new(0),
        });
        s.by_id.insert(client_id.clone(), key);
        s.cells.insert(key, cell.clone());
        cell
    }

    /// Every session of this shard.
    pub fn session_cells(&self) -> Vec<Rc<SessionCell>> {
        self.sessions.borrow().cells.values().cloned().collect()
    }

    /// Drop a session and its subscriptions (if it is still the registered one).
    pub fn remove_session(&self, cell: &Rc<SessionCell>) {
        {
            let mut s = self.sessions.borrow_mut();
            match s.cells.get(&cell.key) {
                Some(c) if Rc::ptr_eq(c, cell) => {}
                _ => return,
            }
            s.cells.remove(&cell.key);
            let id = cell.state.borrow().client_id.clone();
            if s.by_id.get(id.as_str()) == Some(&cell.key) {
                s.by_id.remove(id.as_str());
            }
        }
        self.log_session_end(cell);
        self.pressure.release(cell);
        let filters: Vec<Utf8Bytes> = cell
            .state
            .borrow_mut()
            .subs
            .drain()
            .map(|(f, _)| f)
            .collect();
        for f in filters {
            self.unsubscribe_local(&f, cell.key);
        }
    }

    /// Whether `cell` is still this shard's registered session (not ended or replaced).
    pub fn has_session(&self, cell: &Rc<SessionCell>) -> bool {
        matches!(self.sessions.borrow().cells.get(&cell.key), Some(c) if Rc::ptr_eq(c, cell))
    }

    pub fn session_by_key(&self, key: SessionKey) -> Option<Rc<SessionCell>> {
        self.sessions.borrow().cells.get(&key).cloned()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.borrow().cells.len()
    }

    /// The keys of this shard's sessions (to visit them a chunk at a time).
    pub fn session_keys(&self) -> Vec<SessionKey> {
        self.sessions.borrow().cells.keys().copied().collect()
    }

    /// Visit the sessions of `keys` that still exist (`f` must not open or end one).
    pub fn for_sessions(&self, keys: &[SessionKey], mut f: impl FnMut(&SessionCell)) {
        let sessions = self.sessions.borrow();
        for k in keys {
            if let Some(c) = sessions.cells.get(k) {
                f(c);
            }
        }
    }

    // ---- subscriptions and routes -----------------------------------------------------

    /// Register a local subscription (`id`: its v5 subscription identifier, 0 for none);
    /// returns true when peers must be told before SUBACK (the route table gained this
    /// shard for the filter, or a shared subscription's member count changed).
    pub fn subscribe_local(
        &self,
        filter: &Utf8Bytes,
        key: SessionKey,
        opts: crate::proto::SubOptions,
        id: u32,
    ) -> bool {
        let hit = Hit {
            session: key,
            opts,
            id,
        };
        if parse_shared(filter).is_some() {
            let count = self.subs.borrow_mut().groups.add(filter, hit);
            self.routes.borrow_mut().shared.set(filter, self.id, count);
            return true;
        }
        let first = self.subs.borrow_mut().add(filter, key, opts, id);
        if first {
            self.routes.borrow_mut().add(filter, self.id);
        }
        first
    }

    /// Remove a local subscription; tells peers when the last local subscriber left (or a
    /// shared subscription's member count changed).
    pub fn unsubscribe_local(&self, filter: &Utf8Bytes, key: SessionKey) {
        if parse_shared(filter).is_some() {
            let left = self.subs.borrow_mut().groups.remove(filter, key);
            if let Some(count) = left {
                self.routes.borrow_mut().shared.set(filter, self.id, count);
                for p in self.peers() {
                    self.ctrl.push(
                        p,
                        Ctrl::ShareCount {
                            key: filter.clone(),
                            from: self.id,
                            count,
                            req: 0,
                        },
                    );
                }
            }
            return;
        }
        if self.subs.borrow_mut().remove(filter, key) {
            self.routes.borrow_mut().remove(filter, self.id);
            for p in self.peers() {
                self.ctrl.push(
                    p,
                    Ctrl::RouteDel {
                        filter: filter.clone(),
                        from: self.id,
                    },
                );
            }
        }
    }

    /// Tell every peer about new routes and wait until all applied them, so that any
    /// publish accepted anywhere after our SUBACK reaches us.
    pub async fn announce_routes(&self, filters: &[Utf8Bytes]) {
        if filters.is_empty() || self.shards == 1 {
            return;
        }
        let cd = Countdown::new(filters.len() * (self.shards - 1));
        let req = self.new_req(Pending::Acks(cd.clone()));
        for p in self.peers() {
            for f in filters {
                let msg = if parse_shared(f).is_some() {
                    Ctrl::ShareCount {
                        key: f.clone(),
                        from: self.id,
                        count: self.subs.borrow().groups.count(f),
                        req,
                    }
                } else {
                    Ctrl::RouteAdd {
                        filter: f.clone(),
                        from: self.id,
                        req,
                    }
                };
                self.ctrl.push(p, msg);
            }
        }
        let done = crate::rt::with_timeout(PEER_TIMEOUT, cd.wait()).await;
        self.pending.borrow_mut().remove(&req);
        if done.is_none() {
            tracing::warn!(
                shard = self.id,
                "route announcement not acknowledged by every shard"
            );
        }
    }

    fn peers(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.shards).filter(move |p| *p != self.id)
    }

    fn new_req(&self, p: Pending) -> u64 {
        let req = self.next_req.get();
        self.next_req.set(req + 1);
        self.pending.borrow_mut().insert(req, p);
        req
    }

    // ---- publishing -------------------------------------------------------------------

    /// Route a publication: retained store, then once per destination shard (local
    /// delivery inline, remote via the data mesh).
    ///
    /// Returns whether the message had any matching subscription (5.0 PUBACK/PUBREC
    /// reason 0x10 "no matching subscribers" otherwise).
    pub fn publish(&self, msg: Arc<Publication>) -> bool {
        let (mut data, mut ctrl) = self.touched.get();
        if msg.retain {
            let owner = self.shard_of(msg.topic.as_bytes());
            if owner == self.id {
                self.retain_set(msg.clone());
            } else {
                self.ctrl.push(owner, Ctrl::RetainSet(msg.clone()));
                ctrl.insert(owner);
            }
        }
        let dests = self.routes.borrow().destinations(&msg.topic);
        let mut routed = !dests.is_empty();
        for d in dests.iter() {
            if d == self.id {
                self.deliver_local(&msg);
            } else {
                self.data.push(d, Fwd::Msg(msg.clone()));
                Metrics::add(&self.metrics.mesh_bytes_sent, msg.payload.len() as u64);
                data.insert(d);
            }
        }
        if msg.id != 0 {
            self.touched.set((data, ctrl));
        }
        if !self.routes.borrow().shared.is_empty() {
            routed |= self.publish_shared(&msg);
        }
        routed
    }

    /// Peers the logged publications routed since the last call went to (data, ctrl).
    pub fn take_touched(&self) -> (ShardSet, ShardSet) {
        self.touched.take()
    }

    /// Wait until `data` and `ctrl` peers logged (and, in durability batch/always, made
    /// durable) everything this shard sent them so far. `false`: a peer did not answer.
    pub async fn barrier(&self, data: ShardSet, ctrl: ShardSet) -> bool {
        let n = data.iter().count() + ctrl.iter().count();
        if n == 0 {
            return true;
        }
        let cd = Countdown::new(n);
        let req = self.new_req(Pending::Acks(cd.clone()));
        for d in data.iter() {
            self.data.push(d, Fwd::Barrier { from: self.id, req });
        }
        for c in ctrl.iter() {
            self.ctrl.push(c, Ctrl::Barrier { from: self.id, req });
        }
        let done = crate::rt::with_timeout(BARRIER_TIMEOUT, cd.wait()).await;
        self.pending.borrow_mut().remove(&req);
        if done.is_none() {
            tracing::error!(
                shard = self.id,
                "a peer shard did not confirm logging within 30 s"
            );
        }
        done.is_some()
    }

    /// Answer a peer's barrier once what it sent before is durable here.
    fn answer_barrier(&self, from: usize, req: u64) {
        match self.journal().filter(|j| j.gates_acks()) {
            Some(j) if !j.is_durable(j.last_seq()) => {
                let (j, ctrl, seq) = (j.clone(), self.ctrl.clone(), j.last_seq());
                glommio::spawn_local(async move {
                    if j.wait_durable(seq).await.is_ok() {
                        ctrl.push(from, Ctrl::Ack { req });
                    }
                })
                .detach();
            }
            _ => self.ctrl.push(from, Ctrl::Ack { req }),
        }
    }

    fn retain_set(&self, msg: Arc<Publication>) {
        let outcome = self
            .retained
            .borrow_mut()
            .set(msg.clone(), self.cfg.max_retained);
        if outcome == RetainOutcome::Full {
            Metrics::inc(&self.metrics.dropped_retained_full);
        } else {
            self.log_retained(&msg);
        }
    }

    /// Deliver to every matching session on this shard, once per session (at the highest
    /// QoS of its matching subscriptions, with all their identifiers).
    pub fn deliver_local(&self, msg: &Arc<Publication>) {
        let mut hits = std::mem::take(&mut *self.hits.borrow_mut());
        self.subs.borrow().matches(&msg.topic, &mut hits);
        {
            let sessions = self.sessions.borrow();
            for run in per_session(&hits) {
                let Some(cell) = sessions.cells.get(&run[0].session) else {
                    continue;
                };
                // No Local applies per subscription [MQTT-3.8.3-3]; the client id is
                // compared at most once per session.
                let own = std::cell::OnceCell::new();
                let is_own = || {
                    *own.get_or_init(|| {
                        !msg.origin.is_empty() && cell.state.borrow().client_id == msg.origin
                    })
                };
                let d = if let [h] = run {
                    // The common case: one matching subscription, nothing to merge.
                    if h.opts.no_local && is_own() {
                        continue;
                    }
                    Delivery::new(
                        msg.clone(),
                        delivery_qos(msg.qos, h.opts.qos),
                        h.opts.retain_as_published && msg.retain,
                    )
                    .with_sub_id(h.id)
                } else {
                    let Some(m) = merge(run, |h| h.opts.no_local && is_own()) else {
                        continue;
                    };
                    Delivery::new(
                        msg.clone(),
                        delivery_qos(msg.qos, m.qos),
                        m.retain_as_published && msg.retain,
                    )
                    .with_sub_ids(m.ids.as_slice())
                };
                self.deliver(cell, d);
            }
        }
        hits.clear();
        *self.hits.borrow_mut() = hits;
        if msg.qos == crate::proto::QoS::ExactlyOnce && msg.id != 0 {
            self.log_seen(msg.id);
        }
    }

    /// Queue one message for one session and wake its writer, if the session may read it
    /// (ACL).
    pub fn deliver(&self, cell: &Rc<SessionCell>, d: Delivery) {
        if self.global.acl.is_some() && !self.acl_may_deliver(cell, &d.msg.topic) {
            return;
        }
        let mut st = cell.state.borrow_mut();
        // The record is written only once the delivery is queued; it needs the delivery,
        // which the queue takes (a clone is a refcount bump, and only for logged ones).
        let logged = (cell.logged.get() && d.logged()).then(|| d.clone());
        match st.enqueue(d) {
            Enqueued::Queued => {}
            Enqueued::QueuedEvictingQos0(n) => {
                let c = &self.metrics.dropped_qos0_evicted;
                c.set(c.get() + n as u64);
            }
            Enqueued::DroppedFull => {
                Metrics::inc(&self.metrics.dropped_queue_full);
                return self.wake_session(cell, &st);
            }
        }
        if let Some(d) = logged {
            self.log_enq(cell, &st, &d);
        }
        self.wake_session(cell, &st);
    }

    fn wake_session(&self, cell: &Rc<SessionCell>, st: &Session) {
        if let Some(conn) = cell.conn.borrow().as_ref() {
            conn.wake_writer();
            self.pressure.on_enqueue(cell, st, &self.metrics);
            self.resume_conn(conn);
        }
    }

    /// Retained messages matching `filter`, gathered from the owning shard(s).
    pub async fn retained_for(&self, filter: &Utf8Bytes) -> Vec<Arc<Publication>> {
        let wildcard = filter.contains(['+', '#']);
        let mut out = Vec::new();
        let remote: Vec<usize> = if wildcard {
            self.retained.borrow().lookup(filter, &mut out);
            self.peers().collect()
        } else {
            let owner = self.shard_of(filter.as_bytes());
            if owner == self.id {
                self.retained.borrow().lookup(filter, &mut out);
                Vec::new()
            } else {
                vec![owner]
            }
        };
        if remote.is_empty() {
            return out;
        }
        let slot = Rc::new(RefCell::new(Vec::new()));
        let cd = Countdown::new(remote.len());
        let req = self.new_req(Pending::Retained(slot.clone(), cd.clone()));
        for p in remote {
            self.ctrl.push(
                p,
                Ctrl::RetainQuery {
                    filter: filter.clone(),
                    from: self.id,
                    req,
                },
            );
        }
        crate::rt::with_timeout(PEER_TIMEOUT, cd.wait()).await;
        self.pending.borrow_mut().remove(&req);
        out.extend(slot.take());
        out
    }

    // ---- inbound mesh -----------------------------------------------------------------

    /// Handle one control message. Never awaits (see `rt::mesh`).
    fn on_ctrl(self: &Rc<Self>, msg: Ctrl) {
        match msg {
            Ctrl::Barrier { from, req } => self.answer_barrier(from, req),
            Ctrl::RouteAdd { filter, from, req } => {
                self.routes.borrow_mut().add(&filter, from);
                self.ctrl.push(from, Ctrl::Ack { req });
            }
            Ctrl::RouteDel { filter, from } => self.routes.borrow_mut().remove(&filter, from),
            Ctrl::Ack { req } => {
                if let Some(Pending::Acks(cd)) = self.pending.borrow().get(&req) {
                    cd.tick();
                }
            }
            Ctrl::Handoff(h) => crate::conn::adopt(self.clone(), *h),
            Ctrl::RetainSet(msg) => self.retain_set(msg),
            Ctrl::RetainQuery { filter, from, req } => {
                let mut msgs = Vec::new();
                self.retained.borrow().lookup(&filter, &mut msgs);
                self.ctrl.push(from, Ctrl::RetainReply { req, msgs });
            }
            Ctrl::RetainReply { req, msgs } => {
                if let Some(Pending::Retained(slot, cd)) = self.pending.borrow().get(&req) {
                    slot.borrow_mut().extend(msgs);
                    cd.tick();
                }
            }
            Ctrl::ShareCount {
                key,
                from,
                count,
                req,
            } => {
                self.routes.borrow_mut().shared.set(&key, from, count);
                if req != 0 {
                    self.ctrl.push(from, Ctrl::Ack { req });
                }
            }
            Ctrl::ShareDeliver { key, msg, tried } => self.deliver_shared(key, msg, tried, None),
        }
    }

    /// Spawn one drain task per peer for each mesh. Drain tasks never await a send.
    pub fn spawn_drains(
        self: &Rc<Self>,
        mut data_rx: Receivers<Vec<Fwd>>,
        mut ctrl_rx: Receivers<Vec<Ctrl>>,
    ) {
        for (_peer, mut rx) in data_rx.streams() {
            let shard = self.clone();
            glommio::spawn_local(async move {
                while let Some(batch) = rx.next().await {
                    let n = batch.len() as u64;
                    Metrics::add(&shard.metrics.mesh_data_received, n);
                    for f in batch {
                        match f {
                            Fwd::Msg(msg) => {
                                let len = msg.payload.len() as u64;
                                Metrics::add(&shard.metrics.mesh_bytes_received, len);
                                shard.deliver_local(&msg)
                            }
                            Fwd::Barrier { from, req } => shard.answer_barrier(from, req),
                        }
                    }
                    glommio::yield_if_needed().await;
                }
            })
            .detach();
        }
        for (_peer, mut rx) in ctrl_rx.streams() {
            let shard = self.clone();
            glommio::spawn_local(async move {
                while let Some(batch) = rx.next().await {
                    Metrics::add(&shard.metrics.mesh_ctrl_received, batch.len() as u64);
                    for msg in batch {
                        shard.on_ctrl(msg);
                    }
                }
            })
            .detach();
        }
    }

    // ---- connections ------------------------------------------------------------------

    /// The parking lot, when this shard parks idle connections.
    pub fn parking_lot(&self) -> Option<&Parking> {
        if self.parking_failed.get() {
            return None;
        }
        self.parking.as_ref()
    }

    /// The parking lot even after it failed (to unpark what is still parked).
    pub fn parking_lot_any(&self) -> Option<&Parking> {
        self.parking.as_ref()
    }

    /// Continue a parked connection (no-op for an active one). Deferred to the parking
    /// task: spawning here could run the connection's task at once (glommio may poll a new
    /// task immediately) while the caller still holds borrows.
    pub fn resume_conn(&self, conn: &Rc<Conn>) {
        if conn.is_parked() && !conn.resume_queued.replace(true) {
            self.resume_queue.borrow_mut().push(conn.clone());
            self.resume_wake.notify();
        }
    }

    /// Connections waiting to be resumed (taken by the parking task).
    pub fn take_resumes(&self) -> Vec<Rc<Conn>> {
        std::mem::take(&mut *self.resume_queue.borrow_mut())
    }

    /// Close a connection from outside (takeover, keep-alive, shutdown), parked or not,
    /// telling a 5.0 client the reason (DISCONNECT `reason_code`).
    pub fn kill_conn(&self, conn: &Rc<Conn>, reason_code: u8) {
        conn.kill_with(reason_code);
        self.resume_conn(conn);
    }

    /// Check after `idle_park_secs` whether the connection has gone idle.
    pub fn arm_park_check(&self, conn: &Conn) {
        if self.parking.is_some() && !conn.park_armed.replace(true) {
            let at = self.now() + self.cfg.idle_park_secs;
            self.wheel.borrow_mut().schedule(conn.id | PARK_CHECK, at);
        }
    }

    fn park_check(&self, conn: &Rc<Conn>, now: u64) {
        if conn.is_parked() || conn.is_killed() || self.parking_lot().is_none() {
            conn.park_armed.set(false);
            return;
        }
        let idle_since = conn.last_seen();
        let after = self.cfg.idle_park_secs;
        if conn.take_busy() || idle_since + after > now {
            let at = (idle_since + after).max(now + 1);
            self.wheel.borrow_mut().schedule(conn.id | PARK_CHECK, at);
            return;
        }
        conn.park_armed.set(false);
        conn.request_park();
    }

    // ---- keep-alive -------------------------------------------------------------------

    /// Arm the keep-alive check for a connection (no-op for keep-alive 0).
    pub fn arm_keepalive(&self, conn: &Conn) {
        if let Some(deadline) = conn.keepalive_deadline() {
            self.wheel.borrow_mut().schedule(conn.id, deadline);
        }
    }

    /// Every 250 ms: session timers, journal space, the ops heartbeat and (every
    /// `stats_interval_ms`) the stats snapshot; once a second: close connections silent
    /// for 1.5 × keep-alive [MQTT-3.1.2-24].
    pub async fn run_ticker(self: Rc<Self>) {
        let mut ticks = 0u32;
        let mut stats_due = 0;
        loop {
            glommio::timer::sleep(Duration::from_millis(250)).await;
            if self.stopping.get() {
                return;
            }
            self.global.ops.beat(self.id);
            if self.now_ms() >= stats_due {
                self.publish_stats().await;
                stats_due = self.now_ms() + self.cfg.stats_interval_ms;
            }
            self.run_session_timers(self.now_ms());
            if let Some(j) = self.journal() {
                j.poll_space();
            }
            ticks = ticks.wrapping_add(1);
            if ticks % 16 == 0 {
                // About every 4 s: retained messages past their expiry leave the store.
                let gone = self
                    .retained
                    .borrow_mut()
                    .purge_expired(std::time::Instant::now());
                let c = &self.metrics.retained_expired;
                c.set(c.get() + gone as u64);
            }
            let now = self.now();
            loop {
                let due = {
                    let mut w = self.wheel.borrow_mut();
                    if w.done >= now {
                        break;
                    }
                    w.done += 1;
                    let t = w.done;
                    let slot = std::mem::take(&mut w.slots[(t as usize) % WHEEL_SLOTS]);
                    let (due, later): (Vec<_>, Vec<_>) =
                        slot.into_iter().partition(|(_, at)| *at <= t);
                    w.slots[(t as usize) % WHEEL_SLOTS] = later;
                    due
                };
                for (tagged, _) in due {
                    let id = tagged & !PARK_CHECK;
                    let conn = self.conns.borrow().get(&id).cloned();
                    let Some(conn) = conn else { continue };
                    if tagged & PARK_CHECK != 0 {
                        self.park_check(&conn, now);
                        continue;
                    }
                    match conn.keepalive_deadline() {
                        Some(d) if d <= now => {
                            Metrics::inc(&self.metrics.keepalive_timeouts);
                            tracing::debug!(conn = id, "keep-alive expired");
                            self.kill_conn(&conn, crate::conn::reason::KEEP_ALIVE_TIMEOUT);
                        }
                        Some(d) => self.wheel.borrow_mut().schedule(id, d),
                        None => {}
                    }
                }
            }
        }
    }
}

/// A `Shard`'s view of the process-wide shutdown flag.
pub async fn watch_shutdown(shard: Rc<Shard>) {
    while !shard.global.shutdown.load(Ordering::Relaxed) && !shard.stopping.get() {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    shard.stopping.set(true);
    shard.stop.notify_all();
}

//! CONNECT user name/password authentication in the handshake: anonymous clients, the
//! password back end ([`crate::auth::PasswordAuth`]), its cache, the failure throttle, and
//! the refusing CONNACK. The rules themselves are in [`crate::auth::service`].
//!
//! Seam with `handshake()`: [`check_password`] runs once, after enhanced authentication
//! and before the client id is placed; `false` means a refusing CONNACK was sent and the
//! connection is to be closed ([MQTT-3.2.2-5]). On success the CONNECT keeps its user name,
//! which becomes [`Conn::user`]; the password is dropped here and never travels further.
//!
//! Shard safety: argon2 takes tens of milliseconds, so it never runs on the shard thread.
//! Each shard runs at most one check at a time on its glommio blocking pool (two threads,
//! configured in `broker::run`, so glommio's own blocking file calls are never stuck behind
//! a hash), with at most `auth_verify_queue` waiting; throttling delays are timer sleeps.
//! A blocking thread lowers its own priority (nice 10) before its first hash, so under
//! load the shard threads win the CPU; it stays niced for glommio's short file calls too
//! (raising it back would need a privilege). The waiting connection keeps its place in
//! `max_connections` all along.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::auth::service::Loaded;
use crate::auth::verify_cache::Inserted;
use crate::auth::Verdict;

/// 3.1.1 "server unavailable" / 5.0 "server busy": too many checks waiting.
const BUSY_V311: u8 = 0x03;
const BUSY_V5: u8 = 0x89;

/// One shard's password checks: one runs, at most `auth_verify_queue` wait.
struct Gate {
    running: glommio::sync::Semaphore,
    waiting: Cell<usize>,
}

thread_local! {
    /// Per shard thread (the handshake runs on the accepting shard).
    static GATE: Rc<Gate> = Rc::new(Gate {
        running: glommio::sync::Semaphore::new(1),
        waiting: Cell::new(0),
    });
}

/// Leaves the wait count when the wait ends, however it ends.
struct Waiting(Rc<Gate>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.set(self.0.waiting.get().saturating_sub(1));
    }
}

/// What the check came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Decided(Verdict),
    /// Too many checks waiting on this shard (or waited past `connect_timeout`).
    Busy,
}

/// Authenticate a CONNECT's user name and password (see the module docs). `false`: refused
/// with a CONNACK; close the connection.
pub(super) async fn check_password(shard: &Rc<Shard>, io: &Io, connect: &mut Connect) -> bool {
    if connect.properties.authentication_method.is_some() {
        // Enhanced authentication ran already; its user name is the proven identity.
        return true;
    }
    let passwords = &shard.global.passwords;
    let password = connect.password.take().unwrap_or_default();
    let peer = io.peer_addr().map(|a| a.ip());
    let (user, loaded) = match (connect.username.clone(), passwords.current()) {
        (Some(user), Some(loaded)) => (user, loaded),
        _ => {
            // No user name, or no back end to check one: an open broker lets the client in
            // (an unchecked user name stays as a label, see crate::auth::service); a closed
            // one refuses it, since nothing can verify who it is.
            if passwords.settings().allow_anonymous {
                return true;
            }
            throttle(shard, peer).await;
            Metrics::inc(&shard.metrics.auth_refused_anonymous);
            tracing::info!(?peer, client = %connect.client_id, "anonymous client refused");
            return refuse(
                shard,
                io,
                connect,
                peer,
                Outcome::Decided(Verdict::NotAuthorized),
            )
            .await;
        }
    };
    throttle(shard, peer).await;
    let outcome = verify(shard, &loaded, &user, &password, &connect.client_id, peer).await;
    let m = &shard.metrics;
    match outcome {
        Outcome::Decided(Verdict::Allow) => {
            Metrics::inc(&m.auth_password_success);
            tracing::debug!(client = %connect.client_id, %user, "password accepted");
            return true;
        }
        Outcome::Decided(Verdict::BadCredentials) => Metrics::inc(&m.auth_refused_credentials),
        Outcome::Decided(Verdict::NotAuthorized) => Metrics::inc(&m.auth_refused_not_authorized),
        Outcome::Decided(Verdict::Unavailable) => Metrics::inc(&m.auth_refused_unavailable),
        Outcome::Busy => Metrics::inc(&m.auth_refused_busy),
    }
    tracing::info!(?peer, client = %connect.client_id, %user, ?outcome, "login refused");
    refuse(shard, io, connect, peer, outcome).await
}

/// Wait as long as the throttle says for `peer`'s earlier failures (a timer, not a block).
async fn throttle(shard: &Shard, peer: Option<IpAddr>) {
    let delay = shard.global.passwords.throttle_delay(peer, Instant::now());
    if !delay.is_zero() {
        Metrics::inc(&shard.metrics.auth_throttled);
        tracing::debug!(?peer, ?delay, "delaying a login after earlier failures");
        glommio::timer::sleep(delay).await;
    }
}

/// The cache, else the back end on the blocking pool (one check at a time per shard).
async fn verify(
    shard: &Shard,
    loaded: &Arc<Loaded>,
    user: &str,
    password: &[u8],
    client_id: &str,
    peer: Option<IpAddr>,
) -> Outcome {
    let tag = loaded.backend.cache_tag(user);
    if let Some(tag) = tag {
        if loaded.cache.hit(user, password, tag) {
            Metrics::inc(&shard.metrics.auth_cache_hits);
            return Outcome::Decided(Verdict::Allow);
        }
    }
    let gate = GATE.with(Rc::clone);
    if gate.waiting.get() >= shard.global.passwords.settings().verify_queue {
        return Outcome::Busy;
    }
    gate.waiting.set(gate.waiting.get() + 1);
    let wait = Waiting(gate.clone());
    let limit = Duration::from_secs(shard.cfg.connect_timeout);
    let permit = match with_timeout(limit, gate.running.acquire_permit(1)).await {
        Some(Ok(p)) => p,
        Some(Err(_)) | None => return Outcome::Busy,
    };
    drop(wait);
    let backend = loaded.backend.clone();
    let (user_owned, client_id) = (user.to_string(), client_id.to_string());
    let mut secret = password.to_vec();
    let verdict = glommio::executor()
        .spawn_blocking(move || {
            lower_priority();
            let v = backend.check(&user_owned, &secret, &client_id, peer);
            // Best effort: wipe this copy (black_box keeps the stores from being elided).
            secret.fill(0);
            std::hint::black_box(&secret);
            v
        })
        .await;
    drop(permit);
    if let (Verdict::Allow, Some(tag)) = (verdict, tag) {
        if loaded.cache.insert(user, password, tag) == Inserted::Evicted {
            Metrics::inc(&shard.metrics.auth_cache_evictions);
        }
    }
    Outcome::Decided(verdict)
}

/// Hashing is background work: let the blocking thread yield the CPU to the shards.
fn lower_priority() {
    thread_local!(static DONE: Cell<bool> = const { Cell::new(false) });
    if !DONE.with(|d| d.replace(true)) {
        // SAFETY: plain syscalls on this thread's own id; failure only leaves the priority.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 10);
        }
    }
}

/// Count the failure against `peer`, send the refusing CONNACK, and let the caller close.
async fn refuse(
    shard: &Shard,
    io: &Io,
    connect: &Connect,
    peer: Option<IpAddr>,
    outcome: Outcome,
) -> bool {
    Metrics::inc(&shard.metrics.auth_failures);
    Metrics::inc(&shard.metrics.connect_failures);
    // Only the client's own failures count against its address (not a busy server).
    let client_failed = matches!(
        outcome,
        Outcome::Decided(Verdict::BadCredentials | Verdict::NotAuthorized)
    );
    if client_failed && shard.global.passwords.failed(peer, Instant::now()) {
        Metrics::inc(&shard.metrics.auth_throttle_evictions);
    }
    let v5 = connect.protocol.is_v5();
    let code = match outcome {
        Outcome::Decided(v) => v.connack_code(v5).unwrap_or(0x80),
        Outcome::Busy if v5 => BUSY_V5,
        Outcome::Busy => BUSY_V311,
    };
    let ack = Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties: Default::default(),
    });
    let mut out = BytesMut::new();
    if encode(&ack, connect.protocol, &mut out).is_ok() {
        let _ = with_timeout(Duration::from_secs(1), io.write_all(&out)).await;
    }
    false
}

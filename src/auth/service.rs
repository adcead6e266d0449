//! CONNECT user name/password authentication as the broker runs it: the configured back end
//! with its cache of successful checks, whether anonymous clients are let in, the failure
//! throttle, and [`Passwords::reload`].
//!
//! Owned: one [`Passwords`] per broker, the `passwords` field of [`crate::shard::Global`],
//! built in `broker::run` and shared by every shard. Shards read the back end lock-free
//! (`arc-swap`); a reload swaps in a new back end with an empty cache, and checks already
//! running finish against the old one.
//!
//! Rules (applied by `conn::password_flow` in the CONNECT handshake):
//! - `allow_anonymous` defaults to true without a `password_file` and to false with one.
//! - With a back end, a CONNECT user name is checked and kept (as `Conn::user()`) only if
//!   its password is right. Without one (no `password_file`), nothing can check it: an open
//!   broker (`allow_anonymous`, the default then) lets the client in and keeps the name
//!   *unverified*, as mosquitto does, so ACL `%u` rules still see it; a closed broker
//!   refuses the client (0x05 / 0x87). Per-user ACLs therefore protect anything only with a
//!   password file (or SCRAM, or TLS client certificates) and `allow_anonymous = false`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::backend::PasswordAuth;
use super::password::{PasswordError, PasswordFile};
use super::throttle::{self, Throttle};
use super::verify_cache::VerifyCache;

/// The settings of [`Passwords`], from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Let clients without a user name (or with one nobody can check) connect.
    pub allow_anonymous: bool,
    /// The argon2id password file, if any.
    pub file: Option<PathBuf>,
    /// Entries of the cache of successful checks (0 = no cache).
    pub cache_size: usize,
    /// Checks waiting per shard before further logins are refused as busy.
    pub verify_queue: usize,
    pub throttle: throttle::Settings,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            allow_anonymous: true,
            file: None,
            cache_size: 10_000,
            verify_queue: 128,
            throttle: throttle::Settings::default(),
        }
    }
}

/// A back end and the cache of its successful checks (dropped together on reload).
pub struct Loaded {
    pub backend: Arc<dyn PasswordAuth>,
    pub cache: VerifyCache,
}

/// See the module docs. Shared by every shard.
pub struct Passwords {
    settings: Settings,
    current: ArcSwapOption<Loaded>,
    throttle: Mutex<Throttle>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("settings", &self.settings)
            .field(
                "backend",
                &self.current.load().as_ref().map(|l| l.backend.describe()),
            )
            .finish()
    }
}

impl Default for Passwords {
    /// Anonymous clients allowed, no back end.
    fn default() -> Passwords {
        Passwords::new(Settings::default())
    }
}

impl Passwords {
    /// No back end yet (see [`Passwords::load`], [`Passwords::install`]).
    pub fn new(settings: Settings) -> Passwords {
        Passwords {
            throttle: Mutex::new(Throttle::new(settings.throttle)),
            settings,
            current: ArcSwapOption::empty(),
        }
    }

    /// With the password file loaded when one is configured. Blocking (file, one hash):
    /// call it on the main thread.
    pub fn load(settings: Settings) -> Result<Passwords, PasswordError> {
        let p = Passwords::new(settings);
        if let Some(path) = &p.settings.file {
            let f = PasswordFile::load(path)?;
            if f.is_empty() {
                tracing::warn!(path = %path.display(), "password file has no users");
            }
            p.install(Arc::new(f));
        }
        Ok(p)
    }

    /// Use `backend` from now on (with a new, empty cache).
    pub fn install(&self, backend: Arc<dyn PasswordAuth>) {
        let cache = VerifyCache::new(self.settings.cache_size);
        self.current
            .store(Some(Arc::new(Loaded { backend, cache })));
    }

    /// The back end in force, if any.
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.current.load_full()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Re-read the password file. On error the previous one stays in force. Blocking (file,
    /// one hash): never call it on a shard thread.
    pub fn reload(&self) -> Result<String, String> {
        let Some(path) = &self.settings.file else {
            return Ok("no password file configured".into());
        };
        let f = PasswordFile::load(path).map_err(|e| e.to_string())?;
        let summary = format!("reloaded {}", f.describe());
        self.install(Arc::new(f));
        Ok(summary)
    }

    /// How long an attempt from `peer` waits before its answer (see [`throttle`]).
    pub fn throttle_delay(&self, peer: Option<IpAddr>, now: Instant) -> Duration {
        peer.map_or(Duration::ZERO, |ip| self.throttle().delay(ip, now))
    }

    /// Count a failed attempt from `peer`; true when another address was forgotten for room.
    pub fn failed(&self, peer: Option<IpAddr>, now: Instant) -> bool {
        peer.is_some_and(|ip| self.throttle().failed(ip, now))
    }

    fn throttle(&self) -> MutexGuard<'_, Throttle> {
        // The map stays consistent even if a holder panicked mid-way (each update is one
        // insert or remove), so a poisoned lock is still usable.
        match self.throttle.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::backend::Verdict;

    fn cheap_line(user: &str, pw: &str) -> String {
        // m=64 KiB, t=1: fast in debug builds.
        let salt = argon2::password_hash::SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let params = argon2::Params::new(64, 1, 1, None).unwrap();
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        use argon2::password_hash::PasswordHasher;
        format!("{user}:{}", a.hash_password(pw.as_bytes(), &salt).unwrap())
    }

    #[test]
    fn reload_swaps_the_file_and_drops_the_cache_and_keeps_it_on_error() {
        let dir = std::env::temp_dir().join(format!("ringmq-pwsvc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("passwd");
        std::fs::write(&path, cheap_line("alice", "one") + "\n").unwrap();
        let p = Passwords::load(Settings {
            allow_anonymous: false,
            file: Some(path.clone()),
            ..Settings::default()
        })
        .unwrap();
        let first = p.current().unwrap();
        assert_eq!(
            first.backend.check("alice", b"one", "c", None),
            Verdict::Allow
        );
        let tag = first.backend.cache_tag("alice").unwrap().to_vec();
        first.cache.insert("alice", b"one", &tag);

        std::fs::write(
            &path,
            cheap_line("alice", "two") + "\n" + &cheap_line("bob", "b"),
        )
        .unwrap();
        let summary = p.reload().unwrap();
        assert!(summary.contains("2 users"), "{summary}");
        let second = p.current().unwrap();
        assert!(second.cache.is_empty(), "reload drops the cache");
        assert_eq!(
            second.backend.check("alice", b"one", "c", None),
            Verdict::BadCredentials
        );
        assert_eq!(
            second.backend.check("alice", b"two", "c", None),
            Verdict::Allow
        );

        // A broken file is refused with its line; the previous one stays in force.
        std::fs::write(&path, "# ok\nbob:nonsense\n").unwrap();
        let err = p.reload().unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        let still = p.current().unwrap();
        assert!(Arc::ptr_eq(&still, &second));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_file_no_backend() {
        let p = Passwords::default();
        assert!(p.current().is_none());
        assert!(p.settings().allow_anonymous);
        assert_eq!(p.reload().unwrap(), "no password file configured");
        // Unknown peers are never throttled or remembered.
        assert!(!p.failed(None, Instant::now()));
        assert_eq!(p.throttle_delay(None, Instant::now()), Duration::ZERO);
    }
}

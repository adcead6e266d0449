//! The password file: CONNECT user names and argon2id password hashes, the back end behind
//! `password_file` (a [`PasswordAuth`]).
//!
//! Format: one user per line, `#` comments and blank lines ignored,
//! `user:$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>` — the hash is a PHC
//! string, as written by `ringmq passwd` (and by other argon2 tools). User names cannot
//! contain `:` or line breaks; each user appears once.
//!
//! Why argon2id in PHC form: argon2id is the memory-hard password hash RFC 9106 and OWASP
//! recommend (a GPU or ASIC guessing stolen hashes pays for memory, not just for compute),
//! and the PHC string keeps the parameters and salt with each hash, so costs can be raised
//! for new entries without invalidating old ones. The RustCrypto `argon2` crate is pure
//! Rust (no C toolchain), verifies in constant time and writes/reads that format.
//!
//! Limits, checked at load (a file that breaks one is refused with its line number, and on
//! reload the previous file stays in force): at most [`MAX_FILE_BYTES`]; only argon2id
//! version 19; memory at most [`MAX_M_KIB`] KiB, passes at most [`MAX_T`], lanes at most
//! [`MAX_P`] (one login must not be able to take the machine's memory).
//!
//! Timing: an unknown user is checked against a stand-in hash with the parameters of the
//! file's first entry, so it costs what a wrong password costs and user names cannot be
//! probed by timing; both answer [`Verdict::BadCredentials`].
//!
//! Owned: loaded on the main thread (start, reload), then shared read-only by every shard
//! and the blocking threads that run the hashes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use super::backend::{PasswordAuth, Verdict};
use super::userfile::{check_user, parse_lines};

/// Largest password file read, in bytes (about 100 000 users).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Largest argon2 memory cost accepted, in KiB (256 MiB).
pub const MAX_M_KIB: u32 = 256 * 1024;
/// Largest argon2 pass count accepted.
pub const MAX_T: u32 = 64;
/// Largest argon2 lane count accepted.
pub const MAX_P: u32 = 16;
/// Salt length for new hashes, in bytes.
const SALT_LEN: usize = 16;

/// Why a password file could not be loaded or a hash made.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The file could not be read.
    #[error("cannot read password file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("password file {path} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    /// A line is not a valid entry (1-based line number).
    #[error("password file {path}, line {line}: {why}")]
    Line {
        path: PathBuf,
        line: usize,
        why: String,
    },
    /// A user name or password that cannot be stored, or hashing failed.
    #[error("cannot hash password: {0}")]
    Hash(String),
}

/// The users of a password file and their argon2id hashes. Shared read-only.
pub struct PasswordFile {
    path: PathBuf,
    /// User → its PHC string (validated at load).
    users: HashMap<String, String>,
    /// Checked for unknown users so they cost what a known user costs.
    stand_in: String,
}

impl std::fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the hashes.
        f.debug_struct("PasswordFile")
            .field("path", &self.path)
            .field("users", &self.users.len())
            .finish()
    }
}

impl PasswordFile {
    /// Read and validate a password file. Runs one argon2 hash (the stand-in): call it off
    /// the shard threads.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswordError> {
        let read = |source| PasswordError::Read {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > MAX_FILE_BYTES {
            return Err(PasswordError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        PasswordFile::parse(&text, path)
    }

    /// Parse password-file text; `path` names the source in errors and logs.
    pub fn parse(text: &str, path: &Path) -> Result<PasswordFile, PasswordError> {
        // The stand-in takes the costs of the first entry (lines are decoded in order).
        let mut first: Option<Params> = None;
        let users = parse_lines(text, "$argon2id$v=19$m=..,t=..,p=..$salt$hash", |phc| {
            let params = check_phc(phc)?;
            first.get_or_insert(params);
            Ok(phc.to_string())
        })
        .map_err(|(line, why)| PasswordError::Line {
            path: path.to_path_buf(),
            line,
            why,
        })?;
        let params = first.unwrap_or_default();
        let stand_in = hash_with(&random_password()?, params)?;
        Ok(PasswordFile {
            path: path.to_path_buf(),
            users,
            stand_in,
        })
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `password` is `user`'s. Runs argon2 (tens of ms): never on a shard thread.
    /// Unknown users cost the same as known ones (see the module docs).
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let (phc, known) = match self.users.get(user) {
            Some(h) => (h.as_str(), true),
            None => (self.stand_in.as_str(), false),
        };
        // The PHC verification recomputes the hash with the stored parameters and compares
        // in constant time. Parsing cannot fail for a validated entry; a failure is "no".
        let ok = PasswordHash::new(phc)
            .is_ok_and(|h| Argon2::default().verify_password(password, &h).is_ok());
        ok && known
    }
}

impl PasswordAuth for PasswordFile {
    fn check(&self, user: &str, password: &[u8], _: &str, _: Option<IpAddr>) -> Verdict {
        if self.verify(user, password) {
            Verdict::Allow
        } else {
            Verdict::BadCredentials
        }
    }

    fn cache_tag(&self, user: &str) -> Option<&[u8]> {
        // The PHC string holds the salt and hash: a changed password changes the tag.
        self.users.get(user).map(|h| h.as_bytes())
    }

    fn describe(&self) -> String {
        format!(
            "password file {} ({} users)",
            self.path.display(),
            self.users.len()
        )
    }
}

/// Validate one stored hash: a PHC string for argon2id v19 within the cost limits.
fn check_phc(phc: &str) -> Result<Params, String> {
    let h = PasswordHash::new(phc).map_err(|e| format!("not a PHC hash string: {e}"))?;
    if h.algorithm.as_str() != "argon2id" {
        return Err(format!("algorithm {} is not argon2id", h.algorithm));
    }
    if h.version != Some(0x13) {
        return Err("argon2 version must be v=19".into());
    }
    if h.salt.is_none() || h.hash.is_none() {
        return Err("salt or hash missing".into());
    }
    let p = Params::try_from(&h).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    if p.m_cost() > MAX_M_KIB || p.t_cost() > MAX_T || p.p_cost() > MAX_P {
        return Err(format!(
            "argon2 cost m={},t={},p={} above the limits m={MAX_M_KIB},t={MAX_T},p={MAX_P}",
            p.m_cost(),
            p.t_cost(),
            p.p_cost()
        ));
    }
    Ok(p)
}

fn random_password() -> Result<[u8; 32], PasswordError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| PasswordError::Hash(format!("OS random source: {e}")))?;
    Ok(b)
}

/// A password-file line for `user` with a fresh salt and the default argon2id costs
/// (RFC 9106's second recommendation as OWASP sizes it: m=19456 KiB, t=2, p=1).
pub fn hash_line(user: &str, password: &[u8]) -> Result<String, PasswordError> {
    check_user(user).map_err(PasswordError::Hash)?;
    if password.is_empty() {
        return Err(PasswordError::Hash("empty password".into()));
    }
    Ok(format!(
        "{user}:{}",
        hash_with(password, Params::default())?
    ))
}

/// An argon2id PHC string for `password` with `params` and a random salt.
fn hash_with(password: &[u8], params: Params) -> Result<String, PasswordError> {
    let bad = |e: argon2::password_hash::Error| PasswordError::Hash(e.to_string());
    let salt_bytes = {
        let mut s = [0u8; SALT_LEN];
        getrandom::fill(&mut s).map_err(|e| PasswordError::Hash(e.to_string()))?;
        s
    };
    let salt = SaltString::encode_b64(&salt_bytes).map_err(bad)?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    Ok(argon
        .hash_password(password, &salt)
        .map_err(bad)?
        .to_string())
}

#[cfg(test)]
#[path = "password_tests.rs"]
mod tests;

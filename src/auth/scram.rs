//! SCRAM-SHA-256 (RFC 5802 with RFC 7677's hash) as an MQTT 5.0 enhanced-authentication
//! method, server side, plus the credentials file it reads.
//!
//! The exchange: CONNECT carries `client-first-message`, the server answers
//! `server-first-message` in AUTH 0x18, the client sends `client-final-message` in AUTH 0x18,
//! and the CONNACK (or AUTH 0x00 on re-authentication) carries `server-final-message`
//! (`v=<server signature>`), which lets the client check that the server knew its key too.
//!
//! Choices and limits:
//! - No channel binding: the GS2 header must be exactly `n,,` (no authorization identity).
//!   `y` and `p=` headers are refused (0x87), as is an authzid.
//! - No SASLprep: user names and passwords are compared as the UTF-8 bytes given. Clients
//!   that normalise non-ASCII passwords differently will fail; ASCII is unaffected.
//! - Strict parsing: exactly the attributes RFC 5802 requires, in order; no extensions (an
//!   `m=` mandatory extension is therefore refused, as the RFC asks). Client messages longer
//!   than [`MAX_MESSAGE`] bytes are refused before parsing.
//! - Unknown users get a salt and iteration count derived from a per-process secret, and fail
//!   only at the proof check, so the answers do not reveal which user names exist.
//! - The server stores only StoredKey and ServerKey (RFC 5803 form), never the password, and
//!   compares proofs in constant time (`subtle`). Nonces come from the OS (`getrandom`).
//!
//! Credentials file: one user per line, `#` comments and blank lines ignored:
//! `user:SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`.
//! User names cannot contain `:` or line breaks. [`derive_line`] writes such a line.
//!
//! Owned: [`ScramSha256`] is built once at start-up and shared read-only by every shard;
//! a [`ScramExchange`] belongs to one connection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::userfile::{check_user, parse_lines};
use super::{Authenticator, Exchange, Failure, Step};

/// The MQTT Authentication Method name.
pub const METHOD: &str = "SCRAM-SHA-256";
/// Longest client message accepted, in bytes (a client-first message is ~60 bytes plus the
/// user name; a client-final message ~150).
pub const MAX_MESSAGE: usize = 2048;
/// Random bytes in the server's half of the nonce (base64: 24 characters).
const NONCE_BYTES: usize = 18;
/// Salt length for new credentials and for the stand-ins of unknown users.
const SALT_LEN: usize = 16;
/// RFC 7677's recommended minimum; the stand-in iteration count for unknown users.
pub const DEFAULT_ITERATIONS: u32 = 4096;
const SCHEME: &str = "SCRAM-SHA-256$";
/// `c=` of a client-final message without channel binding: base64("n,,").
const CBIND_NONE: &str = "biws";

type HmacSha256 = Hmac<Sha256>;
type Key = [u8; 32];

fn hmac(key: &[u8], parts: &[&[u8]]) -> Key {
    // HMAC accepts keys of any length; this never fails.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC key of any length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Why the credentials could not be loaded or a line derived.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The file could not be read.
    #[error("cannot read SCRAM credentials file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line is not a valid credential (1-based line number).
    #[error("SCRAM credentials file {path}, line {line}: {why}")]
    Line {
        path: PathBuf,
        line: usize,
        why: String,
    },
    /// A user name or iteration count that cannot be stored.
    #[error("invalid SCRAM credential: {0}")]
    Invalid(String),
    /// The OS random source failed.
    #[error("cannot read the OS random source: {0}")]
    Random(String),
}

fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| e.to_string())?;
    Ok(b)
}

/// One user's stored SCRAM keys (RFC 5802 §3). The password is not kept.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Key,
    pub server_key: Key,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// SaltedPassword = Hi(password, salt, i); StoredKey = H(HMAC(SaltedPassword,
    /// "Client Key")); ServerKey = HMAC(SaltedPassword, "Server Key").
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> Credential {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
        let client_key = hmac(&salted, &[b"Client Key"]);
        Credential {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }

    /// The stored form after `user:`.
    fn encode(&self) -> String {
        format!(
            "{SCHEME}{}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }

    /// Parse the stored form after `user:`.
    fn decode(s: &str) -> Result<Credential, String> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("expected the scheme {SCHEME:?} after the user name"))?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or("expected <iterations>:<salt>$<StoredKey>:<ServerKey>")?;
        let (iter, salt) = params
            .split_once(':')
            .ok_or("expected <iterations>:<salt> before '$'")?;
        let (stored, server) = keys
            .split_once(':')
            .ok_or("expected <StoredKey>:<ServerKey> after '$'")?;
        let iterations: u32 = iter
            .parse()
            .ok()
            .filter(|&i| i > 0)
            .ok_or_else(|| format!("iteration count {iter:?} is not a positive integer"))?;
        let salt = B64
            .decode(salt)
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or("salt is not non-empty base64")?;
        let key = |what: &str, v: &str| -> Result<Key, String> {
            B64.decode(v)
                .ok()
                .and_then(|k| Key::try_from(k.as_slice()).ok())
                .ok_or_else(|| format!("{what} is not 32 bytes of base64"))
        };
        Ok(Credential {
            iterations,
            salt,
            stored_key: key("StoredKey", stored)?,
            server_key: key("ServerKey", server)?,
        })
    }
}

/// A credentials-file line for `user` with a fresh random salt (for tests and `ringmq passwd`).
pub fn derive_line(user: &str, password: &str, iterations: u32) -> Result<String, CredentialError> {
    let salt = random::<SALT_LEN>().map_err(CredentialError::Random)?;
    derive_line_with_salt(user, password, iterations, &salt)
}

/// [`derive_line`] with a given salt (deterministic; for tests and known vectors).
pub fn derive_line_with_salt(
    user: &str,
    password: &str,
    iterations: u32,
    salt: &[u8],
) -> Result<String, CredentialError> {
    check_user(user).map_err(CredentialError::Invalid)?;
    if iterations == 0 || salt.is_empty() {
        return Err(CredentialError::Invalid(
            "iterations and salt must be non-zero".into(),
        ));
    }
    Ok(format!(
        "{user}:{}",
        Credential::derive(password, salt, iterations).encode()
    ))
}

/// Parse credentials-file text; `path` only names the source in errors.
pub fn parse_credentials(
    text: &str,
    path: &Path,
) -> Result<HashMap<String, Credential>, CredentialError> {
    parse_lines(text, &format!("{SCHEME}..."), Credential::decode).map_err(|(line, why)| {
        CredentialError::Line {
            path: path.to_path_buf(),
            line,
            why,
        }
    })
}

/// The SCRAM-SHA-256 method: the users' stored keys. Built once; shared by every shard.
pub struct ScramSha256 {
    users: Arc<Users>,
}

struct Users {
    creds: HashMap<String, Credential>,
    /// Per-process secret for the stand-in credentials of unknown users.
    secret: Key,
}

impl ScramSha256 {
    /// Load a credentials file.
    pub fn load(path: &Path) -> Result<ScramSha256, CredentialError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let creds = parse_credentials(&text, path)?;
        if creds.is_empty() {
            tracing::warn!(path = %path.display(), "SCRAM credentials file has no users");
        }
        ScramSha256::new(creds)
    }

    pub fn new(creds: HashMap<String, Credential>) -> Result<ScramSha256, CredentialError> {
        let secret = random::<32>().map_err(CredentialError::Random)?;
        Ok(ScramSha256 {
            users: Arc::new(Users { creds, secret }),
        })
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.creds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.creds.is_empty()
    }

    /// An exchange whose server nonce half is `nonce` instead of random (known vectors).
    #[cfg(test)]
    fn start_with_nonce(&self, nonce: &str) -> ScramExchange {
        ScramExchange {
            users: self.users.clone(),
            fixed_nonce: Some(nonce.into()),
            state: State::First,
        }
    }
}

impl Authenticator for ScramSha256 {
    fn method(&self) -> &str {
        METHOD
    }

    fn start(&self) -> Box<dyn Exchange> {
        Box::new(ScramExchange {
            users: self.users.clone(),
            fixed_nonce: None,
            state: State::First,
        })
    }
}

/// One SCRAM exchange. Owned by one connection.
pub struct ScramExchange {
    users: Arc<Users>,
    fixed_nonce: Option<Box<str>>,
    state: State,
}

enum State {
    /// Waiting for client-first-message.
    First,
    /// Sent server-first-message; waiting for client-final-message.
    Final(Box<Pending>),
    /// Finished (success or failure).
    Done,
}

struct Pending {
    user: String,
    /// False for an unknown user: `cred` is a stand-in and the proof check fails.
    known: bool,
    cred: Credential,
    client_first_bare: String,
    server_first: String,
    /// Client nonce + server nonce.
    nonce: String,
}

impl Exchange for ScramExchange {
    fn step(&mut self, data: &[u8]) -> Step {
        let res = match std::mem::replace(&mut self.state, State::Done) {
            State::First => self.first(data),
            State::Final(p) => final_step(&p, data),
            State::Done => Err(Failure::Unspecified),
        };
        match res {
            Ok(step) => step,
            Err(f) => Step::Failure(f),
        }
    }
}

/// A client message as text: bounded, UTF-8, non-empty.
fn text(data: &[u8]) -> Result<&str, Failure> {
    if data.is_empty() || data.len() > MAX_MESSAGE {
        return Err(Failure::Unspecified);
    }
    std::str::from_utf8(data).map_err(|_| Failure::Unspecified)
}

/// The next `name=value` attribute's value.
fn attr<'a>(parts: &mut std::str::Split<'a, char>, name: char) -> Result<&'a str, Failure> {
    parts
        .next()
        .and_then(|p| p.strip_prefix(name))
        .and_then(|p| p.strip_prefix('='))
        .ok_or(Failure::Unspecified)
}

/// RFC 5802 `saslname`: `=2C` is ',', `=3D` is '='; any other '=' is invalid.
fn decode_saslname(s: &str) -> Result<String, Failure> {
    if s.is_empty() {
        return Err(Failure::Unspecified);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i + 1..i + 3).ok_or(Failure::Unspecified)?;
        out.push(match esc {
            "2C" => ',',
            "3D" => '=',
            _ => return Err(Failure::Unspecified),
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// RFC 5802 `printable` (0x21..=0x7E except ','), non-empty.
fn valid_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

impl ScramExchange {
    fn first(&mut self, data: &[u8]) -> Result<Step, Failure> {
        let msg = text(data)?;
        let Some(bare) = msg.strip_prefix("n,,") else {
            // "y,," / "p=..." (channel binding) or "n,a=..." (authzid): not supported.
            let supported_shape =
                msg.starts_with('y') || msg.starts_with("p=") || msg.starts_with("n,a=");
            return Err(if supported_shape {
                Failure::NotAuthorized
            } else {
                Failure::Unspecified
            });
        };
        let mut parts = bare.split(',');
        let user = decode_saslname(attr(&mut parts, 'n')?)?;
        let client_nonce = attr(&mut parts, 'r')?;
        if !valid_nonce(client_nonce) || parts.next().is_some() {
            return Err(Failure::Unspecified);
        }
        let (known, cred) = match self.users.creds.get(&user) {
            Some(c) => (true, c.clone()),
            None => (false, self.stand_in(&user)),
        };
        let server_nonce = match &self.fixed_nonce {
            Some(n) => n.to_string(),
            None => match random::<NONCE_BYTES>() {
                Ok(b) => B64.encode(b),
                Err(e) => {
                    tracing::error!("SCRAM: cannot read the OS random source: {e}");
                    return Err(Failure::Unspecified);
                }
            },
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&cred.salt),
            cred.iterations
        );
        let reply = Bytes::from(server_first.clone().into_bytes());
        self.state = State::Final(Box::new(Pending {
            user,
            known,
            cred,
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
        }));
        Ok(Step::Continue(reply))
    }

    /// Salt and keys for a user that does not exist: stable per name within this process,
    /// so repeated probes see the same salt, as for a real user.
    fn stand_in(&self, user: &str) -> Credential {
        let s = &self.users.secret;
        let salt = hmac(s, &[b"salt", user.as_bytes()]);
        Credential {
            iterations: DEFAULT_ITERATIONS,
            salt: salt[..SALT_LEN].to_vec(),
            stored_key: hmac(s, &[b"stored", user.as_bytes()]),
            server_key: hmac(s, &[b"server", user.as_bytes()]),
        }
    }
}

fn final_step(p: &Pending, data: &[u8]) -> Result<Step, Failure> {
    let msg = text(data)?;
    let mut parts = msg.split(',');
    let cbind = attr(&mut parts, 'c')?;
    let nonce = attr(&mut parts, 'r')?;
    let proof = attr(&mut parts, 'p')?;
    if parts.next().is_some() || nonce != p.nonce {
        return Err(Failure::Unspecified);
    }
    if cbind != CBIND_NONE {
        // The channel-binding data must repeat the GS2 header "n,," [RFC 5802 §5.1].
        return Err(Failure::NotAuthorized);
    }
    let proof: Key = B64
        .decode(proof)
        .ok()
        .and_then(|b| Key::try_from(b.as_slice()).ok())
        .ok_or(Failure::Unspecified)?;
    let without_proof = &msg[..msg.len() - proof_len(msg)];
    let auth_message = [
        p.client_first_bare.as_bytes(),
        b",",
        p.server_first.as_bytes(),
        b",",
        without_proof.as_bytes(),
    ];
    let signature = hmac(&p.cred.stored_key, &auth_message);
    let mut client_key = proof;
    for (k, s) in client_key.iter_mut().zip(signature) {
        *k ^= s;
    }
    let stored: Key = Sha256::digest(client_key).into();
    if !bool::from(stored.ct_eq(&p.cred.stored_key)) || !p.known {
        return Err(Failure::NotAuthorized);
    }
    let verifier = hmac(&p.cred.server_key, &auth_message);
    Ok(Step::Success {
        data: Some(Bytes::from(format!("v={}", B64.encode(verifier)))),
        user: p.user.clone(),
    })
}

/// Length of the trailing ",p=..." of a parsed client-final message.
fn proof_len(msg: &str) -> usize {
    msg.rfind(",p=").map_or(0, |i| msg.len() - i)
}

#[cfg(test)]
#[path = "scram_tests.rs"]
mod tests;

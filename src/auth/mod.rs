//! Enhanced authentication (MQTT 5.0 §4.12): the trait an authentication method implements,
//! the per-connection exchange it hands out, and the registry of configured methods.
//!
//! Sans-IO: an [`Exchange`] takes the client's Authentication Data and answers with a
//! [`Step`]; `conn::auth_flow` turns steps into AUTH / CONNACK / DISCONNECT packets.
//!
//! Ownership: the [`Registry`] and its [`Authenticator`]s are built once at start-up and
//! shared read-only by every shard (`Arc<Registry>`, hence `Send + Sync`). An [`Exchange`]
//! belongs to one connection on one shard for the few round trips of one (re-)authentication,
//! so it needs neither.
//!
//! Methods: [`scram`] (SCRAM-SHA-256, RFC 5802 + RFC 7677), enabled by `auth_scram_file`.
//!
//! CONNECT user name/password authentication is separate from the methods: [`backend`] (the
//! [`PasswordAuth`] trait a back end implements), [`password`] (the argon2id password file),
//! [`verify_cache`] (recent successful checks), [`throttle`] (per-address failure delays),
//! [`service`] (all of it as the broker runs it, with reload) and [`passwd_cmd`] (the
//! `ringmq passwd` subcommand). [`userfile`] is the `user:secret` line format both the SCRAM
//! and the password files use.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

pub mod backend;
pub mod passwd_cmd;
pub mod password;
pub mod scram;
pub mod service;
pub mod throttle;
pub mod userfile;
pub mod verify_cache;

pub use backend::{PasswordAuth, Verdict};
pub use service::Passwords;

/// An enhanced-authentication method, e.g. SCRAM-SHA-256.
///
/// Built once at start-up; shared read-only by every shard.
pub trait Authenticator: Send + Sync {
    /// The Authentication Method name clients put in CONNECT / AUTH (case-sensitive).
    fn method(&self) -> &str;
    /// A fresh exchange for one (re-)authentication of one connection.
    fn start(&self) -> Box<dyn Exchange>;
}

/// One (re-)authentication in progress. Owned by one connection on its shard.
pub trait Exchange {
    /// Feed the client's Authentication Data (empty when the packet carried none). Must never
    /// panic: malformed data is a [`Step::Failure`]. After `Success` or `Failure` the exchange
    /// is finished and further calls fail.
    fn step(&mut self, client_data: &[u8]) -> Step;
}

/// What the server answers to one client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this data in an AUTH with reason 0x18 (Continue authentication) and wait for the
    /// client's next AUTH.
    Continue(Bytes),
    /// Authenticated. `data` goes in the CONNACK (or the AUTH 0x00 of a re-authentication).
    Success {
        /// Final server data (e.g. the SCRAM server signature), if the method has any.
        data: Option<Bytes>,
        /// Who the client proved to be.
        user: String,
    },
    /// Refused: answer with this reason code and close.
    Failure(Failure),
}

/// Why an authentication failed; each maps to one MQTT 5.0 reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 0x80: the client's data is malformed or arrived out of turn.
    Unspecified,
    /// 0x87: the credentials are wrong or the user is unknown.
    NotAuthorized,
    /// 0x8C: the method is not supported ([MQTT-4.12.0-1]).
    BadMethod,
}

impl Failure {
    /// The CONNACK / DISCONNECT reason code.
    pub fn reason_code(self) -> u8 {
        match self {
            Failure::Unspecified => 0x80,
            Failure::NotAuthorized => 0x87,
            Failure::BadMethod => 0x8C,
        }
    }
}

/// Method name → authenticator. Built once at start-up; shared read-only by every shard.
/// Empty when no method is configured (every Authentication Method is then answered 0x8C).
#[derive(Default)]
pub struct Registry {
    // A handful of methods at most: a linear scan beats hashing.
    methods: Vec<Arc<dyn Authenticator>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.methods.iter().map(|m| m.method().to_string()))
            .finish()
    }
}

impl Registry {
    /// The registry the configuration asks for: SCRAM-SHA-256 when `scram_file` is set.
    pub fn from_config(scram_file: Option<&Path>) -> Result<Registry, scram::CredentialError> {
        let mut r = Registry::default();
        if let Some(path) = scram_file {
            r.add(Arc::new(scram::ScramSha256::load(path)?));
        }
        Ok(r)
    }

    /// Add (or replace) a method.
    pub fn add(&mut self, a: Arc<dyn Authenticator>) {
        self.methods.retain(|m| m.method() != a.method());
        self.methods.push(a);
    }

    pub fn is_empty(&self) -> bool {
        self.methods.is_empty()
    }

    /// The authenticator for `method`.
    pub fn get(&self, method: &str) -> Option<&dyn Authenticator> {
        self.methods
            .iter()
            .find(|m| m.method() == method)
            .map(|m| m.as_ref())
    }

    /// Start an exchange for `method`; an unknown method is [`Failure::BadMethod`].
    pub fn start(&self, method: &str) -> Result<Box<dyn Exchange>, Failure> {
        self.get(method)
            .map(|a| a.start())
            .ok_or(Failure::BadMethod)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    struct EchoExchange;
    impl Authenticator for Echo {
        fn method(&self) -> &str {
            "ECHO"
        }
        fn start(&self) -> Box<dyn Exchange> {
            Box::new(EchoExchange)
        }
    }
    impl Exchange for EchoExchange {
        fn step(&mut self, d: &[u8]) -> Step {
            Step::Continue(Bytes::copy_from_slice(d))
        }
    }

    #[test]
    fn unknown_method_is_bad_authentication_method() {
        let mut r = Registry::default();
        assert!(r.is_empty());
        assert_eq!(r.start("ECHO").err(), Some(Failure::BadMethod));
        r.add(Arc::new(Echo));
        assert!(r.start("ECHO").is_ok());
        // [MQTT-4.12.0-1] names are compared exactly.
        let err = r.start("echo").err();
        assert_eq!(err, Some(Failure::BadMethod));
        assert_eq!(err.map(Failure::reason_code), Some(0x8C));
        assert_eq!(Failure::NotAuthorized.reason_code(), 0x87);
        assert_eq!(Failure::Unspecified.reason_code(), 0x80);
    }

    #[test]
    fn registry_is_shareable_across_shard_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Registry>();
    }
}

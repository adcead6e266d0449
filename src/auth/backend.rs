//! The seam for CONNECT user name/password back ends: [`PasswordAuth`] answers one login
//! attempt with a [`Verdict`]. The password file ([`super::password::PasswordFile`],
//! argon2id) is the back end the broker ships.
//!
//! Plugging in another back end (LDAP, an HTTP service, a database...): implement
//! [`PasswordAuth`] and hand it to [`super::service::Passwords::install`] at start-up.
//! Contract:
//! - `check` is called on a blocking-pool thread, never on a shard thread, so it may block
//!   (hash, network round trip) — but it holds up other logins of the same shard while it
//!   runs (one check at a time per shard), so a networked back end must bound its own time.
//! - It must not panic on any input: user name, password and client id come from the client.
//! - It must not reveal through its answer or its timing whether a user exists: an unknown
//!   user is [`Verdict::BadCredentials`], after as much work as a wrong password.
//! - [`PasswordAuth::cache_tag`] opts into the broker's cache of successful checks. Return a
//!   tag only if an `Allow` depends on nothing but the user name and password (not on the
//!   client id or address), and change the tag whenever the stored secret changes.
//!
//! Owned: built once (and again on reload), shared read-only by every shard and the
//! blocking threads, hence `Send + Sync`.

use std::net::IpAddr;

/// A CONNECT user name/password back end. See the module docs for the contract.
pub trait PasswordAuth: Send + Sync {
    /// Decide one login attempt. Runs off the shard threads; may block.
    fn check(&self, user: &str, password: &[u8], client_id: &str, peer: Option<IpAddr>) -> Verdict;

    /// An identity of what `user`'s successful checks depend on (e.g. the stored hash), or
    /// `None` to never cache them (the default). Cheap: it is called on the shard.
    fn cache_tag(&self, _user: &str) -> Option<&[u8]> {
        None
    }

    /// One line for the log, e.g. "password file /etc/ringmq/passwd (12 users)".
    fn describe(&self) -> String;
}

/// The answer to one login attempt; each refusal maps to one CONNACK code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The credentials are good.
    Allow,
    /// Wrong password or unknown user: 3.1.1 0x04, 5.0 0x86.
    BadCredentials,
    /// The credentials may be right but this client may not connect: 3.1.1 0x05, 5.0 0x87.
    NotAuthorized,
    /// The back end could not decide (unreachable, overloaded): 3.1.1 0x03, 5.0 0x88.
    Unavailable,
}

impl Verdict {
    /// The CONNACK return code (3.1.x) or reason code (5.0) refusing the connection; `None`
    /// for [`Verdict::Allow`].
    pub fn connack_code(self, v5: bool) -> Option<u8> {
        match (self, v5) {
            (Verdict::Allow, _) => None,
            (Verdict::BadCredentials, false) => Some(0x04),
            (Verdict::BadCredentials, true) => Some(0x86),
            (Verdict::NotAuthorized, false) => Some(0x05),
            (Verdict::NotAuthorized, true) => Some(0x87),
            (Verdict::Unavailable, false) => Some(0x03),
            (Verdict::Unavailable, true) => Some(0x88),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_map_to_connack_codes() {
        // 3.1.1 §3.2.2.3 return codes; 5.0 §3.2.2.2 reason codes.
        assert_eq!(Verdict::Allow.connack_code(false), None);
        assert_eq!(Verdict::BadCredentials.connack_code(false), Some(0x04));
        assert_eq!(Verdict::BadCredentials.connack_code(true), Some(0x86));
        assert_eq!(Verdict::NotAuthorized.connack_code(false), Some(0x05));
        assert_eq!(Verdict::NotAuthorized.connack_code(true), Some(0x87));
        assert_eq!(Verdict::Unavailable.connack_code(false), Some(0x03));
        assert_eq!(Verdict::Unavailable.connack_code(true), Some(0x88));
    }
}

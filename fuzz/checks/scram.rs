//! The properties of the SCRAM-SHA-256 server exchange (`ringmq::auth::scram`, the parser of
//! the client-first and client-final messages a client sends in CONNECT / AUTH) on any input.
//! Shared, through a `#[path]` include, by the cargo-fuzz target `scram` and by
//! `tests/fuzz_corpus.rs`. The client side is the RFC-written test client
//! `tests/common/scram_client.rs`.
//!
//! Input layout: byte 0 picks the mode. Even: the rest is up to three raw client messages
//! separated by 0xFF, fed to one exchange. Odd: a real exchange for the user named by bit 1
//! (`user`, known, or `us=er,`, unknown) with a client nonce made of bytes 1..9 (mapped to
//! printable characters), whose two client messages are then damaged by the rest of the
//! input, read as (position, xor) byte pairs over the two messages back to back.
//!
//! Properties: no panic; the server's first answer extends the client's nonce; after a
//! failure every further step fails; success only for an undamaged exchange of the known
//! user, whose server signature the client accepts, and always for that exchange.

use std::collections::HashMap;
use std::sync::OnceLock;

use ringmq::auth::scram::{Credential, ScramSha256};
use ringmq::auth::{Authenticator, Exchange, Step};

#[path = "../../tests/common/scram_client.rs"]
mod scram_client;

use scram_client::ScramClient;

const USER: &str = "user";
const PASSWORD: &str = "pencil";

/// One known user; a single PBKDF2 iteration keeps an exchange cheap for the fuzzer.
fn server() -> &'static ScramSha256 {
    static SERVER: OnceLock<ScramSha256> = OnceLock::new();
    SERVER.get_or_init(|| {
        let cred = Credential::derive(PASSWORD, b"fuzz-salt", 1);
        ScramSha256::new(HashMap::from([(USER.to_string(), cred)])).expect("OS random source")
    })
}

/// Check every property on `data` (see the module docs for its layout).
pub fn check(data: &[u8]) -> Result<(), String> {
    let Some((&mode, rest)) = data.split_first() else {
        return Ok(());
    };
    if mode % 2 == 0 {
        raw(rest)
    } else {
        guided(mode, rest)
    }
}

fn raw(rest: &[u8]) -> Result<(), String> {
    let mut ex = server().start();
    let mut failed = false;
    for (i, msg) in rest.split(|&b| b == 0xFF).take(3).enumerate() {
        match ex.step(msg) {
            Step::Failure(_) => failed = true,
            step if failed => {
                return Err(format!(
                    "[failure-final] step {i} after a failure: {step:?}"
                ))
            }
            Step::Success { .. } => {
                return Err(format!(
                    "[no-proof-no-entry] raw message {i} {msg:?} authenticated"
                ))
            }
            Step::Continue(reply) if i == 0 => nonce_extended(msg, &reply)?,
            Step::Continue(reply) => {
                return Err(format!("[two-rounds] step {i} continues with {reply:?}"))
            }
        }
    }
    Ok(())
}

/// The reply to a client-first starts with `r=` and the client's nonce.
fn nonce_extended(first: &[u8], reply: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(first);
    let nonce = text.rsplit_once(",r=").map_or("", |(_, n)| n);
    let expected = format!("r={nonce}");
    if nonce.is_empty() || !reply.starts_with(expected.as_bytes()) || reply.len() <= expected.len()
    {
        return Err(format!("[nonce-extended] {text:?} answered with {reply:?}"));
    }
    Ok(())
}

fn guided(mode: u8, rest: &[u8]) -> Result<(), String> {
    let user = if mode & 2 == 0 { USER } else { "us=er," };
    let (nonce_bytes, damage) = rest.split_at(rest.len().min(8));
    let nonce: String = nonce_bytes
        .iter()
        .map(|&b| char::from(0x2D + b % 0x50)) // '-'..='|', printable and never ','
        .chain(std::iter::once('N'))
        .collect();
    let mut client = ScramClient::new(user, PASSWORD, &nonce);
    let first = client.client_first().into_bytes();
    let mut ex = server().start();

    let mut sent_first = first.clone();
    let mut damaged = apply(&mut sent_first, damage, 0, first.len());
    let reply = match ex.step(&sent_first) {
        Step::Continue(r) => r,
        Step::Failure(_) if damaged => return finished(ex.as_mut()),
        other => {
            return Err(format!(
                "[first-answered] {sent_first:?} answered with {other:?}"
            ))
        }
    };
    if !damaged {
        nonce_extended(&first, &reply)?;
    }
    let server_first = String::from_utf8_lossy(&reply).into_owned();
    let Ok(fin) = client.client_final(&server_first) else {
        // Only a damaged client-first can make the server answer something the client rejects.
        return if damaged {
            Ok(())
        } else {
            Err(format!(
                "[server-first-valid] client rejects {server_first:?}"
            ))
        };
    };
    let mut sent_final = fin.into_bytes();
    let end = first.len() + sent_final.len();
    damaged |= apply(&mut sent_final, damage, first.len(), end);
    match ex.step(&sent_final) {
        Step::Success { data, user: who } => {
            if damaged || user != USER || who != USER {
                return Err(format!(
                    "[no-proof-no-entry] {user:?} damaged={damaged} authenticated as {who:?}"
                ));
            }
            let signature = data.map(|d| String::from_utf8_lossy(&d).into_owned());
            client
                .verify_server_final(signature.as_deref().unwrap_or_default())
                .map_err(|e| format!("[server-signature] {e}"))?;
            finished(ex.as_mut())
        }
        Step::Failure(_) if damaged || user != USER => finished(ex.as_mut()),
        other => Err(format!("[honest-client-accepted] {user:?} got {other:?}")),
    }
}

/// Applies the (position, xor) pairs whose position falls in `from..to` (offsets in the two
/// messages back to back) to `msg`; whether it changed.
fn apply(msg: &mut [u8], damage: &[u8], from: usize, to: usize) -> bool {
    let before = msg.to_vec();
    for pair in damage.chunks_exact(2) {
        let pos = usize::from(pair[0]);
        if (from..to).contains(&pos) {
            msg[pos - from] ^= pair[1];
        }
    }
    *msg != before[..]
}

/// A finished exchange answers every further message with a failure.
fn finished(ex: &mut dyn Exchange) -> Result<(), String> {
    match ex.step(b"n,,n=user,r=again") {
        Step::Failure(_) => Ok(()),
        other => Err(format!(
            "[failure-final] a finished exchange answered {other:?}"
        )),
    }
}

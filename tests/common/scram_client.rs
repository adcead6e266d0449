//! A minimal SCRAM-SHA-256 client (RFC 5802 §3, §5; RFC 7677) for tests. Written from the
//! RFCs, not from the broker's server code, so each checks the other. Used by the broker's
//! unit tests (`src/auth/scram_tests.rs` includes this file by path) and by the integration
//! tests (`tests/common/auth.rs`). Only crates, no test harness: keep it that way.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

fn mac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// The client side of one exchange.
pub struct ScramClient {
    password: String,
    client_nonce: String,
    client_first_bare: String,
    /// Set by [`ScramClient::client_final`]: (AuthMessage, ServerKey).
    expect: Option<(String, [u8; 32])>,
}

impl ScramClient {
    /// `client_nonce` must be printable ASCII without ','.
    pub fn new(user: &str, password: &str, client_nonce: &str) -> ScramClient {
        let name = user.replace('=', "=3D").replace(',', "=2C");
        ScramClient {
            password: password.to_string(),
            client_nonce: client_nonce.to_string(),
            client_first_bare: format!("n={name},r={client_nonce}"),
            expect: None,
        }
    }

    /// client-first-message (no channel binding, no authzid).
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// client-final-message for the server's first message.
    pub fn client_final(&mut self, server_first: &str) -> Result<String, String> {
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in server_first.split(',') {
            match part.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v.to_string()),
                Some(("s=", v)) => salt = Some(B64.decode(v).map_err(|e| e.to_string())?),
                Some(("i=", v)) => iterations = Some(v.parse::<u32>().map_err(|e| e.to_string())?),
                _ => return Err(format!("unexpected attribute {part:?}")),
            }
        }
        let (nonce, salt, iterations) = match (nonce, salt, iterations) {
            (Some(n), Some(s), Some(i)) => (n, s, i),
            _ => return Err(format!("incomplete server-first {server_first:?}")),
        };
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err("server nonce does not extend the client nonce".into());
        }
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(self.password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = mac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c={},r={nonce}", B64.encode("n,,"));
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = mac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        self.expect = Some((auth_message, mac(&salted, b"Server Key")));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Check the server-final-message (`v=<ServerSignature>`).
    pub fn verify_server_final(&self, server_final: &str) -> Result<(), String> {
        let (auth_message, server_key) = self.expect.as_ref().ok_or("no client-final sent")?;
        let want = format!("v={}", B64.encode(mac(server_key, auth_message.as_bytes())));
        if server_final == want {
            Ok(())
        } else {
            Err(format!(
                "server signature {server_final:?}, expected {want:?}"
            ))
        }
    }
}

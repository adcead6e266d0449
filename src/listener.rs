//! Listeners: what each one is (address, plain or TLS, its own limits) and the admission
//! checks every accepted connection passes before its handshake — global and per-listener
//! connection counts, a per-listener accept rate, a per-source-address rate and the allowed /
//! denied networks. On a `proxy_protocol` listener the source address is the client's real
//! one from the PROXY header (`conn::proxy_flow`), so the address checks run after it.
//!
//! [`ListenerConfig`] is one `[[listeners]]` TOML entry (the `--listen` and `--tls-*` flags
//! make the same). [`Listener`] is its run-time form, built on the main thread at start-up and
//! shared by every shard (`Arc`): the TLS configuration, the open-connection count and the
//! per-address buckets. Each shard's accept loop owns its own share of the listener's accept
//! rate ([`Bucket`]), so the hot path takes no lock unless a per-address rate is set.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustls::ServerConfig;
use serde::Deserialize;

use crate::cidr::{any_contains, Cidr};
use crate::tls::{CertName, TlsError, TlsSettings};

/// One listener's settings (`[[listeners]]` in the TOML file).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address and port; port 0 picks a free port (printed on stdout).
    pub bind: SocketAddr,
    /// A name for logs [default: "tcp" / "tls" and the address].
    #[serde(default)]
    pub name: Option<String>,
    /// PEM certificate chain: makes this a TLS listener (with `tls_key`).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates for client certificates: enables mutual TLS.
    #[serde(default)]
    pub tls_client_ca: Option<PathBuf>,
    /// With `tls_client_ca`: refuse clients that present no certificate [default: true].
    #[serde(default)]
    pub tls_require_client_cert: Option<bool>,
    /// Take the MQTT user name from the client certificate: "cn" or "san" [default: off].
    #[serde(default)]
    pub tls_username_from: Option<CertName>,
    /// Open connections on this listener; 0 = only the global `max_connections` [default: 0].
    #[serde(default)]
    pub max_connections: usize,
    /// New connections per second accepted on this listener (a token bucket holding one
    /// second's worth; beyond it accepting pauses and clients wait in the backlog)
    /// [default: the global `max_connection_rate`].
    #[serde(default)]
    pub connection_rate: Option<f64>,
    /// New connections per second from one source address (beyond it they are closed at
    /// once) [default: the global `max_connection_rate_per_ip`].
    #[serde(default)]
    pub connection_rate_per_ip: Option<f64>,
    /// Every connection starts with a PROXY protocol header (v1 or v2) from a load balancer;
    /// the client's address in it is the one the broker uses. A connection without a valid
    /// header is closed [default: false].
    #[serde(default)]
    pub proxy_protocol: bool,
    /// With `proxy_protocol`: only peers in these networks (CIDR) may send the header;
    /// others are closed [default: any peer].
    #[serde(default)]
    pub proxy_trusted: Vec<Cidr>,
    /// Admit only clients whose (real) address is in one of these networks [default: all].
    #[serde(default)]
    pub allow_from: Vec<Cidr>,
    /// Refuse clients whose (real) address is in one of these networks; wins over
    /// `allow_from` [default: none].
    #[serde(default)]
    pub deny_from: Vec<Cidr>,
    /// MQTT over WebSocket: clients upgrade an HTTP/1.1 request to WebSocket first (ws://,
    /// or wss:// on a TLS listener) [default: false].
    #[serde(default)]
    pub websocket: bool,
    /// The only HTTP path that upgrades (others get 404) [default: "/mqtt"].
    #[serde(default)]
    pub ws_path: Option<String>,
}

impl ListenerConfig {
    /// A plain listener on `bind` with the global defaults.
    pub fn plain(bind: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            bind,
            name: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_require_client_cert: None,
            tls_username_from: None,
            max_connections: 0,
            connection_rate: None,
            connection_rate_per_ip: None,
            proxy_protocol: false,
            proxy_trusted: Vec::new(),
            allow_from: Vec::new(),
            deny_from: Vec::new(),
            websocket: false,
            ws_path: None,
        }
    }

    /// The WebSocket path of a `websocket = true` listener, `None` for plain MQTT; an error
    /// says why the settings are invalid.
    pub fn ws_path(&self) -> Result<Option<String>, String> {
        match (self.websocket, &self.ws_path) {
            (false, None) => Ok(None),
            (false, Some(_)) => Err("ws_path needs websocket = true".into()),
            (true, None) => Ok(Some(DEFAULT_WS_PATH.into())),
            (true, Some(p)) => {
                let ok = p.starts_with('/')
                    && p.len() <= 256
                    && p.bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
                if ok {
                    Ok(Some(p.clone()))
                } else {
                    Err(format!(
                        "ws_path {p:?} must be an absolute path (no spaces, query or fragment)"
                    ))
                }
            }
        }
    }

    /// The TLS settings, `None` for a plain listener; an error names what is missing (the
    /// check of keys that need another, `proxy_trusted` without `proxy_protocol` too).
    pub fn tls(&self) -> Result<Option<TlsSettings>, String> {
        if !self.proxy_trusted.is_empty() && !self.proxy_protocol {
            return Err("proxy_trusted needs proxy_protocol = true".into());
        }
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (None, None) => {
                if self.tls_client_ca.is_some() || self.tls_username_from.is_some() {
                    return Err(
                        "tls_client_ca / tls_username_from need tls_cert and tls_key".into(),
                    );
                }
                return Ok(None);
            }
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            _ => return Err("tls_cert and tls_key go together".into()),
        };
        if self.tls_username_from.is_some() && self.tls_client_ca.is_none() {
            return Err("tls_username_from needs tls_client_ca (mutual TLS)".into());
        }
        Ok(Some(TlsSettings {
            cert,
            key,
            client_ca: self.tls_client_ca.clone(),
            require_client_cert: self.tls_require_client_cert.unwrap_or(true),
            username_from: self.tls_username_from,
        }))
    }
}

/// A listener at run time. Shared by every shard.
pub struct Listener {
    /// Position in the configuration (carried by each connection to release its count).
    pub index: u8,
    pub name: String,
    /// The bound address (port 0 resolved).
    pub addr: SocketAddr,
    pub tls: Option<Arc<ServerConfig>>,
    pub username_from: Option<CertName>,
    /// The WebSocket path (MQTT over WebSocket), `None` for plain MQTT.
    pub ws_path: Option<String>,
    pub max_connections: usize,
    /// Open connections accepted here.
    pub connections: AtomicUsize,
    /// Accepts per second on this listener across all shards; 0 = unlimited.
    pub rate: f64,
    /// Accepts per second per source address; 0 = unlimited.
    pub rate_per_ip: f64,
    per_ip: Mutex<HashMap<IpAddr, Bucket, ahash::RandomState>>,
    /// Connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
    pub proxy_trusted: Vec<Cidr>,
    pub allow_from: Vec<Cidr>,
    pub deny_from: Vec<Cidr>,
}

fn kind_name(tls: bool, ws: bool) -> &'static str {
    match (tls, ws) {
        (false, false) => "tcp",
        (true, false) => "tls",
        (false, true) => "ws",
        (true, true) => "wss",
    }
}

/// The WebSocket path when `ws_path` is not set (the one MQTT.js and most browser clients use).
pub const DEFAULT_WS_PATH: &str = "/mqtt";

/// Source addresses tracked per listener for `connection_rate_per_ip`; beyond this the idle
/// ones (bucket full again) are forgotten.
const MAX_TRACKED_ADDRESSES: usize = 65_536;

impl Listener {
    /// The run-time listener for `cfg`, bound to `addr`. Reads the TLS files.
    pub fn new(
        index: u8,
        cfg: &ListenerConfig,
        addr: SocketAddr,
        default_rate: f64,
        default_rate_per_ip: f64,
    ) -> Result<Listener, TlsError> {
        let settings = cfg.tls().ok().flatten();
        let tls = match &settings {
            Some(s) => Some(crate::tls::server_config(s)?),
            None => None,
        };
        let ws_path = cfg.ws_path().ok().flatten();
        let kind = kind_name(tls.is_some(), ws_path.is_some());
        Ok(Listener {
            index,
            name: cfg.name.clone().unwrap_or_else(|| format!("{kind}:{addr}")),
            addr,
            tls,
            username_from: settings.and_then(|s| s.username_from),
            ws_path,
            max_connections: cfg.max_connections,
            connections: AtomicUsize::new(0),
            rate: cfg.connection_rate.unwrap_or(default_rate),
            rate_per_ip: cfg.connection_rate_per_ip.unwrap_or(default_rate_per_ip),
            per_ip: Mutex::new(HashMap::default()),
            proxy_protocol: cfg.proxy_protocol,
            proxy_trusted: cfg.proxy_trusted.clone(),
            allow_from: cfg.allow_from.clone(),
            deny_from: cfg.deny_from.clone(),
        })
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// "tcp", "tls", "ws" or "wss".
    pub fn kind(&self) -> &'static str {
        kind_name(self.is_tls(), self.ws_path.is_some())
    }

    /// Count a connection against this listener's limit; false (not counted) when full.
    pub fn try_acquire(&self) -> bool {
        let n = self.connections.fetch_add(1, Ordering::Relaxed);
        if self.max_connections > 0 && n >= self.max_connections {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// A connection counted by [`Listener::try_acquire`] ended.
    pub fn release(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether admission looks at the client's address at all (address rules or a
    /// per-address rate); when not, the address need not even be read at accept.
    pub fn checks_address(&self) -> bool {
        !self.allow_from.is_empty() || !self.deny_from.is_empty() || self.rate_per_ip > 0.0
    }

    /// Whether `ip` (the client's real address) is admitted by `deny_from` / `allow_from`.
    pub fn address_allowed(&self, ip: IpAddr) -> bool {
        !any_contains(&self.deny_from, ip)
            && (self.allow_from.is_empty() || any_contains(&self.allow_from, ip))
    }

    /// Whether the peer `ip` may send a PROXY header (`proxy_trusted`, empty = any).
    pub fn proxy_peer_trusted(&self, ip: IpAddr) -> bool {
        self.proxy_trusted.is_empty() || any_contains(&self.proxy_trusted, ip)
    }

    /// Whether `ip` may open another connection now (per-address rate).
    pub fn admit_address(&self, ip: IpAddr, now: Instant) -> bool {
        if self.rate_per_ip <= 0.0 {
            return true;
        }
        let Ok(mut map) = self.per_ip.lock() else {
            return true;
        };
        if map.len() >= MAX_TRACKED_ADDRESSES && !map.contains_key(&ip) {
            let rate = self.rate_per_ip;
            map.retain(|_, b| !b.is_full(rate, now));
            if map.len() >= MAX_TRACKED_ADDRESSES {
                // Every tracked address is busy: forget them all rather than grow.
                map.clear();
            }
        }
        map.entry(ip)
            .or_insert_with(|| Bucket::full(self.rate_per_ip, now))
            .take(self.rate_per_ip, now)
            == 0.0
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("tls", &self.is_tls())
            .finish_non_exhaustive()
    }
}

/// A token bucket holding at most one second's worth of tokens (at least one).
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn full(rate: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.max(1.0),
            at: now,
        }
    }

    fn refill(&mut self, rate: f64, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(rate.max(1.0));
        self.at = now;
    }

    fn is_full(&self, rate: f64, now: Instant) -> bool {
        let mut b = *self;
        b.refill(rate, now);
        b.tokens >= rate.max(1.0)
    }

    /// Take one token: 0.0 when taken, else the seconds until one is available (nothing
    /// taken).
    pub fn take(&mut self, rate: f64, now: Instant) -> f64 {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            0.0
        } else {
            (1.0 - self.tokens) / rate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_a_second_of_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(10.0, t0);
        for _ in 0..10 {
            assert_eq!(b.take(10.0, t0), 0.0);
        }
        let wait = b.take(10.0, t0);
        assert!((wait - 0.1).abs() < 1e-9, "{wait}");
        assert_eq!(b.take(10.0, t0 + Duration::from_millis(100)), 0.0);
        assert!(b.take(10.0, t0 + Duration::from_millis(100)) > 0.0);
    }

    #[test]
    fn per_address_rate_is_per_address_and_bounded() {
        let mut cfg = ListenerConfig::plain("127.0.0.1:0".parse().unwrap());
        cfg.connection_rate_per_ip = Some(2.0);
        let l = Listener::new(0, &cfg, cfg.bind, 0.0, 0.0).unwrap();
        let now = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.admit_address(a, now));
        assert!(l.admit_address(a, now));
        assert!(!l.admit_address(a, now));
        assert!(l.admit_address(b, now));
        assert!(l.admit_address(a, now + Duration::from_millis(600)));
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 10) {
            l.admit_address(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(l.per_ip.lock().unwrap().len() <= MAX_TRACKED_ADDRESSES);
    }

    #[test]
    fn deny_wins_over_allow_and_empty_allow_admits_all() {
        let mut cfg = ListenerConfig::plain("127.0.0.1:0".parse().unwrap());
        let l = Listener::new(0, &cfg, cfg.bind, 0.0, 0.0).unwrap();
        assert!(l.address_allowed("203.0.113.9".parse().unwrap()));
        assert!(l.proxy_peer_trusted("203.0.113.9".parse().unwrap()));
        cfg.allow_from = vec!["10.0.0.0/8".parse().unwrap()];
        cfg.deny_from = vec!["10.6.0.0/16".parse().unwrap()];
        let l = Listener::new(0, &cfg, cfg.bind, 0.0, 0.0).unwrap();
        assert!(l.address_allowed("10.5.0.1".parse().unwrap()));
        assert!(!l.address_allowed("10.6.0.1".parse().unwrap()));
        assert!(!l.address_allowed("192.168.0.1".parse().unwrap()));
        cfg.proxy_trusted = vec!["127.0.0.1/32".parse().unwrap()];
        assert!(cfg.tls().is_err(), "proxy_trusted without proxy_protocol");
        cfg.proxy_protocol = true;
        let l = Listener::new(0, &cfg, cfg.bind, 0.0, 0.0).unwrap();
        assert!(l.proxy_peer_trusted("127.0.0.1".parse().unwrap()));
        assert!(!l.proxy_peer_trusted("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn listener_limit_counts_and_releases() {
        let mut cfg = ListenerConfig::plain("127.0.0.1:0".parse().unwrap());
        cfg.max_connections = 2;
        let l = Listener::new(0, &cfg, cfg.bind, 0.0, 0.0).unwrap();
        assert!(l.try_acquire() && l.try_acquire());
        assert!(!l.try_acquire());
        l.release();
        assert!(l.try_acquire());
    }

    #[test]
    fn websocket_path_defaults_and_is_validated() {
        let mut cfg = ListenerConfig::plain("127.0.0.1:0".parse().unwrap());
        assert_eq!(cfg.ws_path(), Ok(None));
        cfg.ws_path = Some("/ws".into());
        assert!(cfg.ws_path().is_err(), "ws_path needs websocket = true");
        cfg.websocket = true;
        assert_eq!(cfg.ws_path(), Ok(Some("/ws".into())));
        for bad in ["ws", "/a b", "/a?x", ""] {
            cfg.ws_path = Some(bad.into());
            assert!(cfg.ws_path().is_err(), "{bad:?}");
        }
        cfg.ws_path = None;
        assert_eq!(cfg.ws_path(), Ok(Some(DEFAULT_WS_PATH.into())));
        let l = Listener::new(0, &cfg, cfg.bind, 0.0, 0.0).unwrap();
        assert_eq!((l.kind(), l.name.as_str()), ("ws", "ws:127.0.0.1:0"));
    }

    #[test]
    fn tls_settings_must_be_complete() {
        let mut cfg = ListenerConfig::plain("127.0.0.1:0".parse().unwrap());
        assert_eq!(cfg.tls(), Ok(None));
        cfg.tls_cert = Some("c.pem".into());
        assert!(cfg.tls().is_err());
        cfg.tls_key = Some("k.pem".into());
        assert!(cfg.tls().unwrap().is_some());
        cfg.tls_username_from = Some(CertName::Cn);
        assert!(
            cfg.tls().is_err(),
            "username from a certificate needs mutual TLS"
        );
    }
}

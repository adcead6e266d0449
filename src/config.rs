//! Broker configuration: embedded defaults, an optional TOML file, and CLI flags (which win).
//!
//! Every limit the broker enforces lives here, with its default. The flag names and TOML keys
//! are a stable interface for operators and scripts.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::listener::ListenerConfig;
use serde::Deserialize;

/// Command-line flags. Each flag also exists as a TOML key (snake_case) in `--config FILE`;
/// a flag given on the command line overrides the file, which overrides the default.
#[derive(Debug, Parser, Default)]
#[command(
    name = "ringmq",
    version,
    about = "ringmq: a thread-per-core io_uring MQTT broker",
    // A flag given twice: the last one wins (wrappers and scripts append overrides).
    args_override_self = true
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Plain MQTT listen address, or "off" [default: 0.0.0.0:1883]. Port 0 picks a free port
    /// (printed on stdout). More listeners: `--tls-listen`, `[[listeners]]` in the file.
    #[arg(long, value_name = "ADDR:PORT|off")]
    pub listen: Option<Listen>,
    /// A TLS listener on this address (with `--tls-cert` and `--tls-key`) [default: none].
    #[arg(long, value_name = "ADDR:PORT")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain (leaf first) of the `--tls-listen` listener.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates that sign client certificates: mutual TLS on `--tls-listen`.
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// With `--tls-client-ca`: refuse clients without a certificate [default: true].
    #[arg(long, value_name = "BOOL")]
    pub tls_require_client_cert: Option<bool>,
    /// Take the MQTT user name from the client certificate's CN or first SAN (mutual TLS)
    /// [default: off].
    #[arg(long, value_name = "cn|san")]
    pub tls_username_from: Option<crate::tls::CertName>,
    /// New connections per second per listener (token bucket of one second's worth; beyond it
    /// accepting pauses and clients wait in the backlog); 0 = unlimited [default: 0].
    #[arg(long, value_name = "N")]
    pub max_connection_rate: Option<f64>,
    /// New connections per second from one source address per listener (beyond it they are
    /// closed at once); 0 = unlimited [default: 0].
    #[arg(long, value_name = "N")]
    pub max_connection_rate_per_ip: Option<f64>,
    /// Number of shards (one executor thread per shard) [default: online CPUs].
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// Comma-separated CPU list to pin shards to, shard i on the i-th CPU (e.g. "2,3")
    /// [default: the first N online CPUs, unpinned if N exceeds them].
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<String>,
    /// Data directory; locked exclusively so two brokers cannot share it [default: ./ringmq-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log level or tracing filter (error, warn, info, debug, trace) [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log line format on stderr: "text" (human) or "json" (one object per line, for log
    /// shippers) [default: text].
    #[arg(long, value_name = "text|json")]
    pub log_format: Option<LogFormat>,
    /// Largest packet accepted from a client, in bytes [default: 16777216; max 268435455].
    #[arg(long, value_name = "BYTES")]
    pub max_packet_size: Option<usize>,
    /// Outgoing QoS 1/2 messages in flight per session before queueing [default: 32].
    #[arg(long, value_name = "N")]
    pub max_inflight: Option<usize>,
    /// Messages queued per session (offline or behind the inflight window) [default: 1000].
    #[arg(long, value_name = "N")]
    pub max_queued_messages: Option<usize>,
    /// Payload bytes queued per session [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub max_queued_bytes: Option<usize>,
    /// Maximum simultaneous client connections for the whole broker [default: 1000000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Seconds a new connection may take to send CONNECT [default: 10].
    #[arg(long, value_name = "SECS")]
    pub connect_timeout: Option<u64>,
    /// Largest keep-alive accepted; larger requests (and 0) are capped to it when it is below
    /// 65535 [default: 65535 = honour the client's value].
    #[arg(long, value_name = "SECS")]
    pub max_keep_alive: Option<u16>,
    /// Subscriptions per session [default: 100000].
    #[arg(long, value_name = "N")]
    pub max_subscriptions: Option<usize>,
    /// Retained messages per shard [default: 1000000].
    #[arg(long, value_name = "N")]
    pub max_retained: Option<usize>,
    /// Listen backlog per shard [default: 4096].
    #[arg(long, value_name = "N")]
    pub listen_backlog: Option<i32>,
    /// Busy-poll this many microseconds before an idle shard parks (lower cross-shard latency,
    /// more CPU) [default: 0].
    #[arg(long, value_name = "MICROS")]
    pub spin_before_park_us: Option<u64>,
    /// Publishers feeding an online subscriber whose queue is over half full are paused; if
    /// that subscriber's socket then accepts nothing for this many milliseconds it is marked a
    /// slow consumer and its queue limits apply alone (QoS 0 evicted first, then drops).
    /// 0 = never pause publishers [default: 500].
    #[arg(long, value_name = "MILLIS")]
    pub slow_consumer_ms: Option<u64>,
    /// Seconds without traffic after which a connection is parked: its tasks are dropped and
    /// its socket is watched by the shard's epoll set (a few hundred bytes per idle client
    /// instead of a few KB). 0 = never park [default: 5].
    #[arg(long, value_name = "SECS")]
    pub idle_park_secs: Option<u64>,
    /// Longest session expiry granted, in seconds: a 5.0 client asking for more (or for
    /// 0xFFFFFFFF, "never") gets this, and a 3.1.x persistent session (clean session 0) ends
    /// this long after its connection. 4294967295 = never expire [default: 604800 (7 days)].
    #[arg(long, value_name = "SECS")]
    pub max_session_expiry: Option<u32>,
    /// 5.0 Receive Maximum: incoming QoS 1/2 publishes a client may have unacknowledged;
    /// exceeding it is answered with DISCONNECT 0x93 [default: 1024].
    #[arg(long, value_name = "N")]
    pub receive_maximum: Option<u16>,
    /// 5.0 Topic Alias Maximum: topic aliases a client may set per connection; 0 disables
    /// them [default: 64].
    #[arg(long, value_name = "N")]
    pub topic_alias_maximum: Option<u16>,
    /// Highest QoS accepted from publishers and granted to subscriptions (0, 1 or 2)
    /// [default: 2].
    #[arg(long, value_name = "QOS")]
    pub maximum_qos: Option<u8>,
    /// Whether retained messages are supported [default: true].
    #[arg(long, value_name = "BOOL")]
    pub retain_available: Option<bool>,
    /// 5.0 Response Information sent to clients that request it; `%c` is replaced by the
    /// client id; empty = never sent [default: "response/%c/"].
    #[arg(long, value_name = "TEMPLATE")]
    pub response_information: Option<String>,
    /// SCRAM-SHA-256 credentials file: enables MQTT 5 enhanced authentication with that
    /// method (lines `user:SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`) [default: none].
    #[arg(long, value_name = "FILE")]
    pub auth_scram_file: Option<PathBuf>,
    /// Durability of sessions and QoS 1/2 messages: none (nothing survives a restart),
    /// process (acknowledged once in the memory-mapped log: survives a broker crash),
    /// batch (group commit with fdatasync every sync interval before acknowledging: survives
    /// power loss), always (a flush before every acknowledgement) [default: batch].
    #[arg(long, value_name = "MODE")]
    pub durability: Option<crate::journal::Mode>,
    /// Group-commit interval of durability batch, in microseconds [default: 1000].
    #[arg(long, value_name = "US")]
    pub sync_interval_us: Option<u64>,
    /// Size of each log segment file, in bytes; at least 2 x max_packet_size + 64 KiB
    /// [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub segment_size: Option<usize>,
    /// Log bytes a shard appends before it writes a snapshot of its live state and deletes
    /// older segments (at least segment_size; the interval also grows to twice the last
    /// snapshot's size) [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub compact_bytes: Option<u64>,
    /// ACL file: which clients may publish to and receive from which topics (format: README,
    /// "Authorization"; re-read on reload, a bad file keeps the previous ACL) [default: none =
    /// every client may publish and subscribe to everything].
    #[arg(long, value_name = "FILE")]
    pub acl_file: Option<PathBuf>,
    /// Let clients connect without a user name, or without a password back end to check one
    /// (the user name is then kept unverified, as in mosquitto) [default: true without
    /// password_file, false with one].
    #[arg(long, value_name = "BOOL")]
    pub allow_anonymous: Option<bool>,
    /// Password file: CONNECT user names and argon2id hashes, lines
    /// `user:$argon2id$v=19$m=..,t=..,p=..$salt$hash` (written by `ringmq passwd`); re-read on
    /// reload [default: none].
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Recent successful password checks remembered (a reconnecting device skips the argon2
    /// run); 0 = none [default: 10000].
    #[arg(long, value_name = "N")]
    pub auth_cache_size: Option<usize>,
    /// Password checks waiting per shard (they run one at a time off the shard); further
    /// logins needing one are refused as server unavailable/busy [default: 128].
    #[arg(long, value_name = "N")]
    pub auth_verify_queue: Option<usize>,
    /// Login failures from one address before its further attempts are delayed; 0 = never
    /// delay [default: 5].
    #[arg(long, value_name = "N")]
    pub auth_throttle_after: Option<u32>,
    /// First delay of a throttled address' CONNACK, doubled per further failure
    /// [default: 250].
    #[arg(long, value_name = "MILLIS")]
    pub auth_throttle_base_ms: Option<u64>,
    /// Longest delay of a throttled address' CONNACK (at most 60000) [default: 10000].
    #[arg(long, value_name = "MILLIS")]
    pub auth_throttle_max_ms: Option<u64>,
    /// Addresses whose login failures are remembered (the oldest go first) [default: 65536].
    #[arg(long, value_name = "N")]
    pub auth_throttle_entries: Option<usize>,
    /// Longest topic name or filter accepted from a client, in bytes; a longer PUBLISH topic
    /// is refused (5.0 reason 0x90, 3.1.x connection closed), a longer filter gets a SUBACK
    /// failure [default: 65535, the protocol's limit].
    #[arg(long, value_name = "BYTES")]
    pub max_topic_length: Option<usize>,
    /// Most levels ('/'-separated) in a topic name or filter accepted from a client; refused
    /// like an over-long topic [default: 128].
    #[arg(long, value_name = "N")]
    pub max_topic_levels: Option<usize>,
    /// PUBLISH packets per second a client may send (token bucket, burst one second's worth);
    /// above it the broker stops reading from that client until tokens refill, so TCP pushes
    /// back on the device. 0 = no limit [default: 0].
    #[arg(long, value_name = "N")]
    pub max_publish_rate: Option<u32>,
    /// The plain `--listen` listener expects a PROXY protocol header (v1 or v2) before each
    /// connection's bytes, from a load balancer; connections without one are closed. Other
    /// listeners: `proxy_protocol` in `[[listeners]]` [default: false].
    #[arg(long, value_name = "BOOL")]
    pub proxy_protocol: Option<bool>,
    /// Largest PROXY protocol v2 header accepted, TLVs included (v1 lines are at most 107
    /// bytes by the spec); a larger one closes the connection [default: 4096; 232..=65551].
    #[arg(long, value_name = "BYTES")]
    pub max_proxy_header_size: Option<usize>,
    /// Ops HTTP endpoint (`/metrics` in the Prometheus text format, `/health`, `/ready`),
    /// or "off"; keep it on a private address [default: off].
    #[arg(long, value_name = "ADDR:PORT|off")]
    pub http_listen: Option<Listen>,
    /// How often each shard publishes its counters and gauges for `/metrics` and `$SYS`,
    /// in milliseconds (100 to 60000; rounded up to the 250 ms ticker) [default: 1000].
    #[arg(long, value_name = "MILLIS")]
    pub stats_interval_ms: Option<u64>,
    /// Seconds between `$SYS/broker/...` updates (retained QoS 0, published by shard 0);
    /// 0 = no `$SYS` topics [default: 10].
    #[arg(long, value_name = "SECS")]
    pub sys_interval: Option<u64>,
    /// `/health` answers 503 when a shard's ticker has not run for this many milliseconds
    /// (a stuck shard) [default: 5000].
    #[arg(long, value_name = "MILLIS")]
    pub health_stale_ms: Option<u64>,
    /// An MQTT-over-WebSocket listener (ws://) on this address; for wss:// use a
    /// `[[listeners]]` entry with TLS settings and `websocket = true` [default: none].
    #[arg(long, value_name = "ADDR:PORT")]
    pub ws_listen: Option<SocketAddr>,
    /// The HTTP path the `--ws-listen` listener upgrades (others get 404) [default: "/mqtt"].
    #[arg(long, value_name = "PATH")]
    pub ws_path: Option<String>,
    /// A subcommand instead of running the broker.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `ringmq <subcommand>`; without one, `ringmq` runs the broker.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Add, update (password from stdin) or delete (-D) a user of a password file.
    Passwd(crate::auth::passwd_cmd::PasswdArgs),
    /// Check a configuration file and every file it names (TLS certificates and keys,
    /// password, SCRAM and ACL files) without starting; exit 0 when the broker would start.
    CheckConfig {
        /// The TOML configuration file.
        file: PathBuf,
    },
}

/// How log lines are written (`log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields).
    Json,
}

/// The effective configuration. Cloned into every shard at start; immutable afterwards.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: Listen,
    pub tls_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub tls_require_client_cert: Option<bool>,
    pub tls_username_from: Option<crate::tls::CertName>,
    /// More listeners (`[[listeners]]`), each with its own settings.
    pub listeners: Vec<ListenerConfig>,
    pub max_connection_rate: f64,
    pub max_connection_rate_per_ip: f64,
    pub shards: usize,
    pub cpus: Option<String>,
    pub data_dir: PathBuf,
    pub log_level: String,
    pub log_format: LogFormat,
    pub max_packet_size: usize,
    pub max_inflight: usize,
    pub max_queued_messages: usize,
    pub max_queued_bytes: usize,
    pub max_connections: usize,
    pub connect_timeout: u64,
    pub max_keep_alive: u16,
    pub max_subscriptions: usize,
    pub max_retained: usize,
    pub listen_backlog: i32,
    pub spin_before_park_us: u64,
    pub slow_consumer_ms: u64,
    pub idle_park_secs: u64,
    pub max_session_expiry: u32,
    pub receive_maximum: u16,
    pub topic_alias_maximum: u16,
    pub maximum_qos: u8,
    pub retain_available: bool,
    pub response_information: String,
    pub auth_scram_file: Option<PathBuf>,
    pub durability: crate::journal::Mode,
    pub sync_interval_us: u64,
    pub segment_size: usize,
    pub compact_bytes: u64,
    pub acl_file: Option<PathBuf>,
    /// `None` = the default: true unless `password_file` is set (see [`Config::anonymous`]).
    pub allow_anonymous: Option<bool>,
    pub password_file: Option<PathBuf>,
    pub auth_cache_size: usize,
    pub auth_verify_queue: usize,
    pub auth_throttle_after: u32,
    pub auth_throttle_base_ms: u64,
    pub auth_throttle_max_ms: u64,
    pub auth_throttle_entries: usize,
    pub max_topic_length: usize,
    pub max_topic_levels: usize,
    pub max_publish_rate: u32,
    pub proxy_protocol: bool,
    pub max_proxy_header_size: usize,
    pub http_listen: Listen,
    pub stats_interval_ms: u64,
    pub sys_interval: u64,
    pub health_stale_ms: u64,
    pub ws_listen: Option<SocketAddr>,
    pub ws_path: Option<String>,
}

/// The plain listener's address, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Listen {
    Off,
    Addr(SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Listen, String> {
        match s {
            "off" | "none" => Ok(Listen::Off),
            _ => s
                .parse()
                .map(Listen::Addr)
                .map_err(|e| format!("{s:?}: {e} (expected ADDR:PORT or off)")),
        }
    }
}

impl TryFrom<String> for Listen {
    type Error = String;
    fn try_from(s: String) -> Result<Listen, String> {
        s.parse()
    }
}

/// MQTT's largest encodable packet (remaining length 268,435,455 plus a 5-byte header).
pub const PROTOCOL_MAX_PACKET: usize = 268_435_455 + 5;

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: Listen::Addr(SocketAddr::from(([0, 0, 0, 0], 1883))),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_require_client_cert: None,
            tls_username_from: None,
            listeners: Vec::new(),
            max_connection_rate: 0.0,
            max_connection_rate_per_ip: 0.0,
            shards: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpus: None,
            data_dir: PathBuf::from("ringmq-data"),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            max_packet_size: 16 * 1024 * 1024,
            max_inflight: 32,
            max_queued_messages: 1000,
            max_queued_bytes: 64 * 1024 * 1024,
            max_connections: 1_000_000,
            connect_timeout: 10,
            max_keep_alive: u16::MAX,
            max_subscriptions: 100_000,
            max_retained: 1_000_000,
            listen_backlog: 4096,
            spin_before_park_us: 0,
            slow_consumer_ms: 500,
            idle_park_secs: 5,
            max_session_expiry: 7 * 24 * 3600,
            receive_maximum: 1024,
            topic_alias_maximum: 64,
            maximum_qos: 2,
            retain_available: true,
            response_information: "response/%c/".into(),
            auth_scram_file: None,
            durability: crate::journal::Mode::Batch,
            sync_interval_us: 1000,
            segment_size: 64 * 1024 * 1024,
            compact_bytes: 64 * 1024 * 1024,
            acl_file: None,
            allow_anonymous: None,
            password_file: None,
            auth_cache_size: 10_000,
            auth_verify_queue: 128,
            auth_throttle_after: 5,
            auth_throttle_base_ms: 250,
            auth_throttle_max_ms: 10_000,
            auth_throttle_entries: 65_536,
            max_topic_length: crate::proto::topic::MAX_TOPIC_LEN,
            max_topic_levels: 128,
            max_publish_rate: 0,
            proxy_protocol: false,
            max_proxy_header_size: 4096,
            http_listen: Listen::Off,
            stats_interval_ms: 1000,
            sys_interval: 10,
            health_stale_ms: 5000,
            ws_listen: None,
            ws_path: None,
        }
    }
}

/// Why the configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML for this schema.
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    /// A value is out of its allowed range.
    #[error("invalid setting {key}: {why}")]
    Invalid { key: &'static str, why: String },
}

impl Config {
    /// Defaults, then the file named by `--config`, then the flags.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let mut cfg = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            None => Config::default(),
        };
        macro_rules! over {
            ($($f:ident),*) => { $( if let Some(v) = &cli.$f { cfg.$f = v.clone().into(); } )* };
        }
        over!(
            listen,
            max_connection_rate,
            max_connection_rate_per_ip,
            shards,
            data_dir,
            log_level,
            log_format,
            max_packet_size,
            max_inflight,
            max_queued_messages,
            max_queued_bytes,
            max_connections,
            connect_timeout,
            max_keep_alive,
            max_subscriptions,
            max_retained,
            listen_backlog,
            spin_before_park_us,
            slow_consumer_ms,
            idle_park_secs,
            max_session_expiry,
            receive_maximum,
            topic_alias_maximum,
            maximum_qos,
            retain_available,
            response_information,
            auth_scram_file,
            durability,
            sync_interval_us,
            segment_size,
            compact_bytes,
            acl_file,
            password_file,
            auth_cache_size,
            auth_verify_queue,
            auth_throttle_after,
            auth_throttle_base_ms,
            auth_throttle_max_ms,
            auth_throttle_entries,
            max_topic_length,
            max_topic_levels,
            max_publish_rate,
            proxy_protocol,
            max_proxy_header_size,
            http_listen,
            stats_interval_ms,
            sys_interval,
            health_stale_ms
        );
        if cli.allow_anonymous.is_some() {
            cfg.allow_anonymous = cli.allow_anonymous;
        }
        if cli.cpus.is_some() {
            cfg.cpus = cli.cpus.clone();
        }
        macro_rules! some {
            ($($f:ident),*) => { $( if cli.$f.is_some() { cfg.$f = cli.$f.clone(); } )* };
        }
        some!(
            tls_listen,
            tls_cert,
            tls_key,
            tls_client_ca,
            tls_require_client_cert,
            tls_username_from,
            ws_listen,
            ws_path
        );
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, why: &str| {
            Err(ConfigError::Invalid {
                key,
                why: why.to_string(),
            })
        };
        if self.shards == 0 || self.shards > 64 {
            return bad("shards", "must be between 1 and 64");
        }
        if self.max_packet_size < 64 || self.max_packet_size > PROTOCOL_MAX_PACKET {
            return bad("max_packet_size", "must be between 64 and 268435460");
        }
        if self.max_inflight == 0 || self.max_inflight > 65_535 {
            return bad("max_inflight", "must be between 1 and 65535");
        }
        if self.max_queued_messages == 0 || self.max_queued_messages > u32::MAX as usize {
            return bad("max_queued_messages", "must be between 1 and 4294967295");
        }
        if self.max_queued_bytes > u32::MAX as usize {
            return bad("max_queued_bytes", "must be at most 4294967295");
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1");
        }
        if self.slow_consumer_ms > 60_000 {
            return bad("slow_consumer_ms", "must be at most 60000");
        }
        if self.receive_maximum == 0 {
            return bad("receive_maximum", "must be between 1 and 65535");
        }
        if self.maximum_qos > 2 {
            return bad("maximum_qos", "must be 0, 1 or 2");
        }
        if self.durability != crate::journal::Mode::None
            && self.segment_size < 2 * self.max_packet_size + 64 * 1024
        {
            return bad(
                "segment_size",
                "must be at least 2 x max_packet_size + 65536 (a record never spans segments)",
            );
        }
        if self.compact_bytes < self.segment_size as u64 {
            return bad("compact_bytes", "must be at least segment_size");
        }
        if self.segment_size > (1 << 40) {
            return bad("segment_size", "must be at most 1 TiB");
        }
        if self.sync_interval_us > 1_000_000 {
            return bad("sync_interval_us", "must be at most 1000000 (1 s)");
        }
        if self.tls_listen.is_some() && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return bad("tls_listen", "needs tls_cert and tls_key");
        }
        let listeners = self.listener_configs();
        if listeners.is_empty() {
            return bad(
                "listen",
                "no listener: listen is off and no other listener is set",
            );
        }
        if listeners.len() > 64 {
            return bad("listeners", "at most 64 listeners");
        }
        for l in &listeners {
            if let Err(why) = l.tls() {
                return Err(ConfigError::Invalid {
                    key: "listeners",
                    why: format!("listener {}: {why}", l.bind),
                });
            }
            if let Err(why) = l.ws_path() {
                return Err(ConfigError::Invalid {
                    key: "listeners",
                    why: format!("listener {}: {why}", l.bind),
                });
            }
            let rates = [l.connection_rate, l.connection_rate_per_ip];
            if rates.iter().flatten().any(|r| !r.is_finite() || *r < 0.0) {
                return bad("listeners", "connection rates must be >= 0");
            }
        }
        for r in [self.max_connection_rate, self.max_connection_rate_per_ip] {
            if !r.is_finite() || r < 0.0 {
                return bad("max_connection_rate", "must be >= 0");
            }
        }
        if self.tls_listen.is_none() && (self.tls_cert.is_some() || self.tls_key.is_some()) {
            return bad("tls_listen", "tls_cert / tls_key given without tls_listen");
        }
        if self.ws_listen.is_none() && self.ws_path.is_some() {
            return bad("ws_listen", "ws_path given without ws_listen");
        }
        if self.auth_verify_queue == 0 {
            return bad("auth_verify_queue", "must be at least 1");
        }
        if self.auth_throttle_max_ms > 60_000 {
            return bad("auth_throttle_max_ms", "must be at most 60000");
        }
        if self.auth_throttle_base_ms > self.auth_throttle_max_ms {
            return bad(
                "auth_throttle_base_ms",
                "must be at most auth_throttle_max_ms",
            );
        }
        if self.max_topic_length == 0 || self.max_topic_length > crate::proto::topic::MAX_TOPIC_LEN
        {
            return bad("max_topic_length", "must be between 1 and 65535");
        }
        if self.max_topic_levels == 0 {
            return bad("max_topic_levels", "must be at least 1");
        }
        if !(100..=60_000).contains(&self.stats_interval_ms) {
            return bad("stats_interval_ms", "must be between 100 and 60000");
        }
        if self.sys_interval > 86_400 {
            return bad("sys_interval", "must be at most 86400 (0 = off)");
        }
        if !(1_000..=600_000).contains(&self.health_stale_ms) {
            return bad("health_stale_ms", "must be between 1000 and 600000");
        }
        if let (Listen::Addr(h), Some(dup)) = (
            self.http_listen,
            listeners
                .iter()
                .find(|l| Listen::Addr(l.bind) == self.http_listen),
        ) {
            if h.port() != 0 {
                return bad(
                    "http_listen",
                    &format!("{} is also an MQTT listener", dup.bind),
                );
            }
        }
        if self.listen_backlog <= 0 {
            return bad("listen_backlog", "must be positive");
        }
        if !(crate::proxy::V2_MIN_MAX..=crate::proxy::V2_SPEC_MAX)
            .contains(&self.max_proxy_header_size)
        {
            return bad("max_proxy_header_size", "must be between 232 and 65551");
        }
        if self.cpus.is_some() {
            let cpus = self
                .cpu_list()
                .map_err(|why| ConfigError::Invalid { key: "cpus", why })?;
            if cpus.len() < self.shards {
                return bad("cpus", "needs at least one CPU per shard");
            }
        }
        Ok(())
    }

    /// Every listener: the plain `listen` (unless off), the `tls_listen` one, the
    /// `ws_listen` one, then `[[listeners]]`, in that order.
    pub fn listener_configs(&self) -> Vec<ListenerConfig> {
        let mut v = Vec::new();
        if let Listen::Addr(a) = self.listen {
            let mut l = ListenerConfig::plain(a);
            l.proxy_protocol = self.proxy_protocol;
            v.push(l);
        }
        if let Some(a) = self.tls_listen {
            let mut l = ListenerConfig::plain(a);
            l.tls_cert = self.tls_cert.clone();
            l.tls_key = self.tls_key.clone();
            l.tls_client_ca = self.tls_client_ca.clone();
            l.tls_require_client_cert = self.tls_require_client_cert;
            l.tls_username_from = self.tls_username_from;
            v.push(l);
        }
        if let Some(a) = self.ws_listen {
            let mut l = ListenerConfig::plain(a);
            l.websocket = true;
            l.ws_path = self.ws_path.clone();
            v.push(l);
        }
        v.extend(self.listeners.iter().cloned());
        v
    }

    /// Whether anonymous clients may connect: `allow_anonymous`, by default true unless a
    /// password file is configured (a broker given passwords should not also let everyone
    /// in by leaving the user name out).
    pub fn anonymous(&self) -> bool {
        self.allow_anonymous.unwrap_or(self.password_file.is_none())
    }

    /// The settings of [`crate::auth::Passwords`].
    pub fn passwords(&self) -> crate::auth::service::Settings {
        crate::auth::service::Settings {
            allow_anonymous: self.anonymous(),
            file: self.password_file.clone(),
            cache_size: self.auth_cache_size,
            verify_queue: self.auth_verify_queue,
            throttle: crate::auth::throttle::Settings {
                after: self.auth_throttle_after,
                base: std::time::Duration::from_millis(self.auth_throttle_base_ms),
                max: std::time::Duration::from_millis(self.auth_throttle_max_ms),
                entries: self.auth_throttle_entries,
            },
        }
    }

    /// The `cpus` list parsed; empty when unset.
    pub fn cpu_list(&self) -> Result<Vec<usize>, String> {
        match &self.cpus {
            None => Ok(Vec::new()),
            Some(s) => s
                .split(',')
                .map(|p| p.trim().parse::<usize>().map_err(|e| format!("{p:?}: {e}")))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("ringmq-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "max_inflight = 7\nshards = 3\n").unwrap();
        let cli = Cli::parse_from([
            "ringmq",
            "--config",
            file.to_str().unwrap(),
            "--shards",
            "2",
        ]);
        let cfg = Config::load(&cli).unwrap();
        assert_eq!(cfg.shards, 2);
        assert_eq!(cfg.max_inflight, 7);
        assert_eq!(cfg.max_queued_messages, 1000);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn anonymous_defaults_to_false_only_with_a_password_file() {
        let cfg = Config::load(&Cli::parse_from(["ringmq"])).unwrap();
        assert!(cfg.anonymous());
        let cli = Cli::parse_from(["ringmq", "--password-file", "/p"]);
        assert!(!Config::load(&cli).unwrap().anonymous());
        let cli = Cli::parse_from([
            "ringmq",
            "--password-file",
            "/p",
            "--allow-anonymous",
            "true",
        ]);
        assert!(Config::load(&cli).unwrap().anonymous());
        let cli = Cli::parse_from(["ringmq", "--allow-anonymous", "false"]);
        assert!(!Config::load(&cli).unwrap().passwords().allow_anonymous);
        let cli = Cli::parse_from(["ringmq", "--auth-throttle-max-ms", "60001"]);
        assert!(Config::load(&cli).is_err());
    }

    #[test]
    fn passwd_is_a_subcommand_and_running_the_broker_stays_the_default() {
        let cli = Cli::parse_from(["ringmq", "--shards", "1"]);
        assert!(cli.command.is_none());
        let cli = Cli::parse_from(["ringmq", "passwd", "-D", "f", "u"]);
        match cli.command {
            Some(Command::Passwd(a)) => {
                assert!(a.delete);
                assert_eq!((a.file.to_str(), a.user.as_str()), (Some("f"), "u"));
            }
            other => panic!("not passwd: {other:?}"),
        }
        let cli = Cli::parse_from(["ringmq", "check-config", "c.toml"]);
        assert!(matches!(cli.command, Some(Command::CheckConfig { .. })));
    }

    #[test]
    fn rejects_unknown_keys_and_bad_ranges() {
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
        let cli = Cli::parse_from(["ringmq", "--max-packet-size", "1"]);
        assert!(Config::load(&cli).is_err());
    }
}

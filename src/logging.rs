//! Logging: the tracing subscriber of the server binary. Owns the output format (`log_format`:
//! text or JSON lines), the reloadable level filter (`log_level`, re-read on SIGHUP) and the
//! writer.
//!
//! Lines are written to stderr by a background thread, never by a shard: a slow reader of
//! stderr (a full pipe, a stalled journald) would otherwise stall the shard that logs. The
//! queue between them is bounded; when it is full, lines are dropped rather than waited for,
//! and counted ([`dropped_lines`]).
//!
//! Levels: `info` carries what an operator follows per connection (connected, disconnected
//! and why, refused logins) and per broker event; nothing is logged per message at `info`
//! (per-message refusals are counted in `crate::metrics` and logged at `debug`).

use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::LogFormat;

/// Lines the writer queue holds before new ones are dropped.
const QUEUE_LINES: usize = 64 * 1024;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Keeps the writer thread alive; dropping it flushes what is queued.
pub struct Logging {
    _guard: WorkerGuard,
    level: Level,
}

/// The reloadable level filter (SIGHUP).
#[derive(Clone)]
pub struct Level(reload::Handle<EnvFilter, Registry>);

impl Level {
    /// Replace the level filter.
    pub fn set(&self, level: &str) -> Result<(), String> {
        let f = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        self.0.reload(f).map_err(|e| e.to_string())
    }
}

impl Logging {
    /// Install the global subscriber. `level` is a tracing filter; an invalid one falls back
    /// to `info` (the configuration validated it already).
    pub fn init(level: &str, format: LogFormat) -> Logging {
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(QUEUE_LINES)
            .thread_name("ringmq-log")
            .finish(std::io::stderr());
        let _ = DROPPED.set(writer.error_counter());
        let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
        let (filter, handle) = reload::Layer::new(filter);
        let ansi =
            format == LogFormat::Text && std::io::IsTerminal::is_terminal(&std::io::stderr());
        let text = (format == LogFormat::Text).then(|| {
            tracing_subscriber::fmt::layer()
                .with_writer(writer.clone())
                .with_ansi(ansi)
        });
        let json = (format == LogFormat::Json).then(|| {
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_thread_names(true)
                .with_writer(writer)
        });
        tracing_subscriber::registry()
            .with(filter)
            .with(text)
            .with(json)
            .init();
        Logging {
            _guard: guard,
            level: Level(handle),
        }
    }

    /// The level filter, to change it later.
    pub fn level(&self) -> Level {
        self.level.clone()
    }
}

/// Log lines dropped because the writer queue was full (stderr not keeping up).
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

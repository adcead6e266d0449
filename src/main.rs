//! The `ringmq` server binary: parse flags, load config, start the broker.

use clap::Parser;
use ringmq::broker;
use ringmq::config::{Cli, Config};

fn main() {
    let cli = Cli::parse();
    let cfg = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringmq: {e}");
            std::process::exit(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "ringmq starting");
    let result = broker::run(cfg, |listeners| {
        // One line per listener; tests and scripts read the address from the first.
        for l in listeners {
            let kind = if l.is_tls() { " (tls)" } else { "" };
            println!("ringmq listening on {}{kind}", l.addr);
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
    });
    if let Err(e) = result {
        tracing::error!("{e}");
        eprintln!("ringmq: {e}");
        std::process::exit(1);
    }
}

//! The `ringmq` server binary: parse flags, load config, start the broker (or run the
//! `passwd` subcommand, which edits a password file and exits).

use clap::Parser;
use ringmq::broker;
use ringmq::config::{Cli, Command, Config};

fn main() {
    let cli = Cli::parse();
    if let Some(Command::Passwd(args)) = &cli.command {
        match ringmq::auth::passwd_cmd::run(args) {
            Ok(summary) => {
                eprintln!("ringmq passwd: {summary}");
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("ringmq passwd: {e}");
                std::process::exit(1);
            }
        }
    }
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
    let result = broker::run(cfg, |addr| {
        println!("ringmq listening on {addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    });
    if let Err(e) = result {
        tracing::error!("{e}");
        eprintln!("ringmq: {e}");
        std::process::exit(1);
    }
}

//! The `ringmq` server binary: parse flags, load config, start the broker (or run the
//! `passwd` subcommand, which edits a password file and exits); SIGHUP re-reads the
//! configuration for the log level and reloads what `Global::reload` covers.

use clap::Parser;
use ringmq::broker;
use ringmq::config::{Cli, Command, Config};
use ringmq::logging::Logging;

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
    if let Some(Command::CheckConfig { file }) = &cli.command {
        check_config(file);
    }
    let cfg = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringmq: {e}");
            std::process::exit(2);
        }
    };
    let logging = Logging::init(&cfg.log_level, cfg.log_format);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "ringmq starting");
    let level = logging.level();
    let on_hup: broker::OnHangup = Box::new(move |global| {
        match Config::load(&cli) {
            Ok(c) => match level.set(&c.log_level) {
                Ok(()) => tracing::info!(level = %c.log_level, "log level reloaded"),
                Err(e) => tracing::warn!(level = %c.log_level, "log level not reloaded: {e}"),
            },
            Err(e) => tracing::error!("configuration not reloaded: {e}"),
        }
        global.reload();
    });
    let result = broker::run(
        cfg,
        |listeners| {
            // One line per listener; tests and scripts read the address from the first.
            for l in listeners {
                match l.kind() {
                    "tcp" => println!("ringmq listening on {}", l.addr),
                    kind => println!("ringmq listening on {} ({kind})", l.addr),
                }
            }
            use std::io::Write;
            let _ = std::io::stdout().flush();
        },
        on_hup,
    );
    if let Err(e) = result {
        tracing::error!("{e}");
        // Flush the log queue first: exit skips destructors.
        drop(logging);
        eprintln!("ringmq: {e}");
        std::process::exit(1);
    }
    let dropped = ringmq::logging::dropped_lines();
    if dropped > 0 {
        tracing::warn!(dropped, "log lines dropped: stderr did not keep up");
    }
}

/// `ringmq check-config FILE`: exit 0 and a summary when the broker would start with FILE,
/// 2 for an invalid setting, 1 for a file it names that does not load.
fn check_config(file: &std::path::Path) -> ! {
    let cli = Cli {
        config: Some(file.to_path_buf()),
        ..Cli::default()
    };
    let cfg = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringmq check-config: {e}");
            std::process::exit(2);
        }
    };
    match broker::check(&cfg) {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            println!("{}: ok", file.display());
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("ringmq check-config: {e}");
            std::process::exit(1);
        }
    }
}

//! `ringmq-bench`, the end-to-end load generator (issue 3 §1): real MQTT clients on glommio
//! executors, the crate's own codec on the client side, loopback only.
//!
//! Scenarios: `conn` (idle connections, memory per connection), `p2p`, `fanin`, `fanout`,
//! `shared`, `large` (message flows: throughput, latency, loss/duplicates/order), `backlog`
//! (queues of offline persistent sessions, then their drain), `storm` (every persistent
//! session drops and reconnects at once) and `slow` (fan-out with one slow subscriber).
//!
//! Layout:
//! - [`header`]: the 20-byte header every payload starts with (publisher, sequence, send time);
//! - [`check`]: the delivery checker (loss, duplicates, per-publisher order) — pure;
//! - [`cli`]: flags and the resolved [`cli::Plan`] (topics, quotas, who hears whom) — pure;
//! - [`client`]: one MQTT client connection (connect from a chosen source address,
//!   handshakes, shared write path, packet reader);
//! - [`run`]: the coordinator's phases ([`run::run`]), one generator thread's state
//!   ([`run::ctx`]), publisher tasks and the `--rate` pacer ([`run::publisher`]), subscriber
//!   tasks incl. the offline (`backlog`) and throttled (`slow`) variants
//!   ([`run::subscriber`]) and the reconnect storm ([`run::storm`]);
//! - [`report`]: merged histograms and verdicts, the human report and the JSON line.
//!
//! Runs on its own threads, one `LocalExecutor` each (`--threads`); nothing here is used by
//! the broker.

pub mod check;
pub mod cli;
pub mod client;
pub mod header;
pub mod report;
pub mod run;

use clap::Parser;

/// Entry point of the binary; returns the process exit code.
pub fn main() -> i32 {
    let args = cli::Args::parse();
    let plan = match cli::Plan::from_args(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ringmq-bench: {e}");
            return 2;
        }
    };
    if let Err(e) = raise_fd_limit(plan.clients() + 64) {
        eprintln!("ringmq-bench: {e}");
        return 2;
    }
    let outcome = match run::run(plan.clone()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ringmq-bench: {e}");
            return 2;
        }
    };
    let report = report::build(&plan, &outcome);
    if !args.json {
        print!("{}", report.text);
    }
    println!("{}", report.json);
    report.exit
}

/// Raises RLIMIT_NOFILE to the hard limit; an error if that is still below `need`.
fn raise_fd_limit(need: usize) -> Result<(), String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    if (lim.rlim_cur as usize) < need {
        return Err(format!(
            "{need} file descriptors needed but the hard limit is {}; run several generator \
             processes (with different --client-prefix and --source-base)",
            lim.rlim_cur
        ));
    }
    Ok(())
}

//! Judging and printing a run: merges the threads' histograms and checkers, computes rates,
//! and renders a short human report plus one JSON line (the line scripts compare).

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::check::Verdict;
use super::cli::{Plan, Scenario, StormClose};
use super::run::{new_hist, Outcome};
use crate::proto::ProtocolVersion;

/// The report of one run and the process exit code it implies.
pub struct Report {
    /// Human-readable lines (empty when there is nothing beyond the JSON to say).
    pub text: String,
    /// The summary line: every figure of the run, one JSON object.
    pub json: Value,
    /// 0 = delivery checked out; 1 = loss at QoS ≥ 1, reordering, or duplicates beyond the
    /// QoS rules (slow subscribers excluded), or a session not resumed (`backlog`, `storm`);
    /// 2 = the run could not be set up.
    pub exit: i32,
}

fn quantiles_us(h: &Histogram<u64>) -> Value {
    let us = |ns: u64| (ns as f64 / 1e3 * 10.0).round() / 10.0;
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "p50": us(h.value_at_quantile(0.50)),
        "p99": us(h.value_at_quantile(0.99)),
        "p999": us(h.value_at_quantile(0.999)),
        "max": us(h.max()),
    })
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        (n as f64 / secs).round()
    } else {
        0.0
    }
}

fn mb(msgs_per_s: f64, payload: usize) -> f64 {
    (msgs_per_s * payload as f64 / 1e6 * 100.0).round() / 100.0
}

/// Builds the report for `out`.
pub fn build(plan: &Plan, out: &Outcome) -> Report {
    let mut latency = new_hist();
    let mut connack = new_hist();
    let mut reconnack = new_hist();
    let mut errors = 0;
    let mut samples = Vec::new();
    let mut idle_dropped = 0;
    for t in &out.threads {
        let _ = latency.add(&t.latency);
        let _ = connack.add(&t.connack);
        let _ = reconnack.add(&t.reconnack);
        errors += t.errors;
        samples.extend(t.error_samples.iter().cloned());
        idle_dropped += t.idle_dropped;
    }
    samples.truncate(5);
    let version = match plan.version {
        ProtocolVersion::V5 => 5,
        _ => 4,
    };
    let mut j = json!({
        "scenario": plan.scenario.name(),
        "version": version,
        "threads": plan.threads,
        "connect_s": round3(out.connect_secs),
        "connack_us": quantiles_us(&connack),
        "errors": errors,
    });
    let clients = plan.clients();
    let mut text = String::new();
    let header = match plan.scenario {
        Scenario::Conn | Scenario::Storm => format!(
            "ringmq-bench {}: {} clients, MQTT {}, {} thread(s)",
            plan.scenario.name(),
            plan.idle_conns + plan.storm_conns,
            if version == 5 { "5.0" } else { "3.1.1" },
            plan.threads
        ),
        s => format!(
            "ringmq-bench {}: {} pub → {} sub, QoS {}, {} B payload, MQTT {}, {} thread(s)",
            s.name(),
            plan.pubs.len(),
            plan.sub_filters.len(),
            plan.qos,
            plan.payload,
            if version == 5 { "5.0" } else { "3.1.1" },
            plan.threads
        ),
    };
    text.push_str(&header);
    text.push('\n');

    if out.refused > 0 {
        let why = if plan.scenario == Scenario::Shared {
            "the broker refused the shared subscription ($share/...): not supported"
        } else {
            "the broker refused a subscription"
        };
        j["skipped"] = json!(why);
        text.push_str(&format!("  skipped: {why}\n"));
        let exit = if plan.scenario == Scenario::Shared {
            0
        } else {
            2
        };
        return Report {
            text,
            json: j,
            exit,
        };
    }
    if out.connected < clients {
        j["setup_failed"] = json!(out.setup_failed);
        j["connected"] = json!(out.connected);
        j["error_samples"] = json!(samples);
        text.push_str(&format!(
            "  set-up failed: {} of {} clients connected; {}\n",
            out.connected,
            clients,
            samples.join("; ")
        ));
        return Report {
            text,
            json: j,
            exit: 2,
        };
    }

    let cq = |q: f64| connack.value_at_quantile(q) as f64 / 1e3;
    let connect_rate = rate(out.connected as u64, out.connect_secs);
    j["connected"] = json!(out.connected);
    j["connect_rate"] = json!(connect_rate);
    text.push_str(&format!(
        "  connect    {} clients in {:.2} s = {:.0}/s; CONNACK p50 {:.0} µs p99 {:.0} µs max {:.0} µs\n",
        out.connected,
        out.connect_secs,
        connect_rate,
        cq(0.5),
        cq(0.99),
        connack.max() as f64 / 1e3
    ));

    if plan.scenario == Scenario::Conn {
        j["conns"] = json!(plan.idle_conns);
        j["idle_dropped"] = json!(idle_dropped);
        j["broker_rss_kib_before"] = json!(out.rss_kib[0]);
        j["broker_rss_kib_connected"] = json!(out.rss_kib[1]);
        j["broker_rss_kib_end"] = json!(out.rss_kib[2]);
        if let (Some(a), Some(b)) = (out.rss_kib[0], out.rss_kib[1]) {
            let per = (b as f64 - a as f64) * 1024.0 / out.connected.max(1) as f64;
            j["rss_per_conn_bytes"] = json!(per.round());
            text.push_str(&format!(
                "  broker     RSS {} KiB → {} KiB = {:.0} B per connection\n",
                a, b, per
            ));
        }
        text.push_str(&format!(
            "  idle       {} s; {} connections closed by the broker; {} errors\n",
            plan.duration.as_secs_f64(),
            idle_dropped,
            errors
        ));
        let exit = i32::from(idle_dropped > 0 || errors > 0);
        j["ok"] = json!(exit == 0);
        return Report {
            text,
            json: j,
            exit,
        };
    }

    if plan.scenario == Scenario::Storm {
        let r = out.resume.unwrap_or_default();
        let rate_s = rate(r.resumed as u64, r.secs);
        j["qos"] = json!(plan.qos);
        j["conns"] = json!(plan.storm_conns);
        j["storm"] = json!({
            "close": match plan.storm_close {
                StormClose::Abrupt => "abrupt",
                StormClose::Clean => "clean",
            },
            "offline": r.offline,
            "reconnected": r.resumed,
            "reconnect_failed": r.failed,
            "session_present": r.resumed - r.session_missing,
            "session_missing": r.session_missing,
            "reconnect_s": round3(r.secs),
            "reconnect_rate": rate_s,
            "connack_us": quantiles_us(&reconnack),
            "echoed": r.echoed,
            "echo_failed": r.echo_failed,
        });
        j["lat_us"] = quantiles_us(&latency);
        j["broker_rss_kib_end"] = json!(out.rss_kib[2]);
        j["broker_hwm_kib"] = json!(out.broker_hwm_kib);
        if !samples.is_empty() {
            j["error_samples"] = json!(samples);
        }
        let bad = r.offline < plan.storm_conns
            || r.resumed < r.offline
            || r.session_missing > 0
            || r.echo_failed > 0
            || errors > 0;
        j["ok"] = json!(!bad);
        let rq = |q: f64| reconnack.value_at_quantile(q) as f64 / 1e3;
        text.push_str(&format!(
            "  storm      {} dropped ({:?}), {} reconnected in {:.2} s = {rate_s:.0}/s; CONNACK p50 \
             {:.0} µs p99 {:.0} µs p99.9 {:.0} µs max {:.0} µs\n",
            r.offline,
            plan.storm_close,
            r.resumed,
            r.secs,
            rq(0.5),
            rq(0.99),
            rq(0.999),
            reconnack.max() as f64 / 1e3
        ));
        text.push_str(&format!(
            "  sessions   {} resumed with session present, {} without, {} reconnects failed; \
             {} of {} subscriptions echoed → {}\n",
            r.resumed - r.session_missing,
            r.session_missing,
            r.failed,
            r.echoed,
            r.resumed,
            if bad { "FAIL" } else { "ok" }
        ));
        text.push_str(&format!("  errors     {errors} {}\n", samples.join("; ")));
        return Report {
            text,
            json: j,
            exit: i32::from(bad),
        };
    }

    let v = verdict(plan, out, false);
    let published: u64 = out.sent.iter().sum();
    let in_rate = rate(published, out.publish_secs);
    let out_rate = rate(out.delivered, out.deliver_secs);
    j["qos"] = json!(plan.qos);
    j["pubs"] = json!(plan.pubs.len());
    j["subs"] = json!(plan.sub_filters.len());
    j["payload"] = json!(plan.payload);
    j["rate"] = json!(plan.rate);
    j["tick_us"] = json!(plan.tick_ns / 1000);
    j["inflight"] = json!(plan.inflight);
    j["published"] = json!(published);
    j["expected"] = json!(out.expected);
    j["delivered"] = json!(out.delivered);
    j["publish_s"] = json!(round3(out.publish_secs));
    j["in_msgs_per_s"] = json!(in_rate);
    j["out_msgs_per_s"] = json!(out_rate);
    j["in_mb_per_s"] = json!(mb(in_rate, plan.payload));
    j["out_mb_per_s"] = json!(mb(out_rate, plan.payload));
    j["lat_us"] = quantiles_us(&latency);
    j["lost"] = json!(v.lost);
    j["duplicated"] = json!(v.tally.duplicated + v.tally.qos1_unflagged);
    j["qos1_unflagged_dups"] = json!(v.tally.qos1_unflagged);
    j["qos1_dups"] = json!(v.tally.qos1_dups);
    j["out_of_order"] = json!(v.tally.out_of_order);
    j["phantom"] = json!(v.phantom);
    j["broker_rss_kib_end"] = json!(out.rss_kib[2]);
    j["broker_hwm_kib"] = json!(out.broker_hwm_kib);
    if !samples.is_empty() {
        j["error_samples"] = json!(samples);
    }
    let mut bad = (plan.qos >= 1 && v.lost > 0)
        || v.tally.out_of_order > 0
        || v.tally.duplicated > 0
        || v.tally.qos1_unflagged > 0
        || v.phantom > 0;
    let mut extra = String::new();
    if let Some(r) = out.resume.filter(|_| plan.scenario == Scenario::Backlog) {
        let sessions = plan.sub_filters.len();
        let per_session = published.div_ceil(sessions.max(1) as u64);
        let drain_rate = rate(out.delivered, r.drain_secs);
        j["backlog"] = json!({
            "sessions": sessions,
            "queued": published,
            "per_session": per_session,
            "offline": r.offline,
            "resumed": r.resumed,
            "reconnect_failed": r.failed,
            "session_missing": r.session_missing,
            "reconnect_s": round3(r.secs),
            "reconnect_connack_us": quantiles_us(&reconnack),
            "drain_s": round3(r.drain_secs),
            "drain_msgs_per_s": drain_rate,
        });
        bad |= r.resumed < sessions || r.session_missing > 0;
        extra.push_str(&format!(
            "  backlog    {published} msgs queued for {sessions} offline sessions ({per_session} \
             each{}); {} resumed in {:.2} s ({} without their session); drained in {:.2} s = \
             {drain_rate:.0} msgs/s\n",
            if per_session > RINGMQ_DEFAULT_QUEUE {
                ", more than ringmq's default queue of 1000: expect loss"
            } else {
                ""
            },
            r.resumed,
            r.secs,
            r.session_missing,
            r.drain_secs
        ));
    }
    if plan.slow_subs > 0 {
        let s = verdict(plan, out, true);
        let slow_expected = published * plan.slow_subs as u64;
        let slow_rate = rate(out.slow_delivered, out.slow_secs);
        let fast_per_sub = (out_rate / plan.fast_subs().max(1) as f64).round();
        j["slow"] = json!({
            "subs": plan.slow_subs,
            "factor": plan.slow_factor,
            "fast_subs": plan.fast_subs(),
            "fast_msgs_per_s_per_sub": fast_per_sub,
            "received": out.slow_delivered,
            "unique": s.unique,
            "expected": slow_expected,
            "missed": s.lost,
            "msgs_per_s": slow_rate,
            "duplicated": s.tally.duplicated + s.tally.qos1_unflagged,
            "out_of_order": s.tally.out_of_order,
        });
        extra.push_str(&format!(
            "  slow       {} slow subscriber(s) at {} of the pace: received {} of {} ({} \
             dropped or never read) = {slow_rate:.0} msgs/s; fast ones {fast_per_sub:.0} msgs/s \
             each (not judged: slow)\n",
            plan.slow_subs, plan.slow_factor, out.slow_delivered, slow_expected, s.lost
        ));
    }
    j["ok"] = json!(!bad);

    let lq = |q: f64| latency.value_at_quantile(q) as f64 / 1e3;
    text.push_str(&format!(
        "  published  {published} msgs in {:.2} s = {in_rate:.0} msgs/s, {:.2} MB/s\n",
        out.publish_secs,
        mb(in_rate, plan.payload)
    ));
    text.push_str(&format!(
        "  delivered  {} of {} msgs{}, last at {:.2} s = {out_rate:.0} msgs/s, {:.2} MB/s\n",
        out.delivered,
        out.expected,
        match plan.scenario {
            Scenario::Backlog => " (from the resume)",
            Scenario::Slow => " to the fast subscribers",
            _ => "",
        },
        out.deliver_secs,
        mb(out_rate, plan.payload)
    ));
    text.push_str(&format!(
        "  {}    p50 {:.0} µs  p99 {:.0} µs  p99.9 {:.0} µs  max {:.0} µs\n",
        // A backlog's messages wait offline: their publish → delivery time is their age.
        if plan.scenario == Scenario::Backlog {
            "age    "
        } else {
            "latency"
        },
        lq(0.5),
        lq(0.99),
        lq(0.999),
        latency.max() as f64 / 1e3
    ));
    text.push_str(&format!(
        "  delivery   lost {}  duplicated {}  QoS 1 repeats {}  out-of-order {}  phantom {}  → {}\n",
        v.lost,
        v.tally.duplicated + v.tally.qos1_unflagged,
        v.tally.qos1_dups,
        v.tally.out_of_order,
        v.phantom,
        if bad { "FAIL" } else { "ok" }
    ));
    text.push_str(&extra);
    text.push_str(&format!("  errors     {errors} {}\n", samples.join("; ")));
    if let Some(rss) = out.rss_kib[2] {
        text.push_str(&format!(
            "  broker     RSS {rss} KiB at end, peak {} KiB\n",
            out.broker_hwm_kib.unwrap_or(0)
        ));
    }
    Report {
        text,
        json: j,
        exit: i32::from(bad),
    }
}

/// ringmq's default `--max-queued-messages`: a backlog beyond it per session is dropped.
const RINGMQ_DEFAULT_QUEUE: u64 = 1000;

/// Sums the verdicts of the fast receivers (`slow` false) or of the slow ones (`slow` true)
/// against what the publishers say they sent.
fn verdict(plan: &Plan, out: &Outcome, slow: bool) -> Verdict {
    let mut total = Verdict::default();
    let mut add = |v: Verdict| {
        total.unique += v.unique;
        total.lost += v.lost;
        total.phantom += v.phantom;
        total.tally.received += v.tally.received;
        total.tally.duplicated += v.tally.duplicated;
        total.tally.qos1_dups += v.tally.qos1_dups;
        total.tally.qos1_unflagged += v.tally.qos1_unflagged;
        total.tally.out_of_order += v.tally.out_of_order;
    };
    let sent = |r: std::ops::Range<u32>| r.map(|p| (p, out.sent[p as usize]));
    for t in &out.threads {
        for (i, c) in t.checkers.iter().filter(|(i, _)| plan.is_slow(*i) == slow) {
            if let Some(r) = plan.sources_of(*i) {
                add(c.verdict(sent(r)));
            }
        }
        if let Some(g) = t.group.as_ref().filter(|_| !slow) {
            add(g.verdict(sent(0..plan.pubs.len() as u32)));
        }
    }
    total
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

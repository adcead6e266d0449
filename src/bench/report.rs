//! Judging and printing a run: merges the threads' histograms and checkers, computes rates,
//! and renders a short human report plus one JSON line (the line scripts compare).

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::check::Verdict;
use super::cli::{Plan, Scenario};
use super::run::{new_hist, Outcome};
use crate::proto::ProtocolVersion;

/// The report of one run and the process exit code it implies.
pub struct Report {
    /// Human-readable lines (empty when there is nothing beyond the JSON to say).
    pub text: String,
    pub json: Value,
    /// 0 = delivery checked out; 1 = loss at QoS ≥ 1, reordering, or duplicates beyond the
    /// QoS rules; 2 = the run could not be set up.
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
    let mut errors = 0;
    let mut samples = Vec::new();
    let mut idle_dropped = 0;
    for t in &out.threads {
        let _ = latency.add(&t.latency);
        let _ = connack.add(&t.connack);
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
        Scenario::Conn => format!(
            "ringmq-bench conn: {} clients, MQTT {}, {} thread(s)",
            plan.idle_conns,
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
            "shared subscriptions ($share/...) not yet supported by ringmq (SUBACK 0x80)"
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

    let v = verdict(plan, out);
    let published: u64 = out.sent.iter().sum();
    let in_rate = rate(published, out.publish_secs);
    let out_rate = rate(out.delivered, out.deliver_secs);
    j["qos"] = json!(plan.qos);
    j["pubs"] = json!(plan.pubs.len());
    j["subs"] = json!(plan.sub_filters.len());
    j["payload"] = json!(plan.payload);
    j["rate"] = json!(plan.rate);
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
    j["duplicated"] = json!(v.tally.duplicated);
    j["qos1_dups"] = json!(v.tally.qos1_dups);
    j["out_of_order"] = json!(v.tally.out_of_order);
    j["phantom"] = json!(v.phantom);
    j["broker_rss_kib_end"] = json!(out.rss_kib[2]);
    j["broker_hwm_kib"] = json!(out.broker_hwm_kib);
    if !samples.is_empty() {
        j["error_samples"] = json!(samples);
    }
    let bad = (plan.qos >= 1 && v.lost > 0)
        || v.tally.out_of_order > 0
        || v.tally.duplicated > 0
        || v.phantom > 0;
    j["ok"] = json!(!bad);

    let lq = |q: f64| latency.value_at_quantile(q) as f64 / 1e3;
    text.push_str(&format!(
        "  published  {published} msgs in {:.2} s = {in_rate:.0} msgs/s, {:.2} MB/s\n",
        out.publish_secs,
        mb(in_rate, plan.payload)
    ));
    text.push_str(&format!(
        "  delivered  {} of {} msgs, last at {:.2} s = {out_rate:.0} msgs/s, {:.2} MB/s\n",
        out.delivered,
        out.expected,
        out.deliver_secs,
        mb(out_rate, plan.payload)
    ));
    text.push_str(&format!(
        "  latency    p50 {:.0} µs  p99 {:.0} µs  p99.9 {:.0} µs  max {:.0} µs\n",
        lq(0.5),
        lq(0.99),
        lq(0.999),
        latency.max() as f64 / 1e3
    ));
    text.push_str(&format!(
        "  delivery   lost {}  duplicated {}  QoS 1 repeats {}  out-of-order {}  phantom {}  → {}\n",
        v.lost,
        v.tally.duplicated,
        v.tally.qos1_dups,
        v.tally.out_of_order,
        v.phantom,
        if bad { "FAIL" } else { "ok" }
    ));
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

/// Sums every receiver's verdict against what the publishers say they sent.
fn verdict(plan: &Plan, out: &Outcome) -> Verdict {
    let mut total = Verdict::default();
    let mut add = |v: Verdict| {
        total.unique += v.unique;
        total.lost += v.lost;
        total.phantom += v.phantom;
        total.tally.received += v.tally.received;
        total.tally.duplicated += v.tally.duplicated;
        total.tally.qos1_dups += v.tally.qos1_dups;
        total.tally.out_of_order += v.tally.out_of_order;
    };
    let sent = |r: std::ops::Range<u32>| r.map(|p| (p, out.sent[p as usize]));
    for t in &out.threads {
        for (i, c) in &t.checkers {
            if let Some(r) = plan.sources_of(*i) {
                add(c.verdict(sent(r)));
            }
        }
        if let Some(g) = &t.group {
            add(g.verdict(sent(0..plan.pubs.len() as u32)));
        }
    }
    total
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

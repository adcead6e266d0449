//! Command line of `ringmq-bench` and the plan derived from it: who subscribes to what, who
//! publishes where, and which publishers each subscriber must hear from. Pure.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Parser, ValueEnum};

use super::header::HEADER_LEN;
use crate::proto::ProtocolVersion;

/// Scenario names follow EMQ's open MQTT benchmark, so results compare with published ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// N clients connect at `--connect-rate` and stay idle for `--duration`.
    Conn,
    /// N subscribers on `devices/<i>/cmd`, N publishers each sending to one of them.
    P2p,
    /// P publishers on `sensors/<i>/data` → S subscribers on `sensors/+/data`.
    Fanin,
    /// 1 publisher → S subscribers on one topic.
    Fanout,
    /// P publishers → one `$share/bench/sensors/+/data` group of S members.
    Shared,
    /// Large payloads (default 1 MiB) from one publisher to K subscribers.
    Large,
    /// S persistent sessions subscribe, go offline, P publishers fill their queues, then
    /// the sessions resume and drain the backlog.
    Backlog,
    /// N persistent sessions (one subscription each) drop their connections, then all
    /// reconnect at once; every resume must find its session.
    Storm,
    /// Fan-out where one subscriber reads at `--slow-factor` of the others' pace.
    Slow,
}

impl Scenario {
    /// The name on the command line and in the JSON summary.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Conn => "conn",
            Scenario::P2p => "p2p",
            Scenario::Fanin => "fanin",
            Scenario::Fanout => "fanout",
            Scenario::Shared => "shared",
            Scenario::Large => "large",
            Scenario::Backlog => "backlog",
            Scenario::Storm => "storm",
            Scenario::Slow => "slow",
        }
    }
}

/// How storm clients leave before they all come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StormClose {
    /// Close the socket without DISCONNECT (as a crashed or cut-off client would).
    Abrupt,
    /// Send DISCONNECT and wait for the broker to close the connection.
    Clean,
}

/// End-to-end MQTT load generator for ringmq (and any other broker on loopback).
///
/// Every run is bounded by `--duration` and `--messages`, then waits `--drain` seconds for
/// messages in flight, checks delivery (loss, duplicates, per-publisher order) and prints a
/// report ending in one JSON line. Exit code 1 when messages were lost at QoS ≥ 1, reordered,
/// or duplicated beyond the QoS rules (`storm`: a session not resumed); 2 when the run could
/// not be set up.
#[derive(Debug, Clone, Parser)]
#[command(name = "ringmq-bench")]
pub struct Args {
    /// What to measure.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Clients for `conn` and `storm` [default: 1000].
    #[arg(long)]
    pub conns: Option<usize>,
    /// Publishers (`p2p`, `backlog`: pairs) [default: p2p 100, fanin 100, shared 10,
    /// backlog 20, fanout/large/slow 1].
    #[arg(long)]
    pub pubs: Option<usize>,
    /// Subscribers [default: fanin 1, fanout 100, shared 10, large 10, slow 10 (one of them
    /// slow); p2p and backlog = --pubs].
    #[arg(long)]
    pub subs: Option<usize>,
    /// QoS of publishes and subscriptions [default: backlog and storm 1, others 0].
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: Option<u8>,
    /// Payload bytes, at least 20 (the header) [default: 32; large: 1048576].
    #[arg(long)]
    pub payload: Option<usize>,
    /// Messages per second per publisher, paced per message (publishers staggered within
    /// the interval); 0 = as fast as the window allows.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// With `--rate`: wake paced publishers only on a common grid of this many microseconds
    /// and send every message due by then back to back (each stamped when it leaves), instead
    /// of one timer wake-up per message. 0 = per message. A generator thread pacing 100k+
    /// msgs/s spends its core on timer wake-ups otherwise (PERF.md, latency).
    #[arg(long, default_value_t = 0)]
    pub tick_us: u64,
    /// Unacknowledged QoS 1/2 publishes per publisher (capped by a 5.0 Receive Maximum).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub inflight: u16,
    /// Seconds to publish (`conn`: to stay idle).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Total messages over all publishers (split evenly); the run also stops at --duration
    /// [default: backlog 10000 (500 per session with the default 20 sessions, within
    /// ringmq's default queue of 1000 per session); others unbounded].
    #[arg(long)]
    pub messages: Option<u64>,
    /// Seconds to wait after publishing stops for messages in flight (ends early once every
    /// expected delivery arrived) [default: 2; backlog: 10, measured from the resume].
    #[arg(long)]
    pub drain: Option<f64>,
    /// `slow`: the slow subscriber processes this fraction of the messages each fast one
    /// has received so far (a token bucket filled by the others' progress), in (0, 1].
    #[arg(long, default_value_t = 0.01)]
    pub slow_factor: f64,
    /// `storm`: how the clients leave before reconnecting.
    #[arg(long, value_enum, default_value_t = StormClose::Abrupt)]
    pub storm_close: StormClose,
    /// Broker process id: its RSS is read from /proc/PID/status.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// MQTT protocol level: 4 (3.1.1) or 5.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub version: u8,
    /// Print only the JSON summary line.
    #[arg(long)]
    pub json: bool,
    /// Generator threads (one glommio executor each).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// New connections per second over all threads; 0 = as fast as `--connect-concurrency`
    /// handshakes in flight allow. Applies to the reconnects of `backlog` and `storm` too.
    #[arg(long, default_value_t = 0)]
    pub connect_rate: u64,
    /// Handshakes in flight per thread.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Connections per source address: past that, the next one uses 127.0.0.(x+1), so one
    /// address's ephemeral port range is never the limit.
    #[arg(long, default_value_t = 25_000)]
    pub conns_per_addr: usize,
    /// First source address for IPv4 destinations (bound before connect).
    #[arg(long, default_value = "127.0.0.1")]
    pub source_base: std::net::Ipv4Addr,
    /// Keep-alive seconds sent in CONNECT (0 = off; the generator sends no PINGREQ).
    #[arg(long, default_value_t = 0)]
    pub keepalive: u16,
    /// Client identifier prefix [default: rb<pid>], so concurrent generators never take
    /// over each other's sessions.
    #[arg(long)]
    pub client_prefix: Option<String>,
    /// Subscribers use persistent sessions (clean session 0; 5.0: a session expiry) while
    /// online, so a durable broker logs every delivery to them, not only the message.
    #[arg(long)]
    pub persistent: bool,
    /// `backlog`: leave the sessions offline with their queues full and end after publishing
    /// (for measuring a durable broker's recovery of the queued messages: kill and restart
    /// it afterwards). Nothing is expected to be delivered.
    #[arg(long)]
    pub hold_offline: bool,
    /// Prefix for every topic (e.g. `run7/`), to keep concurrent runs apart.
    #[arg(long, default_value = "")]
    pub topic_prefix: String,
}

/// Which publishers a subscriber must hear from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Subscriber `i` hears publisher `i` only (`p2p`, `backlog`).
    Own,
    /// Every subscriber hears every publisher.
    All,
    /// The subscribers form one shared group: each message reaches exactly one of them.
    Group,
}

/// The resolved run: every default applied, every topic spelled out.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What is measured.
    pub scenario: Scenario,
    /// Where the broker listens.
    pub broker: SocketAddr,
    /// MQTT protocol level of every client.
    pub version: ProtocolVersion,
    /// QoS of every publish and subscription.
    pub qos: u8,
    /// Payload bytes of every publish (header included).
    pub payload: usize,
    /// Clients of the `conn` scenario (0 otherwise).
    pub idle_conns: usize,
    /// Clients of the `storm` scenario (0 otherwise); client `c` subscribes to
    /// [`Plan::storm_topic`]`(c)`.
    pub storm_conns: usize,
    /// Topic filter of each subscriber.
    pub sub_filters: Vec<String>,
    /// Topic and message quota (`u64::MAX` = until the deadline) of each publisher.
    pub pubs: Vec<(String, u64)>,
    /// Who hears whom.
    pub audience: Audience,
    /// Subscribers use persistent sessions (clean session 0) and go offline before the
    /// publishing starts (`backlog`).
    pub offline_subs: bool,
    /// `backlog --hold-offline`: no resume; nothing is expected to be delivered.
    pub hold_offline: bool,
    /// Subscribers use persistent sessions while online (`--persistent`).
    pub persistent_subs: bool,
    /// The last `slow_subs` subscribers are slow (`slow`: 1); they are left out of the
    /// expected deliveries and the verdict.
    pub slow_subs: usize,
    /// Fraction of the fast subscribers' pace a slow subscriber keeps.
    pub slow_factor: f64,
    /// How storm clients leave.
    pub storm_close: StormClose,
    /// Messages per second per publisher (0 = unpaced).
    pub rate: u64,
    /// Pacing grid in nanoseconds (0 = wake per message).
    pub tick_ns: u64,
    /// QoS 1/2 window per publisher.
    pub inflight: u16,
    /// Publishing (or idle) time.
    pub duration: Duration,
    /// Wait for messages in flight once publishing stops.
    pub drain: Duration,
    /// Generator threads.
    pub threads: usize,
    /// New connections per second (0 = unpaced).
    pub connect_rate: u64,
    /// Handshakes in flight per thread.
    pub connect_concurrency: usize,
    /// Connections per loopback source address.
    pub conns_per_addr: usize,
    /// First loopback source address.
    pub source_base: std::net::Ipv4Addr,
    /// Keep-alive sent in CONNECT.
    pub keepalive: u16,
    /// Client identifier prefix.
    pub client_prefix: String,
    /// Topic prefix of the storm topics (the other topics carry it already).
    pub topic_prefix: String,
    /// Broker process to read memory figures from.
    pub broker_pid: Option<u32>,
    /// Largest packet the generator's decoder accepts.
    pub max_packet: usize,
}

impl Plan {
    /// Applies the per-scenario defaults; `Err` explains an impossible combination.
    pub fn from_args(a: &Args) -> Result<Plan, String> {
        let t = |s: &str| format!("{}{s}", a.topic_prefix);
        let payload = a.payload.unwrap_or(match a.scenario {
            Scenario::Large => 1 << 20,
            _ => 32,
        });
        let no_payload = matches!(a.scenario, Scenario::Conn);
        if payload < HEADER_LEN && !no_payload {
            return Err(format!(
                "--payload must be at least {HEADER_LEN} (the header)"
            ));
        }
        if a.threads == 0 || a.connect_concurrency == 0 || a.conns_per_addr == 0 {
            return Err("--threads, --connect-concurrency and --conns-per-addr must be > 0".into());
        }
        if !(a.slow_factor > 0.0 && a.slow_factor <= 1.0) {
            return Err("--slow-factor must be in (0, 1]".into());
        }
        let paired = |default: usize| -> Result<usize, String> {
            let n = a.pubs.or(a.subs).unwrap_or(default);
            if a.subs.is_some_and(|s| s != n) || a.pubs.is_some_and(|p| p != n) {
                return Err(format!(
                    "{} pairs publishers with subscribers: --pubs = --subs",
                    a.scenario.name()
                ));
            }
            Ok(n)
        };
        let (pubs_n, subs_n) = match a.scenario {
            Scenario::Conn | Scenario::Storm => (0, 0),
            Scenario::P2p => (paired(100)?, paired(100)?),
            Scenario::Backlog => (paired(20)?, paired(20)?),
            Scenario::Fanin => (a.pubs.unwrap_or(100), a.subs.unwrap_or(1)),
            Scenario::Fanout => (a.pubs.unwrap_or(1), a.subs.unwrap_or(100)),
            Scenario::Shared => (a.pubs.unwrap_or(10), a.subs.unwrap_or(10)),
            Scenario::Large => (a.pubs.unwrap_or(1), a.subs.unwrap_or(10)),
            Scenario::Slow => (a.pubs.unwrap_or(1), a.subs.unwrap_or(10)),
        };
        let flows = !matches!(a.scenario, Scenario::Conn | Scenario::Storm);
        if flows && (pubs_n == 0 || subs_n == 0) {
            return Err("--pubs and --subs must be > 0".into());
        }
        if a.scenario == Scenario::Slow && subs_n < 2 {
            return Err("slow needs --subs ≥ 2: one slow subscriber and fast ones".into());
        }
        let (sub_filters, pub_topics, audience): (Vec<String>, Vec<String>, Audience) =
            match a.scenario {
                Scenario::Conn | Scenario::Storm => (vec![], vec![], Audience::All),
                Scenario::P2p | Scenario::Backlog => {
                    let root = if a.scenario == Scenario::Backlog {
                        "backlog"
                    } else {
                        "devices"
                    };
                    let topics: Vec<String> =
                        (0..pubs_n).map(|i| t(&format!("{root}/{i}/cmd"))).collect();
                    (topics.clone(), topics, Audience::Own)
                }
                Scenario::Fanin | Scenario::Shared => {
                    let filter = if a.scenario == Scenario::Shared {
                        format!("$share/bench/{}", t("sensors/+/data"))
                    } else {
                        t("sensors/+/data")
                    };
                    let audience = if a.scenario == Scenario::Shared {
                        Audience::Group
                    } else {
                        Audience::All
                    };
                    (
                        vec![filter; subs_n],
                        (0..pubs_n)
                            .map(|i| t(&format!("sensors/{i}/data")))
                            .collect(),
                        audience,
                    )
                }
                Scenario::Fanout | Scenario::Large | Scenario::Slow => {
                    let topic = t(match a.scenario {
                        Scenario::Large => "large/1",
                        Scenario::Slow => "slow/1",
                        _ => "fanout/1",
                    });
                    (
                        vec![topic.clone(); subs_n],
                        vec![topic; pubs_n],
                        Audience::All,
                    )
                }
            };
        let messages = match a.scenario {
            Scenario::Backlog => Some(a.messages.unwrap_or(10_000)),
            _ => a.messages,
        };
        let pubs = pub_topics
            .into_iter()
            .enumerate()
            .map(|(i, topic)| (topic, quota(messages, pubs_n, i)))
            .collect();
        let broker = SocketAddr::new(a.host, a.port);
        let secs = |s: f64, what: &str| {
            Duration::try_from_secs_f64(s).map_err(|_| format!("{what}: not a duration: {s}"))
        };
        let drain = a.drain.unwrap_or(match a.scenario {
            Scenario::Backlog => 10.0,
            _ => 2.0,
        });
        let qos = a.qos.unwrap_or(match a.scenario {
            Scenario::Backlog | Scenario::Storm => 1,
            _ => 0,
        });
        Ok(Plan {
            scenario: a.scenario,
            broker,
            version: if a.version == 5 {
                ProtocolVersion::V5
            } else {
                ProtocolVersion::V311
            },
            qos,
            payload,
            idle_conns: if a.scenario == Scenario::Conn {
                a.conns.unwrap_or(1000)
            } else {
                0
            },
            storm_conns: if a.scenario == Scenario::Storm {
                a.conns.unwrap_or(1000)
            } else {
                0
            },
            sub_filters,
            pubs,
            audience,
            offline_subs: a.scenario == Scenario::Backlog,
            persistent_subs: a.persistent,
            hold_offline: a.hold_offline && a.scenario == Scenario::Backlog,
            slow_subs: usize::from(a.scenario == Scenario::Slow),
            slow_factor: a.slow_factor,
            storm_close: a.storm_close,
            rate: a.rate,
            tick_ns: a.tick_us.saturating_mul(1000),
            inflight: a.inflight,
            duration: secs(a.duration, "--duration")?,
            drain: secs(drain, "--drain")?,
            threads: a.threads,
            connect_rate: a.connect_rate,
            connect_concurrency: a.connect_concurrency,
            conns_per_addr: a.conns_per_addr,
            source_base: a.source_base,
            keepalive: a.keepalive,
            client_prefix: a
                .client_prefix
                .clone()
                .unwrap_or_else(|| format!("rb{}", std::process::id())),
            topic_prefix: a.topic_prefix.clone(),
            broker_pid: a.broker_pid,
            max_packet: (payload.max(HEADER_LEN) + 64 * 1024)
                .min(crate::proto::codec::MAX_REMAINING_LENGTH),
        })
    }

    /// Every client of the run: subscribers first, then publishers, then idle or storm
    /// clients.
    pub fn clients(&self) -> usize {
        self.sub_filters.len() + self.pubs.len() + self.idle_conns + self.storm_conns
    }

    /// The generator thread that runs subscriber `i`. A shared group lives on thread 0 so
    /// one checker sees every member's deliveries.
    pub fn sub_thread(&self, i: usize) -> usize {
        if self.audience == Audience::Group {
            0
        } else {
            i % self.threads
        }
    }

    /// True if subscriber `i` is a slow one (the last [`Plan::slow_subs`]).
    pub fn is_slow(&self, i: usize) -> bool {
        i >= self.sub_filters.len() - self.slow_subs.min(self.sub_filters.len())
    }

    /// Subscribers that are not slow.
    pub fn fast_subs(&self) -> usize {
        self.sub_filters.len() - self.slow_subs.min(self.sub_filters.len())
    }

    /// The topic storm client `c` subscribes to (and echoes one message on).
    pub fn storm_topic(&self, c: usize) -> String {
        format!("{}storm/{c}", self.topic_prefix)
    }

    /// Publishers whose messages subscriber `i` must receive (`None` for a group, which is
    /// judged as a whole against every publisher).
    pub fn sources_of(&self, i: usize) -> Option<std::ops::Range<u32>> {
        match self.audience {
            Audience::Own => Some(i as u32..i as u32 + 1),
            Audience::All => Some(0..self.pubs.len() as u32),
            Audience::Group => None,
        }
    }

    /// Deliveries to the fast subscribers a complete run produces when publisher `p` sent
    /// `sent[p]` messages (slow subscribers are not expected to keep up).
    pub fn expected_deliveries(&self, sent: &[u64]) -> u64 {
        let total: u64 = sent.iter().sum();
        match self.audience {
            Audience::Own | Audience::Group => total,
            Audience::All => total * self.fast_subs() as u64,
        }
    }
}

/// Publisher `i`'s share of `messages` over `n` publishers (the first `messages % n` send
/// one more); `u64::MAX` without a message bound.
fn quota(messages: Option<u64>, n: usize, i: usize) -> u64 {
    match messages {
        None => u64::MAX,
        Some(m) => m / n as u64 + u64::from((i as u64) < m % n as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Plan {
        let mut v = vec!["ringmq-bench"];
        v.extend_from_slice(args);
        Plan::from_args(&Args::try_parse_from(v).unwrap()).unwrap()
    }

    #[test]
    fn message_bound_is_split_over_publishers() {
        let p = plan(&["fanin", "--pubs", "3", "--messages", "10"]);
        let q: Vec<u64> = p.pubs.iter().map(|(_, q)| *q).collect();
        assert_eq!(q, [4, 3, 3]);
        assert_eq!(p.expected_deliveries(&q), 10);
    }

    #[test]
    fn scenarios_spell_out_their_topics() {
        let p = plan(&["p2p", "--pubs", "2"]);
        assert_eq!(p.sub_filters, ["devices/0/cmd", "devices/1/cmd"]);
        assert_eq!(p.sources_of(1), Some(1..2));
        let f = plan(&["fanout", "--subs", "3"]);
        assert_eq!(f.expected_deliveries(&[5]), 15);
        let s = plan(&["shared", "--topic-prefix", "r/"]);
        assert_eq!(s.sub_filters[0], "$share/bench/r/sensors/+/data");
        assert_eq!(s.pubs[9].0, "r/sensors/9/data");
        assert_eq!(s.sources_of(0), None);
    }

    #[test]
    fn new_scenarios_have_their_defaults() {
        let b = plan(&["backlog"]);
        assert_eq!((b.qos, b.sub_filters.len(), b.pubs.len()), (1, 20, 20));
        assert!(b.offline_subs);
        assert_eq!(b.pubs[3], ("backlog/3/cmd".to_string(), 500));
        assert_eq!(b.sources_of(3), Some(3..4));
        assert_eq!(b.drain, Duration::from_secs(10));
        let s = plan(&["storm", "--conns", "7", "--topic-prefix", "x/"]);
        assert_eq!((s.qos, s.storm_conns, s.clients()), (1, 7, 7));
        assert_eq!(s.storm_topic(6), "x/storm/6");
        let w = plan(&["slow", "--subs", "4", "--pubs", "2"]);
        assert_eq!((w.qos, w.slow_subs, w.fast_subs()), (0, 1, 3));
        assert!(w.is_slow(3) && !w.is_slow(2));
        assert_eq!(
            w.expected_deliveries(&[5, 5]),
            30,
            "the slow one is not expected"
        );
        let f = plan(&["fanout", "--subs", "3"]);
        assert!(!f.is_slow(2));
    }

    #[test]
    fn new_scenarios_reject_impossible_settings() {
        for args in [
            &["slow", "--subs", "1"][..],
            &["slow", "--slow-factor", "0"],
            &["slow", "--slow-factor", "1.5"],
            &["backlog", "--pubs", "2", "--subs", "3"],
        ] {
            let mut v = vec!["ringmq-bench"];
            v.extend_from_slice(args);
            let a = Args::try_parse_from(v).unwrap();
            assert!(Plan::from_args(&a).is_err(), "{args:?}");
        }
    }

    #[test]
    fn payload_must_hold_the_header() {
        let a = Args::try_parse_from(["ringmq-bench", "fanout", "--payload", "8"]).unwrap();
        assert!(Plan::from_args(&a).is_err());
        assert!(Args::try_parse_from(["ringmq-bench", "fanout", "--version", "3"]).is_err());
    }
}

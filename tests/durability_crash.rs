//! Crash test for the durable log (issue 5): the real broker binary is SIGKILLed at random
//! moments while QoS 1 and QoS 2 publishers and persistent subscribers keep traffic flowing,
//! restarted on the same data directory (sometimes with another `--shards`), and at the end
//! every message the broker ACKNOWLEDGED must have reached every subscriber.
//!
//! What "acknowledged" means: PUBACK for QoS 1 (§4.3.2); PUBREC for QoS 2 (the broker has the
//! message: from then on the publisher sends only PUBREL, never the PUBLISH again
//! [MQTT-4.3.3-1]).
//!
//! What "reached" means: what the subscribing APPLICATION sees. Subscribers implement
//! MQTT 3.1.1 §4.3.3 "method B" on the receiving side: a QoS 2 PUBLISH is handed to the
//! application when its packet id is first seen and the id is remembered until PUBREL; a
//! PUBLISH re-sent with the same id before that is the same message [MQTT-4.3.3-2]. That
//! state outlives the TCP connection, as the session does [MQTT-4.1.0-1].
//!
//! Checks: every acknowledged (publisher, sequence) delivered to every subscriber at least
//! once; no message delivered twice at QoS 2 (exactly once, §4.3.3); duplicates at QoS 1 are
//! allowed (§4.3.2). Every reconnect of a persistent session must find it (session present
//! 1, [MQTT-3.2.2-2]), and both sides re-send unacknowledged PUBLISH/PUBREL with their
//! original packet ids [MQTT-4.4.0-1].
//!
//! The schedule is random but seeded: the seed is printed, `RINGMQ_CRASH_SEED=<n>` replays
//! it (thread timing still varies).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::ack_v311;
use common::durable::{free_port, publish_bytes, Conn, DataDir, DurableBroker, Login, Msg, Pkt};

/// Kill/restart rounds per durability mode.
const ROUNDS: usize = 8;
/// Unacknowledged publishes a publisher keeps in flight.
const WINDOW: usize = 16;
/// One publish per publisher every PACE (about 500 messages/s each): enough to always be
/// mid-flow at the kill, few enough that the subscribers keep up and no queue limit drops.
const PACE: Duration = Duration::from_millis(2);

/// The two crash tests share the machine's two cores: run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

struct Flags {
    addr: SocketAddr,
    /// Publishers start new messages while set.
    publishing: AtomicBool,
    /// Every client thread returns once set.
    quit: AtomicBool,
}

/// Ends the client threads however the test ends (a failed assertion included).
struct QuitOnDrop(Arc<Flags>);

impl Drop for QuitOnDrop {
    fn drop(&mut self) {
        self.0.quit.store(true, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn pause() {
    std::thread::sleep(Duration::from_millis(20));
}

/// A publish the broker has not finished with yet.
struct Flight {
    seq: u64,
    payload: Vec<u8>,
    /// QoS 2: PUBREC came, PUBREL sent, waiting for PUBCOMP.
    released: bool,
}

#[derive(Default)]
struct PubLog {
    /// Sequences the broker acknowledged (PUBACK / PUBREC).
    acked: BTreeSet<u64>,
    /// Next sequence to send.
    sent: u64,
    /// By packet id.
    flights: BTreeMap<u16, Flight>,
    connects: usize,
    lost_sessions: usize,
    /// Negative acknowledgements (5.0 reason codes only; never expected).
    refused: Vec<String>,
}

fn publisher(name: &'static str, qos: u8, flags: Arc<Flags>, log: Arc<Mutex<PubLog>>, seed: u64) {
    let mut rng = Rng::new(seed);
    let id = format!("dt-{name}");
    let topic = format!("dt/{name}");
    let mut next_pkid: u16 = 0;
    while !flags.quit.load(Ordering::SeqCst) {
        let Ok((mut conn, present, 0)) = Conn::open(flags.addr, &id, Login::V311) else {
            pause();
            continue;
        };
        // [MQTT-4.4.0-1] re-send unacknowledged PUBLISH (DUP=1 [MQTT-3.3.1-1]) and PUBREL
        // with their original packet ids.
        let resend: Vec<Vec<u8>> = {
            let mut l = lock(&log);
            if l.connects > 0 && !present {
                l.lost_sessions += 1;
            }
            l.connects += 1;
            l.flights
                .iter()
                .map(|(&pkid, f)| {
                    if f.released {
                        ack_v311(0x62, pkid)
                    } else {
                        let m = msg(&topic, qos, true, pkid, &f.payload);
                        publish_bytes(false, &m)
                    }
                })
                .collect()
        };
        if resend.iter().any(|b| conn.send(b).is_err()) {
            continue;
        }
        let mut next_send = Instant::now();
        while !flags.quit.load(Ordering::SeqCst) {
            let now = Instant::now();
            if flags.publishing.load(Ordering::SeqCst) && now >= next_send {
                let mut l = lock(&log);
                if l.flights.len() < WINDOW {
                    let seq = l.sent;
                    l.sent += 1;
                    next_pkid = next_pkid % u16::MAX + 1;
                    while l.flights.contains_key(&next_pkid) {
                        next_pkid = next_pkid % u16::MAX + 1;
                    }
                    // Padding of varied length so records straddle segment ends.
                    let mut payload = format!("{name}:{seq}:").into_bytes();
                    payload.resize(payload.len() + rng.range(16, 600) as usize, b'x');
                    let m = msg(&topic, qos, false, next_pkid, &payload);
                    // A flight from the moment a byte may have left: if the write fails,
                    // the broker may still have it, so it is re-sent after reconnecting.
                    l.flights.insert(
                        next_pkid,
                        Flight {
                            seq,
                            payload,
                            released: false,
                        },
                    );
                    drop(l);
                    if conn.send(&publish_bytes(false, &m)).is_err() {
                        break;
                    }
                    next_send = (next_send + PACE)
                        .max(now.checked_sub(Duration::from_millis(50)).unwrap_or(now));
                }
            }
            let p = match conn.recv(Duration::from_millis(2)) {
                Err(_) => break,
                Ok(None) => continue,
                Ok(Some(p)) => p,
            };
            let mut l = lock(&log);
            let reply = match p {
                Pkt::PubAck { pkid, reason } if qos == 1 => {
                    if let Some(f) = l.flights.remove(&pkid) {
                        if reason < 0x80 {
                            l.acked.insert(f.seq);
                        } else {
                            l.refused.push(format!("seq {} PUBACK {reason:#x}", f.seq));
                        }
                    }
                    None
                }
                Pkt::PubRec { pkid, reason } if qos == 2 => match l.flights.get_mut(&pkid) {
                    Some(f) if reason >= 0x80 => {
                        let seq = f.seq;
                        l.flights.remove(&pkid);
                        l.refused.push(format!("seq {seq} PUBREC {reason:#x}"));
                        None
                    }
                    Some(f) => {
                        f.released = true;
                        let seq = f.seq;
                        l.acked.insert(seq);
                        Some(ack_v311(0x62, pkid))
                    }
                    None => None,
                },
                Pkt::PubComp { pkid } if qos == 2 => {
                    if l.flights.get(&pkid).is_some_and(|f| f.released) {
                        l.flights.remove(&pkid);
                    }
                    None
                }
                _ => None,
            };
            drop(l);
            if reply.is_some_and(|r| conn.send(&r).is_err()) {
                break;
            }
        }
    }
}

fn msg(topic: &str, qos: u8, dup: bool, pkid: u16, payload: &[u8]) -> Msg {
    Msg {
        topic: topic.into(),
        qos,
        dup,
        retain: false,
        pkid,
        payload: payload.to_vec(),
    }
}

#[derive(Default)]
struct SubLog {
    /// (publisher, sequence) → (times handed to the application, QoS it came at).
    got: HashMap<(String, u64), (u32, u8)>,
    connects: usize,
    lost_sessions: usize,
    /// Subscribed (SUBACK received) at least once.
    ready: bool,
    /// Protocol surprises (a packet id reused for another message before PUBREL, ...).
    odd: Vec<String>,
}

/// `name:seq:padding` → (name, seq).
fn key_of(payload: &[u8]) -> Option<(String, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(3, ':');
    let name = parts.next()?.to_string();
    let seq = parts.next()?.parse().ok()?;
    Some((name, seq))
}

fn subscriber(
    name: &'static str,
    login: Login,
    qos: u8,
    flags: Arc<Flags>,
    log: Arc<Mutex<SubLog>>,
) {
    let id = format!("dt-{name}");
    // Method B receiver state: packet id → message, from first PUBLISH until PUBREL.
    let mut awaiting_rel: HashMap<u16, (String, u64)> = HashMap::new();
    let mut subscribed = false;
    while !flags.quit.load(Ordering::SeqCst) {
        let Ok((mut conn, present, 0)) = Conn::open(flags.addr, &id, login) else {
            pause();
            continue;
        };
        {
            let mut l = lock(&log);
            if l.connects > 0 && !present {
                // The broker lost the session: its state is gone, start over (and count it).
                l.lost_sessions += 1;
                awaiting_rel.clear();
                subscribed = false;
            }
            l.connects += 1;
        }
        if !subscribed {
            let sub = if login.v5 {
                common::subs::subscribe_v5(1, None, &[("dt/#", qos)])
            } else {
                common::subscribe_packet(1, &[("dt/#", qos)])
            };
            if conn.send(&sub).is_err() {
                continue;
            }
            subscribed = true;
        }
        while !flags.quit.load(Ordering::SeqCst) {
            let p = match conn.recv(Duration::from_millis(20)) {
                Err(_) => break,
                Ok(None) => continue,
                Ok(Some(p)) => p,
            };
            let mut l = lock(&log);
            let reply = match p {
                Pkt::SubAck { codes, .. } => {
                    if codes != [qos] {
                        l.odd.push(format!("SUBACK {codes:?}"));
                    }
                    l.ready = true;
                    None
                }
                Pkt::Publish(m) => {
                    let Some(key) = key_of(&m.payload) else {
                        l.odd.push(format!("foreign payload on {}", m.topic));
                        continue;
                    };
                    let deliver = match m.qos {
                        2 => match awaiting_rel.get(&m.pkid) {
                            None => {
                                awaiting_rel.insert(m.pkid, key.clone());
                                true
                            }
                            Some(k) if *k == key => false,
                            Some(k) => {
                                l.odd.push(format!(
                                    "packet id {} reused for {key:?} while {k:?} awaits PUBREL",
                                    m.pkid
                                ));
                                true
                            }
                        },
                        _ => true,
                    };
                    if deliver {
                        let e = l.got.entry(key).or_insert((0, m.qos));
                        e.0 += 1;
                    }
                    match m.qos {
                        1 => Some(ack_v311(0x40, m.pkid)),
                        2 => Some(ack_v311(0x50, m.pkid)),
                        _ => None,
                    }
                }
                Pkt::PubRel { pkid } => {
                    awaiting_rel.remove(&pkid);
                    Some(ack_v311(0x70, pkid))
                }
                _ => None,
            };
            drop(l);
            if reply.is_some_and(|r| conn.send(&r).is_err()) {
                break;
            }
        }
    }
}

/// Wait (at most `limit`) until `done` holds; whether it did.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// A persistent session not found on reconnect [MQTT-3.2.2-2], as a problem line.
fn lost(role: &str, name: &str, lost: usize, connects: usize) -> Option<String> {
    (lost > 0).then(|| {
        format!(
            "{role} {name}: session lost on {lost} of {} reconnects [MQTT-3.2.2-2]",
            connects - 1
        )
    })
}

fn as_str(a: &[String]) -> Vec<&str> {
    a.iter().map(String::as_str).collect()
}

const PUBLISHERS: [(&str, u8); 2] = [("q1", 1), ("q2", 2)];

fn crash_rounds(mode: &str) {
    let _one_at_a_time = serial();
    let seed = seed();
    println!("durability crash test, --durability {mode}: seed {seed} (RINGMQ_CRASH_SEED)");
    let mut rng = Rng::new(seed);
    let dir = DataDir::new(&format!("crash-{mode}"));
    let port = free_port();
    let args = |shards: u64| -> Vec<String> {
        let shards = shards.to_string();
        [
            "--durability",
            mode,
            "--shards",
            &shards,
            "--max-packet-size",
            "65536",
            "--segment-size",
            "1048576",
            "--max-queued-messages",
            "100000",
            "--max-queued-bytes",
            "268435456",
        ]
        .map(String::from)
        .to_vec()
    };
    let start_args = args(1);
    let mut broker = DurableBroker::start(&dir, port, &as_str(&start_args));
    let flags = Arc::new(Flags {
        addr: broker.addr,
        publishing: AtomicBool::new(true),
        quit: AtomicBool::new(false),
    });
    let _stop_clients = QuitOnDrop(flags.clone());
    let mut threads: Vec<JoinHandle<()>> = Vec::new();

    let subscribers: Vec<(&str, u8, Arc<Mutex<SubLog>>)> = vec![
        ("sub-q1", 1, Default::default()),
        ("sub-q2", 2, Default::default()),
        ("sub-v5-q2", 2, Default::default()),
    ];
    for (name, qos, log) in &subscribers {
        let login = if name.contains("v5") {
            Login::v5(3600)
        } else {
            Login::V311
        };
        let (name, qos, log, flags) = (*name, *qos, log.clone(), flags.clone());
        threads.push(std::thread::spawn(move || {
            subscriber(name, login, qos, flags, log)
        }));
    }
    let all_ready = wait_until(Duration::from_secs(5), || {
        subscribers.iter().all(|(_, _, l)| lock(l).ready)
    });
    assert!(all_ready, "subscribers did not subscribe within 5 s");

    let publishers: Vec<(&str, Arc<Mutex<PubLog>>)> = PUBLISHERS
        .iter()
        .map(|&(name, qos)| {
            let log: Arc<Mutex<PubLog>> = Default::default();
            let (l, f, s) = (log.clone(), flags.clone(), rng.next_u64());
            threads.push(std::thread::spawn(move || publisher(name, qos, f, l, s)));
            (name, log)
        })
        .collect();
    let acked_total = || -> usize { publishers.iter().map(|(_, l)| lock(l).acked.len()).sum() };

    for round in 1..=ROUNDS {
        let run = rng.range(100, 2500);
        std::thread::sleep(Duration::from_millis(run));
        let acked = acked_total();
        broker.kill9();
        std::thread::sleep(Duration::from_millis(rng.range(0, 200)));
        // Both directions of a shard-count change early on, then at random.
        let shards = match round {
            1 => 2,
            2 => 1,
            _ => rng.range(1, 3),
        };
        broker.restart(&as_str(&args(shards)));
        println!("round {round}: SIGKILL after {run} ms ({acked} acked so far); restarted with --shards {shards}");
    }
    std::thread::sleep(Duration::from_millis(500));
    flags.publishing.store(false, Ordering::SeqCst);

    // Let every open flow finish, then every subscriber catch up.
    let flows_done = wait_until(Duration::from_secs(15), || {
        publishers.iter().all(|(_, l)| lock(l).flights.is_empty())
    });
    let want: Vec<(String, u64)> = publishers
        .iter()
        .flat_map(|(name, l)| {
            let acked = lock(l).acked.clone();
            acked.into_iter().map(move |s| (name.to_string(), s))
        })
        .collect();
    wait_until(Duration::from_secs(15), || {
        subscribers
            .iter()
            .all(|(_, _, l)| want.iter().all(|k| lock(l).got.contains_key(k)))
    });
    // A late duplicate would show up now.
    std::thread::sleep(Duration::from_millis(300));
    flags.quit.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("client thread panicked");
    }
    broker.terminate();

    let mut problems = Vec::new();
    if !flows_done {
        problems.push("some publish flows never completed after the last restart".to_string());
    }
    for (name, log) in &publishers {
        let l = lock(log);
        println!(
            "publisher {name}: {} sent, {} acknowledged, {} connections",
            l.sent,
            l.acked.len(),
            l.connects
        );
        problems.extend(lost("publisher", name, l.lost_sessions, l.connects));
        if !l.refused.is_empty() {
            problems.push(format!("publisher {name}: refused {:?}", l.refused));
        }
        assert!(
            l.acked.len() >= ROUNDS * 10,
            "publisher {name}: only {} acknowledged publishes: the test proves nothing",
            l.acked.len()
        );
    }
    for (name, _, log) in &subscribers {
        let l = lock(log);
        let missing: Vec<&(String, u64)> = want.iter().filter(|k| !l.got.contains_key(k)).collect();
        let twice_at_qos2: Vec<_> = l
            .got
            .iter()
            .filter(|(_, &(n, q))| q == 2 && n > 1)
            .collect();
        let qos1_dups = l.got.values().filter(|&&(n, q)| q == 1 && n > 1).count();
        println!(
            "subscriber {name}: {} distinct messages, {qos1_dups} QoS 1 duplicates (allowed), \
             {} connections",
            l.got.len(),
            l.connects
        );
        if !missing.is_empty() {
            problems.push(format!(
                "subscriber {name}: {} of {} acknowledged messages never delivered, e.g. {:?}",
                missing.len(),
                want.len(),
                &missing[..missing.len().min(8)]
            ));
        }
        if !twice_at_qos2.is_empty() {
            problems.push(format!(
                "subscriber {name}: {} QoS 2 messages delivered more than once (exactly once, \
                 §4.3.3), e.g. {:?}",
                twice_at_qos2.len(),
                &twice_at_qos2[..twice_at_qos2.len().min(8)]
            ));
        }
        problems.extend(lost("subscriber", name, l.lost_sessions, l.connects));
        if !l.odd.is_empty() {
            problems.push(format!(
                "subscriber {name}: {:?}",
                &l.odd[..l.odd.len().min(8)]
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "--durability {mode}, seed {seed}:\n{}",
        problems.join("\n")
    );
}

/// `process`: a record is acknowledged once it is in the shared mapping, which outlives a
/// SIGKILL of the process.
#[test]
fn crash_sigkill_loses_no_acknowledged_message_process() {
    crash_rounds("process");
}

/// `batch`: acknowledged after the group commit's fdatasync.
#[test]
fn crash_sigkill_loses_no_acknowledged_message_batch() {
    crash_rounds("batch");
}

/// Small deterministic PRNG (splitmix64) so a failing crash schedule can be replayed from
/// its printed seed.
pub struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`hi > lo`).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}

/// The seed from `RINGMQ_CRASH_SEED`, else from the clock.
fn seed() -> u64 {
    std::env::var("RINGMQ_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

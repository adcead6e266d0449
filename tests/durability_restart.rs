//! Restart tests for the durable log (issue 5): sessions, subscriptions, retained messages
//! and queued messages survive a clean shutdown (SIGTERM) and a crash (SIGKILL), with
//! `--shards` staying the same and changing; expired and clean sessions do not come back;
//! a torn or corrupt journal tail is recovered up to the last valid record and reported;
//! `--durability none` keeps nothing.
//!
//! Each test runs one broker on its own data directory and port, and walks [`PLAN`]: every
//! step stops the broker one way and starts it with the next `--shards`, covering 1→1,
//! 1→2, 2→1 and 2→2 with both kinds of stop. Before a SIGKILL the test only relies on what
//! the broker acknowledged (CONNACK, SUBACK, PUBACK, PUBREC/PUBREL) or, for QoS 0, on a
//! PINGRESP that follows on the same connection.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::durable::{free_port, Client, DataDir, DurableBroker, Login, Msg, Pkt, Stop};
use common::subs::id_on_shard;
use common::WAIT;

/// (how the run ends, `--shards` of the next run); the first run has one shard.
const PLAN: [(Stop, usize); 7] = [
    (Stop::Term, 1),
    (Stop::Kill, 2),
    (Stop::Term, 1),
    (Stop::Kill, 1),
    (Stop::Term, 2),
    (Stop::Kill, 2),
    (Stop::Kill, 1),
];

const QUIET: Duration = Duration::from_millis(300);

fn start(dir: &DataDir, port: u16, shards: usize, extra: &[&str]) -> DurableBroker {
    let shards = shards.to_string();
    let mut args = vec!["--shards", shards.as_str()];
    args.extend_from_slice(extra);
    DurableBroker::start(dir, port, &args)
}

/// Stop the broker as told and start it again with `shards` (and `extra` arguments).
fn bounce(b: &mut DurableBroker, how: Stop, shards: usize, extra: &[&str]) {
    if how == Stop::Term {
        assert_eq!(b.stop(how), Some(0), "clean shutdown exit code");
    } else {
        b.stop(how);
    }
    let shards = shards.to_string();
    let mut args = vec!["--shards", shards.as_str()];
    args.extend_from_slice(extra);
    b.restart(&args);
}

/// Client ids homed on shard 0 and on shard 1 of two, so a change of `--shards` moves some.
fn ids(prefix: &str) -> [String; 2] {
    [id_on_shard(prefix, 0, 2), id_on_shard(prefix, 1, 2)]
}

fn payload(m: &Msg) -> String {
    String::from_utf8_lossy(&m.payload).into_owned()
}

/// A clean-session publisher for one publish.
fn publish(b: &DurableBroker, topic: &str, qos: u8, retain: bool, body: &str) {
    let mut p = Client::connect(b.addr, "dr-publisher", Login::CLEAN311);
    p.publish(topic, qos, retain, body.as_bytes());
    p.disconnect();
}

/// [MQTT-3.2.2-2] (3.1.1) / [MQTT-3.2.2-3] (5.0): a persistent session the broker stored
/// is found after every restart, wherever its home shard now is; sessions still connected
/// at the stop survive too [MQTT-4.1.0-1].
#[test]
fn sessions_survive_restarts() {
    let dir = DataDir::new("sessions");
    let port = free_port();
    let mut b = start(&dir, port, 1, &[]);
    let [a, c] = ids("dr-sess");
    let v5 = id_on_shard("dr-sess-v5", 1, 2);
    let logins = [
        (a.as_str(), Login::V311),
        (c.as_str(), Login::V311),
        (v5.as_str(), Login::v5(3600)),
    ];
    for step in 0..=PLAN.len() {
        let mut keep = Vec::new();
        for (i, (id, login)) in logins.iter().enumerate() {
            let cl = Client::connect(b.addr, id, *login);
            assert_eq!(cl.present, step > 0, "step {step}: {id} session present");
            // One session disconnected, the others still connected when the broker stops.
            if i == 0 {
                cl.disconnect();
            } else {
                keep.push(cl);
            }
        }
        let Some(&(how, shards)) = PLAN.get(step) else {
            break;
        };
        bounce(&mut b, how, shards, &[]);
        drop(keep);
    }
}

/// Subscriptions are part of the session state [MQTT-3.1.2-4]: after each restart the
/// session receives matching messages without subscribing again, at the QoS it was
/// granted (delivery QoS = min(publish QoS, granted QoS), §3.8.4).
#[test]
fn subscriptions_survive_restarts() {
    let dir = DataDir::new("subs");
    let port = free_port();
    let mut b = start(&dir, port, 1, &[]);
    let [s1, s2] = ids("dr-subs");
    let mut q1 = Client::connect(b.addr, &s1, Login::V311);
    q1.subscribe("dr/subs/+/t", 1);
    q1.disconnect();
    let mut q2 = Client::connect(b.addr, &s2, Login::v5(3600));
    q2.subscribe("dr/subs/#", 2);
    q2.disconnect();
    for (step, (how, shards)) in PLAN.into_iter().enumerate() {
        bounce(&mut b, how, shards, &[]);
        let mut q1 = Client::connect(b.addr, &s1, Login::V311);
        let mut q2 = Client::connect(b.addr, &s2, Login::v5(3600));
        assert!(q1.present && q2.present, "step {step}: sessions present");
        let body = format!("step-{step}");
        publish(&b, &format!("dr/subs/{step}/t"), 2, false, &body);
        for (c, qos) in [(&mut q1, 1), (&mut q2, 2)] {
            let m = next_fresh(c, &body, how);
            assert_eq!((m.qos, m.retain), (qos, false), "step {step}: {}", c.id);
            c.complete(&m);
            c.expect_quiet(QUIET);
        }
        q1.disconnect();
        q2.disconnect();
    }
}

/// The next PUBLISH carrying `body`. After a SIGKILL the broker may not have logged the
/// last acknowledgements it received, so it may first re-send an earlier QoS 1 message
/// marked DUP (QoS 1 allows duplicates, §4.3.2) or a PUBREL whose PUBCOMP it lost (answered
/// with PUBCOMP [MQTT-4.3.3-2]); both are skipped. A QoS 2 PUBLISH after its PUBREL, or
/// anything after a clean shutdown, fails the test.
fn next_fresh(c: &mut Client, body: &str, how: Stop) -> Msg {
    loop {
        match c.next(WAIT) {
            Some(Pkt::Publish(m)) if payload(&m) == body => return m,
            Some(Pkt::Publish(m)) if how == Stop::Kill && m.dup && m.qos == 1 => c.complete(&m),
            Some(Pkt::PubRel { pkid }) if how == Stop::Kill => {
                c.send(&common::ack_v311(0x70, pkid))
            }
            other => panic!(
                "client {}: expected {body} after {how:?}, got {other:?}",
                c.id
            ),
        }
    }
}

/// Retained messages (QoS 0 and QoS 1) are still delivered to a new subscription after a
/// restart ([MQTT-3.3.1-5] stored, [MQTT-3.3.1-6] sent to a new subscription, with RETAIN=1
/// [MQTT-3.3.1-8]); a newer retained message replaces the older one and a zero-byte one
/// deletes it [MQTT-3.3.1-10], across restarts too.
#[test]
fn retained_messages_survive_restarts() {
    let dir = DataDir::new("retained");
    let port = free_port();
    let mut b = start(&dir, port, 1, &[]);
    let set = |b: &DurableBroker, step: usize| {
        let mut p = Client::connect(b.addr, "dr-ret-pub", Login::CLEAN311);
        p.publish("dr/ret/gone", 1, true, b"soon deleted");
        p.publish("dr/ret/q0", 0, true, format!("zero-{step}").as_bytes());
        p.publish("dr/ret/q1", 1, true, format!("one-{step}").as_bytes());
        p.publish("dr/ret/gone", 1, true, b"");
        p.disconnect();
    };
    set(&b, 0);
    for (step, (how, shards)) in PLAN.into_iter().enumerate() {
        bounce(&mut b, how, shards, &[]);
        let mut s = Client::connect(b.addr, &format!("dr-ret-sub-{step}"), Login::CLEAN311);
        s.subscribe("dr/ret/#", 1);
        let mut got: Vec<(String, u8, bool, String)> = s
            .receive(2)
            .into_iter()
            .map(|m| (m.topic.clone(), m.qos, m.retain, payload(&m)))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("dr/ret/q0".into(), 0, true, format!("zero-{step}")),
                ("dr/ret/q1".into(), 1, true, format!("one-{step}")),
            ],
            "step {step}: retained messages after {how:?} and restart with --shards {shards}"
        );
        s.expect_quiet(QUIET);
        s.disconnect();
        set(&b, step + 1);
    }
}

/// QoS 1 and QoS 2 messages published while a persistent session was offline are kept
/// [MQTT-3.1.2-5] and delivered after the restart, in the order they were published
/// (§4.6, [MQTT-4.6.0-6]), once each.
#[test]
fn offline_queue_survives_restarts_in_order() {
    let dir = DataDir::new("queue");
    let port = free_port();
    let mut b = start(&dir, port, 1, &[]);
    for (step, (how, shards)) in PLAN.into_iter().enumerate() {
        // Fresh sessions each step: what a step checks does not depend on the previous one.
        let [s1, s2] = ids(&format!("dr-queue-{step}"));
        let logins = [(s1, Login::V311, 1), (s2, Login::v5(3600), 2)];
        for (id, login, qos) in &logins {
            let mut c = Client::connect(b.addr, id, *login);
            c.subscribe("dr/queue/#", *qos);
            c.disconnect();
        }
        let bodies: Vec<String> = (0..10).map(|k| format!("s{step}-m{k}")).collect();
        let mut p = Client::connect(b.addr, "dr-queue-pub", Login::CLEAN311);
        for (k, body) in bodies.iter().enumerate() {
            p.publish("dr/queue/t", 1 + (k % 2) as u8, false, body.as_bytes());
        }
        p.disconnect();
        bounce(&mut b, how, shards, &[]);
        for (id, login, qos) in &logins {
            let mut c = Client::connect(b.addr, id, *login);
            assert!(c.present, "step {step}: {id} session present");
            let got = c.receive(bodies.len());
            let texts: Vec<String> = got.iter().map(payload).collect();
            assert_eq!(texts, bodies, "step {step}: {id} queue after {how:?}");
            for (k, m) in got.iter().enumerate() {
                assert_eq!(m.qos, (1 + k % 2).min(*qos as usize) as u8, "{id}: {m:?}");
            }
            c.expect_quiet(QUIET);
            c.disconnect();
        }
    }
}

/// [MQTT-4.4.0-1]: on reconnect the broker re-sends unacknowledged PUBLISH packets (DUP=1
/// [MQTT-3.3.1-1], original packet ids) and PUBREL for QoS 2 flows past PUBREC, also after
/// a restart; a QoS 2 PUBLISH whose PUBREC was answered with PUBREL is never sent again
/// [MQTT-4.3.3-1].
#[test]
fn unacknowledged_flows_resume_after_restart() {
    let dir = DataDir::new("inflight");
    let port = free_port();
    let mut b = start(&dir, port, 1, &[]);
    for (step, (how, shards)) in PLAN.into_iter().enumerate() {
        let id = id_on_shard(&format!("dr-flight-{step}"), step % 2, 2);
        let mut s = Client::connect(b.addr, &id, Login::V311);
        s.subscribe("dr/flight/#", 2);
        publish(&b, "dr/flight/a", 1, false, "a");
        publish(&b, "dr/flight/b", 2, false, "b");
        publish(&b, "dr/flight/c", 2, false, "c");
        let a = s.expect_publish();
        let b2 = s.expect_publish();
        let c = s.expect_publish();
        assert_eq!(
            [payload(&a), payload(&b2), payload(&c)],
            ["a", "b", "c"],
            "step {step}: first delivery"
        );
        // c: PUBREC sent and answered (so the broker has it); no PUBCOMP.
        s.send(&common::ack_v311(0x50, c.pkid));
        let rel = s.wait_for("PUBREL", |p| matches!(p, Pkt::PubRel { .. }));
        assert_eq!(rel, Pkt::PubRel { pkid: c.pkid }, "step {step}");
        bounce(&mut b, how, shards, &[]);
        drop(s);

        let mut s = Client::connect(b.addr, &id, Login::V311);
        assert!(s.present, "step {step}: session present after {how:?}");
        let mut resent_a = None;
        let mut resent_b = None;
        let mut rel_c = false;
        while resent_a.is_none() || resent_b.is_none() || !rel_c {
            match s.next(WAIT) {
                Some(Pkt::Publish(m)) if payload(&m) == "a" => resent_a = Some(m),
                Some(Pkt::Publish(m)) if payload(&m) == "b" => resent_b = Some(m),
                Some(Pkt::PubRel { pkid }) if pkid == c.pkid => rel_c = true,
                other => panic!(
                    "step {step}: after {how:?}, expected the re-sent a, b and PUBREL for c \
                     (so far a {resent_a:?}, b {resent_b:?}, PUBREL {rel_c}); got {other:?}"
                ),
            }
        }
        let (ra, rb) = (resent_a.expect("a"), resent_b.expect("b"));
        assert!(
            ra.dup && ra.qos == 1 && ra.pkid == a.pkid,
            "step {step}: {ra:?} vs {a:?}"
        );
        assert!(
            rb.dup && rb.qos == 2 && rb.pkid == b2.pkid,
            "step {step}: {rb:?} vs {b2:?}"
        );
        s.complete(&ra);
        s.complete(&rb);
        s.send(&common::ack_v311(0x70, c.pkid));
        s.expect_quiet(QUIET);
        s.disconnect();
    }
}

/// A 5.0 session ends when its Session Expiry Interval has passed since the connection
/// closed (§3.1.2.11.2), also while the broker was down: after the restart it is gone
/// (Session Present 0 [MQTT-3.2.2-3]) and its subscriptions with it; a session with a long
/// expiry is still there.
#[test]
fn v5_session_expired_while_down_is_gone() {
    let dir = DataDir::new("expiry");
    let port = free_port();
    let mut b = start(&dir, port, 1, &[]);
    let long = id_on_shard("dr-exp-long", 1, 2);
    let mut l = Client::connect(b.addr, &long, Login::v5(3600));
    l.subscribe("dr/exp/#", 1);
    l.disconnect();
    for (step, (how, shards)) in [(Stop::Term, 2), (Stop::Kill, 1)].into_iter().enumerate() {
        let short = id_on_shard(&format!("dr-exp-short-{step}"), step, 2);
        let mut s = Client::connect(b.addr, &short, Login::v5(2));
        s.subscribe("dr/exp/#", 1);
        s.disconnect();
        // Let the broker take the disconnect in before a crash (no ack exists for it).
        std::thread::sleep(Duration::from_millis(300));
        b.stop(how);
        std::thread::sleep(Duration::from_millis(3000));
        let sh = shards.to_string();
        b.restart(&["--shards", &sh]);
        let mut s = Client::connect(b.addr, &short, Login::v5(2));
        assert!(
            !s.present,
            "step {step}: session expired during the {how:?} downtime"
        );
        let mut l = Client::connect(b.addr, &long, Login::v5(3600));
        assert!(l.present, "step {step}: long session present");
        publish(&b, "dr/exp/x", 1, false, &format!("after-{step}"));
        let m = next_fresh(&mut l, &format!("after-{step}"), how);
        l.complete(&m);
        s.expect_quiet(QUIET);
        s.disconnect();
        l.disconnect();
    }
}

/// A 3.1.1 Clean Session 1 session lasts only as long as its connection [MQTT-3.1.2-6],
/// and a 5.0 one with Session Expiry 0 ends when the connection closes (§3.1.2.11.2):
/// neither comes back after a restart, even though they were connected when the broker
/// stopped.
#[test]
fn clean_sessions_are_not_kept() {
    let dir = DataDir::new("clean");
    let port = free_port();
    let mut b = start(&dir, port, 1, &[]);
    for (step, (how, shards)) in [(Stop::Term, 2), (Stop::Kill, 1), (Stop::Kill, 2)]
        .into_iter()
        .enumerate()
    {
        let [c3, c5] = ids(&format!("dr-clean-{step}"));
        let mut x = Client::connect(b.addr, &c3, Login::CLEAN311);
        x.subscribe("dr/clean/#", 1);
        let mut y = Client::connect(
            b.addr,
            &c5,
            Login {
                v5: true,
                clean: true,
                expiry: 0,
            },
        );
        y.subscribe("dr/clean/#", 1);
        bounce(&mut b, how, shards, &[]);
        drop((x, y));
        let mut x = Client::connect(b.addr, &c3, Login::V311);
        assert!(!x.present, "step {step}: 3.1.1 clean session came back");
        let mut y = Client::connect(b.addr, &c5, Login::v5(60));
        assert!(!y.present, "step {step}: 5.0 expiry-0 session came back");
        publish(&b, "dr/clean/x", 1, false, "nobody subscribed");
        x.expect_quiet(QUIET);
        y.expect_quiet(Duration::from_millis(50));
        x.disconnect();
        y.disconnect();
    }
}

// ---- damaged journals --------------------------------------------------------------------

/// Every segment file under `data/journal/gen-*/shard-*/`, sorted by path.
fn segments(dir: &DataDir) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.data().join("journal")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.map_while(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "seg") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The segment holding the newest data and the offset just past its last non-zero byte.
/// Segments are zero-filled after their data, so that is the end of the last record (up to
/// its padding). "Newest" = the highest generation, then the last segment in name order
/// with any data (a preallocated next segment is all zeros).
fn newest_data(dir: &DataDir) -> Option<(PathBuf, usize)> {
    let mut segs = segments(dir);
    segs.sort_by_key(|p| {
        let gen = p
            .ancestors()
            .filter_map(|a| a.file_name()?.to_str()?.strip_prefix("gen-")?.parse().ok())
            .next()
            .unwrap_or(0u64);
        // Segment names may or may not be zero-padded: order by the number in them.
        let name = p.file_stem().and_then(|n| n.to_str()).unwrap_or_default();
        let digits: String = name.chars().filter(char::is_ascii_digit).collect();
        (gen, digits.parse::<u64>().unwrap_or(0), name.to_string())
    });
    segs.into_iter().rev().find_map(|p| {
        let bytes = std::fs::read(&p).ok()?;
        let end = bytes.iter().rposition(|&b| b != 0)? + 1;
        Some((p, end))
    })
}

/// Overwrite `bytes` at `offset` of `path` (the broker must be stopped).
fn write_at(path: &Path, offset: usize, bytes: &[u8]) {
    let mut data = std::fs::read(path).expect("read segment");
    assert!(
        offset + bytes.len() <= data.len(),
        "write past the segment end"
    );
    data[offset..offset + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, data).expect("write segment");
}

/// Builds a journal for the damage tests: a persistent subscriber with `n` queued QoS 1
/// messages (large enough to span several 1 MiB segments), then a retained message that is
/// the last thing logged, then a SIGKILL. Returns the broker (stopped) and the subscriber id.
fn journal_then_crash(dir: &DataDir, port: u16, n: usize) -> (DurableBroker, String) {
    let small = ["--max-packet-size", "65536", "--segment-size", "1048576"];
    let mut b = start(dir, port, 1, &small);
    let id = "dr-torn-sub".to_string();
    let mut s = Client::connect(b.addr, &id, Login::V311);
    s.subscribe("dr/torn/#", 1);
    s.disconnect();
    let mut p = Client::connect(b.addr, "dr-torn-pub", Login::V311);
    for k in 0..n {
        let mut body = format!("m{k}:").into_bytes();
        body.resize(4000, b'a' + (k % 26) as u8);
        p.publish("dr/torn/t", 1, false, &body);
    }
    // The sacrifice: logged last, so the damage hits it (or nothing) and never the queue.
    p.publish("dr/sacrifice", 1, true, b"sacrifice");
    b.stop(Stop::Kill);
    (b, id)
}

/// After damaging the journal: the broker starts, reports `journal damage`, and the
/// subscriber gets all `n` queued messages in order; the broker then keeps logging after
/// the repaired tail (a message published now survives another restart).
fn check_recovered(b: &mut DurableBroker, id: &str, n: usize, shards: usize, seg: &Path) {
    let sh = shards.to_string();
    let args = [
        "--shards",
        sh.as_str(),
        "--max-packet-size",
        "65536",
        "--segment-size",
        "1048576",
    ];
    b.restart(&args);
    let log = b.log();
    let name = seg.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("journal damage") && l.contains(name)),
        "no WARN `journal damage` line naming {name}:\n{log}"
    );
    let mut s = Client::connect(b.addr, id, Login::V311);
    assert!(s.present, "session lost with the damaged tail");
    for k in 0..n {
        let m = s.expect_publish();
        assert!(
            payload(&m).starts_with(&format!("m{k}:")),
            "message {k} of {n}: got {}",
            &payload(&m)[..12.min(m.payload.len())]
        );
        s.complete(&m);
    }
    s.expect_quiet(QUIET);
    s.disconnect();
    publish(b, "dr/torn/t", 1, false, "after-repair");
    assert_eq!(b.stop(Stop::Term), Some(0));
    b.restart(&args);
    let mut s = Client::connect(b.addr, id, Login::V311);
    assert!(s.present);
    let m = s.expect_publish();
    assert_eq!(
        payload(&m),
        "after-repair",
        "a record written after the repair was lost"
    );
    s.complete(&m);
    s.disconnect();
}

/// Garbage after the last record of the newest segment (a torn append): recovery stops
/// there, reports it and keeps every record before it.
#[test]
fn torn_tail_garbage_is_reported_and_prefix_kept() {
    let dir = DataDir::new("torn");
    let (mut b, id) = journal_then_crash(&dir, free_port(), 300);
    let (seg, end) = newest_data(&dir).expect("a journal segment with data under data/journal");
    let at = end.div_ceil(8) * 8;
    let garbage: Vec<u8> = (0..64u8).map(|i| 0xA5 ^ i.wrapping_mul(37)).collect();
    write_at(&seg, at, &garbage);
    check_recovered(&mut b, &id, 300, 1, &seg);
}

/// One byte flipped inside the last record (its checksum no longer matches): that record is
/// dropped, everything before it kept, the damage reported; recovery with another
/// `--shards` than the crashed run.
#[test]
fn corrupt_last_record_is_reported_and_prefix_kept() {
    let dir = DataDir::new("flip");
    let (mut b, id) = journal_then_crash(&dir, free_port(), 300);
    let (seg, end) = newest_data(&dir).expect("a journal segment with data under data/journal");
    let byte = std::fs::read(&seg).expect("segment")[end - 1];
    write_at(&seg, end - 1, &[byte ^ 0xFF]);
    check_recovered(&mut b, &id, 300, 2, &seg);
}

/// `--durability none`: nothing is written, so a restart (clean or crash) finds no session,
/// no subscription, no retained and no queued message.
#[test]
fn durability_none_keeps_nothing() {
    let dir = DataDir::new("none");
    let port = free_port();
    let none = ["--durability", "none"];
    let mut b = start(&dir, port, 1, &none);
    for (step, (how, shards)) in [(Stop::Term, 1), (Stop::Kill, 2)].into_iter().enumerate() {
        let id = format!("dr-none-{step}");
        let mut s = Client::connect(b.addr, &id, Login::V311);
        s.subscribe("dr/none/#", 1);
        s.disconnect();
        publish(&b, "dr/none/r", 1, true, "retained");
        publish(&b, "dr/none/q", 1, false, "queued");
        bounce(&mut b, how, shards, &none);
        let mut s = Client::connect(b.addr, &id, Login::V311);
        assert!(
            !s.present,
            "step {step}: session kept with --durability none"
        );
        s.expect_quiet(QUIET);
        s.subscribe("dr/none/#", 1);
        s.expect_quiet(QUIET);
        s.disconnect();
    }
}

//! Parked connections (contract `--idle-park-secs`): an idle connection gives up its tasks
//! and is watched by the shard's epoll set, yet behaves exactly like an active one — it
//! receives messages, answers pings, expires by keep-alive (publishing its will), can be
//! taken over, notices its client going away, and is closed at shutdown.

mod common;

use common::*;
use std::time::{Duration, Instant};

const PINGREQ: [u8; 2] = [0xc0, 0x00];
const PINGRESP: [u8; 2] = [0xd0, 0x00];

fn broker() -> Broker {
    Broker::start_with(&["--idle-park-secs", "1"])
}

/// Wait until the broker has parked `n` connections in total (it logs each park).
fn wait_parked(broker: &Broker, n: usize) {
    let start = Instant::now();
    loop {
        let parked = broker.log().matches("connection parked").count();
        if parked >= n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "only {parked} of {n} connections parked; log:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_parked_subscriber_still_receives_and_its_pings_are_answered() {
    let broker = broker();
    let (mut sub, _) = raw_session(broker.addr, "park-sub", true);
    raw_subscribe(&mut sub, 1, &[("park/t", 1)]);
    wait_parked(&broker, 1);

    // A message for a parked subscriber resumes it [MQTT-3.3.4-1: deliver to matching subs].
    let (mut publisher, _) = raw_session(broker.addr, "park-pub", true);
    publisher.send(&publish_packet("park/t", 1, false, false, 7, b"hello"));
    assert_eq!(expect_packet(&mut publisher), ack_v311(0x40, 7));
    let p = expect_publish(&mut sub);
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice()),
        ("park/t", &b"hello"[..])
    );
    assert_eq!(p.qos(), 1);
    sub.send(&ack_v311(0x40, p.pkid.expect("QoS 1 packet id")));

    // Parks again once idle; input from the client resumes it [MQTT-3.12.4-1].
    wait_parked(&broker, 3);
    sub.send(&PINGREQ);
    assert_eq!(expect_packet(&mut sub), PINGRESP.to_vec());
    raw_disconnect(sub);
}

#[test]
fn a_parked_connection_expires_by_keep_alive_and_publishes_its_will() {
    // [MQTT-3.1.2-24] close after 1.5 × keep-alive of silence; [MQTT-3.1.2-8] then the will.
    let broker = broker();
    let (mut watcher, _) = raw_session(broker.addr, "park-watch", true);
    raw_subscribe(&mut watcher, 1, &[("park/will", 0)]);
    let mut silent = Raw::connect(broker.addr);
    silent.send(&connect_v311_will(
        "park-silent",
        true,
        2,
        "park/will",
        b"gone",
        0,
        false,
    ));
    assert_eq!(expect_packet(&mut silent), vec![0x20, 0x02, 0x00, 0x00]);
    let start = Instant::now();
    let closed_after = wait_closed(&mut silent, Duration::from_secs(10));
    assert!(
        closed_after >= Duration::from_secs(2),
        "closed too early: {closed_after:?}"
    );
    let will = expect_publish(&mut watcher);
    assert_eq!(
        (will.topic.as_str(), will.payload.as_slice()),
        ("park/will", &b"gone"[..])
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(broker.log().contains("connection parked"), "never parked");
}

#[test]
fn a_parked_client_that_goes_away_is_noticed_and_its_will_published() {
    let broker = broker();
    let (mut watcher, _) = raw_session(broker.addr, "park-watch2", true);
    raw_subscribe(&mut watcher, 1, &[("park/will2", 0)]);
    let mut gone = Raw::connect(broker.addr);
    gone.send(&connect_v311_will(
        "park-gone",
        true,
        0,
        "park/will2",
        b"bye",
        0,
        false,
    ));
    assert_eq!(expect_packet(&mut gone), vec![0x20, 0x02, 0x00, 0x00]);
    wait_parked(&broker, 2);
    drop(gone); // no DISCONNECT: the will must be published [MQTT-3.1.2-8]
    let will = expect_publish(&mut watcher);
    assert_eq!(will.payload, b"bye".to_vec());
}

#[test]
fn a_parked_session_can_be_taken_over_and_keeps_its_queue() {
    let broker = broker();
    let (mut first, present) = raw_session(broker.addr, "park-take", false);
    assert!(!present);
    raw_subscribe(&mut first, 1, &[("park/q", 1)]);
    wait_parked(&broker, 1);
    // [MQTT-3.1.4-2] the new connection closes the parked one; session state is resumed.
    let (mut second, present) = raw_session(broker.addr, "park-take", false);
    assert!(present, "session present after takeover");
    wait_closed(&mut first, Duration::from_secs(5));
    let (mut publisher, _) = raw_session(broker.addr, "park-pub2", true);
    publisher.send(&publish_packet("park/q", 1, false, false, 3, b"still here"));
    assert_eq!(expect_packet(&mut publisher), ack_v311(0x40, 3));
    assert_eq!(expect_publish(&mut second).payload, b"still here".to_vec());
}

#[test]
fn shutdown_closes_parked_connections() {
    let mut broker = broker();
    let (mut idle, _) = raw_session(broker.addr, "park-idle", true);
    wait_parked(&broker, 1);
    assert_eq!(broker.terminate(Duration::from_secs(10)), Some(0));
    wait_closed(&mut idle, Duration::from_secs(5));
}

//! Helpers for the subscription-feature suites (shared subscriptions, subscription
//! identifiers, retain handling): a rumqttc v5 client with bounded waits, and raw MQTT 5
//! packet builders/parsers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, SubscribeProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

use super::{mqtt_str, packet, remaining_length, Broker, Raw};

/// A rumqttc v5 client whose event loop runs on its own tokio task; events reach the test
/// over a channel, every wait bounded. Stops at the first connection error.
pub struct V5Client {
    pub client: AsyncClient,
    events: std::sync::mpsc::Receiver<Result<Event, String>>,
    task: tokio::task::JoinHandle<()>,
    /// PUBLISHes seen while waiting for something else.
    stash: std::collections::VecDeque<Publish>,
}

impl Drop for V5Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl V5Client {
    /// Connect with clean start and wait (5 s) for a successful CONNACK.
    pub async fn connect(broker: &Broker, id: &str) -> V5Client {
        let mut o = MqttOptions::new(id, "127.0.0.1", broker.port());
        o.set_keep_alive(Duration::from_secs(30));
        V5Client::connect_opts(o).await
    }

    /// Connect with the given options and wait (5 s) for a successful CONNACK.
    pub async fn connect_opts(o: MqttOptions) -> V5Client {
        let (client, mut eventloop) = AsyncClient::new(o, 1000);
        let (tx, events) = std::sync::mpsc::channel();
        let task = tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await;
                let stop = ev.is_err();
                if tx.send(ev.map_err(|e| e.to_string())).is_err() || stop {
                    break;
                }
            }
        });
        let mut c = V5Client {
            client,
            events,
            task,
            stash: Default::default(),
        };
        c.wait(Duration::from_secs(5), "CONNACK", |p| {
            matches!(p, Packet::ConnAck(_))
        })
        .await;
        c
    }

    async fn next_event(&mut self, within: Duration) -> Option<Result<Event, String>> {
        super::next_from(&self.events, within).await
    }

    /// Wait for an incoming packet `want` accepts; PUBLISHes skipped meanwhile are kept.
    pub async fn wait(
        &mut self,
        within: Duration,
        what: &str,
        mut want: impl FnMut(&Packet) -> bool,
    ) -> Packet {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Some(Ok(Event::Incoming(p))) if want(&p) => return p,
                Some(Ok(Event::Incoming(Packet::Publish(p)))) => self.stash.push_back(p),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("connection failed while waiting for {what}: {e}"),
                None => panic!("no {what} within {within:?}"),
            }
        }
    }

    /// Subscribe to one filter (options as given, optional identifier); the SUBACK codes.
    pub async fn subscribe(
        &mut self,
        filter: Filter,
        id: Option<usize>,
    ) -> Vec<rumqttc::v5::mqttbytes::v5::SubscribeReasonCode> {
        let props = id.map(|id| SubscribeProperties {
            id: Some(id),
            user_properties: vec![],
        });
        match props {
            Some(p) => {
                self.client
                    .subscribe_many_with_properties([filter], p)
                    .await
            }
            None => self.client.subscribe_many([filter]).await,
        }
        .expect("subscribe");
        match self
            .wait(Duration::from_secs(5), "SUBACK", |p| {
                matches!(p, Packet::SubAck(_))
            })
            .await
        {
            Packet::SubAck(s) => s.return_codes,
            _ => unreachable!(),
        }
    }

    /// Subscribe with just a QoS.
    pub async fn subscribe_qos(&mut self, filter: &str, qos: QoS) {
        let codes = self.subscribe(Filter::new(filter, qos), None).await;
        assert_eq!(codes.len(), 1);
        assert!(
            matches!(
                codes[0],
                rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
            ),
            "SUBACK for {filter}: {codes:?}"
        );
    }

    /// Publish and wait until the flow completes (written, PUBACK or PUBCOMP).
    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .expect("publish");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let done = match self.next_event(left).await {
                Some(Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_)))) => qos == QoS::AtMostOnce,
                Some(Ok(Event::Incoming(Packet::PubAck(_)))) => qos == QoS::AtLeastOnce,
                Some(Ok(Event::Incoming(Packet::PubComp(_)))) => qos == QoS::ExactlyOnce,
                Some(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    self.stash.push_back(p);
                    false
                }
                Some(Ok(_)) => false,
                Some(Err(e)) => panic!("connection failed while publishing: {e}"),
                None => panic!("publish to {topic} did not complete within 5 s"),
            };
            if done {
                return;
            }
        }
    }

    /// The next PUBLISH within 5 s.
    pub async fn expect_publish(&mut self) -> Publish {
        if let Some(p) = self.stash.pop_front() {
            return p;
        }
        match self
            .wait(Duration::from_secs(5), "PUBLISH", |p| {
                matches!(p, Packet::Publish(_))
            })
            .await
        {
            Packet::Publish(p) => p,
            _ => unreachable!(),
        }
    }

    /// Every PUBLISH that arrives within `quiet` of the previous one (or of the call).
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Publish> {
        let mut out: Vec<Publish> = self.stash.drain(..).collect();
        loop {
            match self.next_event(quiet).await {
                None => return out,
                Some(Ok(Event::Incoming(Packet::Publish(p)))) => out.push(p),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("connection failed while draining: {e}"),
            }
        }
    }

    /// Assert no PUBLISH arrives for `dur`.
    pub async fn expect_no_publish(&mut self, dur: Duration) {
        let got = self.drain(dur).await;
        assert!(got.is_empty(), "unexpected PUBLISH {got:?}");
    }
}

/// The subscription identifiers a v5 PUBLISH carries, sorted.
pub fn sub_ids(p: &Publish) -> Vec<usize> {
    let mut ids = p
        .properties
        .as_ref()
        .map(|pr| pr.subscription_identifiers.clone())
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

/// Count payloads (as strings) across receivers: payload → how many times it arrived.
pub fn tally<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in payloads {
        *m.entry(String::from_utf8_lossy(p).into_owned())
            .or_insert(0) += 1;
    }
    m
}

/// A client id that ringmq places on `shard` of `shards` (home shard = hash(id) % shards).
pub fn id_on_shard(prefix: &str, shard: usize, shards: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| ringmq::shard::stable_hash(id.as_bytes()) % shards as u64 == shard as u64)
        .expect("some id lands on every shard")
}

// ---- raw MQTT 5 -----------------------------------------------------------------------

/// A v5 CONNECT (clean start, keep-alive 60, no properties).
pub fn connect_v5(client_id: &str) -> Vec<u8> {
    let mut body = mqtt_str("MQTT");
    body.push(5);
    body.push(0x02);
    body.extend_from_slice(&60u16.to_be_bytes());
    body.push(0); // properties
    body.extend(mqtt_str(client_id));
    packet(0x10, &body)
}

/// Connect raw with MQTT 5 and assert a successful CONNACK.
pub fn raw_session_v5(broker: &Broker, client_id: &str) -> Raw {
    let mut raw = Raw::connect(broker.addr);
    raw.send(&connect_v5(client_id));
    let ack = raw.read_packet().expect("CONNACK");
    assert_eq!(ack[0], 0x20, "expected CONNACK, got {ack:02x?}");
    assert_eq!(ack[3], 0x00, "CONNACK refused: {ack:02x?}");
    raw
}

/// A variable byte integer.
pub fn var_int(v: usize) -> Vec<u8> {
    remaining_length(v)
}

/// A v5 SUBSCRIBE: (filter, options byte) pairs, optional Subscription Identifier.
pub fn subscribe_v5(pkid: u16, sub_id: Option<usize>, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut props = Vec::new();
    if let Some(id) = sub_id {
        props.push(0x0B);
        props.extend(var_int(id));
    }
    let mut body = pkid.to_be_bytes().to_vec();
    body.extend(var_int(props.len()));
    body.extend(props);
    for (f, o) in filters {
        body.extend(mqtt_str(f));
        body.push(*o);
    }
    packet(0x82, &body)
}

/// The reason code of a v5 DISCONNECT packet (0 when it has none).
pub fn disconnect_reason(p: &[u8]) -> u8 {
    assert_eq!(p[0], 0xE0, "expected DISCONNECT, got {p:02x?}");
    if p[1] == 0 {
        0
    } else {
        p[2]
    }
}

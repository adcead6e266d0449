//! Session lifetimes and wills: what happens when a connection ends, when an offline
//! session expires, and when a delayed will is due.
//!
//! A session outlives its connection by its Session Expiry Interval (5.0; for 3.1.x: 0 with
//! clean session 1, `max_session_expiry` with clean session 0). A will is published when the
//! connection ends without a normal DISCONNECT, after its Will Delay Interval (5.0) or when
//! the session ends, whichever comes first, and is cancelled if the session is resumed before
//! that [MQTT-3.1.3-9]. Due times sit in one ordered set per shard, checked by the shard's
//! ticker; stale entries (a session resumed meanwhile) are skipped when they come up.
//!
//! Owned by the shard (its `timers` field); every session here is one of the shard's own.

use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ahash::AHashMap;

use crate::metrics::Metrics;
use crate::proto::{LastWill, Properties, Utf8Bytes};
use crate::route::subs::SessionKey;
use crate::session::Publication;
use crate::shard::{SessionCell, Shard};

/// Sessions with something due: expiry while offline, or a delayed will.
#[derive(Default)]
pub struct SessionTimers {
    due: BTreeSet<(u64, SessionKey)>,
    /// Wills waiting for their delay.
    wills: AHashMap<SessionKey, PendingWill>,
}

/// A will waiting for its delay, with the identity it is authorized with.
struct PendingWill {
    due: u64,
    will: Box<LastWill>,
    /// The publisher's client id.
    origin: Utf8Bytes,
    /// The user name of the connection that set it (`None`: anonymous).
    user: Option<Utf8Bytes>,
}

/// The Publication a will becomes: its 5.0 properties travel with it (minus the Will Delay
/// Interval, which is not a PUBLISH property), and its Message Expiry Interval starts now.
pub fn will_publication(w: Box<LastWill>, origin: Utf8Bytes) -> Publication {
    let w = *w;
    let mut props = w.properties;
    props.will_delay_interval = None;
    Publication {
        expiry: expiry_of(&props),
        id: 0,
        props: (!props.is_empty()).then_some(props),
        topic: w.topic,
        payload: w.payload,
        qos: w.qos,
        retain: w.retain,
        origin,
    }
}

/// When a message with these properties expires (Message Expiry Interval from now).
pub fn expiry_of(p: &Properties) -> Option<Instant> {
    p.message_expiry_interval
        .map(|s| Instant::now() + Duration::from_secs(u64::from(s)))
}

impl Shard {
    /// A connection ended: publish or schedule its will, and end the session now or
    /// schedule its expiry. `current`: the connection was still the session's (not taken
    /// over by a newer one). `user`: the connection's user name (the will is authorized
    /// with it when published).
    pub fn connection_ended(
        self: &Rc<Self>,
        cell: &Rc<SessionCell>,
        current: bool,
        will: Option<Box<LastWill>>,
        user: Option<Utf8Bytes>,
    ) {
        let now = self.now_ms();
        let origin = || cell.state.borrow().client_id.clone();
        if !current {
            // Taken over. A will without delay goes now; with a delay it is cancelled when
            // the newer connection resumed this session [MQTT-3.1.3-9], and published when
            // the session was discarded (clean start) — the session ended.
            if let Some(w) = will {
                let delayed = w.properties.will_delay_interval.unwrap_or(0) > 0;
                if !delayed || !self.has_session(cell) {
                    self.publish_will(w, origin(), user.as_deref());
                }
            }
            return;
        }
        let expiry = cell.expiry.get();
        if let Some(w) = will {
            let delay = w.properties.will_delay_interval.unwrap_or(0);
            if delay == 0 || expiry == 0 {
                self.publish_will(w, origin(), user.as_deref());
            } else {
                // If the session expires first, its end publishes the will.
                let at = now + u64::from(delay) * 1000;
                let key = cell.key;
                let mut t = self.timers.borrow_mut();
                t.due.insert((at, key));
                let pending = PendingWill {
                    due: at,
                    will: w,
                    origin: origin(),
                    user,
                };
                t.wills.insert(key, pending);
            }
        }
        if expiry == 0 {
            self.end_session(cell);
            return;
        }
        self.log_session_offline(cell);
        if expiry != u32::MAX {
            self.schedule_expiry(cell, now + u64::from(expiry) * 1000);
        }
    }

    /// The offline session `cell` ends at `at` ([`Shard::now_ms`]) unless resumed before.
    pub fn schedule_expiry(&self, cell: &SessionCell, at: u64) {
        cell.expires_at.set(at);
        self.timers.borrow_mut().due.insert((at, cell.key));
    }

    /// A session was resumed by a new connection: it no longer expires, and a will still
    /// waiting for its delay is cancelled [MQTT-3.1.3-9].
    /// Its entries leave the due set too: a device that reconnects often must not leave
    /// one stale entry per reconnect behind for the whole expiry interval.
    pub fn session_resumed(&self, cell: &SessionCell) {
        let mut t = self.timers.borrow_mut();
        let at = cell.expires_at.replace(0);
        if at != 0 {
            t.due.remove(&(at, cell.key));
        }
        if let Some(w) = t.wills.remove(&cell.key) {
            t.due.remove(&(w.due, cell.key));
            Metrics::inc(&self.metrics.wills_cancelled);
        }
    }

    /// The session ends (expired, clean, or discarded by a clean start): its delayed will
    /// is published now, then its state and subscriptions go.
    pub fn end_session(self: &Rc<Self>, cell: &Rc<SessionCell>) {
        let will = {
            let mut t = self.timers.borrow_mut();
            let at = cell.expires_at.replace(0);
            if at != 0 {
                t.due.remove(&(at, cell.key));
            }
            let will = t.wills.remove(&cell.key);
            if let Some(w) = &will {
                t.due.remove(&(w.due, cell.key));
            }
            will
        };
        if let Some(w) = will {
            self.publish_will(w.will, w.origin, w.user.as_deref());
        }
        self.shared_session_ending(cell);
        self.remove_session(cell);
    }

    /// Publish a will for the client `origin`, connected as `user`, if the ACL lets it
    /// write the will's topic (a refused will is dropped, counted).
    pub fn publish_will(&self, w: Box<LastWill>, origin: Utf8Bytes, user: Option<&str>) {
        if crate::ops::sys::is_sys_topic(&w.topic) && self.global.acl.is_none() {
            // As for a PUBLISH: `$SYS` is the broker's own tree.
            Metrics::inc(&self.metrics.publishes_denied_sys);
            return;
        }
        if !self.acl_may_publish_will(user, &origin, &w.topic) {
            return;
        }
        // [MQTT-3.1.2-8] the will is published when the connection ends without DISCONNECT.
        Metrics::inc(&self.metrics.wills_published);
        let _routed = self.publish(self.broker_publication(will_publication(w, origin)));
    }

    /// Called by the ticker: publish wills whose delay ran out, expire offline sessions
    /// whose time is up. `now` is [`Shard::now_ms`]: due times are kept in milliseconds, so
    /// nothing fires early (a seconds clock would round a 3 s delay down to 2.x s).
    pub fn run_session_timers(self: &Rc<Self>, now: u64) {
        loop {
            let key = {
                let mut t = self.timers.borrow_mut();
                match t.due.first() {
                    Some(&(at, key)) if at <= now => {
                        t.due.pop_first();
                        key
                    }
                    _ => return,
                }
            };
            let will = {
                let mut t = self.timers.borrow_mut();
                match t.wills.get(&key) {
                    Some(w) if w.due <= now => t.wills.remove(&key),
                    _ => None,
                }
            };
            if let Some(w) = will {
                self.publish_will(w.will, w.origin, w.user.as_deref());
            }
            let Some(cell) = self.session_by_key(key) else {
                continue;
            };
            let expires = cell.expires_at.get();
            if expires != 0 && expires <= now && cell.conn.borrow().is_none() {
                Metrics::inc(&self.metrics.sessions_expired);
                tracing::debug!(client = %cell.state.borrow().client_id, "session expired");
                self.end_session(&cell);
            }
        }
    }
}

//! Shared subscriptions on a shard: sending a publication to the shard the balancer
//! picks, choosing the local member, falling back to other shards, and moving a departed
//! member's unacknowledged messages (design: [`crate::route::shared`]).

use std::rc::Rc;
use std::sync::Arc;

use crate::metrics::Metrics;
use crate::proto::{QoS, Utf8Bytes};
use crate::route::shared::Readiness;
use crate::route::subs::{delivery_qos, SessionKey};
use crate::route::table::ShardSet;
use crate::session::{Delivery, Publication};

use super::{Ctrl, SessionCell, Shard};

impl Shard {
    /// One copy per matching shared subscription, to the shard the balancer picks.
    /// Returns whether any group matched.
    pub(super) fn publish_shared(&self, msg: &Arc<Publication>) -> bool {
        let mut picks = std::mem::take(&mut *self.share_picks.borrow_mut());
        self.routes
            .borrow()
            .shared
            .pick(&msg.topic, |key, shard| picks.push((key.clone(), shard)));
        let matched = !picks.is_empty();
        for (key, shard) in picks.drain(..) {
            if shard == self.id {
                self.deliver_shared(key, msg.clone(), ShardSet::default(), None);
            } else {
                self.ctrl.push(
                    shard,
                    Ctrl::ShareDeliver {
                        key,
                        msg: msg.clone(),
                        tried: ShardSet::default(),
                    },
                );
                if msg.id != 0 {
                    let (data, mut ctrl) = self.touched.get();
                    ctrl.insert(shard);
                    self.touched.set((data, ctrl));
                }
            }
        }
        *self.share_picks.borrow_mut() = picks;
        matched
    }

    /// Give `msg` to one local member of share `key` (never `exclude`); with only offline
    /// members or none, pass it to a shard not yet `tried` that has members; at the end of
    /// that chain queue it for an offline member, or drop it (counted).
    pub(super) fn deliver_shared(
        &self,
        key: Utf8Bytes,
        msg: Arc<Publication>,
        mut tried: ShardSet,
        exclude: Option<SessionKey>,
    ) {
        let picked = {
            let sessions = self.sessions.borrow();
            let member = self.subs.borrow_mut().groups.pick(&key, exclude, |s| {
                sessions
                    .cells
                    .get(&s)
                    .map_or(Readiness::Offline, |c| self.readiness(c))
            });
            member.and_then(|(m, r)| Some((m, r, sessions.cells.get(&m.session)?.clone())))
        };
        tried.insert(self.id);
        if let Some((m, readiness, cell)) = picked {
            if readiness == Readiness::Offline {
                // Only offline members here: an online member elsewhere goes first.
                if let Some(shard) = self.routes.borrow().shared.pick_untried(&key, tried) {
                    self.ctrl
                        .push(shard, Ctrl::ShareDeliver { key, msg, tried });
                    return;
                }
            }
            let qos = delivery_qos(msg.qos, m.opts.qos);
            let retain = m.opts.retain_as_published && msg.retain;
            let mut d = Delivery::new(msg, qos, retain).with_sub_ids(&[m.id]);
            if qos != QoS::AtMostOnce {
                // Remembered for redelivery if this member leaves before acknowledging.
                d = d.through_share(key);
            }
            self.deliver(&cell, d);
            return;
        }
        let next = self.routes.borrow().shared.pick_untried(&key, tried);
        match next {
            Some(shard) => self
                .ctrl
                .push(shard, Ctrl::ShareDeliver { key, msg, tried }),
            None => Metrics::inc(&self.metrics.dropped_shared_no_member),
        }
    }

    fn readiness(&self, cell: &SessionCell) -> Readiness {
        if cell.conn.borrow().is_none() {
            return Readiness::Offline;
        }
        let st = cell.state.borrow();
        if st.inflight() + st.queued() < self.limits.max_inflight as usize {
            Readiness::Ready
        } else {
            Readiness::Busy
        }
    }

    /// A session's connection ended: its unacknowledged messages received through shared
    /// subscriptions go to other members of those groups (MQTT 5.0 §4.8.2). Without another
    /// member they stay with a persistent session; a clean session's are dropped (counted).
    pub fn shared_member_left(&self, cell: &Rc<SessionCell>) {
        // The session ends with this connection (clean session / expiry 0).
        self.hand_over_shared(cell, cell.expiry.get() == 0);
    }

    /// An offline session is ending (expired, or discarded by a clean start): what it
    /// still holds from shared subscriptions goes to other members (§4.8.2: "If the
    /// Client's Session terminates before the Client reconnects, the Server SHOULD send
    /// the Application Message to another Client").
    pub fn shared_session_ending(&self, cell: &Rc<SessionCell>) {
        self.hand_over_shared(cell, true);
    }

    fn hand_over_shared(&self, cell: &Rc<SessionCell>, clean: bool) {
        let others = |key: &str| {
            let mine = u32::from(self.subs.borrow().groups.is_member(key, cell.key));
            self.routes
                .borrow()
                .shared
                .members(key)
                .saturating_sub(mine)
        };
        // QoS 1 (sent or queued) and queued QoS 2 move; a QoS 2 message already sent must
        // be completed with this client [MQTT-4.8.2-4] and never go to another, even if
        // the session ends [MQTT-4.8.2-5].
        let taken = cell
            .state
            .borrow_mut()
            .take_unacked(|d, sent| match d.share() {
                Some(key) => match d.qos {
                    QoS::AtMostOnce => false,
                    QoS::ExactlyOnce if sent => false,
                    _ => clean || others(key) > 0,
                },
                None => false,
            });
        if !taken.is_empty() {
            // Entries left the middle of the queue: restate the session in the log.
            let st = cell.state.borrow();
            self.log_state(cell, &st);
        }
        for d in taken {
            let Some(key) = d.share().cloned() else {
                continue;
            };
            if others(&key) == 0 {
                Metrics::inc(&self.metrics.dropped_shared_no_member);
                continue;
            }
            Metrics::inc(&self.metrics.shared_redelivered);
            self.deliver_shared(key, d.msg, ShardSet::default(), Some(cell.key));
        }
    }
}

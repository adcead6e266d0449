//! Authorization on a shard: the checks the connection and delivery paths ask, against the
//! ACL in force (design and file format: [`crate::acl`]).
//!
//! Without `acl_file` every check is one branch on `Global::acl`. With one, a shard keeps
//! its own `Arc` of the ACL and fetches the new one only when the store's generation
//! moved (a reload), so a check takes no lock and touches no shared cache line but the
//! generation counter.

use std::cell::Ref;
use std::sync::Arc;

use crate::acl::{Acl, AclStore, SubDecision, Who};
use crate::conn::Conn;
use crate::metrics::Metrics;
use crate::proto::topic::parse_shared;

use super::{SessionCell, Shard};

impl Shard {
    /// The ACL in force, refreshed from `store` after a reload.
    fn acl_view(&self, store: &AclStore) -> Ref<'_, Arc<Acl>> {
        let generation = store.generation();
        if self.acl_gen.get() != generation {
            *self.acl_cache.borrow_mut() = store.current();
            self.acl_gen.set(generation);
        }
        self.acl_cache.borrow()
    }

    /// May this connection publish to `topic` (a topic name)? Counted and logged when not.
    pub fn acl_may_publish(&self, conn: &Conn, topic: &str) -> bool {
        let Some(store) = &self.global.acl else {
            return true;
        };
        let st = conn.session.state.borrow();
        let who = Who::new(conn.user(), &st.client_id);
        if self.acl_view(store).can_write(&who, topic) {
            return true;
        }
        Metrics::inc(&self.metrics.publishes_denied_acl);
        self.acl_refused(conn, &st.client_id, topic, "publish");
        false
    }

    /// May this connection subscribe to `filter` (shared subscriptions: the filter after
    /// `$share/{group}/`)? Counted and logged when not. Call before the subscription is
    /// added: it keeps the session's `acl_clean` (see [`SessionCell::acl_clean`]).
    pub fn acl_may_subscribe(&self, conn: &Conn, filter: &str) -> bool {
        let Some(store) = &self.global.acl else {
            return true;
        };
        let inner = parse_shared(filter).map_or(filter, |(_, f)| f);
        let st = conn.session.state.borrow();
        let who = Who::new(conn.user(), &st.client_id);
        let decision = self.acl_view(store).can_subscribe(&who, inner);
        if let SubDecision::Allowed { exact } = decision {
            let cell = &conn.session;
            let generation = self.acl_gen.get();
            let clean_so_far = cell.acl_clean.get() == generation || st.subs.is_empty();
            cell.acl_clean
                .set(if exact && clean_so_far { generation } else { 0 });
            return true;
        }
        self.acl_refused(conn, &st.client_id, filter, "subscription");
        Metrics::inc(&self.metrics.subscriptions_denied_acl);
        false
    }

    fn acl_refused(&self, conn: &Conn, client: &str, topic: &str, what: &str) {
        tracing::debug!(
            conn = conn.id,
            client,
            user = conn.user().unwrap_or(""),
            topic,
            "{what} refused by the ACL"
        );
    }

    /// May a will (or another message published for a client that may be gone) go to
    /// `topic` with this identity? Counted when not.
    pub fn acl_may_publish_will(&self, user: Option<&str>, client: &str, topic: &str) -> bool {
        let Some(store) = &self.global.acl else {
            return true;
        };
        if self
            .acl_view(store)
            .can_write(&Who::new(user, client), topic)
        {
            return true;
        }
        Metrics::inc(&self.metrics.wills_denied_acl);
        tracing::debug!(
            client,
            user = user.unwrap_or(""),
            topic,
            "will refused by the ACL"
        );
        false
    }

    /// May the session `cell` receive a message published to `topic`? Asked for every
    /// delivery (online or offline, shared or not, retained on subscribe) with the user
    /// name of the session's latest connection, unless all of the session's subscriptions
    /// were found fully readable under the ACL in force. Counted when not.
    pub(super) fn acl_may_deliver(&self, cell: &SessionCell, topic: &str) -> bool {
        let Some(store) = &self.global.acl else {
            return true;
        };
        if cell.acl_clean.get() == store.generation() {
            return true;
        }
        let st = cell.state.borrow();
        let user = cell.user.borrow();
        let who = Who::new(user.as_deref(), &st.client_id);
        if self.acl_view(store).can_read(&who, topic) {
            return true;
        }
        Metrics::inc(&self.metrics.deliveries_denied_acl);
        false
    }
}

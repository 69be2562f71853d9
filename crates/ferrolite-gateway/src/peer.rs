//! [`UserPeer`]: one `_blipsync` session's channel access, for the passive replicator.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ferrolite::{ChannelChange, IncomingWrite, PeerAccess, Properties, WriteRejected};
use serde_json::Value;
use tokio::sync::watch;

use crate::channels::{Access, UserContext};
use crate::state::{Db, Principal, Subscriber, GUEST};

/// What one authenticated peer may pull (its channels, through the channel index) and push
/// (what the sync function accepts with the peer's user context).
#[derive(Debug)]
pub(crate) struct UserPeer {
    db: Arc<Db>,
    /// Woken only by changes in the channels this peer reads, and by access changes.
    subscription: Arc<Subscriber>,
    principal: Principal,
    /// `false` on the admin port: everything is readable and the `require*` checks pass.
    public: bool,
}

impl UserPeer {
    pub(crate) fn new(db: Arc<Db>, principal: Principal, public: bool) -> UserPeer {
        UserPeer {
            subscription: db.subscriber(),
            db,
            principal,
            public,
        }
    }

    fn writer(&self) -> Option<UserContext> {
        self.public.then(|| self.db.user_context(&self.principal))
    }
}

/// Parses a JSON object body (`{}` when it is not one).
fn properties(body: &[u8]) -> Properties {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        _ => Properties::new(),
    }
}

impl PeerAccess for UserPeer {
    fn readable_channels(&self) -> Option<HashMap<String, u64>> {
        let readable = if self.public {
            match self.db.access_of(&self.principal) {
                Access::All => None,
                Access::Channels(channels) => Some(channels),
            }
        } else {
            None
        };
        self.subscription
            .set_readable(readable.as_ref().map(|m| m.keys().cloned().collect()));
        readable
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.subscription.subscribe()
    }

    fn changes_in(
        &self,
        channels: &HashSet<String>,
        since: u64,
        limit: usize,
    ) -> Vec<ChannelChange> {
        self.db
            .channels
            .changes_in(channels, since, limit)
            .into_iter()
            .map(|(sequence, doc_id, removed)| ChannelChange {
                sequence,
                doc_id,
                removed,
            })
            .collect()
    }

    fn documents_in(&self, channels: &HashSet<String>) -> Vec<String> {
        self.db
            .channels
            .documents_in(channels)
            .into_iter()
            .collect()
    }

    fn revoked_since(&self, since: u64) -> HashSet<String> {
        if !self.public {
            return HashSet::new();
        }
        self.db
            .revoked_since(self.principal.as_deref().unwrap_or(GUEST), since)
    }

    fn check_write(&self, write: &IncomingWrite<'_>) -> Result<(), WriteRejected> {
        let mut doc = if write.deleted {
            Properties::new()
        } else {
            properties(write.body)
        };
        // Replicated bodies may carry `_attachments` and the like: the function sees them.
        doc.insert("_id".into(), Value::String(write.doc_id.to_owned()));
        doc.insert("_rev".into(), Value::String(write.rev_id.to_string()));
        if write.deleted {
            doc.insert("_deleted".into(), Value::Bool(true));
        }
        let old = write.parent_body.map(|body| {
            let mut old = properties(body);
            old.insert("_id".into(), Value::String(write.doc_id.to_owned()));
            old
        });
        let writer = self.writer();
        let routing = self
            .db
            .router
            .route(&doc, old.as_ref(), writer.as_ref())
            .map_err(|r| WriteRejected {
                status: r.status,
                message: r.message,
            })?;
        self.db
            .expect_routing(write.doc_id, &write.rev_id.to_string(), routing);
        Ok(())
    }
}

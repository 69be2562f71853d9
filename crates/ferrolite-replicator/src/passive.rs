//! The passive side: answers a peer's replication requests on one connection (what a
//! Couchbase Lite listener or Sync Gateway does).
//!
//! With [`PassiveOptions::access`] the peer's reads and writes go through a
//! [`PeerAccess`]: pushed revisions are checked before they are stored, and `subChanges`
//! feeds follow the peer's channels (`channel_feed`): rows come from the channel index,
//! channels granted later are backfilled, and lost access is announced with removal and
//! revocation rows (or, to a peer that did not ask for those, with `{"_removed":true}`
//! revision bodies).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use ferrolite_document::{validate_doc_id, BlobDigest, InsertMode, RevId, DEFAULT_MAX_DEPTH};
use ferrolite_protocol::blip::Message;
use ferrolite_protocol::messages::{
    ChangeFlags, ChangeRow, Changes, ChangesReply, ChangesReplyEntry, EmptyReply,
    GetCheckpointReply, MessageError, NoRev, ProposeChanges, ProposeChangesReply, ProposeStatus,
    Request, Rev, Sequence, SetCheckpointReply, SubChanges, BYCHANNEL_FILTER,
};
use ferrolite_storage::{ObservedStore, ObserverId, Store};
use ferrolite_transport::Connection;
use serde_json::Value;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::access::{IncomingWrite, PeerAccess, WriteRejected};
use crate::blobs::{self, FetchPolicy, IncomingBlob};
use crate::channel_feed::{self, Position, RowFilter, View};
use crate::content::{BlobGrant, RevContent};
use crate::db::{self, Db, Inserter, RevToInsert};
use crate::delta_sync::{self, Encoding, OutgoingRev, SentRev};
use crate::driver::{self, decode_reply, Blip, Driven, DriverEnd};
use crate::ReplicatorError;

/// Default rows per `changes` message when `subChanges` gives no `batch`.
const DEFAULT_BATCH: u32 = 200;
/// Most `rev` messages sent and not yet answered, per feed: two of the receiver's insertion
/// batches, as in the active pusher (`active::MAX_REVS_IN_FLIGHT`).
const MAX_REVS_IN_FLIGHT: usize = 400;

/// Decides, by document ID, whether the peer may read a document (see
/// [`PassiveOptions::read_filter`]).
pub type ReadFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Options of [`serve_passive`].
#[derive(Clone, Default)]
pub struct PassiveOptions {
    /// Refuse incoming revisions: `proposeChanges`, `changes` and `rev` from the peer are
    /// answered `HTTP 403`.
    pub read_only: bool,
    /// No delta sync on this connection: deltas are neither sent to a puller (even one
    /// that says `deltas=true`) nor offered to a pusher (`deltas` in our replies), and a
    /// received delta is refused with `HTTP 400 "Deltas are disabled for this peer"`.
    pub disable_deltas: bool,
    /// Which documents the peer may pull: `subChanges` feeds skip the rows of documents
    /// for which it returns `false` (called with the document ID, on a blocking thread).
    /// `None`: every document. It applies on top of [`access`](Self::access).
    pub read_filter: Option<ReadFilter>,
    /// Channel-based access of the peer (the gateway's users, channels and sync function);
    /// `None`: the peer reads every document and any revision it pushes is accepted.
    ///
    /// - Every pushed `rev` is checked with [`PeerAccess::check_write`] before it is stored;
    ///   a refusal is answered `HTTP <status>` with its message.
    /// - A `subChanges` feed reads the changes of the peer's readable channels (narrowed by
    ///   a `sync_gateway/bychannel` filter) through [`PeerAccess::changes_in`]. Channels
    ///   that became readable at or after the peer's `since`, or while the feed runs, are
    ///   backfilled: their older documents are sent with the feed's position as sequence. A
    ///   document routed out of the peer's channels is sent as a removal row (flag 4) to a
    ///   peer that subscribed with `revocations=true`, else as an ordinary row whose
    ///   revision body is `{"_removed":true}`; a channel lost while the feed runs produces
    ///   revocation rows (flag 2) for its documents the peer cannot reach otherwise, when
    ///   it asked for revocations. Continuous feeds also wake on
    ///   [`PeerAccess::subscribe`].
    /// - When [`PeerAccess::readable_channels`] returns `None` the feed scans the store as
    ///   without access (a by-channel filter still narrows it, through the channel index).
    ///
    /// Its methods are called on blocking threads.
    pub access: Option<Arc<dyn PeerAccess>>,
}

impl std::fmt::Debug for PassiveOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassiveOptions")
            .field("read_only", &self.read_only)
            .field("disable_deltas", &self.disable_deltas)
            .field("read_filter", &self.read_filter.is_some())
            .field("access", &self.access.is_some())
            .finish()
    }
}

impl PassiveOptions {
    /// Options refusing (`true`) or accepting incoming revisions.
    pub fn read_only(read_only: bool) -> PassiveOptions {
        PassiveOptions {
            read_only,
            ..PassiveOptions::default()
        }
    }
}

/// Serves one accepted connection as the passive peer until it closes: answers
/// `getCheckpoint`/`setCheckpoint` (stored as local documents `checkpoint/<client>` with
/// revisions `0-N`, like Sync Gateway), `subChanges` (streams the change feed, then keeps
/// streaming new commits when continuous), `proposeChanges` and `changes` (which revisions
/// to send), `rev` (inserted in batches, answered after the commit), `PING`; anything else
/// gets an error reply. Many connections can be served at once, each by its own call.
///
/// Returns `Ok` when the peer closed the connection cleanly, the error otherwise.
pub async fn serve_passive(
    store: Arc<ObservedStore>,
    connection: Connection,
    options: PassiveOptions,
) -> Result<(), ReplicatorError> {
    let db = Db::new(store);
    let Driven {
        blip,
        mut requests,
        task,
    } = driver::spawn(connection, "passive");
    info!(target: "ferrolite::replicator", "passive peer: connection opened");
    let (inserter, inserter_task) = Inserter::spawn(db.clone(), blip.clone(), Box::new(|_| {}));
    let mut passive = Passive {
        content: if options.access.is_some() {
            RevContent::restricted(db.clone(), blip.clone(), !options.disable_deltas)
        } else {
            RevContent::new(db.clone(), blip.clone(), !options.disable_deltas)
        },
        db,
        blip,
        inserter,
        options,
        feed: None,
    };
    while let Some(message) = requests.recv().await {
        passive.handle(message).await;
    }
    if let Some(feed) = passive.feed.take() {
        feed.abort();
    }
    passive.inserter.flush().await;
    drop(passive);
    let _ = inserter_task.await;
    let end = match task.await {
        Ok(end) => end,
        Err(err) => DriverEnd::Failed(ReplicatorError::protocol(format!(
            "connection task failed: {err}"
        ))),
    };
    info!(target: "ferrolite::replicator", ?end, "passive peer: connection ended");
    match end {
        DriverEnd::Closed { .. } => Ok(()),
        DriverEnd::Failed(err) => Err(err),
    }
}

struct Passive {
    /// Blobs and deltas of this connection.
    content: Arc<RevContent>,
    db: Db,
    blip: Blip,
    inserter: Inserter,
    options: PassiveOptions,
    feed: Option<JoinHandle<()>>,
}

/// The local document holding a peer's checkpoint.
fn checkpoint_doc(client: &str) -> String {
    format!("checkpoint/{client}")
}

fn http_error(request: &Message, code: i32, text: &str) -> Message {
    Message::error_to(request, "HTTP", code, text)
}

impl Passive {
    async fn handle(&mut self, message: Message) {
        let request = match Request::from_message(&message) {
            Ok(request) => request,
            Err(err) => {
                debug!(target: "ferrolite::replicator", error = %err, "refusing a request");
                if !message.no_reply {
                    self.blip.respond(err.to_error_reply(&message)).await;
                }
                return;
            }
        };
        if request.collection().is_some() {
            if !message.no_reply {
                self.blip
                    .respond(http_error(
                        &message,
                        400,
                        "inappropriate use of the collection property.",
                    ))
                    .await;
            }
            return;
        }
        let reply = match request {
            Request::GetCheckpoint(get) => Some(self.get_checkpoint(&message, &get.client).await),
            Request::SetCheckpoint(set) => Some(
                self.set_checkpoint(&message, set.client, set.rev, set.body)
                    .await,
            ),
            Request::SubChanges(sub) => Some(self.sub_changes(&message, sub)),
            Request::UnsubChanges(_) => {
                if let Some(feed) = self.feed.take() {
                    feed.abort();
                }
                Some(EmptyReply.to_response(&message))
            }
            Request::ProposeChanges(propose) => Some(self.propose_changes(&message, propose).await),
            Request::Changes(changes) => Some(self.changes(&message, changes).await),
            Request::Rev(rev) => self.rev(&message, *rev).await,
            Request::NoRev(_) => None,
            Request::Ping(_) => Some(EmptyReply.to_response(&message)),
            Request::GetAttachment(_) | Request::ProveAttachment(_) => {
                // Answered by its own task (a blob streams from the store).
                self.content.serve(&message).await;
                None
            }
            other => Some(
                MessageError::UnknownProfile(other.profile().as_str().to_owned())
                    .to_error_reply(&message),
            ),
        };
        if let Some(reply) = reply {
            if !message.no_reply {
                self.blip.respond(reply).await;
            }
        }
    }

    async fn get_checkpoint(&self, request: &Message, client: &str) -> Message {
        match self.db.local_json(checkpoint_doc(client)).await {
            Ok(Some(mut body)) => {
                let rev = match body.remove("_rev") {
                    Some(Value::String(rev)) => rev,
                    _ => "0-1".to_owned(),
                };
                GetCheckpointReply::from_json(rev, &body).to_response(request)
            }
            Ok(None) => GetCheckpointReply::not_found(request),
            Err(err) => http_error(request, 502, &err.to_string()),
        }
    }

    async fn set_checkpoint(
        &self,
        request: &Message,
        client: String,
        rev: Option<String>,
        body: bytes::Bytes,
    ) -> Message {
        let result = self
            .db
            .call(move |store| {
                db::with_local_doc_lock(|| {
                    let id = checkpoint_doc(&client);
                    let stored = db::read_local_json(store, &id)?;
                    let stored_rev = stored
                        .as_ref()
                        .and_then(|doc| doc.get("_rev"))
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    if stored_rev != rev {
                        return Ok(None);
                    }
                    let generation = stored_rev
                        .as_deref()
                        .and_then(|r| r.strip_prefix("0-"))
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0);
                    let new_rev = format!("0-{}", generation.saturating_add(1));
                    let mut doc = match serde_json::from_slice::<Value>(&body) {
                        Ok(Value::Object(map)) => map,
                        _ => serde_json::Map::new(),
                    };
                    doc.insert("_rev".to_owned(), Value::String(new_rev.clone()));
                    let bytes = Value::Object(doc).to_string();
                    store.write(&mut |tx| tx.put_local(&id, Some(bytes.as_bytes())))?;
                    Ok(Some(new_rev))
                })
            })
            .await;
        match result {
            Ok(Some(rev)) => SetCheckpointReply { rev }.to_response(request),
            Ok(None) => SetCheckpointReply::conflict(request),
            Err(err) => http_error(request, 502, &err.to_string()),
        }
    }

    fn sub_changes(&mut self, request: &Message, sub: SubChanges) -> Message {
        let since = match &sub.since {
            None => 0,
            Some(seq) => match seq
                .as_u64()
                .or_else(|| seq.as_str().and_then(|s| s.parse().ok()))
            {
                Some(n) => n,
                None => return http_error(request, 400, "Invalid subChanges parameters"),
            },
        };
        let channels: Option<HashSet<String>> = match sub.filter.as_deref() {
            None => None,
            Some(BYCHANNEL_FILTER) if !sub.channels.is_empty() => {
                if self.options.access.is_none() {
                    // Channels come with access: without it no document has any, so the
                    // by-channel filter is accepted and every document is served.
                    debug!(target: "ferrolite::replicator", channels = ?sub.channels, "passive peer: channels ignored (no channel access)");
                }
                Some(sub.channels.iter().cloned().collect())
            }
            Some(BYCHANNEL_FILTER) => return http_error(request, 400, "Empty channel list"),
            Some(_) => {
                return http_error(request, 400, "Unknown filter; try sync_gateway/bychannel")
            }
        };
        if let Some(feed) = self.feed.take() {
            feed.abort();
        }
        let feed = Feed {
            content: self.content.clone(),
            db: self.db.clone(),
            blip: self.blip.clone(),
            since,
            batch: sub.batch.unwrap_or(DEFAULT_BATCH).clamp(1, 1000) as usize,
            continuous: sub.continuous,
            filter: RowFilter {
                active_only: sub.active_only,
                doc_ids: sub.doc_ids.map(|ids| Arc::new(ids.into_iter().collect())),
                read_filter: self.options.read_filter.clone(),
            },
            access: self.options.access.clone().map(|access| FeedAccess {
                access,
                channels,
                revocations: sub.revocations,
            }),
        };
        self.feed = Some(tokio::spawn(async move {
            if let Err(err) = feed.run().await {
                debug!(target: "ferrolite::replicator", error = %err, "passive change feed ended");
            }
        }));
        EmptyReply.to_response(request)
    }

    async fn propose_changes(&self, request: &Message, propose: ProposeChanges) -> Message {
        if self.options.read_only {
            return http_error(request, 403, "this database is read-only");
        }
        let rows = propose.rows;
        let includes_rev = propose.conflict_includes_rev;
        let statuses = self
            .db
            .call(move |store| {
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    let status = match store.get(&row.doc_id)? {
                        None => ProposeStatus::Accepted,
                        Some(record) => match record.tree.current() {
                            None => ProposeStatus::Accepted,
                            Some(current) if current.id() == &row.rev_id => {
                                ProposeStatus::AlreadyHave
                            }
                            Some(_) if record.tree.contains(&row.rev_id) => {
                                ProposeStatus::AlreadyHave
                            }
                            Some(current) => {
                                let accepted = match &row.server_rev {
                                    Some(parent) => parent == current.id(),
                                    None => current.is_deleted(),
                                };
                                if accepted {
                                    ProposeStatus::Accepted
                                } else {
                                    ProposeStatus::Conflict {
                                        current: includes_rev.then(|| current.id().clone()),
                                    }
                                }
                            }
                        },
                    };
                    out.push(status);
                }
                Ok(out)
            })
            .await;
        match statuses {
            Ok(mut entries) => {
                while entries.last() == Some(&ProposeStatus::Accepted) {
                    entries.pop();
                }
                ProposeChangesReply {
                    entries,
                    max_history: Some(DEFAULT_MAX_DEPTH),
                    blobs: true,
                    deltas: self.content.accepts_deltas(),
                }
                .to_response(request)
            }
            Err(err) => http_error(request, 500, &err.to_string()),
        }
    }

    async fn changes(&self, request: &Message, changes: Changes) -> Message {
        if self.options.read_only {
            return http_error(request, 403, "this database is read-only");
        }
        match find_revs(&self.db, changes.rows).await {
            Ok(entries) => ChangesReply {
                entries,
                max_history: Some(DEFAULT_MAX_DEPTH),
                blobs: true,
                deltas: self.content.accepts_deltas(),
                send_replacement_revs: false,
            }
            .to_response(request),
            Err(err) => http_error(request, 500, &err.to_string()),
        }
    }

    /// Checks and queues a pushed revision; the inserter answers after the commit.
    async fn rev(&self, request: &Message, rev: Rev) -> Option<Message> {
        if self.options.read_only {
            return Some(http_error(request, 403, "this database is read-only"));
        }
        let rev = match self.content.expand_delta(rev).await {
            Ok(rev) => rev,
            Err((status, why)) => return Some(http_error(request, status, &why)),
        };
        let prepared = match prepare_rev(&rev) {
            Ok(prepared) => prepared,
            Err(why) => return Some(http_error(request, 400, &why)),
        };
        if let Some(access) = &self.options.access {
            match check_write(&self.db, access.clone(), &rev, &prepared).await {
                Ok(Ok(())) => {}
                Ok(Err(rejected)) => {
                    debug!(target: "ferrolite::replicator", id = %rev.id, rev = %rev.rev, status = rejected.status, message = %rejected.message, "passive peer: pushed revision refused");
                    return Some(http_error(
                        request,
                        i32::from(rejected.status),
                        &rejected.message,
                    ));
                }
                Err(err) => return Some(http_error(request, 500, &err.to_string())),
            }
        }
        let mode = if rev.no_conflicts {
            InsertMode::NoConflicts
        } else {
            InsertMode::AllowConflicts
        };
        // Its blobs are fetched (or proved) first; the `rev` is answered after the commit.
        let to_insert = RevToInsert {
            doc_id: rev.id,
            history: prepared.history,
            body: prepared.body,
            deleted: rev.deleted,
            mode,
            remote: None,
            reply_to: (!request.no_reply).then(|| request.clone()),
        };
        let queued = self
            .content
            .insert_with_blobs(
                &self.inserter,
                to_insert,
                prepared.blobs,
                FetchPolicy::ProveOrGet,
                Box::new(|_| {}),
            )
            .await;
        match queued {
            Ok(()) => None,
            Err(err) => Some(http_error(request, 503, &err.to_string())),
        }
    }
}

/// Asks `access` whether the pushed `rev` may be stored, with the body of the document's
/// current revision (none for a new document or a tombstone) as its parent body.
async fn check_write(
    db: &Db,
    access: Arc<dyn PeerAccess>,
    rev: &Rev,
    prepared: &PreparedRev,
) -> Result<Result<(), WriteRejected>, ReplicatorError> {
    let doc_id = rev.id.clone();
    let rev_id = rev.rev.clone();
    let body = prepared.body.clone();
    let deleted = rev.deleted;
    db.call(move |store| {
        let record = store.get(&doc_id)?;
        let parent_body = record.as_ref().and_then(|record| {
            let current = record.tree.current()?;
            if current.is_deleted() {
                return None;
            }
            current.body().cloned()
        });
        Ok(access.check_write(&IncomingWrite {
            doc_id: &doc_id,
            rev_id: &rev_id,
            body: &body,
            deleted,
            parent_body: parent_body.as_deref(),
        }))
    })
    .await
}

/// A checked incoming revision: `[rev] + history`, the canonical body, and the blobs it
/// references (to be present before it is stored).
pub(crate) struct PreparedRev {
    pub(crate) history: Vec<RevId>,
    pub(crate) body: bytes::Bytes,
    pub(crate) removed: bool,
    pub(crate) blobs: Vec<IncomingBlob>,
}

/// Checks a received `rev` (document ID, history, body) as both roles do; the error text
/// goes into an `HTTP 400` reply.
pub(crate) fn prepare_rev(rev: &Rev) -> Result<PreparedRev, String> {
    validate_doc_id(&rev.id).map_err(|e| e.to_string())?;
    if rev.delta_src.is_some() {
        return Err("Deltas are disabled for this peer".to_owned());
    }
    if !rev.has_consecutive_history() {
        return Err(format!(
            "invalid history for {} {}: generations must decrease by one",
            rev.id, rev.rev
        ));
    }
    let parsed = db::parse_body(&rev.body)?;
    let mut history = Vec::with_capacity(rev.history.len() + 1);
    history.push(rev.rev.clone());
    history.extend(rev.history.iter().cloned());
    Ok(PreparedRev {
        history,
        body: parsed.canonical,
        removed: parsed.removed,
        blobs: parsed.blobs,
    })
}

/// The reply entries for `changes` rows: `0` for revisions we have, else the list of our
/// revisions that may be ancestors.
pub(crate) async fn find_revs(
    db: &Db,
    rows: Vec<ChangeRow>,
) -> Result<Vec<ChangesReplyEntry>, ReplicatorError> {
    db.call(move |store| {
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            let entry = match store.get(&row.doc_id)? {
                None => ChangesReplyEntry::Wanted(Vec::new()),
                Some(record) if record.tree.contains(&row.rev_id) => ChangesReplyEntry::NotWanted,
                Some(record) => {
                    ChangesReplyEntry::Wanted(db::known_ancestors(&record.tree, &row.rev_id))
                }
            };
            entries.push(entry);
        }
        Ok(entries)
    })
    .await
}

/// Unregisters an observer when dropped.
pub(crate) struct ObserverGuard {
    store: Arc<ObservedStore>,
    id: ObserverId,
}

impl ObserverGuard {
    /// Wakes `notify` after every commit of `store` that changed documents.
    pub(crate) fn notify_on_commit(
        store: &Arc<ObservedStore>,
        notify: Arc<Notify>,
    ) -> ObserverGuard {
        let id = store.observe(move |_| notify.notify_one());
        ObserverGuard {
            store: store.clone(),
            id,
        }
    }
}

impl Drop for ObserverGuard {
    fn drop(&mut self) {
        self.store.unobserve(self.id);
    }
}

/// The change feed a `subChanges` opened.
struct Feed {
    /// How revisions are encoded for the peer (stubs, deltas).
    content: Arc<RevContent>,
    db: Db,
    blip: Blip,
    /// The feed's position: the last sequence read.
    since: u64,
    batch: usize,
    continuous: bool,
    /// `activeOnly`, `docIDs` and the read filter.
    filter: RowFilter,
    /// The peer's channel access, when the options have one.
    access: Option<FeedAccess>,
}

/// What a feed needs of the peer's channel access.
struct FeedAccess {
    access: Arc<dyn PeerAccess>,
    /// The channels of a `sync_gateway/bychannel` filter.
    channels: Option<HashSet<String>>,
    /// The peer subscribed with `revocations=true`: removals and revocations are sent as
    /// flagged rows.
    revocations: bool,
}

/// A row of the feed with what is needed to send its revision.
pub(crate) struct FeedRow {
    pub(crate) row: ChangeRow,
    /// The peer may no longer read this revision: if it asks for it, it gets a removal
    /// body (`{"_removed":true}`, `{}` for a tombstone).
    pub(crate) removed: bool,
}

impl Feed {
    async fn run(mut self) -> Result<(), ReplicatorError> {
        let wake = Arc::new(Notify::new());
        // With channel access, the access's own signal follows every commit it indexed:
        // waking on raw commits as well would only wake the feed before its index has them.
        let _observer = (self.continuous && self.access.is_none())
            .then(|| ObserverGuard::notify_on_commit(self.db.store(), wake.clone()));
        let mut access_changed = match &self.access {
            Some(access) if self.continuous => {
                let access = access.access.clone();
                Some(self.db.call(move |_| Ok(access.subscribe())).await?)
            }
            _ => None,
        };
        let mut view: Option<View> = None;
        let mut in_flight: VecDeque<(SentRev, Option<BlobGrant>)> = VecDeque::new();
        let mut sent_caught_up = false;
        loop {
            if let Some(changed) = access_changed.as_mut() {
                changed.borrow_and_update();
            }
            if self.access.is_some() {
                let (new_view, rows) = self.refresh_view(view.take()).await?;
                view = Some(new_view);
                let mut rows = rows.into_iter().peekable();
                while rows.peek().is_some() {
                    let batch: Vec<FeedRow> = rows.by_ref().take(self.batch).collect();
                    self.send_batch(batch, &mut in_flight).await?;
                }
            }
            let (rows, scanned_to, exhausted) = match view.as_ref().and_then(View::channels) {
                Some(channels) => self.read_channel_rows(channels).await?,
                None => self.read_rows().await?,
            };
            self.since = scanned_to;
            if !rows.is_empty() {
                self.send_batch(rows, &mut in_flight).await?;
            }
            if exhausted {
                if !sent_caught_up {
                    sent_caught_up = true;
                    self.blip
                        .send_no_reply(Changes::default().to_message())
                        .await?;
                    // `activeOnly` spares a peer that starts empty the tombstones of the
                    // backlog; from now on it may hold any document, so a deletion made
                    // while the feed runs must reach it.
                    self.filter.active_only = false;
                }
                while let Some((pending, _grant)) = in_flight.pop_front() {
                    log_rev_reply(pending.reply(&self.blip).await);
                }
                if !self.continuous {
                    return Ok(());
                }
                if wait(&wake, access_changed.as_mut()).await {
                    access_changed = None;
                }
            }
        }
    }

    /// Re-reads the peer's readable channels; returns its view and the rows its change
    /// calls for: at the start, the backfill of channels granted since the peer's `since`;
    /// later, when the channels changed, revocations and the backfill of gained channels.
    async fn refresh_view(
        &self,
        old: Option<View>,
    ) -> Result<(View, Vec<FeedRow>), ReplicatorError> {
        let Some(feed_access) = &self.access else {
            return Ok((View::All, Vec::new()));
        };
        let access = feed_access.access.clone();
        let channels = feed_access.channels.clone();
        let revocations = feed_access.revocations;
        let filter = self.filter.clone();
        let since = self.since;
        let batch = self.batch;
        self.db
            .call(move |store| {
                let new = View::new(access.readable_channels(), channels.as_ref());
                let rows = match &old {
                    None => {
                        // A peer reconnecting from an older checkpoint is told first what it
                        // lost meanwhile.
                        let mut rows = if revocations && since > 0 {
                            channel_feed::revoked_rows(
                                &*access,
                                store,
                                &new,
                                channels.as_ref(),
                                since,
                                batch,
                                &filter,
                            )?
                        } else {
                            Vec::new()
                        };
                        rows.extend(channel_feed::initial_rows(
                            &*access, store, &new, since, batch, &filter,
                        )?);
                        rows
                    }
                    Some(old) if !old.same_channels(&new) => {
                        debug!(target: "ferrolite::replicator", from = ?old.channels(), to = ?new.channels(), "passive change feed: the peer's channels changed");
                        channel_feed::transition_rows(
                            &*access,
                            store,
                            old,
                            &new,
                            Position(since),
                            batch,
                            &filter,
                            revocations,
                        )?
                    }
                    Some(_) => Vec::new(),
                };
                Ok((new, rows))
            })
            .await
    }

    /// Reads up to `batch` rows after `since` from the channel index.
    async fn read_channel_rows(
        &self,
        channels: HashSet<String>,
    ) -> Result<(Vec<FeedRow>, u64, bool), ReplicatorError> {
        let Some(feed_access) = &self.access else {
            return self.read_rows().await;
        };
        let access = feed_access.access.clone();
        let revocations = feed_access.revocations;
        let filter = self.filter.clone();
        let since = self.since;
        let batch = self.batch;
        self.db
            .call(move |store| {
                channel_feed::channel_rows(
                    &*access,
                    store,
                    &channels,
                    since,
                    batch,
                    &filter,
                    revocations,
                )
            })
            .await
    }

    /// Reads up to `batch` rows after `since` from the store's change feed, skipping what
    /// the filters exclude. Returns the rows, the last sequence scanned and whether the
    /// feed was exhausted.
    async fn read_rows(&self) -> Result<(Vec<FeedRow>, u64, bool), ReplicatorError> {
        let since = self.since;
        let batch = self.batch;
        let filter = self.filter.clone();
        self.db
            .call(move |store| {
                let mut rows = Vec::new();
                let mut scanned = since;
                loop {
                    let page = store.changes_since(scanned, batch)?;
                    let short = page.len() < batch;
                    for change in page {
                        scanned = change.sequence;
                        if filter.active_only && change.deleted {
                            continue;
                        }
                        if !filter.admits(&change.id) {
                            continue;
                        }
                        let body_size = store.get(&change.id)?.and_then(|r| {
                            r.tree
                                .get(&change.rev)
                                .and_then(|c| c.body())
                                .map(|b| b.len() as u64)
                        });
                        rows.push(FeedRow {
                            row: ChangeRow {
                                sequence: Sequence::from(change.sequence),
                                doc_id: change.id,
                                rev_id: change.rev,
                                flags: if change.deleted {
                                    ChangeFlags::DELETED
                                } else {
                                    ChangeFlags::NONE
                                },
                                body_size,
                            },
                            removed: false,
                        });
                        if rows.len() >= batch {
                            return Ok((rows, scanned, false));
                        }
                    }
                    if short {
                        return Ok((rows, scanned, true));
                    }
                }
            })
            .await
    }

    /// Sends one `changes` message and the `rev`s the peer wants.
    async fn send_batch(
        &self,
        rows: Vec<FeedRow>,
        in_flight: &mut VecDeque<(SentRev, Option<BlobGrant>)>,
    ) -> Result<(), ReplicatorError> {
        let removed: Vec<bool> = rows.iter().map(|r| r.removed).collect();
        let changes = Changes {
            rows: rows.into_iter().map(|r| r.row).collect(),
            collection: None,
        };
        let reply = self.blip.request(changes.to_message()).await?;
        let reply = decode_reply(&reply, ChangesReply::from_response)?;
        self.content.peer_said(reply.blobs, reply.deltas);
        let encoding = self.content.encoding();
        let max_history = reply.max_history.unwrap_or(DEFAULT_MAX_DEPTH) as usize;
        let wanted: Vec<(ChangeRow, Vec<RevId>, bool)> = changes
            .rows
            .into_iter()
            .enumerate()
            .filter_map(|(i, row)| {
                let known = reply.wanted(i)?.to_vec();
                Some((row, known, removed.get(i).copied().unwrap_or(false)))
            })
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let messages = self
            .db
            .call(move |store| {
                let mut out = Vec::with_capacity(wanted.len());
                for (row, known, removed) in &wanted {
                    out.push(if *removed {
                        (
                            removal_message(store, row, known, max_history)?,
                            HashSet::new(),
                        )
                    } else {
                        rev_message(store, row, known, max_history, encoding)?
                    });
                }
                Ok(out)
            })
            .await?;
        for (out, digests) in messages {
            if out.message.no_reply {
                self.blip.send_no_reply(out.message).await?;
                continue;
            }
            while in_flight.len() >= MAX_REVS_IN_FLIGHT {
                if let Some((pending, _grant)) = in_flight.pop_front() {
                    log_rev_reply(pending.reply(&self.blip).await);
                }
            }
            // The peer may fetch the revision's blobs until its reply is handled.
            let doc_id = out.message.property("id").unwrap_or_default().to_owned();
            let grant = self.content.grant_blobs(&doc_id, digests);
            in_flight.push_back((SentRev::send(&self.blip, out).await?, grant));
        }
        Ok(())
    }
}

/// Waits for a commit of the store or, with `access_changed`, a change of the peer's
/// access. Returns `true` when the access stopped announcing changes (its sender is gone).
async fn wait(wake: &Notify, access_changed: Option<&mut watch::Receiver<u64>>) -> bool {
    match access_changed {
        Some(changed) => tokio::select! {
            () = wake.notified() => false,
            result = changed.changed() => result.is_err(),
        },
        None => {
            wake.notified().await;
            false
        }
    }
}

/// The `rev` for a wanted row whose revision the peer may no longer read (a removal sent
/// as an ordinary row, or a flagged row it asked for anyway): the revision's ID, history
/// and deletion with the body `{"_removed":true}` (`{}` for a tombstone), as Sync Gateway
/// sends it; `norev` when the revision is gone.
fn removal_message(
    store: &dyn Store,
    row: &ChangeRow,
    known: &[RevId],
    max_history: usize,
) -> Result<OutgoingRev, ReplicatorError> {
    let record = store.get(&row.doc_id)?;
    let found = record.as_ref().and_then(|record| {
        let rev = record.tree.get(&row.rev_id)?;
        let known: Vec<&RevId> = known.iter().collect();
        let body: &'static [u8] = if rev.is_deleted() {
            b"{}"
        } else {
            br#"{"_removed":true}"#
        };
        Some(Rev {
            id: row.doc_id.clone(),
            rev: row.rev_id.clone(),
            sequence: Some(row.sequence.clone()),
            history: db::history_to_send(&record.tree, &row.rev_id, &known, max_history),
            deleted: rev.is_deleted(),
            no_conflicts: false,
            delta_src: None,
            replaced_rev: None,
            deleted_branch: None,
            collection: None,
            body: bytes::Bytes::from_static(body),
        })
    });
    Ok(match found {
        Some(rev) => OutgoingRev {
            message: rev.to_message(),
            full: None,
        },
        None => obsolete(row),
    })
}

/// The `norev` for a row whose revision is gone.
fn obsolete(row: &ChangeRow) -> OutgoingRev {
    OutgoingRev {
        message: NoRev {
            id: row.doc_id.clone(),
            rev: row.rev_id.clone(),
            sequence: Some(row.sequence.clone()),
            error: Some(410),
            reason: Some("obsolete".to_owned()),
            collection: None,
        }
        .to_message(),
        full: None,
    }
}

/// The `rev` (or `norev` when its body is gone) for a wanted row, encoded for the peer:
/// `_attachments` stubs unless it said `blobs=true`, a delta against the first revision it
/// listed when it accepts deltas and we keep that revision's body; with the digests of the
/// blobs the revision references.
fn rev_message(
    store: &dyn Store,
    row: &ChangeRow,
    known: &[RevId],
    max_history: usize,
    encoding: Encoding,
) -> Result<(OutgoingRev, HashSet<BlobDigest>), ReplicatorError> {
    let record = store.get(&row.doc_id)?;
    let base = record.as_ref().and_then(|record| {
        let source = known.first()?;
        let revision = record.tree.get(source)?;
        if revision.is_deleted() {
            return None;
        }
        Some((source, revision.body()?.clone()))
    });
    let found = record.as_ref().and_then(|record| {
        let rev = record.tree.get(&row.rev_id)?;
        let body = rev.body()?.clone();
        let known: Vec<&RevId> = known.iter().collect();
        Some(Rev {
            id: row.doc_id.clone(),
            rev: row.rev_id.clone(),
            sequence: Some(row.sequence.clone()),
            history: db::history_to_send(&record.tree, &row.rev_id, &known, max_history),
            deleted: rev.is_deleted(),
            no_conflicts: false,
            delta_src: None,
            replaced_rev: None,
            deleted_branch: None,
            collection: None,
            body,
        })
    });
    Ok(match found {
        Some(rev) => {
            let digests = blobs::referenced_digests(&rev.body);
            let base = base.as_ref().map(|(id, body)| (*id, body));
            (delta_sync::encode_rev(rev, base, encoding), digests)
        }
        None => (obsolete(row), HashSet::new()),
    })
}

fn log_rev_reply(reply: Result<Message, ReplicatorError>) {
    match reply {
        Ok(reply) => {
            if let Some((domain, code)) = reply.error() {
                warn!(target: "ferrolite::replicator", domain, code, "the peer refused a revision");
            }
        }
        Err(err) => debug!(target: "ferrolite::replicator", error = %err, "no reply to a revision"),
    }
}

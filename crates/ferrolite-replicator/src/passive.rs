//! The passive side: answers a peer's replication requests on one connection (what a
//! Couchbase Lite listener or Sync Gateway does).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use ferrolite_document::{validate_doc_id, InsertMode, RevId, DEFAULT_MAX_DEPTH};
use ferrolite_protocol::blip::Message;
use ferrolite_protocol::messages::{
    ChangeFlags, ChangeRow, Changes, ChangesReply, ChangesReplyEntry, EmptyReply,
    GetCheckpointReply, MessageError, NoRev, ProposeChanges, ProposeChangesReply, ProposeStatus,
    Request, Rev, Sequence, SetCheckpointReply, SubChanges, BYCHANNEL_FILTER,
};
use ferrolite_storage::{ObservedStore, ObserverId, Store};
use ferrolite_transport::Connection;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::blobs::{FetchPolicy, IncomingBlob};
use crate::content::RevContent;
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
    /// `None`: every document.
    pub read_filter: Option<ReadFilter>,
}

impl std::fmt::Debug for PassiveOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassiveOptions")
            .field("read_only", &self.read_only)
            .field("disable_deltas", &self.disable_deltas)
            .field("read_filter", &self.read_filter.is_some())
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
        content: RevContent::new(db.clone(), blip.clone(), !options.disable_deltas),
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
                self.content.serve(&message);
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
        match sub.filter.as_deref() {
            None => {}
            // Channels come with the gateway: without it no document has any, so the
            // by-channel filter is accepted and every document is served.
            Some(BYCHANNEL_FILTER) if !sub.channels.is_empty() => {
                debug!(target: "ferrolite::replicator", channels = ?sub.channels, "passive peer: channels ignored (no channels without the gateway)");
            }
            Some(BYCHANNEL_FILTER) => return http_error(request, 400, "Empty channel list"),
            Some(_) => {
                return http_error(request, 400, "Unknown filter; try sync_gateway/bychannel")
            }
        }
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
            active_only: sub.active_only,
            doc_ids: sub.doc_ids.map(|ids| ids.into_iter().collect()),
            read_filter: self.options.read_filter.clone(),
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
    since: u64,
    batch: usize,
    continuous: bool,
    active_only: bool,
    doc_ids: Option<HashSet<String>>,
    /// Documents the peer may not read are skipped.
    read_filter: Option<ReadFilter>,
}

/// A row of the feed with what is needed to send its revision.
struct FeedRow {
    row: ChangeRow,
}

impl Feed {
    async fn run(mut self) -> Result<(), ReplicatorError> {
        let wake = Arc::new(Notify::new());
        let _observer = self
            .continuous
            .then(|| ObserverGuard::notify_on_commit(self.db.store(), wake.clone()));
        let mut in_flight: VecDeque<SentRev> = VecDeque::new();
        let mut sent_caught_up = false;
        loop {
            let (rows, scanned_to, exhausted) = self.read_rows().await?;
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
                }
                while let Some(pending) = in_flight.pop_front() {
                    log_rev_reply(pending.reply(&self.blip).await);
                }
                if !self.continuous {
                    return Ok(());
                }
                wake.notified().await;
            }
        }
    }

    /// Reads up to `batch` rows after `since`, skipping what the filters exclude. Returns
    /// the rows, the last sequence scanned and whether the feed was exhausted.
    async fn read_rows(&self) -> Result<(Vec<FeedRow>, u64, bool), ReplicatorError> {
        let since = self.since;
        let batch = self.batch;
        let active_only = self.active_only;
        let doc_ids = self.doc_ids.clone();
        let read_filter = self.read_filter.clone();
        self.db
            .call(move |store| {
                let mut rows = Vec::new();
                let mut scanned = since;
                loop {
                    let page = store.changes_since(scanned, batch)?;
                    let short = page.len() < batch;
                    for change in page {
                        scanned = change.sequence;
                        if active_only && change.deleted {
                            continue;
                        }
                        if doc_ids
                            .as_ref()
                            .is_some_and(|ids| !ids.contains(&change.id))
                        {
                            continue;
                        }
                        if read_filter.as_ref().is_some_and(|f| !f(&change.id)) {
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
        in_flight: &mut VecDeque<SentRev>,
    ) -> Result<(), ReplicatorError> {
        let changes = Changes {
            rows: rows.into_iter().map(|r| r.row).collect(),
            collection: None,
        };
        let reply = self.blip.request(changes.to_message()).await?;
        let reply = decode_reply(&reply, ChangesReply::from_response)?;
        self.content.peer_said(reply.blobs, reply.deltas);
        let encoding = self.content.encoding();
        let max_history = reply.max_history.unwrap_or(DEFAULT_MAX_DEPTH) as usize;
        let wanted: Vec<(ChangeRow, Vec<RevId>)> = changes
            .rows
            .into_iter()
            .enumerate()
            .filter_map(|(i, row)| reply.wanted(i).map(|known| (row, known.to_vec())))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let messages = self
            .db
            .call(move |store| {
                let mut out = Vec::with_capacity(wanted.len());
                for (row, known) in &wanted {
                    out.push(rev_message(store, row, known, max_history, encoding)?);
                }
                Ok(out)
            })
            .await?;
        for out in messages {
            if out.message.no_reply {
                self.blip.send_no_reply(out.message).await?;
                continue;
            }
            while in_flight.len() >= MAX_REVS_IN_FLIGHT {
                if let Some(pending) = in_flight.pop_front() {
                    log_rev_reply(pending.reply(&self.blip).await);
                }
            }
            in_flight.push_back(SentRev::send(&self.blip, out).await?);
        }
        Ok(())
    }
}

/// The `rev` (or `norev` when its body is gone) for a wanted row, encoded for the peer:
/// `_attachments` stubs unless it said `blobs=true`, a delta against the first revision it
/// listed when it accepts deltas and we keep that revision's body.
fn rev_message(
    store: &dyn Store,
    row: &ChangeRow,
    known: &[RevId],
    max_history: usize,
    encoding: Encoding,
) -> Result<OutgoingRev, ReplicatorError> {
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
            let base = base.as_ref().map(|(id, body)| (*id, body));
            delta_sync::encode_rev(rev, base, encoding)
        }
        None => OutgoingRev {
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
        },
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

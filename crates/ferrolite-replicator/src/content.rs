//! The content of revisions on one connection: what the peer said it understands (blobs
//! natively, deltas), how outgoing `rev` bodies are encoded for it, how a received
//! revision's delta is expanded and its blobs fetched before it is stored, and the blob
//! requests (`getAttachment`, `proveAttachment`) the peer sends us. Shared by the puller,
//! the pusher and the passive side through an `Arc`; the algorithms live in
//! [`blobs`] and [`delta_sync`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ferrolite_document::{BlobDigest, RevId};
use ferrolite_protocol::blip::Message;
use ferrolite_protocol::messages::{GetAttachment, Rev};
use ferrolite_storage::Store;
use tokio::sync::Semaphore;
use tracing::debug;

use crate::blobs::{self, BlobFailure, FetchPolicy, IncomingBlob};
use crate::db::{Db, Inserter, RevToInsert};
use crate::delta_sync::{self, Encoding};
use crate::driver::Blip;
use crate::ReplicatorError;

/// Revisions whose blobs are fetched at the same time (each one's blobs one after another).
const PARALLEL_FETCHES: usize = 8;
/// Most received revisions waiting for their blobs; more are refused with `HTTP 503` (a
/// well-behaved peer never has that many `rev`s unanswered).
const MAX_AWAITING_BLOBS: usize = 256;
/// Blob requests of the peer (`getAttachment`, `proveAttachment`) served at the same time.
const PARALLEL_SERVES: usize = 8;

/// Called when a received revision's blobs cannot be obtained (after its `rev` was answered
/// with the error).
pub(crate) type OnBlobFailure = Box<dyn FnOnce(&BlobFailure) + Send>;

/// Per-connection state of revision content.
pub(crate) struct RevContent {
    db: Db,
    blip: Blip,
    /// Our configuration allows deltas.
    deltas_enabled: bool,
    /// The peer said `blobs=true`: no `_attachments` stubs needed.
    peer_blobs: AtomicBool,
    /// The peer said `deltas=true`.
    peer_deltas: AtomicBool,
    /// We already said `deltas=true` in a reply to `changes`.
    deltas_offered: AtomicBool,
    fetches: Arc<Semaphore>,
    /// Slots for serving the peer's blob requests.
    serving: Arc<Semaphore>,
    awaiting: Arc<AtomicUsize>,
    /// Pushed revisions sent as deltas and awaiting their reply (a refusal resends them).
    sent_deltas: Mutex<HashSet<(String, RevId)>>,
    /// When the peer's reads are restricted (channel access): the blobs it may fetch with
    /// `getAttachment`, those of the `rev`s sent to it whose reply has not been handled yet,
    /// counted per document and digest (Sync Gateway's rule). `None`: any blob we have.
    fetchable: Option<Mutex<HashMap<(String, BlobDigest), usize>>>,
}

/// The blobs of one sent `rev`, fetchable by the peer until this is dropped.
pub(crate) struct BlobGrant {
    content: Arc<RevContent>,
    keys: Vec<(String, BlobDigest)>,
}

impl Drop for BlobGrant {
    fn drop(&mut self) {
        let Some(fetchable) = &self.content.fetchable else {
            return;
        };
        let mut fetchable = fetchable.lock().unwrap_or_else(PoisonError::into_inner);
        for key in self.keys.drain(..) {
            if let Some(count) = fetchable.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    fetchable.remove(&key);
                }
            }
        }
    }
}

/// Decrements a counter when dropped.
struct Awaiting(Arc<AtomicUsize>);

impl Drop for Awaiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RevContent {
    /// The state of a new connection; `deltas_enabled` is the configuration's switch.
    pub(crate) fn new(db: Db, blip: Blip, deltas_enabled: bool) -> Arc<RevContent> {
        Self::with_fetchable(db, blip, deltas_enabled, None)
    }

    /// Like [`new`](Self::new), for a peer whose reads are restricted: it may fetch only the
    /// blobs of the revisions sent to it (see [`grant_blobs`](Self::grant_blobs)).
    pub(crate) fn restricted(db: Db, blip: Blip, deltas_enabled: bool) -> Arc<RevContent> {
        Self::with_fetchable(db, blip, deltas_enabled, Some(Mutex::new(HashMap::new())))
    }

    fn with_fetchable(
        db: Db,
        blip: Blip,
        deltas_enabled: bool,
        fetchable: Option<Mutex<HashMap<(String, BlobDigest), usize>>>,
    ) -> Arc<RevContent> {
        Arc::new(RevContent {
            db,
            blip,
            deltas_enabled,
            peer_blobs: AtomicBool::new(false),
            peer_deltas: AtomicBool::new(false),
            deltas_offered: AtomicBool::new(false),
            fetches: Arc::new(Semaphore::new(PARALLEL_FETCHES)),
            serving: Arc::new(Semaphore::new(PARALLEL_SERVES)),
            awaiting: Arc::new(AtomicUsize::new(0)),
            sent_deltas: Mutex::new(HashSet::new()),
            fetchable,
        })
    }

    /// Whether we accept deltas (the `deltas` property of our replies to `proposeChanges`
    /// and of the passive side's replies to `changes`).
    pub(crate) fn accepts_deltas(&self) -> bool {
        self.deltas_enabled
    }

    /// The `deltas` property of the puller's reply to `changes`: `true` in the first reply
    /// of the connection only (as LiteCore), unless deltas are disabled.
    pub(crate) fn offer_deltas(&self) -> bool {
        self.deltas_enabled && !self.deltas_offered.swap(true, Ordering::SeqCst)
    }

    /// Records what the peer said in a reply to our `changes` or `proposeChanges`
    /// (remembered for the connection: LiteCore says `deltas` only once).
    pub(crate) fn peer_said(&self, blobs: bool, deltas: bool) {
        if blobs {
            self.peer_blobs.store(true, Ordering::SeqCst);
        }
        if deltas {
            self.peer_deltas.store(true, Ordering::SeqCst);
        }
    }

    /// Makes the blobs `digests` of document `doc_id` fetchable by a restricted peer until
    /// the returned grant is dropped (once the reply to the `rev` sending them is handled).
    /// `None` when the peer is not restricted or there are no blobs.
    pub(crate) fn grant_blobs(
        self: &Arc<Self>,
        doc_id: &str,
        digests: HashSet<BlobDigest>,
    ) -> Option<BlobGrant> {
        let fetchable = self.fetchable.as_ref()?;
        if digests.is_empty() {
            return None;
        }
        let keys: Vec<(String, BlobDigest)> = digests
            .into_iter()
            .map(|digest| (doc_id.to_owned(), digest))
            .collect();
        let mut fetchable = fetchable.lock().unwrap_or_else(PoisonError::into_inner);
        for key in &keys {
            *fetchable.entry(key.clone()).or_insert(0) += 1;
        }
        Some(BlobGrant {
            content: self.clone(),
            keys,
        })
    }

    /// Whether the peer may fetch the blob `getAttachment` asks for: always when it is not
    /// restricted; otherwise when a revision sent to it references the blob (of the document
    /// named by `docID`, of any when the request names none). A malformed request passes, to
    /// get its usual error reply.
    fn may_fetch(&self, message: &Message) -> bool {
        let Some(fetchable) = &self.fetchable else {
            return true;
        };
        let Ok(get) = GetAttachment::from_message(message) else {
            return true;
        };
        let fetchable = fetchable.lock().unwrap_or_else(PoisonError::into_inner);
        match get.doc_id {
            Some(doc_id) => fetchable.contains_key(&(doc_id, get.digest)),
            None => fetchable.keys().any(|(_, digest)| *digest == get.digest),
        }
    }

    /// How outgoing revisions are encoded now.
    pub(crate) fn encoding(&self) -> Encoding {
        Encoding {
            stubs: !self.peer_blobs.load(Ordering::SeqCst),
            deltas: self.deltas_enabled && self.peer_deltas.load(Ordering::SeqCst),
        }
    }

    /// The `rev` message for a pushed revision (`rev.body` the full stored body): stubs
    /// when needed, and a delta against `base` (the remote's revision) when it is worth it
    /// and its body is kept.
    pub(crate) async fn push_rev(&self, rev: Rev, base: Option<&RevId>) -> Message {
        let encoding = self.encoding();
        let base = match base {
            Some(base) if encoding.deltas && !rev.deleted => {
                let id = rev.id.clone();
                let base = base.clone();
                self.db
                    .call(move |store| {
                        let body = store.get(&id)?.and_then(|record| {
                            let revision = record.tree.get(&base)?;
                            if revision.is_deleted() {
                                return None;
                            }
                            revision.body().cloned()
                        });
                        Ok(body.map(|body| (base, body)))
                    })
                    .await
                    .ok()
                    .flatten()
            }
            _ => None,
        };
        let base = base.as_ref().map(|(id, body)| (id, body));
        let key = (rev.id.clone(), rev.rev.clone());
        let out = delta_sync::encode_rev(rev, base, encoding);
        if out.full.is_some() {
            self.sent_deltas
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key);
        }
        out.message
    }

    /// Whether the pushed revision `rev` of `doc_id` was sent as a delta (forgotten once
    /// asked: call it once per reply).
    pub(crate) fn sent_as_delta(&self, doc_id: &str, rev: &RevId) -> bool {
        self.sent_deltas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(doc_id.to_owned(), rev.clone()))
    }

    /// The full-body `rev` message, resent when the peer refused a delta.
    pub(crate) fn full_rev(&self, rev: Rev) -> Message {
        let encoding = Encoding {
            deltas: false,
            ..self.encoding()
        };
        delta_sync::encode_rev(rev, None, encoding).message
    }

    /// A received `rev` with its delta (if any) applied: `deltaSrc` cleared and the full
    /// body in place. `Err((status, text))` when it cannot be used (`HTTP 422`). When
    /// deltas are disabled the `rev` is returned as it is, for the body checks to refuse
    /// it (`HTTP 400 "Deltas are disabled for this peer"`, as Sync Gateway).
    pub(crate) async fn expand_delta(&self, rev: Rev) -> Result<Rev, (i32, String)> {
        if rev.delta_src.is_none() || !self.deltas_enabled {
            return Ok(rev);
        }
        let mut rev = rev;
        if rev.deleted {
            // A deleted revision's body is what it is (Sync Gateway ignores the source).
            rev.delta_src = None;
            return Ok(rev);
        }
        let (rev, expanded) = self
            .db
            .call(move |store| {
                let expanded = delta_sync::expand(store, &rev)?;
                Ok((rev, expanded))
            })
            .await
            .map_err(|err| (500, err.to_string()))?;
        match expanded {
            Ok(body) => {
                let mut rev = rev;
                rev.body = body;
                rev.delta_src = None;
                Ok(rev)
            }
            Err(refusal) => {
                debug!(target: "ferrolite::replicator", id = %rev.id, rev = %rev.rev, reason = %refusal.0, "delta refused");
                Err((422, refusal.0))
            }
        }
    }

    /// Queues a received revision for insertion once its blobs are in the store: at once
    /// when it has none; otherwise a task fetches them (per `policy`, one after another,
    /// several revisions in parallel) and then queues it, or answers its `rev` with the
    /// error and calls `on_failure`. The revision is never committed before its blobs.
    pub(crate) async fn insert_with_blobs(
        &self,
        inserter: &Inserter,
        rev: RevToInsert,
        blobs: Vec<IncomingBlob>,
        policy: FetchPolicy,
        on_failure: OnBlobFailure,
    ) -> Result<(), ReplicatorError> {
        if blobs.is_empty() {
            return inserter.insert(rev).await;
        }
        if self.awaiting.fetch_add(1, Ordering::SeqCst) >= MAX_AWAITING_BLOBS {
            self.awaiting.fetch_sub(1, Ordering::SeqCst);
            let failure = BlobFailure::Failed(ReplicatorError::protocol(
                "too many revisions waiting for their attachments",
            ));
            if let Some(request) = &rev.reply_to {
                self.blip
                    .respond(Message::error_to(request, "HTTP", 503, &failure.status().1))
                    .await;
            }
            on_failure(&failure);
            return Ok(());
        }
        let awaiting = Awaiting(self.awaiting.clone());
        let fetches = self.fetches.clone();
        let db = self.db.clone();
        let blip = self.blip.clone();
        let inserter = inserter.downgrade();
        tokio::spawn(async move {
            let _awaiting = awaiting;
            let result = match fetches.acquire_owned().await {
                Ok(_permit) => blobs::ensure_blobs(&db, &blip, &rev.doc_id, blobs, policy).await,
                Err(_) => Err(BlobFailure::Disconnected),
            };
            match result {
                Ok(()) => {
                    if let Some(inserter) = inserter.upgrade() {
                        if let Err(err) = inserter.insert(rev).await {
                            debug!(target: "ferrolite::replicator", error = %err, "revision dropped after its blobs");
                        }
                    }
                }
                Err(BlobFailure::Disconnected) => {
                    // Not a failure of the revision: the session is ending and its row stays
                    // outstanding, so the next session asks for it again.
                    debug!(target: "ferrolite::replicator", id = %rev.doc_id, "connection lost while fetching blobs");
                }
                Err(failure) => {
                    let (status, text) = failure.status();
                    debug!(target: "ferrolite::replicator", id = %rev.doc_id, status, reason = %text, "the revision's blobs could not be obtained");
                    if let Some(request) = &rev.reply_to {
                        blip.respond(Message::error_to(request, "HTTP", status, &text))
                            .await;
                    }
                    on_failure(&failure);
                }
            }
        });
        Ok(())
    }

    /// Serves a blob request of the peer (`getAttachment`, `proveAttachment`) in its own
    /// task, at most [`PARALLEL_SERVES`] at a time: it waits for a free slot first, so a
    /// peer asking for blobs faster than it reads them slows itself down instead of making
    /// us open and buffer every blob at once. Returns `false` for any other request.
    pub(crate) async fn serve(&self, message: &Message) -> bool {
        let serve = match message.profile() {
            Some("getAttachment") => true,
            Some("proveAttachment") => false,
            _ => return false,
        };
        if serve && !message.no_reply && !self.may_fetch(message) {
            debug!(target: "ferrolite::replicator", "refusing a blob not in a revision sent");
            self.blip
                .respond(Message::error_to(
                    message,
                    "HTTP",
                    403,
                    "Attachment's doc not being synced",
                ))
                .await;
            return true;
        }
        let Ok(permit) = self.serving.clone().acquire_owned().await else {
            return true;
        };
        let db = self.db.clone();
        let blip = self.blip.clone();
        let message = message.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if serve {
                blobs::serve_get_attachment(db, blip, message).await;
            } else {
                blobs::serve_prove_attachment(db, blip, message).await;
            }
        });
        true
    }
}

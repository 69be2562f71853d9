//! The database: open, read, save, delete, purge, expire, batch, blobs, listeners.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrolite_document::{
    canonical_json_of_properties, validate_doc_id, validate_user_properties, RevId, RevTree,
    DEFAULT_KEEP_ANCESTOR_BODIES, DEFAULT_MAX_DEPTH,
};
use ferrolite_storage::{
    Change, ChangeFeed, DocumentRecord, ExpiryPurger, MemoryStore, ObservedStore, RedbOptions,
    RedbStore, StorageError, Store, Transaction,
};
use serde_json::Value;

use crate::listener::Listeners;
use crate::{
    Blob, DatabaseChange, Document, DocumentChange, Error, ErrorCode, ListenerToken,
    MutableDocument, Result,
};

/// The suffix of a database directory: database `app` lives in `<directory>/app.ferrolite/`.
pub const DATABASE_DIRECTORY_SUFFIX: &str = "ferrolite";

/// Where and how a database is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfiguration {
    directory: PathBuf,
    max_rev_tree_depth: u32,
    cache_size: usize,
}

impl DatabaseConfiguration {
    /// Databases in `directory` (created if missing), with default settings.
    pub fn new(directory: impl Into<PathBuf>) -> DatabaseConfiguration {
        DatabaseConfiguration {
            directory: directory.into(),
            max_rev_tree_depth: DEFAULT_MAX_DEPTH,
            cache_size: ferrolite_storage::DEFAULT_CACHE_SIZE,
        }
    }

    /// The most memory, in bytes, an on-disk database keeps as its page cache (default 2 MiB,
    /// at least 64 KiB). The cache stays within it whatever the database's size; a larger
    /// cache speeds up reading a database larger than the cache again and again.
    ///
    /// ```
    /// use ferrolite::{Database, DatabaseConfiguration};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let config = DatabaseConfiguration::new(dir.path()).with_cache_size(16 * 1024 * 1024);
    /// let db = Database::open("catalog", &config)?;
    /// # drop(db);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_cache_size(mut self, bytes: usize) -> DatabaseConfiguration {
        self.cache_size = bytes.max(64 * 1024);
        self
    }

    /// How many generations of history each document keeps (default 20; at least 1).
    pub fn with_max_rev_tree_depth(mut self, depth: u32) -> DatabaseConfiguration {
        self.max_rev_tree_depth = depth.max(1);
        self
    }

    /// The directory that holds the databases.
    pub fn directory(&self) -> &Path {
        &self.directory
    }
}

/// How a save or delete treats a document changed by someone else since it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConcurrencyControl {
    /// The change is written on top of whatever is current.
    #[default]
    LastWriteWins,
    /// The change is refused (the call returns `false`).
    FailOnConflict,
}

/// A database: JSON documents with revision histories, blobs, and change notifications.
///
/// `Database` is a cheap handle: clones share one open database, and it can be used from
/// many threads. Writes are serialized; each save is one durable transaction, and
/// [`Database::in_batch`] groups many changes into one.
///
/// ```
/// use ferrolite::{Database, MutableDocument};
///
/// let db = Database::open_in_memory("app")?;
/// let mut doc = MutableDocument::with_id("profile");
/// doc.set("name", "Alice").set("age", 30);
/// db.save(&mut doc)?;
/// let saved = db.document("profile")?.expect("just saved");
/// assert_eq!(saved.get("name").and_then(|v| v.as_str()), Some("Alice"));
/// assert_eq!(db.count()?, 1);
/// # Ok::<(), ferrolite::Error>(())
/// ```
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    path: Option<PathBuf>,
    max_depth: u32,
    store: RwLock<Option<Arc<ObservedStore>>>,
    purger: Mutex<Option<ExpiryPurger>>,
    listeners: Arc<Listeners>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.inner.name)
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Database {
    /// Opens (creating it if needed) the database `name` in the configured directory.
    pub fn open(name: &str, config: &DatabaseConfiguration) -> Result<Database> {
        let path = Self::path_of(name, config.directory())?;
        let options = RedbOptions::default().cache_size(config.cache_size);
        let store = RedbStore::open_with(&path, &options)?;
        tracing::info!(target: "ferrolite::database", name, path = %path.display(), "opened");
        Ok(Self::with_store(
            name,
            Some(path),
            config.max_rev_tree_depth,
            Arc::new(store),
        ))
    }

    /// Opens a new, empty database that lives in memory only and vanishes when closed.
    pub fn open_in_memory(name: &str) -> Result<Database> {
        Ok(Self::with_store(
            name,
            None,
            DEFAULT_MAX_DEPTH,
            Arc::new(MemoryStore::new()),
        ))
    }

    /// Whether the database `name` exists in `directory`.
    pub fn exists(name: &str, directory: &Path) -> bool {
        Self::path_of(name, directory).is_ok_and(|p| p.exists())
    }

    /// Deletes the (closed) database `name` in `directory` and everything in it.
    pub fn delete_named(name: &str, directory: &Path) -> Result<()> {
        let path = Self::path_of(name, directory)?;
        match std::fs::remove_dir_all(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::new(
                ErrorCode::NotFound,
                format!("no database at {}", path.display()),
            )),
            Err(e) => Err(StorageError::Io(e).into()),
        }
    }

    fn path_of(name: &str, directory: &Path) -> Result<PathBuf> {
        if name.is_empty()
            || name.contains(['/', '\\', '\0'])
            || name.starts_with('.')
            || name.len() > 200
        {
            return Err(Error::new(
                ErrorCode::InvalidParameter,
                format!("invalid database name {name:?}"),
            ));
        }
        Ok(directory.join(format!("{name}.{DATABASE_DIRECTORY_SUFFIX}")))
    }

    fn with_store(
        name: &str,
        path: Option<PathBuf>,
        max_depth: u32,
        store: Arc<dyn Store>,
    ) -> Database {
        // Every commit, whoever makes it (the application, the expiry thread, a replicator),
        // reaches the listeners through the observed store.
        let store = Arc::new(ObservedStore::new(store));
        let listeners = Arc::new(Listeners::default());
        let notify = listeners.clone();
        store.observe(move |summary| {
            let mut ids: Vec<String> = summary.changes.iter().map(|c| c.id.clone()).collect();
            ids.extend(summary.purged.iter().cloned());
            notify.notify(ids);
        });
        let purger = ExpiryPurger::spawn(
            store.clone(),
            Box::new(|ids: &[String]| {
                tracing::debug!(target: "ferrolite::database", count = ids.len(), "expired documents purged");
            }),
        );
        Database {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                path,
                max_depth,
                store: RwLock::new(Some(store)),
                purger: Mutex::new(Some(purger)),
                listeners,
            }),
        }
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The database directory, or `None` for an in-memory database.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    pub(crate) fn store(&self) -> Result<Arc<ObservedStore>> {
        self.inner
            .store
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| Error::new(ErrorCode::NotOpen, "the database is closed"))
    }

    /// The document with this ID, or `None` if there is none or it is deleted.
    pub fn document(&self, id: &str) -> Result<Option<Document>> {
        let store = self.store()?;
        let Some(record) = store.get(id)? else {
            return Ok(None);
        };
        current_document(record)
    }

    /// The revision tree of a document, deleted or not: every revision still known, with
    /// its parent, flags (deleted, conflict, closed) and whether its body is kept; `None` if
    /// the database has no such document (never saved, or purged).
    ///
    /// ```
    /// use ferrolite::{Database, MutableDocument};
    ///
    /// let db = Database::open_in_memory("app")?;
    /// let mut doc = MutableDocument::with_id("profile");
    /// db.save(doc.set("name", "Alice"))?;
    /// db.save(doc.set("name", "Alice B."))?;
    /// let tree = db.revision_tree("profile")?.expect("saved");
    /// let current = tree.current().expect("a current revision");
    /// assert_eq!(current.id().generation(), 2);
    /// assert_eq!(tree.history(current.id()).len(), 2);
    /// # Ok::<(), ferrolite::Error>(())
    /// ```
    pub fn revision_tree(&self, id: &str) -> Result<Option<RevTree>> {
        Ok(self.store()?.get(id)?.map(|record| record.tree))
    }

    /// How many documents (not counting deleted ones) the database holds.
    pub fn count(&self) -> Result<u64> {
        Ok(self.store()?.document_count()?)
    }

    /// The highest sequence assigned so far (0 for a new database).
    pub fn last_sequence(&self) -> Result<u64> {
        Ok(self.store()?.last_sequence()?)
    }

    /// The change feed: the latest change of each document changed after sequence `since`, in
    /// sequence order, read in pages as the iterator advances.
    pub fn changes(&self, since: u64) -> Result<Changes> {
        let store: Arc<dyn Store> = self.store()?;
        Ok(Changes(ChangeFeed::new(store, since)))
    }

    /// Saves a document, writing on top of whatever is current (last write wins).
    pub fn save(&self, doc: &mut MutableDocument) -> Result<()> {
        self.in_batch(|batch| batch.save(doc))
    }

    /// Saves a document; with [`ConcurrencyControl::FailOnConflict`], returns `false` (and
    /// saves nothing) when the document changed since `doc` was read.
    pub fn save_with_concurrency_control(
        &self,
        doc: &mut MutableDocument,
        control: ConcurrencyControl,
    ) -> Result<bool> {
        self.in_batch(|batch| batch.save_with_concurrency_control(doc, control))
    }

    /// Deletes a document (a tombstone revision replicates the deletion).
    pub fn delete(&self, doc: &Document) -> Result<()> {
        self.in_batch(|batch| batch.delete(doc))
    }

    /// Deletes a document; with [`ConcurrencyControl::FailOnConflict`], returns `false` when
    /// the document changed since `doc` was read.
    pub fn delete_with_concurrency_control(
        &self,
        doc: &Document,
        control: ConcurrencyControl,
    ) -> Result<bool> {
        self.in_batch(|batch| batch.delete_with_concurrency_control(doc, control))
    }

    /// Removes every trace of a document, without a tombstone: the removal does not replicate.
    pub fn purge(&self, id: &str) -> Result<()> {
        self.in_batch(|batch| batch.purge(id))
    }

    /// Sets (or clears, with `None`) the time at which the document is purged automatically.
    pub fn set_document_expiration(&self, id: &str, expiration: Option<SystemTime>) -> Result<()> {
        self.in_batch(|batch| batch.set_document_expiration(id, expiration))
    }

    /// When the document expires, if an expiration is set.
    pub fn document_expiration(&self, id: &str) -> Result<Option<SystemTime>> {
        let store = self.store()?;
        let record = store
            .get(id)?
            .ok_or_else(|| Error::new(ErrorCode::NotFound, format!("no document {id:?}")))?;
        Ok(record
            .expiration
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)))
    }

    /// Runs `work` as one transaction: every change it makes is committed together, durably,
    /// when it returns `Ok`, and none when it returns `Err`. Listeners hear of the changes
    /// after the commit.
    ///
    /// Revision IDs of documents saved in a batch that fails are not rolled back in the
    /// `MutableDocument`s; read them again before retrying with
    /// [`ConcurrencyControl::FailOnConflict`].
    pub fn in_batch<T>(&self, work: impl FnOnce(&mut Batch<'_>) -> Result<T>) -> Result<T> {
        let store = self.store()?;
        let mut work = Some(work);
        let mut output = None;
        let mut failure = None;
        let mut expiration_set = false;
        let max_depth = self.inner.max_depth;
        let result = store.write(&mut |tx| {
            let Some(work) = work.take() else {
                return Err(StorageError::Backend(
                    "transaction body ran twice".to_owned(),
                ));
            };
            let mut batch = Batch {
                tx,
                store: &*store,
                max_depth,
                expiration_set: false,
            };
            match work(&mut batch) {
                Ok(value) => {
                    expiration_set = batch.expiration_set;
                    output = Some(value);
                    Ok(())
                }
                Err(err) => {
                    failure = Some(err);
                    Err(StorageError::Backend("transaction aborted".to_owned()))
                }
            }
        });
        match (result, failure) {
            (_, Some(err)) => return Err(err),
            (Err(err), None) => return Err(err.into()),
            (Ok(_), None) => {}
        }
        if expiration_set {
            if let Some(purger) = &*self
                .inner
                .purger
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
            {
                purger.wake();
            }
        }
        output
            .ok_or_else(|| Error::new(ErrorCode::UnexpectedError, "transaction produced no result"))
    }

    /// Stores a blob's content now (documents holding it can then be saved without it).
    pub fn save_blob(&self, blob: &mut Blob) -> Result<()> {
        install_blob(&*self.store()?, blob)
    }

    /// Reads a blob's whole content.
    pub fn blob_content(&self, blob: &Blob) -> Result<Vec<u8>> {
        let mut content = Vec::with_capacity(blob.length().unwrap_or(0).min(1 << 24) as usize);
        self.blob_reader(blob)?
            .read_to_end(&mut content)
            .map_err(StorageError::Io)?;
        Ok(content)
    }

    /// Opens a blob's content as a stream.
    pub fn blob_reader(&self, blob: &Blob) -> Result<Box<dyn Read + Send>> {
        let digest = blob
            .digest()
            .ok_or_else(|| Error::new(ErrorCode::NotFound, "the blob has not been saved"))?;
        self.store()?
            .open_blob(&digest)?
            .ok_or_else(|| Error::new(ErrorCode::NotFound, format!("no blob {digest}")))
    }

    /// Registers a listener called after every commit with the IDs of the changed documents.
    pub fn add_change_listener(
        &self,
        listener: impl Fn(&DatabaseChange) + Send + Sync + 'static,
    ) -> ListenerToken {
        self.inner.listeners.add_database(Arc::new(listener))
    }

    /// Registers a listener called after every commit that changed document `id`.
    pub fn add_document_change_listener(
        &self,
        id: &str,
        listener: impl Fn(&DocumentChange) + Send + Sync + 'static,
    ) -> ListenerToken {
        self.inner
            .listeners
            .add_document(id.to_owned(), Arc::new(listener))
    }

    /// Removes a listener registered by either `add_…_listener` method.
    pub fn remove_change_listener(&self, token: ListenerToken) {
        self.inner.listeners.remove(token);
    }

    /// Closes the database (every clone of this handle): later calls fail with
    /// [`ErrorCode::NotOpen`]. Closing twice is harmless.
    pub fn close(&self) -> Result<()> {
        // Stop the expiry thread first: it holds a reference to the store.
        drop(
            self.inner
                .purger
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        drop(
            self.inner
                .store
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        Ok(())
    }

    /// Closes the database and deletes its files.
    pub fn delete_database(self) -> Result<()> {
        self.close()?;
        match &self.inner.path {
            Some(path) => std::fs::remove_dir_all(path).map_err(|e| StorageError::Io(e).into()),
            None => Ok(()),
        }
    }
}

/// The current revision of a stored document, unless it is deleted.
fn current_document(record: DocumentRecord) -> Result<Option<Document>> {
    let Some(current) = record.tree.current() else {
        return Ok(None);
    };
    if current.is_deleted() {
        return Ok(None);
    }
    let body = current.body().cloned().ok_or_else(|| {
        Error::new(
            ErrorCode::CorruptData,
            format!("the current revision of {:?} has no body", record.id),
        )
    })?;
    let rev = current.id().clone();
    let sequence = current.sequence();
    Ok(Some(Document::new(record.id, rev, sequence, body)))
}

fn install_blob(store: &dyn Store, blob: &mut Blob) -> Result<()> {
    if let Some((mut reader, expected)) = blob.take_pending() {
        let stored = store.put_blob(&mut reader, expected.as_ref())?;
        blob.mark_saved(stored.digest, stored.length);
    }
    Ok(())
}

/// The changes made inside [`Database::in_batch`]: all committed together.
pub struct Batch<'a> {
    tx: &'a mut dyn Transaction,
    store: &'a dyn Store,
    max_depth: u32,
    expiration_set: bool,
}

impl Batch<'_> {
    /// The document with this ID as this transaction sees it.
    pub fn document(&mut self, id: &str) -> Result<Option<Document>> {
        match self.tx.get(id)? {
            Some(record) => current_document(record),
            None => Ok(None),
        }
    }

    /// Saves a document (last write wins). See [`Database::save`].
    pub fn save(&mut self, doc: &mut MutableDocument) -> Result<()> {
        self.save_with_concurrency_control(doc, ConcurrencyControl::LastWriteWins)
            .map(|_| ())
    }

    /// Saves a document. See [`Database::save_with_concurrency_control`].
    pub fn save_with_concurrency_control(
        &mut self,
        doc: &mut MutableDocument,
        control: ConcurrencyControl,
    ) -> Result<bool> {
        validate_doc_id(doc.id())?;
        validate_user_properties(doc.properties())?;
        for (key, mut blob) in std::mem::take(doc.pending_blobs()) {
            install_blob(self.store, &mut blob)?;
            if let Some(dict) = blob.to_dict() {
                doc.properties_mut().insert(key, Value::Object(dict));
            }
        }
        let body = canonical_json_of_properties(doc.properties());
        let rev = self.write_revision(doc.id(), doc.revision_id(), body, false, control)?;
        if let Some(rev) = &rev {
            doc.set_base(Some(rev.clone()));
        }
        Ok(rev.is_some())
    }

    /// Deletes a document (last write wins). See [`Database::delete`].
    pub fn delete(&mut self, doc: &Document) -> Result<()> {
        self.delete_with_concurrency_control(doc, ConcurrencyControl::LastWriteWins)
            .map(|_| ())
    }

    /// Deletes a document. See [`Database::delete_with_concurrency_control`].
    pub fn delete_with_concurrency_control(
        &mut self,
        doc: &Document,
        control: ConcurrencyControl,
    ) -> Result<bool> {
        let rev = self.write_revision(
            doc.id(),
            Some(doc.revision_id()),
            b"{}".to_vec(),
            true,
            control,
        )?;
        Ok(rev.is_some())
    }

    /// Purges a document. See [`Database::purge`].
    pub fn purge(&mut self, id: &str) -> Result<()> {
        if self.tx.purge(id)? {
            Ok(())
        } else {
            Err(Error::new(
                ErrorCode::NotFound,
                format!("no document {id:?}"),
            ))
        }
    }

    /// Sets a document's expiration. See [`Database::set_document_expiration`].
    pub fn set_document_expiration(
        &mut self,
        id: &str,
        expiration: Option<SystemTime>,
    ) -> Result<()> {
        let mut record = self
            .tx
            .get(id)?
            .ok_or_else(|| Error::new(ErrorCode::NotFound, format!("no document {id:?}")))?;
        record.expiration = expiration.map(|t| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        });
        self.tx.put(&record)?;
        self.expiration_set = true;
        Ok(())
    }

    /// Writes a new revision on top of the current one; `None` when refused for a conflict.
    fn write_revision(
        &mut self,
        id: &str,
        base: Option<&RevId>,
        body: Vec<u8>,
        deleted: bool,
        control: ConcurrencyControl,
    ) -> Result<Option<RevId>> {
        let existing = self.tx.get(id)?;
        let current = existing
            .as_ref()
            .and_then(|r| r.tree.current())
            .map(|c| (c.id().clone(), c.is_deleted()));
        if deleted && current.as_ref().is_none_or(|(_, gone)| *gone) {
            return Err(Error::new(
                ErrorCode::NotFound,
                format!("no document {id:?} to delete"),
            ));
        }
        let conflicting = match (&current, base) {
            (None, _) => false,
            (Some((cur, _)), Some(base)) => cur != base,
            // A new document may take the place of a deleted one.
            (Some((_, deleted_now)), None) => !deleted_now,
        };
        if conflicting && control == ConcurrencyControl::FailOnConflict {
            return Ok(None);
        }
        let mut record = existing.unwrap_or_else(|| DocumentRecord {
            id: id.to_owned(),
            tree: Default::default(),
            sequence: 0,
            expiration: None,
        });
        let sequence = self.tx.next_sequence()?;
        let parent = current.map(|(rev, _)| rev);
        let rev = record
            .tree
            .add_child(parent.as_ref(), body.into(), deleted, sequence)?;
        record.tree.drop_old_bodies(DEFAULT_KEEP_ANCESTOR_BODIES);
        record.tree.prune(self.max_depth);
        record.sequence = sequence;
        self.tx.put(&record)?;
        Ok(Some(rev))
    }
}

/// The change feed of a database, read in pages: see [`Database::changes`].
pub struct Changes(ChangeFeed<Arc<dyn Store>>);

impl Iterator for Changes {
    type Item = Result<Change>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|change| change.map_err(Error::from))
    }
}

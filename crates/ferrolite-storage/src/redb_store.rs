//! [`RedbStore`]: a [`Store`] kept on disk in a redb database, with blobs as files beside it.
//!
//! # On-disk layout (format version 1)
//!
//! A database is a directory holding `data.redb` (a redb 4 file) and `blobs/`, where each blob
//! is a file named by the lowercase hex of its SHA-1 digest ([`BlobDigest::to_hex`]). Blobs
//! are written to `blobs/<random>.tmp` first, then renamed; leftover `.tmp` files are removed
//! when the database is opened. A new `data.redb` is initialized as `data.redb.new` and renamed
//! into place once complete, so an empty or half-made `data.redb` is never ours.
//!
//! | table | key | value |
//! |---|---|---|
//! | `documents` | document ID (`&str`) | flags `u8` (bit 0: has expiration, bit 1: current revision live), varint sequence, varint expiration ms (if bit 0), then [`RevTree::encode`](ferrolite_document::RevTree::encode) bytes |
//! | `by_sequence` | sequence (`u64`) | flags `u8` (bit 0: deleted), varint ID length, ID bytes, current revision ID text (rest of the value) |
//! | `expirations` | (expiration ms `u64`, document ID `&str`) | `()` |
//! | `local_documents` | local document ID (`&str`) | the bytes as given |
//! | `meta` | key (`&str`) | `format` = `ferrolite-storage`; `format_version` = `u32` LE (1); `public_uuid`, `private_uuid` = 16 bytes; `last_sequence`, `document_count` = `u64` LE |
//!
//! Varints are unsigned LEB128 (at most 10 bytes). `by_sequence` holds exactly one entry per
//! document, at its latest sequence; `expirations` one entry per document that has an
//! expiration. `document_count` counts documents whose current revision is not a deletion and
//! is maintained by every write. Every write transaction commits with immediate durability.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ferrolite_document::BlobDigest;
use redb::{
    Database, DatabaseError, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase,
    ReadableTable, Table, TableDefinition, TableError, WriteTransaction,
};

use crate::codec;
use crate::stream::copy_chunks;
use crate::{
    Change, CommitSummary, DatabaseUuids, DocumentRecord, Result, StorageError, Store, StoredBlob,
    Transaction,
};

const DOCUMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("documents");
const BY_SEQUENCE: TableDefinition<u64, &[u8]> = TableDefinition::new("by_sequence");
const EXPIRATIONS: TableDefinition<(u64, &str), ()> = TableDefinition::new("expirations");
const LOCALS: TableDefinition<&str, &[u8]> = TableDefinition::new("local_documents");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const FORMAT_KEY: &str = "format";
const FORMAT_MARKER: &[u8] = b"ferrolite-storage";
const VERSION_KEY: &str = "format_version";
/// The newest format this build reads and writes.
const FORMAT_VERSION: u32 = 1;
const PUBLIC_UUID_KEY: &str = "public_uuid";
const PRIVATE_UUID_KEY: &str = "private_uuid";
const LAST_SEQUENCE_KEY: &str = "last_sequence";
const DOCUMENT_COUNT_KEY: &str = "document_count";

const DATA_FILE: &str = "data.redb";
const NEW_DATA_FILE: &str = "data.redb.new";
const BLOBS_DIR: &str = "blobs";
const TEMP_SUFFIX: &str = ".tmp";

/// Maps redb errors to [`StorageError::Backend`] with what was being done.
trait Context<T> {
    fn context(self, what: &str) -> Result<T>;
}

impl<T, E: Into<redb::Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|e| StorageError::Backend(format!("{what}: {}", e.into())))
    }
}

fn not_a_database(path: &Path, reason: impl Into<String>) -> StorageError {
    StorageError::NotADatabase {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn read_u64(bytes: Option<&[u8]>, key: &str) -> Result<u64> {
    match bytes {
        None => Ok(0),
        Some(bytes) => <[u8; 8]>::try_from(bytes)
            .map(u64::from_le_bytes)
            .map_err(|_| StorageError::Corrupt(format!("meta {key:?} is not 8 bytes"))),
    }
}

fn meta_u64<T: ReadableTable<&'static str, &'static [u8]>>(table: &T, key: &str) -> Result<u64> {
    let guard = table.get(key).context("reading database metadata")?;
    read_u64(guard.as_ref().map(|g| g.value()), key)
}

/// A [`Store`] kept on disk: documents, the change feed and local documents in a redb
/// database (`data.redb`), blobs as files in `blobs/` (named by the hex of their digest).
/// The file layout is described at the top of `src/redb_store.rs`.
///
/// Every write transaction commits durably (it is on disk when [`Store::write`] returns). If an
/// operation inside a transaction fails (for example [`Transaction::put`] of a record with an
/// empty tree, sequence 0 or a sequence that belongs to another document, with
/// [`StorageError::InvalidRecord`]), the whole transaction is aborted, even if the closure goes
/// on and returns `Ok`: `write` then returns [`StorageError::TransactionAborted`].
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
    blobs: PathBuf,
    uuids: DatabaseUuids,
}

/// The default of [`RedbOptions::cache_size`]: 2 MiB (as SQLite's default page cache).
pub const DEFAULT_CACHE_SIZE: usize = 2 * 1024 * 1024;

/// How a [`RedbStore`] is opened, beyond its directory.
///
/// ```
/// use ferrolite_storage::{RedbOptions, RedbStore};
///
/// let dir = tempfile::tempdir()?;
/// let options = RedbOptions::default().cache_size(32 * 1024 * 1024);
/// let store = RedbStore::open_with(dir.path(), &options)?;
/// # drop(store);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedbOptions {
    /// The most memory, in bytes, redb keeps for pages read and pages written but not yet
    /// flushed (its page cache). Default [`DEFAULT_CACHE_SIZE`] (2 MiB), sized for an
    /// embedded database on a phone; redb's own default is 1 GiB, which lets a process's
    /// memory grow with the size of its database. A larger cache speeds up reading a database
    /// larger than the cache (reads of pages not cached go to the operating system's page
    /// cache: about a third fewer document reads per second in `cargo xtask bench storage`).
    pub cache_size: usize,
}

impl Default for RedbOptions {
    fn default() -> RedbOptions {
        RedbOptions {
            cache_size: DEFAULT_CACHE_SIZE,
        }
    }
}

impl RedbOptions {
    /// Sets [`RedbOptions::cache_size`] (bytes).
    pub fn cache_size(mut self, bytes: usize) -> RedbOptions {
        self.cache_size = bytes;
        self
    }
}

impl RedbStore {
    /// Opens the database in directory `dir`, creating the directory (with its parents) and a
    /// new database when there is none, with the default [`RedbOptions`].
    ///
    /// Fails with [`StorageError::NotADatabase`] when `dir/data.redb` exists but is not a
    /// ferrolite database (not a redb file, a foreign redb database, an empty or damaged file,
    /// or a newer format version).
    pub fn open(dir: &Path) -> Result<RedbStore> {
        RedbStore::open_with(dir, &RedbOptions::default())
    }

    /// [`RedbStore::open`] with these options.
    pub fn open_with(dir: &Path, options: &RedbOptions) -> Result<RedbStore> {
        fs::create_dir_all(dir)?;
        let path = dir.join(DATA_FILE);
        match fs::metadata(&path) {
            Ok(meta) if !meta.is_file() => {
                return Err(not_a_database(&path, "not a regular file"));
            }
            Ok(meta) if meta.len() == 0 => {
                return Err(not_a_database(&path, "the file is empty"));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_database(dir, &path)?,
            Err(e) => return Err(e.into()),
        }
        // redb trusts the pages it reads: a damaged file can make it panic. Opening is where a
        // wrong file shows up, so a panic there is reported as "not a database".
        let opened = catch_unwind(AssertUnwindSafe(|| -> Result<(Database, DatabaseUuids)> {
            let db = open_database(&path, options)?;
            let uuids = check_format(&db, &path)?;
            Ok((db, uuids))
        }));
        let (db, uuids) = opened.map_err(|_| {
            not_a_database(&path, "damaged: the storage engine failed while reading it")
        })??;
        let blobs = dir.join(BLOBS_DIR);
        fs::create_dir_all(&blobs)?;
        remove_temp_files(&blobs);
        Ok(RedbStore { db, blobs, uuids })
    }

    fn read(&self) -> Result<ReadTransaction> {
        self.db.begin_read().context("starting a read transaction")
    }

    fn blob_path(&self, digest: &BlobDigest) -> PathBuf {
        self.blobs.join(digest.to_hex())
    }
}

/// Creates a new database as `data.redb.new`, then renames it to `path`.
fn create_database(dir: &Path, path: &Path) -> Result<()> {
    let new_path = dir.join(NEW_DATA_FILE);
    match fs::remove_file(&new_path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    {
        let db = Database::create(&new_path).context("creating the database file")?;
        let txn = db
            .begin_write()
            .context("starting the database's first transaction")?;
        {
            txn.open_table(DOCUMENTS)
                .context("creating table documents")?;
            txn.open_table(BY_SEQUENCE)
                .context("creating table by_sequence")?;
            txn.open_table(EXPIRATIONS)
                .context("creating table expirations")?;
            txn.open_table(LOCALS)
                .context("creating table local_documents")?;
            let mut meta = txn.open_table(META).context("creating table meta")?;
            let public = uuid::Uuid::new_v4().into_bytes();
            let private = uuid::Uuid::new_v4().into_bytes();
            let version = FORMAT_VERSION.to_le_bytes();
            let zero = 0u64.to_le_bytes();
            let entries: [(&str, &[u8]); 6] = [
                (FORMAT_KEY, FORMAT_MARKER),
                (VERSION_KEY, &version),
                (PUBLIC_UUID_KEY, &public),
                (PRIVATE_UUID_KEY, &private),
                (LAST_SEQUENCE_KEY, &zero),
                (DOCUMENT_COUNT_KEY, &zero),
            ];
            for (key, value) in entries {
                meta.insert(key, value)
                    .context("writing database metadata")?;
            }
        }
        txn.commit().context("committing the new database")?;
    }
    fs::rename(&new_path, path)?;
    sync_dir(dir)?;
    Ok(())
}

/// Opens an existing redb file, turning "this is no database" failures into
/// [`StorageError::NotADatabase`].
fn open_database(path: &Path, options: &RedbOptions) -> Result<Database> {
    Database::builder()
        .set_cache_size(options.cache_size)
        .open(path)
        .map_err(|e| match e {
            DatabaseError::Storage(redb::StorageError::Corrupted(msg)) => {
                not_a_database(path, format!("not a valid redb file ({msg})"))
            }
            DatabaseError::Storage(redb::StorageError::Io(e))
                if e.kind() == io::ErrorKind::InvalidData =>
            {
                not_a_database(path, format!("not a redb file ({e})"))
            }
            DatabaseError::Storage(redb::StorageError::Io(e))
                if e.kind() == io::ErrorKind::UnexpectedEof =>
            {
                not_a_database(path, format!("the file is truncated ({e})"))
            }
            DatabaseError::UpgradeRequired(version) => not_a_database(
                path,
                format!("redb file format version {version} is not supported"),
            ),
            DatabaseError::DatabaseAlreadyOpen => StorageError::Backend(format!(
                "{}: the database is already open (in this or another process)",
                path.display()
            )),
            other => StorageError::Backend(format!("opening {}: {other}", path.display())),
        })
}

/// Checks that the database is ours, of a version we read, and returns its UUIDs.
fn check_format(db: &Database, path: &Path) -> Result<DatabaseUuids> {
    let txn = db.begin_read().context("starting a read transaction")?;
    let meta = open_checked(&txn, META, path)?;
    let marker = meta.get(FORMAT_KEY).context("reading database metadata")?;
    if marker.as_ref().map(|g| g.value()) != Some(FORMAT_MARKER) {
        return Err(not_a_database(
            path,
            "a redb database without ferrolite's format marker (foreign database)",
        ));
    }
    let version = meta.get(VERSION_KEY).context("reading database metadata")?;
    let version = version
        .as_ref()
        .and_then(|g| <[u8; 4]>::try_from(g.value()).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| not_a_database(path, "missing or malformed format version"))?;
    if version > FORMAT_VERSION {
        return Err(not_a_database(
            path,
            format!(
                "format version {version} is newer than this build supports ({FORMAT_VERSION})"
            ),
        ));
    }
    if version == 0 {
        return Err(not_a_database(path, "format version 0 is not valid"));
    }
    open_checked(&txn, DOCUMENTS, path)?;
    open_checked(&txn, BY_SEQUENCE, path)?;
    open_checked(&txn, EXPIRATIONS, path)?;
    open_checked(&txn, LOCALS, path)?;
    let uuid = |key: &str| -> Result<[u8; 16]> {
        let guard = meta.get(key).context("reading database metadata")?;
        guard
            .as_ref()
            .and_then(|g| <[u8; 16]>::try_from(g.value()).ok())
            .ok_or_else(|| not_a_database(path, format!("missing or malformed {key}")))
    };
    Ok(DatabaseUuids {
        public: uuid(PUBLIC_UUID_KEY)?,
        private: uuid(PRIVATE_UUID_KEY)?,
    })
}

/// Opens one of our tables for reading while checking the file, reporting a missing or
/// mistyped table as [`StorageError::NotADatabase`].
fn open_checked<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    table: TableDefinition<K, V>,
    path: &Path,
) -> Result<ReadOnlyTable<K, V>> {
    txn.open_table(table).map_err(|e| match e {
        TableError::TableDoesNotExist(name) => not_a_database(
            path,
            format!("a redb database without ferrolite's table {name:?} (foreign database)"),
        ),
        TableError::Storage(e) => {
            StorageError::Backend(format!("{}: opening a table: {e}", path.display()))
        }
        other => not_a_database(path, format!("unexpected table layout: {other}")),
    })
}

/// Removes blob files left half-written by a crash.
fn remove_temp_files(blobs: &Path) {
    let Ok(entries) = fs::read_dir(blobs) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
            if let Err(e) = fs::remove_file(entry.path()) {
                tracing::warn!(target: "ferrolite::database", path = %entry.path().display(), error = %e, "cannot remove a temporary blob file");
            }
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Store for RedbStore {
    fn uuids(&self) -> Result<DatabaseUuids> {
        Ok(self.uuids)
    }

    fn last_sequence(&self) -> Result<u64> {
        let txn = self.read()?;
        let meta = txn.open_table(META).context("opening table meta")?;
        meta_u64(&meta, LAST_SEQUENCE_KEY)
    }

    fn document_count(&self) -> Result<u64> {
        let txn = self.read()?;
        let meta = txn.open_table(META).context("opening table meta")?;
        meta_u64(&meta, DOCUMENT_COUNT_KEY)
    }

    fn get(&self, id: &str) -> Result<Option<DocumentRecord>> {
        let txn = self.read()?;
        let docs = txn
            .open_table(DOCUMENTS)
            .context("opening table documents")?;
        let value = docs.get(id).context("reading a document")?;
        value
            .map(|v| codec::decode_record(id, v.value()))
            .transpose()
    }

    fn changes_since(&self, since: u64, limit: usize) -> Result<Vec<Change>> {
        let Some(start) = since.checked_add(1) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let txn = self.read()?;
        let seqs = txn
            .open_table(BY_SEQUENCE)
            .context("opening table by_sequence")?;
        let mut changes = Vec::with_capacity(limit.min(1024));
        for entry in seqs.range(start..).context("reading the change feed")? {
            let (sequence, value) = entry.context("reading the change feed")?;
            changes.push(codec::decode_change(sequence.value(), value.value())?);
            if changes.len() == limit {
                break;
            }
        }
        Ok(changes)
    }

    fn get_local(&self, id: &str) -> Result<Option<Bytes>> {
        let txn = self.read()?;
        let locals = txn
            .open_table(LOCALS)
            .context("opening table local_documents")?;
        let value = locals.get(id).context("reading a local document")?;
        Ok(value.map(|v| Bytes::copy_from_slice(v.value())))
    }

    fn write(
        &self,
        work: &mut dyn FnMut(&mut dyn Transaction) -> Result<()>,
    ) -> Result<CommitSummary> {
        let mut txn = self
            .db
            .begin_write()
            .context("starting a write transaction")?;
        txn.set_durability(Durability::Immediate)
            .context("setting durability")?;
        let outcome = run_transaction(&txn, work);
        match outcome {
            Ok(summary) => {
                txn.commit().context("committing a write transaction")?;
                Ok(summary)
            }
            Err(e) => {
                if let Err(abort) = txn.abort() {
                    tracing::warn!(target: "ferrolite::database", error = %abort, "aborting a write transaction failed");
                }
                Err(e)
            }
        }
    }

    fn put_blob(
        &self,
        content: &mut dyn Read,
        expected: Option<&BlobDigest>,
    ) -> Result<StoredBlob> {
        let temp = self
            .blobs
            .join(format!("{}{TEMP_SUFFIX}", uuid::Uuid::new_v4().simple()));
        let result = write_temp_blob(&temp, content, expected);
        let stored = match result {
            Ok(stored) => stored,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(e);
            }
        };
        let final_path = self.blob_path(&stored.digest);
        let placed = if final_path.exists() {
            fs::remove_file(&temp)
        } else {
            fs::rename(&temp, &final_path).and_then(|()| sync_dir(&self.blobs))
        };
        if let Err(e) = placed {
            let _ = fs::remove_file(&temp);
            return Err(e.into());
        }
        Ok(stored)
    }

    fn open_blob(&self, digest: &BlobDigest) -> Result<Option<Box<dyn Read + Send>>> {
        match File::open(self.blob_path(digest)) {
            Ok(file) => Ok(Some(Box::new(io::BufReader::new(file)))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn has_blob(&self, digest: &BlobDigest) -> Result<bool> {
        Ok(self.blob_path(digest).try_exists()?)
    }

    fn next_expiration(&self) -> Result<Option<u64>> {
        let txn = self.read()?;
        let exps = txn
            .open_table(EXPIRATIONS)
            .context("opening table expirations")?;
        let first = exps.first().context("reading the expiration index")?;
        Ok(first.map(|(key, _)| key.value().0))
    }
}

/// Streams a blob into a new temporary file, checks its digest and syncs it.
fn write_temp_blob(
    temp: &Path,
    content: &mut dyn Read,
    expected: Option<&BlobDigest>,
) -> Result<StoredBlob> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)?;
    let digester = copy_chunks(content, |chunk| file.write_all(chunk))?;
    let length = digester.length();
    let digest = digester.finish();
    if let Some(expected) = expected {
        if *expected != digest {
            return Err(StorageError::DigestMismatch {
                expected: *expected,
                actual: digest,
            });
        }
    }
    file.sync_all()?;
    Ok(StoredBlob { digest, length })
}

/// Runs `work` in a transaction over `txn`'s tables and, when everything succeeded, writes the
/// updated counters. Any error means the caller must abort.
fn run_transaction(
    txn: &WriteTransaction,
    work: &mut dyn FnMut(&mut dyn Transaction) -> Result<()>,
) -> Result<CommitSummary> {
    let mut tx = RedbTransaction::open(txn)?;
    work(&mut tx)?;
    if let Some(failure) = tx.failure.take() {
        return Err(StorageError::TransactionAborted(failure));
    }
    tx.finish()
}

/// [`Transaction`] over the tables of one redb write transaction.
struct RedbTransaction<'t> {
    docs: Table<'t, &'static str, &'static [u8]>,
    seqs: Table<'t, u64, &'static [u8]>,
    exps: Table<'t, (u64, &'static str), ()>,
    locals: Table<'t, &'static str, &'static [u8]>,
    meta: Table<'t, &'static str, &'static [u8]>,
    initial_sequence: u64,
    last_sequence: u64,
    initial_count: u64,
    count: u64,
    summary: CommitSummary,
    /// The first error an operation returned: the transaction cannot commit.
    failure: Option<String>,
    /// Reused encoding buffer.
    buf: Vec<u8>,
}

impl<'t> RedbTransaction<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<RedbTransaction<'t>> {
        let meta = txn.open_table(META).context("opening table meta")?;
        let last_sequence = meta_u64(&meta, LAST_SEQUENCE_KEY)?;
        let count = meta_u64(&meta, DOCUMENT_COUNT_KEY)?;
        Ok(RedbTransaction {
            docs: txn
                .open_table(DOCUMENTS)
                .context("opening table documents")?,
            seqs: txn
                .open_table(BY_SEQUENCE)
                .context("opening table by_sequence")?,
            exps: txn
                .open_table(EXPIRATIONS)
                .context("opening table expirations")?,
            locals: txn
                .open_table(LOCALS)
                .context("opening table local_documents")?,
            meta,
            initial_sequence: last_sequence,
            last_sequence,
            initial_count: count,
            count,
            summary: CommitSummary::default(),
            failure: None,
            buf: Vec::new(),
        })
    }

    /// Writes the counters that changed; returns what the transaction did.
    fn finish(mut self) -> Result<CommitSummary> {
        if self.last_sequence != self.initial_sequence {
            self.meta
                .insert(LAST_SEQUENCE_KEY, &self.last_sequence.to_le_bytes()[..])
                .context("writing the last sequence")?;
        }
        if self.count != self.initial_count {
            self.meta
                .insert(DOCUMENT_COUNT_KEY, &self.count.to_le_bytes()[..])
                .context("writing the document count")?;
        }
        Ok(self.summary)
    }

    /// Remembers a failed operation so that the transaction is not committed.
    fn check<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            if self.failure.is_none() {
                self.failure = Some(e.to_string());
            }
        }
        result
    }

    fn try_put(&mut self, record: &DocumentRecord) -> Result<()> {
        let id = record.id.as_str();
        let current = record
            .tree
            .current()
            .ok_or_else(|| invalid(id, "empty revision tree"))?;
        if record.sequence == 0 {
            return Err(invalid(id, "sequence 0"));
        }
        let deleted = current.is_deleted();

        self.buf.clear();
        codec::put_record_header(&mut self.buf, record.sequence, record.expiration, !deleted);
        record.tree.encode_into(&mut self.buf);
        let old = match self
            .docs
            .insert(id, self.buf.as_slice())
            .context("writing a document")?
        {
            Some(value) => Some(codec::get_record_header(id, value.value())?),
            None => None,
        };

        let moved = old.is_some_and(|o| o.sequence != record.sequence);
        if let (true, Some(old)) = (moved, old) {
            self.seqs
                .remove(old.sequence)
                .context("updating the change feed")?;
        }
        self.buf.clear();
        codec::put_change(&mut self.buf, id, current.id(), deleted);
        let previous = self
            .seqs
            .insert(record.sequence, self.buf.as_slice())
            .context("updating the change feed")?;
        if let Some(previous) = previous {
            if old.is_none() || moved {
                let owner = codec::change_id(record.sequence, previous.value())?.to_owned();
                return Err(invalid(
                    id,
                    &format!("sequence {} belongs to document {owner:?}", record.sequence),
                ));
            }
        }

        let old_expiration = old.and_then(|o| o.expiration);
        if old_expiration != record.expiration {
            if let Some(ms) = old_expiration {
                self.exps
                    .remove((ms, id))
                    .context("updating the expiration index")?;
            }
            if let Some(ms) = record.expiration {
                self.exps
                    .insert((ms, id), ())
                    .context("updating the expiration index")?;
            }
        }

        let was_live = old.is_some_and(|o| o.live);
        if was_live && deleted {
            self.count = self.count.saturating_sub(1);
        } else if !was_live && !deleted {
            self.count += 1;
        }
        self.last_sequence = self.last_sequence.max(record.sequence);
        // A put that keeps the sequence (an expiration set, say) is not a change.
        if old.is_none() || moved {
            self.summary.changes.push(Change {
                sequence: record.sequence,
                id: id.to_owned(),
                rev: current.id().clone(),
                deleted,
            });
        }
        Ok(())
    }

    fn try_purge(&mut self, id: &str) -> Result<bool> {
        let old = match self.docs.remove(id).context("purging a document")? {
            Some(value) => codec::get_record_header(id, value.value())?,
            None => return Ok(false),
        };
        self.seqs
            .remove(old.sequence)
            .context("updating the change feed")?;
        if let Some(ms) = old.expiration {
            self.exps
                .remove((ms, id))
                .context("updating the expiration index")?;
        }
        if old.live {
            self.count = self.count.saturating_sub(1);
        }
        self.summary.purged.push(id.to_owned());
        Ok(true)
    }

    fn try_put_local(&mut self, id: &str, value: Option<&[u8]>) -> Result<()> {
        match value {
            Some(value) => {
                self.locals
                    .insert(id, value)
                    .context("writing a local document")?;
            }
            None => {
                self.locals
                    .remove(id)
                    .context("deleting a local document")?;
            }
        }
        Ok(())
    }

    fn try_expired(&mut self, now_ms: u64, limit: usize) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        if limit == 0 {
            return Ok(ids);
        }
        let range = match now_ms.checked_add(1) {
            Some(end) => self.exps.range((0u64, "")..(end, "")),
            None => self.exps.range((0u64, "")..),
        };
        for entry in range.context("reading the expiration index")? {
            let (key, _) = entry.context("reading the expiration index")?;
            ids.push(key.value().1.to_owned());
            if ids.len() == limit {
                break;
            }
        }
        Ok(ids)
    }
}

fn invalid(id: &str, reason: &str) -> StorageError {
    StorageError::InvalidRecord {
        id: id.to_owned(),
        reason: reason.to_owned(),
    }
}

impl Transaction for RedbTransaction<'_> {
    fn get(&mut self, id: &str) -> Result<Option<DocumentRecord>> {
        let value = self.docs.get(id).context("reading a document")?;
        value
            .map(|v| codec::decode_record(id, v.value()))
            .transpose()
    }

    fn next_sequence(&mut self) -> Result<u64> {
        let next = self
            .last_sequence
            .checked_add(1)
            .ok_or_else(|| StorageError::Backend("sequence numbers exhausted".into()));
        let next = self.check(next)?;
        self.last_sequence = next;
        Ok(next)
    }

    fn put(&mut self, record: &DocumentRecord) -> Result<()> {
        let result = self.try_put(record);
        self.check(result)
    }

    fn purge(&mut self, id: &str) -> Result<bool> {
        let result = self.try_purge(id);
        self.check(result)
    }

    fn put_local(&mut self, id: &str, value: Option<&[u8]>) -> Result<()> {
        let result = self.try_put_local(id, value);
        self.check(result)
    }

    fn expired(&mut self, now_ms: u64, limit: usize) -> Result<Vec<String>> {
        self.try_expired(now_ms, limit)
    }
}

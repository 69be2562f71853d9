//! Files that are not (or no longer) ferrolite databases are refused with a clear error,
//! never a panic; undecodable records are reported as corrupt.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure is a panic.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{save, Rng};
use ferrolite_storage::{RedbStore, StorageError, Store};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::json;
use tempfile::TempDir;

/// Same definitions as the store's (see the layout in `redb_store.rs`).
const DOCUMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("documents");
const BY_SEQUENCE: TableDefinition<u64, &[u8]> = TableDefinition::new("by_sequence");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

fn data_file(dir: &Path) -> PathBuf {
    dir.join("data.redb")
}

/// Opens `dir` and expects a refusal naming the data file; returns the reason.
fn expect_not_a_database(dir: &Path) -> String {
    match RedbStore::open(dir) {
        Err(StorageError::NotADatabase { path, reason }) => {
            assert_eq!(path, data_file(dir));
            let message = StorageError::NotADatabase {
                path: path.clone(),
                reason: reason.clone(),
            }
            .to_string();
            assert!(message.contains("not a ferrolite database"), "{message}");
            reason
        }
        Err(other) => panic!("expected NotADatabase, got {other:?}"),
        Ok(_) => panic!("expected NotADatabase, the database opened"),
    }
}

/// A database directory holding only `data.redb` with these bytes.
fn dir_with(bytes: &[u8]) -> TempDir {
    let dir = TempDir::new().unwrap();
    fs::write(data_file(dir.path()), bytes).unwrap();
    dir
}

/// A real database with some documents, closed.
fn real_database() -> TempDir {
    let dir = TempDir::new().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    for i in 0..300 {
        save(
            &store,
            &format!("doc-{i}"),
            json!({"i": i, "pad": "x".repeat(200)}),
            false,
            None,
        )
        .unwrap();
    }
    dir
}

#[test]
fn random_bytes_are_refused() {
    let mut rng = Rng::new(7);
    for len in [1usize, 100, 4096, 70_000] {
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let dir = dir_with(&bytes);
        let reason = expect_not_a_database(dir.path());
        assert!(!reason.is_empty());
        assert_eq!(
            fs::read(data_file(dir.path())).unwrap(),
            bytes,
            "left untouched"
        );
    }
}

#[test]
fn empty_file_is_refused() {
    let dir = dir_with(b"");
    assert!(expect_not_a_database(dir.path()).contains("empty"));
}

#[test]
fn text_file_is_refused() {
    let dir = dir_with(
        "Dear diary,\nToday I stored a database in a text file.\n"
            .repeat(100)
            .as_bytes(),
    );
    expect_not_a_database(dir.path());
}

#[test]
fn data_file_that_is_a_directory_is_refused() {
    let dir = TempDir::new().unwrap();
    fs::create_dir(data_file(dir.path())).unwrap();
    expect_not_a_database(dir.path());
}

#[test]
fn truncated_database_is_refused() {
    let source = real_database();
    let bytes = fs::read(data_file(source.path())).unwrap();
    assert!(bytes.len() > 8192, "{}", bytes.len());
    for len in [1, 64, 511, 4096, bytes.len() / 2, bytes.len() - 4096] {
        let dir = dir_with(&bytes[..len]);
        expect_not_a_database(dir.path());
    }
}

#[test]
fn garbled_database_never_panics() {
    let source = real_database();
    let bytes = fs::read(data_file(source.path())).unwrap();
    let mut rng = Rng::new(99);
    // Keep a valid header (and sometimes more), garble the rest: whatever redb makes of it,
    // opening and reading report errors instead of panicking.
    for keep in [512, 4096, 3 * 4096, bytes.len() / 2] {
        let mut garbled = bytes.clone();
        for byte in &mut garbled[keep..] {
            *byte = rng.next_u64() as u8;
        }
        let dir = dir_with(&garbled);
        let opened = RedbStore::open(dir.path());
        eprintln!(
            "garbled after {keep}: {:?}",
            opened.as_ref().map(|_| "opened")
        );
        if let Ok(store) = opened {
            for i in 0..300 {
                let _ = store.get(&format!("doc-{i}"));
            }
            let _ = store.changes_since(0, 1000);
            let _ = store.document_count();
        }
    }
}

#[test]
fn foreign_redb_database_is_refused() {
    let dir = TempDir::new().unwrap();
    {
        let db = redb::Database::create(data_file(dir.path())).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let table: TableDefinition<u64, u64> = TableDefinition::new("something_else");
            txn.open_table(table).unwrap().insert(1, 2).unwrap();
        }
        txn.commit().unwrap();
    }
    assert!(expect_not_a_database(dir.path()).contains("foreign"));

    // A redb database with a table called `meta` but no format marker is foreign too.
    let dir = TempDir::new().unwrap();
    {
        let db = redb::Database::create(data_file(dir.path())).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("hello", &b"world"[..])
            .unwrap();
        txn.commit().unwrap();
    }
    assert!(expect_not_a_database(dir.path()).contains("foreign"));

    // ... and so is one whose `meta` table has other types.
    let dir = TempDir::new().unwrap();
    {
        let db = redb::Database::create(data_file(dir.path())).unwrap();
        let txn = db.begin_write().unwrap();
        let meta: TableDefinition<u64, u64> = TableDefinition::new("meta");
        txn.open_table(meta).unwrap().insert(1, 1).unwrap();
        txn.commit().unwrap();
    }
    expect_not_a_database(dir.path());
}

#[test]
fn newer_format_version_is_refused() {
    let dir = TempDir::new().unwrap();
    drop(RedbStore::open(dir.path()).unwrap());
    {
        let db = redb::Database::open(data_file(dir.path())).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("format_version", &2u32.to_le_bytes()[..])
            .unwrap();
        txn.commit().unwrap();
    }
    let reason = expect_not_a_database(dir.path());
    assert!(reason.contains("newer"), "{reason}");
}

#[test]
fn corrupt_records_are_reported() {
    let dir = TempDir::new().unwrap();
    {
        let store = RedbStore::open(dir.path()).unwrap();
        save(&store, "good", json!({"ok": true}), false, None).unwrap();
        save(&store, "bad-tree", json!({"ok": true}), false, None).unwrap();
        save(&store, "bad-header", json!({"ok": true}), false, None).unwrap();
    }
    {
        let db = redb::Database::open(data_file(dir.path())).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut docs = txn.open_table(DOCUMENTS).unwrap();
            let original = docs.get("bad-tree").unwrap().unwrap().value().to_vec();
            // Keep the header (flags, sequence), garble the tree.
            let mut garbled = original[..2].to_vec();
            garbled.extend_from_slice(&[0xff, 0x13, 0x37, 0x00, 0x42]);
            docs.insert("bad-tree", garbled.as_slice()).unwrap();
            docs.insert("bad-header", &[0xf0, 0x01][..]).unwrap();
            let mut seqs = txn.open_table(BY_SEQUENCE).unwrap();
            seqs.insert(2, &[0x00, 0x50, b'x'][..]).unwrap();
        }
        txn.commit().unwrap();
        // The stored layout is the documented one.
        let read = db.begin_read().unwrap();
        let meta = read.open_table(META).unwrap();
        assert_eq!(
            meta.get("format").unwrap().unwrap().value(),
            b"ferrolite-storage"
        );
    }
    let store = RedbStore::open(dir.path()).unwrap();
    assert!(store.get("good").unwrap().is_some());
    for id in ["bad-tree", "bad-header"] {
        match store.get(id) {
            Err(StorageError::Corrupt(message)) => assert!(message.contains(id), "{message}"),
            other => panic!("{id}: expected Corrupt, got {other:?}"),
        }
    }
    assert!(matches!(
        store.changes_since(0, 10),
        Err(StorageError::Corrupt(_))
    ));
    assert_eq!(store.changes_since(2, 10).unwrap().len(), 1);
    // Inside a transaction too; and purging a corrupt record fails cleanly, writing nothing.
    let result = store.write(&mut |txn| {
        assert!(matches!(txn.get("bad-tree"), Err(StorageError::Corrupt(_))));
        txn.purge("bad-header").map(drop)
    });
    assert!(
        matches!(result, Err(StorageError::Corrupt(_))),
        "{result:?}"
    );
    assert_eq!(store.document_count().unwrap(), 3);
}

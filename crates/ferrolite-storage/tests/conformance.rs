//! The conformance suite: every test runs against each `Store` implementation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure is a panic.

mod common;

use std::io::Read;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{body, now_ms, save, GeneratedReader};
use ferrolite_document::{BlobDigest, BlobDigester, InsertMode, RevId, RevTree};
use ferrolite_storage::{
    ChangeFeed, DocumentRecord, ExpiryPurger, MemoryStore, RedbOptions, RedbStore, StorageError,
    Store,
};
use serde_json::json;
use tempfile::TempDir;

/// A store under test, with what keeps it alive.
struct Fixture {
    store: Arc<dyn Store>,
    /// The database directory, for the on-disk store.
    dir: Option<TempDir>,
}

fn redb_fixture() -> Fixture {
    let dir = TempDir::new().unwrap();
    let store = RedbStore::open(&dir.path().join("db")).unwrap();
    Fixture {
        store: Arc::new(store),
        dir: Some(dir),
    }
}

/// The on-disk store with a page cache far smaller than its data, so pages are evicted and
/// read back during the tests.
fn redb_small_cache_fixture() -> Fixture {
    let dir = TempDir::new().unwrap();
    let options = RedbOptions::default().cache_size(64 * 1024);
    let store = RedbStore::open_with(&dir.path().join("db"), &options).unwrap();
    Fixture {
        store: Arc::new(store),
        dir: Some(dir),
    }
}

fn memory_fixture() -> Fixture {
    Fixture {
        store: Arc::new(MemoryStore::new()),
        dir: None,
    }
}

type Make = fn() -> Fixture;

/// Generates one `#[test]` per store implementation for each suite function.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod redb {
            $( #[test] fn $test() { super::$test(super::redb_fixture) } )*
        }
        mod redb_small_cache {
            $( #[test] fn $test() { super::$test(super::redb_small_cache_fixture) } )*
        }
        mod memory {
            $( #[test] fn $test() { super::$test(super::memory_fixture) } )*
        }
    };
}

conformance!(
    uuids_are_distinct_between_databases,
    sequences_increase,
    records_with_multi_revision_trees_round_trip,
    change_feed_has_one_entry_per_document_in_order,
    changes_since_pages,
    change_feed_iterates_over_many_documents,
    document_count_follows_deletions_and_purges,
    local_documents,
    failed_transaction_leaves_nothing,
    failed_operation_aborts_the_transaction,
    invalid_records_are_refused,
    transaction_sees_its_own_writes,
    reads_during_a_write_see_committed_state,
    purge_removes_every_trace,
    expiration_index,
    expiry_purger_purges_expired_documents,
    blobs_round_trip,
    blob_content_is_stored_once,
    blob_digest_mismatch_stores_nothing,
    large_blob_is_streamed,
    panicking_closure_writes_nothing,
    concurrent_writers_and_readers,
);

fn ids(changes: &[ferrolite_storage::Change]) -> Vec<&str> {
    changes.iter().map(|c| c.id.as_str()).collect()
}

fn all_changes(store: &dyn Store) -> Vec<ferrolite_storage::Change> {
    ChangeFeed::new(store, 0).collect::<Result<_, _>>().unwrap()
}

fn uuids_are_distinct_between_databases(make: Make) {
    let (a, b) = (make(), make());
    let (ua, ub) = (a.store.uuids().unwrap(), b.store.uuids().unwrap());
    assert_ne!(ua.public, ub.public);
    assert_ne!(ua.private, ub.private);
    assert_ne!(ua.public, ua.private);
    assert_eq!(a.store.uuids().unwrap(), ua, "stable while open");
}

fn sequences_increase(make: Make) {
    let f = make();
    let store = &*f.store;
    assert_eq!(store.last_sequence().unwrap(), 0);
    let mut seen = Vec::new();
    store
        .write(&mut |txn| {
            seen.push(txn.next_sequence()?);
            seen.push(txn.next_sequence()?);
            Ok(())
        })
        .unwrap();
    assert_eq!(seen, [1, 2]);
    assert_eq!(
        store.last_sequence().unwrap(),
        2,
        "reserved sequences are used up"
    );
    let a = save(store, "a", json!({"n": 1}), false, None).unwrap();
    let b = save(store, "b", json!({"n": 1}), false, None).unwrap();
    let a2 = save(store, "a", json!({"n": 2}), false, None).unwrap();
    assert_eq!((a.sequence, b.sequence, a2.sequence), (3, 4, 5));
    assert_eq!(store.last_sequence().unwrap(), 5);
    let _ = store.write(&mut |txn| {
        txn.next_sequence()?;
        Err(StorageError::Backend("no".into()))
    });
    assert_eq!(
        store.last_sequence().unwrap(),
        5,
        "a failed transaction reserves nothing"
    );
    assert_eq!(
        save(store, "c", json!({}), false, None).unwrap().sequence,
        6
    );
}

/// A tree with a chain of three revisions, a conflicting branch and a deleted branch.
fn rich_tree(sequence: u64) -> RevTree {
    let mut tree = RevTree::new();
    let r1 = tree
        .add_child(None, body(json!({"v": 1})), false, sequence)
        .unwrap();
    let r2 = tree
        .add_child(
            Some(&r1),
            body(json!({"v": 2, "s": "é\n"})),
            false,
            sequence,
        )
        .unwrap();
    tree.add_child(Some(&r2), body(json!({"v": 3})), false, sequence)
        .unwrap();
    let other = RevId::compute(Some(&r1), false, &body(json!({"other": true})));
    tree.insert_history(
        &[other.clone(), r1.clone()],
        Some(body(json!({"other": true}))),
        false,
        sequence,
        InsertMode::AllowConflicts,
    )
    .unwrap();
    let gone = RevId::compute(Some(&other), true, b"{}");
    tree.insert_history(
        &[gone, other],
        None,
        true,
        sequence,
        InsertMode::AllowConflicts,
    )
    .unwrap();
    tree
}

fn records_with_multi_revision_trees_round_trip(make: Make) {
    let f = make();
    let store = &*f.store;
    let mut records = Vec::new();
    store
        .write(&mut |txn| {
            records.clear();
            for (i, expiration) in [None, Some(0), Some(u64::MAX), Some(1_700_000_000_000)]
                .into_iter()
                .enumerate()
            {
                let sequence = txn.next_sequence()?;
                let record = DocumentRecord {
                    id: format!("doc-{i}-é"),
                    tree: rich_tree(sequence),
                    sequence,
                    expiration,
                };
                txn.put(&record)?;
                records.push(record);
            }
            Ok(())
        })
        .unwrap();
    assert!(records[0].tree.len() >= 5);
    for record in &records {
        assert_eq!(store.get(&record.id).unwrap().as_ref(), Some(record));
    }
    assert_eq!(store.get("missing").unwrap(), None);
    let feed = all_changes(store);
    assert_eq!(feed.len(), 4);
    for (change, record) in feed.iter().zip(&records) {
        let current = record.tree.current().unwrap();
        assert_eq!(change.id, record.id);
        assert_eq!(&change.rev, current.id());
        assert_eq!(change.deleted, current.is_deleted());
        assert_eq!(change.sequence, record.sequence);
    }
}

fn change_feed_has_one_entry_per_document_in_order(make: Make) {
    let f = make();
    let store = &*f.store;
    save(store, "a", json!({"n": 1}), false, None).unwrap();
    save(store, "b", json!({"n": 1}), false, None).unwrap();
    save(store, "c", json!({"n": 1}), false, None).unwrap();
    let a2 = save(store, "a", json!({"n": 2}), false, None).unwrap();
    let b2 = save(store, "b", json!({}), true, None).unwrap();
    let feed = all_changes(store);
    assert_eq!(ids(&feed), ["c", "a", "b"]);
    assert_eq!(
        feed.iter().map(|c| c.sequence).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    assert_eq!(&feed[1].rev, a2.tree.current().unwrap().id());
    assert_eq!(feed[1].rev.generation(), 2);
    assert!(!feed[1].deleted);
    assert_eq!(&feed[2].rev, b2.tree.current().unwrap().id());
    assert!(feed[2].deleted);

    // Several writes of the same document in one transaction leave one entry.
    let mut summary_changes = 0;
    let summary = store
        .write(&mut |txn| {
            for n in 0..3 {
                let mut record = txn.get("c")?.unwrap();
                let parent = record.tree.current().unwrap().id().clone();
                record.sequence = txn.next_sequence()?;
                record.tree.add_child(
                    Some(&parent),
                    body(json!({"n": n})),
                    false,
                    record.sequence,
                )?;
                txn.put(&record)?;
            }
            Ok(())
        })
        .unwrap();
    summary_changes += summary.changes.len();
    assert_eq!(summary_changes, 3, "the summary lists every write in order");
    assert_eq!(
        summary
            .changes
            .iter()
            .map(|c| c.sequence)
            .collect::<Vec<_>>(),
        [6, 7, 8]
    );
    let feed = all_changes(store);
    assert_eq!(ids(&feed), ["a", "b", "c"]);
    assert_eq!(feed[2].sequence, 8);
    assert_eq!(feed[2].rev.generation(), 4);
}

fn changes_since_pages(make: Make) {
    let f = make();
    let store = &*f.store;
    for i in 0..10 {
        save(store, &format!("d{i}"), json!({"i": i}), false, None).unwrap();
    }
    save(store, "d3", json!({"i": 33}), false, None).unwrap();
    let all = store.changes_since(0, usize::MAX).unwrap();
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|w| w[0].sequence < w[1].sequence));
    assert_eq!(all.last().unwrap().id, "d3");
    assert_eq!(all.last().unwrap().sequence, 11);

    let mut paged = Vec::new();
    let mut since = 0;
    loop {
        let page = store.changes_since(since, 3).unwrap();
        assert!(page.len() <= 3);
        if page.is_empty() {
            break;
        }
        since = page.last().unwrap().sequence;
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert_eq!(store.changes_since(4, usize::MAX).unwrap(), all[3..]);
    assert_eq!(ids(&store.changes_since(10, 10).unwrap()), ["d3"]);
    assert!(store.changes_since(11, 10).unwrap().is_empty());
    assert!(store.changes_since(u64::MAX, 10).unwrap().is_empty());
    assert!(store.changes_since(0, 0).unwrap().is_empty());
    let tail: Vec<_> = ChangeFeed::new(store, 9).map(Result::unwrap).collect();
    assert_eq!(ids(&tail), ["d9", "d3"]);
}

fn change_feed_iterates_over_many_documents(make: Make) {
    let f = make();
    let store = &*f.store;
    const DOCS: usize = 1_300;
    for batch in 0..DOCS / 100 {
        store
            .write(&mut |txn| {
                for i in batch * 100..(batch + 1) * 100 {
                    let sequence = txn.next_sequence()?;
                    let mut tree = RevTree::new();
                    tree.add_child(None, body(json!({"i": i})), false, sequence)?;
                    txn.put(&DocumentRecord {
                        id: format!("doc-{i:05}"),
                        tree,
                        sequence,
                        expiration: None,
                    })?;
                }
                Ok(())
            })
            .unwrap();
    }
    // Coercions: a concrete store, a `&dyn Store` and an `Arc<dyn Store>` all make feeds.
    let arc: &Arc<dyn Store> = &f.store;
    let mut feed = ChangeFeed::new(&**arc, 0);
    let mut count = 0;
    let mut last = 0;
    for change in &mut feed {
        let change = change.unwrap();
        assert!(change.sequence > last);
        assert_eq!(change.id, format!("doc-{count:05}"));
        last = change.sequence;
        count += 1;
    }
    assert_eq!(count, DOCS);
    assert_eq!(feed.since(), DOCS as u64);
    assert!(feed.next().is_none());
    assert_eq!(ChangeFeed::new(&*f.store, 1_000).count(), DOCS - 1_000);
    assert_eq!(ChangeFeed::new(arc, 1_024).count(), DOCS - 1_024);
    assert_eq!(store.document_count().unwrap(), DOCS as u64);
}

fn document_count_follows_deletions_and_purges(make: Make) {
    let f = make();
    let store = &*f.store;
    assert_eq!(store.document_count().unwrap(), 0);
    for id in ["a", "b", "c"] {
        save(store, id, json!({"id": id}), false, None).unwrap();
    }
    assert_eq!(store.document_count().unwrap(), 3);
    save(store, "a", json!({"v": 2}), false, None).unwrap();
    assert_eq!(store.document_count().unwrap(), 3, "an update counts once");
    save(store, "b", json!({}), true, None).unwrap();
    assert_eq!(
        store.document_count().unwrap(),
        2,
        "a deletion is not counted"
    );
    save(store, "b", json!({"back": true}), false, None).unwrap();
    assert_eq!(store.document_count().unwrap(), 3, "resurrected");
    save(store, "b", json!({}), true, None).unwrap();
    save(store, "d", json!({}), true, None).unwrap();
    assert_eq!(
        store.document_count().unwrap(),
        2,
        "a created-deleted doc is not counted"
    );
    store
        .write(&mut |txn| {
            assert!(txn.purge("a")?);
            assert!(txn.purge("b")?, "a deleted document can be purged");
            assert!(!txn.purge("zz")?);
            Ok(())
        })
        .unwrap();
    assert_eq!(store.document_count().unwrap(), 1);
    assert_eq!(ids(&all_changes(store)), ["c", "d"]);
}

fn local_documents(make: Make) {
    let f = make();
    let store = &*f.store;
    assert_eq!(store.get_local("checkpoint/x").unwrap(), None);
    store
        .write(&mut |txn| {
            txn.put_local("checkpoint/x", Some(br#"{"seq":1}"#))?;
            txn.put_local("empty", Some(b""))?;
            Ok(())
        })
        .unwrap();
    assert_eq!(
        store.get_local("checkpoint/x").unwrap().as_deref(),
        Some(&br#"{"seq":1}"#[..])
    );
    assert_eq!(store.get_local("empty").unwrap().as_deref(), Some(&b""[..]));
    store
        .write(&mut |txn| {
            txn.put_local("checkpoint/x", Some(br#"{"seq":2}"#))?;
            txn.put_local("empty", None)?;
            txn.put_local("never", None)?;
            Ok(())
        })
        .unwrap();
    assert_eq!(
        store.get_local("checkpoint/x").unwrap().as_deref(),
        Some(&br#"{"seq":2}"#[..])
    );
    assert_eq!(store.get_local("empty").unwrap(), None);
    assert_eq!(
        store.last_sequence().unwrap(),
        0,
        "local docs take no sequence"
    );
    assert!(
        all_changes(store).is_empty(),
        "local docs are not in the feed"
    );
    assert_eq!(store.document_count().unwrap(), 0);
}

/// Everything observable about a store's documents and counters.
fn snapshot(store: &dyn Store, ids: &[&str]) -> impl PartialEq + std::fmt::Debug {
    (
        ids.iter()
            .map(|id| store.get(id).unwrap())
            .collect::<Vec<_>>(),
        ids.iter()
            .map(|id| store.get_local(id).unwrap())
            .collect::<Vec<_>>(),
        all_changes(store),
        store.document_count().unwrap(),
        store.last_sequence().unwrap(),
        store.next_expiration().unwrap(),
    )
}

fn failed_transaction_leaves_nothing(make: Make) {
    let f = make();
    let store = &*f.store;
    save(store, "a", json!({"v": 1}), false, Some(Some(5_000))).unwrap();
    save(store, "b", json!({"v": 1}), false, None).unwrap();
    store
        .write(&mut |txn| txn.put_local("a", Some(b"local")))
        .unwrap();
    let names = ["a", "b", "c"];
    let before = snapshot(store, &names);
    let result = store.write(&mut |txn| {
        let sequence = txn.next_sequence()?;
        let mut tree = RevTree::new();
        tree.add_child(None, body(json!({"new": 1})), false, sequence)?;
        txn.put(&DocumentRecord {
            id: "c".into(),
            tree,
            sequence,
            expiration: Some(1),
        })?;
        let mut a = txn.get("a")?.unwrap();
        let parent = a.tree.current().unwrap().id().clone();
        a.sequence = txn.next_sequence()?;
        a.tree
            .add_child(Some(&parent), body(json!({})), true, a.sequence)?;
        a.expiration = None;
        txn.put(&a)?;
        assert!(txn.purge("b")?);
        txn.put_local("a", None)?;
        txn.put_local("c", Some(b"x"))?;
        Err(StorageError::Backend("the caller changed its mind".into()))
    });
    match result {
        Err(StorageError::Backend(message)) => assert_eq!(message, "the caller changed its mind"),
        other => panic!("expected the closure's error, got {other:?}"),
    }
    assert_eq!(snapshot(store, &names), before);
    // A document error from the closure passes through too.
    let result = store.write(&mut |txn| {
        txn.put_local("z", Some(b"z"))?;
        Err(ferrolite_document::DocumentError::Conflict.into())
    });
    assert!(matches!(
        result,
        Err(StorageError::Document(
            ferrolite_document::DocumentError::Conflict
        ))
    ));
    assert_eq!(store.get_local("z").unwrap(), None);
    assert_eq!(snapshot(store, &names), before);
}

fn failed_operation_aborts_the_transaction(make: Make) {
    let f = make();
    let store = &*f.store;
    save(store, "a", json!({"v": 1}), false, None).unwrap();
    let before = snapshot(store, &["a", "b"]);
    // The closure ignores the failed put and returns Ok: nothing is written all the same.
    let result = store.write(&mut |txn| {
        txn.put_local("b", Some(b"x"))?;
        let sequence = txn.next_sequence()?;
        let mut tree = RevTree::new();
        tree.add_child(None, body(json!({})), false, sequence)?;
        txn.put(&DocumentRecord {
            id: "b".into(),
            tree,
            sequence,
            expiration: None,
        })?;
        let sequence = txn.next_sequence()?;
        let refused = txn.put(&DocumentRecord {
            id: "empty".into(),
            tree: RevTree::new(),
            sequence,
            expiration: None,
        });
        assert!(matches!(refused, Err(StorageError::InvalidRecord { .. })));
        Ok(())
    });
    assert!(
        matches!(result, Err(StorageError::TransactionAborted(_))),
        "{result:?}"
    );
    assert_eq!(snapshot(store, &["a", "b"]), before);
}

fn invalid_records_are_refused(make: Make) {
    let f = make();
    let store = &*f.store;
    let a = save(store, "a", json!({"v": 1}), false, None).unwrap();
    let mut tree = RevTree::new();
    tree.add_child(None, body(json!({})), false, 1).unwrap();
    let cases = [
        DocumentRecord {
            id: "empty-tree".into(),
            tree: RevTree::new(),
            sequence: 7,
            expiration: None,
        },
        DocumentRecord {
            id: "sequence-zero".into(),
            tree: tree.clone(),
            sequence: 0,
            expiration: None,
        },
        DocumentRecord {
            id: "stolen-sequence".into(),
            tree,
            sequence: a.sequence,
            expiration: None,
        },
    ];
    for record in cases {
        let result = store.write(&mut |txn| txn.put(&record));
        match result {
            Err(StorageError::InvalidRecord { id, .. }) => assert_eq!(id, record.id),
            other => panic!("{}: expected InvalidRecord, got {other:?}", record.id),
        }
        assert_eq!(store.get(&record.id).unwrap(), None);
    }
    assert_eq!(ids(&all_changes(store)), ["a"]);
    assert_eq!(store.get("a").unwrap(), Some(a));
}

fn transaction_sees_its_own_writes(make: Make) {
    let f = make();
    let store = &*f.store;
    save(store, "old", json!({"v": 1}), false, Some(Some(10))).unwrap();
    store
        .write(&mut |txn| {
            let sequence = txn.next_sequence()?;
            let mut tree = RevTree::new();
            tree.add_child(None, body(json!({"v": 1})), false, sequence)?;
            let record = DocumentRecord {
                id: "new".into(),
                tree,
                sequence,
                expiration: Some(5),
            };
            txn.put(&record)?;
            assert_eq!(txn.get("new")?, Some(record));
            assert_eq!(txn.expired(100, 10)?, ["new", "old"]);
            assert_eq!(txn.expired(7, 10)?, ["new"]);
            assert_eq!(txn.expired(100, 1)?, ["new"]);
            assert!(txn.purge("old")?);
            assert_eq!(txn.get("old")?, None);
            assert!(!txn.purge("old")?);
            assert_eq!(txn.expired(100, 10)?, ["new"]);
            Ok(())
        })
        .unwrap();
    assert_eq!(store.get("old").unwrap(), None);
    assert_eq!(store.next_expiration().unwrap(), Some(5));
}

fn reads_during_a_write_see_committed_state(make: Make) {
    let f = make();
    let store = &*f.store;
    let a = save(store, "a", json!({"v": 1}), false, None).unwrap();
    store
        .write(&mut |txn| {
            assert!(txn.purge("a")?);
            txn.put_local("l", Some(b"x"))?;
            // The store itself still shows the committed state (and does not deadlock).
            assert_eq!(store.get("a")?.as_ref(), Some(&a));
            assert_eq!(store.get_local("l")?, None);
            assert_eq!(store.document_count()?, 1);
            Ok(())
        })
        .unwrap();
    assert_eq!(store.get("a").unwrap(), None);
}

fn purge_removes_every_trace(make: Make) {
    let f = make();
    let store = &*f.store;
    save(store, "a", json!({"v": 1}), false, Some(Some(1_000))).unwrap();
    save(store, "a", json!({"v": 2}), false, None).unwrap();
    save(store, "b", json!({"v": 1}), false, Some(Some(2_000))).unwrap();
    assert_eq!(store.next_expiration().unwrap(), Some(1_000));
    let summary = store
        .write(&mut |txn| {
            assert!(txn.purge("a")?);
            Ok(())
        })
        .unwrap();
    assert_eq!(summary.purged, ["a"]);
    assert!(summary.changes.is_empty());
    assert_eq!(store.get("a").unwrap(), None);
    assert_eq!(ids(&all_changes(store)), ["b"]);
    assert_eq!(store.next_expiration().unwrap(), Some(2_000));
    assert_eq!(
        store.last_sequence().unwrap(),
        3,
        "purging takes no sequence"
    );
    // The ID can be used again from scratch.
    let again = save(store, "a", json!({"v": 1}), false, None).unwrap();
    assert_eq!(again.tree.len(), 1);
    assert_eq!(ids(&all_changes(store)), ["b", "a"]);
}

fn expiration_index(make: Make) {
    let f = make();
    let store = &*f.store;
    assert_eq!(store.next_expiration().unwrap(), None);
    save(store, "late", json!({}), false, Some(Some(3_000))).unwrap();
    save(store, "early", json!({}), false, Some(Some(1_000))).unwrap();
    save(store, "same-b", json!({}), false, Some(Some(2_000))).unwrap();
    save(store, "same-a", json!({}), false, Some(Some(2_000))).unwrap();
    save(store, "never", json!({}), false, None).unwrap();
    assert_eq!(store.next_expiration().unwrap(), Some(1_000));
    let expired = |now, limit| {
        let mut found = Vec::new();
        // Read inside a transaction that is then rolled back.
        let _ = store.write(&mut |txn| {
            found = txn.expired(now, limit)?;
            Err(StorageError::Backend("read only".into()))
        });
        found
    };
    assert!(expired(999, 10).is_empty());
    assert_eq!(expired(1_000, 10), ["early"]);
    assert_eq!(expired(2_000, 10), ["early", "same-a", "same-b"]);
    assert_eq!(expired(2_500, 2), ["early", "same-a"]);
    assert_eq!(expired(u64::MAX, 10), ["early", "same-a", "same-b", "late"]);
    assert!(expired(u64::MAX, 0).is_empty());

    // Moving and removing expirations keeps one index entry per document.
    save(store, "early", json!({"v": 2}), false, Some(Some(4_000))).unwrap();
    save(store, "same-a", json!({"v": 2}), false, Some(None)).unwrap();
    assert_eq!(store.next_expiration().unwrap(), Some(2_000));
    assert_eq!(expired(u64::MAX, 10), ["same-b", "late", "early"]);
    // Setting an expiration without a new revision or sequence.
    store
        .write(&mut |txn| {
            let mut record = txn.get("never")?.unwrap();
            record.expiration = Some(500);
            txn.put(&record)
        })
        .unwrap();
    assert_eq!(store.next_expiration().unwrap(), Some(500));
    assert_eq!(ids(&all_changes(store)).len(), 5);
    store
        .write(&mut |txn| {
            for id in txn.expired(u64::MAX, 100)? {
                txn.purge(&id)?;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(store.next_expiration().unwrap(), None);
    assert_eq!(ids(&all_changes(store)), ["same-a"]);
}

fn expiry_purger_purges_expired_documents(make: Make) {
    let f = make();
    let store = Arc::clone(&f.store);
    save(&*store, "keep", json!({}), false, None).unwrap();
    save(
        &*store,
        "far",
        json!({}),
        false,
        Some(Some(now_ms() + 3_600_000)),
    )
    .unwrap();
    let (sender, receiver) = mpsc::channel::<Vec<String>>();
    let sender = Mutex::new(sender);
    let purger = ExpiryPurger::spawn(
        Arc::clone(&store),
        Box::new(move |ids: &[String]| {
            let _ = sender.lock().unwrap().send(ids.to_vec());
        }),
    );
    let start = Instant::now();
    save(
        &*store,
        "soon",
        json!({}),
        false,
        Some(Some(now_ms() + 200)),
    )
    .unwrap();
    purger.wake();
    let purged = receiver.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(purged, ["soon"]);
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(store.get("soon").unwrap(), None);
    assert!(store.get("keep").unwrap().is_some());
    assert!(store.get("far").unwrap().is_some());
    assert_eq!(
        store.next_expiration().unwrap().map(|ms| ms > now_ms()),
        Some(true)
    );
    // A second document, already expired when the purger is woken.
    save(&*store, "past", json!({}), false, Some(Some(1))).unwrap();
    purger.wake();
    assert_eq!(
        receiver.recv_timeout(Duration::from_secs(20)).unwrap(),
        ["past"]
    );
    drop(purger);
    assert!(receiver.try_recv().is_err());
}

fn read_all(store: &dyn Store, digest: &BlobDigest) -> Vec<u8> {
    let mut data = Vec::new();
    store
        .open_blob(digest)
        .unwrap()
        .expect("blob stored")
        .read_to_end(&mut data)
        .unwrap();
    data
}

fn blob_files(dir: Option<&TempDir>) -> Option<Vec<String>> {
    let blobs = dir?.path().join("db").join("blobs");
    let mut names: Vec<String> = std::fs::read_dir(Path::new(&blobs))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Some(names)
}

fn blobs_round_trip(make: Make) {
    let f = make();
    let store = &*f.store;
    let content = b"Hello, blob!\n";
    let digest = BlobDigest::of(content);
    assert!(!store.has_blob(&digest).unwrap());
    assert!(store.open_blob(&digest).unwrap().is_none());
    let stored = store.put_blob(&mut &content[..], None).unwrap();
    assert_eq!(stored.digest, digest);
    assert_eq!(stored.length, 13);
    assert_eq!(digest.to_string(), "sha1-GgXWuohWJOrFHeD9ZswSosQVmDc=");
    assert!(store.has_blob(&digest).unwrap());
    assert_eq!(read_all(store, &digest), content);
    let empty = store
        .put_blob(&mut &b""[..], Some(&BlobDigest::of(b"")))
        .unwrap();
    assert_eq!(empty.length, 0);
    assert_eq!(read_all(store, &empty.digest), b"");
    if let Some(files) = blob_files(f.dir.as_ref()) {
        let mut expected = vec![digest.to_hex(), empty.digest.to_hex()];
        expected.sort();
        assert_eq!(files, expected);
    }
}

fn blob_content_is_stored_once(make: Make) {
    let f = make();
    let store = &*f.store;
    let content = vec![7u8; 200_000];
    let first = store.put_blob(&mut content.as_slice(), None).unwrap();
    let second = store
        .put_blob(&mut content.as_slice(), Some(&first.digest))
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(read_all(store, &first.digest), content);
    if let Some(files) = blob_files(f.dir.as_ref()) {
        assert_eq!(files, [first.digest.to_hex()]);
    }
}

fn blob_digest_mismatch_stores_nothing(make: Make) {
    let f = make();
    let store = &*f.store;
    let claimed = BlobDigest::of(b"what was announced");
    let content = b"what arrived".repeat(10_000);
    match store.put_blob(&mut content.as_slice(), Some(&claimed)) {
        Err(StorageError::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, claimed);
            assert_eq!(actual, BlobDigest::of(&content));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    assert!(!store.has_blob(&claimed).unwrap());
    assert!(!store.has_blob(&BlobDigest::of(&content)).unwrap());
    if let Some(files) = blob_files(f.dir.as_ref()) {
        assert!(files.is_empty(), "{files:?}");
    }
    // A reader that fails half-way stores nothing either.
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("connection lost"));
            }
            self.0 -= 1;
            buf[..10].fill(1);
            Ok(10)
        }
    }
    assert!(matches!(
        store.put_blob(&mut Failing(3), None),
        Err(StorageError::Io(_))
    ));
    if let Some(files) = blob_files(f.dir.as_ref()) {
        assert!(files.is_empty(), "{files:?}");
    }
}

fn large_blob_is_streamed(make: Make) {
    let f = make();
    let store = &*f.store;
    const LEN: u64 = 20 * 1024 * 1024;
    let mut expected = BlobDigester::new();
    std::io::copy(
        &mut GeneratedReader::new(42, LEN),
        &mut DigestWriter(&mut expected),
    )
    .unwrap();
    let expected = expected.finish();
    let stored = store
        .put_blob(&mut GeneratedReader::new(42, LEN), Some(&expected))
        .unwrap();
    assert_eq!(stored.digest, expected);
    assert_eq!(stored.length, LEN);
    let mut reader = store.open_blob(&expected).unwrap().unwrap();
    let mut read_back = BlobDigester::new();
    std::io::copy(&mut reader, &mut DigestWriter(&mut read_back)).unwrap();
    assert_eq!(read_back.length(), LEN);
    assert_eq!(read_back.finish(), expected);
}

struct DigestWriter<'a>(&'a mut BlobDigester);

impl std::io::Write for DigestWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn panicking_closure_writes_nothing(make: Make) {
    let f = make();
    let store = &*f.store;
    save(store, "a", json!({"v": 1}), false, None).unwrap();
    let before = snapshot(store, &["a", "b"]);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = store.write(&mut |txn| {
            txn.purge("a")?;
            txn.put_local("b", Some(b"x"))?;
            panic!("the closure panics");
        });
    }));
    assert!(result.is_err());
    assert_eq!(snapshot(store, &["a", "b"]), before);
    // The store is still usable.
    save(store, "b", json!({"v": 1}), false, None).unwrap();
    assert_eq!(store.document_count().unwrap(), 2);
}

fn concurrent_writers_and_readers(make: Make) {
    let f = make();
    std::thread::scope(|scope| {
        for writer in 0..2 {
            let store = &*f.store;
            scope.spawn(move || {
                for i in 0..20 {
                    save(
                        store,
                        &format!("w{writer}-{}", i % 7),
                        json!({"i": i}),
                        false,
                        None,
                    )
                    .unwrap();
                }
            });
        }
        for _ in 0..2 {
            let store = &*f.store;
            scope.spawn(move || {
                for _ in 0..20 {
                    let feed = all_changes(store);
                    assert!(feed.windows(2).all(|w| w[0].sequence < w[1].sequence));
                    for change in feed.iter().take(3) {
                        let record = store.get(&change.id).unwrap().unwrap();
                        assert!(record.sequence >= change.sequence);
                    }
                }
            });
        }
    });
    let store = &*f.store;
    assert_eq!(store.last_sequence().unwrap(), 40);
    assert_eq!(store.document_count().unwrap(), 14);
    let feed = all_changes(store);
    assert_eq!(feed.len(), 14);
    for change in feed {
        let record = store.get(&change.id).unwrap().unwrap();
        assert_eq!(record.sequence, change.sequence);
        assert_eq!(record.tree.current().unwrap().id(), &change.rev);
    }
}

// On-disk only.

#[test]
fn redb_uuids_are_stable_across_reopen() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("nested").join("db");
    let uuids = RedbStore::open(&path).unwrap().uuids().unwrap();
    let again = RedbStore::open(&path).unwrap().uuids().unwrap();
    assert_eq!(uuids, again);
}

#[test]
fn redb_everything_survives_reopen() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("db");
    let names = ["a", "b", "c", "local"];
    let (before, blob) = {
        let store = RedbStore::open(&path).unwrap();
        save(&store, "a", json!({"v": 1}), false, Some(Some(12_345))).unwrap();
        save(&store, "b", json!({"v": 1}), false, None).unwrap();
        save(&store, "a", json!({"v": 2}), false, None).unwrap();
        save(&store, "c", json!({}), true, None).unwrap();
        store
            .write(&mut |txn| {
                txn.next_sequence()?;
                let sequence = txn.next_sequence()?;
                txn.put(&DocumentRecord {
                    id: "rich".into(),
                    tree: rich_tree(sequence),
                    sequence,
                    expiration: None,
                })?;
                txn.put_local("local", Some(b"checkpoint"))
            })
            .unwrap();
        let blob = store.put_blob(&mut &b"blob"[..], None).unwrap();
        (snapshot(&store, &names), blob)
    };
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(snapshot(&store, &names), before);
    assert_eq!(store.last_sequence().unwrap(), 6);
    assert_eq!(store.document_count().unwrap(), 3);
    assert_eq!(store.get("rich").unwrap().unwrap().tree, rich_tree(6));
    assert_eq!(read_all(&store, &blob.digest), b"blob");
    assert_eq!(store.next_expiration().unwrap(), Some(12_345));
}

#[test]
fn redb_refuses_a_second_open_of_the_same_database() {
    let dir = TempDir::new().unwrap();
    let _store = RedbStore::open(dir.path()).unwrap();
    match RedbStore::open(dir.path()) {
        Err(StorageError::Backend(message)) => {
            assert!(message.contains("already open"), "{message}")
        }
        other => panic!("expected Backend, got {other:?}"),
    }
}

#[test]
fn redb_removes_leftover_temporary_blob_files() {
    let dir = TempDir::new().unwrap();
    drop(RedbStore::open(dir.path()).unwrap());
    let leftover = dir.path().join("blobs").join("0123.tmp");
    std::fs::write(&leftover, b"half a blob").unwrap();
    let _store = RedbStore::open(dir.path()).unwrap();
    assert!(!leftover.exists());
}

//! Model test: random operation sequences applied to a `RedbStore` and a `MemoryStore` must
//! leave them observably identical after every step.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure is a panic.

mod common;

use std::io::Read;
use std::path::Path;

use common::body;
use ferrolite_document::{BlobDigest, InsertMode, RevId, RevTree};
use ferrolite_storage::{
    CommitSummary, DocumentRecord, MemoryStore, RedbStore, Result, StorageError, Store, Transaction,
};
use proptest::prelude::*;
use serde_json::json;

const DOCS: u8 = 6;
const LOCALS: u8 = 3;

fn doc_id(doc: u8) -> String {
    format!("doc-{doc}")
}

fn local_id(local: u8) -> String {
    format!("local-{local}")
}

/// One operation inside a write transaction.
#[derive(Debug, Clone)]
enum DocOp {
    /// A new revision as a child of one of the leaves (or a first revision).
    Save {
        doc: u8,
        leaf: u8,
        body: u8,
        deleted: bool,
        expiration: Option<Option<u16>>,
    },
    /// A revision from "a peer", as a new branch off any revision (a conflict).
    Branch {
        doc: u8,
        from: u8,
        body: u8,
        deleted: bool,
    },
    /// Changes only the expiration (same revision, same sequence).
    SetExpiration {
        doc: u8,
        expiration: Option<u16>,
    },
    Purge {
        doc: u8,
    },
    PutLocal {
        local: u8,
        value: Option<Vec<u8>>,
    },
}

#[derive(Debug, Clone)]
enum Step {
    /// One write transaction; when `fail`, its closure returns an error at the end.
    Write { ops: Vec<DocOp>, fail: bool },
    /// What the expiry purger does at time `now`.
    PurgeExpired { now: u16 },
    Blob {
        content: Vec<u8>,
        wrong_digest: bool,
    },
    /// Closes and reopens the on-disk store.
    Reopen,
}

fn doc_op() -> impl Strategy<Value = DocOp> {
    let expiration = prop_oneof![
        3 => Just(None),
        1 => Just(Some(None)),
        2 => (0u16..1000).prop_map(|ms| Some(Some(ms))),
    ];
    prop_oneof![
        6 => (0..DOCS, any::<u8>(), 0u8..4, prop::bool::weighted(0.2), expiration).prop_map(
            |(doc, leaf, body, deleted, expiration)| DocOp::Save { doc, leaf, body, deleted, expiration }
        ),
        2 => (0..DOCS, any::<u8>(), 0u8..4, prop::bool::weighted(0.2))
            .prop_map(|(doc, from, body, deleted)| DocOp::Branch { doc, from, body, deleted }),
        1 => (0..DOCS, prop::option::of(0u16..1000))
            .prop_map(|(doc, expiration)| DocOp::SetExpiration { doc, expiration }),
        1 => (0..DOCS).prop_map(|doc| DocOp::Purge { doc }),
        2 => (0..LOCALS, prop::option::of(prop::collection::vec(any::<u8>(), 0..8)))
            .prop_map(|(local, value)| DocOp::PutLocal { local, value }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => (prop::collection::vec(doc_op(), 1..4), prop::bool::weighted(0.15))
            .prop_map(|(ops, fail)| Step::Write { ops, fail }),
        2 => (0u16..1200).prop_map(|now| Step::PurgeExpired { now }),
        1 => (prop::collection::vec(any::<u8>(), 0..300), any::<bool>())
            .prop_map(|(content, wrong_digest)| Step::Blob { content, wrong_digest }),
        1 => Just(Step::Reopen),
    ]
}

fn sorted_leaves(tree: &RevTree) -> Vec<RevId> {
    let mut leaves: Vec<RevId> = tree.leaves().into_iter().map(|r| r.id().clone()).collect();
    leaves.sort();
    leaves
}

fn apply_op(txn: &mut dyn Transaction, op: &DocOp) -> Result<()> {
    match op {
        DocOp::Save {
            doc,
            leaf,
            body: b,
            deleted,
            expiration,
        } => {
            let id = doc_id(*doc);
            let (mut tree, old_expiration) = match txn.get(&id)? {
                Some(record) => (record.tree, record.expiration),
                None => (RevTree::new(), None),
            };
            let leaves = sorted_leaves(&tree);
            let parent =
                (!leaves.is_empty()).then(|| leaves[usize::from(*leaf) % leaves.len()].clone());
            let sequence = txn.next_sequence()?;
            let content = if *deleted {
                body(json!({}))
            } else {
                body(json!({"b": b}))
            };
            tree.add_child(parent.as_ref(), content, *deleted, sequence)?;
            txn.put(&DocumentRecord {
                id,
                tree,
                sequence,
                expiration: expiration.map_or(old_expiration, |e| e.map(u64::from)),
            })
        }
        DocOp::Branch {
            doc,
            from,
            body: b,
            deleted,
        } => {
            let id = doc_id(*doc);
            let Some(mut record) = txn.get(&id)? else {
                return Ok(());
            };
            let mut revs: Vec<RevId> = record.tree.revisions().map(|r| r.id().clone()).collect();
            revs.sort();
            let base = revs[usize::from(*from) % revs.len()].clone();
            let content = body(json!({"peer": b}));
            let new = RevId::compute(Some(&base), *deleted, &content);
            let mut history = vec![new];
            history.extend(record.tree.history(&base).into_iter().cloned());
            record.sequence = txn.next_sequence()?;
            record.tree.insert_history(
                &history,
                Some(content),
                *deleted,
                record.sequence,
                InsertMode::AllowConflicts,
            )?;
            txn.put(&record)
        }
        DocOp::SetExpiration { doc, expiration } => {
            if let Some(mut record) = txn.get(&doc_id(*doc))? {
                record.expiration = expiration.map(u64::from);
                txn.put(&record)?;
            }
            Ok(())
        }
        DocOp::Purge { doc } => txn.purge(&doc_id(*doc)).map(drop),
        DocOp::PutLocal { local, value } => txn.put_local(&local_id(*local), value.as_deref()),
    }
}

/// Applies a step; returns what a caller would see.
fn apply(store: &dyn Store, step: &Step) -> std::result::Result<CommitSummary, String> {
    let result = match step {
        Step::Write { ops, fail } => store.write(&mut |txn| {
            for op in ops {
                apply_op(txn, op)?;
            }
            if *fail {
                return Err(StorageError::Backend("planned failure".into()));
            }
            Ok(())
        }),
        Step::PurgeExpired { now } => store.write(&mut |txn| {
            for id in txn.expired(u64::from(*now), 2)? {
                txn.purge(&id)?;
            }
            Ok(())
        }),
        Step::Blob {
            content,
            wrong_digest,
        } => {
            let expected = if *wrong_digest {
                BlobDigest::of(b"something else")
            } else {
                BlobDigest::of(content)
            };
            store
                .put_blob(&mut content.as_slice(), Some(&expected))
                .map(|_| CommitSummary::default())
        }
        Step::Reopen => Ok(CommitSummary::default()),
    };
    result.map_err(|e| e.to_string())
}

/// Everything observable about a store.
#[derive(Debug, PartialEq)]
struct Observed {
    docs: Vec<Option<DocumentRecord>>,
    feed: Vec<ferrolite_storage::Change>,
    count: u64,
    last_sequence: u64,
    locals: Vec<Option<bytes::Bytes>>,
    next_expiration: Option<u64>,
    expired: Vec<String>,
    blobs: Vec<Option<Vec<u8>>>,
}

fn observe(store: &dyn Store, digests: &[BlobDigest]) -> Observed {
    let mut expired = Vec::new();
    let rolled_back = store.write(&mut |txn| {
        expired = txn.expired(u64::MAX, 100)?;
        Err(StorageError::Backend("read only".into()))
    });
    assert!(rolled_back.is_err());
    Observed {
        docs: (0..DOCS).map(|d| store.get(&doc_id(d)).unwrap()).collect(),
        feed: store.changes_since(0, usize::MAX).unwrap(),
        count: store.document_count().unwrap(),
        last_sequence: store.last_sequence().unwrap(),
        locals: (0..LOCALS)
            .map(|l| store.get_local(&local_id(l)).unwrap())
            .collect(),
        next_expiration: store.next_expiration().unwrap(),
        expired,
        blobs: digests
            .iter()
            .map(|d| {
                let mut reader = store.open_blob(d).unwrap()?;
                let mut data = Vec::new();
                reader.read_to_end(&mut data).unwrap();
                assert!(store.has_blob(d).unwrap());
                Some(data)
            })
            .collect(),
    }
}

/// Checks invariants the model does not show directly.
fn check_invariants(observed: &Observed) {
    let live = observed
        .docs
        .iter()
        .flatten()
        .filter(|r| !r.tree.current().unwrap().is_deleted())
        .count() as u64;
    assert_eq!(observed.count, live, "document count");
    let stored: Vec<&DocumentRecord> = observed.docs.iter().flatten().collect();
    assert_eq!(
        observed.feed.len(),
        stored.len(),
        "one feed entry per document"
    );
    for record in stored {
        let change = observed
            .feed
            .iter()
            .find(|c| c.id == record.id)
            .expect("feed entry");
        assert_eq!(change.sequence, record.sequence);
        assert_eq!(&change.rev, record.tree.current().unwrap().id());
        assert!(record.sequence <= observed.last_sequence);
    }
    let min_expiration = observed
        .docs
        .iter()
        .flatten()
        .filter_map(|r| r.expiration)
        .min();
    assert_eq!(observed.next_expiration, min_expiration);
}

fn run(steps: &[Step], dir: &Path) {
    let memory = MemoryStore::new();
    let mut redb = Some(RedbStore::open(dir).unwrap());
    let mut digests: Vec<BlobDigest> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        if let Step::Blob { content, .. } = step {
            digests.push(BlobDigest::of(content));
        }
        if let Step::Reopen = step {
            drop(redb.take());
            redb = Some(RedbStore::open(dir).unwrap());
        }
        let disk = redb.as_ref().unwrap();
        let expected = apply(&memory, step);
        let actual = apply(disk, step);
        assert_eq!(actual, expected, "step {i}: {step:?}");
        let expected = observe(&memory, &digests);
        let actual = observe(disk, &digests);
        assert_eq!(actual, expected, "after step {i}: {step:?}");
        check_invariants(&actual);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn redb_and_memory_stores_agree(steps in prop::collection::vec(step(), 1..=30)) {
        // This test is about behaviour, not durability: a RAM-backed directory, when there is
        // one, keeps the many synced commits cheap.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::TempDir::new_in(shm).unwrap()
        } else {
            tempfile::TempDir::new().unwrap()
        };
        run(&steps, &dir.path().join("db"));
    }
}

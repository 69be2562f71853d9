//! The Database API end to end, on disk and in memory.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ferrolite::{
    Blob, ConcurrencyControl, Database, DatabaseConfiguration, ErrorCode, MutableDocument,
};
use serde_json::json;

fn on_disk() -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open("test", &DatabaseConfiguration::new(dir.path())).unwrap();
    (dir, db)
}

fn both() -> Vec<(Option<tempfile::TempDir>, Database)> {
    let (dir, disk) = on_disk();
    vec![
        (Some(dir), disk),
        (None, Database::open_in_memory("mem").unwrap()),
    ]
}

#[test]
fn database_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Database>();
    assert_send_sync::<ferrolite::Document>();
    assert_send_sync::<MutableDocument>();
    assert_send_sync::<Blob>();
    assert_send_sync::<ferrolite::Error>();
}

#[test]
fn save_read_update_keeps_a_revision_chain() {
    for (_dir, db) in both() {
        let mut doc = MutableDocument::with_id("p1");
        doc.set("name", "Alice").set("age", 30);
        db.save(&mut doc).unwrap();
        let first = doc.revision_id().unwrap().clone();
        assert_eq!(first.as_str(), "1-291c8a3c890453134009043aa089fcd9b5f8f217");

        let read = db.document("p1").unwrap().unwrap();
        assert_eq!(read.revision_id(), &first);
        assert_eq!(read.json(), br#"{"age":30,"name":"Alice"}"#);
        assert_eq!(read.get("age"), Some(&json!(30)));

        let mut edit = read.to_mutable();
        edit.set("age", 31);
        db.save(&mut edit).unwrap();
        let second = db.document("p1").unwrap().unwrap();
        assert_eq!(
            second.revision_id().as_str(),
            "2-a5adf9c3107fd2feb539362efcf947efbd2284ff"
        );
        assert!(second.sequence() > read.sequence());
        assert_eq!(db.count().unwrap(), 1);
        assert!(db.document("missing").unwrap().is_none());
    }
}

#[test]
fn concurrency_control_fail_on_conflict_and_last_write_wins() {
    for (_dir, db) in both() {
        let mut doc = MutableDocument::with_id("c");
        doc.set("v", 1);
        db.save(&mut doc).unwrap();
        let base = db.document("c").unwrap().unwrap();

        let mut a = base.to_mutable();
        a.set("v", "a");
        db.save(&mut a).unwrap();

        let mut b = base.to_mutable();
        b.set("v", "b");
        let saved = db
            .save_with_concurrency_control(&mut b, ConcurrencyControl::FailOnConflict)
            .unwrap();
        assert!(!saved, "a stale edit must be refused");
        assert_eq!(
            db.document("c").unwrap().unwrap().get("v"),
            Some(&json!("a"))
        );

        assert!(db
            .save_with_concurrency_control(&mut b, ConcurrencyControl::LastWriteWins)
            .unwrap());
        let now = db.document("c").unwrap().unwrap();
        assert_eq!(now.get("v"), Some(&json!("b")));
        assert_eq!(now.revision_id().generation(), 3);

        // A new document with an existing ID conflicts too.
        let mut fresh = MutableDocument::with_id("c");
        fresh.set("v", "fresh");
        assert!(!db
            .save_with_concurrency_control(&mut fresh, ConcurrencyControl::FailOnConflict)
            .unwrap());
        let stale_delete = base;
        assert!(!db
            .delete_with_concurrency_control(&stale_delete, ConcurrencyControl::FailOnConflict)
            .unwrap());
        assert!(db.document("c").unwrap().is_some());
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    for (_dir, db) in both() {
        let mut reserved = MutableDocument::with_id("r");
        reserved.set("_id", "other");
        let err = db.save(&mut reserved).unwrap_err();
        assert!(err.is(ErrorCode::CorruptRevisionData), "{err}");
        assert!(err.to_string().contains("_id"), "{err}");

        for bad in ["", "_design/x", &"x".repeat(300)] {
            let mut doc = MutableDocument::with_id(bad);
            let err = db.save(&mut doc).unwrap_err();
            assert!(err.is(ErrorCode::BadDocId), "{bad:?}: {err}");
        }
        assert!(MutableDocument::from_json("x", "[1,2]").is_err());
        assert!(MutableDocument::from_json("x", "{not json").is_err());
        assert_eq!(db.count().unwrap(), 0);
        assert_eq!(db.last_sequence().unwrap(), 0);
    }
}

#[test]
fn delete_and_purge() {
    for (_dir, db) in both() {
        for id in ["a", "b"] {
            db.save(&mut MutableDocument::with_id(id)).unwrap();
        }
        let a = db.document("a").unwrap().unwrap();
        db.delete(&a).unwrap();
        assert!(db.document("a").unwrap().is_none());
        assert_eq!(db.count().unwrap(), 1);
        // The deletion is in the change feed as a tombstone.
        let feed: Vec<_> = db.changes(0).unwrap().map(|c| c.unwrap()).collect();
        let tomb = feed.iter().find(|c| c.id == "a").unwrap();
        assert!(tomb.deleted);
        assert_eq!(tomb.rev.generation(), 2);
        // Deleting again is NotFound; a new document can take the deleted one's place.
        assert!(db.delete(&a).unwrap_err().is(ErrorCode::NotFound));
        let mut again = MutableDocument::with_id("a");
        again.set("back", true);
        assert!(db
            .save_with_concurrency_control(&mut again, ConcurrencyControl::FailOnConflict)
            .unwrap());
        assert_eq!(again.revision_id().unwrap().generation(), 3);

        db.purge("b").unwrap();
        assert!(db.document("b").unwrap().is_none());
        assert!(db.changes(0).unwrap().all(|c| c.unwrap().id != "b"));
        assert!(db.purge("b").unwrap_err().is(ErrorCode::NotFound));
        assert_eq!(db.count().unwrap(), 1);
    }
}

#[test]
fn in_batch_is_all_or_nothing_and_notifies_once() {
    for (_dir, db) in both() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let sink = heard.clone();
        let _token = db.add_change_listener(move |change| {
            sink.lock().unwrap().push(change.document_ids.clone());
        });

        let failed = db.in_batch(|batch| {
            for i in 0..10 {
                batch.save(&mut MutableDocument::with_id(format!("d{i}")))?;
            }
            batch.purge("does-not-exist")
        });
        assert!(failed.unwrap_err().is(ErrorCode::NotFound));
        assert_eq!(db.count().unwrap(), 0);
        assert!(db.document("d0").unwrap().is_none());
        assert!(heard.lock().unwrap().is_empty());

        let n = db
            .in_batch(|batch| {
                for i in 0..10 {
                    batch.save(&mut MutableDocument::with_id(format!("d{i}")))?;
                }
                Ok(10)
            })
            .unwrap();
        assert_eq!(n, 10);
        assert_eq!(db.count().unwrap(), 10);
        let heard = heard.lock().unwrap();
        assert_eq!(heard.len(), 1, "one notification per commit");
        assert_eq!(heard[0].len(), 10);
        assert_eq!(heard[0][0], "d0");
    }
}

#[test]
fn listeners_get_their_documents_and_can_be_removed() {
    for (_dir, db) in both() {
        let (tx, rx) = mpsc::channel();
        let doc_tx = tx.clone();
        let all =
            db.add_change_listener(move |c| tx.send(format!("db:{:?}", c.document_ids)).unwrap());
        let one = db.add_document_change_listener("watched", move |c| {
            doc_tx.send(format!("doc:{}", c.document_id)).unwrap()
        });
        db.save(&mut MutableDocument::with_id("other")).unwrap();
        assert_eq!(rx.try_recv().unwrap(), r#"db:["other"]"#);
        assert!(rx.try_recv().is_err());
        db.save(&mut MutableDocument::with_id("watched")).unwrap();
        let mut got = vec![rx.try_recv().unwrap(), rx.try_recv().unwrap()];
        got.sort();
        assert_eq!(got, [r#"db:["watched"]"#, "doc:watched"]);
        db.remove_change_listener(all);
        db.remove_change_listener(one);
        db.save(&mut MutableDocument::with_id("watched")).unwrap();
        assert!(rx.try_recv().is_err());
    }
}

#[test]
fn listener_may_use_the_database() {
    let db = Database::open_in_memory("reentrant").unwrap();
    let inner = db.clone();
    let (tx, rx) = mpsc::channel();
    let _t = db.add_change_listener(move |c| {
        let n = inner.count().unwrap();
        tx.send((c.document_ids.clone(), n)).unwrap();
    });
    db.save(&mut MutableDocument::with_id("x")).unwrap();
    assert_eq!(rx.recv().unwrap(), (vec!["x".to_owned()], 1));
}

#[test]
fn documents_expire_on_their_own() {
    for (_dir, db) in both() {
        db.save(&mut MutableDocument::with_id("temp")).unwrap();
        db.save(&mut MutableDocument::with_id("keep")).unwrap();
        let (tx, rx) = mpsc::channel();
        let _t = db
            .add_document_change_listener("temp", move |c| tx.send(c.document_id.clone()).unwrap());
        let at = SystemTime::now() + Duration::from_millis(300);
        db.set_document_expiration("temp", Some(at)).unwrap();
        let stored = db.document_expiration("temp").unwrap().unwrap();
        let delta = stored.duration_since(at).unwrap_or_else(|e| e.duration());
        assert!(delta < Duration::from_millis(2));
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), "temp");
        assert!(db.document("temp").unwrap().is_none());
        assert!(db.document("keep").unwrap().is_some());
        assert_eq!(db.count().unwrap(), 1);
        assert!(db
            .set_document_expiration("nope", None)
            .unwrap_err()
            .is(ErrorCode::NotFound));
    }
}

#[test]
fn cleared_expiration_does_not_purge() {
    let db = Database::open_in_memory("exp").unwrap();
    db.save(&mut MutableDocument::with_id("d")).unwrap();
    let (tx, rx) = mpsc::channel();
    let _t = db.add_change_listener(move |c| tx.send(c.document_ids.clone()).unwrap());
    db.set_document_expiration("d", Some(SystemTime::now() + Duration::from_millis(200)))
        .unwrap();
    db.set_document_expiration("d", None).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(db.document("d").unwrap().is_some());
    assert!(
        rx.try_recv().is_err(),
        "setting an expiration is not a change"
    );
    assert_eq!(db.changes(0).unwrap().count(), 1);
    assert_eq!(db.document_expiration("d").unwrap(), None);
}

/// A reader that produces `len` deterministic bytes without holding them.
struct Generated {
    left: u64,
    state: u32,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left as usize);
        for b in &mut buf[..n] {
            self.state = self.state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            *b = (self.state >> 16) as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[test]
fn blobs_from_bytes_and_streams() {
    for (_dir, db) in both() {
        let mut doc = MutableDocument::with_id("profile");
        doc.set("name", "Alice");
        doc.set_blob(
            "image",
            Blob::from_bytes("image/jpeg", b"Hello, blob!\n".to_vec()),
        );
        doc.set_blob(
            "video",
            Blob::from_reader(
                "video/mp4",
                Generated {
                    left: 8 << 20,
                    state: 7,
                },
            ),
        );
        db.save(&mut doc).unwrap();

        let saved = db.document("profile").unwrap().unwrap();
        let image = saved.blob("image").unwrap();
        assert_eq!(
            image.digest().unwrap().to_string(),
            "sha1-GgXWuohWJOrFHeD9ZswSosQVmDc="
        );
        assert_eq!(image.content_type(), Some("image/jpeg"));
        assert_eq!(db.blob_content(&image).unwrap(), b"Hello, blob!\n");
        assert_eq!(
            saved.get("image").unwrap(),
            &json!({"@type": "blob", "content_type": "image/jpeg",
                    "digest": "sha1-GgXWuohWJOrFHeD9ZswSosQVmDc=", "length": 13})
        );

        let video = saved.blob("video").unwrap();
        assert_eq!(video.length(), Some(8 << 20));
        let mut streamed = db.blob_reader(&video).unwrap();
        let mut expected = Generated {
            left: 8 << 20,
            state: 7,
        };
        let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
        let mut total = 0u64;
        loop {
            let n = streamed.read(&mut a).unwrap();
            if n == 0 {
                break;
            }
            expected.read_exact(&mut b[..n]).unwrap();
            assert_eq!(a[..n], b[..n]);
            total += n as u64;
        }
        assert_eq!(total, 8 << 20);

        let unsaved = Blob::from_reader("text/plain", &b"x"[..]);
        assert!(db
            .blob_content(&unsaved)
            .unwrap_err()
            .is(ErrorCode::NotFound));
        let mut standalone = Blob::from_reader("text/plain", &b"standalone"[..]);
        db.save_blob(&mut standalone).unwrap();
        assert_eq!(db.blob_content(&standalone).unwrap(), b"standalone");
    }
}

#[test]
fn close_reopen_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let config = DatabaseConfiguration::new(dir.path());
    let db = Database::open("app", &config).unwrap();
    let mut doc = MutableDocument::with_id("kept");
    doc.set("n", 1);
    db.save(&mut doc).unwrap();
    let clone = db.clone();
    db.close().unwrap();
    assert!(clone.document("kept").unwrap_err().is(ErrorCode::NotOpen));
    db.close().unwrap();

    assert!(Database::exists("app", dir.path()));
    let db = Database::open("app", &config).unwrap();
    assert_eq!(
        db.document("kept").unwrap().unwrap().get("n"),
        Some(&json!(1))
    );
    assert_eq!(db.path().unwrap(), dir.path().join("app.ferrolite"));
    db.delete_database().unwrap();
    assert!(!Database::exists("app", dir.path()));
    assert!(Database::open("../escape", &config).is_err());
}

#[test]
fn a_foreign_file_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let db_dir = dir.path().join("junk.ferrolite");
    std::fs::create_dir_all(&db_dir).unwrap();
    std::fs::write(
        db_dir.join("data.redb"),
        b"this is not a database at all, just text\n".repeat(100),
    )
    .unwrap();
    let err = Database::open("junk", &DatabaseConfiguration::new(dir.path())).unwrap_err();
    assert!(err.is(ErrorCode::NotADatabaseFile), "{err}");
}

#[test]
fn concurrent_writers_lose_nothing() {
    let (_dir, db) = on_disk();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let mut doc = MutableDocument::with_id(format!("t{t}-{i}"));
                    doc.set("i", i);
                    db.save(&mut doc).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(db.count().unwrap(), 200);
    assert_eq!(db.last_sequence().unwrap(), 200);
    let seqs: Vec<u64> = db
        .changes(0)
        .unwrap()
        .map(|c| c.unwrap().sequence)
        .collect();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
}

#[test]
fn history_is_pruned_to_the_configured_depth() {
    let dir = tempfile::tempdir().unwrap();
    let config = DatabaseConfiguration::new(dir.path()).with_max_rev_tree_depth(5);
    let db = Database::open("deep", &config).unwrap();
    let mut doc = MutableDocument::with_id("d");
    for i in 0..12 {
        doc.set("i", i);
        db.save(&mut doc).unwrap();
    }
    assert_eq!(doc.revision_id().unwrap().generation(), 12);
    assert_eq!(
        db.document("d").unwrap().unwrap().get("i"),
        Some(&json!(11))
    );
}

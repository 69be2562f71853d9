//! `ObservedStore`: observers hear of every commit that changed something, and only those.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use ferrolite_storage::{MemoryStore, ObservedStore, StorageError, Store};
use serde_json::json;

#[test]
fn observers_hear_commits_in_order_and_can_leave() {
    let store = ObservedStore::new(Arc::new(MemoryStore::new()));
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    let id = store.observe(move |summary| {
        let mut line: Vec<String> = summary.changes.iter().map(|c| c.id.clone()).collect();
        line.extend(summary.purged.iter().map(|p| format!("-{p}")));
        sink.lock().unwrap().push(line.join(","));
    });

    common::save(&store, "a", json!({"n": 1}), false, None).unwrap();
    common::save(&store, "b", json!({"n": 2}), false, None).unwrap();
    store
        .write(&mut |txn| {
            txn.purge("a")?;
            Ok(())
        })
        .unwrap();
    // A transaction that changes nothing, and one that fails, are not reported.
    store
        .write(&mut |txn| txn.put_local("cp", Some(b"{}")))
        .unwrap();
    let failed = store.write(&mut |_| Err(StorageError::Corrupt("abandoned".into())));
    assert!(failed.is_err());
    assert_eq!(*heard.lock().unwrap(), ["a", "b", "-a"]);

    store.unobserve(id);
    common::save(&store, "c", json!({}), false, None).unwrap();
    assert_eq!(heard.lock().unwrap().len(), 3);
    assert_eq!(store.document_count().unwrap(), 2);
}

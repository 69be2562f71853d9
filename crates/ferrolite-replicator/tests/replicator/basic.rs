//! One-shot pull, push, push-and-pull and continuous replication between two databases.

use std::time::Duration;

use ferrolite_replicator::{ActivityLevel, Direction, Replicator, ReplicatorType};
use serde_json::json;

use crate::support::*;

/// Fills `db` with a few documents: one with two revisions, one deleted.
fn fill(db: &TestDb, prefix: &str) {
    db.save(&format!("{prefix}1"), json!({"name": "alpha", "n": 1}));
    db.save(&format!("{prefix}2"), json!({"name": "beta", "n": 2}));
    db.save(&format!("{prefix}2"), json!({"name": "beta", "n": 3}));
    db.save(&format!("{prefix}3"), json!({"name": "gamma", "n": 4}));
    db.delete(&format!("{prefix}3"));
    db.save_many(prefix, 25);
}

async fn one_shot(via: Via, kind: ReplicatorType) {
    let local = TestDb::new();
    let remote = TestDb::new();
    fill(&local, "local");
    fill(&remote, "remote");
    let (transport, _listener) = transport_to(&remote, via).await;
    let replicator = Replicator::new(local.store.clone(), transport, config(kind, false));
    let recorder = Recorder::attach(&replicator);
    let status = run_once(&replicator).await;
    let levels = recorder.levels();
    assert_eq!(
        levels.first(),
        Some(&ActivityLevel::Connecting),
        "{levels:?}"
    );
    assert_eq!(levels.last(), Some(&ActivityLevel::Stopped), "{levels:?}");
    assert!(
        !levels.contains(&ActivityLevel::Idle),
        "one-shot never idle: {levels:?}"
    );

    let local_docs = local.snapshot();
    let remote_docs = remote.snapshot();
    type Snapshot = std::collections::BTreeMap<String, (String, bool, Option<String>, Vec<String>)>;
    let of = |docs: &Snapshot, prefix: &str| {
        docs.iter()
            .filter(|(id, _)| id.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    if kind.pushes() {
        assert_eq!(
            of(&local_docs, "local"),
            of(&remote_docs, "local"),
            "{via:?} push"
        );
        assert_eq!(recorder.count(Direction::Push), 28);
    } else {
        assert!(of(&remote_docs, "local").is_empty());
    }
    if kind.pulls() {
        // A first pull into an empty database skips tombstones (activeOnly) only when the
        // database is empty; here it is not, so everything arrives.
        assert_eq!(
            of(&local_docs, "remote"),
            of(&remote_docs, "remote"),
            "{via:?} pull"
        );
        assert_eq!(recorder.count(Direction::Pull), 28);
    } else {
        assert!(of(&local_docs, "remote").is_empty());
    }
    if kind == ReplicatorType::PushAndPull {
        assert_eq!(local_docs, remote_docs);
    }
    assert!(status.progress.completed >= status.progress.total);
    assert_eq!(
        status.progress.document_count,
        28 * (1 + u64::from(kind == ReplicatorType::PushAndPull))
    );

    // A second run moves nothing.
    let before = (local.last_sequence(), remote.last_sequence());
    let again = Recorder::attach(&replicator);
    run_once(&replicator).await;
    assert_eq!(
        again.count(Direction::Push) + again.count(Direction::Pull),
        0
    );
    assert_eq!((local.last_sequence(), remote.last_sequence()), before);
}

#[tokio::test]
async fn one_shot_pull_over_pipe() {
    one_shot(Via::Pipe, ReplicatorType::Pull).await;
}

#[tokio::test]
async fn one_shot_push_over_pipe() {
    one_shot(Via::Pipe, ReplicatorType::Push).await;
}

#[tokio::test]
async fn one_shot_push_and_pull_over_pipe() {
    one_shot(Via::Pipe, ReplicatorType::PushAndPull).await;
}

#[tokio::test]
async fn one_shot_pull_over_websocket() {
    one_shot(Via::WebSocket, ReplicatorType::Pull).await;
}

#[tokio::test]
async fn one_shot_push_over_websocket() {
    one_shot(Via::WebSocket, ReplicatorType::Push).await;
}

#[tokio::test]
async fn one_shot_push_and_pull_over_websocket() {
    one_shot(Via::WebSocket, ReplicatorType::PushAndPull).await;
}

#[tokio::test]
async fn first_pull_into_an_empty_database_skips_tombstones() {
    let local = TestDb::new();
    let remote = TestDb::new();
    fill(&remote, "r");
    let replicator = Replicator::new(
        local.store.clone(),
        PipeTransport::new(&remote),
        config(ReplicatorType::Pull, false),
    );
    run_once(&replicator).await;
    assert!(
        local.get("r3").is_none(),
        "activeOnly skipped the tombstone"
    );
    assert_eq!(local.snapshot().len(), 27);
    assert_eq!(local.body("r2"), Some(json!({"name": "beta", "n": 3})));
    assert_eq!(
        local
            .get("r2")
            .unwrap()
            .tree
            .history(
                &remote
                    .get("r2")
                    .unwrap()
                    .tree
                    .current()
                    .unwrap()
                    .id()
                    .clone()
            )
            .len(),
        2,
        "history came along"
    );
}

#[tokio::test]
async fn edits_on_both_sides_converge_and_conflicts_are_reported() {
    let local = TestDb::new();
    let remote = TestDb::new();
    local.save("shared", json!({"v": 1}));
    let replicator = Replicator::new(
        local.store.clone(),
        PipeTransport::new(&remote),
        config(ReplicatorType::PushAndPull, false),
    );
    run_once(&replicator).await;
    assert_eq!(remote.body("shared"), Some(json!({"v": 1})));
    // Both sides edit: the pull brings a conflicting branch, reported as a conflict and
    // resolved by the default rule (equal generations: the greater revision ID wins); the
    // result descends from the remote revision and is pushed.
    let local_rev = local.save("shared", json!({"v": 2, "who": "local"}));
    let server_rev = remote.save("shared", json!({"v": 2, "who": "remote"}));
    local.save("later", json!({"x": 1}));
    let recorder = Recorder::attach(&replicator);
    run_once(&replicator).await;
    let docs = recorder.documents.lock().unwrap().clone();
    let conflict = docs
        .iter()
        .find(|d| d.direction == Direction::Pull && d.id == "shared")
        .expect("the conflicting pull is reported");
    assert!(matches!(
        conflict.error,
        Some(ferrolite_replicator::ReplicatorError::Conflict { .. })
    ));
    assert_eq!(remote.body("later"), Some(json!({"x": 1})));
    let tree = local.get("shared").unwrap().tree;
    assert!(!tree.is_conflicted());
    assert!(tree.revisions().all(|r| !r.is_conflict()));
    let winner = if local_rev.as_str() > server_rev.as_str() {
        json!({"v": 2, "who": "local"})
    } else {
        json!({"v": 2, "who": "remote"})
    };
    assert_eq!(local.body("shared"), Some(winner.clone()));
    assert_eq!(local.snapshot(), remote.snapshot(), "converged in one run");
    assert_eq!(remote.body("shared"), Some(winner));
}

#[tokio::test]
async fn continuous_replication_carries_changes_both_ways() {
    let local = TestDb::new();
    let remote = TestDb::new();
    local.save("before", json!({"n": 0}));
    let mut cfg = config(ReplicatorType::PushAndPull, true);
    cfg.checkpoint_interval = Duration::from_millis(100);
    let replicator = Replicator::new(local.store.clone(), PipeTransport::new(&remote), cfg);
    let recorder = Recorder::attach(&replicator);
    replicator.start(false);
    eventually("the first push", || remote.get("before").is_some()).await;
    eventually("idle", || {
        replicator.status().activity == ActivityLevel::Idle
    })
    .await;

    local.save("from-local", json!({"side": "local"}));
    eventually("a local save reaching the remote", || {
        remote.body("from-local") == Some(json!({"side": "local"}))
    })
    .await;
    remote.save("from-remote", json!({"side": "remote"}));
    eventually("a remote save reaching us", || {
        local.body("from-remote") == Some(json!({"side": "remote"}))
    })
    .await;
    remote.save("from-local", json!({"side": "remote edit"}));
    eventually("an update of a pushed document coming back", || {
        local.body("from-local") == Some(json!({"side": "remote edit"}))
    })
    .await;
    eventually("idle again", || {
        replicator.status().activity == ActivityLevel::Idle
    })
    .await;
    // Nothing echoes back and forth.
    let sequences = (local.last_sequence(), remote.last_sequence());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!((local.last_sequence(), remote.last_sequence()), sequences);
    assert_eq!(local.snapshot(), remote.snapshot());

    replicator.stop();
    let status = tokio::time::timeout(STEP, replicator.wait_until_stopped())
        .await
        .unwrap();
    assert!(status.error.is_none(), "{:?}", status.error);
    let levels = recorder.levels();
    assert!(
        levels.contains(&ActivityLevel::Idle) && levels.contains(&ActivityLevel::Busy),
        "{levels:?}"
    );
    assert_eq!(levels.last(), Some(&ActivityLevel::Stopped));
}

#[tokio::test]
async fn continuous_replication_over_websocket() {
    let local = TestDb::new();
    let remote = TestDb::new();
    let (transport, _listener) = transport_to(&remote, Via::WebSocket).await;
    let replicator = Replicator::new(
        local.store.clone(),
        transport,
        config(ReplicatorType::PushAndPull, true),
    );
    replicator.start(false);
    eventually("idle", || {
        replicator.status().activity == ActivityLevel::Idle
    })
    .await;
    local.save("a", json!({"n": 1}));
    remote.save("b", json!({"n": 2}));
    eventually("both documents on both sides", || {
        local.get("b").is_some() && remote.get("a").is_some()
    })
    .await;
    replicator.stop();
    let status = tokio::time::timeout(STEP, replicator.wait_until_stopped())
        .await
        .unwrap();
    assert!(status.error.is_none(), "{:?}", status.error);
}

#[tokio::test]
async fn replication_goes_on_after_idle_connections_free_their_compressors() {
    let local = TestDb::new();
    let remote = TestDb::new();
    let (transport, _listener) = transport_to(&remote, Via::WebSocket).await;
    let replicator = Replicator::new(
        local.store.clone(),
        transport,
        config(ReplicatorType::PushAndPull, true),
    );
    replicator.start(false);
    let body = |round: u32| json!({"round": round, "text": "compressible ".repeat(40)});
    for round in 0..3 {
        local.save(&format!("local-{round}"), body(round));
        remote.save(&format!("remote-{round}"), body(round));
        eventually("both documents on both sides", || {
            local.body(&format!("remote-{round}")) == Some(body(round))
                && remote.body(&format!("local-{round}")) == Some(body(round))
        })
        .await;
        // Quiet for longer than the idle time: both sides free their compressors, and the
        // next revisions start fresh ones on the same deflate streams.
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    assert_eq!(local.snapshot(), remote.snapshot());
    replicator.stop();
    let status = tokio::time::timeout(STEP, replicator.wait_until_stopped())
        .await
        .unwrap();
    assert!(status.error.is_none(), "{:?}", status.error);
}

#[tokio::test]
async fn a_panicking_listener_does_not_stop_the_others() {
    let local = TestDb::new();
    let remote = TestDb::new();
    remote.save("doc", json!({"n": 1}));
    let replicator = Replicator::new(
        local.store.clone(),
        PipeTransport::new(&remote),
        config(ReplicatorType::Pull, false),
    );
    let token = replicator.add_change_listener(|_| panic!("listener bug"));
    let recorder = Recorder::attach(&replicator);
    run_once(&replicator).await;
    assert_eq!(recorder.levels().last(), Some(&ActivityLevel::Stopped));
    replicator.remove_change_listener(token);
    assert_eq!(local.body("doc"), Some(json!({"n": 1})));
}

//! `Replicator::sync_once`: the background-refresh entry point.

use std::sync::Arc;
use std::time::Duration;

use ferrolite_replicator::{
    ActivityLevel, Replicator, ReplicatorError, ReplicatorType, SyncOutcome,
};
use ferrolite_transport::UrlEndpoint;
use serde_json::json;

use crate::support::*;

fn deadline(after: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + after
}

#[tokio::test]
async fn no_data_then_new_data_with_the_right_ids() {
    let local = TestDb::new();
    let remote = TestDb::new();
    remote.save("profile", json!({"name": "Alice"}));
    let mut cfg = config(ReplicatorType::Pull, true); // sync_once ignores `continuous`
    cfg.remote_id = "ws://example/userprofile".into();
    let replicator = Replicator::new(local.store.clone(), PipeTransport::new(&remote), cfg);

    match replicator.sync_once(deadline(STEP)).await {
        SyncOutcome::NewData {
            count,
            document_ids,
        } => {
            assert_eq!((count, document_ids), (1, vec!["profile".to_owned()]));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(replicator.status().activity, ActivityLevel::Stopped);
    assert!(matches!(
        replicator.sync_once(deadline(STEP)).await,
        SyncOutcome::NoData
    ));

    remote.save("profile", json!({"name": "Alice", "age": 31}));
    remote.save("settings", json!({"theme": "dark"}));
    match replicator.sync_once(deadline(STEP)).await {
        SyncOutcome::NewData {
            count,
            mut document_ids,
        } => {
            document_ids.sort();
            assert_eq!(count, 2);
            assert_eq!(
                document_ids,
                vec!["profile".to_owned(), "settings".to_owned()]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        local.body("profile"),
        Some(json!({"name": "Alice", "age": 31}))
    );
    assert!(matches!(
        replicator.sync_once(deadline(STEP)).await,
        SyncOutcome::NoData
    ));
}

#[tokio::test]
async fn fails_when_the_peer_is_down() {
    let local = TestDb::new();
    // A port nobody listens on: bind, note the port, close.
    let port = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let endpoint = UrlEndpoint::parse(&format!("ws://127.0.0.1:{port}/db")).unwrap();
    let mut cfg = config(ReplicatorType::Pull, false);
    cfg.max_attempts = 1;
    let replicator = Replicator::new(local.store.clone(), Arc::new(endpoint), cfg);
    match replicator.sync_once(deadline(STEP)).await {
        SyncOutcome::Failed(err) => {
            assert!(err.is_transient(), "{err}");
            assert_eq!(err.domain_and_code().0, "POSIX", "{err}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn returns_by_its_deadline_when_the_peer_stalls() {
    let local = TestDb::new();
    let transport = Arc::new(StalledTransport {
        held: Default::default(),
    });
    let replicator = Replicator::new(
        local.store.clone(),
        transport,
        config(ReplicatorType::Pull, false),
    );
    let started = tokio::time::Instant::now();
    let outcome = replicator
        .sync_once(started + Duration::from_millis(300))
        .await;
    let took = started.elapsed();
    assert!(
        took <= Duration::from_millis(350),
        "returned after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(250),
        "returned after {took:?}"
    );
    assert!(
        matches!(
            outcome,
            SyncOutcome::Failed(ReplicatorError::DeadlineExceeded)
        ),
        "{outcome:?}"
    );
    // The stop completes in the background.
    let status = tokio::time::timeout(STEP, replicator.wait_until_stopped())
        .await
        .unwrap();
    assert_eq!(status.activity, ActivityLevel::Stopped);
}

#[tokio::test]
async fn refuses_to_run_twice_at_once() {
    let local = TestDb::new();
    let remote = TestDb::new();
    let replicator = Replicator::new(
        local.store.clone(),
        PipeTransport::new(&remote),
        config(ReplicatorType::Pull, true),
    );
    replicator.start(false);
    assert!(matches!(
        replicator.sync_once(deadline(STEP)).await,
        SyncOutcome::Failed(ReplicatorError::AlreadyRunning)
    ));
    replicator.stop();
    replicator.wait_until_stopped().await;
}

//! Large feeds, connections that break, checkpoint resets, retries with backoff.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolite_replicator::{ActivityLevel, Direction, Replicator, ReplicatorType};
use serde_json::json;

use crate::support::*;

async fn large_pull(count: usize) {
    let local = TestDb::new();
    let remote = TestDb::new();
    remote.save_many("doc", count);
    let replicator = Replicator::new(
        local.store.clone(),
        PipeTransport::new(&remote),
        config(ReplicatorType::Pull, false),
    );
    let started = Instant::now();
    let status = run_once(&replicator).await;
    eprintln!("pulled {count} documents in {:?}", started.elapsed());
    assert_eq!(status.progress.document_count, count as u64);
    assert_eq!(status.progress.completed, status.progress.total);
    assert_eq!(local.snapshot(), remote.snapshot());
}

/// 2,000 documents in one one-shot pull (about a second in a debug build).
#[tokio::test]
async fn two_thousand_document_pull_converges() {
    large_pull(2_000).await;
}

/// 10,000 documents, identical bodies and revision IDs on both sides (a few seconds in debug).
#[tokio::test]
async fn ten_thousand_document_pull_converges() {
    large_pull(10_000).await;
}

#[tokio::test]
async fn a_pull_broken_midway_resumes_without_refetching() {
    let local = TestDb::new();
    let remote = TestDb::new();
    remote.save_many("doc", 1_000);
    let mut cfg = config(ReplicatorType::Pull, false);
    cfg.max_attempts = 1; // no retry: the second run below is the resumption
    cfg.checkpoint_interval = Duration::from_millis(20);
    let transport = Arc::new(KillingTransport {
        inner: PipeTransport::new(&remote),
        kill_after: 400,
        connects: AtomicUsize::new(0),
    });
    let replicator = Replicator::new(local.store.clone(), transport.clone(), cfg);
    let first = Recorder::attach(&replicator);
    replicator.start(false);
    let status = tokio::time::timeout(STEP, replicator.wait_until_stopped())
        .await
        .unwrap();
    let error = status.error.expect("the broken connection is reported");
    assert!(error.is_transient(), "{error}");
    let got_first = first.count(Direction::Pull);
    assert!(
        got_first > 0 && got_first < 1_000,
        "{got_first} pulled before the break"
    );
    assert_eq!(
        local.snapshot().len(),
        got_first,
        "what arrived was committed"
    );

    let second = Recorder::attach(&replicator);
    run_once(&replicator).await;
    let got_second = second.count(Direction::Pull);
    assert_eq!(
        got_second,
        1_000 - got_first,
        "stored revisions are not fetched again"
    );
    assert_eq!(local.snapshot(), remote.snapshot());
    assert_eq!(transport.connects.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn reset_checkpoint_compares_everything_again_without_duplicates() {
    let local = TestDb::new();
    let remote = TestDb::new();
    remote.save_many("r", 50);
    local.save_many("l", 50);
    let replicator = Replicator::new(
        local.store.clone(),
        PipeTransport::new(&remote),
        config(ReplicatorType::PushAndPull, false),
    );
    run_once(&replicator).await;
    let sequences = (local.last_sequence(), remote.last_sequence());
    let snapshot = local.snapshot();

    // Without reset: nothing is even proposed.
    let plain = Recorder::attach(&replicator);
    run_once(&replicator).await;
    assert_eq!(plain.documents.lock().unwrap().len(), 0);
    assert_eq!(replicator.status().progress.total, 0);

    // With reset: the whole remote feed is compared again (every row answered 0) and the
    // local feed read again from 0 (documents whose current revision is marked as the
    // remote's are not even proposed, as in LiteCore); nothing is transferred.
    let reset = Recorder::attach(&replicator);
    replicator.start(true);
    let status = tokio::time::timeout(STEP, replicator.wait_until_stopped())
        .await
        .unwrap();
    assert!(status.error.is_none(), "{:?}", status.error);
    assert_eq!(reset.documents.lock().unwrap().len(), 0);
    assert_eq!(
        (local.last_sequence(), remote.last_sequence()),
        sequences,
        "no new revision"
    );
    assert_eq!(local.snapshot(), snapshot);
    assert_eq!(local.snapshot(), remote.snapshot());
}

#[tokio::test(start_paused = true)]
async fn transient_failures_retry_with_backoff_then_stop() {
    let local = TestDb::new();
    let transport = Arc::new(RefusingTransport {
        attempts: AtomicUsize::new(0),
    });
    let mut cfg = config(ReplicatorType::Pull, false);
    cfg.max_attempts = 4;
    cfg.max_attempt_wait = Duration::from_secs(5);
    let replicator = Replicator::new(local.store.clone(), transport.clone(), cfg);
    let recorder = Recorder::attach(&replicator);
    let started = tokio::time::Instant::now();
    replicator.start(false);
    let status = replicator.wait_until_stopped().await;
    // Waits of 2, 4, then 5 (capped) seconds between the 4 attempts.
    assert_eq!(started.elapsed().as_secs(), 11);
    assert_eq!(transport.attempts.load(Ordering::SeqCst), 4);
    let error = status.error.expect("stopped with the error");
    assert_eq!(error.domain_and_code().0, "POSIX");
    assert_eq!(
        recorder.levels(),
        vec![
            ActivityLevel::Connecting,
            ActivityLevel::Offline,
            ActivityLevel::Connecting,
            ActivityLevel::Offline,
            ActivityLevel::Connecting,
            ActivityLevel::Offline,
            ActivityLevel::Connecting,
            ActivityLevel::Stopped,
        ]
    );
    let statuses = recorder.statuses.lock().unwrap().clone();
    assert!(statuses
        .iter()
        .filter(|s| s.activity == ActivityLevel::Offline)
        .all(|s| s.error.is_some()));
    assert!(statuses
        .iter()
        .filter(|s| matches!(s.activity, ActivityLevel::Connecting | ActivityLevel::Busy))
        .all(|s| s.error.is_none()));
}

#[tokio::test(start_paused = true)]
async fn stop_interrupts_the_backoff() {
    let local = TestDb::new();
    let transport = Arc::new(RefusingTransport {
        attempts: AtomicUsize::new(0),
    });
    let replicator = Replicator::new(
        local.store.clone(),
        transport.clone(),
        config(ReplicatorType::Pull, true),
    );
    replicator.start(false);
    eventually("offline", || {
        replicator.status().activity == ActivityLevel::Offline
    })
    .await;
    replicator.stop();
    let status = replicator.wait_until_stopped().await;
    assert!(status.error.is_none());
    assert_eq!(transport.attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_non_transient_remote_error_stops_at_once() {
    let local = TestDb::new();
    let remote = TestDb::new();
    local.save("doc", json!({"n": 1}));
    let transport = Arc::new(PipeTransport {
        remote: remote.store.clone(),
        options: ferrolite_replicator::PassiveOptions::read_only(true),
        connects: AtomicUsize::new(0),
    });
    let replicator = Replicator::new(
        local.store.clone(),
        transport.clone(),
        config(ReplicatorType::Push, false),
    );
    replicator.start(false);
    let status = tokio::time::timeout(STEP, replicator.wait_until_stopped())
        .await
        .unwrap();
    let error = status.error.expect("refused");
    assert_eq!(error.domain_and_code(), ("WebSocket", 403));
    assert_eq!(transport.connects.load(Ordering::SeqCst), 1);
    assert!(remote.get("doc").is_none());
}

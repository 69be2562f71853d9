//! Hostile peers on a [`UrlEndpointListener`]: the same attacks as on the gateway's
//! `/_blipsync` (garbage and mutated frames, decompression bombs, malformed properties and
//! varints, lying revision histories, blobs that do not match their digest, floods of
//! requests, a client that never reads). Each must get an error reply or a close with the
//! right code, keep the process's resident memory within 100 MiB of where it was, store
//! nothing it should not, and leave the listener serving a well-behaved client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferrolite::{
    Authenticator, Blob, Database, DatabaseConfiguration, Endpoint, MutableDocument,
    ReplicatorConfiguration, ReplicatorType, SyncOutcome, UrlEndpointListener,
    UrlEndpointListenerConfiguration,
};
use ferrolite_testkit::hostile::attacks::{self, BoxFuture, HealthCheck, Target};
use ferrolite_testkit::hostile::Prng;
use serde_json::json;

const USER: &str = "alice";
const PASSWORD: &str = "secret";

struct Served {
    listener: UrlEndpointListener,
    target: Target,
    _dir: Option<tempfile::TempDir>,
}

/// Push-and-pull once with a fresh client; the marker document must reach the listener's
/// database and everything it had must arrive.
fn health_check(url: String, server: Database) -> HealthCheck {
    Arc::new(move |marker: String| {
        let url = url.clone();
        let server = server.clone();
        Box::pin(async move {
            let local = Database::open_in_memory(&marker).unwrap();
            local
                .save(MutableDocument::with_id(&marker).set("healthy", true))
                .unwrap();
            let on_server = server.count().unwrap();
            let config = ReplicatorConfiguration::new(&local, Endpoint::url(&url).unwrap())
                .replicator_type(ReplicatorType::PushAndPull)
                .authenticator(Authenticator::basic(USER, PASSWORD));
            let outcome = ferrolite::sync_once_async(config, Duration::from_secs(120)).await;
            assert!(
                !matches!(outcome, SyncOutcome::Failed(_)),
                "{marker}: a normal client failed: {outcome:?}"
            );
            assert!(
                server.document(&marker).unwrap().is_some(),
                "{marker}: the pushed document is not on the server"
            );
            let pulled = local.count().unwrap();
            assert!(
                pulled > on_server,
                "{marker}: pulled {pulled} documents, the server had {on_server}"
            );
        }) as BoxFuture<()>
    })
}

/// A listener serving `db` (in memory, or on disk in a temporary directory), with Basic
/// authentication, warmed up by one normal replication.
async fn serve(on_disk: bool, seed: impl FnOnce(&Database)) -> Served {
    let dir = on_disk.then(|| tempfile::tempdir().unwrap());
    let db = match &dir {
        Some(dir) => Database::open("db", &DatabaseConfiguration::new(dir.path())).unwrap(),
        None => Database::open_in_memory("db").unwrap(),
    };
    seed(&db);
    let listener = UrlEndpointListener::start(
        UrlEndpointListenerConfiguration::new(vec![db.clone()])
            .network_interface("127.0.0.1")
            .authenticator(|user, password| user == USER && password == PASSWORD),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", listener.port()).parse().unwrap();
    let documents = db.clone();
    let blobs = db.clone();
    let target = Target {
        addr,
        database: "db".to_owned(),
        credentials: Some((USER.to_owned(), PASSWORD.to_owned())),
        check_healthy: health_check(listener.url("db"), db),
        has_document: Arc::new(move |id| documents.document(id).unwrap().is_some()),
        blob: Arc::new(move |digest, length| {
            let dict = json!({"@type": "blob", "digest": digest, "length": length});
            let blob = Blob::from_dict(dict.as_object().unwrap()).unwrap();
            blobs.blob_content(&blob).ok()
        }),
        storage_dir: dir.as_ref().map(|d| PathBuf::from(d.path())),
    };
    target.healthy("warm-up").await;
    Served {
        listener,
        target,
        _dir: dir,
    }
}

impl Served {
    fn stop(self) {
        self.listener.stop();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn random_bytes_are_refused_with_a_close() {
    let _serial = attacks::exclusive().await;
    let served = serve(false, |_| {}).await;
    let report = attacks::random_bytes(&served.target, 0x5eed_0101, 256).await;
    eprintln!("{report}");
    assert!(report.closes.values().sum::<usize>() > 100, "{report}");
    served.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn mutated_litecore_frames_are_refused_with_a_close() {
    let _serial = attacks::exclusive().await;
    let served = serve(false, |_| {}).await;
    let report = attacks::mutated_transcripts(&served.target, 0x5eed_0102, 320).await;
    eprintln!("{report}");
    assert!(report.closes.values().sum::<usize>() > 100, "{report}");
    served.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn decompression_bombs_are_refused_at_the_limits() {
    let _serial = attacks::exclusive().await;
    let served = serve(false, |_| {}).await;
    eprintln!("{}", attacks::decompression_bombs(&served.target).await);
    served.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_properties_and_varints_are_refused() {
    let _serial = attacks::exclusive().await;
    let served = serve(false, |_| {}).await;
    eprintln!("{}", attacks::malformed_frames(&served.target).await);
    served.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn lying_histories_are_refused_and_nothing_is_stored() {
    let _serial = attacks::exclusive().await;
    let served = serve(false, |_| {}).await;
    eprintln!("{}", attacks::lying_histories(&served.target).await);
    served.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn blobs_not_matching_their_digest_are_refused() {
    let _serial = attacks::exclusive().await;
    let served = serve(true, |_| {}).await;
    eprintln!("{}", attacks::mismatched_blobs(&served.target).await);
    served.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_thousand_requests_in_flight_stay_bounded() {
    let _serial = attacks::exclusive().await;
    let served = serve(false, |_| {}).await;
    eprintln!("{}", attacks::request_flood(&served.target, 100_000).await);
    served.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_for_large_replies_never_read_stay_bounded() {
    let _serial = attacks::exclusive().await;
    let served = serve(false, |_| {}).await;
    eprintln!("{}", attacks::amplified_flood(&served.target, 1_000).await);
    served.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_thousand_incomplete_requests_are_refused() {
    let _serial = attacks::exclusive().await;
    let served = serve(false, |_| {}).await;
    eprintln!(
        "{}",
        attacks::incomplete_flood(&served.target, 100_000).await
    );
    served.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_does_not_hold_the_listener() {
    let _serial = attacks::exclusive().await;
    let mut digest = String::new();
    let served = serve(false, |db| {
        let mut rng = Prng::new(7);
        let filler: String = (0..1000)
            .map(|_| char::from(b'a' + (rng.below(26) as u8)))
            .collect();
        db.in_batch(|batch| {
            for i in 0..2_000 {
                batch.save(
                    MutableDocument::with_id(format!("bulk-{i:05}"))
                        .set("n", i)
                        .set("filler", filler.as_str()),
                )?;
            }
            Ok(())
        })
        .unwrap();
        let mut blob = Blob::from_bytes("application/octet-stream", rng.bytes(1 << 20));
        db.save_blob(&mut blob).unwrap();
        digest = blob.digest().unwrap().to_string();
        db.save(MutableDocument::with_id("big-blob").set_blob("data", blob))
            .unwrap();
    })
    .await;
    eprintln!(
        "{}",
        attacks::never_reader(&served.target, ("big-blob", &digest), 2_000).await
    );
    served.stop();
}

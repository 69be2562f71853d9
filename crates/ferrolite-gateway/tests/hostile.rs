//! Hostile peers on the gateway's `/_blipsync`: garbage and mutated frames, decompression
//! bombs, malformed properties and varints, lying revision histories, blobs that do not
//! match their digest, floods of requests and a client that never reads. Each attack must
//! get an error reply or a close with the right code, keep the gateway's resident memory
//! within 100 MiB of where it was, store nothing it should not, and leave the gateway
//! serving a well-behaved client (which replicates after every attack, and during the
//! floods). The attacks themselves are `ferrolite_testkit::hostile::attacks`, shared with
//! the facade's `UrlEndpointListener` tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferrolite::{
    Authenticator, Blob, Database, Endpoint, MutableDocument, ReplicatorConfiguration,
    ReplicatorType, SyncOutcome,
};
use ferrolite_gateway::{Gateway, GatewayConfig, Storage};
use ferrolite_testkit::hostile::attacks::{self, BoxFuture, HealthCheck, Target};
use ferrolite_testkit::hostile::Prng;
use serde_json::json;

const USER: &str = "alice";
const PASSWORD: &str = "secret";

async fn start(storage: Storage) -> Gateway {
    let config = GatewayConfig::from_json(
        &json!({"interface": "127.0.0.1:0", "adminInterface": "127.0.0.1:0",
            "databases": {"db": {"users": {USER: {"password": PASSWORD, "admin_channels": ["*"]}}}}})
        .to_string(),
    )
    .unwrap();
    Gateway::start(&config, storage).await.unwrap()
}

/// Push-and-pull once with a fresh client; the marker document must reach the gateway and
/// everything the gateway had must arrive.
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

fn target(g: &Gateway, storage_dir: Option<PathBuf>) -> Target {
    let server = g.database("db").unwrap();
    let documents = server.clone();
    let blobs = server.clone();
    Target {
        addr: g.public_addr(),
        database: "db".to_owned(),
        credentials: Some((USER.to_owned(), PASSWORD.to_owned())),
        check_healthy: health_check(format!("ws://{}/db", g.public_addr()), server),
        has_document: Arc::new(move |id| documents.document(id).unwrap().is_some()),
        blob: Arc::new(move |digest, length| {
            let dict = json!({"@type": "blob", "digest": digest, "length": length});
            let blob = Blob::from_dict(dict.as_object().unwrap()).unwrap();
            blobs.blob_content(&blob).ok()
        }),
        storage_dir,
    }
}

/// A gateway in memory, warmed up by one normal replication.
async fn in_memory() -> (Gateway, Target) {
    let g = start(Storage::InMemory).await;
    let target = target(&g, None);
    target.healthy("warm-up").await;
    (g, target)
}

#[tokio::test(flavor = "multi_thread")]
async fn random_bytes_are_refused_with_a_close() {
    let _serial = attacks::exclusive().await;
    let (g, target) = in_memory().await;
    let report = attacks::random_bytes(&target, 0x5eed_0001, 256).await;
    eprintln!("{report}");
    assert!(report.closes.values().sum::<usize>() > 100, "{report}");
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mutated_litecore_frames_are_refused_with_a_close() {
    let _serial = attacks::exclusive().await;
    let (g, target) = in_memory().await;
    let report = attacks::mutated_transcripts(&target, 0x5eed_0002, 320).await;
    eprintln!("{report}");
    assert!(report.closes.values().sum::<usize>() > 100, "{report}");
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn decompression_bombs_are_refused_at_the_limits() {
    let _serial = attacks::exclusive().await;
    let (g, target) = in_memory().await;
    eprintln!("{}", attacks::decompression_bombs(&target).await);
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_properties_and_varints_are_refused() {
    let _serial = attacks::exclusive().await;
    let (g, target) = in_memory().await;
    eprintln!("{}", attacks::malformed_frames(&target).await);
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lying_histories_are_refused_and_nothing_is_stored() {
    let _serial = attacks::exclusive().await;
    let (g, target) = in_memory().await;
    eprintln!("{}", attacks::lying_histories(&target).await);
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn blobs_not_matching_their_digest_are_refused() {
    let _serial = attacks::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let g = start(Storage::Directory(dir.path().to_owned())).await;
    let target = target(&g, Some(dir.path().to_owned()));
    target.healthy("warm-up").await;
    eprintln!("{}", attacks::mismatched_blobs(&target).await);
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_thousand_requests_in_flight_stay_bounded() {
    let _serial = attacks::exclusive().await;
    let (g, target) = in_memory().await;
    eprintln!("{}", attacks::request_flood(&target, 100_000).await);
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_for_large_replies_never_read_stay_bounded() {
    let _serial = attacks::exclusive().await;
    let (g, target) = in_memory().await;
    eprintln!("{}", attacks::amplified_flood(&target, 1_000).await);
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_thousand_incomplete_requests_are_refused() {
    let _serial = attacks::exclusive().await;
    let (g, target) = in_memory().await;
    eprintln!("{}", attacks::incomplete_flood(&target, 100_000).await);
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_does_not_hold_the_gateway() {
    let _serial = attacks::exclusive().await;
    let g = start(Storage::InMemory).await;
    let server = g.database("db").unwrap();
    let mut rng = Prng::new(7);
    let filler: String = (0..1000)
        .map(|_| char::from(b'a' + (rng.below(26) as u8)))
        .collect();
    server
        .in_batch(|batch| {
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
    server.save_blob(&mut blob).unwrap();
    let digest = blob.digest().unwrap().to_string();
    server
        .save(MutableDocument::with_id("big-blob").set_blob("data", blob))
        .unwrap();
    let target = target(&g, None);
    target.healthy("warm-up").await;
    eprintln!(
        "{}",
        attacks::never_reader(&target, ("big-blob", &digest), 2_000).await
    );
    g.shutdown().await;
}

//! The background-refresh story of the user-profile tutorial, in one process: a "server"
//! database served over WebSocket by a `UrlEndpointListener` (standing in for Sync
//! Gateway), and a "phone" database that, each time the OS wakes the app, runs one one-shot
//! pull with a 30-second budget and tells the OS "new data", "no data" or "failed".
//!
//! ```text
//! cargo run -p ferrolite --example background_refresh
//! ```
//!
//! Both databases live in a temporary directory that is removed at the end.

use std::time::{Duration, Instant};

use ferrolite::{
    Authenticator, Blob, Database, DatabaseConfiguration, Endpoint, MutableDocument,
    ReplicatorConfiguration, ReplicatorType, SyncOutcome, UrlEndpointListener,
    UrlEndpointListenerConfiguration,
};

/// What iOS gives an app woken for a background fetch.
const BACKGROUND_BUDGET: Duration = Duration::from_secs(30);

const PROFILE_ID: &str = "user::demo@example.com";

/// The user's picture: a 1×1 PNG (as in `examples/user_profile.rs`).
const PROFILE_IMAGE: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90, 0x77, 0x53,
    0xde, 0x00, 0x00, 0x00, 0x0c, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xdf, 0xc0, 0x00,
    0x00, 0x04, 0x01, 0x01, 0x80, 0xc5, 0x2a, 0x18, 0x5d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e,
    0x44, 0xae, 0x42, 0x60, 0x82,
];

/// The three answers of `performFetchWithCompletionHandler` (`UIBackgroundFetchResult`).
#[derive(Debug)]
enum BackgroundFetchResult {
    NewData,
    NoData,
    Failed,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;

    // The server side: the user's profile, served on 127.0.0.1 to authenticated users.
    let server = Database::open(
        "userprofile",
        &DatabaseConfiguration::new(dir.path().join("server")),
    )?;
    save_profile(&server, "1 Old Street", "University of Example")?;
    let listener = UrlEndpointListener::start(
        UrlEndpointListenerConfiguration::new(vec![server.clone()])
            .network_interface("127.0.0.1")
            .authenticator(|user, password| user == "demo@example.com" && password == "password"),
    )?;
    let url = listener.url("userprofile");
    println!("server: {url}");

    // The phone: its own database, and the configuration of the background pull.
    let phone = Database::open(
        "userprofile",
        &DatabaseConfiguration::new(dir.path().join("phone")),
    )?;
    let token = phone.add_change_listener(|change| {
        println!("  phone database changed: {:?}", change.document_ids);
    });
    let config = ReplicatorConfiguration::new(&phone, Endpoint::url(&url)?)
        .replicator_type(ReplicatorType::Pull)
        .authenticator(Authenticator::basic("demo@example.com", "password"))
        // In the background there is no time for retries: the OS wakes the app again later.
        .max_attempts(1);

    println!("\n1. first background fetch");
    refresh(&config, &phone);

    println!("\n2. the profile is edited on the server, then a background fetch");
    save_profile(
        &server,
        "101 Main Street",
        "British Institute in Paris, University of London",
    )?;
    refresh(&config, &phone);

    println!("\n3. another background fetch: nothing changed");
    refresh(&config, &phone);

    println!("\n4. the server goes away, then a background fetch");
    listener.stop();
    refresh(&config, &phone);

    phone.remove_change_listener(token);
    Ok(())
}

/// Saves the profile document of the tutorial on the server, with the user's picture as a
/// blob (`"image"`): the phone fetches its bytes with `getAttachment` when it pulls.
fn save_profile(server: &Database, address: &str, university: &str) -> ferrolite::Result<()> {
    let mut profile = match server.document(PROFILE_ID)? {
        Some(existing) => existing.to_mutable(),
        None => MutableDocument::with_id(PROFILE_ID),
    };
    profile
        .set("type", "user")
        .set("name", "Demo User")
        .set("email", "demo@example.com")
        .set("address", address)
        .set("university", university)
        .set_blob("image", Blob::from_bytes("image/png", PROFILE_IMAGE));
    server.save(&mut profile)
}

/// One background fetch: a one-shot pull within the budget, answered to the "OS".
fn refresh(config: &ReplicatorConfiguration, phone: &Database) -> BackgroundFetchResult {
    let started = Instant::now();
    let outcome = ferrolite::sync_once(config.clone(), BACKGROUND_BUDGET);
    let elapsed = started.elapsed();
    let result = match outcome {
        SyncOutcome::NewData {
            count,
            document_ids,
        } => {
            println!("  new data: {count} document(s) {document_ids:?}");
            if let Ok(Some(profile)) = phone.document(PROFILE_ID) {
                let json = serde_json::to_string(profile.properties()).unwrap_or_default();
                println!("  profile on the phone: {json}");
                if let Some(image) = profile.blob("image") {
                    let bytes = phone.blob_content(&image).map(|b| b.len()).unwrap_or(0);
                    println!("  profile image on the phone: {bytes} bytes");
                }
            }
            BackgroundFetchResult::NewData
        }
        SyncOutcome::NoData => {
            println!("  no data");
            BackgroundFetchResult::NoData
        }
        SyncOutcome::Failed(error) => {
            let (domain, code) = error.domain_and_code();
            println!("  failed: {error} ({domain} error {code})");
            BackgroundFetchResult::Failed
        }
    };
    println!(
        "  -> completionHandler(.{result:?}) after {} ms",
        elapsed.as_millis()
    );
    result
}

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
    Authenticator, Database, DatabaseConfiguration, Endpoint, MutableDocument,
    ReplicatorConfiguration, ReplicatorType, SyncOutcome, UrlEndpointListener,
    UrlEndpointListenerConfiguration,
};

/// What iOS gives an app woken for a background fetch.
const BACKGROUND_BUDGET: Duration = Duration::from_secs(30);

const PROFILE_ID: &str = "user::demo@example.com";

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

/// Saves the profile document of the tutorial on the server.
///
/// The tutorial's profile also holds the user's picture as a blob (`"image"`, see
/// `examples/user_profile.rs`). The replicator does not transfer blob content yet
/// (`getAttachment` is not implemented), so the picture is left out of the replicated
/// document here; it joins the profile once blobs replicate.
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
        .set("university", university);
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

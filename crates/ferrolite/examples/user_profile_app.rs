//! The user-profile app of the background-refresh tutorial, against a gateway: it logs in,
//! edits the user's profile, shows the profile live (a document change listener prints it
//! whenever it changes, whoever changed it), then goes to the background and refreshes now
//! and then.
//!
//! ```text
//! cargo run -p ferrolite --example user_profile_app -- <url> <user> <password> [<address>] [<refreshes>]
//! ```
//!
//! `<url>` is the gateway's database, e.g. `ws://127.0.0.1:4984/db` (see the tutorial for a
//! gateway and a user to try it with). The app keeps the user's database in
//! `ferrolite-data/profile-<user>.ferrolite`, sets the profile's address to `<address>`
//! (default: "101 Main Street") and runs `<refreshes>` background refreshes (default 3), ten
//! seconds apart: change the profile on the server meanwhile (the tutorial's `curl` PUT) and
//! the live view prints it.
//!
//! 1. Log in: a one-shot pull with the user's credentials; a refused login ends the app.
//! 2. In the foreground: a continuous push-and-pull replicator, the profile edited and saved
//!    locally, and the replicator left running until the edit reached the gateway.
//! 3. In the background: the replicator stopped; every ten seconds the OS "wakes" the app,
//!    which runs `ferrolite::sync_once` (pull, 30-second budget, no retry) and answers
//!    "new data", "no data" or "failed".

use std::time::{Duration, Instant};

use ferrolite::{
    ActivityLevel, Authenticator, Blob, Database, DatabaseConfiguration, Endpoint, MutableDocument,
    Replicator, ReplicatorConfiguration, ReplicatorType, SyncOutcome,
};

/// What iOS gives an app woken for a background fetch.
const BACKGROUND_BUDGET: Duration = Duration::from_secs(30);
/// Time between two background refreshes in this example.
const REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// How long the foreground replicator may take to push the edit.
const PUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// The user's picture: a 1×1 PNG (as in `examples/user_profile.rs`).
const PROFILE_IMAGE: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90, 0x77, 0x53,
    0xde, 0x00, 0x00, 0x00, 0x0c, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xdf, 0xc0, 0x00,
    0x00, 0x04, 0x01, 0x01, 0x80, 0xc5, 0x2a, 0x18, 0x5d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e,
    0x44, 0xae, 0x42, 0x60, 0x82,
];

const USAGE: &str = "usage: user_profile_app <url> <user> <password> [<address>] [<refreshes>]";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, user, password, rest @ ..] = args.as_slice() else {
        return Err(USAGE.into());
    };
    let address = rest.first().map_or("101 Main Street", String::as_str);
    let refreshes: u32 = match rest.get(1) {
        Some(n) => n.parse().map_err(|_| USAGE)?,
        None => 3,
    };

    // One database per user, as the tutorial's app keeps.
    let db = Database::open(
        &format!("profile-{}", user.replace(['/', '\\'], "_")),
        &DatabaseConfiguration::new("ferrolite-data"),
    )?;
    let profile_id = format!("user::{user}");
    let config = ReplicatorConfiguration::new(&db, Endpoint::url(url)?)
        .authenticator(Authenticator::basic(user, password));

    // The live view: whenever the profile changes (an edit here, or a change pulled from
    // the gateway), print it.
    let view = db.clone();
    let view_id = profile_id.clone();
    let live = db.add_document_change_listener(&profile_id, move |_| {
        show_profile(&view, &view_id);
    });

    println!("1. logging in to {url} as {user}");
    let login = config
        .clone()
        .replicator_type(ReplicatorType::Pull)
        .max_attempts(1);
    match ferrolite::sync_once(login, BACKGROUND_BUDGET) {
        SyncOutcome::Failed(error) => {
            db.remove_change_listener(live);
            return Err(format!("login failed: {error}").into());
        }
        SyncOutcome::NewData { document_ids, .. } => {
            println!("   logged in; received {document_ids:?}");
        }
        SyncOutcome::NoData => println!("   logged in; nothing new"),
    }

    println!("\n2. foreground: live sync, and the profile edited");
    let replicator = Replicator::new(config.clone().continuous(true))?;
    replicator.start();
    edit_profile(&db, &profile_id, user, address)?;
    wait_until_pushed(&replicator, &profile_id)?;
    replicator.stop();
    let _ = replicator.wait_until_stopped(Duration::from_secs(10));
    println!("   the edit reached the gateway; the app goes to the background");

    let background = config
        .replicator_type(ReplicatorType::Pull)
        // No time for retries in the background: the OS wakes the app again later.
        .max_attempts(1);
    for n in 1..=refreshes {
        std::thread::sleep(REFRESH_INTERVAL);
        println!("\n3.{n} background refresh");
        let started = Instant::now();
        let answer = match ferrolite::sync_once(background.clone(), BACKGROUND_BUDGET) {
            SyncOutcome::NewData { document_ids, .. } => {
                println!("   new data: {document_ids:?}");
                "newData"
            }
            SyncOutcome::NoData => "noData",
            SyncOutcome::Failed(error) => {
                let (domain, code) = error.domain_and_code();
                println!("   failed: {error} ({domain} {code})");
                "failed"
            }
        };
        println!(
            "   -> completionHandler(.{answer}) after {} ms",
            started.elapsed().as_millis()
        );
    }

    db.remove_change_listener(live);
    db.close()?;
    Ok(())
}

/// The profile as the app's profile screen would show it.
fn show_profile(db: &Database, id: &str) {
    match db.document(id) {
        Ok(Some(profile)) => {
            let text = serde_json::to_string(profile.properties()).unwrap_or_default();
            println!("   [profile {}] {text}", profile.revision_id());
        }
        Ok(None) => println!("   [profile] none"),
        Err(error) => println!("   [profile] cannot be read: {error}"),
    }
}

/// The user's edit: the tutorial's fields, the new address, and the picture if there is
/// none yet. Saved locally; the running replicator pushes it.
fn edit_profile(db: &Database, id: &str, user: &str, address: &str) -> ferrolite::Result<()> {
    let mut profile = match db.document(id)? {
        Some(existing) => existing.to_mutable(),
        None => MutableDocument::with_id(id),
    };
    if profile.get("name").is_none() {
        profile.set("name", "Demo User");
    }
    profile
        .set("type", "user")
        .set("email", user)
        .set("address", address);
    if profile.blob("image").is_none() {
        profile.set_blob("image", Blob::from_bytes("image/png", PROFILE_IMAGE));
    }
    db.save(&mut profile)
}

/// Waits until the replicator is caught up and the profile no longer pending.
fn wait_until_pushed(replicator: &Replicator, id: &str) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    loop {
        let status = replicator.status();
        if let (ActivityLevel::Stopped, Some(error)) = (status.activity, &status.error) {
            return Err(format!("replication stopped: {error}").into());
        }
        if status.activity == ActivityLevel::Idle && !replicator.is_document_pending(id)? {
            return Ok(());
        }
        if started.elapsed() > PUSH_TIMEOUT {
            return Err("the edit did not reach the gateway in time".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

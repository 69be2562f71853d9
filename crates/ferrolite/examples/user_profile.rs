//! The user-profile app's data, on ferrolite's embedded defaults: opens an on-disk database,
//! saves a user profile with its image as a blob, reads it back and prints the change feed.
//!
//! ```text
//! cargo run -p ferrolite --example user_profile [-- <directory> [<image file>]]
//! ```
//!
//! The database goes to `<directory>/userprofile.ferrolite` (default directory:
//! `ferrolite-data`). Run it twice: the second run saves a new revision of the same profile.

use std::path::PathBuf;

use ferrolite::{Blob, Database, DatabaseConfiguration, MutableDocument};

/// A 1×1 PNG, so the example runs without any file of its own.
const DEFAULT_IMAGE: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90, 0x77, 0x53,
    0xde, 0x00, 0x00, 0x00, 0x0c, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xdf, 0xc0, 0x00,
    0x00, 0x04, 0x01, 0x01, 0x80, 0xc5, 0x2a, 0x18, 0x5d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e,
    0x44, 0xae, 0x42, 0x60, 0x82,
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let directory = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("ferrolite-data"));
    let (image, content_type) = match args.next() {
        Some(path) => {
            let bytes = std::fs::read(&path)?;
            let is_png = bytes.starts_with(b"\x89PNG");
            (bytes, if is_png { "image/png" } else { "image/jpeg" })
        }
        None => (DEFAULT_IMAGE.to_vec(), "image/png"),
    };

    let db = Database::open("userprofile", &DatabaseConfiguration::new(&directory))?;
    println!(
        "database: {}",
        db.path()
            .map_or_else(String::new, |p| p.display().to_string())
    );

    // The profile document of the user-profile tutorial: `user::<email>`, type "user".
    let id = "user::demo@example.com";
    let mut profile = match db.document(id)? {
        Some(existing) => existing.to_mutable(),
        None => MutableDocument::with_id(id),
    };
    profile
        .set("type", "user")
        .set("name", "Demo User")
        .set("email", "demo@example.com")
        .set("address", "101 Main Street")
        .set(
            "university",
            "British Institute in Paris, University of London",
        );
    profile.set_blob("image", Blob::from_bytes(content_type, image));
    db.save(&mut profile)?;

    let saved = db
        .document(id)?
        .ok_or("the profile just saved cannot be read back")?;
    println!("saved {} at revision {}", saved.id(), saved.revision_id());
    println!("{}", serde_json::to_string_pretty(saved.properties())?);
    let blob = saved.blob("image").ok_or("the profile has no image blob")?;
    let content = db.blob_content(&blob)?;
    println!(
        "image: {} bytes of {}, digest {}",
        content.len(),
        blob.content_type().unwrap_or("?"),
        blob.digest().map(|d| d.to_string()).unwrap_or_default()
    );

    println!("change feed:");
    for change in db.changes(0)? {
        let change = change?;
        let state = if change.deleted { " (deleted)" } else { "" };
        println!(
            "  seq {:>3}  {}  {}{state}",
            change.sequence, change.id, change.rev
        );
    }
    println!("documents: {}", db.count()?);
    db.close()?;
    Ok(())
}

//! The server role (`--role server --dir D`): on-disk databases served by a
//! `UrlEndpointListener` on 127.0.0.1, controlled by the harness.
//!
//! At start it opens `src` (seeded on request with the workload) and the empty push targets
//! `push_timed` and `push_bytes`, listens on a port the system chooses and prints
//! `{"listening":PORT}`. Requests: `seed {docs, seed, prefix}`, `update {docid, j}` (S3's
//! one-document update), `stats {db}`, `get {db, docid}`, `quit`.

use std::path::PathBuf;
use std::time::Instant;

use ferrolite::{
    Database, DatabaseConfiguration, MutableDocument, UrlEndpointListener,
    UrlEndpointListenerConfiguration,
};
use ferrolite_testkit::workload::make_doc;
use serde_json::{json, Value};

use crate::lines::{self, str_arg, u64_arg};
use crate::{iso_after_2025, Result};

/// Documents saved per transaction while seeding (as the peer's `_bulk_docs` batches).
const SEED_BATCH: u32 = 1000;

/// The databases the server holds.
pub(crate) const DATABASES: [&str; 3] = ["src", "push_timed", "push_bytes"];

/// Runs the server role until `quit` or the end of stdin.
pub(crate) fn run(dir: PathBuf) -> Result<()> {
    let config = DatabaseConfiguration::new(&dir);
    let databases = DATABASES
        .iter()
        .map(|name| Database::open(name, &config))
        .collect::<ferrolite::Result<Vec<_>>>()?;
    let listener = UrlEndpointListener::start(
        UrlEndpointListenerConfiguration::new(databases.clone())
            .network_interface("127.0.0.1")
            .port(0),
    )?;
    println!("{}", json!({ "listening": listener.port() }));
    let db = |request: &Value| -> Result<&Database> {
        let name = request.get("db").and_then(Value::as_str).unwrap_or("src");
        databases
            .iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| format!("no database {name}").into())
    };
    lines::serve(|op, request| match op {
        "seed" => {
            let docs = u32::try_from(u64_arg(request, "docs")?)?;
            let seed = u32::try_from(u64_arg(request, "seed")?)?;
            let prefix = str_arg(request, "prefix")?;
            let started = Instant::now();
            seed_docs(db(request)?, docs, seed, prefix)?;
            let ms = started.elapsed().as_secs_f64() * 1e3;
            Ok((json!({ "count": docs, "ms": ms }), false))
        }
        "update" => {
            let (rev, version) = update(
                db(request)?,
                str_arg(request, "docid")?,
                u64_arg(request, "j")?,
            )?;
            Ok((json!({ "rev": rev, "version": version }), false))
        }
        "stats" => {
            let db = db(request)?;
            Ok((
                json!({ "doc_count": db.count()?, "last_sequence": db.last_sequence()? }),
                false,
            ))
        }
        "get" => Ok((get(db(request)?, str_arg(request, "docid")?)?, false)),
        "quit" => {
            listener.stop();
            for db in &databases {
                db.close()?;
            }
            Ok((json!({}), true))
        }
        other => Err(format!("unknown op {other}").into()),
    })
}

/// Saves documents `0..docs` of the workload, `SEED_BATCH` per transaction.
pub(crate) fn seed_docs(db: &Database, docs: u32, seed: u32, prefix: &str) -> Result<()> {
    let mut start = 0;
    while start < docs {
        let end = (start + SEED_BATCH).min(docs);
        db.in_batch(|batch| {
            for i in start..end {
                let (id, body) = make_doc(i, seed, prefix);
                let mut doc = MutableDocument::with_id(id);
                doc.set_properties(body);
                batch.save(&mut doc)?;
            }
            Ok(())
        })?;
        start = end;
    }
    Ok(())
}

/// S3's update, as another device would make it: `version + 1`,
/// `updatedAt = 2025-01-01T00:00:00.000Z + j s`, `stats.logins + 1`. Returns the new
/// revision ID and version.
fn update(db: &Database, docid: &str, j: u64) -> Result<(String, i64)> {
    let doc = db
        .document(docid)?
        .ok_or_else(|| format!("no document {docid}"))?;
    let mut doc = doc.to_mutable();
    let props = doc.properties_mut();
    let version = props.get("version").and_then(Value::as_i64).unwrap_or(1) + 1;
    props.insert("version".into(), json!(version));
    props.insert("updatedAt".into(), json!(iso_after_2025(j)));
    let stats = props
        .get_mut("stats")
        .and_then(Value::as_object_mut)
        .ok_or("no stats object")?;
    let logins = stats.get("logins").and_then(Value::as_i64).unwrap_or(0) + 1;
    stats.insert("logins".into(), json!(logins));
    db.save(&mut doc)?;
    let rev = doc.revision_id().ok_or("saved without a revision")?;
    Ok((rev.to_string(), version))
}

/// A document's current revision ID and `version`, or `{"missing":true}`.
pub(crate) fn get(db: &Database, docid: &str) -> Result<Value> {
    Ok(match db.document(docid)? {
        Some(doc) => json!({
            "rev": doc.revision_id().to_string(),
            "version": doc.get("version").cloned().unwrap_or(Value::Null),
        }),
        None => json!({ "missing": true }),
    })
}

//! The client role (`--role client`): one on-disk database, one-shot pulls and pushes as an
//! application makes them, timed in this process around the `ferrolite::sync_once` call.
//!
//! Requests: `open {dir, name}`, `load_docs {docs, seed, prefix}` (untimed setup for S4),
//! `pull {url}` and `push {url}` (answer `ms`, `docs_written`), `info`, `get {docid}`,
//! `close`.

use std::time::{Duration, Instant};

use ferrolite::{
    Database, DatabaseConfiguration, Endpoint, ReplicatorConfiguration, ReplicatorType, SyncOutcome,
};
use serde_json::{json, Value};

use crate::lines::{self, str_arg, u64_arg};
use crate::{server, Result};

/// The budget of one `sync_once`: long enough for S1 at N = 100,000 on a slow machine.
const DEADLINE: Duration = Duration::from_secs(900);

/// Runs the client role until `close` or the end of stdin.
pub(crate) fn run() -> Result<()> {
    let mut db: Option<Database> = None;
    lines::serve(|op, request| {
        let open = |db: &Option<Database>| -> Result<Database> {
            db.clone().ok_or_else(|| "no database open".into())
        };
        match op {
            "open" => {
                let config = DatabaseConfiguration::new(str_arg(request, "dir")?);
                db = Some(Database::open(str_arg(request, "name")?, &config)?);
                Ok((json!({}), false))
            }
            "load_docs" => {
                let docs = u32::try_from(u64_arg(request, "docs")?)?;
                let seed = u32::try_from(u64_arg(request, "seed")?)?;
                let started = Instant::now();
                server::seed_docs(&open(&db)?, docs, seed, str_arg(request, "prefix")?)?;
                let ms = started.elapsed().as_secs_f64() * 1e3;
                Ok((json!({ "count": open(&db)?.count()?, "ms": ms }), false))
            }
            "pull" => Ok((
                replicate(&open(&db)?, str_arg(request, "url")?, ReplicatorType::Pull)?,
                false,
            )),
            "push" => Ok((
                replicate(&open(&db)?, str_arg(request, "url")?, ReplicatorType::Push)?,
                false,
            )),
            "info" => Ok((json!({ "doc_count": open(&db)?.count()? }), false)),
            "get" => Ok((server::get(&open(&db)?, str_arg(request, "docid")?)?, false)),
            "close" => {
                if let Some(db) = db.take() {
                    db.close()?;
                }
                Ok((json!({}), true))
            }
            other => Err(format!("unknown op {other}").into()),
        }
    })
}

/// One one-shot replication as a background refresh runs it: the configuration built and
/// `ferrolite::sync_once` called, timed together.
fn replicate(db: &Database, url: &str, direction: ReplicatorType) -> Result<Value> {
    let started = Instant::now();
    let config = ReplicatorConfiguration::new(db, Endpoint::url(url)?)
        .replicator_type(direction)
        .max_attempts(1);
    let outcome = ferrolite::sync_once(config, DEADLINE);
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let written = match outcome {
        SyncOutcome::NewData { count, .. } => count,
        SyncOutcome::NoData => 0,
        SyncOutcome::Failed(error) => return Err(format!("sync_once failed: {error}").into()),
    };
    Ok(json!({ "ms": ms, "docs_written": written }))
}

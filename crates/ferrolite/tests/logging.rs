//! `ferrolite::logging`: levels set per domain change at run time, and each domain's records
//! appear and disappear independently. A test binary of its own: the global `tracing`
//! subscriber is process-wide, so this file holds one test that installs it (into a
//! buffer) and goes through the phases in order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrolite::logging::{self, LogDomain, LogLevel};
use ferrolite::{
    Database, DatabaseConfiguration, Endpoint, MutableDocument, ReplicatorConfiguration,
    ReplicatorType, SyncOutcome,
};

/// Where the subscriber writes: one shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    /// Waits until nothing was written for 50 ms (2 s at most).
    fn settle(&self) {
        let len = || self.0.lock().unwrap().len();
        for _ in 0..40 {
            let before = len();
            std::thread::sleep(Duration::from_millis(50));
            if len() == before {
                return;
            }
        }
    }

    /// The lines written since the last call.
    fn take(&self) -> Vec<String> {
        let bytes = std::mem::take(&mut *self.0.lock().unwrap());
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Which domains the lines come from (by target), in a fixed order.
fn domains(lines: &[String]) -> Vec<&'static str> {
    ["database", "replicator", "network", "blip"]
        .into_iter()
        .filter(|domain| {
            let target = format!(" ferrolite::{domain}:");
            lines.iter().any(|line| line.contains(&target))
        })
        .collect()
}

/// Opens an on-disk database (an `INFO` record of the database domain), then pulls one
/// document from another over the in-process endpoint (replicator records at every level,
/// network at `DEBUG`, BLIP messages at `TRACE`).
fn activity(dir: &std::path::Path, n: usize) {
    let config = DatabaseConfiguration::new(dir);
    let server = Database::open(&format!("server{n}"), &config).unwrap();
    server
        .save(MutableDocument::with_id(format!("doc-{n}")).set("n", n as i64))
        .unwrap();
    let phone = Database::open(&format!("phone{n}"), &config).unwrap();
    let pull = ReplicatorConfiguration::new(&phone, Endpoint::database(&server))
        .replicator_type(ReplicatorType::Pull);
    match ferrolite::sync_once(pull, Duration::from_secs(10)) {
        SyncOutcome::NewData { count: 1, .. } => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn levels_change_at_run_time_and_domains_are_independent() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    logging::init_writer(move || writer.clone()).unwrap();
    // Installing again is harmless; a second writer is not used.
    logging::init_console().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    let mut run = |expected: &[&str], what: &str| {
        n += 1;
        activity(dir.path(), n);
        // The passive side may still be ending its session: wait for quiet.
        buffer.settle();
        let lines = buffer.take();
        assert_eq!(domains(&lines), expected, "{what}:\n{}", lines.join("\n"));
        lines
    };

    // Defaults: every domain at Warning; a healthy run logs nothing.
    assert_eq!(logging::log_level(LogDomain::All), LogLevel::Warning);
    run(&[], "defaults");

    logging::set_log_level(LogDomain::Database, LogLevel::Info);
    let lines = run(&["database"], "database at Info");
    assert!(lines
        .iter()
        .any(|l| l.contains(" INFO ") && l.contains("opened")));

    logging::set_log_level(LogDomain::Replicator, LogLevel::Verbose);
    let lines = run(&["database", "replicator"], "replicator at Verbose");
    assert!(lines
        .iter()
        .any(|l| l.contains("DEBUG ferrolite::replicator:")));

    logging::set_log_level(LogDomain::Network, LogLevel::Verbose);
    logging::set_log_level(LogDomain::Blip, LogLevel::Debug);
    let lines = run(
        &["database", "replicator", "network", "blip"],
        "network at Verbose, BLIP at Debug",
    );
    assert!(lines
        .iter()
        .any(|l| l.contains("TRACE ferrolite::blip:") && l.contains("subChanges")));

    // One domain off, the others untouched.
    logging::set_log_level(LogDomain::Replicator, LogLevel::None);
    run(
        &["database", "network", "blip"],
        "replicator off, the rest unchanged",
    );

    // Info keeps the replicator's INFO records only.
    logging::set_log_level(LogDomain::Replicator, LogLevel::Info);
    logging::set_log_level(LogDomain::Blip, LogLevel::Warning);
    let lines = run(
        &["database", "replicator", "network"],
        "replicator at Info, BLIP back to Warning",
    );
    assert!(lines
        .iter()
        .filter(|l| l.contains(" ferrolite::replicator:"))
        .all(|l| l.contains(" INFO ")));

    logging::set_log_level(LogDomain::All, LogLevel::None);
    assert_eq!(logging::log_level(LogDomain::All), LogLevel::None);
    run(&[], "everything off");

    logging::set_log_level(LogDomain::Network, LogLevel::Verbose);
    run(&["network"], "network alone");
}

//! The commands against a URL: `pull`, `push`, `sync` and `background-refresh`.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use ferrolite::transport::{Certificate, TransportError};
use ferrolite::{
    ActivityLevel, Authenticator, Database, Direction, Endpoint, Replicator,
    ReplicatorConfiguration, ReplicatorError, ReplicatorStatus, ReplicatorType, SyncOutcome,
};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use crate::local::{failure, Location};
use crate::{usage, RefreshArgs, RemoteArgs, ReplicateArgs, EXIT_FAILED, EXIT_NO_DATA};

/// How long a stopping replicator gets to save its checkpoint after Ctrl-C.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The replication configuration of `db` with `url` and the connection options.
fn configuration(
    db: &Database,
    url: &str,
    remote: &RemoteArgs,
) -> anyhow::Result<ReplicatorConfiguration> {
    let url = websocket_url(url);
    let endpoint = Endpoint::url(&url).map_err(|e| usage(e.message()))?;
    let mut config = ReplicatorConfiguration::new(db, endpoint)
        .channels(remote.channels.iter().cloned())
        .document_ids(remote.doc_ids.iter().cloned());
    match (&remote.user, &remote.password, &remote.session) {
        (Some(user), Some(password), _) => {
            config = config.authenticator(Authenticator::basic(user, password));
        }
        (_, _, Some(session)) => config = config.authenticator(Authenticator::session(session)),
        _ => {}
    }
    for header in &remote.header {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| usage(format!("--header {header:?}: expected `Name: value`")))?;
        config = config.header(name.trim(), value.trim());
    }
    if let Some(path) = &remote.pinned_cert {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let der = match std::str::from_utf8(&bytes) {
            Ok(text) if text.contains("-----BEGIN") => Certificate::from_pem(text)
                .map_err(|e| usage(format!("--pinned-cert {}: {e}", path.display())))?
                .into_iter()
                .next()
                .map(|cert| cert.der().to_vec())
                .unwrap_or_default(),
            _ => bytes,
        };
        config = config.pinned_server_certificate(der);
    }
    if remote.self_signed_only {
        config = config.accept_only_self_signed_server_certificate(true);
    }
    Ok(config)
}

/// `http://` and `https://` as `ws://` and `wss://`: Sync Gateway's URL in either form.
fn websocket_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        url.to_owned()
    }
}

/// A replication failure in one line, for people: what happened, then the error's domain
/// and code as Couchbase Lite reports them.
pub(crate) fn describe(error: &ReplicatorError, url: &str) -> String {
    let (domain, code) = error.domain_and_code();
    let what = match error.transport_error() {
        Some(TransportError::HttpStatus { status: 401, .. }) => {
            "login refused by the server (check --user and --password, or --session)".to_owned()
        }
        Some(TransportError::HttpStatus { status: 403, .. }) => {
            format!("the server refused access to {url}")
        }
        Some(TransportError::HttpStatus { status: 404, .. }) => {
            format!("the server has no database at {url}")
        }
        Some(TransportError::Io { source, .. }) => format!("cannot reach {url}: {source}"),
        Some(TransportError::Dns { host, message, .. }) => {
            format!("cannot reach {url}: cannot resolve {host}: {message}")
        }
        Some(TransportError::Tls { message, .. }) => format!(
            "the TLS connection to {url} failed: {message} (a peer with a self-signed \
             certificate needs --pinned-cert or --self-signed-only)"
        ),
        Some(e) => e.to_string(),
        None => match error {
            ReplicatorError::DeadlineExceeded => "the deadline passed".to_owned(),
            other => other.to_string(),
        },
    };
    format!("{what} ({domain} {code})")
}

/// Documents replicated, by direction, from the document replication listener.
#[derive(Debug, Default)]
struct Counts {
    pushed: AtomicU64,
    pulled: AtomicU64,
    failed: AtomicU64,
}

/// `ferrolite pull`, `push` and `sync`.
pub(crate) fn replicate(kind: ReplicatorType, args: ReplicateArgs) -> anyhow::Result<ExitCode> {
    let location = Location::of(&args.database)?;
    // Pushing from a database that does not exist is a mistake; pulling creates it.
    let db = if kind == ReplicatorType::Push {
        location.open_existing()?
    } else {
        location.open()?
    };
    let attempts = args
        .max_attempts
        .unwrap_or(if args.continuous { 0 } else { 1 });
    let config = configuration(&db, &args.url, &args.remote)?
        .replicator_type(kind)
        .continuous(args.continuous)
        .max_attempts(attempts);
    let replicator = Replicator::new(config).map_err(failure("cannot create the replicator"))?;

    let counts = Arc::new(Counts::default());
    let listener_counts = counts.clone();
    let documents = replicator.add_document_replication_listener(move |docs| {
        for doc in docs {
            let counter = match (&doc.error, doc.direction) {
                (Some(_), _) => &listener_counts.failed,
                (None, Direction::Push) => &listener_counts.pushed,
                (None, Direction::Pull) => &listener_counts.pulled,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let reporter = Arc::new(Reporter::new(verb(kind), &args.url));
    let listener_reporter = reporter.clone();
    let statuses = replicator.add_change_listener(move |status| listener_reporter.update(status));

    let started = Instant::now();
    replicator.start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let waiting = replicator.clone();
    let status = runtime.block_on(async move {
        tokio::select! {
            status = waiting.wait_until_stopped_async() => status,
            _ = crate::serve::wait_for_stop_signal() => {
                waiting.stop();
                tokio::time::timeout(STOP_GRACE, waiting.wait_until_stopped_async())
                    .await
                    .unwrap_or_else(|_| waiting.status())
            }
        }
    });
    replicator.remove_change_listener(statuses);
    replicator.remove_change_listener(documents);
    reporter.finish();

    if let Some(error) = &status.error {
        eprintln!(
            "error: {} failed: {}",
            verb(kind),
            describe(error, &args.url)
        );
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    let pushed = counts.pushed.load(Ordering::Relaxed);
    let pulled = counts.pulled.load(Ordering::Relaxed);
    let failed = counts.failed.load(Ordering::Relaxed);
    let what = match kind {
        ReplicatorType::Push => format!("pushed {}", documents_text(pushed)),
        ReplicatorType::Pull => format!("pulled {}", documents_text(pulled)),
        _ => format!(
            "pushed {} and pulled {}",
            documents_text(pushed),
            documents_text(pulled)
        ),
    };
    let failed = if failed > 0 {
        format!(", {failed} refused")
    } else {
        String::new()
    };
    writeln!(
        io::stdout().lock(),
        "{what}{failed}, {} in {:.1} s",
        HumanBytes(status.progress.completed),
        started.elapsed().as_secs_f64()
    )?;
    Ok(ExitCode::SUCCESS)
}

fn verb(kind: ReplicatorType) -> &'static str {
    match kind {
        ReplicatorType::Push => "push",
        ReplicatorType::Pull => "pull",
        _ => "sync",
    }
}

/// `1 document`, `2 documents`.
fn documents_text(n: u64) -> String {
    if n == 1 {
        "1 document".to_owned()
    } else {
        format!("{n} documents")
    }
}

/// Shows a replication's progress on stderr: a live progress bar on a terminal, one line
/// per change of activity otherwise.
enum Reporter {
    Bar {
        bar: ProgressBar,
        url: String,
    },
    Lines {
        verb: &'static str,
        url: String,
        last: Mutex<Option<ActivityLevel>>,
    },
}

impl Reporter {
    fn new(verb: &'static str, url: &str) -> Reporter {
        if io::stderr().is_terminal() {
            let bar = ProgressBar::no_length();
            let style = ProgressStyle::with_template(
                "{spinner} {prefix} {msg} [{bar:24}] {bytes}/{total_bytes} {elapsed}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(verb);
            bar.set_message("connecting");
            bar.enable_steady_tick(Duration::from_millis(120));
            Reporter::Bar {
                bar,
                url: url.to_owned(),
            }
        } else {
            Reporter::Lines {
                verb,
                url: url.to_owned(),
                last: Mutex::new(None),
            }
        }
    }

    fn update(&self, status: &ReplicatorStatus) {
        let activity = activity_text(status.activity);
        let documents = documents_text(status.progress.document_count);
        match self {
            Reporter::Bar { bar, url } => {
                let total = status.progress.total.max(status.progress.completed);
                if total > 0 {
                    bar.set_length(total);
                }
                bar.set_position(status.progress.completed);
                let message = match &status.error {
                    Some(error) if status.activity == ActivityLevel::Offline => {
                        format!("offline, will retry: {}", describe(error, url))
                    }
                    _ => format!("{activity}, {documents}"),
                };
                bar.set_message(message);
            }
            Reporter::Lines { verb, url, last } => {
                let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
                // Connecting says nothing yet, and stopping is reported once, by the
                // command: the summary or the error (so a failure to connect is one line).
                if *last == Some(status.activity)
                    || matches!(
                        status.activity,
                        ActivityLevel::Connecting | ActivityLevel::Stopped
                    )
                {
                    return;
                }
                *last = Some(status.activity);
                match &status.error {
                    Some(error) if status.activity == ActivityLevel::Offline => {
                        eprintln!("{verb}: offline, will retry: {}", describe(error, url));
                    }
                    _ => eprintln!(
                        "{verb}: {activity}, {documents}, {}",
                        HumanBytes(status.progress.completed)
                    ),
                }
            }
        }
    }

    fn finish(&self) {
        if let Reporter::Bar { bar, .. } = self {
            bar.finish_and_clear();
        }
    }
}

fn activity_text(activity: ActivityLevel) -> &'static str {
    match activity {
        ActivityLevel::Stopped => "stopped",
        ActivityLevel::Offline => "offline",
        ActivityLevel::Connecting => "connecting",
        ActivityLevel::Idle => "idle",
        ActivityLevel::Busy => "busy",
    }
}

/// `ferrolite background-refresh`: one `sync_once` pull; the outcome on stdout (new data,
/// no data) or stderr (failed), and in the exit status.
pub(crate) fn background_refresh(args: RefreshArgs) -> anyhow::Result<ExitCode> {
    let db = Location::of(&args.database)?.open()?;
    let config = configuration(&db, &args.url, &args.remote)?
        .replicator_type(ReplicatorType::Pull)
        // No time for retries in the background: the OS wakes the app again later.
        .max_attempts(1);
    match ferrolite::sync_once(config, args.deadline) {
        SyncOutcome::NewData {
            count,
            mut document_ids,
        } => {
            // Sorted, so that the output does not depend on the order of arrival.
            document_ids.sort();
            let mut out = io::stdout().lock();
            writeln!(out, "new data: {}", documents_text(count))?;
            for id in document_ids {
                writeln!(out, "  {id}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        SyncOutcome::NoData => {
            writeln!(io::stdout().lock(), "no data")?;
            Ok(ExitCode::from(EXIT_NO_DATA))
        }
        SyncOutcome::Failed(error) => {
            eprintln!("failed: {}", describe(&error, &args.url));
            Ok(ExitCode::from(EXIT_FAILED))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_are_websocket_urls() {
        assert_eq!(websocket_url("http://h:4984/db"), "ws://h:4984/db");
        assert_eq!(websocket_url("https://h/db"), "wss://h/db");
        assert_eq!(websocket_url("ws://h/db"), "ws://h/db");
    }

    #[test]
    fn counts_read_well() {
        assert_eq!(documents_text(0), "0 documents");
        assert_eq!(documents_text(1), "1 document");
    }
}

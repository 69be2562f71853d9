//! Console logging with a level per domain, as Couchbase Lite's `Database.log.console`
//! (`Database.setLogLevel(.verbose, domain: .replicator)`).
//!
//! ferrolite logs through [`tracing`](https://docs.rs/tracing) with one target per domain;
//! these targets are stable, so an application with its own `tracing` subscriber can filter
//! on them and needs nothing from this module:
//!
//! | [`LogDomain`] | `tracing` target | what |
//! |---|---|---|
//! | `Database` | `ferrolite::database` | opening databases, expiration, storage warnings |
//! | `Replicator` | `ferrolite::replicator` | sessions, checkpoints, batches, statuses, listeners |
//! | `Network` | `ferrolite::network` | connections opening and closing, heartbeats, TLS |
//! | `Blip` | `ferrolite::blip` | every BLIP message sent and received (at [`LogLevel::Debug`]) |
//!
//! An application without a subscriber calls [`init_console`] once, then
//! [`set_log_level`] whenever it likes; levels change at run time, one domain at a time:
//!
//! ```no_run
//! use ferrolite::logging::{self, LogDomain, LogLevel};
//!
//! logging::init_console()?;                                 // stderr, every domain at Warning
//! logging::set_log_level(LogDomain::Replicator, LogLevel::Verbose);
//! logging::set_log_level(LogDomain::Network, LogLevel::Verbose);
//! // … later
//! logging::set_log_level(LogDomain::All, LogLevel::Warning);
//! # Ok::<(), ferrolite::Error>(())
//! ```
//!
//! Levels map to `tracing` levels; Couchbase Lite's `Debug` is its most detailed level,
//! below `Verbose`:
//!
//! | [`LogLevel`] | `tracing` level |
//! |---|---|
//! | `Debug` | `TRACE` |
//! | `Verbose` | `DEBUG` |
//! | `Info` | `INFO` |
//! | `Warning` | `WARN` |
//! | `Error` | `ERROR` |
//! | `None` | off |

use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{reload, Registry};

use crate::{Error, ErrorCode, Result};

/// A logging domain: which part of ferrolite a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LogDomain {
    /// Databases: opening, expiration, storage (`ferrolite::database`).
    Database,
    /// The replicator and the passive side (`ferrolite::replicator`).
    Replicator,
    /// Connections: WebSocket, TLS, heartbeats (`ferrolite::network`).
    Network,
    /// BLIP messages (`ferrolite::blip`).
    Blip,
    /// Every domain at once (for [`set_log_level`]).
    All,
}

/// The four domains with their targets, in [`LogDomain`] order.
const DOMAINS: [(LogDomain, &str); 4] = [
    (LogDomain::Database, "ferrolite::database"),
    (LogDomain::Replicator, "ferrolite::replicator"),
    (LogDomain::Network, "ferrolite::network"),
    (LogDomain::Blip, "ferrolite::blip"),
];

impl LogDomain {
    /// The `tracing` target of the domain's records (`None` for [`LogDomain::All`]).
    pub fn target(self) -> Option<&'static str> {
        DOMAINS
            .iter()
            .find(|(domain, _)| *domain == self)
            .map(|(_, target)| *target)
    }

    /// Whether `self` covers `domain` (`All` covers every domain).
    fn covers(self, domain: LogDomain) -> bool {
        self == LogDomain::All || self == domain
    }
}

/// How much to log, from the most detailed to nothing (Couchbase Lite's `LogLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum LogLevel {
    /// Everything, each BLIP message included (`tracing`'s `TRACE`).
    Debug,
    /// Details of what is going on (`DEBUG`).
    Verbose,
    /// Notable events: a database opened, a replicator connected or stopped (`INFO`).
    Info,
    /// Problems that were handled (`WARN`); the default.
    Warning,
    /// Failures (`ERROR`).
    Error,
    /// Nothing.
    None,
}

impl LogLevel {
    fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Debug => LevelFilter::TRACE,
            LogLevel::Verbose => LevelFilter::DEBUG,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Warning => LevelFilter::WARN,
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::None => LevelFilter::OFF,
        }
    }
}

/// The levels, and the filter of the installed subscriber.
struct State {
    levels: [LogLevel; 4],
    handle: Option<reload::Handle<Targets, Registry>>,
}

static STATE: Mutex<State> = Mutex::new(State {
    levels: [LogLevel::Warning; 4],
    handle: None,
});

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The filter for `levels`: each domain's target at its level, everything else off.
fn targets(levels: &[LogLevel; 4]) -> Targets {
    DOMAINS
        .iter()
        .zip(levels)
        .fold(Targets::new(), |targets, ((_, target), level)| {
            targets.with_target(*target, level.filter())
        })
}

/// Sets the level of `domain` (or of every domain, with [`LogDomain::All`]), at any time:
/// before [`init_console`] (the level applies once it is called) or after (it applies at
/// once, to records of that domain only). The default is [`LogLevel::Warning`].
///
/// It drives ferrolite's own subscriber only; an application with its own `tracing`
/// subscriber filters on the targets listed in the [module documentation](self).
pub fn set_log_level(domain: LogDomain, level: LogLevel) {
    let mut state = state();
    for (i, (d, _)) in DOMAINS.iter().enumerate() {
        if domain.covers(*d) {
            state.levels[i] = level;
        }
    }
    let filter = targets(&state.levels);
    if let Some(handle) = &state.handle {
        // Fails only when the subscriber is gone, which a global default never is.
        let _ = handle.reload(filter);
    }
}

/// The level of `domain`; for [`LogDomain::All`], the most detailed of the four.
pub fn log_level(domain: LogDomain) -> LogLevel {
    let state = state();
    DOMAINS
        .iter()
        .zip(state.levels)
        .filter(|((d, _), _)| domain.covers(*d))
        .map(|(_, level)| level)
        .min()
        .unwrap_or(LogLevel::None)
}

/// Installs ferrolite's console logger as the process's global `tracing` subscriber:
/// one line per record on standard error (time, level, target, message and fields), for
/// the levels set with [`set_log_level`].
///
/// Does nothing if it is installed already. Fails with [`ErrorCode::Busy`] when another
/// global subscriber was set (the application's own: it then sees ferrolite's records
/// under the targets listed in the [module documentation](self)); it never panics.
pub fn init_console() -> Result<()> {
    init_writer(io::stderr)
}

/// Like [`init_console`], writing each line to what `make_writer` returns (a file, a
/// buffer, the platform's log) instead of standard error.
///
/// ```
/// use ferrolite::logging::{self, LogDomain, LogLevel};
///
/// logging::init_writer(|| std::io::sink())?;
/// logging::set_log_level(LogDomain::Database, LogLevel::Info);
/// # Ok::<(), ferrolite::Error>(())
/// ```
pub fn init_writer<W, F>(make_writer: F) -> Result<()>
where
    W: io::Write,
    F: Fn() -> W + Send + Sync + 'static,
{
    let mut state = state();
    if state.handle.is_some() {
        return Ok(());
    }
    let (filter, handle) = reload::Layer::new(targets(&state.levels));
    let subscriber = Registry::default().with(filter).with(
        tracing_subscriber::fmt::layer()
            .with_writer(make_writer)
            .with_ansi(false),
    );
    tracing::subscriber::set_global_default(subscriber).map_err(|err| {
        Error::new(
            ErrorCode::Busy,
            format!("cannot install the console logger: {err}"),
        )
    })?;
    state.handle = Some(handle);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_tracing_levels_and_all_covers_every_domain() {
        assert_eq!(LogLevel::Debug.filter(), LevelFilter::TRACE);
        assert_eq!(LogLevel::Verbose.filter(), LevelFilter::DEBUG);
        assert_eq!(LogLevel::None.filter(), LevelFilter::OFF);
        assert_eq!(LogDomain::Blip.target(), Some("ferrolite::blip"));
        assert_eq!(LogDomain::All.target(), None);
    }

    /// This test binary's global subscriber is the test's own: ours refuses politely.
    #[test]
    fn a_foreign_global_subscriber_is_an_error_not_a_panic() {
        let foreign = tracing::subscriber::NoSubscriber::default();
        tracing::subscriber::set_global_default(foreign).unwrap();
        let err = init_console().unwrap_err();
        assert!(err.is(ErrorCode::Busy), "{err}");
        // Levels can still be set (and read back); they drive nothing.
        set_log_level(LogDomain::All, LogLevel::Info);
        set_log_level(LogDomain::Blip, LogLevel::Debug);
        assert_eq!(log_level(LogDomain::Network), LogLevel::Info);
        assert_eq!(log_level(LogDomain::All), LogLevel::Debug);
        assert!(init_console().is_err());
    }
}

//! `ferrolite`: the command line. `ferrolite serve` runs a Sync-Gateway-compatible server;
//! `ls`, `get`, `put`, `rm`, `purge`, `blob`, `revs` and `info` work on a local database;
//! `pull`, `push`, `sync` and `background-refresh` replicate a local database with a URL.

mod local;
mod remote;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::filter::LevelFilter;

/// Exit status of a failure (and of `background-refresh` when the refresh failed).
const EXIT_FAILED: u8 = 1;
/// Exit status of a usage error: bad arguments, a URL that cannot be used.
const EXIT_USAGE: u8 = 2;
/// Exit status of `background-refresh` when nothing new arrived.
const EXIT_NO_DATA: u8 = 3;

const MAIN_HELP: &str = "\
A local database is a directory: `phone` and `phone.ferrolite` both name ./phone.ferrolite/,
`data/app` names data/app.ferrolite/.

Exit status: 0 success, 1 failure (one line on stderr), 2 usage error.
background-refresh: 0 new data, 3 no data, 1 failed, 2 usage error.";

const REFRESH_EXIT_CODES: &str = "\
Exit status:
  0  new data: documents arrived (their IDs are printed)
  3  no data: the refresh succeeded and nothing new arrived
  1  failed: the reason is printed on stderr
  2  usage error (bad arguments, a URL that cannot be used)";

/// The ferrolite command line.
#[derive(Debug, Parser)]
#[command(name = "ferrolite", version, about, after_help = MAIN_HELP)]
struct Cli {
    /// More log output on stderr (-v: info, -vv: debug, -vvv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a Sync-Gateway-compatible server (public API on 4984, admin API on 4985 by default).
    Serve {
        /// Configuration file (Sync Gateway legacy JSON shape).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Keep every database in memory (nothing is written to disk).
        #[arg(long, conflicts_with = "data")]
        in_memory: bool,
        /// Directory of the on-disk databases (overrides the configuration's `data_dir`).
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
    },
    /// Lists the documents of a local database, by ID.
    Ls {
        /// The local database.
        database: PathBuf,
        /// Also show each document's current revision and sequence.
        #[arg(short, long)]
        long: bool,
    },
    /// Prints a document as JSON, with its `_id` and `_rev`.
    Get {
        /// The local database.
        database: PathBuf,
        /// The document ID.
        id: String,
    },
    /// Saves a document: its properties, a JSON object, replace the current ones.
    ///
    /// The JSON comes from the argument, from --file, or from stdin when neither is given.
    /// The database is created if it does not exist.
    Put {
        /// The local database.
        database: PathBuf,
        /// The document ID.
        id: String,
        /// The properties, a JSON object.
        #[arg(conflicts_with = "file")]
        json: Option<String>,
        /// Read the JSON from this file (`-` for stdin).
        #[arg(short, long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Save only if the current revision is this one (otherwise: a conflict).
        #[arg(long, value_name = "REV")]
        rev: Option<String>,
    },
    /// Deletes a document: a tombstone revision that replicates.
    Rm {
        /// The local database.
        database: PathBuf,
        /// The document ID.
        id: String,
        /// Delete only if the current revision is this one (otherwise: a conflict).
        #[arg(long, value_name = "REV")]
        rev: Option<String>,
    },
    /// Removes every trace of a document, without a tombstone (the removal does not replicate).
    Purge {
        /// The local database.
        database: PathBuf,
        /// The document ID.
        id: String,
    },
    /// Stores or reads a blob: binary content in a document property.
    Blob {
        #[command(subcommand)]
        command: BlobCommand,
    },
    /// Prints a document's revision tree (deleted documents included).
    Revs {
        /// The local database.
        database: PathBuf,
        /// The document ID.
        id: String,
    },
    /// Prints a local database's name, location, document count, last sequence and size.
    Info {
        /// The local database.
        database: PathBuf,
    },
    /// Pulls from a Sync Gateway or peer into a local database (created if missing).
    Pull(ReplicateArgs),
    /// Pushes a local database's changes to a Sync Gateway or peer.
    Push(ReplicateArgs),
    /// Pushes and pulls between a local database (created if missing) and a URL.
    Sync(ReplicateArgs),
    /// One background refresh: a one-shot pull within a deadline.
    ///
    /// What a mobile app woken by its OS does: pull once (no retry) and answer before the
    /// deadline with "new data" (and the IDs of the documents that arrived), "no data" or
    /// "failed" (and the reason). The local database is created if missing.
    #[command(after_help = REFRESH_EXIT_CODES)]
    BackgroundRefresh(RefreshArgs),
}

#[derive(Debug, Subcommand)]
enum BlobCommand {
    /// Stores a file as a blob in a document property (the document and the database are
    /// created if missing).
    Put {
        /// The local database.
        database: PathBuf,
        /// The document ID.
        id: String,
        /// The property that holds the blob.
        property: String,
        /// The file to store.
        file: PathBuf,
        /// The content type (default: guessed from the file's extension).
        #[arg(long, value_name = "TYPE")]
        content_type: Option<String>,
    },
    /// Writes the content of a document's blob to a file or stdout.
    Get {
        /// The local database.
        database: PathBuf,
        /// The document ID.
        id: String,
        /// The property that holds the blob.
        property: String,
        /// Write to this file instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// How to reach a URL endpoint: credentials, headers, certificate trust, and what to
/// replicate.
#[derive(Debug, Args)]
struct RemoteArgs {
    /// User name for HTTP Basic authentication.
    #[arg(short, long, requires = "password", conflicts_with = "session")]
    user: Option<String>,
    /// Password for HTTP Basic authentication.
    #[arg(short, long, requires = "user")]
    password: Option<String>,
    /// A Sync Gateway session ID (cookie `SyncGatewaySession`) instead of a user and password.
    #[arg(long, value_name = "ID")]
    session: Option<String>,
    /// Pull only documents of these channels (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "CHANNELS")]
    channels: Vec<String>,
    /// Replicate only these documents (comma-separated IDs).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    doc_ids: Vec<String>,
    /// An extra header of the WebSocket upgrade request, `Name: value` (repeatable).
    #[arg(long, value_name = "HEADER")]
    header: Vec<String>,
    /// Trust a wss:// server only if it presents this certificate (PEM or DER file).
    #[arg(long, value_name = "FILE")]
    pinned_cert: Option<PathBuf>,
    /// Trust a wss:// server only if its certificate is self-signed.
    #[arg(long)]
    self_signed_only: bool,
}

/// `pull`, `push` and `sync`.
#[derive(Debug, Args)]
struct ReplicateArgs {
    /// The local database.
    database: PathBuf,
    /// The remote database: ws://host:port/db or wss://… (http:// and https:// are taken as
    /// ws:// and wss://).
    url: String,
    /// Keep replicating changes as they happen, until interrupted (Ctrl-C).
    #[arg(long)]
    continuous: bool,
    /// Connection attempts before giving up on a transient error (default: 1 one-shot,
    /// unlimited continuous).
    #[arg(long, value_name = "N")]
    max_attempts: Option<u32>,
    #[command(flatten)]
    remote: RemoteArgs,
}

/// `background-refresh`.
#[derive(Debug, Args)]
struct RefreshArgs {
    /// The local database (created if missing).
    database: PathBuf,
    /// The remote database: ws://host:port/db or wss://….
    url: String,
    /// The time the refresh has, from start to answer (e.g. 30s, 500ms, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    deadline: Duration,
    #[command(flatten)]
    remote: RemoteArgs,
}

/// A usage error found after parsing (a URL that cannot be used, a header without a colon…):
/// exit status 2, as for the errors clap finds.
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// `anyhow::bail!` for usage errors.
fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs its requests and replications by default; the other commands print
    // results and report a failure themselves, in one line, so they log only when asked.
    let serving = matches!(cli.command, Command::Serve { .. });
    let level = match (serving, cli.verbose) {
        (false, 0) => LevelFilter::OFF,
        (true, 0) | (false, 1) => LevelFilter::INFO,
        (true, 1) | (false, 2) => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .init();
    match run(cli.command) {
        Ok(code) => code,
        // The reader of our output went away (`ferrolite ls db | head -1`): nothing to say.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.is::<UsageError>() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::from(EXIT_FAILED)
            }
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    let broken = Some(std::io::ErrorKind::BrokenPipe);
    error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().map(|e| e.kind()) == broken
            || cause
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == broken
    })
}

/// Runs one subcommand; the exit status on success (`background-refresh` has several).
fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve {
            config,
            in_memory,
            data,
        } => serve::run(config, in_memory, data).map(|()| ExitCode::SUCCESS),
        Command::Ls { database, long } => local::ls(&database, long),
        Command::Get { database, id } => local::get(&database, &id),
        Command::Put {
            database,
            id,
            json,
            file,
            rev,
        } => local::put(&database, &id, json, file, rev),
        Command::Rm { database, id, rev } => local::rm(&database, &id, rev),
        Command::Purge { database, id } => local::purge(&database, &id),
        Command::Blob { command } => match command {
            BlobCommand::Put {
                database,
                id,
                property,
                file,
                content_type,
            } => local::blob_put(&database, &id, &property, &file, content_type),
            BlobCommand::Get {
                database,
                id,
                property,
                output,
            } => local::blob_get(&database, &id, &property, output),
        },
        Command::Revs { database, id } => local::revs(&database, &id),
        Command::Info { database } => local::info(&database),
        Command::Pull(args) => remote::replicate(ferrolite::ReplicatorType::Pull, args),
        Command::Push(args) => remote::replicate(ferrolite::ReplicatorType::Push, args),
        Command::Sync(args) => remote::replicate(ferrolite::ReplicatorType::PushAndPull, args),
        Command::BackgroundRefresh(args) => remote::background_refresh(args),
    }
}

/// Parses `30s`, `500ms`, `2m`, `1h` or a plain number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 30s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (ms, s, m or h)"
            ))
        }
    };
    if seconds <= 0.0 {
        return Err(format!("{text:?}: the duration must be positive"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_serve() {
        let cli = Cli::try_parse_from(["ferrolite", "serve", "--in-memory"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Serve {
                in_memory: true,
                ..
            }
        ));
        assert!(Cli::try_parse_from(["ferrolite", "serve", "--in-memory", "--data", "x"]).is_err());
    }

    #[test]
    fn parses_replication_flags() {
        let cli = Cli::try_parse_from([
            "ferrolite",
            "sync",
            "phone",
            "ws://127.0.0.1:4984/db",
            "--continuous",
            "--user",
            "demo",
            "--password",
            "secret",
            "--channels",
            "a,b",
            "--doc-ids",
            "x",
            "--header",
            "X-One: 1",
            "--header",
            "X-Two: 2",
        ])
        .unwrap();
        let Command::Sync(args) = cli.command else {
            panic!("not sync: {:?}", cli.command)
        };
        assert!(args.continuous);
        assert_eq!(args.remote.channels, ["a", "b"]);
        assert_eq!(args.remote.doc_ids, ["x"]);
        assert_eq!(args.remote.header.len(), 2);
        // A user needs a password; a session excludes a user.
        assert!(
            Cli::try_parse_from(["ferrolite", "pull", "p", "ws://h/db", "--user", "u"]).is_err()
        );
        assert!(Cli::try_parse_from([
            "ferrolite",
            "pull",
            "p",
            "ws://h/db",
            "--user",
            "u",
            "--password",
            "p",
            "--session",
            "s"
        ])
        .is_err());
    }

    #[test]
    fn parses_background_refresh() {
        let cli = Cli::try_parse_from([
            "ferrolite",
            "background-refresh",
            "phone",
            "ws://127.0.0.1:4984/db",
            "--deadline",
            "1500ms",
            "--session",
            "abc",
        ])
        .unwrap();
        let Command::BackgroundRefresh(args) = cli.command else {
            panic!("not background-refresh: {:?}", cli.command)
        };
        assert_eq!(args.deadline, Duration::from_millis(1500));
        assert_eq!(args.remote.session.as_deref(), Some("abc"));
    }

    #[test]
    fn help_shows_the_exit_codes() {
        let mut command = Cli::command();
        let refresh = command
            .find_subcommand_mut("background-refresh")
            .expect("the subcommand exists");
        let help = refresh.render_long_help().to_string();
        assert!(help.contains("3  no data"), "{help}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }
}

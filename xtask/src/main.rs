//! `cargo xtask`: the project's automation, one entry point for CI and for local runs.
//!
//! - `cargo xtask ci`: format check, layering check, clippy, tests, API docs and the book, in
//!   that order (what `.ci/run` and the GitHub workflow run).
//! - `cargo xtask docs`: build the book in `docs/` and check its links.
//! - `cargo xtask bench [NAME [ARGS...]]`: run an end-to-end benchmark, or list them.
//! - `cargo xtask soak [--fuzz-minutes N]`: the long reliability and load runs, then the fuzz
//!   targets.
//! - `cargo xtask help`: usage.
//!
//! Kept to one dependency (anyhow) so that it builds in seconds.

mod bench;
mod ci;
mod cmd;
mod docs;
mod soak;

use std::process::ExitCode;

const USAGE: &str = "\
Usage: cargo xtask <command> [args...]

Commands:
  ci                    run every CI step in order: fmt, layering, clippy, tests, API docs,
                        the book
  docs                  build the book (docs/) into target/book and check its links
                        (installs the pinned mdbook into target/tools when needed)
  bench                 list the benchmarks
  bench <name> [args]   run a benchmark in the release profile, passing args to it
                        (e.g. cargo xtask bench storage --quick)
  soak [--fuzz-minutes N]
                        the long reliability and load runs (200 broken-network seeds, 120
                        process kills, 1,000 clients for 10 minutes), then every fuzz
                        target for N minutes (default 10, 0 skips)
  help                  print this message";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        anyhow::bail!("no command given");
    };
    match command.as_str() {
        "ci" if rest.is_empty() => ci::run(),
        "ci" => anyhow::bail!("`ci` takes no arguments, got {rest:?}"),
        "docs" if rest.is_empty() => docs::run(),
        "docs" => anyhow::bail!("`docs` takes no arguments, got {rest:?}"),
        "bench" => bench::run(rest),
        "soak" => soak::run(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => {
            println!("{USAGE}");
            anyhow::bail!("unknown command `{other}`")
        }
    }
}

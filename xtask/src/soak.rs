//! `cargo xtask soak`: the long runs of the reliability tests, then the fuzz targets.
//!
//! 1. `tests`: the reliability tests of `ferrolite-gateway` (`tests/reliability/`) with
//!    `FERROLITE_SOAK=1`, which multiplies their counts by ten: 200 seeds of the
//!    broken-network test (fresh ones each run, each printed), 120 process kills.
//! 2. `fuzz`: each target of `fuzz/` for `--fuzz-minutes` minutes (10 by default, 0 to
//!    skip), with cargo-fuzz on a nightly toolchain; skipped with a message saying what to
//!    install when either is missing.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::cmd::{self, cargo, workspace_root};

const DEFAULT_FUZZ_MINUTES: u64 = 10;

const USAGE: &str = "usage: cargo xtask soak [--fuzz-minutes N]";

/// Parses the arguments, runs the tests, then the fuzz targets.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut fuzz_minutes = DEFAULT_FUZZ_MINUTES;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--fuzz-minutes" => {
                let value = args.next().context("--fuzz-minutes needs a number")?;
                fuzz_minutes = value
                    .parse()
                    .with_context(|| format!("--fuzz-minutes: not a number: {value:?}"))?;
            }
            other => bail!("soak: unknown argument {other:?}\n{USAGE}"),
        }
    }
    let started = Instant::now();
    println!("soak: [1/2] reliability tests, long runs");
    tests()?;
    println!("\nsoak: [2/2] fuzz targets, {fuzz_minutes} minutes each");
    fuzz(fuzz_minutes)?;
    println!(
        "\nsoak: done in {:.0} minutes",
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

fn tests() -> Result<()> {
    let mut command = if cmd::succeeds(&mut cargo(["nextest", "--version"])) {
        cargo([
            "nextest",
            "run",
            "-p",
            "ferrolite-gateway",
            "--test",
            "reliability",
            "--no-fail-fast",
            "--success-output",
            "final",
        ])
    } else {
        println!("soak: cargo-nextest is not installed; using cargo test");
        cargo([
            "test",
            "-p",
            "ferrolite-gateway",
            "--test",
            "reliability",
            "--",
            "--nocapture",
        ])
    };
    command.env("FERROLITE_SOAK", "1");
    cmd::run(&mut command)
}

/// `cargo +nightly …` in the fuzz workspace, through rustup's `cargo` (the one running
/// the xtask may be a toolchain's own, which does not understand `+nightly`).
fn nightly_cargo(args: &[&str]) -> Command {
    let mut command = Command::new("cargo");
    command
        .arg("+nightly")
        .args(args)
        .current_dir(workspace_root().join("fuzz"));
    command
}

fn fuzz(minutes: u64) -> Result<()> {
    if minutes == 0 {
        println!("soak: fuzzing skipped (--fuzz-minutes 0)");
        return Ok(());
    }
    if !workspace_root().join("fuzz").join("Cargo.toml").is_file() {
        println!("soak: no fuzz/ workspace; fuzzing skipped");
        return Ok(());
    }
    if !cmd::succeeds(&mut nightly_cargo(&["fuzz", "--version"])) {
        println!(
            "soak: fuzzing SKIPPED: `cargo +nightly fuzz` is not available. Install it with \
             `rustup toolchain install nightly` and `cargo install cargo-fuzz`, then run \
             `cargo xtask soak`, or one target by hand: \
             `cd fuzz && cargo +nightly fuzz run <target> -- -max_total_time={}`",
            minutes * 60
        );
        return Ok(());
    }
    let list = cmd::read(&mut nightly_cargo(&["fuzz", "list"]))?;
    let targets: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if targets.is_empty() {
        bail!("`cargo fuzz list` found no fuzz targets");
    }
    let max_time = format!("-max_total_time={}", minutes * 60);
    for target in &targets {
        println!("\nsoak: fuzzing {target} for {minutes} minutes");
        cmd::run(&mut nightly_cargo(&[
            "fuzz", "run", target, "--", &max_time,
        ]))
        .with_context(|| format!("fuzz target {target} failed (see fuzz/artifacts/{target}/)"))?;
    }
    println!("soak: {} fuzz targets ran without a crash", targets.len());
    Ok(())
}

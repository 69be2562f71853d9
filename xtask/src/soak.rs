//! `cargo xtask soak`: the long runs of the reliability and load tests, then the fuzz
//! targets.
//!
//! 1. `tests`: the `reliability` and `load` tests of `ferrolite-gateway` with
//!    `FERROLITE_SOAK=1`, which makes them longer: 200 seeds of the broken-network test
//!    (fresh ones each run, each printed), 120 process kills, 1,000 clients for 10 minutes.
//! 2. `fuzz`: each target of `fuzz/` for `--fuzz-minutes` minutes (10 by default, 0 to
//!    skip), as many at a time as the machine has cores, with cargo-fuzz on a nightly
//!    toolchain; skipped with a message saying what to install when either is missing.
//!    Each target's output goes to `target/soak/fuzz-<target>.log`.
//!
//! Both steps run even when the first fails; the command fails if either did.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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
    println!("soak: [1/2] reliability and load tests, long runs");
    let tests = tests();
    println!("\nsoak: [2/2] fuzz targets, {fuzz_minutes} minutes each");
    let fuzzing = fuzz(fuzz_minutes);
    println!(
        "\nsoak: done in {:.0} minutes",
        started.elapsed().as_secs_f64() / 60.0
    );
    match (tests, fuzzing) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(err), Ok(())) => Err(err.context("soak: the tests failed")),
        (Ok(()), Err(err)) => Err(err.context("soak: the fuzzing failed")),
        (Err(tests), Err(fuzzing)) => {
            bail!("soak: the tests failed ({tests:#}) and so did the fuzzing ({fuzzing:#})")
        }
    }
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
            "--test",
            "load",
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
            "--test",
            "load",
            "--",
            "--nocapture",
            "--test-threads",
            "1",
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
    let targets: Vec<String> = list
        .lines()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!("`cargo fuzz list` found no fuzz targets");
    }
    // Built once, one after another; then run side by side.
    cmd::run(&mut nightly_cargo(&["fuzz", "build"]))?;
    let logs = workspace_root().join("target").join("soak");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let at_once = std::thread::available_parallelism().map_or(1, usize::from);
    let max_time = format!("-max_total_time={}", minutes * 60);
    let mut failed = Vec::new();
    for batch in targets.chunks(at_once) {
        let mut running: Vec<(&String, PathBuf, Child)> = Vec::new();
        for target in batch {
            println!("soak: fuzzing {target} for {minutes} minutes");
            let log = logs.join(format!("fuzz-{target}.log"));
            let file =
                fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
            let child = nightly_cargo(&["fuzz", "run", target, "--", &max_time])
                .stdout(file.try_clone()?)
                .stderr(Stdio::from(file))
                .spawn()
                .with_context(|| format!("starting the fuzzing of {target}"))?;
            running.push((target, log, child));
        }
        for (target, log, mut child) in running {
            let status = child.wait()?;
            let text = fs::read_to_string(&log).unwrap_or_default();
            let summary = text
                .lines()
                .rev()
                .find(|line| line.starts_with("Done "))
                .unwrap_or("no summary");
            if status.success() {
                println!("soak: fuzz {target}: {summary}, no crash");
            } else {
                println!(
                    "soak: fuzz {target}: FAILED ({status}); see {} and fuzz/artifacts/{target}/",
                    log.display()
                );
                failed.push(target.clone());
            }
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    println!("soak: {} fuzz targets ran without a crash", targets.len());
    Ok(())
}

//! `cargo xtask ci`: every check CI makes, in order, stopping at the first failure.
//!
//! 1. `fmt`: `cargo fmt --all --check`
//! 2. `layering`: the dependency rules between crates (see [`LAYERING`])
//! 3. `clippy`: `cargo clippy --workspace --all-targets -- -D warnings`
//! 4. `test`: cargo-nextest when installed (plus the doctests, which it does not run),
//!    otherwise `cargo test --workspace`
//! 5. `doc`: `cargo doc --workspace --no-deps` with `RUSTDOCFLAGS=-D warnings`
//! 6. `book`: `cargo xtask docs`, the book built with mdBook and its links checked

use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::cmd::{self, cargo};

/// One CI step: a name for messages and the function that runs it.
struct Step {
    name: &'static str,
    run: fn() -> Result<()>,
}

const STEPS: [Step; 6] = [
    Step {
        name: "fmt",
        run: fmt,
    },
    Step {
        name: "layering",
        run: layering,
    },
    Step {
        name: "clippy",
        run: clippy,
    },
    Step {
        name: "test",
        run: test,
    },
    Step {
        name: "doc",
        run: doc,
    },
    Step {
        name: "book",
        run: crate::docs::run,
    },
];

/// A crate and the packages that must not appear among its normal (non-dev, non-build)
/// dependencies, direct or transitive.
struct Rule {
    package: &'static str,
    forbidden: &'static [&'static str],
    /// Checked only when the package exists in the workspace (crates still to be written).
    optional: bool,
}

/// The layering of the workspace: the document crate does no I/O and knows no runtime, the
/// storage crate knows no network, the protocol crate is sans-IO and does not reach into
/// storage, the transport crate knows neither storage nor the protocol, the replicator does
/// not reach up into the facade.
const LAYERING: [Rule; 6] = [
    Rule {
        package: "ferrolite-document",
        forbidden: &[
            "tokio",
            "redb",
            "tungstenite",
            "tokio-tungstenite",
            "rustls",
            "axum",
        ],
        optional: false,
    },
    Rule {
        package: "ferrolite-storage",
        forbidden: &["tokio", "tungstenite", "tokio-tungstenite", "axum"],
        optional: false,
    },
    Rule {
        package: "ferrolite-protocol",
        forbidden: &[
            "ferrolite-storage",
            "redb",
            "tokio",
            "tungstenite",
            "tokio-tungstenite",
        ],
        optional: true,
    },
    Rule {
        package: "ferrolite-transport",
        forbidden: &["ferrolite-storage", "ferrolite-protocol", "redb"],
        optional: true,
    },
    Rule {
        package: "ferrolite-replicator",
        forbidden: &["ferrolite", "axum"],
        optional: true,
    },
    Rule {
        package: "ferrolite-sync-function",
        forbidden: &["ferrolite", "ferrolite-storage", "tokio", "axum"],
        optional: true,
    },
];

/// Runs the steps in order; the first failure ends the run with an error naming the step.
pub(crate) fn run() -> Result<()> {
    let started = Instant::now();
    for (n, step) in STEPS.iter().enumerate() {
        let label = format!("[{}/{}] {}", n + 1, STEPS.len(), step.name);
        println!("\nci: {label}");
        let step_started = Instant::now();
        let result = (step.run)();
        let secs = step_started.elapsed().as_secs_f64();
        match result {
            Ok(()) => println!("ci: {label} passed in {secs:.1}s"),
            Err(err) => {
                println!("ci: {label} FAILED after {secs:.1}s");
                return Err(err.context(format!("ci step {label} failed")));
            }
        }
    }
    println!(
        "\nci: all steps passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn fmt() -> Result<()> {
    cmd::run(&mut cargo(["fmt", "--all", "--check"]))
        .context("formatting differs: run `cargo fmt --all`")
}

fn layering() -> Result<()> {
    let metadata = cmd::read(&mut cargo([
        "metadata",
        "--no-deps",
        "--format-version",
        "1",
    ]))?;
    let mut violations = Vec::new();
    for rule in &LAYERING {
        if !has_package(&metadata, rule.package) {
            if rule.optional {
                println!(
                    "layering: {}: not in the workspace yet, skipped",
                    rule.package
                );
                continue;
            }
            bail!("package {} is not in the workspace", rule.package);
        }
        let deps = normal_dependencies(rule.package)?;
        let found: Vec<&str> = rule
            .forbidden
            .iter()
            .copied()
            .filter(|name| deps.iter().any(|d| d == name))
            .collect();
        let verdict = if found.is_empty() {
            "ok".to_owned()
        } else {
            format!("FOUND {found:?}")
        };
        println!(
            "layering: {} ({} crates in its normal dependency tree) must not depend on {}: {verdict}",
            rule.package,
            deps.len(),
            rule.forbidden.join(", "),
        );
        if !found.is_empty() {
            violations.push(format!("{} depends on {}", rule.package, found.join(", ")));
        }
    }
    if !violations.is_empty() {
        bail!(
            "layering violated: {} (see `cargo tree -i`)",
            violations.join("; ")
        );
    }
    Ok(())
}

/// Whether `cargo metadata` output names a workspace package `name`.
fn has_package(metadata: &str, name: &str) -> bool {
    metadata.contains(&format!("\"name\":\"{name}\""))
}

/// The names of the packages in `cargo tree -p <package> -e normal --prefix none`, the
/// package itself included.
fn normal_dependencies(package: &str) -> Result<Vec<String>> {
    let tree = cmd::read(&mut cargo([
        "tree", "-p", package, "-e", "normal", "--prefix", "none",
    ]))?;
    let mut names: Vec<String> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

fn clippy() -> Result<()> {
    cmd::run(&mut cargo([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

fn test() -> Result<()> {
    if cmd::succeeds(&mut cargo(["nextest", "--version"])) {
        cmd::run(&mut cargo([
            "nextest",
            "run",
            "--workspace",
            "--no-fail-fast",
        ]))?;
        cmd::run(&mut cargo(["test", "--workspace", "--doc"]))
    } else {
        println!("ci: cargo-nextest is not installed; using cargo test");
        cmd::run(&mut cargo(["test", "--workspace"]))
    }
}

fn doc() -> Result<()> {
    let mut doc = cargo(["doc", "--workspace", "--no-deps"]);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    cmd::run(&mut doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_packages_in_metadata() {
        let metadata = r#"{"packages":[{"name":"ferrolite-protocol","version":"0.1.0"}]}"#;
        assert!(has_package(metadata, "ferrolite-protocol"));
        assert!(!has_package(metadata, "ferrolite"));
    }
}

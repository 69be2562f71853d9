//! `--peer`: the PouchDB harness run in the same process tree, on the same machine, right
//! after ferrolite's figures, and its figures read back from its newest `results/*.json`.
//!
//! The harness folder comes from `FERROLITE_PEER_BENCH` and is copied to
//! `target/peer-pouchdb` (ignored by git) before `npm ci` (npm's cache under
//! `target/npm-cache`) and `node bench.js --docs N --reps R --samples K`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::Result;

/// Why the peer did not run, or its figures.
pub(crate) enum Outcome {
    /// The peer's `summary` rows (`id`, `what`, `unit`, `median`…) and its result file.
    Ran { summary: Vec<Value>, file: PathBuf },
    /// Skipped, with the reason.
    Skipped(String),
}

/// The figure of a summary row whose `id` is `id` and whose `what` starts with `what`.
pub(crate) fn figure(summary: &[Value], id: &str, what: &str) -> Option<f64> {
    summary
        .iter()
        .find(|row| {
            row.get("id").and_then(Value::as_str) == Some(id)
                && row
                    .get("what")
                    .and_then(Value::as_str)
                    .is_some_and(|w| w.starts_with(what))
        })
        .and_then(|row| row.get("median"))
        .and_then(Value::as_f64)
}

/// Runs the peer harness, or says why not.
pub(crate) fn run(target: &Path, docs: u32, reps: u32, samples: u32) -> Result<Outcome> {
    let Some(source) = std::env::var_os("FERROLITE_PEER_BENCH").map(PathBuf::from) else {
        return Ok(Outcome::Skipped(
            "set FERROLITE_PEER_BENCH to the PouchDB peer harness directory".to_owned(),
        ));
    };
    if !source.join("bench.js").is_file() {
        return Ok(Outcome::Skipped(format!(
            "no peer harness at {} (set FERROLITE_PEER_BENCH)",
            source.display()
        )));
    }
    for tool in ["node", "npm"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Ok(Outcome::Skipped(format!("`{tool}` is not installed")));
        }
    }
    let copy = target.join("peer-pouchdb");
    let lock_unchanged = std::fs::read(copy.join("package-lock.json")).ok()
        == std::fs::read(source.join("package-lock.json")).ok();
    copy_tree(&source, &copy)?;
    if !(lock_unchanged && copy.join("node_modules/.package-lock.json").is_file()) {
        eprintln!("peer: npm ci in {}", copy.display());
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--cache"])
            .arg(target.join("npm-cache"))
            .current_dir(&copy)
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            return Ok(Outcome::Skipped(format!("`npm ci` failed ({status})")));
        }
    }
    let started = std::time::SystemTime::now();
    eprintln!("peer: node bench.js --docs {docs} --reps {reps} --samples {samples}");
    let status = Command::new("node")
        .arg("bench.js")
        .args(["--docs", &docs.to_string()])
        .args(["--reps", &reps.to_string()])
        .args(["--samples", &samples.to_string()])
        .current_dir(&copy)
        // Its table goes to stderr with its log, so our stdout ends with our own table.
        .stdout(std::io::stderr())
        .status()?;
    if !status.success() {
        return Ok(Outcome::Skipped(format!(
            "`node bench.js` failed ({status})"
        )));
    }
    let file =
        newest_result(&copy.join("results"), started)?.ok_or("the peer wrote no results/*.json")?;
    let result: Value = serde_json::from_slice(&std::fs::read(&file)?)?;
    let summary = result
        .get("summary")
        .and_then(Value::as_array)
        .cloned()
        .ok_or("no `summary` in the peer's result")?;
    Ok(Outcome::Ran { summary, file })
}

/// Copies the harness's files (not `node_modules`, `work` or `results`), writable.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if ["node_modules", "work", "results"]
            .iter()
            .any(|n| name == *n)
        {
            continue;
        }
        let dest = to.join(&name);
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else {
            if dest.exists() {
                make_writable(&dest)?;
            }
            std::fs::copy(entry.path(), &dest)?;
            make_writable(&dest)?;
        }
    }
    Ok(())
}

fn make_writable(path: &Path) -> Result<()> {
    let mut permissions = std::fs::metadata(path)?.permissions();
    #[allow(clippy::permissions_set_readonly_false)] // only our own scratch copy
    permissions.set_readonly(false);
    std::fs::set_permissions(path, permissions)?;
    Ok(())
}

/// The newest `*.json` in `dir` written after `since`.
fn newest_result(dir: &Path, since: std::time::SystemTime) -> Result<Option<PathBuf>> {
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let modified = std::fs::metadata(&path)?.modified()?;
        if modified >= since && newest.as_ref().is_none_or(|(t, _)| modified > *t) {
            newest = Some((modified, path));
        }
    }
    Ok(newest.map(|(_, path)| path))
}

//! Running cargo: with output shown (the steps) or captured (the queries).

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// A `cargo` command run in the workspace root, with the cargo that runs the xtask.
pub(crate) fn cargo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args).current_dir(workspace_root());
    cmd
}

/// The workspace root: the parent of this crate's directory.
pub(crate) fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.clone(), PathBuf::from)
}

/// Runs `cmd` with its output going to ours; fails unless it exits successfully.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let shown = describe(cmd);
    println!("$ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` and returns its standard output; its standard error is shown. Fails unless it
/// exits successfully.
pub(crate) fn read(cmd: &mut Command) -> Result<String> {
    let shown = describe(cmd);
    let output = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !output.status.success() {
        bail!("`{shown}` failed ({})", output.status);
    }
    String::from_utf8(output.stdout).with_context(|| format!("`{shown}` printed non-UTF-8"))
}

/// Whether `cmd` runs and exits successfully, its output discarded.
pub(crate) fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `cargo clippy ...` for messages: the program's file name and the arguments, with any
/// environment variables set on the command in front.
fn describe(cmd: &Command) -> String {
    let program = PathBuf::from(cmd.get_program());
    let program = program.file_name().map_or_else(
        || cmd.get_program().to_string_lossy(),
        |name| name.to_string_lossy(),
    );
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(key, value)| {
            value.map(|v| format!("{}={}", key.to_string_lossy(), quote(&v.to_string_lossy())))
        })
        .collect();
    parts.push(program.into_owned());
    parts.extend(cmd.get_args().map(|arg| quote(&arg.to_string_lossy())));
    parts.join(" ")
}

fn quote(s: &str) -> String {
    if s.is_empty() || s.contains(char::is_whitespace) {
        format!("'{s}'")
    } else {
        s.to_owned()
    }
}

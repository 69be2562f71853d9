//! Processes and `/proc`: the gateway child process, CPU time (per process and per thread
//! name), resident memory, and the open-file limit.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::Result;

/// Clock ticks per second of `utime`/`stime` in `/proc/<pid>/stat` (Linux `USER_HZ`).
const CLK_TCK: f64 = 100.0;

/// Raises the soft limit on open files to the hard limit; returns the new soft limit.
#[cfg(unix)]
pub(crate) fn raise_nofile() -> Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )?;
    }
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

/// No open-file limit to raise here.
#[cfg(not(unix))]
pub(crate) fn raise_nofile() -> Result<u64> {
    Ok(u64::MAX)
}

/// Whether `/proc` readings work here (Linux).
pub(crate) fn available() -> bool {
    Path::new("/proc/self/stat").exists()
}

/// Fields of a `stat` line after the command name (which is in parentheses and may hold
/// spaces), and that name.
fn stat_fields(stat: &str) -> Option<(&str, Vec<&str>)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    let rest = stat.get(close + 2..)?;
    Some((name, rest.split(' ').collect()))
}

/// User + system seconds of a `stat` line.
fn stat_cpu(stat: &str) -> Option<f64> {
    let (_, fields) = stat_fields(stat)?;
    // fields[0] is field 3 (state); utime is field 14 and stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLK_TCK)
}

/// User plus system CPU seconds the process `pid` (`"self"` for this one) used so far.
pub(crate) fn cpu_seconds(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    stat_cpu(&stat).ok_or_else(|| "unreadable /proc stat".into())
}

/// CPU seconds per thread name (digits dropped: `tokio-runtime-worker`, `ferrolite-rt-`),
/// summed over the live threads of `pid`.
pub(crate) fn thread_cpu(pid: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some((name, _)), Some(cpu)) = (stat_fields(&stat), stat_cpu(&stat)) else {
            continue;
        };
        let name: String = name.chars().filter(|c| !c.is_ascii_digit()).collect();
        *out.entry(name).or_insert(0.0) += cpu;
    }
    out
}

/// A numeric field of `/proc/<pid>/status` (`Threads`, or a `kB` one).
pub(crate) fn status_value(pid: &str, key: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
        .ok_or_else(|| format!("no {key} in /proc/{pid}/status"))?;
    Ok(line[key.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?)
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in MB (MiB).
pub(crate) fn status_mb(pid: &str, key: &str) -> Result<f64> {
    Ok(status_value(pid, key)? / 1024.0)
}

/// A gateway child process: this executable again with `--role server`.
pub(crate) struct Server {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pid: String,
}

impl Server {
    /// Starts the server role with a configuration file and a data directory, and waits
    /// for its ready line (`{"public":P,"admin":A,"nofile":N}`).
    ///
    /// For profiling, `FERROLITE_BENCH_WRAP_SERVER` (a profiler's command line, ending
    /// where the profiled command starts) prefixes the command (split on whitespace); the
    /// `/proc` figures then belong to the wrapper.
    pub(crate) fn spawn(config: &Path, dir: &Path) -> Result<(Server, Value)> {
        let exe = std::env::current_exe()?;
        let wrapper = std::env::var("FERROLITE_BENCH_WRAP_SERVER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(words).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        let mut child = command
            .arg("--role")
            .arg("server")
            .arg("--config")
            .arg(config)
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let mut server = Server {
            pid: child.id().to_string(),
            child,
            stdin: BufWriter::new(stdin),
            stdout: BufReader::new(stdout),
        };
        let ready = server.read_line()?;
        Ok((server, ready))
    }

    /// The process ID, for `/proc/<pid>` readings.
    pub(crate) fn pid(&self) -> &str {
        &self.pid
    }

    /// The next JSON line the server printed (other lines go to stderr).
    fn read_line(&mut self) -> Result<Value> {
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line)? == 0 {
                return Err("the gateway process exited".into());
            }
            if line.starts_with('{') {
                return Ok(serde_json::from_str(&line)?);
            }
            eprint!("gateway: {line}");
        }
    }

    /// Asks the gateway to stop, then waits for it (killing it after 30 s).
    pub(crate) fn quit(mut self) -> Result<()> {
        writeln!(self.stdin, "quit")?;
        self.stdin.flush()?;
        let stopped = self.read_line();
        for _ in 0..3000 {
            if self.child.try_wait()?.is_some() {
                return stopped.map(drop);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child.kill()?;
        self.child.wait()?;
        Err("the gateway did not stop within 30 s".into())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Still running here means the harness failed half-way: do not leave it behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

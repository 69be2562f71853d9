//! The JSON-lines control protocol between the harness and its server and client processes,
//! shaped like the peer harness's: one request object per line on the child's stdin
//! (`{"id":N,"op":"…",…}`), one response per line on its stdout (`{"id":N,"ok":true,…}` or
//! `{"id":N,"ok":false,"error":"…"}`). Children write nothing else on stdout.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::Result;

/// A child process of the harness (server or client role), driven over its stdin and stdout.
pub(crate) struct Proc {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
    name: &'static str,
}

impl Proc {
    /// Starts this executable again with `--role ROLE` and the extra arguments.
    ///
    /// For profiling, `FERROLITE_BENCH_WRAP_<ROLE>` (e.g. `FERROLITE_BENCH_WRAP_CLIENT="perf
    /// record -g -o client.data --"`) prefixes the command (split on whitespace); the
    /// `/proc` figures then belong to the wrapper.
    pub(crate) fn spawn(name: &'static str, role: &str, extra: &[&str]) -> Result<Proc> {
        let exe = std::env::current_exe()?;
        let wrapper = std::env::var(format!("FERROLITE_BENCH_WRAP_{}", role.to_uppercase()))
            .unwrap_or_default();
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
            .arg(role)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        Ok(Proc {
            child,
            stdin: BufWriter::new(stdin),
            stdout: BufReader::new(stdout),
            next_id: 0,
            name,
        })
    }

    /// The process ID, for `/proc/<pid>` readings.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads one line the child printed on its own (the server's `{"listening":PORT}`).
    /// Lines that are not JSON objects (a profiling wrapper's chatter) are passed to stderr.
    pub(crate) fn read_line(&mut self) -> Result<Value> {
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line)? == 0 {
                return Err(format!("{}: exited before answering", self.name).into());
            }
            if line.starts_with('{') {
                return Ok(serde_json::from_str(&line)?);
            }
            eprint!("{}: {line}", self.name);
        }
    }

    /// Sends one request and waits for its response; an `ok:false` answer is an error.
    pub(crate) fn call(&mut self, op: &str, args: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = match args {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        request.insert("id".into(), json!(id));
        request.insert("op".into(), json!(op));
        serde_json::to_writer(&mut self.stdin, &request)?;
        self.stdin.write_all(b"\n")?;
        self.stdin.flush()?;
        let response = self.read_line()?;
        if response.get("id").and_then(Value::as_u64) != Some(id) {
            return Err(format!("{}: answer out of order: {response}", self.name).into());
        }
        if response.get("ok").and_then(Value::as_bool) != Some(true) {
            let error = response.get("error").and_then(Value::as_str).unwrap_or("?");
            return Err(format!("{} {op} failed: {error}", self.name).into());
        }
        Ok(response)
    }

    /// Asks the child to exit (`op`), then waits for it (killing it after 10 s).
    pub(crate) fn finish(mut self, op: &str) -> Result<()> {
        let answer = self.call(op, json!({}));
        for _ in 0..1000 {
            if self.child.try_wait()?.is_some() {
                return answer.map(drop);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child.kill()?;
        self.child.wait()?;
        answer.map(drop)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A child still running here means the harness failed half-way: do not leave it.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The child's side: answers requests from stdin with `handle` until it returns `None` for
/// "exit after this answer" or stdin closes.
pub(crate) fn serve(mut handle: impl FnMut(&str, &Value) -> Result<(Value, bool)>) -> Result<()> {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let request: Value = serde_json::from_str(&line)?;
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let op = request.get("op").and_then(Value::as_str).unwrap_or("");
        let (response, exit) = match handle(op, &request) {
            Ok((Value::Object(mut map), exit)) => {
                map.insert("id".into(), id);
                map.insert("ok".into(), json!(true));
                (Value::Object(map), exit)
            }
            Ok((_, exit)) => (json!({ "id": id, "ok": true }), exit),
            Err(error) => (
                json!({ "id": id, "ok": false, "error": error.to_string() }),
                false,
            ),
        };
        serde_json::to_writer(&mut out, &response)?;
        out.write_all(b"\n")?;
        out.flush()?;
        if exit {
            break;
        }
    }
    Ok(())
}

/// A string argument of a request.
pub(crate) fn str_arg<'a>(request: &'a Value, key: &str) -> Result<&'a str> {
    request
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string `{key}`").into())
}

/// An integer argument of a request.
pub(crate) fn u64_arg(request: &Value, key: &str) -> Result<u64> {
    request
        .get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("missing integer `{key}`").into())
}

/// `/proc/<pid>` readings: CPU time and resident memory of a process.
pub(crate) mod procfs {
    use super::*;

    /// Clock ticks per second of `utime`/`stime` in `/proc/<pid>/stat` (Linux `USER_HZ`).
    const CLK_TCK: f64 = 100.0;

    /// User plus system CPU seconds the process used so far.
    pub(crate) fn cpu_seconds(pid: u32) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat
            .rfind(')')
            .and_then(|i| stat.get(i + 2..))
            .ok_or("unreadable /proc stat")?;
        let fields: Vec<&str> = rest.split(' ').collect();
        // rest[0] is field 3 (state); utime is field 14 and stime field 15.
        let tick = |i: usize| -> Result<f64> {
            Ok(fields.get(i).ok_or("short /proc stat")?.parse::<f64>()?)
        };
        Ok((tick(11)? + tick(12)?) / CLK_TCK)
    }

    /// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in MB (MiB, as the peer).
    pub(crate) fn status_mb(pid: u32, key: &str) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let line = status
            .lines()
            .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
            .ok_or_else(|| format!("no {key} in /proc/{pid}/status"))?;
        let kb: f64 = line[key.len() + 1..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kb / 1024.0)
    }

    /// Whether `/proc` readings work here (Linux).
    pub(crate) fn available() -> bool {
        Path::new("/proc/self/stat").exists()
    }
}

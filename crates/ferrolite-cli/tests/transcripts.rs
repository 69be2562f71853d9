#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The documentation's terminal sessions, run for real.
//!
//! Every ```` ```console ```` block of the files in [`TRANSCRIPTS`] is a transcript: `$ `
//! lines are commands (a trailing `\` continues one on the next line), the lines under a
//! command are what it prints, stdout and stderr together as a terminal shows them. Each file
//! is one session, in a fresh directory, its blocks in order. The commands:
//!
//! * `ferrolite ARGS` (or `cargo run --release -p ferrolite-cli -- ARGS`) runs the built
//!   binary;
//! * `curl` (`-X`, `-H`, `-d`, `-u`, `-s`) makes the same request with an HTTP client;
//! * a trailing `&` runs a command in the background (the gateway: the session waits until
//!   its ports answer); `kill %N` stops background job N;
//! * `echo $?` prints the exit status of the previous command. Every other command must
//!   succeed (exit status 0).
//!
//! Output matching: a line `...` stands for any number of lines, `…` inside a line for any
//! text. The output of background jobs is not compared. A code block right after an HTML
//! comment `<!-- transcript-file: NAME -->` is written to the file NAME of the session.
//!
//! The only rewriting is of addresses: the docs use the gateway's default ports 4984 and
//! 4985, a session uses two free ports instead: in commands and files `:4984` and `:4985`
//! become those ports (and back in the output), and a `ferrolite serve` without `--config`
//! gets a configuration file naming them.
//!
//! [`every_command_in_the_docs_is_run`] makes sure no `ferrolite` or `curl` command appears
//! in the docs outside these transcripts.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The files whose ```` ```console ```` blocks are run, relative to the repository root.
const TRANSCRIPTS: &[&str] = &[
    "README.md",
    "docs/src/getting-started.md",
    "docs/src/tutorial/background-refresh.md",
    "docs/src/guide/cli.md",
    "docs/src/guide/gateway.md",
];

/// How long one foreground command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the gateway may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate is two levels below the root")
        .to_path_buf()
}

#[test]
fn readme_quickstart() {
    run_transcripts("README.md");
}

#[test]
fn getting_started() {
    run_transcripts("docs/src/getting-started.md");
}

#[test]
fn tutorial_background_refresh() {
    run_transcripts("docs/src/tutorial/background-refresh.md");
}

#[test]
fn cli_guide() {
    run_transcripts("docs/src/guide/cli.md");
}

#[test]
fn gateway_guide() {
    run_transcripts("docs/src/guide/gateway.md");
}

/// Every `ferrolite` and `curl` command in a code block of the README or the book is one
/// that a transcript above runs.
#[test]
fn every_command_in_the_docs_is_run() {
    let root = repository_root();
    let mut run: BTreeSet<Vec<String>> = BTreeSet::new();
    for file in TRANSCRIPTS {
        for item in parse(&root.join(file)) {
            if let Item::Step(step) = item {
                run.insert(without_ampersand(normalize(
                    &split_words(&step.command).unwrap(),
                )));
            }
        }
    }
    let mut files = vec![root.join("README.md")];
    collect_markdown(&root.join("docs/src"), &mut files);
    let mut missing = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&root).unwrap().display().to_string();
        let text = std::fs::read_to_string(file).unwrap();
        for block in fenced_blocks(&text) {
            let is_transcript = block.info == "console";
            if is_transcript && !TRANSCRIPTS.contains(&relative.as_str()) {
                missing.push(format!(
                    "{relative}:{}: a console block in a file the transcript tests do not run",
                    block.line
                ));
                continue;
            }
            for (line, command) in block_commands(&block) {
                let Ok(words) = split_words(&command) else {
                    continue;
                };
                let words = without_ampersand(normalize(&words));
                let shown = matches!(
                    words.first().map(String::as_str),
                    Some("ferrolite" | "curl")
                );
                if shown && !run.contains(&words) {
                    missing.push(format!(
                        "{relative}:{line}: `{command}` is not run by a transcript"
                    ));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "commands in the docs that no test runs:\n{}",
        missing.join("\n")
    );
}

/// A command as the comparison sees it: in the foreground or the background alike.
fn without_ampersand(mut words: Vec<String>) -> Vec<String> {
    if words.last().is_some_and(|w| w == "&") {
        words.pop();
    }
    words
}

fn collect_markdown(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_markdown(&path, out);
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parsing

/// A fenced code block: its info string, first line number (1-based, of the fence) and lines.
struct Block {
    info: String,
    line: usize,
    lines: Vec<String>,
    /// The file name from a `<!-- transcript-file: NAME -->` comment just before the block.
    file: Option<String>,
}

fn fenced_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    let mut pending_file: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut current {
            Some(block) => {
                if trimmed.starts_with("```") {
                    blocks.push(current.take().unwrap());
                } else {
                    block.lines.push(line.to_owned());
                }
            }
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    current = Some(Block {
                        info: info.trim().to_owned(),
                        line: n + 1,
                        lines: Vec::new(),
                        file: pending_file.take(),
                    });
                } else if let Some(name) = trimmed
                    .strip_prefix("<!-- transcript-file:")
                    .and_then(|rest| rest.strip_suffix("-->"))
                {
                    pending_file = Some(name.trim().to_owned());
                } else if !trimmed.is_empty() {
                    pending_file = None;
                }
            }
        }
    }
    blocks
}

/// The commands of a block with their line numbers: `$ ` lines of a console block, every
/// line of a shell block; `\` continues a command.
fn block_commands(block: &Block) -> Vec<(usize, String)> {
    let shell = matches!(block.info.as_str(), "sh" | "bash" | "shell" | "console");
    if !shell {
        return Vec::new();
    }
    let mut commands = Vec::new();
    let mut lines = block.lines.iter().enumerate();
    while let Some((i, line)) = lines.next() {
        let command = if block.info == "console" {
            match line.strip_prefix("$ ") {
                Some(command) => command,
                None => continue,
            }
        } else {
            line.as_str()
        };
        let command = read_command(command, &mut lines.by_ref().map(|(_, l)| l));
        commands.push((block.line + 1 + i, command));
    }
    commands
}

/// A command from its first line and as many of the next lines as it continues on: after a
/// trailing `\\` (the lines are joined), or inside an open quote (the newline is kept, as a
/// shell keeps it).
fn read_command(first: &str, next: &mut dyn Iterator<Item = &String>) -> String {
    let mut command = first.to_owned();
    loop {
        if open_quote(&command) {
            match next.next() {
                Some(line) => {
                    command.push('\n');
                    command.push_str(line);
                }
                None => break,
            }
        } else if command.ends_with('\\') {
            command.pop();
            match next.next() {
                Some(line) => command.push_str(line.trim_start()),
                None => break,
            }
        } else {
            break;
        }
    }
    command.trim().to_owned()
}

/// Whether a quote is open at the end of `text`.
fn open_quote(text: &str) -> bool {
    let mut quote = None;
    let mut word_start = true;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        let at_word_start = word_start;
        word_start = quote.is_none() && c.is_whitespace();
        match (quote, c) {
            // A comment: nothing after it counts.
            (None, '#') if at_word_start => return false,
            (None, '\\') | (Some('"'), '\\') => {
                chars.next();
            }
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
    }
    quote.is_some()
}

/// One command of a transcript and the output it shows.
struct Step {
    file: String,
    line: usize,
    command: String,
    expected: Vec<String>,
}

enum Item {
    Step(Step),
    File { name: String, content: String },
}

fn parse(path: &Path) -> Vec<Item> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let file = path.display().to_string();
    let mut items = Vec::new();
    for block in fenced_blocks(&text) {
        if let Some(name) = &block.file {
            let mut content = block.lines.join("\n");
            content.push('\n');
            items.push(Item::File {
                name: name.clone(),
                content,
            });
            continue;
        }
        if block.info != "console" {
            continue;
        }
        let mut lines = block.lines.iter().enumerate().peekable();
        while let Some((i, line)) = lines.next() {
            let Some(command) = line.strip_prefix("$ ") else {
                panic!(
                    "{file}:{}: output before the first command of a console block",
                    block.line + 1 + i
                );
            };
            let command = read_command(command, &mut lines.by_ref().map(|(_, l)| l));
            let mut expected = Vec::new();
            while let Some((_, next)) = lines.peek() {
                if next.starts_with("$ ") {
                    break;
                }
                expected.push(next.to_string());
                lines.next();
            }
            items.push(Item::Step(Step {
                file: file.clone(),
                line: block.line + 1 + i,
                command,
                expected,
            }));
        }
    }
    items
}

/// Splits a command as a POSIX shell does, for the subset transcripts use: words separated
/// by blanks, single quotes, double quotes (with `\"`, `\\`, `\$`), backslash escapes, and a
/// `#` comment. Pipes, redirections, command lists and substitutions are refused.
fn split_words(command: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated ' in {command}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unterminated \" in {command}")),
                        },
                        Some('$' | '`') => {
                            return Err(format!("substitutions are not supported: {command}"))
                        }
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated \" in {command}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            '|' | ';' | '<' | '>' | '`' | '(' | ')' => {
                return Err(format!("{c:?} is not supported in transcripts: {command}"))
            }
            '&' if chars.peek().is_some() => {
                return Err(format!("only a trailing & is supported: {command}"))
            }
            '$' if !(word.is_empty() && chars.peek() == Some(&'?')) => {
                return Err(format!("variables are not supported: {command}"))
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `cargo run … -p ferrolite-cli -- ARGS` is `ferrolite ARGS`.
fn normalize(words: &[String]) -> Vec<String> {
    let words = match words.split_last() {
        Some((last, rest)) if last == "&" => {
            let mut words = normalize(rest);
            words.push(last.clone());
            return words;
        }
        _ => words,
    };
    let cargo_run = words.len() >= 2 && words[0] == "cargo" && words[1] == "run";
    if cargo_run && words.iter().any(|w| w == "ferrolite-cli") {
        if let Some(dash) = words.iter().position(|w| w == "--") {
            let mut out = vec!["ferrolite".to_owned()];
            out.extend(words[dash + 1..].iter().cloned());
            return out;
        }
        return vec!["ferrolite".to_owned()];
    }
    words.to_vec()
}

// ---------------------------------------------------------------------------------------
// Running

fn run_transcripts(file: &str) {
    let path = repository_root().join(file);
    let items = parse(&path);
    assert!(
        items.iter().any(|i| matches!(i, Item::Step(_))),
        "{file} has no console transcript"
    );
    let mut session = Session::new();
    for item in items {
        match item {
            Item::File { name, content } => {
                let content = session.to_session_ports(&content);
                std::fs::write(session.dir.path().join(&name), content).unwrap();
            }
            Item::Step(step) => session.run(&step),
        }
    }
    session.finish();
}

struct Session {
    dir: tempfile::TempDir,
    public: u16,
    admin: u16,
    jobs: Vec<Child>,
    /// The exit status of the previous command, and where it was.
    last: Option<(i32, String)>,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    /// What ran so far, for failure messages.
    log: Vec<String>,
}

impl Session {
    fn new() -> Session {
        let (public, admin) = free_ports();
        Session {
            dir: tempfile::tempdir().unwrap(),
            public,
            admin,
            jobs: Vec::new(),
            last: None,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            log: Vec::new(),
        }
    }

    fn to_session_ports(&self, text: &str) -> String {
        text.replace(":4984", &format!(":{}", self.public))
            .replace(":4985", &format!(":{}", self.admin))
    }

    fn to_doc_ports(&self, text: &str) -> String {
        text.replace(&format!(":{}", self.public), ":4984")
            .replace(&format!(":{}", self.admin), ":4985")
    }

    fn run(&mut self, step: &Step) {
        let place = format!("{}:{}", step.file, step.line);
        let mut words =
            normalize(&split_words(&step.command).unwrap_or_else(|e| panic!("{place}: {e}")));
        let is_status = words == ["echo", "$?"];
        if let Some((status, at)) = &self.last {
            if *status != 0 && !is_status {
                self.fail(&format!(
                    "{at}: exited with status {status}; a command that may fail is followed by `echo $?`"
                ));
            }
        }
        let background = words.last().is_some_and(|w| w == "&");
        if background {
            words.pop();
        }
        let mut words: Vec<String> = words.iter().map(|w| self.to_session_ports(w)).collect();
        self.log.push(format!("$ {}", step.command));
        let (status, output) = match words[0].as_str() {
            "ferrolite" => {
                if words.get(1).is_some_and(|w| w == "serve")
                    && !words.iter().any(|w| w == "--config")
                {
                    let config = format!(
                        "{{\"interface\": \"127.0.0.1:{}\", \"adminInterface\": \"127.0.0.1:{}\"}}",
                        self.public, self.admin
                    );
                    std::fs::write(self.dir.path().join(".ports.json"), config).unwrap();
                    words.extend(["--config".to_owned(), ".ports.json".to_owned()]);
                }
                if background {
                    self.start_job(&words[1..], &place);
                    (0, None)
                } else {
                    self.ferrolite(&words[1..], &place)
                }
            }
            "curl" => (0, Some(self.curl(&words[1..], &place))),
            "echo" if is_status => {
                let status = self.last.take().map_or(0, |(status, _)| status);
                (0, Some(format!("{status}\n")))
            }
            "kill" if words.len() == 2 && words[1].starts_with('%') => {
                let n: usize = words[1][1..].parse().unwrap();
                let job = self
                    .jobs
                    .get_mut(n - 1)
                    .unwrap_or_else(|| panic!("{place}: no job {n}"));
                job.kill().unwrap();
                job.wait().unwrap();
                (0, Some(String::new()))
            }
            other => panic!("{place}: `{other}` is not a command transcripts can run"),
        };
        self.last = Some((status, place.clone()));
        let Some(output) = output else {
            return;
        };
        let output = self.to_doc_ports(&output);
        self.log.push(output.trim_end().to_owned());
        let expected = &step.expected;
        let actual: Vec<String> = output.lines().map(str::to_owned).collect();
        if !lines_match(expected, &actual) {
            self.fail(&format!(
                "{place}: `{}` printed\n{}\nbut the docs show\n{}",
                step.command,
                indent(&actual),
                indent(expected)
            ));
        }
    }

    fn finish(mut self) {
        if let Some((status, at)) = &self.last {
            if *status != 0 {
                let message =
                    format!("{at}: exited with status {status}, and no `echo $?` follows");
                self.fail(&message);
            }
        }
        self.stop_jobs();
    }

    fn ferrolite(&mut self, args: &[String], place: &str) -> (i32, Option<String>) {
        let output_path = self.dir.path().join(".output");
        let output = File::create(&output_path).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolite"))
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            // One file for both streams, its offset shared: the order a terminal shows.
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap();
        let status = wait_with_timeout(&mut child, COMMAND_TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            self.fail(&format!("{place}: still running after {COMMAND_TIMEOUT:?}"))
        });
        let mut text = String::new();
        File::open(&output_path)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        (status.code().unwrap_or(-1), Some(text))
    }

    fn start_job(&mut self, args: &[String], place: &str) {
        let n = self.jobs.len() + 1;
        let log = File::create(self.dir.path().join(format!(".job-{n}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ferrolite"))
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.jobs.push(child);
        let started = Instant::now();
        loop {
            let up = [self.public, self.admin]
                .iter()
                .all(|port| TcpStream::connect(("127.0.0.1", *port)).is_ok());
            if up {
                return;
            }
            if let Some(status) = self.jobs[n - 1].try_wait().unwrap() {
                self.fail(&format!("{place}: the background job exited with {status}"));
            }
            if started.elapsed() > START_TIMEOUT {
                self.fail(&format!(
                    "{place}: nothing listens on the ports after {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `curl` as an HTTP client: `-X`, `-H`, `-d`, `-u`, `-s`; prints the response body.
    fn curl(&mut self, args: &[String], place: &str) -> String {
        let mut method = None;
        let mut headers = Vec::new();
        let mut data: Option<String> = None;
        let mut user = None;
        let mut url = None;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next()
                    .unwrap_or_else(|| panic!("{place}: {arg} needs a value"))
                    .clone()
            };
            match arg.as_str() {
                "-X" | "--request" => method = Some(value()),
                "-H" | "--header" => headers.push(value()),
                "-d" | "--data" | "--data-raw" | "--data-binary" => {
                    let v = value();
                    assert!(!v.starts_with('@'), "{place}: -d @file is not supported");
                    data = Some(v);
                }
                "-u" | "--user" => user = Some(value()),
                "-s" | "--silent" | "-S" | "--show-error" => {}
                other if other.starts_with('-') => {
                    panic!("{place}: curl option {other} is not supported")
                }
                other => url = Some(other.to_owned()),
            }
        }
        let url = url.unwrap_or_else(|| panic!("{place}: curl without a URL"));
        let method =
            method.unwrap_or_else(|| if data.is_some() { "POST" } else { "GET" }.to_owned());
        let mut request = self.client.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            &url,
        );
        for header in headers {
            let (name, value) = header.split_once(':').unwrap();
            request = request.header(name.trim(), value.trim());
        }
        if let Some((name, password)) = user.as_deref().and_then(|u| u.split_once(':')) {
            request = request.basic_auth(name, Some(password));
        }
        if let Some(data) = data {
            request = request.body(data);
        }
        let result = self.runtime.block_on(async move {
            let response = request.send().await?;
            response.text().await
        });
        result.unwrap_or_else(|e| self.fail(&format!("{place}: the request failed: {e}")))
    }

    fn stop_jobs(&mut self) {
        for job in &mut self.jobs {
            let _ = job.kill();
            let _ = job.wait();
        }
    }

    /// Panics with the message, what ran so far and the background jobs' output.
    fn fail(&mut self, message: &str) -> ! {
        self.stop_jobs();
        let mut report = format!("{message}\n\nsession so far:\n{}", self.log.join("\n"));
        for n in 1..=self.jobs.len() {
            let log = std::fs::read_to_string(self.dir.path().join(format!(".job-{n}.log")))
                .unwrap_or_default();
            report.push_str(&format!("\n\nbackground job {n}:\n{log}"));
        }
        panic!("{report}");
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop_jobs();
    }
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if started.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two ports nothing listens on (the kernel's choice; free when the listeners close).
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

fn indent(lines: &[String]) -> String {
    if lines.is_empty() {
        return "    (nothing)".to_owned();
    }
    lines
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------
// Matching

/// Whether `actual` matches `expected`: line by line, trailing blanks and blank lines at the
/// end ignored, `...` for any number of lines, `…` for any text within a line.
fn lines_match(expected: &[String], actual: &[String]) -> bool {
    fn trimmed(lines: &[String]) -> Vec<&str> {
        let mut out: Vec<&str> = lines.iter().map(|l| l.trim_end()).collect();
        while out.last().is_some_and(|l| l.is_empty()) {
            out.pop();
        }
        out
    }
    fn go(expected: &[&str], actual: &[&str]) -> bool {
        match expected.split_first() {
            None => actual.is_empty(),
            Some((&"...", rest)) => (0..=actual.len()).any(|skip| go(rest, &actual[skip..])),
            Some((pattern, rest)) => actual
                .split_first()
                .is_some_and(|(line, more)| line_matches(pattern, line) && go(rest, more)),
        }
    }
    go(&trimmed(expected), &trimmed(actual))
}

fn line_matches(pattern: &str, line: &str) -> bool {
    let pieces: Vec<&str> = pattern.split('…').collect();
    if pieces.len() == 1 {
        return pattern == line;
    }
    let (first, rest) = pieces.split_first().unwrap();
    let Some(mut remaining) = line.strip_prefix(first) else {
        return false;
    };
    let (last, middle) = rest.split_last().unwrap();
    for piece in middle {
        match remaining.find(piece) {
            Some(at) => remaining = &remaining[at + piece.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

#[test]
fn the_matcher_and_the_splitter() {
    let s = |v: &[&str]| v.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    assert!(lines_match(
        &s(&["a", "...", "d"]),
        &s(&["a", "b", "c", "d"])
    ));
    assert!(lines_match(&s(&["...", "d"]), &s(&["d", ""])));
    assert!(!lines_match(&s(&["a"]), &s(&["a", "b"])));
    assert!(line_matches("took … s", "took 0.1 s"));
    assert!(line_matches("rev 1-…", "rev 1-abc"));
    assert!(!line_matches("rev 2-…", "rev 1-abc"));
    assert_eq!(
        split_words(r#"curl -d '{"a": 1}' -H "X: \"y\"" a\ b # comment"#).unwrap(),
        ["curl", "-d", r#"{"a": 1}"#, "-H", r#"X: "y""#, "a b"]
    );
    assert_eq!(split_words("echo $?").unwrap(), ["echo", "$?"]);
    assert_eq!(
        split_words("ferrolite serve &").unwrap(),
        ["ferrolite", "serve", "&"]
    );
    assert!(split_words("a | b").is_err());
    assert!(split_words("echo $HOME").is_err());
    assert_eq!(
        normalize(&split_words("cargo run --release -p ferrolite-cli -- serve").unwrap()),
        ["ferrolite", "serve"]
    );
}

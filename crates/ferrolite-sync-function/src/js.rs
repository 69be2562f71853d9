//! JavaScript sync functions, run by QuickJS engines on a few worker threads.
//!
//! A QuickJS runtime belongs to the thread that made it, so [`JsSyncFunction`] starts a
//! small pool of workers, each with its own runtime, the helpers and the compiled function;
//! callers hand a revision to whichever worker is free and block for the answer. Each call
//! runs under a deadline checked by the engine's interrupt handler, and each runtime has a
//! memory limit. A worker whose call timed out or ran out of memory replaces its engine
//! before the next call, so a broken call leaves nothing behind.

use std::cell::Cell;
use std::fmt;
use std::num::NonZeroUsize;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use rquickjs::context::EvalOptions;
use rquickjs::{CatchResultExt, CaughtError, Context, Ctx, Function, Persistent, Runtime};

use crate::names::Collected;
use crate::{Properties, Reject, Routing, SyncRouter, UserContext};

/// The time limit of one call unless configured otherwise.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(1);
/// The memory limit of each worker's engine unless configured otherwise (64 MiB).
pub const DEFAULT_MEMORY_LIMIT: usize = 64 << 20;

/// The wrapper that installs the helpers and runs the function (see `wrapper.js`).
const WRAPPER: &str = include_str!("wrapper.js");
/// The file name the engine reports for positions in the configured source.
const SOURCE_NAME: &str = "sync function";
/// The file name the engine reports for positions in the wrapper.
const WRAPPER_NAME: &str = "sync function environment";
/// The engine's own stack limit; worker threads get [`THREAD_STACK`], well above it.
const JS_STACK_LIMIT: usize = 1 << 20;
/// The stack of each worker thread.
const THREAD_STACK: usize = 8 << 20;
/// At most this many promise jobs run after a call (sync functions are synchronous: jobs
/// are only drained so that they do not pile up).
const MAX_JOBS_PER_CALL: usize = 1000;

const TIMED_OUT: &str = "JS sync function timed out";
const EXCEPTION: &str = "Exception in JS sync function";
const ERROR: &str = "Error in JS sync function";

/// How a [`JsSyncFunction`] runs: time and memory limits, number of workers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JsOptions {
    /// How long one call may run before it is stopped and the write refused with 500
    /// `JS sync function timed out`; [`Duration::ZERO`] means no limit. Default 1 s.
    pub time_limit: Duration,
    /// The most memory each worker's engine may allocate, in bytes (a call that needs more
    /// fails with 500); 0 means no limit. Default [`DEFAULT_MEMORY_LIMIT`].
    pub memory_limit: usize,
    /// How many calls can run at the same time (one engine and one thread each; at least
    /// 1). Default: the available parallelism, at least 2 and at most 4.
    pub workers: usize,
}

impl Default for JsOptions {
    fn default() -> Self {
        let parallelism = thread::available_parallelism().map_or(2, NonZeroUsize::get);
        JsOptions {
            time_limit: DEFAULT_TIME_LIMIT,
            memory_limit: DEFAULT_MEMORY_LIMIT,
            workers: parallelism.clamp(2, 4),
        }
    }
}

impl JsOptions {
    /// These options with another time limit per call ([`Duration::ZERO`]: none).
    #[must_use]
    pub fn with_time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }

    /// These options with another memory limit per engine, in bytes (0: none).
    #[must_use]
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// These options with another number of workers (0 counts as 1).
    #[must_use]
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    fn deadline(&self) -> Option<Instant> {
        if self.time_limit.is_zero() {
            None
        } else {
            Instant::now().checked_add(self.time_limit)
        }
    }
}

/// Where the configured source is wrong, 1-based, in characters.
///
/// Displayed as `sync function: line 3, column 7: unexpected token in expression: ')'`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sync function: line {line}, column {column}: {message}")]
pub struct SyntaxError {
    /// The line (1 for the first).
    pub line: u32,
    /// The column (1 for the first character of the line).
    pub column: u32,
    /// What is wrong, as the engine says it.
    pub message: String,
}

/// Why a [`JsSyncFunction`] could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    /// The source does not parse, throws when evaluated, or is not a function.
    #[error(transparent)]
    Syntax(#[from] SyntaxError),
    /// The JavaScript engine could not start (out of memory, or no thread could be made).
    #[error("sync function: the JavaScript engine could not start: {0}")]
    Engine(String),
}

/// A sync function written in JavaScript, as Sync Gateway's `sync` setting gives it, e.g.
/// `function(doc, oldDoc, meta) { channel(doc.channels); }`.
///
/// Every call runs `doc`, `oldDoc` and `meta` (`{"xattrs": {}}`) through the function with
/// Sync Gateway's helpers (`channel`, `access`, `role`, `expiry`, `reject`, `requireUser`,
/// `requireRole`, `requireAccess`, `requireAdmin`) and turns what it asked for into a
/// [`Routing`], or a [`Reject`]: 403 or 401 for a thrown `{forbidden: …}` or
/// `{unauthorized: …}`, 500 `Exception in JS sync function` for any other exception, 500
/// `JS sync function timed out` past the time limit.
///
/// ```
/// use ferrolite_sync_function::{JsOptions, JsSyncFunction, SyncRouter};
/// use serde_json::json;
///
/// let sync = JsSyncFunction::new(
///     "function(doc, oldDoc) { channel(doc.channels); expiry(3600); }",
///     JsOptions::default(),
/// )?;
/// let doc = json!({"_id": "a", "channels": ["x", "y"]});
/// let routing = sync.route(doc.as_object().unwrap(), None, None).unwrap();
/// assert_eq!(routing.channels, ["x", "y"]);
/// assert!(routing.expiry.is_some());
/// # Ok::<(), ferrolite_sync_function::CompileError>(())
/// ```
pub struct JsSyncFunction {
    source: Arc<str>,
    options: JsOptions,
    jobs: mpsc::Sender<Job>,
}

impl fmt::Debug for JsSyncFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsSyncFunction")
            .field("source", &self.source)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// One revision handed to a worker.
struct Job {
    doc: String,
    old: String,
    user: String,
    reply: mpsc::SyncSender<Result<Routing, Reject>>,
}

impl JsSyncFunction {
    /// Compiles `source` (a JavaScript function expression) on `options.workers` worker
    /// threads. A source that does not parse, throws while evaluated, or is something else
    /// than a function is a [`CompileError::Syntax`] naming the line and column.
    pub fn new(source: &str, options: JsOptions) -> Result<JsSyncFunction, CompileError> {
        let source: Arc<str> = Arc::from(source);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let workers = options.workers.max(1);
        let (started_tx, started) = mpsc::channel();
        for n in 0..workers {
            let source = Arc::clone(&source);
            let options = options.clone();
            let queue = Arc::clone(&queue);
            let started_tx = started_tx.clone();
            thread::Builder::new()
                .name(format!("sync-function-{n}"))
                .stack_size(THREAD_STACK)
                .spawn(move || worker(&source, &options, &queue, &started_tx))
                .map_err(|e| CompileError::Engine(e.to_string()))?;
        }
        drop(started_tx);
        for _ in 0..workers {
            match started.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(CompileError::Engine("a worker stopped".to_owned())),
            }
        }
        Ok(JsSyncFunction {
            source,
            options,
            jobs,
        })
    }

    /// The JavaScript source this function was made from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The options this function runs with.
    pub fn options(&self) -> &JsOptions {
        &self.options
    }
}

impl SyncRouter for JsSyncFunction {
    fn route(
        &self,
        doc: &Properties,
        old: Option<&Properties>,
        user: Option<&UserContext>,
    ) -> Result<Routing, Reject> {
        let user = user
            .map(|u| serde_json::json!({"name": u.name, "roles": u.roles, "channels": u.channels}));
        let (doc, old, user) = match (
            serde_json::to_string(doc),
            serde_json::to_string(&old),
            serde_json::to_string(&user),
        ) {
            (Ok(doc), Ok(old), Ok(user)) => (doc, old, user),
            _ => return Err(reject(500, ERROR)),
        };
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Job {
            doc,
            old,
            user,
            reply,
        };
        if self.jobs.send(job).is_err() {
            tracing::error!(target: "ferrolite::gateway", "sync function: no worker is running");
            return Err(reject(500, ERROR));
        }
        answer.recv().unwrap_or_else(|_| {
            tracing::error!(target: "ferrolite::gateway", "sync function: a worker stopped during a call");
            Err(reject(500, ERROR))
        })
    }
}

fn reject(status: u16, message: &str) -> Reject {
    Reject {
        status,
        message: message.to_owned(),
    }
}

/// A worker thread: builds its engine, reports whether that worked, then runs jobs until
/// the [`JsSyncFunction`] is dropped.
fn worker(
    source: &str,
    options: &JsOptions,
    queue: &Mutex<mpsc::Receiver<Job>>,
    started: &mpsc::Sender<Result<(), CompileError>>,
) {
    let mut engine = match Engine::new(source, options) {
        Ok(engine) => {
            let _ = started.send(Ok(()));
            Some(engine)
        }
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    loop {
        let job = {
            let queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
            match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        if engine.is_none() {
            engine = start(source, options);
        }
        let (answer, replace) = match &engine {
            Some(e) => e.route(&job, options),
            None => (Err(reject(500, ERROR)), false),
        };
        let _ = job.reply.send(answer);
        if replace {
            // Free the old engine before making its replacement.
            drop(engine.take());
            engine = start(source, options);
        }
    }
}

/// A new engine for a worker that already started once.
fn start(source: &str, options: &JsOptions) -> Option<Engine> {
    Engine::new(source, options)
        .map_err(|e| {
            tracing::error!(target: "ferrolite::gateway", error = %e, "sync function: cannot restart the engine");
        })
        .ok()
}

/// One QuickJS runtime with the helpers and the compiled function.
///
/// The fields drop in order: the saved functions before the context, the context before
/// the runtime.
struct Engine {
    run: Persistent<Function<'static>>,
    sync_fn: Persistent<Function<'static>>,
    context: Context,
    _runtime: Runtime,
    deadline: Rc<Cell<Option<Instant>>>,
    interrupted: Rc<Cell<bool>>,
}

/// What a call of the wrapper gave.
enum Outcome {
    /// The JSON of the collected calls.
    Collected(String),
    /// An exception escaped the wrapper (interrupt, out of memory while collecting).
    Escaped(String),
}

impl Engine {
    fn new(source: &str, options: &JsOptions) -> Result<Engine, CompileError> {
        let engine_error = |e: rquickjs::Error| CompileError::Engine(e.to_string());
        let runtime = Runtime::new().map_err(engine_error)?;
        if options.memory_limit > 0 {
            runtime.set_memory_limit(options.memory_limit);
        }
        runtime.set_max_stack_size(JS_STACK_LIMIT);
        let deadline: Rc<Cell<Option<Instant>>> = Rc::new(Cell::new(None));
        let interrupted = Rc::new(Cell::new(false));
        {
            let deadline = Rc::clone(&deadline);
            let interrupted = Rc::clone(&interrupted);
            runtime.set_interrupt_handler(Some(Box::new(move || {
                let stop = deadline.get().is_some_and(|d| Instant::now() >= d);
                if stop {
                    interrupted.set(true);
                }
                stop
            })));
        }
        let context = Context::full(&runtime).map_err(engine_error)?;
        deadline.set(options.deadline());
        let compiled = context.with(|ctx| {
            let run: Function = ctx
                .eval_with_options(WRAPPER, eval_options(WRAPPER_NAME))
                .catch(&ctx)
                .map_err(|e| CompileError::Engine(describe(&e)))?;
            // The parentheses make a function expression of the source; the line break
            // ends a trailing `//` comment.
            let value: rquickjs::Value = ctx
                .eval_with_options(format!("({source}\n)"), eval_options(SOURCE_NAME))
                .catch(&ctx)
                .map_err(|e| source_error(&e, source, interrupted.get()))?;
            let Some(sync_fn) = value.as_function() else {
                let (line, column) = first_token(source);
                return Err(CompileError::Syntax(SyntaxError {
                    line,
                    column,
                    message: format!(
                        "the source is not a function (it evaluates to {})",
                        kind_of(&value)
                    ),
                }));
            };
            Ok((
                Persistent::save(&ctx, run),
                Persistent::save(&ctx, sync_fn.clone()),
            ))
        });
        deadline.set(None);
        let (run, sync_fn) = compiled?;
        Ok(Engine {
            run,
            sync_fn,
            context,
            _runtime: runtime,
            deadline,
            interrupted,
        })
    }

    /// Runs one job; the answer, and whether this engine should be replaced.
    fn route(&self, job: &Job, options: &JsOptions) -> (Result<Routing, Reject>, bool) {
        let deadline = options.deadline();
        self.interrupted.set(false);
        self.deadline.set(deadline);
        let outcome = self.context.with(|ctx| {
            let outcome = self.call(&ctx, job);
            // Sync functions are synchronous; run what promise jobs they queued (with the
            // helpers off) so that they do not pile up in the engine.
            for _ in 0..MAX_JOBS_PER_CALL {
                if self.interrupted.get() || !ctx.execute_pending_job() {
                    break;
                }
            }
            outcome
        });
        self.deadline.set(None);
        let now = SystemTime::now();
        if self.interrupted.get() {
            tracing::warn!(target: "ferrolite::gateway", limit = ?options.time_limit, "sync function: timed out");
            return (Err(reject(500, TIMED_OUT)), true);
        }
        match outcome {
            Outcome::Escaped(detail) => {
                tracing::warn!(target: "ferrolite::gateway", error = %detail, "sync function: the call failed");
                (Err(reject(500, EXCEPTION)), true)
            }
            Outcome::Collected(json) => {
                let Some(collected) = Collected::from_json(&json) else {
                    tracing::error!(target: "ferrolite::gateway", "sync function: unreadable output");
                    return (Err(reject(500, ERROR)), true);
                };
                for (level, line) in &collected.logs {
                    match level.as_str() {
                        "warn" | "error" => {
                            tracing::warn!(target: "ferrolite::gateway", "sync function: {line}");
                        }
                        "debug" => {
                            tracing::debug!(target: "ferrolite::gateway", "sync function: {line}");
                        }
                        _ => tracing::info!(target: "ferrolite::gateway", "sync function: {line}"),
                    }
                }
                for warning in &collected.warnings {
                    tracing::warn!(target: "ferrolite::gateway", "sync function: {warning}");
                }
                // An engine that ran out of memory or stack is replaced, in case the
                // function left its garbage in global variables.
                let mut replace = false;
                if let Some(exception) = &collected.exception {
                    tracing::warn!(target: "ferrolite::gateway", error = %exception, "sync function: exception");
                    replace = exception.starts_with("InternalError")
                        || exception.starts_with("RangeError: Maximum call stack");
                }
                (collected.into_routing(now), replace)
            }
        }
    }

    fn call(&self, ctx: &Ctx<'_>, job: &Job) -> Outcome {
        let functions = self
            .run
            .clone()
            .restore(ctx)
            .and_then(|run| Ok((run, self.sync_fn.clone().restore(ctx)?)));
        let (run, sync_fn) = match functions {
            Ok(f) => f,
            Err(e) => return Outcome::Escaped(e.to_string()),
        };
        let result: rquickjs::Result<String> = run.call((
            sync_fn,
            job.doc.as_str(),
            job.old.as_str(),
            job.user.as_str(),
        ));
        match result.catch(ctx) {
            Ok(json) => Outcome::Collected(json),
            Err(e) => Outcome::Escaped(describe(&e)),
        }
    }
}

/// What a JavaScript value is, in words.
fn kind_of(value: &rquickjs::Value<'_>) -> &'static str {
    if value.is_number() {
        "a number"
    } else if value.is_string() {
        "a string"
    } else if value.is_bool() {
        "a boolean"
    } else if value.is_null() {
        "null"
    } else if value.is_undefined() {
        "undefined"
    } else if value.is_array() {
        "an array"
    } else if value.is_object() {
        "an object"
    } else {
        value.type_name()
    }
}

fn eval_options(file_name: &str) -> EvalOptions {
    let mut options = EvalOptions::default();
    // Sync Gateway's functions are written for a sloppy-mode ES5 interpreter.
    options.strict = false;
    options.filename = Some(file_name.to_owned());
    options
}

/// A caught exception as text: `Name: message`, then the stack if there is one.
fn describe(error: &CaughtError<'_>) -> String {
    match error {
        CaughtError::Exception(e) => {
            let name: Option<String> = e.get("name").ok();
            let mut text = match (name, e.message()) {
                (Some(name), Some(message)) => format!("{name}: {message}"),
                (None, Some(message)) => message,
                (Some(name), None) => name,
                (None, None) => "Error".to_owned(),
            };
            if let Some(stack) = e.stack().filter(|s| !s.is_empty()) {
                text.push('\n');
                text.push_str(&stack);
            }
            text
        }
        CaughtError::Value(v) => format!("thrown value: {v:?}"),
        CaughtError::Error(e) => e.to_string(),
    }
}

/// The [`SyntaxError`] for an exception raised while evaluating the source.
fn source_error(error: &CaughtError<'_>, source: &str, timed_out: bool) -> CompileError {
    let (line, column) = first_token(source);
    let (position, message) = match error {
        CaughtError::Exception(e) => {
            let position = e.stack().and_then(|s| stack_position(&s));
            let name: Option<String> = e.get("name").ok();
            let message = e.message().unwrap_or_default();
            let message = match name.as_deref() {
                Some("SyntaxError") | None => message,
                Some(name) => format!("{name} while evaluating the source: {message}"),
            };
            (position, message)
        }
        other => (
            None,
            format!("exception while evaluating the source: {}", describe(other)),
        ),
    };
    let message = if timed_out {
        "the source did not finish evaluating within the time limit".to_owned()
    } else {
        message
    };
    let (line, column, message) = match position {
        // Past the source: the parser reached the closing parenthesis added around it.
        Some((l, _)) if !timed_out && l > line_count(source) => {
            let (line, column) = end_of(source);
            (line, column, "unexpected end of the source".to_owned())
        }
        Some((l, c)) => {
            let (line, column) = source_position(source, l, c);
            (line, column, message)
        }
        None => (line, column, message),
    };
    CompileError::Syntax(SyntaxError {
        line,
        column,
        message,
    })
}

/// The first `sync function:<line>:<column>` of a stack trace (positions in the wrapped
/// source: a byte column, the first line shifted by the opening parenthesis).
fn stack_position(stack: &str) -> Option<(u32, u32)> {
    let marker = format!("{SOURCE_NAME}:");
    let start = stack.find(&marker)? + marker.len();
    let mut parts = stack[start..].splitn(3, |c: char| !c.is_ascii_digit());
    let line = parts.next()?.parse().ok()?;
    let column = parts.next()?.parse().ok()?;
    Some((line, column))
}

/// The number of lines of `source` (1 for an empty one).
fn line_count(source: &str) -> u32 {
    u32::try_from(source.split('\n').count()).unwrap_or(u32::MAX)
}

/// The position just after the last character of `source`.
fn end_of(source: &str) -> (u32, u32) {
    let last = source.rsplit('\n').next().unwrap_or("");
    let column = u32::try_from(last.chars().count() + 1).unwrap_or(u32::MAX);
    (line_count(source), column)
}

/// Converts an engine position in `(source\n)` (a byte column, the first line shifted by
/// the parenthesis) to a 1-based line and character column of `source`; a position past
/// the end of the source names its end.
fn source_position(source: &str, line: u32, column: u32) -> (u32, u32) {
    let index = usize::try_from(line.saturating_sub(1)).unwrap_or(usize::MAX);
    let Some(text) = source.split('\n').nth(index).filter(|_| line > 0) else {
        return end_of(source);
    };
    let shift = usize::from(line == 1);
    let byte_column = usize::try_from(column)
        .unwrap_or(usize::MAX)
        .saturating_sub(shift)
        .max(1);
    let chars = text
        .char_indices()
        .take_while(|(i, _)| *i < byte_column - 1)
        .count();
    (line, u32::try_from(chars + 1).unwrap_or(u32::MAX))
}

/// The line and column of the first character of `source` that is not white space.
fn first_token(source: &str) -> (u32, u32) {
    let mut line = 1;
    let mut column = 1;
    for c in source.chars() {
        match c {
            '\n' => {
                line += 1;
                column = 1;
            }
            c if c.is_whitespace() => column += 1,
            _ => break,
        }
    }
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cost of one call inside a worker, without the hand-over between threads (run
    /// with `--release -- --ignored --nocapture`; prints, asserts nothing about time).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn engine_cost() {
        let options = JsOptions::default();
        let engine = Engine::new("function(doc){channel(doc.channels);}", &options).unwrap();
        let (reply, _answers) = mpsc::sync_channel(1);
        let job = Job {
            doc: r#"{"_id":"d","_rev":"1-a","channels":["a","b"],"title":"hello","n":42}"#.into(),
            old: "null".into(),
            user: "null".into(),
            reply,
        };
        let rounds: u32 = 20_000;
        for _ in 0..1000 {
            assert!(engine.route(&job, &options).0.is_ok());
        }
        let start = Instant::now();
        for _ in 0..rounds {
            assert!(engine.route(&job, &options).0.is_ok());
        }
        println!("engine only: {:?} per call", start.elapsed() / rounds);
    }

    #[test]
    fn positions() {
        assert_eq!(
            stack_position("    at sync function:3:7\n    at <eval>"),
            Some((3, 7))
        );
        assert_eq!(
            stack_position("    at f (sync function:12:40)\n"),
            Some((12, 40))
        );
        assert_eq!(stack_position("    at <eval> (x:1:2)"), None);
        assert_eq!(source_position("function(){ ) }", 1, 14), (1, 13));
        assert_eq!(source_position("a\nbé c", 2, 5), (2, 4));
        assert_eq!(source_position("function(){\n  x(", 3, 1), (2, 5));
        assert_eq!(end_of(""), (1, 1));
        assert_eq!(end_of("a\nbé"), (2, 3));
        assert_eq!(line_count("a\n"), 2);
        assert_eq!(first_token("\n\n   function"), (3, 4));
        assert_eq!(first_token("42"), (1, 1));
    }
}

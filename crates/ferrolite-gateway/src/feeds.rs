//! `_changes` feeds: `normal`, `longpoll` and `continuous`.
//!
//! A request that may read everything (the admin port, or a user with `*`) reads the
//! database's change feed; any other reads the channel index, over the channels it may read
//! (narrowed by `filter=sync_gateway/bychannel`), and also sees the removal of a document
//! from those channels as an entry with `"removed": [channels]`. Live feeds wait on the
//! database's index notifications and stream their output.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::channels::Access;
use crate::error::ApiError;
use crate::rest::{blocking, doc_json};
use crate::state::{Db, Principal};

/// The shortest heartbeat interval accepted (shorter ones are raised to it).
const MIN_HEARTBEAT: Duration = Duration::from_millis(25_000);
/// How long an idle live feed lasts unless `timeout` says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(300_000);
/// The longest `timeout` accepted (longer ones are lowered to it).
const MAX_TIMEOUT: Duration = Duration::from_millis(900_000);

/// Who reads a feed. Access is evaluated again at every read of a live feed, so grants
/// given or taken while it runs apply to what follows.
#[derive(Debug, Clone)]
pub(crate) enum Reader {
    /// The admin port: everything.
    Admin,
    /// A public request by this user (`None` = GUEST).
    User(Principal),
}

impl Reader {
    fn access(&self, db: &Db) -> Access {
        match self {
            Reader::Admin => Access::All,
            Reader::User(principal) => db.access_of(principal),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FeedKind {
    Normal,
    Longpoll,
    Continuous,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Filter {
    None,
    /// `sync_gateway/bychannel`: only these channels (`*` = every readable channel).
    Channels(Vec<String>),
    /// `_doc_ids`: only these documents.
    DocIds(Vec<String>),
}

/// The parameters of a `_changes` request.
#[derive(Debug, Clone)]
struct ChangesOptions {
    feed: FeedKind,
    since: u64,
    limit: Option<usize>,
    include_docs: bool,
    active_only: bool,
    filter: Filter,
    heartbeat: Option<Duration>,
    timeout: Option<Duration>,
}

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params.get(name).is_some_and(|v| v == "true")
}

/// A list given as a JSON array of strings or as comma-separated names.
fn list(text: &str) -> Vec<String> {
    let text = text.trim();
    if text.starts_with('[') {
        if let Ok(items) = serde_json::from_str::<Vec<String>>(text) {
            return items;
        }
    }
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A duration in milliseconds; unparsable values count as absent.
fn millis(params: &HashMap<String, String>, name: &str) -> Option<Duration> {
    params
        .get(name)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// `since` as a plain number or a JSON string (`"12"`, or `"5:12"` → 12).
pub(crate) fn parse_since(text: &str) -> Result<u64, ApiError> {
    let text = text.trim().trim_matches('"');
    if text.is_empty() {
        return Ok(0);
    }
    let last = text.rsplit(':').next().unwrap_or(text);
    last.parse()
        .map_err(|_| ApiError::bad_request(format!("Invalid sequence {text:?}")))
}

impl ChangesOptions {
    fn parse(params: &HashMap<String, String>) -> Result<ChangesOptions, ApiError> {
        let feed = match params.get("feed").map(String::as_str) {
            None | Some("" | "normal") => FeedKind::Normal,
            Some("longpoll") => FeedKind::Longpoll,
            Some("continuous") => FeedKind::Continuous,
            Some("websocket") => {
                return Err(ApiError::bad_request("feed=websocket is not supported"))
            }
            Some(_) => return Err(ApiError::bad_request("Unknown feed type")),
        };
        let filter = match params.get("filter").map(String::as_str) {
            None | Some("") => Filter::None,
            Some("sync_gateway/bychannel") => {
                let Some(channels) = params.get("channels") else {
                    return Err(ApiError::bad_request("Missing 'channels' filter parameter"));
                };
                let channels = list(channels);
                if channels.is_empty() {
                    return Err(ApiError::bad_request("Empty channel list"));
                }
                Filter::Channels(channels)
            }
            Some("_doc_ids") => {
                if feed != FeedKind::Normal {
                    return Err(ApiError::bad_request(
                        "Filter '_doc_ids' is only valid for feed=normal replications",
                    ));
                }
                let Some(ids) = params.get("doc_ids") else {
                    return Err(ApiError::bad_request("Missing 'doc_ids' filter parameter"));
                };
                let ids = list(ids);
                if ids.is_empty() {
                    return Err(ApiError::bad_request("Empty doc_ids list"));
                }
                Filter::DocIds(ids)
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "Unknown filter; try sync_gateway/bychannel or _doc_ids",
                ))
            }
        };
        let heartbeat = millis(params, "heartbeat")
            .filter(|d| !d.is_zero())
            .map(|d| d.max(MIN_HEARTBEAT));
        // An explicit timeout of 0 waits for ever; with a heartbeat and no timeout the feed
        // lasts until the client leaves.
        let timeout = match millis(params, "timeout") {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d.min(MAX_TIMEOUT)),
            None if heartbeat.is_some() => None,
            None => Some(DEFAULT_TIMEOUT),
        };
        Ok(ChangesOptions {
            feed,
            since: params.get("since").map_or(Ok(0), |s| parse_since(s))?,
            limit: params
                .get("limit")
                .and_then(|l| l.trim().parse::<usize>().ok())
                .filter(|l| *l > 0),
            include_docs: flag(params, "include_docs"),
            active_only: flag(params, "active_only"),
            filter,
            heartbeat,
            timeout,
        })
    }
}

/// Entries read from a feed, and the sequence to continue after.
#[derive(Debug, Default)]
struct Batch {
    rows: Vec<Value>,
    last_seq: u64,
}

/// Answers a `_changes` request (its parameters already merged from query and body).
pub(crate) async fn changes(
    db: Arc<Db>,
    reader: Reader,
    params: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let options = Arc::new(ChangesOptions::parse(params)?);
    // Subscribed before the first read, so nothing committed after it is missed.
    let updates = db.subscribe();
    let first = read(&db, &reader, &options, options.since, options.limit).await?;
    match options.feed {
        FeedKind::Normal => Ok(normal_response(&first)),
        FeedKind::Longpoll if !first.rows.is_empty() => Ok(normal_response(&first)),
        FeedKind::Longpoll | FeedKind::Continuous => {
            let feed = LiveFeed {
                db,
                reader,
                options,
                updates,
            };
            Ok(feed.start(first))
        }
    }
}

fn normal_response(batch: &Batch) -> Response {
    (
        StatusCode::OK,
        Json(json!({"results": batch.rows, "last_seq": batch.last_seq.to_string()})),
    )
        .into_response()
}

/// Reads the entries after `since` off the async workers.
async fn read(
    db: &Arc<Db>,
    reader: &Reader,
    options: &Arc<ChangesOptions>,
    since: u64,
    limit: Option<usize>,
) -> Result<Batch, ApiError> {
    let (db, reader, options) = (db.clone(), reader.clone(), options.clone());
    blocking(move || {
        let access = reader.access(&db);
        collect(&db, &access, &options, since, limit)
    })
    .await
}

/// The entries after `since` that `access` may see, at most `limit`.
fn collect(
    db: &Db,
    access: &Access,
    options: &ChangesOptions,
    since: u64,
    limit: Option<usize>,
) -> Result<Batch, ApiError> {
    if let Filter::DocIds(ids) = &options.filter {
        return by_doc_ids(db, access, ids, options, since, limit);
    }
    match asked_channels(access, &options.filter) {
        None => scan(db, options, since, limit),
        Some(channels) => from_index(db, &channels, options, since, limit),
    }
}

/// The channels a feed reads from the index, or `None` to read the whole change feed.
fn asked_channels(access: &Access, filter: &Filter) -> Option<Vec<String>> {
    let wanted = match filter {
        Filter::Channels(c) if !c.iter().any(|c| c == "*") => Some(c),
        _ => None,
    };
    match (access, wanted) {
        (Access::All, None) => None,
        (Access::All, Some(wanted)) => Some(wanted.clone()),
        (Access::Channels(readable), None) => Some(readable.keys().cloned().collect()),
        (Access::Channels(readable), Some(wanted)) => Some(
            wanted
                .iter()
                .filter(|c| readable.contains_key(*c))
                .cloned()
                .collect(),
        ),
    }
}

fn full(rows: &[Value], limit: Option<usize>) -> bool {
    limit.is_some_and(|l| rows.len() >= l)
}

/// One entry: `seq`, `id`, `changes`, and `deleted`, `removed`, `doc` when they apply.
fn entry(
    db: &Db,
    seq: u64,
    id: &str,
    rev: &str,
    deleted: bool,
    removed: Option<Vec<String>>,
    include_docs: bool,
) -> Result<Value, ApiError> {
    let mut row = json!({"seq": seq, "id": id, "changes": [{"rev": rev}]});
    if deleted {
        row["deleted"] = Value::Bool(true);
    }
    if include_docs {
        row["doc"] = if removed.is_some() {
            // What a reader that lost access gets instead of the revision.
            json!({"_id": id, "_rev": rev, "_removed": true})
        } else {
            match db.database.document(id)? {
                Some(doc) if !deleted => doc_json(&doc),
                _ => json!({"_id": id, "_rev": rev, "_deleted": true}),
            }
        };
    }
    if let Some(channels) = removed {
        row["removed"] = json!(channels);
    }
    Ok(row)
}

/// The whole database's change feed (for readers of everything).
fn scan(
    db: &Db,
    options: &ChangesOptions,
    since: u64,
    limit: Option<usize>,
) -> Result<Batch, ApiError> {
    let mut batch = Batch {
        rows: Vec::new(),
        last_seq: since,
    };
    for change in db.database.changes(since)? {
        if full(&batch.rows, limit) {
            break;
        }
        let change = change?;
        batch.last_seq = change.sequence;
        if options.active_only && change.deleted {
            continue;
        }
        let row = entry(
            db,
            change.sequence,
            &change.id,
            &change.rev.to_string(),
            change.deleted,
            None,
            options.include_docs,
        )?;
        batch.rows.push(row);
    }
    Ok(batch)
}

/// The channel index's entries of `channels` after `since`, removals included.
fn from_index(
    db: &Db,
    channels: &[String],
    options: &ChangesOptions,
    since: u64,
    limit: Option<usize>,
) -> Result<Batch, ApiError> {
    // Commits the indexer has not reached yet are indexed now.
    db.catch_up()?;
    let mut batch = Batch {
        rows: Vec::new(),
        last_seq: since,
    };
    for (seq, id, removed) in db.channels.changes_in(channels, since, usize::MAX) {
        if full(&batch.rows, limit) {
            break;
        }
        batch.last_seq = seq;
        // Purged since.
        let Some(current) = db.channels.entry(&id) else {
            continue;
        };
        if options.active_only && (removed || current.deleted) {
            continue;
        }
        let removed = removed.then(|| channels_left(db, channels, seq, &id));
        let row = entry(
            db,
            seq,
            &id,
            &current.rev,
            current.deleted,
            removed,
            options.include_docs,
        )?;
        batch.rows.push(row);
    }
    Ok(batch)
}

/// Which of `channels` document `id` left at sequence `seq`.
fn channels_left(db: &Db, channels: &[String], seq: u64, id: &str) -> Vec<String> {
    let mut left: Vec<String> = channels
        .iter()
        .filter(|c| {
            db.channels
                .changes_in(std::slice::from_ref(*c), seq.saturating_sub(1), 1)
                .first()
                .is_some_and(|(s, doc, removed)| *s == seq && doc == id && *removed)
        })
        .cloned()
        .collect();
    left.sort();
    left
}

/// The current state of the listed documents that changed after `since`.
fn by_doc_ids(
    db: &Db,
    access: &Access,
    ids: &[String],
    options: &ChangesOptions,
    since: u64,
    limit: Option<usize>,
) -> Result<Batch, ApiError> {
    db.catch_up()?;
    let mut found: Vec<(u64, String, crate::channels::DocEntry)> = ids
        .iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter_map(|id| db.channels.entry(id).map(|e| (e.sequence, id.clone(), e)))
        .filter(|(seq, _, e)| *seq > since && access.can_read(&e.channels))
        .collect();
    found.sort_by_key(|(seq, _, _)| *seq);
    let mut batch = Batch {
        rows: Vec::new(),
        last_seq: since,
    };
    for (seq, id, current) in found {
        if full(&batch.rows, limit) {
            break;
        }
        batch.last_seq = seq;
        if options.active_only && current.deleted {
            continue;
        }
        let row = entry(
            db,
            seq,
            &id,
            &current.rev,
            current.deleted,
            None,
            options.include_docs,
        )?;
        batch.rows.push(row);
    }
    Ok(batch)
}

// ---------------------------------------------------------------------------------------
// Live feeds

/// A response body fed by a channel; dropping it (the client left) closes the channel.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// What ended a wait.
enum Wake {
    /// The client went away.
    Closed,
    /// Time for a keep-alive newline.
    Heartbeat,
    /// The feed was idle for its timeout, or the database went away.
    Timeout,
    /// The index or someone's access changed.
    Changed,
}

/// A `longpoll` or `continuous` feed, streamed by a task of its own.
struct LiveFeed {
    db: Arc<Db>,
    reader: Reader,
    options: Arc<ChangesOptions>,
    updates: watch::Receiver<u64>,
}

impl LiveFeed {
    /// Starts streaming after `first`, the entries read when the request arrived.
    fn start(self, first: Batch) -> Response {
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let content_type = if self.options.feed == FeedKind::Continuous {
            "application/octet-stream"
        } else {
            "application/json"
        };
        tokio::spawn(self.run(first, tx));
        let mut response = Response::new(Body::new(ChannelBody(rx)));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, max-age=0, no-cache, no-store"),
        );
        response
    }

    async fn run(mut self, first: Batch, tx: mpsc::Sender<Bytes>) {
        let continuous = self.options.feed == FeedKind::Continuous;
        let idle = self.options.timeout;
        let mut heartbeat = self.options.heartbeat.map(|period| {
            let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticks
        });
        let mut deadline = idle.map(|t| Instant::now() + t);
        let mut remaining = self.options.limit;
        let mut since = first.last_seq;
        let mut rows = first.rows;
        if !continuous && send(&tx, "{\"results\":[\n".to_owned()).await.is_err() {
            return;
        }
        loop {
            if !rows.is_empty() {
                let text = if continuous {
                    rows.iter().map(|r| format!("{r}\n")).collect::<String>()
                } else {
                    let joined: Vec<String> = rows.iter().map(Value::to_string).collect();
                    format!("{}\n", joined.join("\n,"))
                };
                if send(&tx, text).await.is_err() {
                    return;
                }
                if !continuous {
                    break;
                }
                if let Some(left) = remaining.as_mut() {
                    *left = left.saturating_sub(rows.len());
                    if *left == 0 {
                        break;
                    }
                }
                rows.clear();
                deadline = idle.map(|t| Instant::now() + t);
            }
            match wait(&mut self.updates, &tx, heartbeat.as_mut(), deadline).await {
                Wake::Closed => return,
                Wake::Timeout => break,
                Wake::Heartbeat => {
                    if send(&tx, "\n".to_owned()).await.is_err() {
                        return;
                    }
                }
                Wake::Changed => {
                    match read(&self.db, &self.reader, &self.options, since, remaining).await {
                        Ok(batch) => {
                            since = since.max(batch.last_seq);
                            rows = batch.rows;
                        }
                        Err(e) => {
                            tracing::warn!(target: "ferrolite::gateway", database = %self.db.name,
                                "changes feed ended: {}", e.reason);
                            break;
                        }
                    }
                }
            }
        }
        let end = if continuous {
            format!("{{\"last_seq\":\"{since}\"}}\n")
        } else {
            format!("],\n\"last_seq\":\"{since}\"}}\n")
        };
        let _ = send(&tx, end).await;
    }
}

async fn send(tx: &mpsc::Sender<Bytes>, text: String) -> Result<(), ()> {
    tx.send(Bytes::from(text)).await.map_err(|_| ())
}

/// Waits for the client to leave, a heartbeat, the idle deadline or a change — checked in
/// that order when several are due.
async fn wait(
    updates: &mut watch::Receiver<u64>,
    tx: &mpsc::Sender<Bytes>,
    heartbeat: Option<&mut Interval>,
    deadline: Option<Instant>,
) -> Wake {
    let beat = async {
        match heartbeat {
            Some(ticks) => {
                ticks.tick().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    let idle = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        biased;
        () = tx.closed() => Wake::Closed,
        () = beat => Wake::Heartbeat,
        () = idle => Wake::Timeout,
        changed = updates.changed() => {
            if changed.is_ok() { Wake::Changed } else { Wake::Timeout }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn options() {
        let o = ChangesOptions::parse(&params(&[])).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(o.feed, FeedKind::Normal);
        assert_eq!(o.timeout, Some(DEFAULT_TIMEOUT));
        assert_eq!(o.heartbeat, None);
        let o = ChangesOptions::parse(&params(&[
            ("feed", "continuous"),
            ("heartbeat", "10"),
            ("since", "\"3:12\""),
            ("limit", "0"),
        ]))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(o.heartbeat, Some(MIN_HEARTBEAT));
        assert_eq!(o.timeout, None);
        assert_eq!(o.since, 12);
        assert_eq!(o.limit, None);
        let o = ChangesOptions::parse(&params(&[("timeout", "99999999")]))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(o.timeout, Some(MAX_TIMEOUT));
        for bad in [
            params(&[("feed", "nope")]),
            params(&[("filter", "app/by_type")]),
            params(&[("filter", "sync_gateway/bychannel")]),
            params(&[("filter", "_doc_ids"), ("doc_ids", "[]")]),
            params(&[
                ("filter", "_doc_ids"),
                ("doc_ids", "a"),
                ("feed", "longpoll"),
            ]),
            params(&[("since", "x")]),
        ] {
            let e = ChangesOptions::parse(&bad).map(|_| ()).err();
            assert_eq!(
                e.map(|e| e.status),
                Some(StatusCode::BAD_REQUEST),
                "{bad:?}"
            );
        }
        let o = ChangesOptions::parse(&params(&[
            ("filter", "_doc_ids"),
            ("doc_ids", "[\"a\",\"b,c\"]"),
        ]))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(o.filter, Filter::DocIds(vec!["a".into(), "b,c".into()]));
        assert_eq!(list("a, b,,c"), ["a", "b", "c"]);
    }

    #[test]
    fn channels_asked_are_intersected_with_access() {
        let access = Access::Channels([("a".to_owned(), 0), ("!".to_owned(), 0)].into());
        let mut asked = asked_channels(&access, &Filter::Channels(vec!["a".into(), "b".into()]));
        assert_eq!(asked, Some(vec!["a".to_owned()]));
        asked = asked_channels(&access, &Filter::None);
        if let Some(a) = asked.as_mut() {
            a.sort();
        }
        assert_eq!(asked, Some(vec!["!".to_owned(), "a".to_owned()]));
        assert_eq!(asked_channels(&Access::All, &Filter::None), None);
        assert_eq!(
            asked_channels(&Access::All, &Filter::Channels(vec!["*".into()])),
            None
        );
        assert_eq!(
            asked_channels(&Access::All, &Filter::Channels(vec!["b".into()])),
            Some(vec!["b".to_owned()])
        );
    }
}

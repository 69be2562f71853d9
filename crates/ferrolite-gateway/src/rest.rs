//! The REST API: root, database info, documents and their attachments, `_all_docs`,
//! `_bulk_docs`, `_changes` (feeds in [`crate::feeds`]), `_purge`, users and sessions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use ferrolite::{Blob, ConcurrencyControl, Document, MutableDocument};
use serde_json::{json, Map, Value};

use crate::channels::{Access, Routing, UserContext};
use crate::error::ApiError;
use crate::feeds::{self, Reader};
use crate::principals::{hash_password, Role, User};
use crate::state::{self, Db, Principal, Shared, GUEST, SESSION_COOKIE, SESSION_TTL};

/// Largest request body accepted (Sync Gateway's document limit is 20 MB).
pub const MAX_BODY_SIZE: usize = 20 * 1024 * 1024;

/// What a handler sees: the databases, and which listener it runs on.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) shared: Arc<Shared>,
    pub(crate) admin: bool,
    /// The listener serves HTTPS: session cookies are marked `Secure`.
    pub(crate) secure: bool,
}

type ApiResult = Result<Response, ApiError>;
type Params = Query<HashMap<String, String>>;

/// The router of one listener.
pub(crate) fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/", get(root))
        .route("/{db}/", get(db_info).post(post_doc))
        .route("/{db}/_all_docs", get(all_docs).post(all_docs))
        .route("/{db}/_bulk_docs", post(bulk_docs))
        .route("/{db}/_changes", get(changes).post(changes))
        .route(
            "/{db}/_session",
            get(get_session).post(post_session).delete(delete_session),
        )
        .route("/{db}/_blipsync", get(crate::blipsync::blipsync))
        .route(
            "/{db}/{docid}",
            get(get_doc).put(put_doc).delete(delete_doc),
        )
        .route(
            "/{db}/{docid}/{*attachment}",
            get(get_attachment).put(put_attachment),
        );
    if state.admin {
        router = router
            .route("/{db}/_purge", post(purge))
            .route("/{db}/_user/", get(list_users).post(post_user))
            .route(
                "/{db}/_user/{name}",
                put(put_user).get(get_user).delete(delete_user),
            )
            .route("/{db}/_role/", get(list_roles).post(post_role))
            .route(
                "/{db}/_role/{name}",
                put(put_role).get(get_role).delete(delete_role),
            );
    }
    router
        .fallback(|| async { ApiError::not_found("unknown URL") })
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed"),
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_SIZE))
        .with_state(state)
}

impl AppState {
    /// The database, or 404 `no such database`.
    fn db(&self, name: &str) -> Result<Arc<Db>, ApiError> {
        self.shared
            .databases
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no such database {name:?}")))
    }

    /// The database and who asks: admin requests are not authenticated.
    pub(crate) fn authorized(
        &self,
        name: &str,
        headers: &HeaderMap,
    ) -> Result<(Arc<Db>, Principal), ApiError> {
        let db = self.db(name)?;
        if self.admin {
            return Ok((db, None));
        }
        let principal = db.authenticate(headers)?;
        Ok((db, principal))
    }

    /// The database and the writer as the sync function sees it: `None` on the admin port.
    pub(crate) fn writer(
        &self,
        name: &str,
        headers: &HeaderMap,
    ) -> Result<(Arc<Db>, Option<UserContext>), ApiError> {
        let (db, principal) = self.authorized(name, headers)?;
        let writer = (!self.admin).then(|| db.user_context(&principal));
        Ok((db, writer))
    }

    /// The database and what the request may read: everything on the admin port, the
    /// user's channels on the public one.
    pub(crate) fn reader(
        &self,
        name: &str,
        headers: &HeaderMap,
    ) -> Result<(Arc<Db>, Access), ApiError> {
        let (db, principal) = self.authorized(name, headers)?;
        let access = if self.admin {
            Access::All
        } else {
            db.access_of(&principal)
        };
        Ok((db, access))
    }
}

/// Runs blocking database work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)?
}

/// A request body: 413 when too large.
fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Document too large!")
        } else {
            ApiError::new(e.status(), e.body_text())
        }
    })
}

/// A JSON object from a request body: 413 when too large, 400 when malformed.
fn json_object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, ApiError> {
    let bytes = body_bytes(body)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("Document body is empty"));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("Invalid JSON: expected an object")),
        Err(e) => Err(ApiError::bad_request(format!("Invalid JSON: \"{e}\""))),
    }
}

fn ok_json(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn with_etag(mut response: Response, rev: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{rev}\"")) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

async fn root(State(state): State<AppState>) -> Response {
    let mut body = json!({
        "couchdb": "Welcome",
        "vendor": {"name": "Couchbase Sync Gateway", "version": "3.3"},
        "version": format!("Couchbase Sync Gateway/3.3.0(ferrolite {})", env!("CARGO_PKG_VERSION")),
        "persistent_config": false,
    });
    if state.admin {
        body["ADMIN"] = Value::Bool(true);
    }
    ok_json(StatusCode::OK, body)
}

async fn db_info(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let (db, _) = state.authorized(&name, &headers)?;
    let seq = db.database.last_sequence()?;
    Ok(ok_json(
        StatusCode::OK,
        json!({
            "db_name": db.name,
            "update_seq": seq,
            "committed_update_seq": seq,
            "instance_start_time": db.start_time,
            "compact_running": false,
            "purge_seq": 0,
            "disk_format_version": 0,
            "state": "Online",
        }),
    ))
}

// ---------------------------------------------------------------------------------------
// Documents

/// A document as the REST API shows it: `_id`, `_rev`, properties, `_attachments` stubs.
pub(crate) fn doc_json(doc: &Document) -> Value {
    let mut body = Map::new();
    body.insert("_id".into(), Value::String(doc.id().to_owned()));
    body.insert("_rev".into(), Value::String(doc.revision_id().to_string()));
    let properties = doc.properties();
    for (k, v) in properties {
        body.insert(k.clone(), v.clone());
    }
    let mut attachments = Map::new();
    let revpos = generation(&doc.revision_id().to_string());
    for (k, v) in properties {
        collect_blobs(
            v,
            &format!("/{}", escape_pointer(k)),
            revpos,
            &mut attachments,
        );
    }
    if !attachments.is_empty() {
        body.insert("_attachments".into(), Value::Object(attachments));
    }
    Value::Object(body)
}

fn generation(rev: &str) -> u64 {
    rev.split_once('-')
        .and_then(|(g, _)| g.parse().ok())
        .unwrap_or(1)
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Finds blob dictionaries (`"@type":"blob"`) and adds a stub `blob_<pointer>` for each.
fn collect_blobs(value: &Value, pointer: &str, revpos: u64, out: &mut Map<String, Value>) {
    match value {
        Value::Object(map) if map.get("@type").and_then(Value::as_str) == Some("blob") => {
            let mut stub = Map::new();
            for key in ["content_type", "digest", "length"] {
                if let Some(v) = map.get(key) {
                    stub.insert(key.into(), v.clone());
                }
            }
            stub.insert("revpos".into(), json!(revpos));
            stub.insert("stub".into(), Value::Bool(true));
            out.insert(format!("blob_{pointer}"), Value::Object(stub));
        }
        Value::Object(map) => {
            for (k, v) in map {
                collect_blobs(v, &format!("{pointer}/{}", escape_pointer(k)), revpos, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_blobs(v, &format!("{pointer}/{i}"), revpos, out);
            }
        }
        _ => {}
    }
}

async fn get_doc(
    State(state): State<AppState>,
    Path((name, docid)): Path<(String, String)>,
    Query(params): Params,
    headers: HeaderMap,
) -> ApiResult {
    let (db, access) = state.reader(&name, &headers)?;
    let doc = blocking(move || {
        let doc = db.database.document(&docid)?;
        match doc {
            // Sync Gateway answers 403 "forbidden" for a document in none of the user's channels.
            Some(doc) if !db.can_read_id(&access, doc.id()) => {
                Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden"))
            }
            other => Ok(other),
        }
    })
    .await?;
    let Some(doc) = doc else {
        return Err(ApiError::not_found("missing"));
    };
    let rev = doc.revision_id().to_string();
    if let Some(wanted) = params.get("rev") {
        // Only the current revision is served for now.
        if *wanted != rev {
            return Err(ApiError::not_found("missing"));
        }
    }
    Ok(with_etag(ok_json(StatusCode::OK, doc_json(&doc)), &rev))
}

/// The outcome of one document write: its ID and new revision.
pub(crate) struct Written {
    id: String,
    rev: String,
}

/// The sync function's view of a refused write.
fn rejected(r: crate::channels::Reject) -> ApiError {
    ApiError::new(
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::FORBIDDEN),
        r.message,
    )
}

/// Runs the sync function on a new revision of `docid`: `props` (without the `_id`/`_rev`
/// keys, which are added), over the current revision `existing`, written by `writer`
/// (`None` on the admin port).
fn route(
    db: &Db,
    docid: &str,
    props: &Map<String, Value>,
    deleted: bool,
    existing: Option<&Document>,
    writer: Option<&UserContext>,
) -> Result<Routing, ApiError> {
    let mut doc = props.clone();
    doc.insert("_id".into(), Value::String(docid.to_owned()));
    if deleted {
        doc.insert("_deleted".into(), Value::Bool(true));
    }
    let old = existing.map(|current| {
        let mut old = current.properties().clone();
        old.insert("_id".into(), Value::String(docid.to_owned()));
        old
    });
    db.router
        .route(&doc, old.as_ref(), writer)
        .map_err(rejected)
}

/// Sets the blobs of Sync Gateway's inline attachments (`"_attachments": {"name":
/// {"content_type": …, "data": "<base64>"}}`) as top-level blob properties: `name`, or the
/// property a `blob_/name` attachment names. Stubs (`"stub": true`) are left alone: their
/// blob is already a property.
fn set_inline_attachments(
    doc: &mut MutableDocument,
    attachments: Option<Value>,
) -> Result<(), ApiError> {
    let Some(attachments) = attachments else {
        return Ok(());
    };
    let Value::Object(attachments) = attachments else {
        return Err(ApiError::bad_request("_attachments must be an object"));
    };
    for (name, att) in attachments {
        let Value::Object(att) = att else {
            return Err(ApiError::bad_request(format!(
                "attachment {name:?} must be an object"
            )));
        };
        let Some(data) = att.get("data") else {
            continue;
        };
        let bytes = data
            .as_str()
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
            .ok_or_else(|| {
                ApiError::bad_request(format!("attachment {name:?}: data is not base64"))
            })?;
        let content_type = att
            .get("content_type")
            .and_then(Value::as_str)
            .unwrap_or("application/octet-stream");
        let property = attachment_property(&name)?;
        doc.set_blob(property, Blob::from_bytes(content_type, bytes));
    }
    Ok(())
}

/// The top-level property an attachment name stands for: `blob_/image` → `image`, any other
/// name → itself.
pub(crate) fn attachment_property(name: &str) -> Result<String, ApiError> {
    let property = match name.strip_prefix("blob_/") {
        Some(pointer) if !pointer.contains('/') => pointer.replace("~1", "/").replace("~0", "~"),
        Some(_) => {
            return Err(ApiError::bad_request(
                "only attachments of top-level properties can be written",
            ))
        }
        None => name.to_owned(),
    };
    if property.is_empty() || property.starts_with('_') || property.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "invalid attachment name {name:?}"
        )));
    }
    Ok(property)
}

/// Writes `body` as a new revision of `docid` on top of `parent` (Sync Gateway's PUT
/// rules: no parent on a live document → 409 "Document exists"; a stale parent → 409
/// "Document revision conflict"), after the sync function accepted it.
fn write_doc(
    db: &Db,
    docid: &str,
    parent: Option<String>,
    mut body: Map<String, Value>,
    writer: Option<&UserContext>,
) -> Result<Written, ApiError> {
    body.remove("_id");
    body.remove("_rev");
    let attachments = body.remove("_attachments");
    body.remove("_revisions");
    body.remove("_exp");
    if body.keys().any(|k| k.starts_with('_') && k != "_deleted") {
        return Err(ApiError::bad_request(
            "user defined top level properties beginning with '_' are not allowed in document body",
        ));
    }
    if body.remove("_deleted").and_then(|v| v.as_bool()) == Some(true) {
        return delete_rev(db, docid, parent, writer);
    }
    let existing = db.database.document(docid)?;
    let mut doc = match (&existing, parent) {
        (Some(_), None) => return Err(ApiError::conflict("Document exists")),
        (None, Some(_)) => return Err(ApiError::conflict("Document revision conflict")),
        (None, None) => MutableDocument::with_id(docid),
        (Some(current), Some(parent)) => {
            if current.revision_id().to_string() != parent {
                return Err(ApiError::conflict("Document revision conflict"));
            }
            current.to_mutable()
        }
    };
    doc.set_properties(body);
    set_inline_attachments(&mut doc, attachments)?;
    save_routed(db, doc, existing.as_ref(), writer)
}

/// Routes and saves `doc` over `existing`, then indexes it.
pub(crate) fn save_routed(
    db: &Db,
    mut doc: MutableDocument,
    existing: Option<&Document>,
    writer: Option<&UserContext>,
) -> Result<Written, ApiError> {
    let routing = route(db, doc.id(), doc.properties(), false, existing, writer)?;
    if !db
        .database
        .save_with_concurrency_control(&mut doc, ConcurrencyControl::FailOnConflict)?
    {
        return Err(ApiError::conflict("Document revision conflict"));
    }
    let rev = doc
        .revision_id()
        .map(ToString::to_string)
        .ok_or_else(|| ApiError::internal("the saved document has no revision"))?;
    db.index_written(doc.id(), &rev, routing);
    Ok(Written {
        id: doc.id().to_owned(),
        rev,
    })
}

/// Deletes `docid` at revision `parent`, returning the tombstone's revision.
fn delete_rev(
    db: &Db,
    docid: &str,
    parent: Option<String>,
    writer: Option<&UserContext>,
) -> Result<Written, ApiError> {
    let current = db
        .database
        .document(docid)?
        .ok_or_else(|| ApiError::not_found("missing"))?;
    if parent.as_deref() != Some(current.revision_id().to_string().as_str()) {
        return Err(ApiError::conflict("Document revision conflict"));
    }
    let routing = route(db, docid, &Map::new(), true, Some(&current), writer)?;
    if !db
        .database
        .delete_with_concurrency_control(&current, ConcurrencyControl::FailOnConflict)?
    {
        return Err(ApiError::conflict("Document revision conflict"));
    }
    // The tombstone's revision: the document's entry in the change feed after the delete.
    let mut rev = None;
    for change in db.database.changes(current.sequence())? {
        let change = change?;
        if change.id == docid {
            rev = Some(change.rev.to_string());
        }
    }
    let rev = rev.ok_or_else(|| ApiError::internal("the tombstone is not in the change feed"))?;
    db.index_written(docid, &rev, routing);
    Ok(Written {
        id: docid.to_owned(),
        rev,
    })
}

/// The parent revision from `?rev=`, `If-Match` and the body's `_rev`, which must agree.
fn parent_rev(
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Option<&Map<String, Value>>,
) -> Result<Option<String>, ApiError> {
    let mut found: Option<String> = None;
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_matches('"').to_owned());
    let in_body = body
        .and_then(|b| b.get("_rev"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    for candidate in [params.get("rev").cloned(), if_match, in_body]
        .into_iter()
        .flatten()
    {
        match &found {
            Some(f) if *f != candidate => {
                return Err(ApiError::bad_request("Revision IDs provided do not match"))
            }
            _ => found = Some(candidate),
        }
    }
    Ok(found)
}

fn written_response(status: StatusCode, w: &Written) -> Response {
    with_etag(
        ok_json(status, json!({"id": w.id, "ok": true, "rev": w.rev})),
        &w.rev,
    )
}

async fn put_doc(
    State(state): State<AppState>,
    Path((name, docid)): Path<(String, String)>,
    Query(params): Params,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (db, writer) = state.writer(&name, &headers)?;
    let body = json_object(body)?;
    if body
        .get("_id")
        .is_some_and(|id| id.as_str() != Some(&docid))
    {
        return Err(ApiError::bad_request(
            "The document ID provided in the body does not match the document ID in the path",
        ));
    }
    let parent = parent_rev(&params, &headers, Some(&body))?;
    let written = blocking(move || write_doc(&db, &docid, parent, body, writer.as_ref())).await?;
    Ok(written_response(StatusCode::CREATED, &written))
}

async fn post_doc(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (db, writer) = state.writer(&name, &headers)?;
    let body = json_object(body)?;
    let docid = match body.get("_id").and_then(Value::as_str) {
        Some(id) => id.to_owned(),
        None => uuid::Uuid::new_v4().simple().to_string(),
    };
    let written = blocking(move || write_doc(&db, &docid, None, body, writer.as_ref())).await?;
    let mut response = written_response(StatusCode::OK, &written);
    if let Ok(v) = HeaderValue::from_str(&written.id) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

async fn delete_doc(
    State(state): State<AppState>,
    Path((name, docid)): Path<(String, String)>,
    Query(params): Params,
    headers: HeaderMap,
) -> ApiResult {
    let (db, writer) = state.writer(&name, &headers)?;
    let parent = parent_rev(&params, &headers, None)?;
    let written = blocking(move || delete_rev(&db, &docid, parent, writer.as_ref())).await?;
    Ok(written_response(StatusCode::OK, &written))
}

// ---------------------------------------------------------------------------------------
// _all_docs, _bulk_docs, _changes

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params.get(name).is_some_and(|v| v == "true")
}

async fn all_docs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Params,
    method: Method,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (db, access) = state.reader(&name, &headers)?;
    let keys: Option<Vec<String>> = if method == Method::POST {
        let body = json_object(body)?;
        match body.get("keys") {
            Some(Value::Array(keys)) => Some(
                keys.iter()
                    .map(|k| k.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| ApiError::bad_request("keys must be strings"))?,
            ),
            _ => return Err(ApiError::bad_request("Bad/missing keys")),
        }
    } else {
        None
    };
    let include_docs = flag(&params, "include_docs");
    let limit = params.get("limit").and_then(|l| l.parse::<usize>().ok());
    let body = blocking(move || {
        let ids: Vec<String> = match keys {
            Some(keys) => keys,
            None => {
                let mut ids = Vec::new();
                for change in db.database.changes(0)? {
                    let change = change?;
                    if !change.deleted {
                        ids.push(change.id);
                    }
                }
                ids.sort();
                ids
            }
        };
        let mut rows = Vec::new();
        for id in ids {
            if limit.is_some_and(|l| rows.len() >= l) {
                break;
            }
            match db.database.document(&id)? {
                // Rows the user cannot see are omitted.
                Some(doc) if !db.can_read_id(&access, doc.id()) => {}
                Some(doc) => {
                    let mut row = json!({"key": id, "id": id,
                        "value": {"rev": doc.revision_id().to_string()}});
                    if include_docs {
                        row["doc"] = doc_json(&doc);
                    }
                    rows.push(row);
                }
                None => rows.push(json!({"key": id, "error": "not_found", "status": 404})),
            }
        }
        let total = if access == Access::All {
            db.database.count()?
        } else {
            rows.iter().filter(|r| r.get("error").is_none()).count() as u64
        };
        let seq = db.database.last_sequence()?;
        Ok(json!({"rows": rows, "total_rows": total, "update_seq": seq}))
    })
    .await?;
    Ok(ok_json(StatusCode::OK, body))
}

async fn bulk_docs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (db, writer) = state.writer(&name, &headers)?;
    let body = json_object(body)?;
    if body.get("new_edits").and_then(Value::as_bool) == Some(false) {
        return Err(ApiError::bad_request(
            "new_edits=false is not supported yet",
        ));
    }
    let Some(Value::Array(docs)) = body.get("docs").cloned() else {
        return Err(ApiError::bad_request("Missing JSON 'docs' property"));
    };
    let results = blocking(move || {
        let mut results = Vec::new();
        for doc in docs {
            let Value::Object(doc) = doc else {
                results.push(json!({"status": 400, "error": "bad_request",
                    "reason": "Document body must be a JSON object"}));
                continue;
            };
            let docid = match doc.get("_id").and_then(Value::as_str) {
                Some(id) => id.to_owned(),
                None => uuid::Uuid::new_v4().simple().to_string(),
            };
            let parent = doc.get("_rev").and_then(Value::as_str).map(str::to_owned);
            match write_doc(&db, &docid, parent, doc, writer.as_ref()) {
                Ok(w) => results.push(json!({"id": w.id, "rev": w.rev})),
                Err(e) => results.push(json!({"id": docid, "status": e.status.as_u16(),
                    "error": couch_error_name(e.status), "reason": e.reason})),
            }
        }
        Ok(results)
    })
    .await?;
    Ok(ok_json(StatusCode::CREATED, Value::Array(results)))
}

/// CouchDB's error names, used by `_bulk_docs` items.
fn couch_error_name(status: StatusCode) -> String {
    match status.as_u16() {
        400 => "bad_request".into(),
        401 => "unauthorized".into(),
        403 => "forbidden".into(),
        404 => "not_found".into(),
        406 => "not_acceptable".into(),
        409 => "conflict".into(),
        412 => "file_exists".into(),
        415 => "bad_content_type".into(),
        other => other.to_string(),
    }
}

async fn changes(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(mut params): Params,
    method: Method,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (db, principal) = state.authorized(&name, &headers)?;
    if method == Method::POST {
        let bytes = body_bytes(body)?;
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            // Parameters in the query string win over those of the body.
            for (k, v) in json_object(Ok(bytes))? {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                params.entry(k).or_insert(v);
            }
        }
    }
    let reader = if state.admin {
        Reader::Admin
    } else {
        Reader::User(principal)
    };
    feeds::changes(db, reader, &params, state.shared.shutdown.clone()).await
}

// ---------------------------------------------------------------------------------------
// Attachments and purge

/// 400 for a document ID or attachment name holding control characters.
fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!("invalid {what} {name:?}")));
    }
    Ok(())
}

/// The database, document ID and attachment name of an attachment URL, checked.
fn attachment_path(
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<(String, String, String), ApiError> {
    let Path((db, docid, attachment)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_name("document ID", &docid)?;
    check_name("attachment name", &attachment)?;
    Ok((db, docid, attachment))
}

/// The blob an attachment name stands for in `doc`: `blob_<JSON pointer>` (as `_attachments`
/// names them), or a top-level property.
fn attachment_blob(doc: &Document, name: &str) -> Option<Blob> {
    let properties = doc.properties();
    let value = match name.strip_prefix("blob_") {
        Some(pointer) if pointer.starts_with('/') => {
            let mut steps = pointer[1..]
                .split('/')
                .map(|s| s.replace("~1", "/").replace("~0", "~"));
            let first = steps.next()?;
            let mut value = properties.get(&first)?;
            for step in steps {
                value = match value {
                    Value::Object(map) => map.get(&step)?,
                    Value::Array(items) => items.get(step.parse::<usize>().ok()?)?,
                    _ => return None,
                };
            }
            value
        }
        _ => properties.get(name)?,
    };
    Blob::from_dict(value.as_object()?)
}

async fn get_attachment(
    State(state): State<AppState>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    Query(params): Params,
    headers: HeaderMap,
) -> ApiResult {
    let (name, docid, attachment) = attachment_path(path)?;
    let (db, access) = state.reader(&name, &headers)?;
    let wanted = params.get("rev").cloned();
    let (blob, content) = blocking(move || {
        let doc = db
            .database
            .document(&docid)?
            .ok_or_else(|| ApiError::not_found("missing"))?;
        if !db.can_read_id(&access, doc.id()) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden"));
        }
        if wanted.is_some_and(|w| w != doc.revision_id().to_string()) {
            return Err(ApiError::not_found("missing"));
        }
        let blob = attachment_blob(&doc, &attachment)
            .ok_or_else(|| ApiError::not_found("missing attachment"))?;
        let content = db.database.blob_content(&blob)?;
        Ok((blob, content))
    })
    .await?;
    let mut response = (StatusCode::OK, content).into_response();
    let content_type = blob
        .content_type()
        .and_then(|t| HeaderValue::from_str(t).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    if let Some(digest) = blob.digest() {
        if let Ok(v) = HeaderValue::from_str(&format!("\"{digest}\"")) {
            response.headers_mut().insert(header::ETAG, v);
        }
    }
    Ok(response)
}

async fn put_attachment(
    State(state): State<AppState>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    Query(params): Params,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (name, docid, attachment) = attachment_path(path)?;
    let (db, writer) = state.writer(&name, &headers)?;
    let bytes = body_bytes(body)?;
    let property = attachment_property(&attachment)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let parent = parent_rev(&params, &headers, None)?;
    let written = blocking(move || {
        let blob = Blob::from_bytes(&content_type, bytes);
        put_blob(&db, &docid, parent, &property, blob, writer.as_ref())
    })
    .await?;
    Ok(written_response(StatusCode::CREATED, &written))
}

/// Sets blob property `property` of `docid` on a new revision over `parent` (the PUT rules
/// of [`write_doc`]), creating the document when it does not exist and no parent is given.
fn put_blob(
    db: &Db,
    docid: &str,
    parent: Option<String>,
    property: &str,
    blob: Blob,
    writer: Option<&UserContext>,
) -> Result<Written, ApiError> {
    let existing = db.database.document(docid)?;
    let mut doc = match (&existing, parent) {
        (Some(_), None) => return Err(ApiError::conflict("Document exists")),
        (None, Some(_)) => return Err(ApiError::conflict("Document revision conflict")),
        (None, None) => MutableDocument::with_id(docid),
        (Some(current), Some(parent)) => {
            if current.revision_id().to_string() != parent {
                return Err(ApiError::conflict("Document revision conflict"));
            }
            current.to_mutable()
        }
    };
    doc.set_blob(property, blob);
    save_routed(db, doc, existing.as_ref(), writer)
}

/// `POST /{db}/_purge` (admin): `{"<docid>": ["*"], …}` purges each document (no tombstone)
/// and answers `{"purged": {"<docid>": ["*"], …}}` with those that existed. Only `["*"]`
/// (every revision) is supported; other revision lists are ignored.
async fn purge(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let db = state.db(&name)?;
    let body = json_object(body)?;
    let mut ids = Vec::new();
    for (id, revs) in body {
        let Value::Array(revs) = revs else {
            return Err(ApiError::bad_request(format!(
                "the revisions of {id:?} must be an array"
            )));
        };
        if revs.len() == 1 && revs[0] == "*" {
            ids.push(id);
        }
    }
    let purged = blocking(move || {
        let mut purged = Map::new();
        for id in ids {
            match db.database.purge(&id) {
                Ok(()) => {}
                Err(e) if e.code() == ferrolite::ErrorCode::NotFound as i32 => continue,
                Err(e) => return Err(e.into()),
            }
            db.purge_from_index(&id);
            purged.insert(id, json!(["*"]));
        }
        db.notify_changed();
        Ok(purged)
    })
    .await?;
    Ok(ok_json(StatusCode::OK, json!({"purged": purged})))
}

// ---------------------------------------------------------------------------------------
// Sessions

fn user_ctx(db: &Db, principal: &Principal) -> Value {
    let mut channels = Map::new();
    match db.access_of(principal) {
        Access::All => {
            channels.insert("*".into(), json!(1));
        }
        Access::Channels(map) => {
            for (c, seq) in map {
                channels.insert(c, json!(seq.max(1)));
            }
        }
    }
    json!({"ok": true, "userCtx": {"name": principal, "channels": channels},
        "authentication_handlers": ["default", "cookie"]})
}

async fn get_session(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let (db, principal) = state.authorized(&name, &headers)?;
    Ok(ok_json(StatusCode::OK, user_ctx(&db, &principal)))
}

async fn post_session(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let db = state.db(&name)?;
    if state.admin {
        // Admin: {"name":…, "ttl":…} creates a session without a password.
        let body = json_object(body)?;
        let user = body
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty() && *n != GUEST)
            .ok_or_else(|| ApiError::bad_request("Invalid or missing user name"))?;
        if db.principals.user(user).is_none() {
            return Err(ApiError::not_found(format!("No such user {user:?}")));
        }
        let ttl = match body.get("ttl") {
            None => SESSION_TTL,
            Some(v) => Duration::from_secs(
                v.as_u64()
                    .filter(|t| *t > 0)
                    .ok_or_else(|| ApiError::bad_request("Invalid or missing ttl"))?,
            ),
        };
        let (id, expires) = db
            .principals
            .create_session(user, ttl)
            .map_err(ApiError::internal)?;
        return Ok(ok_json(
            StatusCode::OK,
            json!({"session_id": id, "expires": state::http_date(expires),
                "cookie_name": SESSION_COOKIE}),
        ));
    }
    let user = if headers.contains_key(header::AUTHORIZATION) {
        db.authenticate(&headers)?
            .ok_or_else(|| ApiError::unauthorized("Invalid login"))?
    } else {
        let body = json_object(body)?;
        let name = body.get("name").and_then(Value::as_str).unwrap_or_default();
        let password = body
            .get("password")
            .and_then(Value::as_str)
            .unwrap_or_default();
        db.check_password(name, password)?;
        name.to_owned()
    };
    let (id, expires) = db
        .principals
        .create_session(&user, SESSION_TTL)
        .map_err(ApiError::internal)?;
    let mut response = ok_json(StatusCode::OK, user_ctx(&db, &Some(user)));
    let secure = if state.secure { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/{}; Expires={}; HttpOnly{secure}",
        db.name,
        state::http_date(expires)
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

async fn delete_session(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let db = state.db(&name)?;
    let Some(id) = state::cookie(&headers, SESSION_COOKIE) else {
        return Err(ApiError::not_found("no session"));
    };
    if !db
        .principals
        .delete_session(&id)
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::not_found("no session"));
    }
    let mut response = ok_json(StatusCode::OK, json!({"ok": true}));
    let cookie = format!(
        "{SESSION_COOKIE}=; Path=/{}; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        db.name
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

// ---------------------------------------------------------------------------------------
// Users (admin port)

fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 239
        && name.chars().any(char::is_alphanumeric)
        && !name.contains(['/', ':', ',', '`'])
}

/// A list of names from a JSON array of strings.
fn string_list(value: Option<&Value>, what: &str) -> Result<Option<Vec<String>>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|c| c.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("{what} must be strings"))),
        Some(_) => Err(ApiError::bad_request(format!("{what} must be an array"))),
    }
}

/// Keeps the grant sequences of the names still listed; new names are granted at `since`.
fn regrant(
    current: &std::collections::BTreeMap<String, u64>,
    names: Vec<String>,
    since: u64,
) -> std::collections::BTreeMap<String, u64> {
    names
        .into_iter()
        .map(|n| {
            let seq = current.get(&n).copied().unwrap_or(since);
            (n, seq)
        })
        .collect()
}

/// Creates or updates a user from its JSON; `true` when created.
fn upsert_user(db: &Db, name: &str, body: &Map<String, Value>) -> Result<bool, ApiError> {
    if !valid_user_name(name) {
        return Err(ApiError::bad_request("Invalid or missing user name"));
    }
    for key in body.keys() {
        match key.as_str() {
            "name" | "password" | "admin_channels" | "admin_roles" | "disabled" | "email" => {}
            "all_channels" | "roles" => {
                return Err(ApiError::bad_request("Can't change read-only properties"))
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown user property {other:?}"
                )))
            }
        }
    }
    let password = match body.get("password") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if p.chars().count() >= 3 => Some(p.clone()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "Passwords must be at least three characters",
            ))
        }
    };
    let channels = string_list(body.get("admin_channels"), "admin_channels")?;
    let roles = string_list(body.get("admin_roles"), "admin_roles")?;
    let disabled = body.get("disabled").and_then(Value::as_bool);
    let email = body.get("email").and_then(Value::as_str).map(str::to_owned);
    let created = db.principals.user(name).is_none();
    if created && name != GUEST && password.is_none() {
        return Err(ApiError::bad_request("Empty passwords are not allowed"));
    }
    let hash = match &password {
        Some(p) => Some(hash_password(p).ok_or_else(|| ApiError::internal("cannot hash"))?),
        None => None,
    };
    let since = db.database.last_sequence()?;
    db.watching_access(&[name.to_owned()], since, || {
        db.principals.update(|users, _| {
            let user = users.entry(name.to_owned()).or_insert_with(User::default);
            if hash.is_some() {
                user.password_hash = hash;
            }
            if let Some(c) = channels {
                user.admin_channels = regrant(&user.admin_channels, c, since);
            }
            if let Some(r) = roles {
                user.admin_roles = regrant(&user.admin_roles, r, since);
            }
            if let Some(d) = disabled {
                user.disabled = d;
            }
            if email.is_some() {
                user.email = email;
            }
        })
    })
    .map_err(ApiError::internal)?;
    if password.is_some() {
        db.principals.forget_verified(name);
    }
    // Access may have changed: live feeds look again.
    db.notify_changed();
    Ok(created)
}

async fn put_user(
    State(state): State<AppState>,
    Path((name, user)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let db = state.db(&name)?;
    let body = json_object(body)?;
    if body.get("name").is_some_and(|n| n.as_str() != Some(&user)) {
        return Err(ApiError::bad_request("Name mismatch (can't change name)"));
    }
    let created = blocking(move || upsert_user(&db, &user, &body)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(status.into_response())
}

async fn post_user(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let db = state.db(&name)?;
    let body = json_object(body)?;
    let user = body
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("Missing name property"))?
        .to_owned();
    if db.principals.user(&user).is_some() {
        return Err(ApiError::conflict("Already exists"));
    }
    blocking(move || upsert_user(&db, &user, &body)).await?;
    Ok(StatusCode::CREATED.into_response())
}

fn sorted_keys<V>(map: &std::collections::BTreeMap<String, V>) -> Vec<String> {
    map.keys().cloned().collect()
}

async fn get_user(
    State(state): State<AppState>,
    Path((name, user)): Path<(String, String)>,
) -> ApiResult {
    let db = state.db(&name)?;
    let u = db
        .principals
        .user(&user)
        .ok_or_else(|| ApiError::not_found("missing"))?;
    let principal = (user != GUEST).then(|| user.clone());
    let mut all: Vec<String> = match db.access_of(&principal) {
        Access::All => vec!["*".to_owned()],
        Access::Channels(m) => m.into_keys().collect(),
    };
    all.sort();
    let mut roles: Vec<String> = db.roles_of(&user).into_keys().collect();
    roles.sort();
    let mut body = json!({"name": user, "admin_channels": sorted_keys(&u.admin_channels),
        "all_channels": all, "admin_roles": sorted_keys(&u.admin_roles), "roles": roles});
    if u.disabled {
        body["disabled"] = Value::Bool(true);
    }
    if let Some(email) = &u.email {
        body["email"] = Value::String(email.clone());
    }
    Ok(ok_json(StatusCode::OK, body))
}

async fn list_users(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let db = state.db(&name)?;
    Ok(ok_json(StatusCode::OK, json!(db.principals.user_names())))
}

async fn delete_user(
    State(state): State<AppState>,
    Path((name, user)): Path<(String, String)>,
) -> ApiResult {
    let db = state.db(&name)?;
    if user == GUEST {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "The GUEST user cannot be deleted. Only disabled via an update.",
        ));
    }
    let removed = db
        .principals
        .update(|users, _| users.remove(&user).is_some())
        .map_err(ApiError::internal)?;
    if !removed {
        return Err(ApiError::not_found("missing"));
    }
    db.principals.forget_verified(&user);
    db.principals
        .delete_sessions_of(&user)
        .map_err(ApiError::internal)?;
    db.notify_changed();
    Ok(StatusCode::OK.into_response())
}

// ---------------------------------------------------------------------------------------
// Roles (admin port)

async fn put_role(
    State(state): State<AppState>,
    Path((name, role)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let db = state.db(&name)?;
    let body = json_object(body)?;
    if body.get("name").is_some_and(|n| n.as_str() != Some(&role)) {
        return Err(ApiError::bad_request("Name mismatch (can't change name)"));
    }
    let created = blocking(move || upsert_role(&db, &role, &body)).await?;
    Ok(if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
    .into_response())
}

async fn post_role(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let db = state.db(&name)?;
    let body = json_object(body)?;
    let role = body
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("Missing name property"))?
        .to_owned();
    if db.principals.role(&role).is_some() {
        return Err(ApiError::conflict("Already exists"));
    }
    blocking(move || upsert_role(&db, &role, &body)).await?;
    Ok(StatusCode::CREATED.into_response())
}

fn upsert_role(db: &Db, role: &str, body: &Map<String, Value>) -> Result<bool, ApiError> {
    if !valid_user_name(role) {
        return Err(ApiError::bad_request("Invalid or missing role name"));
    }
    for key in body.keys() {
        match key.as_str() {
            "name" | "admin_channels" => {}
            "all_channels" => {
                return Err(ApiError::bad_request("Can't change read-only properties"))
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown role property {other:?}"
                )))
            }
        }
    }
    let channels = string_list(body.get("admin_channels"), "admin_channels")?;
    let since = db.database.last_sequence()?;
    let members = db.members_of(role);
    let created = db
        .watching_access(&members, since, || {
            db.principals.update(|_, roles| {
                let created = !roles.contains_key(role);
                let r = roles.entry(role.to_owned()).or_insert_with(Role::default);
                if let Some(c) = channels {
                    r.admin_channels = regrant(&r.admin_channels, c, since);
                }
                created
            })
        })
        .map_err(ApiError::internal)?;
    db.notify_changed();
    Ok(created)
}

async fn get_role(
    State(state): State<AppState>,
    Path((name, role)): Path<(String, String)>,
) -> ApiResult {
    let db = state.db(&name)?;
    let r = db
        .principals
        .role(&role)
        .ok_or_else(|| ApiError::not_found("missing"))?;
    let mut all = sorted_keys(&r.admin_channels);
    all.push("!".to_owned());
    Ok(ok_json(
        StatusCode::OK,
        json!({"name": role, "admin_channels": sorted_keys(&r.admin_channels), "all_channels": all}),
    ))
}

async fn list_roles(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let db = state.db(&name)?;
    Ok(ok_json(StatusCode::OK, json!(db.principals.role_names())))
}

async fn delete_role(
    State(state): State<AppState>,
    Path((name, role)): Path<(String, String)>,
) -> ApiResult {
    let db = state.db(&name)?;
    let removed = blocking(move || {
        let since = db.database.last_sequence()?;
        let members = db.members_of(&role);
        let removed = db
            .watching_access(&members, since, || {
                db.principals
                    .update(|_, roles| roles.remove(&role).is_some())
            })
            .map_err(ApiError::internal)?;
        if removed {
            db.notify_changed();
        }
        Ok(removed)
    })
    .await?;
    if !removed {
        return Err(ApiError::not_found("missing"));
    }
    Ok(StatusCode::OK.into_response())
}

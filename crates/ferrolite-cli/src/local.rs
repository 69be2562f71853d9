//! The commands on a local database: `ls`, `get`, `put`, `rm`, `purge`, `blob put/get`,
//! `revs`, `info`.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use ferrolite::{
    Blob, ConcurrencyControl, Database, DatabaseConfiguration, MutableDocument, RevId, RevTree,
    Revision, DATABASE_DIRECTORY_SUFFIX,
};
use indicatif::HumanBytes;
use serde_json::Value;

use crate::usage;

/// Where a database named on the command line lives: `phone`, `phone.ferrolite` and
/// `./phone.ferrolite` are the database `phone` in the current directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    /// The database name.
    pub(crate) name: String,
    /// The directory that holds it.
    pub(crate) directory: PathBuf,
    /// The database's own directory, `<directory>/<name>.ferrolite`.
    pub(crate) path: PathBuf,
}

impl Location {
    /// The location named by a command-line argument.
    pub(crate) fn of(arg: &Path) -> anyhow::Result<Location> {
        let file = arg
            .file_name()
            .and_then(|f| f.to_str())
            .ok_or_else(|| usage(format!("{:?} does not name a database", arg.display())))?;
        let suffix = format!(".{DATABASE_DIRECTORY_SUFFIX}");
        let name = file.strip_suffix(suffix.as_str()).unwrap_or(file);
        if name.is_empty() || name.starts_with('.') {
            return Err(usage(format!(
                "{:?} does not name a database",
                arg.display()
            )));
        }
        let directory = arg
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let path = directory.join(format!("{name}{suffix}"));
        Ok(Location {
            name: name.to_owned(),
            directory,
            path,
        })
    }

    /// Opens the database, which must exist.
    pub(crate) fn open_existing(&self) -> anyhow::Result<Database> {
        if !self.path.is_dir() {
            bail!("no database at {}", self.path.display());
        }
        self.open()
    }

    /// Opens the database, creating it if needed.
    pub(crate) fn open(&self) -> anyhow::Result<Database> {
        Database::open(&self.name, &DatabaseConfiguration::new(&self.directory))
            .map_err(failure(format_args!("cannot open {}", self.path.display())))
    }
}

/// Turns a facade error into one line: `context: message` (the domain and code are for
/// programs; the message says it for people).
pub(crate) fn failure(
    context: impl fmt::Display,
) -> impl FnOnce(ferrolite::Error) -> anyhow::Error {
    let context = context.to_string();
    move |e| anyhow!("{context}: {}", e.message())
}

/// `ferrolite ls`: the live documents, by ID.
pub(crate) fn ls(database: &Path, long: bool) -> anyhow::Result<ExitCode> {
    let db = Location::of(database)?.open_existing()?;
    let mut rows = Vec::new();
    for change in db.changes(0).map_err(failure("reading the change feed"))? {
        let change = change.map_err(failure("reading the change feed"))?;
        if !change.deleted {
            rows.push(change);
        }
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out = io::stdout().lock();
    let width = rows.iter().map(|c| c.id.len()).max().unwrap_or(0);
    for change in rows {
        if long {
            writeln!(
                out,
                "{:<width$}  {}  seq {}",
                change.id, change.rev, change.sequence
            )?;
        } else {
            writeln!(out, "{}", change.id)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferrolite get`: the document as JSON, with `_id` and `_rev` first.
pub(crate) fn get(database: &Path, id: &str) -> anyhow::Result<ExitCode> {
    let location = Location::of(database)?;
    let db = location.open_existing()?;
    let doc = db
        .document(id)
        .map_err(failure(format_args!("reading {id:?}")))?
        .ok_or_else(|| missing(&db, &location, id))?;
    let mut body = serde_json::Map::new();
    body.insert("_id".into(), Value::String(id.to_owned()));
    body.insert("_rev".into(), Value::String(doc.revision_id().to_string()));
    body.extend(doc.properties().clone());
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &Value::Object(body))?;
    writeln!(out)?;
    Ok(ExitCode::SUCCESS)
}

/// The error for a document that `document()` did not find: deleted, or never there.
fn missing(db: &Database, location: &Location, id: &str) -> anyhow::Error {
    match db.revision_tree(id) {
        Ok(Some(_)) => anyhow!(
            "document {id:?} is deleted in {} (`ferrolite revs` shows its history)",
            location.path.display()
        ),
        _ => anyhow!("no document {id:?} in {}", location.path.display()),
    }
}

/// `ferrolite put`: saves the properties from the argument, a file or stdin.
pub(crate) fn put(
    database: &Path,
    id: &str,
    json: Option<String>,
    file: Option<PathBuf>,
    rev: Option<String>,
) -> anyhow::Result<ExitCode> {
    let text = match (json, file) {
        (Some(json), _) => json,
        (None, Some(file)) if file.as_os_str() != "-" => std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?,
        (None, _) => {
            let mut text = String::new();
            io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the JSON from stdin")?;
            text
        }
    };
    let properties = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(properties)) => properties,
        Ok(_) => return Err(usage("the document must be a JSON object")),
        Err(e) => return Err(usage(format!("invalid JSON: {e}"))),
    };
    let db = Location::of(database)?.open()?;
    let (mut doc, control) = current_for_update(&db, id, rev.as_deref())?;
    doc.set_properties(properties);
    save(&db, &mut doc, control)?;
    let saved = doc
        .revision_id()
        .map(ToString::to_string)
        .unwrap_or_default();
    writeln!(io::stdout().lock(), "saved {id} {saved}")?;
    Ok(ExitCode::SUCCESS)
}

/// The document to update and how to save it: on top of `rev` only (refusing when another
/// revision is current), or on top of whatever is current.
fn current_for_update(
    db: &Database,
    id: &str,
    rev: Option<&str>,
) -> anyhow::Result<(MutableDocument, ConcurrencyControl)> {
    let current = db
        .document(id)
        .map_err(failure(format_args!("reading {id:?}")))?;
    match (current, rev) {
        (Some(current), Some(rev)) => {
            let actual = current.revision_id().to_string();
            if actual != rev {
                bail!("conflict: the current revision of {id:?} is {actual}, not {rev}");
            }
            Ok((current.to_mutable(), ConcurrencyControl::FailOnConflict))
        }
        (None, Some(rev)) => bail!("conflict: {id:?} has no current revision {rev}"),
        (Some(current), None) => Ok((current.to_mutable(), ConcurrencyControl::LastWriteWins)),
        (None, None) => Ok((
            MutableDocument::with_id(id),
            ConcurrencyControl::LastWriteWins,
        )),
    }
}

fn save(
    db: &Database,
    doc: &mut MutableDocument,
    control: ConcurrencyControl,
) -> anyhow::Result<()> {
    let id = doc.id().to_owned();
    let saved = db
        .save_with_concurrency_control(doc, control)
        .map_err(failure(format_args!("cannot save {id:?}")))?;
    if !saved {
        bail!("conflict: {id:?} changed while it was being saved");
    }
    Ok(())
}

/// `ferrolite rm`: deletes the document (a tombstone).
pub(crate) fn rm(database: &Path, id: &str, rev: Option<String>) -> anyhow::Result<ExitCode> {
    let location = Location::of(database)?;
    let db = location.open_existing()?;
    let doc = db
        .document(id)
        .map_err(failure(format_args!("reading {id:?}")))?
        .ok_or_else(|| missing(&db, &location, id))?;
    if let Some(rev) = rev {
        let actual = doc.revision_id().to_string();
        if actual != rev {
            bail!("conflict: the current revision of {id:?} is {actual}, not {rev}");
        }
    }
    let deleted = db
        .delete_with_concurrency_control(&doc, ConcurrencyControl::FailOnConflict)
        .map_err(failure(format_args!("cannot delete {id:?}")))?;
    if !deleted {
        bail!("conflict: {id:?} changed while it was being deleted");
    }
    let tombstone = db
        .revision_tree(id)
        .ok()
        .flatten()
        .and_then(|tree| tree.current().map(|r| r.id().to_string()))
        .unwrap_or_default();
    writeln!(io::stdout().lock(), "deleted {id} {tombstone}")?;
    Ok(ExitCode::SUCCESS)
}

/// `ferrolite purge`: removes the document without a trace.
pub(crate) fn purge(database: &Path, id: &str) -> anyhow::Result<ExitCode> {
    let location = Location::of(database)?;
    let db = location.open_existing()?;
    match db.purge(id) {
        Ok(()) => {}
        Err(e) if e.is(ferrolite::ErrorCode::NotFound) => {
            bail!("no document {id:?} in {}", location.path.display())
        }
        Err(e) => return Err(failure(format_args!("cannot purge {id:?}"))(e)),
    }
    writeln!(io::stdout().lock(), "purged {id}")?;
    Ok(ExitCode::SUCCESS)
}

/// `ferrolite blob put`: stores a file as a blob in `property`.
pub(crate) fn blob_put(
    database: &Path,
    id: &str,
    property: &str,
    file: &Path,
    content_type: Option<String>,
) -> anyhow::Result<ExitCode> {
    let content = File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let content_type = content_type.unwrap_or_else(|| guess_content_type(file).to_owned());
    let db = Location::of(database)?.open()?;
    let (mut doc, control) = current_for_update(&db, id, None)?;
    doc.set_blob(property, Blob::from_reader(&content_type, content));
    save(&db, &mut doc, control)?;
    let rev = doc
        .revision_id()
        .map(ToString::to_string)
        .unwrap_or_default();
    let stored = db
        .document(id)
        .map_err(failure(format_args!("reading {id:?}")))?
        .and_then(|d| d.blob(property));
    let (length, digest) = stored
        .map(|b| {
            (
                b.length().unwrap_or(0),
                b.digest().map(|d| d.to_string()).unwrap_or_default(),
            )
        })
        .unwrap_or_default();
    writeln!(
        io::stdout().lock(),
        "saved {id} {rev}: {property} is {length} bytes of {content_type} ({digest})"
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `ferrolite blob get`: the blob's content to a file or stdout.
pub(crate) fn blob_get(
    database: &Path,
    id: &str,
    property: &str,
    output: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let location = Location::of(database)?;
    let db = location.open_existing()?;
    let doc = db
        .document(id)
        .map_err(failure(format_args!("reading {id:?}")))?
        .ok_or_else(|| missing(&db, &location, id))?;
    let blob = doc
        .blob(property)
        .ok_or_else(|| anyhow!("document {id:?} has no blob in property {property:?}"))?;
    let mut reader = db.blob_reader(&blob).map_err(failure(format_args!(
        "reading the blob {property:?} of {id:?}"
    )))?;
    match output {
        Some(path) => {
            let mut file =
                File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
            let written = io::copy(&mut reader, &mut file)
                .with_context(|| format!("cannot write {}", path.display()))?;
            file.sync_all()
                .with_context(|| format!("cannot write {}", path.display()))?;
            writeln!(
                io::stdout().lock(),
                "wrote {written} bytes of {} to {}",
                blob.content_type().unwrap_or("unknown type"),
                path.display()
            )?;
        }
        None => {
            let mut out = io::stdout().lock();
            io::copy(&mut reader, &mut out)?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A content type from a file's extension.
fn guess_content_type(file: &Path) -> &'static str {
    let extension = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match extension.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "txt" => "text/plain",
        "json" => "application/json",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// `ferrolite revs`: the revision tree, drawn from its roots.
pub(crate) fn revs(database: &Path, id: &str) -> anyhow::Result<ExitCode> {
    let location = Location::of(database)?;
    let db = location.open_existing()?;
    let tree = db
        .revision_tree(id)
        .map_err(failure(format_args!("reading {id:?}")))?
        .ok_or_else(|| anyhow!("no document {id:?} in {}", location.path.display()))?;
    let mut out = io::stdout().lock();
    for line in draw_tree(&tree) {
        writeln!(out, "{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The lines of a revision tree: each revision under its parent, with its flags; the
/// current revision is marked `current`.
fn draw_tree(tree: &RevTree) -> Vec<String> {
    let current = tree.current().map(|r| r.id().clone());
    let mut children: HashMap<&RevId, Vec<&Revision>> = HashMap::new();
    let mut roots = Vec::new();
    for rev in tree.revisions() {
        match tree.parent(rev.id()) {
            Some(parent) => children.entry(parent.id()).or_default().push(rev),
            None => roots.push(rev),
        }
    }
    for list in children.values_mut() {
        list.sort_by(|a, b| a.id().cmp(b.id()));
    }
    roots.sort_by(|a, b| a.id().cmp(b.id()));
    let mut lines = Vec::new();
    // (revision, prefix for its own line, prefix for its children's lines)
    let mut stack: Vec<(&Revision, String, String)> = roots
        .into_iter()
        .rev()
        .map(|r| (r, String::new(), String::new()))
        .collect();
    while let Some((rev, prefix, child_prefix)) = stack.pop() {
        let mut line = format!("{prefix}{}", rev.id());
        if current.as_ref() == Some(rev.id()) {
            line.push_str("  current");
        }
        for (flag, name) in [
            (rev.is_deleted(), "deleted"),
            (rev.is_conflict(), "conflict"),
            (rev.is_closed(), "closed"),
        ] {
            if flag {
                line.push_str("  ");
                line.push_str(name);
            }
        }
        if rev.body().is_none() && !rev.is_deleted() {
            line.push_str("  (body not kept)");
        }
        lines.push(line);
        let kids = children.get(rev.id()).map(Vec::as_slice).unwrap_or(&[]);
        for (i, kid) in kids.iter().enumerate().rev() {
            let last = i + 1 == kids.len();
            let (own, below) = if last {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            stack.push((
                kid,
                format!("{child_prefix}{own}"),
                format!("{child_prefix}{below}"),
            ));
        }
    }
    lines
}

/// `ferrolite info`: what the database holds.
pub(crate) fn info(database: &Path) -> anyhow::Result<ExitCode> {
    let location = Location::of(database)?;
    let db = location.open_existing()?;
    let mut live = 0u64;
    let mut deleted = 0u64;
    for change in db.changes(0).map_err(failure("reading the change feed"))? {
        if change.map_err(failure("reading the change feed"))?.deleted {
            deleted += 1;
        } else {
            live += 1;
        }
    }
    let last_sequence = db
        .last_sequence()
        .map_err(failure("reading the database"))?;
    let size = directory_size(&location.path)?;
    let mut out = io::stdout().lock();
    writeln!(out, "database:      {}", location.name)?;
    writeln!(out, "path:          {}", location.path.display())?;
    writeln!(out, "documents:     {live}")?;
    writeln!(out, "deleted:       {deleted}")?;
    writeln!(out, "last sequence: {last_sequence}")?;
    writeln!(out, "size on disk:  {}", HumanBytes(size))?;
    Ok(ExitCode::SUCCESS)
}

/// The bytes of every file under `dir`.
fn directory_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let here = Location::of(Path::new("phone")).unwrap();
        assert_eq!(here.name, "phone");
        assert_eq!(here.path, Path::new("./phone.ferrolite"));
        assert_eq!(Location::of(Path::new("phone.ferrolite")).unwrap(), here);
        let nested = Location::of(Path::new("data/app.ferrolite/")).unwrap();
        assert_eq!(nested.name, "app");
        assert_eq!(nested.path, Path::new("data/app.ferrolite"));
        assert!(Location::of(Path::new(".ferrolite")).is_err());
        assert!(Location::of(Path::new("/")).is_err());
    }

    #[test]
    fn draws_branches() {
        let db = Database::open_in_memory("t").unwrap();
        let mut doc = MutableDocument::with_id("d");
        db.save(doc.set("v", 1)).unwrap();
        db.save(doc.set("v", 2)).unwrap();
        let tree = db.revision_tree("d").unwrap().unwrap();
        let lines = draw_tree(&tree);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("1-"), "{lines:?}");
        assert!(lines[1].starts_with("└─ 2-"), "{lines:?}");
        assert!(lines[1].ends_with("current"), "{lines:?}");
    }

    #[test]
    fn content_types() {
        assert_eq!(guess_content_type(Path::new("a.JPG")), "image/jpeg");
        assert_eq!(
            guess_content_type(Path::new("a")),
            "application/octet-stream"
        );
    }
}

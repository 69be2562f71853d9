//! Documents as an application sees them: read-only [`Document`] and [`MutableDocument`].

use std::sync::OnceLock;

use bytes::Bytes;
use ferrolite_document::{is_blob_dict, Properties, RevId};
use serde_json::Value;

use crate::{Blob, Error, ErrorCode, Result};

/// A saved document, as read from a [`crate::Database`]: its ID, current revision and
/// properties. The JSON body is parsed on first access to the properties.
#[derive(Debug, Clone)]
pub struct Document {
    id: String,
    rev: RevId,
    sequence: u64,
    body: Bytes,
    properties: OnceLock<Properties>,
}

impl Document {
    pub(crate) fn new(id: String, rev: RevId, sequence: u64, body: Bytes) -> Document {
        Document {
            id,
            rev,
            sequence,
            body,
            properties: OnceLock::new(),
        }
    }

    /// The document ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The current revision ID.
    pub fn revision_id(&self) -> &RevId {
        &self.rev
    }

    /// The sequence at which this revision was stored.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The body as stored: canonical JSON bytes.
    pub fn json(&self) -> &[u8] {
        &self.body
    }

    /// The properties. A stored body that is not a JSON object (a corrupt database) reads as
    /// empty and is reported in the log; [`Document::try_properties`] returns the error.
    pub fn properties(&self) -> &Properties {
        match self.try_properties() {
            Ok(props) => props,
            Err(err) => {
                tracing::error!(target: "ferrolite::database", doc_id = %self.id, "{err}");
                self.properties.get_or_init(Properties::new)
            }
        }
    }

    /// The properties, or an error when the stored body cannot be parsed.
    pub fn try_properties(&self) -> Result<&Properties> {
        if let Some(props) = self.properties.get() {
            return Ok(props);
        }
        let parsed: Properties = serde_json::from_slice(&self.body).map_err(|e| {
            Error::new(
                ErrorCode::CorruptRevisionData,
                format!("stored body of {} is not a JSON object: {e}", self.id),
            )
        })?;
        Ok(self.properties.get_or_init(|| parsed))
    }

    /// The value of a top-level property.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.properties().get(key)
    }

    /// The blob held by a top-level property, if it is a blob dictionary.
    pub fn blob(&self, key: &str) -> Option<Blob> {
        self.get(key)
            .and_then(Value::as_object)
            .and_then(Blob::from_dict)
    }

    /// A mutable copy, to change and save as the next revision.
    pub fn to_mutable(&self) -> MutableDocument {
        MutableDocument {
            id: self.id.clone(),
            base: Some(self.rev.clone()),
            properties: self.properties().clone(),
            blobs: Vec::new(),
        }
    }
}

/// A document being edited: save it with [`crate::Database::save`].
#[derive(Debug)]
pub struct MutableDocument {
    id: String,
    base: Option<RevId>,
    properties: Properties,
    blobs: Vec<(String, Blob)>,
}

impl MutableDocument {
    /// A new document with a random (UUID) ID.
    pub fn new() -> MutableDocument {
        MutableDocument::with_id(uuid::Uuid::new_v4().simple().to_string())
    }

    /// A new document with the given ID (checked when saved).
    pub fn with_id(id: impl Into<String>) -> MutableDocument {
        MutableDocument {
            id: id.into(),
            base: None,
            properties: Properties::new(),
            blobs: Vec::new(),
        }
    }

    /// A new document with the given ID whose properties are the JSON object `json`.
    pub fn from_json(id: impl Into<String>, json: &str) -> Result<MutableDocument> {
        let properties: Properties = serde_json::from_str(json).map_err(|e| {
            Error::new(
                ErrorCode::CorruptRevisionData,
                format!("not a JSON object: {e}"),
            )
        })?;
        let mut doc = MutableDocument::with_id(id);
        doc.properties = properties;
        Ok(doc)
    }

    /// The document ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The revision this document was read at (and will be saved on top of), if any.
    pub fn revision_id(&self) -> Option<&RevId> {
        self.base.as_ref()
    }

    /// The properties.
    pub fn properties(&self) -> &Properties {
        &self.properties
    }

    /// The properties, to change in place.
    pub fn properties_mut(&mut self) -> &mut Properties {
        &mut self.properties
    }

    /// Replaces every property.
    pub fn set_properties(&mut self, properties: Properties) {
        self.properties = properties;
        self.blobs.clear();
    }

    /// The value of a top-level property.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.properties.get(key)
    }

    /// Sets a top-level property.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) -> &mut Self {
        let key = key.into();
        self.blobs.retain(|(k, _)| *k != key);
        self.properties.insert(key, value.into());
        self
    }

    /// Removes a top-level property, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.blobs.retain(|(k, _)| k != key);
        self.properties.remove(key)
    }

    /// Sets a top-level property to a blob. Its content is stored when the document is saved.
    pub fn set_blob(&mut self, key: impl Into<String>, blob: Blob) -> &mut Self {
        let key = key.into();
        match blob.to_dict() {
            Some(dict) => {
                self.properties.insert(key.clone(), Value::Object(dict));
            }
            None => {
                self.properties.remove(&key);
            }
        }
        self.blobs.retain(|(k, _)| *k != key);
        if blob.has_pending_content() {
            self.blobs.push((key, blob));
        }
        self
    }

    /// The blob held by a top-level property, if it is a blob dictionary.
    pub fn blob(&self, key: &str) -> Option<Blob> {
        self.get(key)
            .filter(|v| is_blob_dict(v))
            .and_then(Value::as_object)
            .and_then(Blob::from_dict)
    }

    pub(crate) fn pending_blobs(&mut self) -> &mut Vec<(String, Blob)> {
        &mut self.blobs
    }

    pub(crate) fn set_base(&mut self, rev: Option<RevId>) {
        self.base = rev;
    }
}

impl Default for MutableDocument {
    fn default() -> Self {
        MutableDocument::new()
    }
}

//! `getCheckpoint`, `setCheckpoint`, `getCollections` and their replies (replication.md §2.1, §3).

use bytes::Bytes;
use serde_json::{Map, Value};

use super::props::{self, bad_body, bytes_of, json_string};
use super::{MessageError, Profile};
use crate::blip::Message;

/// `getCheckpoint`: read the checkpoint the server keeps for this client.
///
/// Reply: [`GetCheckpointReply`], or the error `HTTP 404` when none is stored
/// ([`GetCheckpointReply::not_found`]; the client sees [`MessageError::is_not_found`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetCheckpoint {
    /// `client`: the checkpoint ID (`cp-…`), opaque to the server. Required.
    pub client: String,
    /// `collection`: index into the `getCollections` list (collection-aware connections).
    pub collection: Option<u32>,
}

impl GetCheckpoint {
    /// The message to send (no flags, like LiteCore).
    pub fn to_message(&self) -> Message {
        let mut msg = Message::request(Profile::GetCheckpoint.as_str());
        msg.properties.set("client", self.client.as_str());
        props::set_opt(&mut msg, "collection", self.collection);
        msg
    }

    /// Decodes a received `getCheckpoint`.
    pub fn from_message(msg: &Message) -> Result<GetCheckpoint, MessageError> {
        props::check_request(msg, Profile::GetCheckpoint)?;
        Ok(GetCheckpoint {
            client: props::required(msg, "client")?.to_owned(),
            collection: props::collection(msg)?,
        })
    }
}

/// The reply to `getCheckpoint`: property `rev` and the checkpoint JSON as body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetCheckpointReply {
    /// `rev`: the checkpoint's revision, to send back in `setCheckpoint` (Sync Gateway `0-N`,
    /// LiteCore `N-cc`).
    pub rev: String,
    /// The checkpoint, a JSON object (opaque to the server; kept as received).
    pub body: Bytes,
}

impl GetCheckpointReply {
    /// A reply whose body is `checkpoint` as compact JSON.
    pub fn from_json(
        rev: impl Into<String>,
        checkpoint: &Map<String, Value>,
    ) -> GetCheckpointReply {
        GetCheckpointReply {
            rev: rev.into(),
            body: bytes_of(Value::Object(checkpoint.clone()).to_string()),
        }
    }

    /// The body as a JSON object.
    pub fn checkpoint(&self) -> Result<Map<String, Value>, MessageError> {
        match props::json_body(&self.body)? {
            Value::Object(map) => Ok(map),
            _ => Err(bad_body("the checkpoint must be a JSON object")),
        }
    }

    /// The response answering `request`.
    pub fn to_response(&self, request: &Message) -> Message {
        let mut msg = Message::response_to(request);
        msg.properties.set("rev", self.rev.as_str());
        msg.body = self.body.clone();
        msg
    }

    /// The error reply meaning "no checkpoint stored": `HTTP 404` with body `Not Found`, as
    /// Sync Gateway sends it.
    pub fn not_found(request: &Message) -> Message {
        Message::error_to(request, "HTTP", 404, "Not Found")
    }

    /// Decodes the reply to a `getCheckpoint` we sent; `HTTP 404` arrives as an
    /// [`MessageError::ErrorReply`] for which [`MessageError::is_not_found`] is true.
    pub fn from_response(msg: &Message) -> Result<GetCheckpointReply, MessageError> {
        props::check_response(msg)?;
        let rev = props::required(msg, "rev")?.to_owned();
        props::check_json_object(&msg.body)?;
        Ok(GetCheckpointReply {
            rev,
            body: msg.body.clone(),
        })
    }
}

/// `setCheckpoint`: save the checkpoint, with optimistic concurrency on `rev`.
///
/// Reply: [`SetCheckpointReply`], or `HTTP 409` when `rev` is not the stored revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCheckpoint {
    /// `client`: the checkpoint ID. Required.
    pub client: String,
    /// `rev`: the last revision the server returned, `None` when none is known. Sent with an
    /// empty value when `None` (as LiteCore does); an empty value decodes as `None`.
    pub rev: Option<String>,
    /// The checkpoint, a JSON object (opaque to the server; kept as given).
    pub body: Bytes,
    /// `collection` (collection-aware connections).
    pub collection: Option<u32>,
}

impl SetCheckpoint {
    /// The message to send (no flags, like LiteCore).
    pub fn to_message(&self) -> Message {
        let mut msg = Message::request(Profile::SetCheckpoint.as_str());
        msg.properties.set("client", self.client.as_str());
        msg.properties
            .set("rev", self.rev.as_deref().unwrap_or_default());
        props::set_opt(&mut msg, "collection", self.collection);
        msg.body = self.body.clone();
        msg
    }

    /// Decodes a received `setCheckpoint`; the body must be a JSON object.
    pub fn from_message(msg: &Message) -> Result<SetCheckpoint, MessageError> {
        props::check_request(msg, Profile::SetCheckpoint)?;
        let client = props::required(msg, "client")?.to_owned();
        let rev = props::optional(msg, "rev").map(str::to_owned);
        let collection = props::collection(msg)?;
        props::check_json_object(&msg.body)?;
        Ok(SetCheckpoint {
            client,
            rev,
            body: msg.body.clone(),
            collection,
        })
    }
}

/// The reply to `setCheckpoint`: the new revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCheckpointReply {
    /// `rev`: the checkpoint's new revision (Sync Gateway `0-<n+1>`, LiteCore `<n+1>-cc`).
    pub rev: String,
}

impl SetCheckpointReply {
    /// The response answering `request`.
    pub fn to_response(&self, request: &Message) -> Message {
        let mut msg = Message::response_to(request);
        msg.properties.set("rev", self.rev.as_str());
        msg
    }

    /// The error reply for a stale `rev`: `HTTP 409` `Document update conflict` (Sync Gateway).
    pub fn conflict(request: &Message) -> Message {
        Message::error_to(request, "HTTP", 409, "Document update conflict")
    }

    /// Decodes the reply to a `setCheckpoint` we sent.
    pub fn from_response(msg: &Message) -> Result<SetCheckpointReply, MessageError> {
        props::check_response(msg)?;
        Ok(SetCheckpointReply {
            rev: props::required(msg, "rev")?.to_owned(),
        })
    }
}

/// `getCollections` (3.1+): makes the connection collection-aware and reads the checkpoint of
/// each collection. Body `{"checkpoint_ids":[…],"collections":[…]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetCollections {
    /// `uuid`: LiteCore sends its database's public UUID (Sync Gateway ignores it).
    pub uuid: Option<String>,
    /// One checkpoint ID per collection.
    pub checkpoint_ids: Vec<String>,
    /// The collections, `scope.collection`, or just `collection` in the `_default` scope.
    /// Their order defines the indexes used by every `collection` property afterwards.
    pub collections: Vec<String>,
}

impl GetCollections {
    /// The message to send.
    pub fn to_message(&self) -> Message {
        let mut msg = Message::request(Profile::GetCollections.as_str());
        props::set_opt(&mut msg, "uuid", self.uuid.as_deref());
        let list = |items: &[String]| {
            let items: Vec<String> = items.iter().map(|s| json_string(s)).collect();
            format!("[{}]", items.join(","))
        };
        msg.body = bytes_of(format!(
            "{{\"checkpoint_ids\":{},\"collections\":{}}}",
            list(&self.checkpoint_ids),
            list(&self.collections)
        ));
        msg
    }

    /// Decodes a received `getCollections`; both arrays are required and must have the same
    /// length (Sync Gateway: `HTTP 400`).
    pub fn from_message(msg: &Message) -> Result<GetCollections, MessageError> {
        props::check_request(msg, Profile::GetCollections)?;
        let Value::Object(body) = props::json_body(&msg.body)? else {
            return Err(bad_body("expected a JSON object"));
        };
        let strings = |key: &str| -> Result<Vec<String>, MessageError> {
            let Some(Value::Array(items)) = body.get(key) else {
                return Err(bad_body(format!("'{key}' must be an array of strings")));
            };
            items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad_body(format!("'{key}' must be an array of strings")))
                })
                .collect()
        };
        let checkpoint_ids = strings("checkpoint_ids")?;
        let collections = strings("collections")?;
        if checkpoint_ids.len() != collections.len() {
            return Err(bad_body(format!(
                "{} checkpoint_ids for {} collections",
                checkpoint_ids.len(),
                collections.len()
            )));
        }
        Ok(GetCollections {
            uuid: props::optional(msg, "uuid").map(str::to_owned),
            checkpoint_ids,
            collections,
        })
    }
}

/// The reply to `getCollections`: a JSON array parallel to the request's collections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetCollectionsReply {
    /// Per collection: `None` (`null`) = the collection does not exist on the server (fatal
    /// for the client); `Some` empty object = no checkpoint yet; otherwise the stored
    /// checkpoint. A server should put its revision in both `rev` and `_rev`.
    pub checkpoints: Vec<Option<Map<String, Value>>>,
}

impl GetCollectionsReply {
    /// The checkpoint revision of entry `index`: its `rev` member, else `_rev` (Sync Gateway
    /// leaves `_rev` in; LiteCore reads `rev`).
    pub fn rev(&self, index: usize) -> Option<&str> {
        let entry = self.checkpoints.get(index)?.as_ref()?;
        entry
            .get("rev")
            .and_then(Value::as_str)
            .or_else(|| entry.get("_rev").and_then(Value::as_str))
    }

    /// The response answering `request`.
    pub fn to_response(&self, request: &Message) -> Message {
        let mut msg = Message::response_to(request);
        let entries: Vec<Value> = self
            .checkpoints
            .iter()
            .map(|c| c.clone().map_or(Value::Null, Value::Object))
            .collect();
        msg.body = bytes_of(Value::Array(entries).to_string());
        msg
    }

    /// Decodes the reply to a `getCollections` we sent.
    pub fn from_response(msg: &Message) -> Result<GetCollectionsReply, MessageError> {
        props::check_response(msg)?;
        let Value::Array(items) = props::json_body(&msg.body)? else {
            return Err(bad_body("expected a JSON array"));
        };
        let checkpoints = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Null => Ok(None),
                Value::Object(map) => Ok(Some(map)),
                other => Err(bad_body(format!(
                    "entry {i}: expected an object or null, got {other}"
                ))),
            })
            .collect::<Result<_, _>>()?;
        Ok(GetCollectionsReply { checkpoints })
    }
}

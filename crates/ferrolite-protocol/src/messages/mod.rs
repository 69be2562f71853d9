//! Typed replication messages (`CBMobile_3`, revision trees) and their replies.
//!
//! Each request of the replication protocol has a struct with `to_message` (build the BLIP
//! [`Message`] to send) and `from_message` (decode a received one); each reply has a struct with
//! `to_response(request)` (answer a received request) and `from_response` (decode the answer
//! to a request we sent). The traits [`TypedRequest`] and [`TypedReply`] tie them together for
//! generic code; the inherent methods work without importing them.
//!
//! | request | reply |
//! |---|---|
//! | [`GetCheckpoint`] | [`GetCheckpointReply`] (or `HTTP 404`, see [`MessageError::is_not_found`]) |
//! | [`SetCheckpoint`] | [`SetCheckpointReply`] |
//! | [`GetCollections`] | [`GetCollectionsReply`] |
//! | [`SubChanges`], [`UnsubChanges`], [`Ping`] | [`EmptyReply`] |
//! | [`Changes`] | [`ChangesReply`] |
//! | [`ProposeChanges`] | [`ProposeChangesReply`] |
//! | [`Rev`] | [`RevReply`] |
//! | [`NoRev`] | none (sent NoReply) |
//! | [`GetAttachment`] | [`GetAttachmentReply`] |
//! | [`ProveAttachment`] | [`ProveAttachmentReply`] (see [`prove_attachment`]) |
//!
//! A passive peer decodes whatever arrives with [`Request::from_message`] and answers a
//! [`MessageError`] with [`MessageError::to_error_reply`] (`BLIP 404` for an unknown profile,
//! `HTTP 400` for a malformed request, as Sync Gateway does).
//!
//! Decoding rules shared by every message:
//!
//! - unknown properties are ignored, and so are go-blip's `Content-Type`;
//! - a property with an empty value counts as absent (LiteCore writes `rev` empty on a first
//!   `setCheckpoint`);
//! - booleans are true for `1` (any non-zero integer), `true`, `yes`, `t`, `y` (any case), false
//!   for everything else, absent included — the union of what LiteCore's `boolProperty` and Go's
//!   `strconv.ParseBool` accept; they are encoded as LiteCore 3.1 sends them (`1` for `deleted`
//!   and `noconflicts`, `true` for everything else);
//! - numbers are decimal digits only (no sign, no spaces) and must fit their type, else
//!   [`MessageError::BadProperty`].
//!
//! ```
//! use ferrolite_protocol::messages::{GetCheckpoint, Request, MessageError};
//!
//! let request = GetCheckpoint { client: "cp-abc=".into(), collection: None }.to_message();
//! match Request::from_message(&request) {
//!     Ok(Request::GetCheckpoint(get)) => assert_eq!(get.client, "cp-abc="),
//!     other => panic!("{other:?}"),
//! }
//!
//! let unknown = ferrolite_protocol::blip::Message::request("frobnicate");
//! let err = Request::from_message(&unknown).unwrap_err();
//! let reply = err.to_error_reply(&unknown);
//! assert_eq!(reply.error(), Some(("BLIP", 404)));
//! ```

mod attachments;
mod changes;
mod checkpoint;
mod props;
mod rev;
mod sequence;

use std::fmt;
use std::str::FromStr;

use crate::blip::{Message, MessageType};

pub use attachments::{
    prove_attachment, GetAttachment, GetAttachmentReply, ProveAttachment, ProveAttachmentReply,
    MAX_NONCE_LEN,
};
pub use changes::{
    ChangeFlags, ChangeRow, Changes, ChangesReply, ChangesReplyEntry, ProposeChanges,
    ProposeChangesReply, ProposeStatus, ProposedChange, SubChanges, UnsubChanges, BYCHANNEL_FILTER,
    VERSIONING_REV_TREES, VERSIONING_VERSION_VECTORS,
};
pub use checkpoint::{
    GetCheckpoint, GetCheckpointReply, GetCollections, GetCollectionsReply, SetCheckpoint,
    SetCheckpointReply,
};
pub use rev::{NoRev, Rev, RevReply};
pub use sequence::Sequence;

/// A replication message that cannot be understood.
///
/// A passive peer answers it with [`MessageError::to_error_reply`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// A required property is absent (or empty).
    #[error("missing property '{name}'")]
    MissingProperty {
        /// The property's name.
        name: &'static str,
    },
    /// A property has a value that cannot be used.
    #[error("invalid value {value:?} for property '{name}': {reason}")]
    BadProperty {
        /// The property's name.
        name: &'static str,
        /// The value received.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// The body is not the JSON (or bytes) the message needs.
    #[error("invalid body: {detail}")]
    BadBody {
        /// What is wrong, and where.
        detail: String,
    },
    /// The message is a request for another profile than the one being decoded.
    #[error("expected a '{expected}' request, got profile '{}'", .found.as_deref().unwrap_or_default())]
    WrongProfile {
        /// The profile being decoded.
        expected: Profile,
        /// The message's `Profile` property, if any.
        found: Option<String>,
    },
    /// A request whose profile this peer has no handler for (or no `Profile` at all).
    #[error("no handler for BLIP request {0:?}")]
    UnknownProfile(String),
    /// The message is of the wrong kind (a reply where a request was expected, or the reverse).
    #[error("expected a {expected:?} message, got a {found:?}")]
    WrongType {
        /// The kind being decoded.
        expected: MessageType,
        /// The kind received.
        found: MessageType,
    },
    /// The peer answered the request with an error instead of a reply.
    #[error("error reply {domain} {code}: {message}")]
    ErrorReply {
        /// `Error-Domain` (`HTTP`, `BLIP`, `LiteCore`, …).
        domain: String,
        /// `Error-Code`.
        code: i32,
        /// The error's body, as text.
        message: String,
    },
}

impl MessageError {
    /// The `Error-Domain` and `Error-Code` a passive peer answers this error with: `BLIP 404`
    /// for an unknown profile (what go-blip and LiteCore send), `HTTP 400` for a malformed
    /// request (what Sync Gateway sends), `HTTP 502` for an error reply being passed on.
    pub fn reply_code(&self) -> (&'static str, i32) {
        match self {
            MessageError::UnknownProfile(_) => ("BLIP", 404),
            MessageError::ErrorReply { .. } => ("HTTP", 502),
            _ => ("HTTP", 400),
        }
    }

    /// The error reply a passive peer sends for this error in answer to `request`.
    ///
    /// The body is Sync Gateway's text for an unknown profile (`No handler for BLIP request`),
    /// else this error's description.
    pub fn to_error_reply(&self, request: &Message) -> Message {
        let (domain, code) = self.reply_code();
        let text = match self {
            MessageError::UnknownProfile(_) => "No handler for BLIP request".to_owned(),
            other => other.to_string(),
        };
        Message::error_to(request, domain, code, &text)
    }

    /// Whether this is the peer's error reply `HTTP 404` — for `getCheckpoint`, "no
    /// checkpoint stored" (LiteCore treats exactly this as such).
    pub fn is_not_found(&self) -> bool {
        self.is_error_reply("HTTP", 404)
    }

    /// Whether this is the peer's error reply with this domain and code.
    pub fn is_error_reply(&self, domain: &str, code: i32) -> bool {
        matches!(self, MessageError::ErrorReply { domain: d, code: c, .. } if d == domain && *c == code)
    }
}

/// The `Profile` of every request of the replication protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Profile {
    /// `getCheckpoint`: read the server-side checkpoint.
    GetCheckpoint,
    /// `setCheckpoint`: write it.
    SetCheckpoint,
    /// `getCollections`: select collections and read their checkpoints (3.1+).
    GetCollections,
    /// `subChanges`: start the change feed.
    SubChanges,
    /// `unsubChanges`: stop it (Sync Gateway only).
    UnsubChanges,
    /// `changes`: announce revisions.
    Changes,
    /// `proposeChanges`: announce revisions in no-conflict mode.
    ProposeChanges,
    /// `rev`: one revision.
    Rev,
    /// `norev`: a revision that cannot be sent.
    NoRev,
    /// `getAttachment`: fetch blob bytes.
    GetAttachment,
    /// `proveAttachment`: prove possession of a blob.
    ProveAttachment,
    /// `PING`: answered with an empty reply.
    Ping,
}

impl Profile {
    /// Every profile, in catalogue order.
    pub const ALL: [Profile; 12] = [
        Profile::GetCheckpoint,
        Profile::SetCheckpoint,
        Profile::GetCollections,
        Profile::SubChanges,
        Profile::UnsubChanges,
        Profile::Changes,
        Profile::ProposeChanges,
        Profile::Rev,
        Profile::NoRev,
        Profile::GetAttachment,
        Profile::ProveAttachment,
        Profile::Ping,
    ];

    /// The name sent in the `Profile` property.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::GetCheckpoint => "getCheckpoint",
            Profile::SetCheckpoint => "setCheckpoint",
            Profile::GetCollections => "getCollections",
            Profile::SubChanges => "subChanges",
            Profile::UnsubChanges => "unsubChanges",
            Profile::Changes => "changes",
            Profile::ProposeChanges => "proposeChanges",
            Profile::Rev => "rev",
            Profile::NoRev => "norev",
            Profile::GetAttachment => "getAttachment",
            Profile::ProveAttachment => "proveAttachment",
            Profile::Ping => "PING",
        }
    }

    /// The profile with this exact name (names are case-sensitive on the wire).
    pub fn from_name(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Profile {
    type Err = MessageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::from_name(s).ok_or_else(|| MessageError::UnknownProfile(s.to_owned()))
    }
}

/// A typed request: one profile, encoded to and decoded from a BLIP [`Message`].
pub trait TypedRequest: Sized {
    /// The request's profile.
    const PROFILE: Profile;
    /// The type of a successful reply to it.
    type Reply: TypedReply;
    /// The message to send (number 0: the connection assigns it).
    fn to_message(&self) -> Message;
    /// Decodes a received request of this profile.
    fn from_message(msg: &Message) -> Result<Self, MessageError>;
}

/// A typed successful reply.
pub trait TypedReply: Sized {
    /// The response answering `request`.
    fn to_response(&self, request: &Message) -> Message;
    /// Decodes the response to a request we sent; an error reply decodes as
    /// [`MessageError::ErrorReply`].
    fn from_response(msg: &Message) -> Result<Self, MessageError>;
}

macro_rules! impl_typed_request {
    ($($ty:ty => $profile:ident, $reply:ty;)*) => {$(
        impl TypedRequest for $ty {
            const PROFILE: Profile = Profile::$profile;
            type Reply = $reply;
            fn to_message(&self) -> Message {
                <$ty>::to_message(self)
            }
            fn from_message(msg: &Message) -> Result<Self, MessageError> {
                <$ty>::from_message(msg)
            }
        }
    )*};
}

macro_rules! impl_typed_reply {
    ($($ty:ty),* $(,)?) => {$(
        impl TypedReply for $ty {
            fn to_response(&self, request: &Message) -> Message {
                <$ty>::to_response(self, request)
            }
            fn from_response(msg: &Message) -> Result<Self, MessageError> {
                <$ty>::from_response(msg)
            }
        }
    )*};
}

impl_typed_request! {
    GetCheckpoint => GetCheckpoint, GetCheckpointReply;
    SetCheckpoint => SetCheckpoint, SetCheckpointReply;
    GetCollections => GetCollections, GetCollectionsReply;
    SubChanges => SubChanges, EmptyReply;
    UnsubChanges => UnsubChanges, EmptyReply;
    Changes => Changes, ChangesReply;
    ProposeChanges => ProposeChanges, ProposeChangesReply;
    Rev => Rev, RevReply;
    NoRev => NoRev, EmptyReply;
    GetAttachment => GetAttachment, GetAttachmentReply;
    ProveAttachment => ProveAttachment, ProveAttachmentReply;
    Ping => Ping, EmptyReply;
}

impl_typed_reply!(
    EmptyReply,
    GetCheckpointReply,
    SetCheckpointReply,
    GetCollectionsReply,
    ChangesReply,
    ProposeChangesReply,
    RevReply,
    GetAttachmentReply,
    ProveAttachmentReply,
);

/// A successful reply with nothing in it (to `subChanges`, `unsubChanges`, `PING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EmptyReply;

impl EmptyReply {
    /// The empty response to `request`.
    pub fn to_response(&self, request: &Message) -> Message {
        Message::response_to(request)
    }

    /// Checks that `msg` is a successful response (its properties and body are ignored).
    pub fn from_response(msg: &Message) -> Result<EmptyReply, MessageError> {
        props::check_response(msg)?;
        Ok(EmptyReply)
    }
}

/// `PING`: Sync Gateway answers it with an empty reply (the JavaScript client uses it as a
/// keep-alive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ping;

impl Ping {
    /// The message to send.
    pub fn to_message(&self) -> Message {
        Message::request(Profile::Ping.as_str())
    }

    /// Decodes a received `PING`.
    pub fn from_message(msg: &Message) -> Result<Ping, MessageError> {
        props::check_request(msg, Profile::Ping)?;
        Ok(Ping)
    }
}

/// Any request of the replication protocol, decoded by its `Profile`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Request {
    /// `getCheckpoint`.
    GetCheckpoint(GetCheckpoint),
    /// `setCheckpoint`.
    SetCheckpoint(SetCheckpoint),
    /// `getCollections`.
    GetCollections(GetCollections),
    /// `subChanges`.
    SubChanges(SubChanges),
    /// `unsubChanges`.
    UnsubChanges(UnsubChanges),
    /// `changes`.
    Changes(Changes),
    /// `proposeChanges`.
    ProposeChanges(ProposeChanges),
    /// `rev`.
    Rev(Box<Rev>),
    /// `norev`, or a `rev` carrying an `error` property (LiteCore treats both alike).
    NoRev(NoRev),
    /// `getAttachment`.
    GetAttachment(GetAttachment),
    /// `proveAttachment`.
    ProveAttachment(ProveAttachment),
    /// `PING`.
    Ping(Ping),
}

impl Request {
    /// Decodes a received request by its `Profile`.
    ///
    /// A response or error message is refused with [`MessageError::WrongType`]; a missing or
    /// unknown profile with [`MessageError::UnknownProfile`] (answer: `BLIP 404`).
    pub fn from_message(msg: &Message) -> Result<Request, MessageError> {
        if msg.kind != MessageType::Request {
            return Err(MessageError::WrongType {
                expected: MessageType::Request,
                found: msg.kind,
            });
        }
        let name = msg.profile().unwrap_or_default();
        let profile = Profile::from_name(name)
            .ok_or_else(|| MessageError::UnknownProfile(name.to_owned()))?;
        Ok(match profile {
            Profile::GetCheckpoint => Request::GetCheckpoint(GetCheckpoint::from_message(msg)?),
            Profile::SetCheckpoint => Request::SetCheckpoint(SetCheckpoint::from_message(msg)?),
            Profile::GetCollections => Request::GetCollections(GetCollections::from_message(msg)?),
            Profile::SubChanges => Request::SubChanges(SubChanges::from_message(msg)?),
            Profile::UnsubChanges => Request::UnsubChanges(UnsubChanges::from_message(msg)?),
            Profile::Changes => Request::Changes(Changes::from_message(msg)?),
            Profile::ProposeChanges => Request::ProposeChanges(ProposeChanges::from_message(msg)?),
            Profile::Rev if props::optional(msg, "error").is_some() => {
                Request::NoRev(NoRev::from_message(msg)?)
            }
            Profile::Rev => Request::Rev(Box::new(Rev::from_message(msg)?)),
            Profile::NoRev => Request::NoRev(NoRev::from_message(msg)?),
            Profile::GetAttachment => Request::GetAttachment(GetAttachment::from_message(msg)?),
            Profile::ProveAttachment => {
                Request::ProveAttachment(ProveAttachment::from_message(msg)?)
            }
            Profile::Ping => Request::Ping(Ping::from_message(msg)?),
        })
    }

    /// The message to send.
    pub fn to_message(&self) -> Message {
        match self {
            Request::GetCheckpoint(m) => m.to_message(),
            Request::SetCheckpoint(m) => m.to_message(),
            Request::GetCollections(m) => m.to_message(),
            Request::SubChanges(m) => m.to_message(),
            Request::UnsubChanges(m) => m.to_message(),
            Request::Changes(m) => m.to_message(),
            Request::ProposeChanges(m) => m.to_message(),
            Request::Rev(m) => m.to_message(),
            Request::NoRev(m) => m.to_message(),
            Request::GetAttachment(m) => m.to_message(),
            Request::ProveAttachment(m) => m.to_message(),
            Request::Ping(m) => m.to_message(),
        }
    }

    /// The request's profile.
    pub fn profile(&self) -> Profile {
        match self {
            Request::GetCheckpoint(_) => Profile::GetCheckpoint,
            Request::SetCheckpoint(_) => Profile::SetCheckpoint,
            Request::GetCollections(_) => Profile::GetCollections,
            Request::SubChanges(_) => Profile::SubChanges,
            Request::UnsubChanges(_) => Profile::UnsubChanges,
            Request::Changes(_) => Profile::Changes,
            Request::ProposeChanges(_) => Profile::ProposeChanges,
            Request::Rev(_) => Profile::Rev,
            Request::NoRev(_) => Profile::NoRev,
            Request::GetAttachment(_) => Profile::GetAttachment,
            Request::ProveAttachment(_) => Profile::ProveAttachment,
            Request::Ping(_) => Profile::Ping,
        }
    }

    /// The `collection` property (collection-aware connections), for requests that have one.
    pub fn collection(&self) -> Option<u32> {
        match self {
            Request::GetCheckpoint(m) => m.collection,
            Request::SetCheckpoint(m) => m.collection,
            Request::SubChanges(m) => m.collection,
            Request::UnsubChanges(m) => m.collection,
            Request::Changes(m) => m.collection,
            Request::ProposeChanges(m) => m.collection,
            Request::Rev(m) => m.collection,
            Request::NoRev(m) => m.collection,
            Request::GetAttachment(m) => m.collection,
            Request::ProveAttachment(m) => m.collection,
            Request::GetCollections(_) | Request::Ping(_) => None,
        }
    }
}

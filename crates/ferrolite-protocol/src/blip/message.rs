//! A complete BLIP message, as the application sees it.

use bytes::Bytes;

use super::{varint, BlipError};

/// The kind of a BLIP message (ACK frames are internal to the codec and never surface here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// A request (type 0).
    Request,
    /// A response to a request (type 1).
    Response,
    /// An error response to a request (type 2), carrying `Error-Domain` and `Error-Code`.
    Error,
}

/// The properties of a message, in order: `key\0value\0` pairs on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties(Vec<(String, String)>);

impl Properties {
    /// No properties.
    pub fn new() -> Properties {
        Properties::default()
    }

    /// The value of `key`, if present (the first one, if repeated).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key` to `value`, replacing an existing value or appending.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let index = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(index).1)
    }

    /// Every pair, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no pair.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Properties {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Properties(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// A complete BLIP message: type, number, flags, properties and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request, response or error.
    pub kind: MessageType,
    /// For a request: its number in the sender's direction (assigned by the connection when
    /// sent; 0 before). For a response or error: the number of the request it answers.
    pub number: u64,
    /// Sent ahead of normal messages.
    pub urgent: bool,
    /// The body is (to be) sent deflated.
    pub compressed: bool,
    /// A request that expects no response.
    pub no_reply: bool,
    /// The properties.
    pub properties: Properties,
    /// The body.
    pub body: Bytes,
}

impl Message {
    /// A new request with the given `Profile` property.
    pub fn request(profile: &str) -> Message {
        let mut properties = Properties::new();
        properties.set("Profile", profile);
        Message {
            kind: MessageType::Request,
            number: 0,
            urgent: false,
            compressed: false,
            no_reply: false,
            properties,
            body: Bytes::new(),
        }
    }

    /// An empty response to `request`.
    pub fn response_to(request: &Message) -> Message {
        Message {
            kind: MessageType::Response,
            number: request.number,
            urgent: request.urgent,
            compressed: false,
            no_reply: false,
            properties: Properties::new(),
            body: Bytes::new(),
        }
    }

    /// An error response to `request`: `Error-Domain`, `Error-Code`, and the message as body.
    pub fn error_to(request: &Message, domain: &str, code: i32, message: &str) -> Message {
        let mut properties = Properties::new();
        properties.set("Error-Domain", domain);
        properties.set("Error-Code", code.to_string());
        Message {
            kind: MessageType::Error,
            number: request.number,
            urgent: request.urgent,
            compressed: false,
            no_reply: false,
            properties,
            body: Bytes::copy_from_slice(message.as_bytes()),
        }
    }

    /// The `Profile` property (what a request asks for).
    pub fn profile(&self) -> Option<&str> {
        self.properties.get("Profile")
    }

    /// A property's value.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.get(key)
    }

    /// For an error response: its domain and code.
    pub fn error(&self) -> Option<(&str, i32)> {
        if self.kind != MessageType::Error {
            return None;
        }
        let domain = self.property("Error-Domain").unwrap_or("BLIP");
        let code = self
            .property("Error-Code")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Some((domain, code))
    }
}

/// The largest property block LiteCore builds or accepts (`kMaxPropertiesSize`, 100 KiB);
/// bigger blocks are refused in both directions.
pub const MAX_PROPERTIES_SIZE: usize = 100 * 1024;

impl Properties {
    /// The size of the encoded block, `key\0value\0…`, without its length prefix.
    pub fn encoded_len(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len() + 2).sum()
    }

    /// Appends the encoded block with its length prefix, `uvarint(len) || key\0value\0…`, to
    /// `out`: what a message starts with.
    ///
    /// # Errors
    ///
    /// [`BlipError::InvalidProperty`] when a key or value contains a NUL byte,
    /// [`BlipError::PropertiesTooLarge`] when the block exceeds [`MAX_PROPERTIES_SIZE`].
    pub fn encode_prefixed(&self, out: &mut Vec<u8>) -> Result<(), BlipError> {
        let len = self.encoded_len();
        if len > MAX_PROPERTIES_SIZE {
            return Err(BlipError::PropertiesTooLarge {
                size: len as u64,
                max: MAX_PROPERTIES_SIZE as u64,
            });
        }
        if let Some((key, _)) = self
            .0
            .iter()
            .find(|(k, v)| k.as_bytes().contains(&0) || v.as_bytes().contains(&0))
        {
            return Err(BlipError::InvalidProperty { key: key.clone() });
        }
        out.reserve(len + varint::MAX_LEN);
        varint::write(len as u64, out);
        for (key, value) in &self.0 {
            out.extend_from_slice(key.as_bytes());
            out.push(0);
            out.extend_from_slice(value.as_bytes());
            out.push(0);
        }
        Ok(())
    }

    /// Decodes a property block (without its length prefix). Keys and values that are not
    /// valid UTF-8 are converted lossily; repeated keys are kept (lookups see the first).
    ///
    /// # Errors
    ///
    /// [`BlipError::MalformedProperties`] when a non-empty block does not end in NUL or holds
    /// an odd number of NULs, [`BlipError::PropertiesTooLarge`] when it exceeds
    /// [`MAX_PROPERTIES_SIZE`].
    pub fn decode(block: &[u8]) -> Result<Properties, BlipError> {
        let Some((&last, strings)) = block.split_last() else {
            return Ok(Properties::new());
        };
        if block.len() > MAX_PROPERTIES_SIZE {
            return Err(BlipError::PropertiesTooLarge {
                size: block.len() as u64,
                max: MAX_PROPERTIES_SIZE as u64,
            });
        }
        if last != 0 {
            return Err(BlipError::MalformedProperties(
                "property block does not end in NUL",
            ));
        }
        let mut pieces = strings.split(|&b| b == 0);
        let mut pairs = Vec::new();
        while let Some(key) = pieces.next() {
            let Some(value) = pieces.next() else {
                return Err(BlipError::MalformedProperties(
                    "property block holds an odd number of strings",
                ));
            };
            pairs.push((text(key), text(value)));
        }
        Ok(Properties(pairs))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

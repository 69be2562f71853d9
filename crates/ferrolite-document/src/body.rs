//! Document IDs and user bodies.

use serde_json::{Map, Value};

use crate::DocumentError;

/// The JSON properties of a document: a JSON object.
pub type Properties = Map<String, Value>;

/// The longest document ID accepted, in bytes (Couchbase Lite's replicator refuses longer ones).
pub const MAX_DOC_ID_LEN: usize = 255;

/// Checks a document ID: 1 to [`MAX_DOC_ID_LEN`] bytes of UTF-8, not starting with `_`
/// (reserved for `_local/`, `_design/` and the server's own documents), no control characters.
pub fn validate_doc_id(id: &str) -> Result<(), DocumentError> {
    let refuse = |reason| {
        Err(DocumentError::InvalidDocId {
            id: id.to_owned(),
            reason,
        })
    };
    if id.is_empty() {
        return refuse("empty");
    }
    if id.len() > MAX_DOC_ID_LEN {
        return refuse("longer than 255 bytes");
    }
    if id.starts_with('_') {
        return refuse("starts with '_'");
    }
    if id.chars().any(char::is_control) {
        return refuse("contains a control character");
    }
    Ok(())
}

/// Checks a body an application wants to save: every top-level key starting with `_` (`_id`,
/// `_rev`, `_deleted`, `_attachments`, `_revisions`, `_exp`, `_removed`, …) is reserved for
/// metadata and refused, as Couchbase Lite does; so is the empty key.
pub fn validate_user_properties(properties: &Properties) -> Result<(), DocumentError> {
    match properties
        .keys()
        .find(|k| k.is_empty() || k.starts_with('_'))
    {
        Some(key) => Err(DocumentError::ReservedKey(key.clone())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn doc_ids() {
        assert!(validate_doc_id("user:00000001").is_ok());
        assert!(validate_doc_id(&"x".repeat(255)).is_ok());
        assert!(validate_doc_id("").is_err());
        assert!(validate_doc_id(&"x".repeat(256)).is_err());
        assert!(validate_doc_id("_local/x").is_err());
        assert!(validate_doc_id("a\nb").is_err());
    }

    #[test]
    fn reserved_keys_are_refused() {
        for key in [
            "_id",
            "_rev",
            "_deleted",
            "_attachments",
            "_revisions",
            "_exp",
            "_removed",
            "_x",
            "",
        ] {
            let mut props = Properties::new();
            props.insert(key.to_owned(), json!(1));
            assert_eq!(
                validate_user_properties(&props),
                Err(DocumentError::ReservedKey(key.to_owned()))
            );
        }
        let ok = json!({"name": "x", "nested": {"_id": 1}});
        assert!(validate_user_properties(ok.as_object().unwrap()).is_ok());
    }
}

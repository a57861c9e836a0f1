//! An object's metadata: what every object store keeps beside the bytes and hands back on
//! read. tiersweep stores it and returns it; what it means (serving `Content-Type`,
//! refusing or deleting expired objects) is the embedding store's policy.
//!
//! It travels with the object's data in one write, so it can never describe another
//! revision: inline objects carry it in their HV row, large ones in the HV row beside the
//! tombstone (read together with it) and on the LT blob (for operators and the audit,
//! who see blobs without HV). The limits are GCS's, so that what HV accepts, LT accepts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ModelError, Timestamp};

/// Content type, user metadata and an optional expiry. The default (all empty) is what an
/// object written without metadata has, and costs nothing to store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    user: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<Timestamp>,
}

/// User metadata keys under this prefix are tiersweep's own on the LT blob.
pub const RESERVED_PREFIX: &str = "tiersweep-";

/// GCS's limit on an object's custom metadata, keys and values together.
pub const MAX_USER_BYTES: usize = 8 * 1024;

/// A bound on the content type, well above any registered media type with parameters.
pub const MAX_CONTENT_TYPE_BYTES: usize = 256;

impl ObjectMeta {
    /// Metadata with a content type, checked: printable ASCII, at most
    /// [`MAX_CONTENT_TYPE_BYTES`].
    pub fn with_content_type(
        mut self,
        content_type: impl Into<String>,
    ) -> Result<Self, ModelError> {
        let ct = content_type.into();
        if ct.is_empty() || ct.len() > MAX_CONTENT_TYPE_BYTES {
            return Err(ModelError::new(
                "content type",
                &ct,
                "must be 1 to 256 bytes",
            ));
        }
        if !ct.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(ModelError::new(
                "content type",
                &ct,
                "must be printable ASCII (no control characters)",
            ));
        }
        self.content_type = Some(ct);
        Ok(self)
    }

    /// Adds one user metadata entry, checked: a non-empty key of printable ASCII not
    /// under [`RESERVED_PREFIX`], and all entries together within [`MAX_USER_BYTES`].
    pub fn with_user(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, ModelError> {
        let (key, value) = (key.into(), value.into());
        if key.is_empty() || !key.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(ModelError::new(
                "metadata key",
                &key,
                "must be non-empty printable ASCII without spaces",
            ));
        }
        if key.to_ascii_lowercase().starts_with(RESERVED_PREFIX) {
            return Err(ModelError::new(
                "metadata key",
                &key,
                "keys starting with 'tiersweep-' are reserved",
            ));
        }
        self.user.insert(key.clone(), value);
        if self.user_bytes() > MAX_USER_BYTES {
            return Err(ModelError::new(
                "metadata key",
                &key,
                "user metadata exceeds 8 KiB (keys and values together)",
            ));
        }
        Ok(self)
    }

    /// Metadata that says the object expires at `at` (a wall-clock time, milliseconds
    /// since the epoch, as the embedding store means it).
    pub fn with_expiry(mut self, at: Timestamp) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// The content type, if one was set.
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }

    /// The user metadata, by key.
    pub fn user(&self) -> &BTreeMap<String, String> {
        &self.user
    }

    /// When the object expires, if an expiry was set (carried, not enforced).
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.expires_at
    }

    /// Whether there is anything to store.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the object has expired at `now`. tiersweep never acts on it.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    fn user_bytes(&self) -> usize {
        self.user.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// The stored form (the HV row's `v:meta` cell).
    pub fn encode(&self) -> Vec<u8> {
        // Serialising strings, a map of strings and an integer cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the stored form, re-checking every limit: a cell written by something
    /// else is input like any other.
    pub fn decode(stored: &[u8]) -> Result<Self, ModelError> {
        let raw: Self = serde_json::from_slice(stored).map_err(|_| {
            ModelError::new(
                "object metadata",
                &String::from_utf8_lossy(stored),
                "is not the JSON tiersweep writes",
            )
        })?;
        let mut checked = Self::default();
        if let Some(ct) = raw.content_type {
            checked = checked.with_content_type(ct)?;
        }
        for (k, v) in raw.user {
            checked = checked.with_user(k, v)?;
        }
        checked.expires_at = raw.expires_at;
        Ok(checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> ObjectMeta {
        ObjectMeta::default()
            .with_content_type("image/png")
            .unwrap()
            .with_user("owner", "alice")
            .unwrap()
            .with_expiry(Timestamp(1_800_000_000_000))
    }

    #[test]
    fn the_stored_form_round_trips_and_empty_is_empty() {
        let meta = full();
        assert_eq!(ObjectMeta::decode(&meta.encode()).unwrap(), meta);
        assert_eq!(ObjectMeta::default().encode(), b"{}");
        assert!(ObjectMeta::decode(b"{}").unwrap().is_empty());
        assert!(!meta.is_empty());
    }

    #[test]
    fn limits_are_checked_on_construction_and_on_decode() {
        let m = ObjectMeta::default();
        assert!(m.clone().with_content_type("").is_err());
        assert!(m.clone().with_content_type("text/plain\r\nX: y").is_err());
        assert!(m.clone().with_user("Tiersweep-expires-at", "1").is_err());
        assert!(m.clone().with_user("a b", "1").is_err());
        assert!(
            m.clone()
                .with_user("k", "v".repeat(MAX_USER_BYTES))
                .is_err()
        );
        assert!(
            m.clone()
                .with_user("k", "v".repeat(MAX_USER_BYTES - 1))
                .is_ok()
        );
        // A cell someone else wrote is checked like the constructor checks.
        assert!(ObjectMeta::decode(br#"{"user":{"tiersweep-x":"1"}}"#).is_err());
        assert!(ObjectMeta::decode(br#"{"content_type":"a\u0000b"}"#).is_err());
        assert!(ObjectMeta::decode(b"not json").is_err());
        assert!(ObjectMeta::decode(br#"{"unknown": 1}"#).unwrap().is_empty());
    }

    #[test]
    fn expiry_is_reported_not_enforced() {
        let meta = full();
        assert!(!meta.is_expired(Timestamp(1_799_999_999_999)));
        assert!(meta.is_expired(Timestamp(1_800_000_000_000)));
        assert!(!ObjectMeta::default().is_expired(Timestamp(i64::MAX)));
    }
}

//! The vocabulary every other module speaks: object paths, LT revisions, HV row values,
//! changelog identities and the change record itself.
//!
//! Everything here is validated on construction, so a value of one of these types is known
//! to be well-formed wherever it travels: a cleaner that decodes a [`ChangeRecord`] from a
//! changelog row can only ever name revisions that belong to the record's own object.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub mod meta;
mod shard;

pub use meta::ObjectMeta;
pub use shard::{SHARD_COUNT, Shard, ShardRange, ShardSet, minted_key};
use shard::{SHARD_DIGITS, shard_of};

/// Why a value did not parse; names the field so an operator can find the bad input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason} (got {value:?})")]
pub struct ModelError {
    /// Which field or value was refused.
    pub field: &'static str,
    /// The refused value (cut to a readable length).
    pub value: String,
    /// Why it was refused.
    pub reason: &'static str,
}

impl ModelError {
    pub(crate) fn new(field: &'static str, value: &str, reason: &'static str) -> Self {
        // Keep error messages bounded even when the input is not.
        let value: String = value.chars().take(200).collect();
        Self {
            field,
            value,
            reason,
        }
    }
}

/// Milliseconds since the Unix epoch. Bigtable cell timestamps are microseconds with
/// millisecond granularity; every store in tiersweep speaks milliseconds so that the
/// in-memory twin and the real service agree on what "stale" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// `d` later, saturating at the end of time (`i64::MAX` ms).
    pub fn saturating_add(self, d: std::time::Duration) -> Self {
        Self(self.0.saturating_add(duration_millis(d)))
    }

    /// `d` earlier, saturating at the start of time (`i64::MIN` ms).
    pub fn saturating_sub(self, d: std::time::Duration) -> Self {
        Self(self.0.saturating_sub(duration_millis(d)))
    }

    /// How long ago `self` was, seen from `now`; zero if it lies in the future.
    pub fn age_at(self, now: Timestamp) -> std::time::Duration {
        std::time::Duration::from_millis(now.0.saturating_sub(self.0).max(0) as u64)
    }
}

impl Timestamp {
    /// Parses an RFC 3339 UTC time as GCS writes it (`2026-12-04T09:13:57.104584Z`; an
    /// offset such as `+02:00` in place of `Z` is accepted too), to the millisecond.
    pub fn parse_rfc3339(s: &str) -> Result<Self, ModelError> {
        let bad = |reason| ModelError::new("RFC 3339 time", s, reason);
        let b = s.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
            return Err(bad("is not YYYY-MM-DDTHH:MM:SS"));
        }
        let num = |from: usize, to: usize| -> Result<i64, ModelError> {
            let part = s.get(from..to).ok_or_else(|| bad("is not ASCII"))?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad("has a non-digit where a number belongs"));
            }
            part.parse::<i64>()
                .map_err(|_| bad("has a number out of range"))
        };
        let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
        if b[13] != b':' || b[16] != b':' {
            return Err(bad("is not YYYY-MM-DDTHH:MM:SS"));
        }
        let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
            return Err(bad("has a field out of range"));
        }
        // A leap second (":60") is read as the next second's start.
        if second > 60 {
            return Err(bad("has a field out of range"));
        }
        let mut at = 19;
        let mut millis = 0;
        if b.get(at) == Some(&b'.') {
            let digits = b[at + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if digits == 0 {
                return Err(bad("has an empty fraction"));
            }
            let frac = &s[at + 1..at + 1 + digits.min(3)];
            millis = frac.parse::<i64>().unwrap_or(0) * 10_i64.pow(3 - frac.len() as u32);
            at += 1 + digits;
        }
        let offset_s = match &s[at..] {
            "Z" | "z" => 0,
            tz if tz.len() == 6
                && matches!(tz.as_bytes()[0], b'+' | b'-')
                && tz.as_bytes()[3] == b':' =>
            {
                let sign = if tz.starts_with('-') { -1 } else { 1 };
                sign * (num(at + 1, at + 3)? * 3600 + num(at + 4, at + 6)? * 60)
            }
            _ => return Err(bad("has no time zone (Z or ±HH:MM)")),
        };
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
        Ok(Self(secs * 1000 + millis))
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn duration_millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// The key of an object in the store, and the HV row key.
///
/// The rules are GCS's object-name rules minus what would make revision paths ambiguous:
/// revisions live at `{path}/{uuid}`, so a path must not be empty, must not start with `/`
/// and must not contain `.` or `..` segments or control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectPath(String);

/// Leaves room for the `/{uuid}` suffix and a bucket prefix inside GCS's 1024-byte limit.
pub const MAX_OBJECT_PATH_BYTES: usize = 900;

impl ObjectPath {
    /// An object path, checked against the rules above (at most
    /// [`MAX_OBJECT_PATH_BYTES`]).
    pub fn new(path: impl Into<String>) -> Result<Self, ModelError> {
        let path = path.into();
        let err = |reason| Err(ModelError::new("object path", &path, reason));
        if path.is_empty() {
            return err("must not be empty");
        }
        if path.len() > MAX_OBJECT_PATH_BYTES {
            return err("longer than 900 bytes");
        }
        if path.starts_with('/') || path.ends_with('/') {
            return err("must not start or end with '/'");
        }
        if path.chars().any(char::is_control) {
            return err("must not contain control characters");
        }
        if path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return err("must not contain empty, '.' or '..' segments");
        }
        Ok(Self(path))
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the object lies under `prefix`, matched by whole path segments: under
    /// `tenant-a` lie `tenant-a` and `tenant-a/…`, not `tenant-ab/…`. A prefix ending in
    /// `/` is a directory already; `""` contains everything.
    pub fn is_under(&self, prefix: &str) -> bool {
        if prefix.is_empty()
            || prefix.ends_with('/')
            || crate::mutants::on(crate::mutants::Mutant::StringPrefix)
        {
            return self.0.starts_with(prefix);
        }
        self.0
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

impl TryFrom<String> for ObjectPath {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<ObjectPath> for String {
    fn from(p: ObjectPath) -> Self {
        p.0
    }
}

impl fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ObjectPath {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// The LT blob name of one version of an object: `{object path}/{uuid v7}`.
///
/// A revision is minted once and never reused, which is what makes deleting an
/// unreferenced revision safe, and deleting it twice harmless.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Revision {
    name: String,
    /// Byte offset of the `/` that separates the object path from the uuid.
    split: usize,
}

impl Revision {
    /// Mints a fresh revision of `object`.
    pub fn mint(object: &ObjectPath) -> Self {
        let name = format!("{}/{}", object.as_str(), Uuid::now_v7());
        let split = object.as_str().len();
        Self { name, split }
    }

    /// A revision name read back from a store, checked to be `{object path}/{uuid v7}`.
    pub fn parse(name: impl Into<String>) -> Result<Self, ModelError> {
        let name = name.into();
        let Some(split) = name.rfind('/') else {
            return Err(ModelError::new(
                "revision",
                &name,
                "must be '{object path}/{uuid v7}'",
            ));
        };
        ObjectPath::new(&name[..split])
            .map_err(|_| ModelError::new("revision", &name, "object path part is invalid"))?;
        match Uuid::parse_str(&name[split + 1..]) {
            Ok(u)
                if u.get_version_num() == 7 && u.hyphenated().to_string() == name[split + 1..] => {}
            _ => {
                return Err(ModelError::new(
                    "revision",
                    &name,
                    "must end in a lowercase hyphenated uuid v7",
                ));
            }
        }
        Ok(Self { name, split })
    }

    /// The revision's name: the LT blob's object name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The object this revision is a version of.
    pub fn object(&self) -> &str {
        &self.name[..self.split]
    }

    /// Whether this is a revision of `object` (so a record naming it may delete it).
    pub fn belongs_to(&self, object: &ObjectPath) -> bool {
        self.object() == object.as_str()
    }
}

impl TryFrom<String> for Revision {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl From<Revision> for String {
    fn from(r: Revision) -> Self {
        r.name
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// What an HV row holds for an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HvValue {
    /// A small object stored in the row itself.
    Inline(Bytes),
    /// A large object: the row points at the LT revision that carries the bytes.
    Tombstone(Revision),
}

impl HvValue {
    /// The LT revision a tombstone points at; `None` for an inline value.
    pub fn tombstone(&self) -> Option<&Revision> {
        match self {
            HvValue::Tombstone(r) => Some(r),
            HvValue::Inline(_) => None,
        }
    }
}

/// The identity of one in-flight change, and its changelog row key: `{shard:03x}/{uuid v7}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChangeId(String);

impl ChangeId {
    /// A fresh id, minted on the system clock.
    pub fn mint() -> Self {
        Self::from_uuid(Uuid::now_v7())
    }

    /// A fresh id minted at `at` (the writer's [`Clock`](crate::clock::Clock)), so that its
    /// key sorts by that time within its shard: scans bound their key range by it
    /// (`minted_key`).
    pub fn mint_at(at: Timestamp) -> Self {
        let millis = u64::try_from(at.0).unwrap_or(0);
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            millis / 1000,
            (millis % 1000) as u32 * 1_000_000,
        );
        Self::from_uuid(Uuid::new_v7(ts))
    }

    fn from_uuid(u: Uuid) -> Self {
        Self(format!("{}/{}", shard_of(&u), u.hyphenated()))
    }

    /// A changelog row key read back, checked to be `{shard:03x}/{uuid}`.
    pub fn parse(key: &str) -> Result<Self, ModelError> {
        let bad = |reason| Err(ModelError::new("change id", key, reason));
        let Some((_, id)) = key.split_once('/') else {
            return bad("must be '{shard}/{uuid}'");
        };
        let Ok(u) = Uuid::parse_str(id) else {
            return bad("the part after '/' must be a uuid");
        };
        let canonical = Self::from_uuid(u);
        if canonical.0 != key {
            return bad("shard prefix or uuid form does not match (expected lowercase hex)");
        }
        Ok(canonical)
    }

    /// The row key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// When the writer minted the id (ids are UUIDv7), which is when the change began.
    /// Recovery lag is measured from it.
    pub fn minted_at(&self) -> Option<Timestamp> {
        let (_, id) = self.0.split_once('/')?;
        let (secs, nanos) = Uuid::parse_str(id).ok()?.get_timestamp()?.to_unix();
        let millis = i64::try_from(secs).ok()?.checked_mul(1000)? + i64::from(nanos / 1_000_000);
        Some(Timestamp(millis))
    }

    /// The shard the id's row is in.
    pub fn shard(&self) -> Shard {
        // The key was built by `from_uuid`, so it begins with the shard's hex digits.
        Shard(u16::from_str_radix(&self.0[..SHARD_DIGITS], 16).unwrap_or(0))
    }
}

impl TryFrom<String> for ChangeId {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ChangeId> for String {
    fn from(c: ChangeId) -> Self {
        c.0
    }
}

impl fmt::Display for ChangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who currently owns a changelog entry: the writer that recorded it, or the recovery
/// worker that claimed it. Heartbeats and removals are conditional on it; that is the
/// fence that keeps a slow writer from acting on an entry recovery already took over.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OwnerToken(String);

/// The role prefix of the tokens recovery claims rows with ([`OwnerToken::recovery_claim`]).
const RECOVERY_ROLE: &str = "recovery";

impl OwnerToken {
    /// A fresh token `{role}:{uuid}`. Writers use [`OwnerToken::writer`], scanners
    /// [`OwnerToken::recovery_claim`].
    pub fn mint(role: &str) -> Self {
        Self(format!("{role}:{}", Uuid::now_v7().simple()))
    }

    /// The token a writer records its change under.
    pub fn writer() -> Self {
        Self::mint("writer")
    }

    /// The token a scanner's claim re-stamps a stale row with.
    pub fn recovery_claim() -> Self {
        Self::mint(RECOVERY_ROLE)
    }

    /// Whether a claim made this token. Tokens are not secret (they are in rows, jobs,
    /// `inspect` and logs), so a cleaner must not converge a row just because a job names
    /// its owner: the row must be owned by a recovery claim, which only the scanner's
    /// "still stale" compare-and-set writes. A job carrying a writer's token names a live
    /// (or not yet claimed) change and is refused.
    pub fn is_recovery_claim(&self) -> bool {
        self.0
            .strip_prefix(RECOVERY_ROLE)
            .is_some_and(|rest| rest.starts_with(':'))
    }

    /// An owner token read back from a row, checked.
    pub fn parse(s: &str) -> Result<Self, ModelError> {
        if s.is_empty() || s.len() > 128 {
            return Err(ModelError::new(
                "owner token",
                s,
                "must be 1 to 128 characters",
            ));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b))
        {
            return Err(ModelError::new(
                "owner token",
                s,
                "may contain only ASCII letters, digits and -_:.",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The token as written in the row.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OwnerToken {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<OwnerToken> for String {
    fn from(t: OwnerToken) -> Self {
        t.0
    }
}

impl fmt::Display for OwnerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The current version of the serialized [`ChangeRecord`]. Readers accept every version up
/// to this one and reject newer ones with a clear error instead of misreading them.
pub const CHANGE_RECORD_VERSION: u32 = 1;

/// One in-flight two-tier mutation, as written to the changelog before LT is touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeRecord {
    /// The record format's version ([`CHANGE_RECORD_VERSION`] when written).
    #[serde(rename = "v")]
    pub version: u32,
    /// The object the change mutates.
    pub object: ObjectPath,
    /// The revision HV referenced when the change began, if it was a tombstone.
    pub old: Option<Revision>,
    /// The revision this change uploads, if it is a large put.
    pub new: Option<Revision>,
    /// The writer, or after a claim the recovery worker, that owns the entry.
    pub owner: OwnerToken,
    /// W3C `traceparent` of the writer's request, so a recovery trace can link back to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The row is not due for recovery before this time, in the changelog's time: scans
    /// do not return it and cleaners do not converge it earlier (a deferral sets it;
    /// docs/design/deferral.md). Stored under its original key, so rows stay readable.
    #[serde(default, rename = "cleanup_after", skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Timestamp>,
    /// How many times recovery has claimed the entry; grows the claim lease on each retry.
    #[serde(default)]
    pub claims: u32,
    /// Set by a deferral that waited out the upload settle: by `due_at`, no attempt
    /// of `new`'s upload can still land (a writer deferring after a failed upload; recovery
    /// deferring its own second pass). Recovery then removes the row after its deletes. A
    /// row due at `due_at` without it (a deferred put, whose client may be sending
    /// the last bytes at the deadline) gets a settle pass like any abandoned upload.
    /// Written only when set, so rows without it stay readable by earlier releases.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub settled: bool,
}

impl ChangeRecord {
    /// A record for a change of `object` from `old` to `new`, owned by `owner`.
    pub fn new(
        object: ObjectPath,
        old: Option<Revision>,
        new: Option<Revision>,
        owner: OwnerToken,
    ) -> Self {
        Self {
            version: CHANGE_RECORD_VERSION,
            object,
            old,
            new,
            owner,
            traceparent: None,
            due_at: None,
            claims: 0,
            settled: false,
        }
    }

    /// Checks what serde cannot: the version is known and both revisions belong to the
    /// record's object. A record that fails this must never drive a delete (invariant I4).
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.version == 0 || self.version > CHANGE_RECORD_VERSION {
            return Err(ModelError::new(
                "change record version",
                &self.version.to_string(),
                "unknown version: upgrade tiersweep before processing this row",
            ));
        }
        for (field, rev) in [("old revision", &self.old), ("new revision", &self.new)] {
            if let Some(rev) = rev
                && !rev.belongs_to(&self.object)
            {
                return Err(ModelError::new(
                    field,
                    rev.as_str(),
                    "does not belong to the record's object",
                ));
            }
        }
        if self.old.is_some() && self.old == self.new {
            return Err(ModelError::new(
                "new revision",
                self.new.as_ref().map_or("", |r| r.as_str()),
                "must differ from the old revision",
            ));
        }
        Ok(())
    }

    /// The LT revisions this change may have to delete, old first.
    pub fn revisions(&self) -> impl Iterator<Item = &Revision> {
        self.old.iter().chain(self.new.iter())
    }

    /// The record as stored in its changelog row (JSON).
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain structs of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A record read back from a row, decoded and [`validate`](Self::validate)d.
    pub fn decode(bytes: &[u8]) -> Result<Self, ModelError> {
        let record: ChangeRecord = serde_json::from_slice(bytes).map_err(|e| ModelError {
            field: "change record",
            value: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            reason: leak_reason(e),
        })?;
        record.validate()?;
        Ok(record)
    }
}

fn leak_reason(e: serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match e.classify() {
        Category::Io => "could not be read",
        Category::Syntax => "is not valid JSON",
        Category::Data => "has a missing, unknown or ill-typed field",
        Category::Eof => "is truncated",
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn prefixes_match_whole_segments() {
        let p = |s: &str| ObjectPath::new(s).unwrap();
        assert!(p("tenant-a/x").is_under("tenant-a"));
        assert!(p("tenant-a").is_under("tenant-a"));
        assert!(!p("tenant-ab/x").is_under("tenant-a"));
        assert!(p("tenant-a/x").is_under("tenant-a/"));
        assert!(!p("tenant-ab/x").is_under("tenant-a/"));
        assert!(p("a/b/c").is_under("a/b"));
        assert!(!p("a/bc").is_under("a/b"));
        assert!(p("anything").is_under(""));
    }
    use super::*;

    /// A row's due time is stored under the key rows have always carried, so a row written
    /// by an earlier release decodes with its due time, and one written now is read by it.
    #[test]
    fn a_records_due_time_keeps_its_stored_key() {
        let path = ObjectPath::new("due/a").unwrap();
        let mut record = ChangeRecord::new(path, None, None, OwnerToken::writer());
        record.due_at = Some(Timestamp(1_234));
        let stored = String::from_utf8(record.encode()).unwrap();
        assert!(stored.contains("\"cleanup_after\":1234"), "{stored}");
        assert!(!stored.contains("due_at"), "{stored}");
        assert_eq!(ChangeRecord::decode(stored.as_bytes()).unwrap().due_at, Some(Timestamp(1_234)));
    }

    #[test]
    fn rfc3339_times_parse_to_the_millisecond() {
        let t = |s: &str| Timestamp::parse_rfc3339(s).map(|t| t.0);
        assert_eq!(t("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(t("2026-12-04T09:13:57.104584Z"), Ok(1_796_375_637_104));
        assert_eq!(t("2026-12-04T09:13:57Z"), Ok(1_796_375_637_000));
        assert_eq!(t("2026-12-04T09:13:57.1Z"), Ok(1_796_375_637_100));
        assert_eq!(t("2026-12-04T11:13:57.104+02:00"), Ok(1_796_375_637_104));
        assert_eq!(t("2000-02-29T00:00:00Z"), Ok(951_782_400_000));
        for bad in [
            "",
            "2026-12-04",
            "2026-12-04T09:13:57",
            "2026-13-04T09:13:57Z",
            "2026-12-04T09:13:57.Z",
            "2026-12-04T09:13:57+0200",
            "2026-12-04 09:13:57Z",
            "2026-1a-04T09:13:57Z",
            "2026-12-04T09:13:57Zjunk",
        ] {
            assert!(t(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn object_paths_reject_what_would_make_revisions_ambiguous() {
        for bad in ["", "/a", "a/", "a//b", "a/./b", "a/../b", "a\nb", ".."] {
            assert!(ObjectPath::new(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(ObjectPath::new("usecase/org/12/blob.bin").is_ok());
        assert!(ObjectPath::new("x".repeat(901)).is_err());
    }

    #[test]
    fn revisions_are_fresh_and_round_trip() {
        let p = ObjectPath::new("a/b").unwrap();
        let r1 = Revision::mint(&p);
        let r2 = Revision::mint(&p);
        assert_ne!(r1, r2);
        assert_eq!(r1.object(), "a/b");
        assert_eq!(Revision::parse(r1.as_str()).unwrap(), r1);
        assert!(Revision::parse("a/b").is_err());
        assert!(Revision::parse(format!("a/b/{}", Uuid::new_v4())).is_err());
        assert!(Revision::parse(format!("a/b/{}", Uuid::now_v7().simple())).is_err());
    }

    #[test]
    fn change_ids_carry_a_stable_shard_prefix() {
        let id = ChangeId::mint();
        assert_eq!(ChangeId::parse(id.as_str()).unwrap(), id);
        assert_eq!(id.as_str()[..3], format!("{:03x}", id.shard().0));
        // A forged prefix is rejected rather than silently re-sharded.
        let next = Shard((id.shard().0 + 1) % SHARD_COUNT);
        let forged = format!("{next}{}", &id.as_str()[3..]);
        assert!(ChangeId::parse(&forged).is_err());
        // So is a key of the old two-digit form.
        assert!(ChangeId::parse(&id.as_str()[1..]).is_err());
        // Shards spread evenly: 20,480 ids, 20 per shard on average.
        let mut per_shard = vec![0u32; usize::from(SHARD_COUNT)];
        for _ in 0..20_480 {
            per_shard[usize::from(ChangeId::mint().shard().0)] += 1;
        }
        let (min, max) = (per_shard.iter().min(), per_shard.iter().max());
        assert!(
            min >= Some(&3) && max <= Some(&45),
            "uneven: {min:?}..{max:?}"
        );
    }

    #[test]
    fn records_round_trip_and_reject_foreign_revisions() {
        let p = ObjectPath::new("a").unwrap();
        let q = ObjectPath::new("b").unwrap();
        let rec = ChangeRecord::new(
            p.clone(),
            Some(Revision::mint(&p)),
            Some(Revision::mint(&p)),
            OwnerToken::mint("writer"),
        );
        assert_eq!(ChangeRecord::decode(&rec.encode()).unwrap(), rec);

        let mut foreign = rec.clone();
        foreign.new = Some(Revision::mint(&q));
        let err = ChangeRecord::decode(&foreign.encode()).unwrap_err();
        assert_eq!(err.field, "new revision");

        let mut future = rec.clone();
        future.version = 99;
        assert_eq!(
            ChangeRecord::decode(&future.encode()).unwrap_err().field,
            "change record version"
        );
        assert!(ChangeRecord::decode(b"{not json").is_err());
        assert!(ChangeRecord::decode(br#"{"v":1}"#).is_err());
    }
}

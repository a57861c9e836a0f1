//! The tables' column families and qualifiers: the one place that names them.
//! `infra/local/common.sh`, `infra/terraform` and [`super::admin`] create the same families.
//!
//! **HV table** (row key = object path)
//! * family `v`, one version: `v:inline` = the object's bytes, or `v:tombstone` = the LT
//!   revision name, never both; `v:meta` = the object's metadata
//!   ([`ObjectMeta`](crate::model::ObjectMeta), JSON), only when it has any; and
//!   `v:version` = the stamp of the last write or fence ([`Version`](crate::hv::Version)).
//!   Every write deletes the family and sets its data, metadata and version in one
//!   mutation, so metadata always belongs to the data beside it; a fence sets only the
//!   version. A row ever written keeps its version, so a row is bounded: data, metadata
//!   (at most about 8 KiB) plus one small cell, whatever its history.
//!
//! **Changelog table** (row key = change id, `{shard:03x}/{uuid v7}`)
//! * family `c`, one version: `c:record` = the serde-encoded [`ChangeRecord`](crate::model::ChangeRecord);
//!   `c:owner` = the owner token, duplicated out of the record so that predicates can compare
//!   it without decoding. The **timestamp of `c:owner` is the row's liveness stamp**: records,
//!   heartbeats and claims rewrite it, and the staleness scan is a timestamp-range filter on it.
//!   Bigtable's server assigns it (except a claim's lease, set ahead of server time).
//! * row `!clock`, cell `c:clock`: re-stamped by the server whenever a process asks for the
//!   changelog's time ([`Changelog::now`](crate::changelog::Changelog::now)).
//! * rows `!lease/{shard:03x}`, cell `c:lease` = `{epoch}/{holder}` (`{epoch}/` when free),
//!   its timestamp the lease's last acquisition, renewal or release ([`crate::shard_lease`]).
//! * rows `!member/{member id}`, cell `c:member` (empty), its timestamp the member's last
//!   announcement.
//!
//! * rows `!audit/{run id}`: cell `c:run` = an audit run's parameters
//!   ([`AuditRun`](crate::audit::AuditRun), JSON), and `c:done/{range}` = each finished
//!   range's summary, written by the `tiersweep audit --worker` that judged it.
//!
//! `!` sorts before every shard's first key, so no staleness scan reads these rows.

#[cfg(any(test, feature = "testing"))]
use std::time::Duration;

/// The HV table's family and qualifiers.
pub mod hv {
    /// The one family: data, metadata and version.
    pub const DATA: &str = "v";
    /// The object's bytes, for a small object.
    pub const INLINE: &[u8] = b"inline";
    /// The LT revision name, for a large object.
    pub const TOMBSTONE: &[u8] = b"tombstone";
    /// The object's metadata (JSON), only when it has any.
    pub const META: &[u8] = b"meta";
    /// The stamp of the last write or fence: what a compare-and-write names.
    pub const VERSION: &[u8] = b"version";
}

/// The changelog table's family, qualifiers and the prefixes of its rows outside every
/// shard.
pub mod changelog {
    /// The one family, one version.
    pub const FAMILY: &str = "c";
    /// The serde-encoded change record.
    pub const RECORD: &[u8] = b"record";
    /// The owner token; its timestamp is the row's liveness stamp.
    pub const OWNER: &[u8] = b"owner";
    /// The row whose `c:clock` cell the server stamps when asked for its time. Its key
    /// sorts before every shard (`000/`…), so no scan reads it.
    pub const CLOCK_ROW: &str = "!clock";
    /// The cell of the clock row the server stamps.
    pub const CLOCK: &[u8] = b"clock";
    /// Lease rows are `{LEASE_PREFIX}{shard}`; member rows `{MEMBER_PREFIX}{member}`.
    pub const LEASE_PREFIX: &str = "!lease/";
    /// A lease row's cell: `{epoch}/{holder}`.
    pub const LEASE: &[u8] = b"lease";
    /// Member rows are `{MEMBER_PREFIX}{member id}`.
    pub const MEMBER_PREFIX: &str = "!member/";
    /// A member row's cell (empty; its timestamp is the member's last announcement).
    pub const MEMBER: &[u8] = b"member";
    /// Audit run rows are `{AUDIT_PREFIX}{run id}`.
    pub const AUDIT_PREFIX: &str = "!audit/";
    /// An audit run's parameters (JSON).
    pub const AUDIT_RUN: &[u8] = b"run";
    /// A finished range's cell is `{AUDIT_DONE}{index}`.
    pub const AUDIT_DONE: &str = "done/";
}

/// How a column family is garbage-collected.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gc {
    /// Keep at most this many versions of a cell.
    MaxVersions(i32),
    /// Drop cells older than this.
    MaxAge(Duration),
}

/// The families of the HV table.
#[cfg(any(test, feature = "testing"))]
pub fn hv_families() -> [(&'static str, Gc); 1] {
    [(hv::DATA, Gc::MaxVersions(1))]
}

/// The families of the changelog table.
#[cfg(any(test, feature = "testing"))]
pub fn changelog_families() -> [(&'static str, Gc); 1] {
    [(changelog::FAMILY, Gc::MaxVersions(1))]
}

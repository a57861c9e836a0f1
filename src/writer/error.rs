//! Why a write did not happen, or may not have: [`WriteError`].

use crate::error::StoreError;
use crate::model::{ChangeId, ObjectPath};

use super::GuardState;

/// Why a write did not happen, or may not have. Every variant names the object; each says
/// whether the write can have landed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// A store call failed after its retries. The write may or may not have happened, as
    /// with any storage write whose response is lost; it is safe to retry.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another writer changed the object between this write's read and its write; this
    /// write never landed.
    #[error("object {path} was changed by another writer; re-read and retry")]
    Conflict {
        /// The object written.
        path: ObjectPath,
    },
    /// Recovery took the change over (its writer looked dead) before the write
    /// committed; the write never landed and recovery cleans up after it.
    #[error(
        "change {change} on {path} was taken over by recovery before the write committed; retry the write"
    )]
    Fenced {
        /// The object written.
        path: ObjectPath,
        /// The change recovery took over.
        change: ChangeId,
    },
    /// A retried write was refused after an earlier attempt of it failed to its caller: that
    /// attempt may have landed and been overwritten since. Nothing of it can land any more.
    #[error(
        "the write to {path} may have landed before another write replaced it; re-read and retry"
    )]
    OutcomeUnknown {
        /// The object written.
        path: ObjectPath,
    },
    /// The caller's stream failed before the writer had decided where the object goes:
    /// nothing was written.
    #[error("reading the bytes for {path} failed; nothing was written")]
    Body {
        /// The object written.
        path: ObjectPath,
        /// What the stream reported.
        #[source]
        source: std::io::Error,
    },
    /// A deferred put's deadline leaves no time to write: it must exceed the protocol's
    /// safety margin, which the writer keeps between its last upload and recovery.
    #[error(
        "a deferred put of {path} due within {within:?} leaves no time to write: it must exceed the safety margin ({margin:?})"
    )]
    DeadlineTooShort {
        /// The object written.
        path: ObjectPath,
        /// The deadline asked for.
        within: std::time::Duration,
        /// The protocol's safety margin.
        margin: std::time::Duration,
    },
    /// The change's guard was no longer valid when the write was about to commit (its
    /// heartbeat failed or was refused, or it aged past its validity, e.g. after a freeze):
    /// nothing was committed, and the change is left to recovery.
    #[error(
        "change {change} on {path} lost its guard ({state:?}) before committing; left to recovery, retry the write"
    )]
    GuardLost {
        /// The object written.
        path: ObjectPath,
        /// The change left to recovery.
        change: ChangeId,
        /// How the guard was lost.
        state: GuardState,
    },
}

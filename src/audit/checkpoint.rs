//! An audit's progress on disk, so an interrupted audit resumes with the ranges it has not
//! finished. Written whole to a temporary file and renamed over the old one after each
//! range, so a crash leaves the previous checkpoint or the new one, never half of one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{AuditError, RangeSummary};

/// What a checkpoint holds: the parameters the ranges were cut and judged with (a resume
/// with other parameters is refused) and the summary of every finished range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointState {
    /// The run id the audit started with.
    pub run: String,
    /// The prefix audited.
    pub prefix: String,
    /// How many ranges the prefix was split into.
    pub ranges: usize,
    /// The minimum age, in milliseconds.
    pub min_age_ms: u64,
    /// Whether orphans are handed to recovery.
    pub delete: bool,
    /// Finished ranges by index.
    pub done: BTreeMap<usize, RangeSummary>,
}

impl CheckpointState {
    /// Whether `other` audits the same ranges the same way.
    pub fn same_audit(&self, other: &CheckpointState) -> bool {
        (&self.prefix, self.ranges, self.min_age_ms, self.delete)
            == (&other.prefix, other.ranges, other.min_age_ms, other.delete)
    }
}

/// A checkpoint file.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    path: PathBuf,
}

impl Checkpoint {
    /// A checkpoint kept at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where the checkpoint is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The progress saved, or `None` when there is no checkpoint yet.
    pub async fn load(&self) -> Result<Option<CheckpointState>, AuditError> {
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(format!("cannot read it: {e}"))),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| self.error(format!("it is not an audit checkpoint: {e}")))
    }

    /// Replaces the checkpoint with `progress`.
    pub async fn save(&self, progress: &CheckpointState) -> Result<(), AuditError> {
        let json = serde_json::to_vec_pretty(progress)
            .map_err(|e| self.error(format!("cannot encode it: {e}")))?;
        let tmp = self.path.with_extension("tmp");
        let write = async {
            tokio::fs::write(&tmp, &json).await?;
            tokio::fs::rename(&tmp, &self.path).await
        };
        write
            .await
            .map_err(|e| self.error(format!("cannot write it: {e}")))
    }

    /// Removes the checkpoint: the audit it recorded is complete.
    pub async fn remove(&self) -> Result<(), AuditError> {
        match tokio::fs::remove_file(&self.path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.error(format!("cannot remove it: {e}"))),
        }
    }

    fn error(&self, reason: String) -> AuditError {
        AuditError::Checkpoint {
            path: self.path.display().to_string(),
            reason,
        }
    }
}

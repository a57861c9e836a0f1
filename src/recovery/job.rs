//! The cleanup job message a scanner publishes for each claim it wins.
//!
//! A job is a *hint*: it names a changelog row and the claim that produced it, nothing
//! more. Object paths and revisions are never taken from the message; the cleaner reads
//! them from the row, so a forged or stale message cannot direct a delete (invariant I4).
//! Trace context travels in the attributes.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::model::{ChangeId, ModelError, OwnerToken};
use crate::queue::Message;

/// The job format this cleaner writes and the newest it reads.
pub const JOB_VERSION: u32 = 1;

/// A cleanup job: names a changelog row and the claim that published it, nothing else (the row, not the job, says what to delete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupJob {
    /// The job format's version.
    #[serde(rename = "v")]
    pub version: u32,
    /// The change to converge.
    pub change: ChangeId,
    /// The claim that published the job: the row must still carry it.
    pub claim: OwnerToken,
}

/// Why a message is not a job. Carried into the dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The body is not a job.
    #[error("message body is not a cleanup job: {0}")]
    Body(String),
    /// The job's format is newer than this cleaner.
    #[error("cleanup job version {0} is newer than this cleaner understands; upgrade the cleaner")]
    Version(u32),
    /// A field does not parse (change id, claim token).
    #[error(transparent)]
    Field(#[from] ModelError),
}

impl CleanupJob {
    /// A job for `change` under `claim`, in the current format.
    pub fn new(change: ChangeId, claim: OwnerToken) -> Self {
        Self {
            version: JOB_VERSION,
            change,
            claim,
        }
    }

    /// The job as a queue message, with `attributes` (trace context).
    pub fn to_message(&self, attributes: BTreeMap<String, String>) -> Message {
        Message {
            data: Bytes::from(serde_json::to_vec(self).unwrap_or_default()),
            attributes,
        }
    }

    /// The job a message carries, or why it carries none.
    pub fn from_message(message: &Message) -> Result<Self, JobError> {
        let job: CleanupJob = serde_json::from_slice(&message.data).map_err(|e| {
            JobError::Body(format!(
                "{e} (body starts {:?})",
                String::from_utf8_lossy(&message.data[..message.data.len().min(80)])
            ))
        })?;
        if job.version == 0 || job.version > JOB_VERSION {
            return Err(JobError::Version(job.version));
        }
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip_and_poison_is_named() {
        let job = CleanupJob::new(ChangeId::mint(), OwnerToken::recovery_claim());
        let msg = job.to_message(BTreeMap::new());
        assert_eq!(CleanupJob::from_message(&msg).unwrap(), job);

        let poison = |data: &'static [u8]| Message {
            data: Bytes::from_static(data),
            attributes: BTreeMap::new(),
        };
        assert!(matches!(
            CleanupJob::from_message(&poison(b"\xff\x00garbage")),
            Err(JobError::Body(_))
        ));
        assert!(matches!(
            CleanupJob::from_message(&poison(
                br#"{"v":1,"change":"zz/not-a-uuid","claim":"recovery:x"}"#
            )),
            Err(JobError::Body(_))
        ));
        let mut future = job.clone();
        future.version = 7;
        assert_eq!(
            CleanupJob::from_message(&future.to_message(BTreeMap::new())),
            Err(JobError::Version(7))
        );
    }
}

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

pub const JOB_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupJob {
    #[serde(rename = "v")]
    pub version: u32,
    pub change: ChangeId,
    pub claim: OwnerToken,
}

/// Why a message is not a job. Carried into the dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("message body is not a cleanup job: {0}")]
    Body(String),
    #[error("cleanup job version {0} is newer than this cleaner understands; upgrade the cleaner")]
    Version(u32),
    #[error(transparent)]
    Field(#[from] ModelError),
}

impl CleanupJob {
    pub fn new(change: ChangeId, claim: OwnerToken) -> Self {
        Self {
            version: JOB_VERSION,
            change,
            claim,
        }
    }

    pub fn to_message(&self, attributes: BTreeMap<String, String>) -> Message {
        Message {
            data: Bytes::from(serde_json::to_vec(self).unwrap_or_default()),
            attributes,
        }
    }

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

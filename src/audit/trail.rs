//! Where an audit writes down every deletion it asks for, before it asks: the operator's
//! record of what was deleted, why, when and by which run.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::Serialize;
use tokio::io::AsyncWriteExt as _;

use super::AuditError;
use crate::error::StoreResult;
use crate::model::{ChangeId, Timestamp};

/// One deletion an audit requested: the blob, why it was judged an orphan, and the
/// recovery change that will delete it (look it up with `tiersweep inspect`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeletionRequested {
    /// The audit run that asked.
    pub run: String,
    /// The orphan's name (its revision).
    pub blob: String,
    /// The recovery change recorded to delete it.
    pub change: ChangeId,
    /// When GCS created the blob.
    pub created: Timestamp,
    /// Its age when the audit's changelog snapshot was taken.
    pub age_s: u64,
    /// Why it was judged an orphan.
    pub reason: &'static str,
    /// The changelog's time when the audit began judging.
    pub judged_at: Timestamp,
}

/// A durable place for [`DeletionRequested`] entries. The audit writes an entry before it
/// records the change that deletes the blob, and stops requesting deletions when a write
/// fails, so no deletion goes unrecorded.
#[async_trait]
pub trait AuditTrail: Send + Sync + std::fmt::Debug {
    /// Records one deletion, durably, before it is requested.
    async fn requested(&self, entry: &DeletionRequested) -> Result<(), AuditError>;
}

/// JSON lines appended to a local file (a mounted volume in Kubernetes), each flushed to
/// disk before the deletion is requested.
#[derive(Debug)]
pub struct FileTrail {
    path: PathBuf,
    file: tokio::sync::Mutex<tokio::fs::File>,
}

impl FileTrail {
    /// Opens `path` for appending, creating it if needed.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, AuditError> {
        let path = path.into();
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|e| trail_error(&path, format!("cannot open it: {e}")))?;
        Ok(Self {
            path,
            file: tokio::sync::Mutex::new(file),
        })
    }
}

#[async_trait]
impl AuditTrail for FileTrail {
    async fn requested(&self, entry: &DeletionRequested) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(entry)
            .map_err(|e| trail_error(&self.path, format!("cannot encode an entry: {e}")))?;
        line.push(b'\n');
        let mut file = self.file.lock().await;
        let write = async {
            file.write_all(&line).await?;
            file.sync_data().await
        };
        write
            .await
            .map_err(|e| trail_error(&self.path, format!("cannot append to it: {e}")))
    }
}

/// Each entry published as one JSON message to a Pub/Sub topic (a BigQuery or Cloud
/// Storage subscription keeps it), and the deletion requested only once Pub/Sub has
/// durably accepted it: the trail for workers without a lasting disk.
#[derive(Debug)]
pub struct TopicTrail {
    queue: std::sync::Arc<dyn crate::queue::JobQueue>,
}

impl TopicTrail {
    /// A trail that publishes through `queue` (connected to the trail topic).
    pub(crate) fn new(queue: std::sync::Arc<dyn crate::queue::JobQueue>) -> Self {
        Self { queue }
    }

    /// Connects to the trail topic `pubsub` names, and checks it exists.
    pub async fn connect(pubsub: &crate::queue::pubsub::PubsubConfig) -> StoreResult<Self> {
        let queue = crate::queue::PubsubQueue::connect_audit_trail(pubsub).await?;
        Ok(Self::new(std::sync::Arc::new(queue)))
    }
}

/// The attribute a trail message carries its audit run in, for subscriptions to filter on.
pub const TRAIL_RUN_ATTRIBUTE: &str = "tiersweep_audit_run";

#[async_trait]
impl AuditTrail for TopicTrail {
    async fn requested(&self, entry: &DeletionRequested) -> Result<(), AuditError> {
        let target = self.queue.destination();
        let data = serde_json::to_vec(entry).map_err(|e| AuditError::Trail {
            target: target.clone(),
            reason: format!("cannot encode an entry: {e}"),
        })?;
        let message = crate::queue::Message {
            data: data.into(),
            attributes: [(TRAIL_RUN_ATTRIBUTE.to_owned(), entry.run.clone())].into(),
        };
        self.queue
            .publish(vec![message])
            .await
            .map_err(|e| AuditError::Trail {
                target,
                reason: format!("cannot publish: {e}"),
            })
    }
}

fn trail_error(path: &std::path::Path, reason: String) -> AuditError {
    AuditError::Trail {
        target: path.display().to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::queue::{FlowControl, JobQueue, MemoryQueue};

    fn entry() -> DeletionRequested {
        DeletionRequested {
            run: "run-1".into(),
            blob: "p/o/0190".into(),
            change: ChangeId::mint(),
            created: Timestamp(1_000),
            age_s: 90_000,
            reason: "test",
            judged_at: Timestamp(91_000_000),
        }
    }

    #[tokio::test]
    async fn a_topic_trail_publishes_each_entry_whole_with_its_run() {
        let queue = MemoryQueue::new(8, 5);
        let trail = TopicTrail::new(Arc::new(queue.clone()));
        let e = entry();
        trail.requested(&e).await.expect("published");
        let mut sub = queue
            .subscribe(FlowControl::default())
            .await
            .expect("subscribed");
        let d = sub.next().await.expect("open").expect("a delivery");
        assert_eq!(d.message.attributes[TRAIL_RUN_ATTRIBUTE], "run-1");
        let back: serde_json::Value = serde_json::from_slice(&d.message.data).expect("JSON");
        assert_eq!(back["blob"], "p/o/0190");
        assert_eq!(back["change"], e.change.to_string());
        d.ack();
    }

    #[tokio::test]
    async fn a_file_trail_appends_one_line_per_entry() {
        let path = std::env::temp_dir().join(format!("trail-{}.jsonl", uuid::Uuid::now_v7()));
        let trail = FileTrail::open(&path).await.expect("opened");
        trail.requested(&entry()).await.expect("written");
        trail.requested(&entry()).await.expect("written");
        let text = std::fs::read_to_string(&path).expect("read back");
        assert_eq!(text.lines().count(), 2);
        assert!(text.lines().all(|l| l.contains("\"run\":\"run-1\"")));
        let _ = std::fs::remove_file(&path);
    }
}

//! An audit trail the tests read back.

use std::collections::BTreeSet;

use crate::audit::{AuditError, AuditTrail, DeletionRequested};

/// The trail tests read back: every entry, in memory.
#[derive(Debug, Default)]
pub struct MemoryTrail {
    pub entries: std::sync::Mutex<Vec<DeletionRequested>>,
}

#[async_trait::async_trait]
impl AuditTrail for MemoryTrail {
    async fn requested(&self, entry: &DeletionRequested) -> Result<(), AuditError> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry.clone());
        Ok(())
    }
}

impl MemoryTrail {
    pub fn blobs(&self) -> BTreeSet<String> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.iter().map(|e| e.blob.clone()).collect()
    }
}

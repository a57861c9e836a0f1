//! Audit runs in memory, with the Bigtable backend's semantics (create-if-absent, finishes
//! only of recorded runs), for tests, simulation and the embedded demo.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{AuditRun, AuditRuns, RunState};
use crate::audit::RangeSummary;
use crate::error::StoreResult;

/// Audit runs in a map.
#[derive(Debug, Default)]
pub struct MemoryRuns {
    runs: Mutex<BTreeMap<String, RunState>>,
}

impl MemoryRuns {
    /// No runs.
    pub fn new() -> Self {
        Self::default()
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RunState>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl AuditRuns for MemoryRuns {
    async fn create(&self, run: &AuditRun) -> StoreResult<bool> {
        let mut runs = self.runs();
        if runs.contains_key(&run.run) {
            return Ok(false);
        }
        runs.insert(
            run.run.clone(),
            RunState {
                run: run.clone(),
                done: BTreeMap::new(),
            },
        );
        Ok(true)
    }

    async fn get(&self, id: &str) -> StoreResult<Option<RunState>> {
        Ok(self.runs().get(id).cloned())
    }

    async fn finish_range(
        &self,
        id: &str,
        index: usize,
        summary: &RangeSummary,
    ) -> StoreResult<()> {
        if let Some(state) = self.runs().get_mut(id) {
            state.done.insert(index, summary.clone());
        }
        Ok(())
    }
}

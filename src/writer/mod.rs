//! The two-tier writer that object-store services embed: `put`, `get` and `delete` over HV
//! and LT, with a [`ChangeGuard`] around every mutation that touches LT.
//!
//! The sequences are exactly those of the design (DESIGN.md §1–2):
//!
//! ```text
//! large put:            read → record ─┐
//!                       upload new ─────┴ [gate: record landed, guard valid?] final chunk
//!                                         → [guard valid?] CAS old→new → delete old → remove
//! small put over large: record →              [guard valid?] CAS old→inline → delete old → remove
//! delete of large:      record →              [guard valid?] CAS old→∅ → delete old → remove
//! small put / delete of small: CAS only (no LT blob is involved, nothing can be orphaned)
//! ```
//!
//! A large put's upload starts at once, beside the row's read and the change's record; its
//! final chunk waits behind a gate (`src/writer/gate.rs`) until the record has landed with the guard
//! valid. A GCS object exists only once its upload is complete, so the row still names the
//! blob before the blob can exist (I1), while the record's round trip overlaps the upload.
//!
//! With `background_completions`, the write returns after the CAS and "delete old → remove"
//! runs in the background ([`TieredStorage::flush`] waits for it).
//!
//! A crash anywhere leaves a changelog entry that recovery converges. A write that returns
//! `Ok` is readable; a write that returns an error may or may not have happened (as with
//! any storage write whose response is lost) and is safe to retry.

mod commit;
mod config;
mod deferred;
mod error;
mod gate;
pub mod guard;
mod put;
mod read;
mod upload;

use std::sync::Arc;

use tokio::sync::Semaphore;

pub use config::WriterConfig;
pub use deferred::DeferredPut;
pub use error::WriteError;
pub use guard::{ChangeGuard, GuardState, GuardWatch};
pub use read::{Object, ReadOutcome, StreamOutcome};

use crate::error::ConfigError;
use crate::stores::Stores;

/// The two-tier object store's write and read path: see the module documentation. Cheap
/// to clone (clones share the stores and the background completions).
#[derive(Debug, Clone)]
pub struct TieredStorage {
    stores: Stores,
    config: WriterConfig,
    /// One permit per background completion allowed at once; all of them free means none
    /// is running (what [`TieredStorage::flush`] waits for). Shared by clones.
    completions: Arc<Semaphore>,
}

impl TieredStorage {
    /// A writer over `stores`; fails if `config`'s protocol timings are inconsistent.
    pub fn new(stores: Stores, config: WriterConfig) -> Result<Self, ConfigError> {
        config.protocol.validate()?;
        let completions = Arc::new(Semaphore::new(config.background_completions));
        Ok(Self {
            stores,
            config,
            completions,
        })
    }

    /// Waits until every write completing in the background has completed (or failed and
    /// been left to recovery). Call it before a graceful shutdown; a no-op when
    /// `background_completions` is 0.
    pub async fn flush(&self) {
        let all = u32::try_from(self.config.background_completions).unwrap_or(u32::MAX);
        if all > 0 {
            // Errs only if the semaphore were closed, which it never is.
            let _ = self.completions.acquire_many(all).await;
        }
    }

    /// The stores this writer writes to.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }
}

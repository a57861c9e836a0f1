//! Recovery: finding abandoned changes and converging them.
//!
//! ```text
//! Scanner:  scan stale rows of its shards → claim each (CAS "still stale") → publish a job per won claim
//! Cleaner:  job → re-read the row (the authority) → check scope → converge (fence, read, delete) → ack
//! ```
//!
//! Both run against the store traits and the [`JobQueue`](crate::queue::JobQueue) trait, so
//! the distributed pipeline (scanner and cleaner pools over Pub/Sub) and the
//! [embedded mode](embedded) (both loops in one process over an in-process queue) are the
//! same code.

/// A row recovery has claimed this many times or more keeps failing: `tiersweep status`
/// lists it, the scanner counts each further claim (`tiersweep_claims_repeated_total`, an
/// alert), and `tiersweep reset` puts it back in line once its cause is fixed.
pub const FAILING_AFTER_CLAIMS: u32 = 5;

pub mod cleaner;
pub mod embedded;
pub mod inspect;
pub mod job;
pub mod membership;
// The demo's and the benchmark's in-process pools (the benchmark is its own crate): not
// production API.
#[cfg(feature = "dev")]
pub mod pool;
mod queued;
pub mod scanner;
mod watched;

use std::time::Duration;

use crate::error::ConfigError;
use crate::protocol::ProtocolConfig;
use crate::retry::RetryPolicy;

pub use cleaner::Cleaner;
pub use embedded::{EmbeddedRecovery, PassReport};
pub use membership::{Assignment, LeaseKeeper};
pub use scanner::{ScanReport, Scanner};
// What the test machinery names besides.
#[cfg(any(test, feature = "testing"))]
pub use crate::protocol::converge::{ConvergeReport, HvView, converge};
#[cfg(any(test, feature = "testing"))]
pub use {cleaner::JobOutcome, job::CleanupJob};

/// How the scanner and cleaner pools work. Read from the `[recovery]` section of the
/// configuration file; `protocol` comes from `[protocol]`, shared with the writers.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// The heartbeat and staleness timings, shared with writers (the `[protocol]` section).
    #[serde(skip)]
    pub protocol: ProtocolConfig,
    /// Rows read per scan request.
    pub scan_batch: usize,
    /// Claims in flight at once per scanner.
    pub claim_concurrency: usize,
    /// How long a claimed row is withheld from scans while its job is in flight. Doubles
    /// with every re-claim of the same row (up to 16x), so a job that keeps failing is
    /// retried ever more slowly rather than flooding the queue.
    #[serde(with = "crate::duration")]
    pub claim_lease: Duration,
    /// Claims one scanner keeps waiting for cleaners at most (published, not yet taken):
    /// beyond it, the scanner leaves stale rows unclaimed until cleaners catch up. The
    /// scanner keeps these claims' leases alive while their jobs wait, so a queued job is
    /// never claimed again; keep `scanners × max_queued_claims ÷ the cleaners' rate` below
    /// `republish_after` (2,000 ÷ 100 changes/s is 20 s against 10 min), or jobs that are
    /// merely queued get republished. 0: no limit, and no keeping alive either (a job that
    /// outwaits its lease is claimed again).
    pub max_queued_claims: usize,
    /// How long a published job may wait untaken before its scanner publishes it again
    /// under the same claim (a duplicate, not a re-claim): the bound on recovering a job
    /// the queue lost, as long as its scanner lives. At most twice; then the claim's lease
    /// is let go and the row is claimed again. The local Pub/Sub emulator never redelivers
    /// what it handed to a pull stream that went away, so local configurations set this to
    /// seconds.
    #[serde(with = "crate::duration")]
    pub republish_after: Duration,
    /// How often a scanner reads its whole key range (a full sweep) rather than only the
    /// ids minted since its last pass and the rows it watches (`recovery::watched`): the bound on
    /// finding a row recorded long after its id was minted (a writer that stalled in
    /// between, or whose clock runs behind). A sweep reads every row, removed ones Bigtable
    /// has not yet compacted included, so it is the scan's expensive part. Zero: every pass
    /// is a full sweep and nothing is watched (the behaviour before key-bounded scans).
    #[serde(with = "crate::duration")]
    pub full_sweep_every: Duration,
    /// How far ahead of Bigtable's time a writer's clock may run and its crash still be
    /// found by a running scanner's incremental rounds (within about two staleness
    /// thresholds and a round), not only by the next full sweep. Change ids are minted on
    /// the writer's clock, and a round reads the ids minted before its cutoff, so each
    /// round also reads the ids minted in `[now, now + max_writer_skew)` — ids no writer
    /// with a right clock has minted yet, so normally an empty range per shard. Zero reads
    /// none; a writer further ahead is found by the next sweep.
    #[serde(with = "crate::duration")]
    pub max_writer_skew: Duration,
    /// Rows not claimable when scanned that one scanner watches at most (re-reading each
    /// when it could first be stale). Rows beyond it wait in key spans, a quarter as many
    /// at most, each read whole once its earliest row could be stale: reads of neighbours
    /// in key order, never a missed row (docs/design/scanning.md).
    pub max_watched_rows: usize,
    /// Wait between scans when nothing was stale.
    #[serde(with = "crate::duration")]
    pub idle_poll: Duration,
    /// Jobs a cleaner converges at once (and holds unsettled).
    pub cleaner_concurrency: usize,
    /// Deliveries of one job before the cleaner dead-letters it with the last error.
    pub max_delivery_attempts: u32,
    /// Only objects under this prefix may be converged (invariant I4), matched by whole path
    /// segments (`tenant-a` does not admit `tenant-ab/…`); "" allows all.
    pub object_prefix: String,
    /// How long after recovery deleted a dead writer's uncommitted upload that upload may
    /// still land (bytes a dead process's kernel still sends, a proxy, a retransmission).
    /// Such a change's row is kept that long and then converged again, so a late landing is
    /// deleted too: one more pass for each change recovered before its HV write. Zero
    /// removes the row at once (loopback emulators, where nothing is ever in flight).
    #[serde(with = "crate::duration")]
    pub upload_settle: Duration,
    /// GCS deletes a second each cleaner process starts at. The rate then adapts: cut by a
    /// fifth when GCS refuses, raised while it does not (`src/pace.rs`), so the
    /// cleaners of a pool share the bucket's limit without being told their number. Any
    /// start works; one near the process's share of the limit saves the ramp.
    pub gcs_deletes_per_s: f64,
    /// Bigtable rows a second each scanner and cleaner starts pacing its changelog and HV
    /// calls at (a batch of n rows counts n). It adapts like the GCS pace, cut when
    /// Bigtable refuses and raised while the pace is what holds the worker back
    /// (`src/pace.rs`), so a pool leaves the cluster room for the writers' calls in a drain.
    pub bigtable_rows_per_s: f64,
    /// How store calls are retried.
    #[serde(skip)]
    pub retry: RetryPolicy,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            protocol: ProtocolConfig::default(),
            scan_batch: 500,
            claim_concurrency: 32,
            claim_lease: Duration::from_secs(600),
            max_queued_claims: 2000,
            republish_after: Duration::from_secs(600),
            full_sweep_every: Duration::from_secs(3600),
            max_writer_skew: Duration::from_secs(3600),
            max_watched_rows: 10_000,
            idle_poll: Duration::from_secs(5),
            cleaner_concurrency: 32,
            max_delivery_attempts: 5,
            object_prefix: String::new(),
            upload_settle: crate::protocol::UPLOAD_SETTLE,
            gcs_deletes_per_s: crate::lt::paced::START_PER_S,
            bigtable_rows_per_s: crate::pace::BIGTABLE_START_PER_S,
            retry: RetryPolicy::default(),
        }
    }
}

impl RecoveryConfig {
    /// Checks the settings can work, naming the first that cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.protocol.validate()?;
        let positive = [
            ("scan_batch", self.scan_batch),
            ("claim_concurrency", self.claim_concurrency),
            ("cleaner_concurrency", self.cleaner_concurrency),
            ("max_delivery_attempts", self.max_delivery_attempts as usize),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(ConfigError::new(field, "must be at least 1"));
            }
        }
        let rates = [
            ("gcs_deletes_per_s", self.gcs_deletes_per_s, "deletes a second a cleaner"),
            ("bigtable_rows_per_s", self.bigtable_rows_per_s, "Bigtable rows a second a worker"),
        ];
        for (field, per_s, what) in rates {
            // NaN is no rate either.
            if per_s.is_nan() || per_s < crate::pace::FLOOR_PER_S {
                return Err(ConfigError::new(
                    field,
                    format!("must be at least 1 ({what} starts at; it adapts)"),
                ));
            }
        }
        if self.republish_after.is_zero() {
            return Err(ConfigError::new(
                "republish_after",
                "must be positive; it is how long a job may wait before it is published again",
            ));
        }
        if self.claim_lease < self.protocol.heartbeat_interval {
            return Err(ConfigError::new(
                "claim_lease",
                "must be at least one heartbeat interval; it should cover a job's time in the queue",
            ));
        }
        Ok(())
    }

    /// How often a scanner reviews the claims it published that may still wait for a
    /// cleaner, when nothing else asks: often enough that a lease is extended well before
    /// it ends and a lost job is republished close to `republish_after`. It is also how
    /// late a scanner may learn that a cleaner deferred a claimed row, so a deferred row is
    /// taken up within its `due_at` plus this plus a round.
    pub fn review_every(&self) -> Duration {
        self.claim_lease.min(self.republish_after) / 4
    }

    /// The lease for the `claims`-th claim of a row (0 for the first).
    pub fn lease_for(&self, claims: u32) -> Duration {
        self.claim_lease * (1u32 << claims.min(4))
    }
}

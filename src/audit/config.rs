//! What an audit is asked to do, and the settings it refuses.

use std::time::Duration;

use super::{AuditError, ranges};
use crate::retry::RetryPolicy;

/// What to audit and how hard.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    /// Only blobs whose names start with this (`""`: the whole bucket).
    pub prefix: String,
    /// How many name ranges the prefix is split into (`ranges::split`).
    pub ranges: usize,
    /// How many ranges are listed at once.
    pub concurrency: usize,
    /// A blob younger than this (by its GCS creation time, against the changelog's time
    /// when the audit began) is never judged: an upload may have just landed.
    pub min_age: Duration,
    /// Request the deletion of the orphans found (through recovery); otherwise report only.
    pub delete: bool,
    /// Deletion requests per second, across ranges (`None`: unlimited).
    pub max_deletes_per_s: Option<f64>,
    /// Listing calls per second, across ranges (`None`: unlimited).
    pub max_lists_per_s: Option<f64>,
    /// A range with more orphans than this deletes none of them and is reported failed.
    pub max_orphans_per_range: usize,
    /// How long a listing, HV read or deletion request that the store refuses (a busy
    /// cluster, a rate limit) is retried before its range fails: by default about 40 s
    /// ([`RetryPolicy::PATIENT`]); a batch job would rather wait than give up a range.
    pub retry: RetryPolicy,
    /// Also scan HV for **dangling tombstones** (naming a blob that does not exist): one
    /// blob check per large object, so off by default. Reported, never repaired.
    pub dangling: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            ranges: 16,
            concurrency: 4,
            min_age: Duration::from_secs(24 * 3600),
            delete: false,
            max_deletes_per_s: Some(50.0),
            max_lists_per_s: Some(50.0),
            max_orphans_per_range: 100_000,
            retry: RetryPolicy::PATIENT,
            dangling: false,
        }
    }
}

impl AuditConfig {
    /// Refuses settings the audit cannot run with, naming the setting.
    pub fn validate(&self) -> Result<(), AuditError> {
        let bad = |what: &str| Err(AuditError::Config(what.to_owned()));
        if self.ranges == 0 || self.ranges > ranges::MAX_RANGES {
            return bad(&format!("ranges must be 1..={}", ranges::MAX_RANGES));
        }
        if self.concurrency == 0 {
            return bad("concurrency must be at least 1");
        }
        for (name, rate) in [
            ("max deletes per second", self.max_deletes_per_s),
            ("max lists per second", self.max_lists_per_s),
        ] {
            if rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                return bad(&format!("{name} must be a positive number"));
            }
        }
        if self.max_orphans_per_range == 0 {
            return bad("max orphans per range must be at least 1");
        }
        Ok(())
    }
}

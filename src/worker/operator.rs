//! `tiersweep status`, `inspect`, `recover --dry-run` and `reset`: read-only views of the
//! changelog, and the one repair an operator makes. The status and the reset connect to
//! the changelog table alone, all the operator's and auditor's roles are granted there.

use super::{ChangeId, Config};
use crate::clock;
use crate::error::StoreResult;

pub use crate::recovery::FAILING_AFTER_CLAIMS;
pub use crate::recovery::inspect::{
    ChangeView, ChangelogStatus, FailingRow, OldestStale, Reset, dry_run, inspect,
};
pub use crate::recovery::membership::LeaseSummary;

/// The changelog's rows by state and age, and who holds which shard: what `tiersweep
/// status` prints. Judged by this machine's clock: the operator's role may not write the
/// clock row that gives the server's.
pub async fn status(config: &Config) -> StoreResult<(ChangelogStatus, LeaseSummary)> {
    let clock = clock::system();
    let (changelog, leases) =
        crate::stores::connect_scanner(&config.bigtable, clock.clone()).await?;
    let backlog = crate::recovery::inspect::backlog(
        changelog.as_ref(),
        &clock,
        config.protocol.staleness_threshold,
        config.recovery.scan_batch,
    )
    .await?;
    let leases = crate::recovery::membership::read_summary(
        leases.as_ref(),
        clock.now(),
        config.worker.lease_period,
    )
    .await?;
    Ok((backlog, leases))
}

/// Puts the change `id`, which keeps failing, back in line: its claim count to zero, its
/// stamp to now ([`Reset`] says what happened).
pub async fn reset(config: &Config, id: &ChangeId) -> StoreResult<Reset> {
    let changelog = crate::stores::connect_changelog(&config.bigtable, clock::system()).await?;
    crate::recovery::inspect::reset(changelog.as_ref(), id).await
}

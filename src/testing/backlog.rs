//! Recovery under a backlog the cleaners cannot drain within a claim's lease: the scanner's
//! backpressure must keep every queued job younger than its claim, so no row is claimed
//! twice. Written once, run on the twins (paused time) and on the emulators.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::crash::{crashed_large_puts, test_recovery_config, test_writer_config};
use super::faults::{Fault, Faults, Op, Rule};
use super::invariants;
use crate::config::ProtocolConfig;
use crate::model::ShardRange;
use crate::queue::MemoryQueue;
use crate::recovery::{Cleaner, Scanner};
use crate::stores::Stores;

/// What a drain did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    pub changes: usize,
    /// Claims the scanner won, over the whole drain.
    pub claims_won: usize,
    /// Stale rows it left unclaimed for a while (backpressure).
    pub held_back: usize,
}

/// Crashes `n` large puts, then drains them with one scanner and one cleaner that takes a
/// quarter of the claim lease per change, so the backlog takes `n / 4` leases to drain.
/// `max_queued_claims` is the scanner's backpressure (0: none). Checks the stores converge.
pub async fn drain_slower_than_a_lease(
    stores: &Stores,
    protocol: ProtocolConfig,
    n: usize,
    max_queued_claims: usize,
) -> Drain {
    let expected = crashed_large_puts(stores, test_writer_config(protocol), n).await;
    let mut config = test_recovery_config(protocol);
    config.claim_lease = protocol.staleness_threshold * 2;
    config.idle_poll = protocol.heartbeat_interval;
    config.cleaner_concurrency = 1;
    config.max_queued_claims = max_queued_claims;
    // One pass per change: what is measured is claims, not the settle.
    config.upload_settle = Duration::ZERO;
    // The per-change time: the cleaner's delete of the unreferenced upload is slow.
    let slow = Faults::new([Rule::on(Op::LtDelete, Fault::Delay(config.claim_lease / 4))]);
    let queue = MemoryQueue::new(4 * n.max(1), config.max_delivery_attempts);
    let cleaner = Cleaner::new(slow.wrap(stores), Arc::new(queue.clone()), config.clone());
    let cancel = CancellationToken::new();
    let cleaning = tokio::spawn(cleaner.run(cancel.clone(), Duration::from_secs(1)));

    tokio::time::sleep(protocol.staleness_threshold + Duration::from_millis(50)).await;
    let mut scanner = Scanner::new(
        stores.changelog.clone(),
        Arc::new(queue),
        config.clone(),
        ShardRange::ALL,
    );
    let mut drain = Drain {
        changes: n,
        claims_won: 0,
        held_back: 0,
    };
    // Long enough for the unbounded scanner's re-claims to drain too.
    let deadline = tokio::time::Instant::now() + config.claim_lease * (n as u32 + 8);
    loop {
        let page = scanner.scan_page().await.expect("a scan page");
        drain.claims_won += page.won;
        drain.held_back += page.held_back;
        let left = invariants::check(stores, &expected)
            .await
            .expect("invariant check");
        if left.is_converged() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog did not drain: {left:#?} {drain:?}"
        );
        tokio::time::sleep(config.idle_poll).await;
    }
    cancel.cancel();
    cleaning.await.expect("the cleaner's task");
    drain
}

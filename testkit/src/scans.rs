//! Key-bounded scans: scenarios written once and run on both backends (by
//! `tests/protocol_*.rs`), and the scan-cost measurement, which only the twin can make (it
//! keeps removed rows until compaction, as Bigtable does; the emulator deletes at once).
//!
//! A scanner that reads only the ids minted since its last round must still find every
//! stale row: one whose writer lived through many rounds and then died (it is watched),
//! and one recorded long after its id was minted (only the full sweep finds it).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::crash::{INLINE_THRESHOLD, test_recovery_config, test_writer_config, unique_path};
use crate::schedules::entries_for;
use tiersweep::changelog::Changelog;
use tiersweep::model::{
    ChangeId, ChangeRecord, ObjectPath, OwnerToken, Revision, ShardRange, ShardSet,
};
use tiersweep::protocol::ProtocolConfig;
use tiersweep::queue::MemoryQueue;
use tiersweep::recovery::{RecoveryConfig, ScanReport, Scanner};
use tiersweep::stores::Stores;
use tiersweep::testing::faults::{Fault, Faults, Op, Rule};
use tiersweep::writer::TieredStorage;

fn large(tag: &str) -> Bytes {
    Bytes::from(format!("{tag}:{}", "K".repeat(INLINE_THRESHOLD * 2)))
}

/// A scanner over all shards that sweeps every `sweep_every`, with a queue nobody drains.
fn scanner(stores: &Stores, protocol: ProtocolConfig, sweep_every: Duration) -> Scanner {
    let config = RecoveryConfig {
        full_sweep_every: sweep_every,
        ..test_recovery_config(protocol)
    };
    scanner_with(stores, config)
}

/// A scanner over all shards configured so, with a queue nobody drains.
fn scanner_with(stores: &Stores, config: RecoveryConfig) -> Scanner {
    Scanner::new(
        stores.changelog().clone(),
        Arc::new(MemoryQueue::new(1024, 5)),
        config,
        ShardRange::ALL,
    )
}

/// Scans pages `gap` apart for `span`, adding up what they did; also says which pages began
/// a sweep.
async fn scan_for(s: &mut Scanner, span: Duration, gap: Duration) -> (ScanReport, Vec<bool>) {
    let mut total = ScanReport::default();
    let mut sweeps = Vec::new();
    let until = tokio::time::Instant::now() + span;
    while tokio::time::Instant::now() < until {
        let page = s.scan_page().await.expect("scanning");
        sweeps.push(page.sweep);
        total.add(&page);
        tokio::time::sleep(gap).await;
    }
    (total, sweeps)
}

/// A writer heartbeats a large put through many scan rounds (its HV write is slow), so the
/// scanner's lower key bound moves past its row; then it dies. The scanner watched the row
/// and claims it about a threshold later, with no full sweep. `max_watched_rows` 0 puts
/// the row in an overflow span instead: found all the same.
pub async fn a_crash_behind_the_key_bound_is_found_without_a_sweep(
    stores: Stores,
    protocol: ProtocolConfig,
    max_watched_rows: usize,
) {
    let threshold = protocol.staleness_threshold;
    let mut s = scanner_with(
        &stores,
        RecoveryConfig {
            full_sweep_every: Duration::from_secs(86_400),
            max_watched_rows,
            ..test_recovery_config(protocol)
        },
    );
    s.scan_page().await.expect("the first round, a sweep");
    let (_, put) = slow_put(&stores, protocol, "watched").await;
    let gap = protocol.heartbeat_interval;
    let mut s = {
        let mut s = s;
        let (alive, _) = scan_for(&mut s, threshold * 4, gap).await;
        assert_eq!(alive.won, 0, "a live row is not claimed: {alive:?}");
        if max_watched_rows > 0 {
            assert!(s.watched_rows() >= 1, "the live row is watched");
        } else {
            assert!(s.overflow_spans() >= 1, "the live row waits in a span");
        }
        s
    };
    // The writer dies mid-write: its heartbeats stop with it.
    put.abort();
    let _ = put.await;
    let (after, sweeps) = scan_for(&mut s, threshold * 3, gap).await;
    assert_eq!(after.won, 1, "the dead writer's row is claimed: {after:?}");
    assert!(
        !sweeps.contains(&true),
        "found by incremental rounds, not a sweep"
    );
}

/// Watched rows fall due together (a drain's deferred second passes, a burst of writes),
/// and many are gone or alive by then. The scanner re-reads them a batch at a time; a batch
/// that claimed nothing used to end the page, so the scanner waited an idle poll per batch
/// and a dead writer's row behind a few batches of finished ones waited past its bound. A
/// page that re-read a full batch now says more may be waiting, and the scanner reads on.
pub async fn a_full_batch_of_watched_rows_reads_on(stores: Stores, protocol: ProtocolConfig) {
    let threshold = protocol.staleness_threshold;
    let gap = protocol.heartbeat_interval;
    let mut s = scanner_with(
        &stores,
        RecoveryConfig {
            full_sweep_every: Duration::from_secs(86_400),
            scan_batch: 2,
            ..test_recovery_config(protocol)
        },
    );
    s.scan_page().await.expect("the first round, a sweep");
    let mut puts = Vec::new();
    for tag in ["a", "b", "c"] {
        puts.push(slow_put(&stores, protocol, tag).await.1);
    }
    // Rounds see the three rows alive once their ids are a threshold old, and watch them
    // until they could turn stale; later rounds read only ids minted since, so nothing but
    // the watch set brings them back.
    let (seen, _) = scan_for(&mut s, threshold * 2, gap).await;
    assert_eq!(seen.won, 0, "live rows are not claimed: {seen:?}");
    assert_eq!(s.watched_rows(), 3, "the live rows are watched");
    tokio::time::sleep(threshold + gap).await;
    let page = s.scan_page().await.expect("scanning");
    assert_eq!(
        page.rechecked, 2,
        "a batch of due watched rows re-read: {page:?}"
    );
    assert!(
        page.more,
        "a full batch of watched rows re-read: more may be due, read on at once: {page:?}"
    );
    let page = s.scan_page().await.expect("scanning");
    assert_eq!(
        page.rechecked, 1,
        "the last due watched row re-read: {page:?}"
    );
    assert!(!page.more, "nothing more was due: {page:?}");
    for put in puts {
        put.abort();
    }
}

/// A writer whose clock runs an hour behind records a change (its id is minted an hour
/// ago, behind the scanner's lower key bound) and dies after its upload. Incremental rounds
/// cannot see it; the next full sweep claims it, within `full_sweep_every` plus the
/// threshold. `writer` is the writer's view of the stores (its clock [`crate::schedules::SKEW`]
/// behind), `recovery` the scanner's.
pub async fn a_row_minted_behind_the_key_bound_is_found_by_the_full_sweep(
    recovery: Stores,
    writer: Stores,
    protocol: ProtocolConfig,
) {
    let threshold = protocol.staleness_threshold;
    let sweep_every = threshold * 6;
    let gap = protocol.heartbeat_interval;
    let mut s = scanner(&recovery, protocol, sweep_every);
    let (_, sweeps) = scan_for(&mut s, threshold * 2, gap).await;
    assert_eq!(sweeps.first(), Some(&true), "a scanner starts with a sweep");
    let path = unique_path();
    let crashing = Faults::new([Rule::once(Op::LtPut, Fault::CrashAfter)]);
    let w = TieredStorage::new(crashing.wrap(&writer), test_writer_config(protocol))
        .expect("valid writer config");
    let crashed = crashing
        .run_until_crash({
            let path = path.clone();
            async move { w.put(&path, large("behind")).await }
        })
        .await;
    assert!(crashed.is_none(), "the writer crashed after its upload");
    let mut before_sweep = ScanReport::default();
    let mut found = None;
    let started = tokio::time::Instant::now();
    while started.elapsed() < sweep_every + threshold * 4 {
        let page = s.scan_page().await.expect("scanning");
        if page.sweep {
            found.get_or_insert(0);
        }
        match found.as_mut() {
            Some(won) => *won += page.won,
            None => before_sweep.add(&page),
        }
        if found.is_some_and(|w| w > 0) {
            break;
        }
        tokio::time::sleep(gap).await;
    }
    assert_eq!(
        before_sweep.won, 0,
        "incremental rounds do not read keys minted an hour ago: {before_sweep:?}"
    );
    assert_eq!(found, Some(1), "the sweep claims it");
    assert!(
        started.elapsed() <= sweep_every + threshold * 4,
        "within a sweep period and the threshold"
    );
    assert_eq!(entries_for(&recovery, &path).await.len(), 1);
}

/// A settle of eight thresholds under a claim lease four times longer, and no sweep within
/// a schedule: a deferred row taken up at the lease's end or by a sweep, rather than at its
/// `due_at`, fails the schedules below.
fn settle_under_a_long_lease(protocol: ProtocolConfig) -> RecoveryConfig {
    let settle = protocol.staleness_threshold * 8;
    RecoveryConfig {
        full_sweep_every: Duration::from_secs(86_400),
        upload_settle: settle,
        claim_lease: settle * 4,
        ..test_recovery_config(protocol)
    }
}

/// The change's second pass ran: its row is gone and its upload deleted.
async fn second_pass_converged(stores: &Stores, path: &ObjectPath) {
    assert!(
        entries_for(stores, path).await.is_empty(),
        "the second pass converged the change"
    );
    let left = crate::schedules::blobs_of(stores, path).await;
    assert!(left.is_empty(), "the upload is deleted: {left:?}");
}

/// A long-lived scanner claims a dead writer's change (uploaded, died before its HV write);
/// a cleaner deletes the upload and defers the row for the settle, which changes the row
/// under the scanner's queued claim. Its id lies below the key bound, so only the watch the
/// scanner set when it claimed the row brought it back — at the claim's lease end, which
/// in production (10 min) and in this schedule (four settles) comes long after the settle.
/// The scanner now watches a row whose claim it lets go from the row as it finds it, so
/// the second pass comes at `due_at`, with no sweep and no wait for the lease.
pub async fn a_change_deferred_for_its_settle_is_taken_up_at_its_due_time(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let threshold = protocol.staleness_threshold;
    let config = settle_under_a_long_lease(protocol);
    // The first pass after the threshold, the second at the settle's end; a few rounds more.
    let span = threshold * 3 + config.upload_settle + threshold * 3;
    second_pass_at_its_due_time(&stores, stores.clone(), protocol, config, "deferred", span).await;
}

/// As above, but the cleaner's first call is held past half the claim's lease, so it
/// extends the claim while it works: the scanner's next review finds the row changed under
/// its queued claim and lets the claim go, the row now under a lease that ends long after
/// the cleaner's deferral. It used to watch the row until that lease's end; it must take
/// the row up at its `due_at` (plus a review period), as any row under a lease.
pub async fn a_claim_its_cleaner_extended_then_deferred_is_taken_up_at_its_due_time(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let threshold = protocol.staleness_threshold;
    // As deployed, a job is published again only after a whole lease (a duplicate
    // delivery would converge the change while the first is held). The settle is short, so
    // that the lease's end and the deferral's due time lie far apart.
    let config = RecoveryConfig {
        full_sweep_every: Duration::from_secs(86_400),
        upload_settle: threshold * 2,
        claim_lease: threshold * 32,
        republish_after: threshold * 32,
        ..test_recovery_config(protocol)
    };
    // Past the extension at half the lease and the review after it.
    let held = config.claim_lease * 3 / 4 + threshold * 2;
    let slow = Faults::new([Rule::once(Op::HvFence, Fault::Delay(held))]);
    // Claimed about a threshold in; the cleaner extends the claim half a lease later and
    // defers the row when its call returns, due a settle later: taken up within a review
    // period of that (~39 thresholds in). The extended lease ends a whole lease after the
    // extension (~50 thresholds in).
    let span = held + config.upload_settle + config.review_every() + threshold * 7;
    second_pass_at_its_due_time(
        &stores,
        slow.wrap(&stores),
        protocol,
        config,
        "extended",
        span,
    )
    .await;
}

/// A long-lived scanner (its sweep done) and a cleaner on `cleaner_stores`, for `span`
/// after a writer died between its upload and its HV write: the change is claimed for its
/// first pass and again for its second at its due time, with no sweep, and converges.
async fn second_pass_at_its_due_time(
    stores: &Stores,
    cleaner_stores: Stores,
    protocol: ProtocolConfig,
    config: RecoveryConfig,
    tag: &str,
    span: Duration,
) {
    let gap = protocol.heartbeat_interval;
    let queue = Arc::new(MemoryQueue::new(1024, 5));
    let mut s = Scanner::new(
        stores.changelog().clone(),
        queue.clone(),
        config.clone(),
        ShardRange::ALL,
    );
    let (_, sweeps) = scan_for(&mut s, gap, gap).await;
    assert_eq!(sweeps.first(), Some(&true), "a scanner starts with a sweep");
    let path = crate::schedules::dead_large_put(
        stores,
        protocol,
        [Rule::once(Op::HvCas, Fault::CrashBefore)],
        tag,
    )
    .await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let cleaner = tokio::spawn(
        tiersweep::recovery::Cleaner::new(cleaner_stores, queue, config)
            .run(cancel.clone(), Duration::from_secs(1)),
    );
    let (report, sweeps) = scan_for(&mut s, span, gap).await;
    cancel.cancel();
    let _ = cleaner.await;
    assert!(
        !sweeps.contains(&true),
        "no sweep ran: the deferred row was found by its due time"
    );
    assert_eq!(
        report.won, 2,
        "claimed for the first pass, and again for the second at its due time: {report:?}"
    );
    second_pass_converged(stores, &path).await;
}

/// A scanner claims a dead writer's change and is restarted before a cleaner takes the
/// job; the cleaner deletes the upload and defers the row for its settle. The restarted
/// scanner does not hold the claim (it cannot learn of the deferral at a review of its own
/// claims), and saw the row under a lease that ends long after the settle: it must still
/// take the row up at its `due_at`, not at the lease's end or the next sweep.
pub async fn a_predecessors_claim_deferred_by_a_cleaner_is_taken_up_at_its_due_time(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let threshold = protocol.staleness_threshold;
    let gap = protocol.heartbeat_interval;
    let config = settle_under_a_long_lease(protocol);
    let settle = config.upload_settle;
    let queue = Arc::new(MemoryQueue::new(1024, 5));
    let scanner = || {
        Scanner::new(
            stores.changelog().clone(),
            queue.clone(),
            config.clone(),
            ShardRange::ALL,
        )
    };
    let mut first = scanner();
    let path = crate::schedules::dead_large_put(
        &stores,
        protocol,
        [Rule::once(Op::HvCas, Fault::CrashBefore)],
        "predecessor",
    )
    .await;
    let (report, _) = scan_for(&mut first, threshold * 3, gap).await;
    assert_eq!(
        report.won, 1,
        "the first scanner claimed the change: {report:?}"
    );
    drop(first);

    let mut restarted = scanner();
    let (_, sweeps) = scan_for(&mut restarted, gap, gap).await;
    assert_eq!(sweeps.first(), Some(&true), "a scanner starts with a sweep");
    let cancel = tokio_util::sync::CancellationToken::new();
    let cleaner = tokio::spawn(
        tiersweep::recovery::Cleaner::new(stores.clone(), queue.clone(), config.clone())
            .run(cancel.clone(), Duration::from_secs(1)),
    );
    let (report, sweeps) = scan_for(&mut restarted, settle + threshold * 4, gap).await;
    cancel.cancel();
    let _ = cleaner.await;
    assert!(!sweeps.contains(&true), "no sweep ran after the first");
    assert_eq!(
        report.won, 1,
        "claimed again for the second pass at its due time, a lease early: {report:?}"
    );
    second_pass_converged(&stores, &path).await;
}

/// A writer whose clock runs an hour ahead records a change (its id minted an hour in the
/// future) and dies after its upload, while a scanner that has run for many rounds is
/// scanning. Incremental rounds read the ids minted before their cutoff, so they used to
/// skip the row until the cutoff passed its id (an hour) or the next full sweep; a one-off
/// pass, whose first round is a sweep, hid that. Each round also reads the ids minted up
/// to `max_writer_skew` ahead of now: the crash is claimed within a couple of thresholds,
/// with no sweep. `writer` is the writer's view of the stores (its clock
/// [`crate::schedules::SKEW`] ahead), `recovery` the scanner's.
pub async fn a_crash_of_a_writer_running_ahead_is_found_by_a_running_scanner(
    recovery: Stores,
    writer: Stores,
    protocol: ProtocolConfig,
) {
    let threshold = protocol.staleness_threshold;
    let gap = protocol.heartbeat_interval;
    let mut s = scanner(&recovery, protocol, Duration::from_secs(86_400));
    let (_, sweeps) = scan_for(&mut s, threshold * 2, gap).await;
    assert_eq!(sweeps.first(), Some(&true), "a scanner starts with a sweep");
    assert!(
        sweeps.len() > 2,
        "and then runs incremental rounds: {sweeps:?}"
    );
    let path = crate::schedules::dead_large_put(
        &writer,
        protocol,
        [Rule::once(Op::LtPut, Fault::CrashAfter)],
        "ahead",
    )
    .await;
    let (found, sweeps) = scan_for(&mut s, threshold * 3, gap).await;
    assert!(
        !sweeps.contains(&true),
        "incremental rounds only: {sweeps:?}"
    );
    assert_eq!(
        found.won, 1,
        "the crash of a writer an hour ahead is claimed within the threshold and a few rounds: {found:?}"
    );
    assert_eq!(
        entries_for(&recovery, &path).await.len(),
        1,
        "claimed, not converged (nobody drains the queue)"
    );
}

/// The round's part of a scanner's room is full of claims nobody takes, and its last
/// round ended, so the next begins at the start of its key range with no room. A crash
/// that turned stale while the scanner was not looking (paused, or never watching its
/// row) is the first row that round reads, and it holds it back, page after page, ending
/// the round each time. The room kept for rows that just turned stale is free: they are
/// read ahead of a round that holds back as they are ahead of one mid-pass, and the crash
/// is claimed.
pub async fn a_fresh_crash_is_claimed_while_the_round_holds_back_at_its_start(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let threshold = protocol.staleness_threshold;
    let gap = protocol.heartbeat_interval;
    let crash = || [Rule::once(Op::LtPut, Fault::CrashAfter)];
    for _ in 0..9 {
        crate::schedules::dead_large_put(&stores, protocol, crash(), "backlog").await;
    }
    // Stale before the scanner starts: its first round, a sweep, claims them all.
    tokio::time::sleep(threshold * 2).await;
    // A room of 10: 9 for the round, 1 kept for rows that just turned stale. Claims that
    // outlast the test, so that none comes back while the scanner is not looking.
    let mut s = scanner_with(
        &stores,
        RecoveryConfig {
            full_sweep_every: Duration::from_secs(86_400),
            max_queued_claims: 10,
            claim_lease: threshold * 20,
            republish_after: threshold * 20,
            ..test_recovery_config(protocol)
        },
    );
    let (first, _) = scan_for(&mut s, threshold, gap).await;
    assert_eq!(
        (first.won, first.held_back),
        (9, 0),
        "the backlog fills the round's part of the room exactly: {first:?}"
    );
    let behind = crate::schedules::dead_large_put(&stores, protocol, crash(), "behind").await;
    tokio::time::sleep(threshold * 2).await;
    let (then, _) = scan_for(&mut s, threshold * 2, gap).await;
    assert!(
        then.held_back > 0,
        "the round holds the new crash back (no room for it): {then:?}"
    );
    assert_eq!(
        then.won, 1,
        "and the fresh read claims it with the room kept for it: {then:?}"
    );
    let row = entries_for(&stores, &behind).await;
    assert!(
        row.iter().all(|e| e.record.owner.is_recovery_claim()),
        "the new crash's row is claimed: {row:?}"
    );
}

/// A shard changes hands while a writer heartbeats a slow put in it: its old owner has
/// been watching the row, its new owner's key bound has long passed the row's key. Then the
/// writer dies. The new owner reads the shard whole in its next round and claims the row,
/// with no full sweep; the old owner no longer reads the shard, nor its watched row.
pub async fn a_shard_handed_over_is_read_whole_by_its_new_owner(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let threshold = protocol.staleness_threshold;
    let gap = protocol.heartbeat_interval;
    let no_sweep = Duration::from_secs(86_400);
    let (path, put) = slow_put(&stores, protocol, "handed-over").await;
    let shard = entries_for(&stores, &path).await[0].id.shard();
    let others = ShardSet::ALL.difference(&[shard].into_iter().collect());
    let mut old = scanner(&stores, protocol, no_sweep);
    let mut new = scanner(&stores, protocol, no_sweep);
    new.set_shards(others);
    let (alive, _) = scan_for(&mut old, threshold * 4, gap).await;
    assert_eq!(alive.won, 0, "a live row is not claimed: {alive:?}");
    assert_eq!(old.watched_rows(), 1, "its owner watches the live row");
    scan_for(&mut new, threshold * 4, gap).await;
    assert_eq!(new.watched_rows(), 0, "the other scanner never saw it");
    old.set_shards(others);
    new.set_shards(ShardSet::ALL);
    assert_eq!(old.watched_rows(), 0, "watching ends with the shard");
    put.abort();
    let _ = put.await;
    let mut found = ScanReport::default();
    let mut sweeps = Vec::new();
    let until = tokio::time::Instant::now() + threshold * 3;
    while tokio::time::Instant::now() < until && found.won == 0 {
        let o = old.scan_page().await.expect("scanning");
        assert_eq!(o.won, 0, "the old owner no longer claims in the shard");
        let n = new.scan_page().await.expect("scanning");
        sweeps.push(n.sweep);
        found.add(&n);
        tokio::time::sleep(gap).await;
    }
    assert_eq!(
        found.won, 1,
        "the new owner claims the dead writer's row: {found:?}"
    );
    assert!(
        !sweeps.contains(&true),
        "by reading the shard whole, not by a sweep"
    );
}

/// A scanner whose round's part of the room is full gains a shard in which a writer died
/// while nobody read the shard: the crash turned stale after the shard's old holder let
/// it go, before this scanner took it — behind both bounds of this scanner's fresh read
/// (its own last cutoff and round). The page after the handover reads the gained shard
/// for such rows and claims the crash with the room kept for rows that just turned stale,
/// as the fresh read would have had the shard stayed with one scanner. Without that, the
/// round holds it back until cleaners free the room — under a drain, until the backlog
/// ahead of it is claimed.
pub async fn a_crash_stale_during_a_handover_is_claimed_ahead_of_the_backlog(
    stores: Stores,
    protocol: ProtocolConfig,
) {
    let threshold = protocol.staleness_threshold;
    let gap = protocol.heartbeat_interval;
    // A room of 10: 9 for the round, 1 kept for rows that just turned stale. Claims that
    // outlast the test, so that none comes back and nothing frees the room.
    let config = RecoveryConfig {
        full_sweep_every: Duration::from_secs(86_400),
        max_queued_claims: 10,
        claim_lease: threshold * 40,
        republish_after: threshold * 40,
        ..test_recovery_config(protocol)
    };
    let (kept, gained) = (
        ShardSet::from(ShardRange::for_member(0, 2).expect("two members")),
        ShardSet::from(ShardRange::for_member(1, 2).expect("two members")),
    );
    // Dead writers' rows (recorded, never heartbeated), each in a shard of `within`.
    let dead = |within: ShardSet| {
        let (changelog, clock) = (stores.changelog().clone(), stores.clock().clone());
        async move {
            let id = std::iter::repeat_with(|| ChangeId::mint_at(clock.now()))
                .find(|id| within.contains(id.shard()))
                .expect("ids are minted in every shard");
            let path = unique_path();
            let rec = ChangeRecord::new(
                path.clone(),
                None,
                Some(Revision::mint(&path)),
                OwnerToken::writer(),
            );
            changelog.record(&id, &rec).await.expect("recording");
            path
        }
    };
    // Exactly the round's part of the room, in the shards the scanner holds throughout.
    for _ in 0..9 {
        dead(kept).await;
    }
    tokio::time::sleep(config.idle_poll + threshold * 4).await;
    let mut s = scanner_with(&stores, config);
    s.set_shards(kept);
    let (first, _) = scan_for(&mut s, threshold, gap).await;
    assert_eq!(
        (first.won, first.held_back),
        (9, 0),
        "the backlog fills the round's part of the room exactly: {first:?}"
    );
    // The crash, in a shard the scanner does not hold yet. It turns stale while the scanner
    // goes on with its own shards, completing rounds past its id and its stamp.
    let crashed = dead(gained).await;
    let (meanwhile, _) = scan_for(&mut s, threshold * 2, gap).await;
    assert_eq!(
        meanwhile.won, 0,
        "the crash is not in its shards: {meanwhile:?}"
    );
    // The round's part of the room is full: the round would hold the crash back.
    s.set_shards(ShardSet::ALL);
    let (then, _) = scan_for(&mut s, threshold * 2, gap).await;
    assert_eq!(
        (then.won, then.fresh),
        (1, 1),
        "the page after the handover claims it with the room kept for fresh rows: {then:?}"
    );
    let row = entries_for(&stores, &crashed).await;
    assert!(
        row.iter().all(|e| e.record.owner.is_recovery_claim()),
        "the crash's row is claimed: {row:?}"
    );
}

/// A large put whose HV write takes sixty thresholds: its writer heartbeats the row all
/// along, until the returned task is aborted (the writer dies). Returns once it is recorded.
async fn slow_put(
    stores: &Stores,
    protocol: ProtocolConfig,
    tag: &str,
) -> (
    ObjectPath,
    tokio::task::JoinHandle<Result<(), tiersweep::writer::WriteError>>,
) {
    let path = unique_path();
    let delay = protocol.staleness_threshold * 60;
    let faults = Faults::new([Rule::once(Op::HvCas, Fault::Delay(delay))]);
    let w = TieredStorage::new(faults.wrap(stores), test_writer_config(protocol))
        .expect("valid writer config");
    let value = large(tag);
    let put = tokio::spawn({
        let path = path.clone();
        async move { w.put(&path, value).await }
    });
    wait_for(stores, &path).await;
    (path, put)
}

async fn wait_for(stores: &Stores, path: &ObjectPath) {
    for _ in 0..2000 {
        if !entries_for(stores, path).await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the writer never recorded {path}");
}

/// What scanning cost on a changelog full of removed rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanCost {
    /// Stale rows the rounds after the first found (and claimed).
    pub found: usize,
    /// Rows those rounds examined, removed-but-not-compacted ones included.
    pub examined: u64,
    /// Rows the scanner's first round (a sweep of everything) examined.
    pub first_round: u64,
}

impl ScanCost {
    /// Rows examined per stale row found, after the first round.
    pub fn per_found(&self) -> f64 {
        self.examined as f64 / self.found.max(1) as f64
    }
}

/// The scan-cost measurement (in-memory twin, paused time): `history` changes complete
/// (their rows removed, not compacted) while one scanner runs rounds; then `crashes`
/// writers die among `removed_per_crash` × as many completing ones, in `waves`, and the
/// scanner finds them. Returns what the rounds after the first examined per stale row
/// found: a key-bounded scanner (`full_sweep_every` > 0) reads each removed row about
/// once, a full-range one re-reads the whole history every round.
pub async fn scan_cost(
    stores: tiersweep::testing::MemoryStores,
    protocol: ProtocolConfig,
    full_sweep_every: Duration,
    history: usize,
    crashes: usize,
    removed_per_crash: usize,
) -> ScanCost {
    let config = RecoveryConfig {
        full_sweep_every,
        max_queued_claims: 0,
        scan_batch: 500,
        // Nobody cleans here: leases must outlast the run, or claims would be made again.
        claim_lease: Duration::from_secs(86_400),
        ..test_recovery_config(protocol)
    };
    let threshold = protocol.staleness_threshold;
    let (changelog, clock) = (stores.changelog, stores.clock);
    let mut s = Scanner::new(
        changelog.clone(),
        Arc::new(MemoryQueue::new(crashes.max(1) * 2, 5)),
        config,
        ShardRange::ALL,
    );
    let record = || {
        let p = ObjectPath::new(format!("cost/{}", uuid::Uuid::now_v7())).expect("valid path");
        ChangeRecord::new(
            p.clone(),
            None,
            Some(Revision::mint(&p)),
            OwnerToken::writer(),
        )
    };
    let write = |removed: bool| {
        let changelog = changelog.clone();
        let rec = record();
        let id = ChangeId::mint_at(clock.now());
        async move {
            changelog.record(&id, &rec).await.expect("recording");
            if removed {
                changelog.remove(&id, &rec.owner).await.expect("removing");
            }
        }
    };
    // History: the week of completed writes Bigtable has not compacted away yet.
    for _ in 0..history {
        write(true).await;
    }
    // The first round, a sweep of everything, once the history is older than the
    // threshold (ids minted within it of a round's start are read by the next round too:
    // the grace a writer has between minting an id and recording it).
    tokio::time::sleep(threshold * 2).await;
    while s.scan_page().await.expect("scanning").more {}
    let first_round = changelog.rows_examined();
    let mut after = ScanReport::default();
    let waves = 5;
    for _ in 0..waves {
        for _ in 0..crashes / waves {
            write(false).await;
            for _ in 0..removed_per_crash {
                write(true).await;
            }
        }
        tokio::time::sleep(threshold + Duration::from_millis(10)).await;
        loop {
            let page = s.scan_page().await.expect("scanning");
            after.add(&page);
            if !page.more {
                break;
            }
        }
    }
    ScanCost {
        found: after.won,
        examined: changelog.rows_examined() - first_round,
        first_round,
    }
}

//! One conformance suite per store trait. Every backend's tests instantiate the same suite
//! through these macros, each test with a fresh store, so "the Bigtable changelog behaves
//! like the in-memory one" is checked test by test rather than assumed.
//!
//! The suites never wait for time to pass: staleness is probed with cutoffs relative to the
//! stamps the store returns, so they run as fast against an emulator as in memory.

pub mod changelog;
pub mod hv;
pub mod leases;
pub mod lt;
pub mod queue;

/// Expands to one `#[tokio::test]` per named suite function; `$make` is an async
/// expression that yields a fresh store.
#[macro_export]
macro_rules! conformance_tests {
    ($suite:ident, $make:expr, [$($test:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let store = $make.await;
                $crate::testing::conformance::$suite::$test(&*store).await;
            }
        )*
    };
}

/// The HV suite for a backend.
#[macro_export]
macro_rules! hv_conformance {
    ($make:expr) => {
        $crate::conformance_tests!(
            hv,
            $make,
            [
                absent_reads_none,
                cas_applies_on_the_version_read_and_conflicts_otherwise,
                a_retry_recognises_its_own_landing,
                a_fence_refuses_every_earlier_expectation,
                a_fence_answers_for_the_tombstone_exactly,
                tombstones_are_read_in_one_batch_in_order,
                a_tombstone_scan_pages_through_its_range,
                a_deleted_row_keeps_its_version,
                a_straggler_never_lands_after_a_later_write,
                metadata_travels_with_the_data,
            ]
        );
    };
}

/// The LT suite for a backend.
#[macro_export]
macro_rules! lt_conformance {
    ($make:expr) => {
        $crate::conformance_tests!(
            lt,
            $make,
            [
                put_get_exists_delete,
                delete_of_missing_blob_succeeds,
                a_put_never_overwrites,
                a_streamed_put_stores_every_chunk,
                a_streamed_put_whose_stream_fails_creates_nothing,
                a_sized_put_stores_exactly_its_declared_bytes,
                a_sized_put_is_no_object_until_its_last_chunk,
                a_streamed_get_yields_the_blob,
                a_blob_carries_its_metadata,
                list_pages_through_everything,
                a_range_lists_its_names_with_their_creation_times,
            ]
        );
    };
}

/// The changelog suite for a backend.
#[macro_export]
macro_rules! changelog_conformance {
    ($make:expr) => {
        $crate::conformance_tests!(
            changelog,
            $make,
            [
                recorded_entry_reads_back,
                fresh_entry_is_not_stale,
                stale_entry_is_claimed_once,
                claim_fences_the_writer,
                a_repeated_record_confirms_without_writing,
                claim_retry_by_its_claimer_wins,
                heartbeat_refreshes_only_for_the_owner,
                remove_is_conditional_and_missing_is_fine,
                cleanup_after_is_honoured,
                a_scan_from_a_stamp_reads_only_rows_stamped_since,
                a_scan_by_minting_time_reads_only_ids_minted_in_the_window,
                a_scan_reports_rows_not_claimable_as_waiting_when_asked,
                get_many_reads_each_row_in_one_call,
                remove_many_removes_whoever_owns_the_rows,
                extend_claim_only_moves_the_owners_lease_later,
                defer_rewrites_only_for_the_owner_and_postpones_recovery,
                scan_pages_resume_and_respect_shards,
            ]
        );
    };
}

/// The shard-lease suite for a backend.
#[macro_export]
macro_rules! lease_conformance {
    ($make:expr) => {
        $crate::conformance_tests!(
            leases,
            $make,
            [
                an_unwritten_lease_is_free_and_taken_once,
                a_held_lease_is_taken_only_once_it_expired,
                a_renewal_after_a_takeover_is_refused,
                a_renewal_before_a_takeover_defeats_it,
                a_release_frees_the_lease_at_the_next_epoch,
                members_announce_depart_and_are_forgotten_only_when_stale,
            ]
        );
    };
}

/// The job-queue suite for a backend.
#[macro_export]
macro_rules! queue_conformance {
    ($make:expr) => {
        $crate::conformance_tests!(
            queue,
            $make,
            [
                published_jobs_are_delivered_and_acked,
                nacked_and_dropped_jobs_are_redelivered,
                dead_lettered_jobs_are_not_redelivered,
                flow_control_bounds_outstanding,
                a_subscription_stops_and_closes_cleanly_in_any_state,
            ]
        );
    };
}

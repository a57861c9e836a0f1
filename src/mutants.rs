//! Known-bad variants of the protocol, for measuring the simulation (feature `mutants`).
//!
//! Each [`Mutant`] names one mistake a reasonable engineer could make in the protocol —
//! a check left out, two steps swapped, a rule weakened — and the code carries a switch at
//! the place the mistake would be made. The whole-pipeline simulation
//! (`tiersweep_testkit::simulation`) must find every one of them: a mutant it cannot catch is a
//! fault or an invariant the simulation does not express yet.
//!
//! Without the feature, [`on`] is a constant `false` and every switch compiles away; the
//! release build's symbol check (`infra/check-release.sh`) confirms none is left. With it, a
//! mutant is switched on for the current thread only: the simulation runs each schedule on
//! a current-thread runtime, so parallel tests cannot see each other's mutant.

/// One protocol mistake, switched on by [`activate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mutant {
    /// The heartbeat is an unconditional write: it neither checks the owner nor that the row
    /// still exists, so a late heartbeat re-creates a removed row (a partial, malformed one).
    UnconditionalHeartbeat,
    /// A claim does not re-check that the row is still stale when it lands.
    ClaimWithoutStalenessCheck,
    /// Recovery reads HV without fencing the change first.
    NoHvFence,
    /// Recovery reads HV, then fences, and decides on the read.
    FenceAfterRead,
    /// Recovery's fence asks about one revision only (`old`, when the change has one) and
    /// takes "not `old`" for "neither", so a change whose HV write landed loses its `new`.
    FenceAsksOnce,
    /// A compare-and-write leaves the row's version as it found it (only fences change it),
    /// so two changes that read the same row both land.
    WriteKeepsVersion,
    /// A delete clears the row's version with its data, so the emptied row looks never
    /// written and a straggler that expected "never written" lands on it.
    DeleteDropsVersion,
    /// Converge removes the changelog row before it deletes the blobs.
    RemoveRowBeforeDeletes,
    /// The cleaner converges whatever row a job names, whoever owns it.
    NoClaimCheck,
    /// The cleaner accepts a job whose claim equals the row's owner even when the owner is
    /// the writer itself (tokens are not secret).
    WriterTokenAccepted,
    /// The cleaner does not check the object lies under the configured prefix.
    NoScopeCheck,
    /// The prefix is matched as a string, so `sim` admits `simx/...`.
    StringPrefix,
    /// The guard ages its heartbeat on the monotonic clock only, which stops while a host
    /// is suspended.
    GuardMonotonicOnly,
    /// The guard is checked before the first compare-and-write attempt only, not before
    /// each retry.
    GuardCheckedOnce,
    /// A small write that re-reads the row after a conflict and tries again (last writer
    /// wins) keeps its first new version, so that version can land twice and bring back a version a
    /// straggler expects.
    VersionReusedAcrossRounds,
    /// After a failed upload the writer deletes the blob and removes its row at once, so an
    /// upload that lands after its error is an orphan no row names.
    UploadErrorRemovesRow,
    /// A read that finds its tombstone's blob missing reports it dangling without
    /// re-reading HV.
    ReadTrustsFirstMiss,
    /// The cleaner dead-letters a job without its reason.
    DeadLetterWithoutReason,
    /// Recovery removes the row of a change whose upload it deleted at once, though the
    /// dead writer's upload may still land.
    RecoveryRemovesAtOnce,
    /// A large put's upload releases its final chunk without waiting for the change's
    /// record, so the blob can exist before any row names it.
    UngatedUpload,
    /// Recovery's upload settle is stamped and judged on the cleaner host's clock instead
    /// of the changelog's: a cleaner behind by the settle makes the row due at once, and a
    /// duplicate job on a cleaner ahead converges it early.
    SettleOnHostClock,
    /// The scanner drops the claims it lets go (their jobs republished twice and still
    /// untaken) without watching them, though their ids lie below the round's key bound:
    /// the rows wait for the next full sweep.
    ForgottenClaimsUnwatched,
    /// Incremental rounds read no ids minted ahead of the changelog's time, so the crash of
    /// a writer whose clock runs ahead waits until the cutoff passes its id.
    NoWriterSkewWindow,
    /// A watched row re-read before it turned stale (its writer heartbeated meanwhile) is
    /// not watched again: if its writer then dies, the row waits for the next sweep.
    RecheckDropsLiveRows,
    /// A cleaner extends the claim of a job in hand from its host's clock: one ahead holds
    /// a dead job's row for its skew, one behind loses the claim while it works.
    KeepClaimOnHostClock,
    /// A scanner that sees a row under another's claim (or its predecessor's, before a
    /// restart) watches it only until the claim's lease ends, so a settle deferral the
    /// claim's cleaner made meanwhile is taken up a lease late.
    LeasedRowsWatchedToLeaseEnd,
    /// A failed re-read of the watched rows due now drops them from the watch set instead
    /// of watching them again: a Bigtable hiccup leaves them to the next sweep.
    RecheckErrorDropsRows,
    /// A writer defers its change after an upload that needed a retry with `due_at`
    /// on its own clock: one behind makes the row due at once, and recovery deletes before
    /// the failed attempt lands.
    WriterSettleOnHostClock,
    /// The gate checks the guard when it releases a streamed upload's final chunk only
    /// until it opens: once open, the stream's end passes unchecked, so a deferred put whose
    /// client completes after the deadline creates its blob after recovery removed the row.
    StreamEndUngated,
    /// A writer that gives up a deferred put's upload defers the row to the end of its
    /// upload settle even when that is before the put's deadline: a scanner watching the
    /// row until the deadline it saw takes it up only then.
    SettleMovesDueEarlier,
    /// Recovery takes an LT delete that failed for one that found nothing (deleting a
    /// missing blob succeeds, so why not an error too): the row is removed with the blob
    /// still there, an orphan no row names.
    DeleteErrorTakenForGone,
    /// The audit judges every blob it lists, whatever its creation time: the blob of a
    /// write recorded after the audit's changelog snapshot looks like an orphan, and the
    /// deletion it requests fences the live write.
    AuditJudgesYoungBlobs,
    /// A scanner uses a shard lease for one and a half TTLs from its renewal instead of
    /// 0.9: a holder that froze reads on after another member took the shard.
    LeaseUsedPastTtl,
    /// A member takes only free leases, never expired ones: the shards of a member that
    /// died without releasing them are read by nobody.
    ExpiredLeasesKept,
    /// A scanner reads a shard it gains from the key bound of its current round on, not
    /// whole: rows below the bound that the shard's last holder left go to the next sweep.
    GainedShardsNotReadWhole,
    /// A scanner that gains shards does not read them for rows that turned stale while
    /// they changed hands: its fresh read starts at its own last cutoff and round, so such
    /// a crash waits for the round, under backpressure until the round's first pass ends.
    HandoverNotReadFresh,
    /// The fresh read claims within the backlog's part of the room, not the whole room: a
    /// drain held back at its part leaves rows that just turned stale waiting behind it.
    FreshReadWithoutReserve,
    /// An audit worker judges a range job whatever its run's expiry: a job replayed long
    /// after its run ended (a drained backlog) lists and deletes with the old run's
    /// parameters.
    ExpiredRunJobsJudged,
    /// The pass after an upload settle takes a failed existence check for "absent": it
    /// skips the delete and removes the row with a late upload still there.
    ExistsErrorTakenForAbsent,
    /// When a scanner's overflow spans are too many, it drops the surplus instead of
    /// merging neighbours: rows that did not fit the watch set wait for the next sweep.
    OverflowSpansDropped,
    /// Two overflow spans merge into one due at the later of their due times: the rows of
    /// the earlier wait for the later.
    MergedSpanDueLater,
    /// A span read part-way merges like any other: a merge reads it again from its
    /// start, and the rows of its first page, not yet due, merge back into it.
    PartReadSpansMerge,
    /// A cleaner's delete pace has no floor: a cut below one a second stops its deletes.
    PaceWithoutFloor,
    /// A recovery worker's Bigtable pace has no floor: a cut below one row a second stops
    /// its changelog and HV calls.
    BigtablePaceWithoutFloor,
    /// A scanner's room review (the oldest waiting claims, read to make room) forgets the
    /// claims it read that still wait, as if taken: their leases are no longer extended
    /// nor their jobs republished, so a lost job waits for the next full sweep.
    RoomReviewDropsUntaken,
    /// A cleaner's batched clock reads answer a caller with the time the read before
    /// returned instead of one read after it asked (a cache of the changelog's time): a
    /// deferral stamped from it ends its settle early by as long as the cleaner was idle.
    ClockReadShared,
}

impl Mutant {
    /// Every mutant, for the mutation test to try one by one.
    #[cfg(any(test, feature = "testing"))]
    pub const ALL: [Mutant; 46] = [
        Mutant::UnconditionalHeartbeat,
        Mutant::ClaimWithoutStalenessCheck,
        Mutant::NoHvFence,
        Mutant::FenceAfterRead,
        Mutant::FenceAsksOnce,
        Mutant::WriteKeepsVersion,
        Mutant::DeleteDropsVersion,
        Mutant::RemoveRowBeforeDeletes,
        Mutant::NoClaimCheck,
        Mutant::WriterTokenAccepted,
        Mutant::NoScopeCheck,
        Mutant::StringPrefix,
        Mutant::GuardMonotonicOnly,
        Mutant::GuardCheckedOnce,
        Mutant::VersionReusedAcrossRounds,
        Mutant::UploadErrorRemovesRow,
        Mutant::ReadTrustsFirstMiss,
        Mutant::DeadLetterWithoutReason,
        Mutant::RecoveryRemovesAtOnce,
        Mutant::UngatedUpload,
        Mutant::SettleOnHostClock,
        Mutant::ForgottenClaimsUnwatched,
        Mutant::NoWriterSkewWindow,
        Mutant::RecheckDropsLiveRows,
        Mutant::KeepClaimOnHostClock,
        Mutant::LeasedRowsWatchedToLeaseEnd,
        Mutant::RecheckErrorDropsRows,
        Mutant::WriterSettleOnHostClock,
        Mutant::StreamEndUngated,
        Mutant::SettleMovesDueEarlier,
        Mutant::DeleteErrorTakenForGone,
        Mutant::AuditJudgesYoungBlobs,
        Mutant::LeaseUsedPastTtl,
        Mutant::ExpiredLeasesKept,
        Mutant::GainedShardsNotReadWhole,
        Mutant::HandoverNotReadFresh,
        Mutant::FreshReadWithoutReserve,
        Mutant::ExpiredRunJobsJudged,
        Mutant::ExistsErrorTakenForAbsent,
        Mutant::OverflowSpansDropped,
        Mutant::MergedSpanDueLater,
        Mutant::PartReadSpansMerge,
        Mutant::PaceWithoutFloor,
        Mutant::RoomReviewDropsUntaken,
        Mutant::ClockReadShared,
        Mutant::BigtablePaceWithoutFloor,
    ];
}

#[cfg(feature = "mutants")]
thread_local! {
    static ACTIVE: std::cell::Cell<Option<Mutant>> = const { std::cell::Cell::new(None) };
}

/// Whether `m` is switched on for this thread. Always `false` without the feature.
#[inline(always)]
pub fn on(m: Mutant) -> bool {
    #[cfg(feature = "mutants")]
    {
        ACTIVE.with(|a| a.get() == Some(m))
    }
    #[cfg(not(feature = "mutants"))]
    {
        let _ = m;
        false
    }
}

/// Switches `m` on (or every mutant off, with `None`) for the current thread.
#[cfg(feature = "mutants")]
pub fn activate(m: Option<Mutant>) {
    ACTIVE.with(|a| a.set(m));
}

//! The stale-scan worker: finds abandoned changes in its shards of the changelog, claims
//! each with a compare-and-set, and publishes one cleanup job per claim it won.
//!
//! Traces: a scan page is one trace; each change it claims starts its own trace at the
//! claim, linked to the page's span, and the cleaner's work continues that trace.
//!
//! Scans resume from a cursor and wrap around at the end of the shard range, so rows that
//! stay stale (malformed rows, claims that keep failing) cannot starve the rest.

use std::sync::Arc;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::RecoveryConfig;
use super::job::CleanupJob;
use super::queued::{QueuedClaims, Review};
use super::watched::{Overflow, Span, Watched};
use crate::changelog::{Changelog, ChangelogEntry, Claim, MintedWindow, ScanRequest, ScannedRow};
use crate::error::StoreResult;
use crate::model::{ChangeId, OwnerToken, ShardSet, Timestamp};
use crate::pace::{Pace, Paced};
use crate::queue::JobQueue;
use crate::telemetry::metrics::{PassBacklog, METRICS};
use crate::telemetry::{attr, propagation, span};
use opentelemetry::trace::TraceContextExt;
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// What a scan page (or a pass, summed) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Rows read.
    pub scanned: usize,
    /// Rows that do not decode (left alone, reported).
    pub malformed: usize,
    /// Claims won.
    pub won: usize,
    /// Claims lost to another claimer (or to the writer's heartbeat).
    pub lost: usize,
    /// Jobs published.
    pub published: usize,
    /// Stale rows left unclaimed because the scanner's claims waiting for cleaners had
    /// reached `max_queued_claims` (they are scanned again later).
    pub held_back: usize,
    /// Leases of queued claims this scanner moved on, their jobs still waiting.
    pub extended: usize,
    /// Jobs published again because they waited `republish_after` untaken.
    pub republished: usize,
    /// Claims won by reading the rows that just turned stale ahead of the backlog.
    pub fresh: usize,
    /// Watched rows re-read because they could have turned stale, and rows read in the
    /// spans of those that did not fit (`recovery::watched`).
    pub rechecked: usize,
    /// Rows of its waiting claims the scanner re-read to learn which a cleaner took: its
    /// reviews and the room it made (`recovery::queued`).
    pub reviewed: usize,
    /// This page began a full sweep of the scanner's key range.
    pub sweep: bool,
    /// The page stopped at the batch limit: more rows may be waiting.
    pub more: bool,
}

/// One part of the claimed work.
#[derive(Debug, Default)]
struct Claimed {
    won: usize,
    lost: usize,
    published: usize,
    /// The key of the last row tried, where a held-back scan resumes after.
    last_claimed: Option<String>,
    /// The first claim that failed (the row is tried again later).
    error: Option<crate::error::StoreError>,
    /// The rows left unclaimed for want of room.
    held_back: Vec<ChangeId>,
}

/// One pass over the scanner's key range, from the first page to the wrap-around.
#[derive(Debug, Clone, Copy)]
struct Round {
    /// Reads every row of the range, not only the ids minted since the last round.
    sweep: bool,
    /// The cutoff of its first page: every id minted before it that the round's key range
    /// holds is seen by the time the round ends.
    started: Timestamp,
    /// The shards it reads whole because they were gained before it began and not read
    /// whole since ([`Scanner::set_shards`]); a shard gained again during the round leaves.
    whole: ShardSet,
}

/// Of the room for waiting claims, the part only fresh rows may use: `1 / FRESH_RESERVE`.
const FRESH_RESERVE: usize = 10;

/// A claim won: the row as the claim left it, its job, and the job's producer span.
type Won = (ChangelogEntry, CleanupJob, tracing::Span);

impl ScanReport {
    /// Adds `o`'s counts to these.
    pub fn add(&mut self, o: &ScanReport) {
        self.scanned += o.scanned;
        self.malformed += o.malformed;
        self.won += o.won;
        self.lost += o.lost;
        self.published += o.published;
        self.held_back += o.held_back;
        self.extended += o.extended;
        self.republished += o.republished;
        self.fresh += o.fresh;
        self.rechecked += o.rechecked;
        self.reviewed += o.reviewed;
        self.sweep |= o.sweep;
        self.more = o.more;
    }

    fn add_claims(&mut self, c: &Claimed) {
        self.won += c.won;
        self.lost += c.lost;
        self.published += c.published;
    }
}

/// The stale-scan worker: see the module documentation.
#[derive(Debug)]
pub struct Scanner {
    changelog: Arc<dyn Changelog>,
    queue: Arc<dyn JobQueue>,
    config: RecoveryConfig,
    /// The shards this scanner reads: fixed, or what its leases hold ([`Scanner::set_shards`]).
    shards: ShardSet,
    /// Shards gained since this scanner began that it has not yet read whole: below the
    /// key bound of an incremental round lie ids it never saw ([`Round::whole`]).
    unswept: ShardSet,
    /// Names this scanner's backlog in the metrics and its logs: stable while its shards
    /// change.
    label: String,
    cursor: Option<String>,
    /// The round's last page held rows back for want of room. A round holding back at the
    /// start of its key range has no cursor, yet a backlog stands before the rows that
    /// just turned stale as surely as mid-pass: they are read ahead of it all the same.
    holding_back: bool,
    /// Where the next look at rows that just turned stale starts: the cutoff of the last
    /// look that read them all (or of the last whole pass). `None` before the first page.
    fresh_from: Option<Timestamp>,
    /// Shards gained since this scanner's last page: its next page reads, in them, the
    /// rows that turned stale while they changed hands ([`Scanner::read_handover`]).
    handed_over: ShardSet,
    /// How long a shard may go unheld when it changes hands: the lease period when shards
    /// are held under leases (from the assignment), zero when set by hand.
    handover: Duration,
    /// The backlog the current pass over the shards has seen so far; published to the
    /// metrics when the pass wraps around.
    pass: PassBacklog,
    /// The claims this scanner published that may still be waiting for a cleaner, at most
    /// `max_queued_claims`: its own accounting, so that backpressure needs no queue metrics
    /// (the emulator has none), and the claims it keeps alive ([`super::queued`]). A
    /// restarted scanner starts from none.
    queued: QueuedClaims,
    /// Key-bounded scans ([`super::watched`]): the round in progress, if any; the lower
    /// mint bound of incremental rounds (`None`: none completed yet); where the last
    /// completed round began, from which the fresh scan reads; the lowest mint time of a
    /// row held back for want of room that the round may not come back to; when the last
    /// sweep began; the rows read again when they could be due, and the spans of those
    /// that did not fit.
    round: Option<Round>,
    low: Option<Timestamp>,
    seen_before: Option<Timestamp>,
    pinned: Option<Timestamp>,
    last_sweep: Option<Timestamp>,
    watched: Watched,
    overflow: Overflow,
}

impl Scanner {
    /// A scanner of `shards`, claiming into `queue`.
    pub fn new(
        changelog: Arc<dyn Changelog>,
        queue: Arc<dyn JobQueue>,
        config: RecoveryConfig,
        shards: impl Into<ShardSet>,
    ) -> Self {
        let shards = shards.into();
        // Bigtable's rows are shared with the pool's other workers and the writers.
        let pace = Pace::starting_at(Paced::BigtableRows, config.bigtable_rows_per_s);
        let changelog = Arc::new(crate::changelog::PacedChangelog::new(changelog, Arc::new(pace)));
        Self {
            changelog,
            queue,
            config,
            shards,
            unswept: ShardSet::EMPTY,
            label: shards.to_string(),
            cursor: None,
            holding_back: false,
            fresh_from: None,
            handed_over: ShardSet::EMPTY,
            handover: Duration::ZERO,
            pass: PassBacklog::default(),
            queued: QueuedClaims::default(),
            round: None,
            low: None,
            seen_before: None,
            pinned: None,
            last_sweep: None,
            watched: Watched::default(),
            overflow: Overflow::default(),
        }
    }

    /// Names the scanner's backlog series and log lines (its initial shards by default).
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// The shards it reads now.
    #[cfg(any(test, feature = "testing"))]
    pub fn shards(&self) -> ShardSet {
        self.shards
    }

    /// Moves the scanner onto `shards` from its next page on. A shard gained is read whole
    /// by the next round that begins after it was gained: this scanner has never seen the
    /// ids below its key bound there, and the shard's last owner's watch set left with it.
    /// A shard lost is no longer read and its watched rows are dropped; its new owner reads
    /// it whole. Claims already published from lost shards stay this scanner's to keep
    /// alive (`recovery::queued`): handing a shard over re-claims nothing.
    ///
    /// A crash in a gained shard that turned stale while the shard changed hands — after
    /// its old holder's last page, before this scanner's — lies behind both bounds of this
    /// scanner's fresh read (its own last cutoff and round). The next page reads the
    /// gained shards for such rows once (see `read_handover`), so a few crashes are
    /// claimed ahead of any backlog, as they would have been had the shard stayed put.
    pub fn set_shards(&mut self, shards: ShardSet) {
        if shards == self.shards {
            return;
        }
        let gained = shards.difference(&self.shards);
        let lost = self.shards.difference(&shards);
        self.shards = shards;
        for s in gained.iter() {
            if !crate::mutants::on(crate::mutants::Mutant::GainedShardsNotReadWhole) {
                self.unswept.insert(s);
            }
            if !crate::mutants::on(crate::mutants::Mutant::HandoverNotReadFresh) {
                self.handed_over.insert(s);
            }
        }
        self.handed_over = self.handed_over.difference(&lost);
        self.unswept = self.unswept.difference(&lost);
        if let Some(round) = &mut self.round {
            round.whole = round.whole.difference(&gained);
        }
        if !lost.is_empty() {
            self.watched.retain(|id| shards.contains(id.shard()));
        }
        tracing::info!(scanner = %self.label, %shards, %gained, %lost, "scanner's shards changed");
    }

    /// Scans bounded by key, with a watch set and periodic sweeps (`full_sweep_every` > 0).
    fn bounded(&self) -> bool {
        !self.config.full_sweep_every.is_zero()
    }

    /// Makes sure `id` is read again from `due` on: watched, or, when the watch set is
    /// full, in an overflow span ([`super::watched`]). An id with no minting time (none
    /// this crate mints) holds the next round's lower bound instead.
    fn keep(&mut self, id: &ChangeId, due: Timestamp) {
        if !self.bounded() || self.watched.watch(id, due, self.config.max_watched_rows) {
            return;
        }
        if !self.overflow.add(id, due, self.overflow_capacity()) {
            self.pin(id);
        }
    }

    /// Overflow spans kept at most: a quarter as many as watched rows.
    fn overflow_capacity(&self) -> usize {
        (self.config.max_watched_rows / 4).max(1)
    }

    fn pin(&mut self, id: &ChangeId) {
        if let Some(minted) = id.minted_at() {
            self.pinned = Some(self.pinned.map_or(minted, |p| p.min(minted)));
        }
    }

    /// When a row stamped `stamp` could first be stale (or due, if deferred).
    fn due(&self, stamp: Timestamp, due_at: Option<Timestamp>) -> Timestamp {
        let stale_from = stamp.saturating_add(self.config.protocol.staleness_threshold);
        due_at.map_or(stale_from, |t| t.max(stale_from))
    }

    /// When to read again a row seen not claimable. A row stamped ahead of the changelog's
    /// time is under a claim's lease, and whoever holds the claim may defer the row (a
    /// settle pass) long before the lease ends. The scanner that published the claim
    /// learns of that at its next review (`recovery::queued`) only while the row is as it
    /// published it; once the claim's cleaner extended the lease, the review lets the
    /// claim go, and like any other scanner — one that took over the shard, or a restarted
    /// one whose predecessor made the claim — it would learn only when the lease ends. So
    /// a row under a lease is looked at again every review period.
    fn due_seen(
        &self,
        stamp: Timestamp,
        due_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Timestamp {
        let due = self.due(stamp, due_at);
        let leased =
            stamp > now && !crate::mutants::on(crate::mutants::Mutant::LeasedRowsWatchedToLeaseEnd);
        if leased {
            due.min(now.saturating_add(self.config.review_every()))
        } else {
            due
        }
    }

    /// Rows watched here (re-read when they could turn stale).
    #[cfg(any(test, feature = "testing"))]
    pub fn watched_rows(&self) -> usize {
        self.watched.len()
    }

    /// Key spans this scanner reads again for rows that did not fit its watch set.
    #[cfg(any(test, feature = "testing"))]
    pub fn overflow_spans(&self) -> usize {
        self.overflow.len()
    }

    /// How many of `wanted` rows this scanner may claim now, keeping at most `max` claims
    /// waiting. When they would exceed it, it first re-reads its oldest waiting claims and
    /// forgets those taken ([`QueuedClaims::free_room`](super::queued::QueuedClaims::free_room)).
    async fn room_for(&mut self, wanted: usize, max: usize, now: Timestamp) -> StoreResult<usize> {
        if self.config.max_queued_claims == 0 {
            return Ok(wanted);
        }
        let over = (self.queued.len() + wanted).saturating_sub(max);
        if over > 0 && !self.queued.is_empty() {
            let (freed, forgotten) = self
                .queued
                .free_room(&self.changelog, &self.config, over, now)
                .await?;
            self.watch_forgotten(forgotten, now);
            if freed > 0 {
                tracing::debug!(
                    freed,
                    waiting = self.queued.len(),
                    "made room among queued claims"
                );
            }
        }
        Ok(max.saturating_sub(self.queued.len()).min(wanted))
    }

    /// Watches the rows of claims a review forgot. A claim let go is not a row let go: its
    /// id lies below the round's key bound.
    fn watch_forgotten(&mut self, forgotten: Vec<super::queued::Forgotten>, now: Timestamp) {
        for f in forgotten {
            if crate::mutants::on(crate::mutants::Mutant::ForgottenClaimsUnwatched) {
                continue;
            }
            // A row the claim's cleaner extended is under a lease the cleaner may cut
            // short with a deferral: read again every review period, as any leased row.
            let due = self.due_seen(f.stamp, f.due_at, now);
            self.keep(&f.id, due);
        }
    }

    async fn review(&mut self, now: Timestamp) -> StoreResult<Review> {
        let (review, forgotten) = self
            .queued
            .review(&self.changelog, &self.queue, &self.config, now)
            .await?;
        self.watch_forgotten(forgotten, now);
        if review != Review::default() {
            tracing::debug!(
                ?review,
                waiting = self.queued.len(),
                "reviewed queued claims"
            );
        }
        Ok(review)
    }

    /// Claims this scanner published that were still waiting for a cleaner when it last
    /// looked.
    #[cfg(any(test, feature = "testing"))]
    pub fn queued_claims(&self) -> usize {
        self.queued.len()
    }

    /// Scans one page from the cursor, claims what it found, publishes the won claims.
    pub async fn scan_page(&mut self) -> StoreResult<ScanReport> {
        // Each page is a trace of its own; each change it claims starts another (see `claim`).
        let span = tracing::info_span!(parent: None, span::SCAN,
            shards = %self.shards, rows = tracing::field::Empty, won = tracing::field::Empty);
        let reviewed_before = self.queued.rows_read();
        let mut report = self.scan_page_in(&span).instrument(span.clone()).await?;
        report.reviewed = self.queued.rows_read() - reviewed_before;
        span.record("rows", report.scanned);
        span.record("won", report.won);
        Ok(report)
    }

    async fn scan_page_in(&mut self, scan: &tracing::Span) -> StoreResult<ScanReport> {
        // The changelog's own time, not this process's: a scanner whose clock runs ahead
        // would otherwise claim rows whose writers are alive.
        let now = self.changelog.now().await?;
        let mut report = ScanReport::default();
        if self.config.max_queued_claims > 0 && self.queued.review_due(&self.config, now) {
            let review = self.review(now).await?;
            report.extended = review.extended;
            report.republished = review.republished;
        }
        let cutoff = now.saturating_sub(self.config.protocol.staleness_threshold);
        if !self.handed_over.is_empty() {
            self.read_handover(cutoff, now, scan, &mut report).await?;
        }
        let watched_more = self
            .read_ahead_of_round(cutoff, now, scan, &mut report)
            .await?;
        let round = self.round_at(cutoff, now, &mut report);
        // The fresh scan keeps a reserve of the room, so a backlog cannot fill all of it.
        let max = self.config.max_queued_claims;
        let backlog_room = max - max / FRESH_RESERVE;
        // No more rows than there is room to claim, and one: a row read only to be held
        // back is read again, and under a drain's backpressure a whole batch per page read
        // for the few claims the room had was most of what the scanners read. The one over
        // tells whether the round holds back.
        let room = self
            .room_for(self.config.scan_batch, backlog_room, now)
            .await?;
        let req = self.round_request(round, cutoff, now, room);
        let from_start = req.start_after.is_none();
        let page = self.changelog.scan_stale(&req).await?;
        self.cursor = page.resume_after.clone();
        let more = page.resume_after.is_some();
        self.pass.stale_rows += page.rows.len() as u64;
        let entries = self.entries(page.rows, now, &mut report);
        let claimed = self
            .claim_and_publish(entries, backlog_room, cutoff, now, scan)
            .await?;
        let held_back = claimed.held_back.len();
        self.holding_back = held_back > 0;
        report.add_claims(&claimed);
        // A full batch of watched rows re-read: more may be due (rows that fell due together,
        // a drain's deferred second passes), and an idle poll per batch would hold them.
        report.more = more || watched_more;
        if held_back > 0 {
            report.held_back += held_back;
            // Resume right after the last row claimed now, so the held-back rows are
            // scanned again once cleaners catch up.
            self.cursor = claimed.last_claimed.clone().or(req.start_after.clone());
            report.more = false;
            // Should the round end before they are read again, the next one starts at them.
            for id in &claimed.held_back {
                self.pin(id);
            }
        } else if !more {
            METRICS.set_backlog(&self.label, std::mem::take(&mut self.pass));
        }
        // A round that held back the first rows of its key range has not read it: it goes
        // on from the start, and rows minted since the last completed round began stay in
        // the fresh read's window.
        if self.cursor.is_none() && !(from_start && held_back > 0) {
            self.end_round(round);
        }
        // A whole pass from the start that held nothing back has seen every row stale as
        // of `cutoff`: the next fresh scan starts there.
        if (from_start && !more && held_back == 0) || self.fresh_from.is_none() {
            self.fresh_from = Some(cutoff);
        }
        match claimed.error {
            Some(e) if report.won == 0 && report.lost == 0 => Err(e),
            _ => Ok(report),
        }
    }

    /// Reads, ahead of the round, the watched rows and overflow spans that may be due and
    /// the rows that just turned stale, and claims what is. Returns whether a full batch
    /// of watched rows or spans was read (more may be due).
    async fn read_ahead_of_round(
        &mut self,
        cutoff: Timestamp,
        now: Timestamp,
        scan: &tracing::Span,
        report: &mut ScanReport,
    ) -> StoreResult<bool> {
        let mut watched_more = false;
        if self.bounded() {
            let (rechecked, claimed, full) = self.recheck_watched(cutoff, now, scan).await?;
            report.rechecked = rechecked;
            report.add_claims(&claimed);
            let (read, spanned, more) = self.read_overflow(cutoff, now, scan).await?;
            report.rechecked += read;
            report.add_claims(&spanned);
            watched_more = full || more;
        }
        // Mid-pass, or while the round holds back, a backlog lies before rows that just
        // turned stale: those are read first, from where the last look at them ended.
        if (self.cursor.is_some() || self.holding_back)
            && let Some(from) = self.fresh_from
        {
            let (fresh, counts) = self.scan_fresh(from, cutoff, now, scan).await?;
            report.fresh = fresh.won;
            report.add_claims(&fresh);
            report.scanned += counts.scanned;
            report.malformed += counts.malformed;
            report.held_back += counts.held_back;
        }
        Ok(watched_more)
    }

    /// The round in progress, begun at this page if none is; marks the report when the
    /// page begins a full sweep.
    fn round_at(&mut self, cutoff: Timestamp, now: Timestamp, report: &mut ScanReport) -> Round {
        let begins = self.round.is_none();
        let round = *self.round.get_or_insert_with(|| {
            let sweep = self.low.is_none()
                || self
                    .last_sweep
                    .is_none_or(|t| now.saturating_sub(self.config.full_sweep_every) >= t);
            Round {
                sweep,
                started: cutoff,
                whole: self.unswept,
            }
        });
        if round.sweep && begins {
            report.sweep = true;
            self.last_sweep = Some(now);
        }
        round
    }

    /// The request for the round's next page: at most `room` rows and one.
    fn round_request(
        &self,
        round: Round,
        cutoff: Timestamp,
        now: Timestamp,
        room: usize,
    ) -> ScanRequest {
        let bounded = self.bounded();
        ScanRequest {
            shards: self.shards,
            cutoff,
            stamped_from: None,
            now,
            start_after: self.cursor.clone(),
            limit: room.saturating_add(1).min(self.config.scan_batch),
            // An incremental round reads the ids minted since the last one began; ids
            // minted after the cutoff cannot be stale yet (their rows are younger).
            minted: (bounded && !round.sweep).then_some(MintedWindow {
                from: self.low,
                to: Some(cutoff),
                whole: self.unswept,
                // A writer whose clock runs ahead mints ids in the future: without this,
                // its crash would wait until the cutoff passes them, or for the next sweep.
                ahead: (!self.config.max_writer_skew.is_zero()
                    && !crate::mutants::on(crate::mutants::Mutant::NoWriterSkewWindow))
                .then(|| (now, now.saturating_add(self.config.max_writer_skew))),
            }),
            report_waiting: bounded,
        }
    }

    /// Reads the rows that turned stale since `from` (stamped in `[from, cutoff)`) and
    /// claims them, with the whole room. Moves `fresh_from` on when it read them all.
    async fn scan_fresh(
        &mut self,
        from: Timestamp,
        cutoff: Timestamp,
        now: Timestamp,
        scan: &tracing::Span,
    ) -> StoreResult<(Claimed, ScanReport)> {
        // The fresh read is for changes that crashed recently: ids minted since the last
        // completed round began (those minted before were seen by it, and the ones that
        // could turn stale are watched), or, before any round completed (a first round held
        // back through a whole drain), since one threshold before `from`. Anything older is
        // the round's to find: reading it here would read the whole key range, backlog and
        // tombstones, on every page.
        let minted_from = self
            .seen_before
            .unwrap_or_else(|| from.saturating_sub(self.config.protocol.staleness_threshold));
        let req = self.stale_since(self.shards, from, cutoff, now, minted_from);
        let page = self.changelog.scan_stale(&req).await?;
        let full = page.resume_after.is_some();
        let mut counts = ScanReport::default();
        let entries = self.entries(page.rows, now, &mut counts);
        let mut max = self.config.max_queued_claims;
        if crate::mutants::on(crate::mutants::Mutant::FreshReadWithoutReserve) {
            max -= max / FRESH_RESERVE;
        }
        let claimed = self
            .claim_and_publish(entries, max, cutoff, now, scan)
            .await?;
        let held_back = claimed.held_back.len();
        if !full && held_back == 0 && claimed.error.is_none() {
            self.fresh_from = Some(cutoff);
        }
        if claimed.won > 0 {
            tracing::info!(
                won = claimed.won,
                "claimed rows that just turned stale ahead of the backlog"
            );
        }
        counts.held_back = held_back;
        Ok((claimed, counts))
    }

    /// A read of the rows in `shards` that turned stale since `from` (stamped in
    /// `[from, cutoff)`), a batch at most, among the ids minted since `minted_from` when
    /// scans are bounded by key.
    fn stale_since(
        &self,
        shards: ShardSet,
        from: Timestamp,
        cutoff: Timestamp,
        now: Timestamp,
        minted_from: Timestamp,
    ) -> ScanRequest {
        ScanRequest {
            shards,
            cutoff,
            stamped_from: Some(from),
            now,
            start_after: None,
            limit: self.config.scan_batch,
            minted: self.bounded().then_some(MintedWindow {
                from: Some(minted_from),
                to: None,
                whole: ShardSet::EMPTY,
                ahead: None,
            }),
            report_waiting: false,
        }
    }

    /// Reads, in the shards gained since the last page, the rows that turned stale while
    /// they changed hands, and claims them with the whole room — unless they are more than
    /// a page: then they are a backlog that turned stale together (a node's writers lost
    /// just before a handover), which the round finds in its turn, reading the gained
    /// shards whole, rather than the fresh read's room holding it ahead of newer crashes.
    ///
    /// The window: rows stamped up to the handover's length before this page's cutoff — a
    /// lease period for the shard to find a new holder, this scanner's poll (its page may
    /// come that long after it gained the shard) and a threshold for the old holder's last
    /// page (begun that long before it let go) — in ids minted up to a threshold before
    /// that (a write that never heartbeated was minted about when it was stamped). A writer
    /// that heartbeated through the handover and died after it is older: its old holder
    /// watched it, and this scanner finds it reading the shard whole. Rows stamped after
    /// the cutoff are the fresh read's, as ever.
    async fn read_handover(
        &mut self,
        cutoff: Timestamp,
        now: Timestamp,
        scan: &tracing::Span,
        report: &mut ScanReport,
    ) -> StoreResult<()> {
        let lookback =
            self.handover + self.config.idle_poll + self.config.protocol.staleness_threshold;
        let from = cutoff.saturating_sub(lookback);
        let minted_from = from.saturating_sub(self.config.protocol.staleness_threshold);
        let shards = self.handed_over.intersection(&self.shards);
        let req = self.stale_since(shards, from, cutoff, now, minted_from);
        let page = self.changelog.scan_stale(&req).await?;
        // Read: whatever happens next, the gained shards' rows are the round's and the
        // fresh read's from here.
        let gained = std::mem::replace(&mut self.handed_over, ShardSet::EMPTY);
        if page.resume_after.is_some() {
            tracing::info!(scanner = %self.label, %gained, rows = page.rows.len(),
                "a backlog turned stale while shards changed hands: left to the round");
            return Ok(());
        }
        let mut counts = ScanReport::default();
        let entries = self.entries(page.rows, now, &mut counts);
        let claimed = self
            .claim_and_publish(entries, self.config.max_queued_claims, cutoff, now, scan)
            .await?;
        if claimed.won > 0 {
            tracing::info!(scanner = %self.label, %gained, won = claimed.won,
                "claimed rows that turned stale while shards changed hands");
        }
        if let Some(e) = &claimed.error {
            tracing::warn!(scanner = %self.label, error = %e,
                "a claim on a row that turned stale during a handover failed; the round will find it");
        }
        report.fresh += claimed.won;
        report.add_claims(&claimed);
        report.scanned += counts.scanned;
        report.malformed += counts.malformed;
        report.held_back += claimed.held_back.len();
        Ok(())
    }

    /// A round wrapped around: every id minted before it began has been seen, so the next
    /// round starts there, or lower, at a row that needs reading again but is not watched.
    fn end_round(&mut self, round: Round) {
        self.round = None;
        if !self.bounded() {
            return;
        }
        let low = self
            .pinned
            .take()
            .map_or(round.started, |p| p.min(round.started));
        self.low = Some(low);
        self.seen_before = Some(round.started);
        self.unswept = self.unswept.difference(&round.whole);
        tracing::debug!(sweep = round.sweep, %low, watched = self.watched.len(),
            "scan round complete");
    }

    /// Rows a page of watched rows or of a span may read: as many as there is room to
    /// claim (all of a batch without backpressure), at most a batch.
    fn recheck_limit(&self) -> usize {
        let max = self.config.max_queued_claims;
        let room = if max == 0 {
            self.config.scan_batch
        } else {
            max.saturating_sub(self.queued.len())
        };
        room.min(self.config.scan_batch)
    }

    /// Re-reads the watched rows that could have turned stale (as many as there is room
    /// to claim, one read) and claims those that have; the others are watched on.
    async fn recheck_watched(
        &mut self,
        cutoff: Timestamp,
        now: Timestamp,
        scan: &tracing::Span,
    ) -> StoreResult<(usize, Claimed, bool)> {
        let max = self.config.max_queued_claims;
        let limit = self.recheck_limit();
        let ids = self.watched.take_due(now, limit);
        if ids.is_empty() {
            return Ok((0, Claimed::default(), false));
        }
        let rows = match self.changelog.get_many(&ids).await {
            Ok(rows) => rows,
            Err(e) => {
                if !crate::mutants::on(crate::mutants::Mutant::RecheckErrorDropsRows) {
                    for id in &ids {
                        self.keep(id, now);
                    }
                }
                return Err(e);
            }
        };
        let mut stale = Vec::new();
        for entry in rows.into_iter().flatten() {
            if entry.stamp < cutoff && entry.record.due_at.is_none_or(|t| t <= now) {
                stale.push(entry);
            } else if !crate::mutants::on(crate::mutants::Mutant::RecheckDropsLiveRows) {
                let due = self.due_seen(entry.stamp, entry.record.due_at, now);
                self.keep(&entry.id, due);
            }
        }
        let claimed = self
            .claim_and_publish(stale, max, cutoff, now, scan)
            .await?;
        for id in claimed.held_back.clone() {
            self.keep(&id, now);
        }
        if claimed.won > 0 {
            tracing::info!(won = claimed.won, "claimed watched rows that turned stale");
        }
        // Rows held back wait for room (watched again from now): not a reason to go on.
        let full = ids.len() == limit && claimed.held_back.is_empty();
        Ok((ids.len(), claimed, full))
    }

    /// Reads a page of the overflow span due earliest, if one is due and there is room to
    /// claim, and claims what it found stale; rows not yet due are kept again. A span read
    /// part-way goes back with its resume key; one whose read failed goes back whole.
    async fn read_overflow(
        &mut self,
        cutoff: Timestamp,
        now: Timestamp,
        scan: &tracing::Span,
    ) -> StoreResult<(usize, Claimed, bool)> {
        let max = self.config.max_queued_claims;
        let limit = self.recheck_limit();
        if limit == 0 {
            return Ok((0, Claimed::default(), false));
        }
        let Some(span) = self.overflow.take_due(now) else {
            return Ok((0, Claimed::default(), false));
        };
        // Shards handed to another scanner since: their new owner reads them whole.
        let shards = span.shards(&self.shards);
        if shards.is_empty() {
            return Ok((0, Claimed::default(), true));
        }
        let req = ScanRequest {
            shards,
            cutoff,
            stamped_from: None,
            now,
            start_after: span.resume.clone(),
            limit,
            minted: Some(MintedWindow {
                from: Some(span.from),
                // Minting times are milliseconds; `to` is inclusive.
                to: Some(span.to.saturating_add(Duration::from_millis(1))),
                whole: ShardSet::EMPTY,
                ahead: None,
            }),
            report_waiting: true,
        };
        let capacity = self.overflow_capacity();
        let page = match self.changelog.scan_stale(&req).await {
            Ok(page) => page,
            Err(e) => {
                self.overflow.put_back(span, capacity);
                return Err(e);
            }
        };
        let full = page.resume_after.is_some();
        if let Some(after) = page.resume_after {
            let rest = Span {
                resume: Some(after),
                ..span
            };
            self.overflow.put_back(rest, capacity);
        }
        let mut counts = ScanReport::default();
        let entries = self.entries(page.rows, now, &mut counts);
        let claimed = self
            .claim_and_publish(entries, max, cutoff, now, scan)
            .await?;
        for id in claimed.held_back.clone() {
            self.keep(&id, now);
        }
        if claimed.won > 0 {
            tracing::info!(
                won = claimed.won,
                "claimed rows that turned stale in a span of the watch set's overflow"
            );
        }
        // Rows held back wait for room: not a reason to go on.
        let more = claimed.held_back.is_empty() && (full || self.overflow.any_due(now));
        Ok((counts.scanned, claimed, more))
    }

    /// Decodes a page's rows, counting and logging malformed ones.
    fn entries(
        &mut self,
        rows: Vec<ScannedRow>,
        now: Timestamp,
        report: &mut ScanReport,
    ) -> Vec<ChangelogEntry> {
        METRICS.rows_scanned.add(rows.len() as u64);
        report.scanned += rows.len();
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            match row {
                ScannedRow::Entry(e) => {
                    let age = e.stamp.age_at(now);
                    self.pass.oldest_stale_age = self.pass.oldest_stale_age.max(age);
                    entries.push(e);
                }
                ScannedRow::Waiting {
                    id,
                    stamp,
                    due_at,
                } => {
                    let due = self.due_seen(stamp, due_at, now);
                    self.keep(&id, due);
                }
                ScannedRow::Malformed { key, reason } => {
                    report.malformed += 1;
                    METRICS.rows_malformed.inc();
                    tracing::error!(row = %key, %reason,
                        "malformed changelog row left in place; inspect it with `tiersweep inspect`");
                }
            }
        }
        entries
    }

    /// Claims as many of `entries` as leave at most `limit` claims waiting (all of them
    /// when backpressure is off), publishes the won claims in one batch and remembers them.
    /// Rows it claimed or tried to are kept in view ([`Scanner::keep`]).
    async fn claim_and_publish(
        &mut self,
        mut entries: Vec<ChangelogEntry>,
        limit: usize,
        cutoff: Timestamp,
        now: Timestamp,
        scan: &tracing::Span,
    ) -> StoreResult<Claimed> {
        let room = self.room_for(entries.len(), limit, now).await?;
        let held_back: Vec<ChangeId> = entries.drain(room..).map(|e| e.id).collect();
        if !held_back.is_empty() {
            let held_back = held_back.len();
            METRICS.claims_held_back.add(held_back as u64);
            tracing::info!(
                held_back,
                queued = self.queued.len(),
                max = self.config.max_queued_claims,
                "claims waiting for cleaners reached max_queued_claims; leaving stale rows for later"
            );
        }
        let mut claimed = Claimed {
            last_claimed: entries.last().map(|e| e.id.as_str().to_owned()),
            held_back,
            ..Claimed::default()
        };
        let this = &*self;
        let claims: Vec<(ChangeId, StoreResult<Option<Won>>)> = futures::stream::iter(entries)
            .map(|entry| async move {
                let id = entry.id.clone();
                (id, this.claim(entry, cutoff, now, scan).await)
            })
            .buffer_unordered(self.config.claim_concurrency)
            .collect()
            .await;
        let mut jobs = Vec::with_capacity(claims.len());
        for (id, claim) in claims {
            match claim {
                Ok(Some(job)) => {
                    if job.0.record.claims > crate::recovery::FAILING_AFTER_CLAIMS {
                        METRICS.claims_repeated.inc();
                        tracing::warn!(change = %id, object = %job.0.record.object,
                            claims = job.0.record.claims,
                            "a change keeps failing; tiersweep status lists it, tiersweep reset retries it at once");
                    }
                    // Its lease may end with the job undone: the row is read again then.
                    let due = self.due(job.0.stamp, job.0.record.due_at);
                    self.keep(&id, due);
                    jobs.push(job);
                }
                Ok(None) => {
                    claimed.lost += 1;
                    self.keep(&id, now);
                }
                Err(e) => {
                    METRICS.claims_failed.inc();
                    tracing::warn!(error = %e, "claim failed; the row stays stale and is retried on a later scan");
                    claimed.error.get_or_insert(e);
                    self.keep(&id, now);
                }
            }
        }
        claimed.won = jobs.len();
        METRICS.claims_won.add(claimed.won as u64);
        METRICS.claims_lost.add(claimed.lost as u64);
        if jobs.is_empty() {
            return Ok(claimed);
        }
        // Each job carries its own producer span's context; the spans stay open until
        // the batch is accepted, so they time the publish.
        let messages = jobs
            .iter()
            .map(|(_, job, span)| job.to_message(propagation::inject(span)))
            .collect();
        // A failed publish leaves won claims without jobs; their leases expire and the
        // rows are claimed again, so nothing is lost.
        if let Err(e) = self.queue.publish(messages).await {
            for (_, _, span) in &jobs {
                span.record("error.type", "publish");
                span.record("otel.status_code", "ERROR");
            }
            return Err(e);
        }
        claimed.published = jobs.len();
        METRICS.jobs_published.add(jobs.len() as u64);
        if self.config.max_queued_claims > 0 {
            for (won, _, _) in &jobs {
                self.queued.published(won, now);
            }
        }
        Ok(claimed)
    }

    /// Claims one row. A won claim comes back with its job and the job's producer span.
    async fn claim(
        &self,
        entry: ChangelogEntry,
        cutoff: Timestamp,
        now: Timestamp,
        scan: &tracing::Span,
    ) -> StoreResult<Option<Won>> {
        let claimer = OwnerToken::recovery_claim();
        let lease_until = now.saturating_add(self.config.lease_for(entry.record.claims));
        // Each change is its own trace, rooted at its claim and linked to the scan page that
        // found it (the messaging conventions' batch pattern): a trace stays one change's
        // size whatever the page's, and tail sampling keeps or drops one change.
        let span = tracing::info_span!(parent: None, span::CLAIM,
            "tiersweep.change_id" = %entry.id, "tiersweep.claim.won" = tracing::field::Empty);
        let page = scan.context().span().span_context().clone();
        if page.is_valid() {
            span.add_link(page);
        }
        // The recovery trace points back at the request whose crash left the change.
        if let Some(writer) = entry
            .record
            .traceparent
            .as_deref()
            .and_then(propagation::span_context)
        {
            span.add_link(writer);
        }
        let outcome = self
            .config
            .retry
            .run(span::CLAIM, || {
                self.changelog.claim(&entry, cutoff, &claimer, lease_until)
            })
            .instrument(span.clone())
            .await?;
        span.record("tiersweep.claim.won", matches!(outcome, Claim::Won(_)));
        Ok(match outcome {
            Claim::Won(won) => {
                let topic = self.queue.destination();
                let publish = tracing::info_span!(parent: &span, span::PUBLISH,
                    otel.name = %crate::telemetry::messaging_span_name("create", &topic),
                    otel.kind = "producer",
                    "tiersweep.change_id" = %entry.id,
                    "messaging.system" = attr::GCP_PUBSUB,
                    "messaging.operation.name" = "create",
                    "messaging.operation.type" = "create",
                    "messaging.destination.name" = %topic,
                    error.type = tracing::field::Empty,
                    otel.status_code = tracing::field::Empty);
                Some((won, CleanupJob::new(entry.id, claimer), publish))
            }
            Claim::Lost => None,
        })
    }

    /// Scans until cancelled: at once while pages come back full or claims are won,
    /// `idle_poll` apart when nothing is stale, with backoff on errors.
    pub async fn run(self, cancel: CancellationToken) {
        self.run_with(None, cancel).await;
    }

    /// As [`run`](Self::run), reading before each page the shards whose leases are valid
    /// now ([`super::membership`]). With none valid it still keeps its queued claims alive.
    pub async fn run_leased(
        self,
        assignment: tokio::sync::watch::Receiver<super::Assignment>,
        cancel: CancellationToken,
    ) {
        self.run_with(Some(assignment), cancel).await;
    }

    async fn run_with(
        mut self,
        assignment: Option<tokio::sync::watch::Receiver<super::Assignment>>,
        cancel: CancellationToken,
    ) {
        let mut backoff = None;
        while !cancel.is_cancelled() {
            if let Some(rx) = &assignment {
                let (valid, handover) = {
                    let a = rx.borrow();
                    (a.valid_at(tokio::time::Instant::now()), a.handover())
                };
                self.handover = handover;
                self.set_shards(valid);
            }
            let wait = match self.scan_page().await {
                Ok(r) => {
                    backoff = None;
                    if r.scanned > 0 {
                        tracing::info!(
                            scanned = r.scanned,
                            won = r.won,
                            lost = r.lost,
                            published = r.published,
                            held_back = r.held_back,
                            extended = r.extended,
                            republished = r.republished,
                            malformed = r.malformed,
                            "scanned stale rows"
                        );
                    }
                    if r.more || r.won > 0 {
                        continue;
                    }
                    self.config.idle_poll
                }
                Err(err) => {
                    let delays = backoff.get_or_insert_with(|| {
                        backon::BackoffBuilder::build(
                            self.config.retry.backoff().without_max_times(),
                        )
                    });
                    let delay = delays.next().unwrap_or(self.config.retry.max_delay);
                    tracing::warn!(error = %err, ?delay, "scan failed; backing off");
                    delay
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!(scanner = %self.label, shards = %self.shards, "scanner stopped");
    }
}

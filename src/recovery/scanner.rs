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
use crate::changelog::{Changelog, ChangelogEntry, Claim, ScanRequest, ScannedRow};
use crate::error::StoreResult;
use crate::model::{OwnerToken, ShardRange, Timestamp};
use crate::queue::JobQueue;
use crate::telemetry::metrics::{Backlog, METRICS};
use crate::telemetry::{attr, propagation, span};
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub scanned: usize,
    pub malformed: usize,
    pub won: usize,
    pub lost: usize,
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
}

/// Of the room for waiting claims, the part only fresh rows may use: `1 / FRESH_RESERVE`.
const FRESH_RESERVE: usize = 10;

/// A claim won: the row as the claim left it, its job, and the job's producer span.
type Won = (ChangelogEntry, CleanupJob, tracing::Span);

impl ScanReport {
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
        self.more = o.more;
    }

    fn add_claims(&mut self, c: &Claimed) {
        self.won += c.won;
        self.lost += c.lost;
        self.published += c.published;
    }
}

#[derive(Debug)]
pub struct Scanner {
    changelog: Arc<dyn Changelog>,
    queue: Arc<dyn JobQueue>,
    config: RecoveryConfig,
    shards: ShardRange,
    cursor: Option<String>,
    /// Where the next look at rows that just turned stale starts: the cutoff of the last
    /// look that read them all (or of the last whole pass). `None` before the first page.
    fresh_from: Option<Timestamp>,
    /// The backlog the current pass over the shards has seen so far; published to the
    /// metrics when the pass wraps around.
    pass: Backlog,
    /// The claims this scanner published that may still be waiting for a cleaner, at most
    /// `max_queued_claims`: its own accounting, so that backpressure needs no queue metrics
    /// (the emulator has none), and the claims it keeps alive ([`super::queued`]). A
    /// restarted scanner starts from none.
    queued: QueuedClaims,
}

impl Scanner {
    pub fn new(
        changelog: Arc<dyn Changelog>,
        queue: Arc<dyn JobQueue>,
        config: RecoveryConfig,
        shards: ShardRange,
    ) -> Self {
        Self {
            changelog,
            queue,
            config,
            shards,
            cursor: None,
            fresh_from: None,
            pass: Backlog::default(),
            queued: QueuedClaims::default(),
        }
    }

    /// How many of `wanted` rows this scanner may claim now, keeping at most `max` claims
    /// waiting. When they would exceed it, it first reviews them (one read) and forgets
    /// those taken.
    async fn room_for(&mut self, wanted: usize, max: usize, now: Timestamp) -> StoreResult<usize> {
        if self.config.max_queued_claims == 0 {
            return Ok(wanted);
        }
        if self.queued.len() + wanted > max && !self.queued.is_empty() {
            self.review(now).await?;
        }
        Ok(max.saturating_sub(self.queued.len()).min(wanted))
    }

    async fn review(&mut self, now: Timestamp) -> StoreResult<Review> {
        let review = self
            .queued
            .review(&self.changelog, &self.queue, &self.config, now)
            .await?;
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
    pub fn queued_claims(&self) -> usize {
        self.queued.len()
    }

    /// Scans one page from the cursor, claims what it found, publishes the won claims.
    pub async fn scan_page(&mut self) -> StoreResult<ScanReport> {
        // Each page is a trace of its own; each change it claims starts another (see `claim`).
        let span = tracing::info_span!(parent: None, span::SCAN,
            shards = ?self.shards, rows = tracing::field::Empty, won = tracing::field::Empty);
        let report = self.scan_page_in(&span).instrument(span.clone()).await?;
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
        // Mid-pass, a backlog lies between the cursor and rows that just turned stale:
        // those are read first, from where the last look at them ended.
        if self.cursor.is_some()
            && let Some(from) = self.fresh_from
        {
            let (fresh, counts) = self.scan_fresh(from, cutoff, now, scan).await?;
            report.fresh = fresh.won;
            report.add_claims(&fresh);
            report.scanned += counts.scanned;
            report.malformed += counts.malformed;
            report.held_back += counts.held_back;
        }
        let req = ScanRequest {
            shards: self.shards,
            cutoff,
            stamped_from: None,
            now,
            start_after: self.cursor.clone(),
            limit: self.config.scan_batch,
        };
        let from_start = req.start_after.is_none();
        let page = self.changelog.scan_stale(&req).await?;
        self.cursor = page.resume_after.clone();
        let more = page.resume_after.is_some();
        self.pass.stale_rows += page.rows.len() as u64;
        let entries = self.entries(page.rows, now, &mut report);
        // The fresh scan keeps a reserve of the room, so a backlog cannot fill all of it.
        let max = self.config.max_queued_claims;
        let backlog_room = max - max / FRESH_RESERVE;
        let (claimed, held_back) = self
            .claim_and_publish(entries, backlog_room, cutoff, now, scan)
            .await?;
        report.add_claims(&claimed);
        report.more = more;
        if held_back > 0 {
            report.held_back += held_back;
            // Resume right after the last row claimed now, so the held-back rows are
            // scanned again once cleaners catch up.
            self.cursor = claimed.last_claimed.or(req.start_after.clone());
            report.more = false;
        } else if !more {
            METRICS.set_backlog(&self.shards.to_string(), std::mem::take(&mut self.pass));
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

    /// Reads the rows that turned stale since `from` (stamped in `[from, cutoff)`) and
    /// claims them, with the whole room. Moves `fresh_from` on when it read them all.
    async fn scan_fresh(
        &mut self,
        from: Timestamp,
        cutoff: Timestamp,
        now: Timestamp,
        scan: &tracing::Span,
    ) -> StoreResult<(Claimed, ScanReport)> {
        let req = ScanRequest {
            shards: self.shards,
            cutoff,
            stamped_from: Some(from),
            now,
            start_after: None,
            limit: self.config.scan_batch,
        };
        let page = self.changelog.scan_stale(&req).await?;
        let full = page.resume_after.is_some();
        let mut counts = ScanReport::default();
        let entries = self.entries(page.rows, now, &mut counts);
        let max = self.config.max_queued_claims;
        let (claimed, held_back) = self
            .claim_and_publish(entries, max, cutoff, now, scan)
            .await?;
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
    /// Returns what it claimed and how many rows it held back.
    async fn claim_and_publish(
        &mut self,
        mut entries: Vec<ChangelogEntry>,
        limit: usize,
        cutoff: Timestamp,
        now: Timestamp,
        scan: &tracing::Span,
    ) -> StoreResult<(Claimed, usize)> {
        let room = self.room_for(entries.len(), limit, now).await?;
        let held_back = entries.len() - room;
        if held_back > 0 {
            METRICS.claims_held_back.add(held_back as u64);
            entries.truncate(room);
            tracing::info!(
                held_back,
                queued = self.queued.len(),
                max = self.config.max_queued_claims,
                "claims waiting for cleaners reached max_queued_claims; leaving stale rows for later"
            );
        }
        let mut claimed = Claimed {
            last_claimed: entries.last().map(|e| e.id.as_str().to_owned()),
            ..Claimed::default()
        };
        let claims: Vec<StoreResult<Option<Won>>> = futures::stream::iter(entries)
            .map(|entry| self.claim(entry, cutoff, now, scan))
            .buffer_unordered(self.config.claim_concurrency)
            .collect()
            .await;
        let mut jobs = Vec::with_capacity(claims.len());
        for claim in claims {
            match claim {
                Ok(Some(job)) => jobs.push(job),
                Ok(None) => claimed.lost += 1,
                Err(e) => {
                    METRICS.claims_failed.inc();
                    tracing::warn!(error = %e, "claim failed; the row stays stale and is retried on a later scan");
                    claimed.error.get_or_insert(e);
                }
            }
        }
        claimed.won = jobs.len();
        METRICS.claims_won.add(claimed.won as u64);
        METRICS.claims_lost.add(claimed.lost as u64);
        if jobs.is_empty() {
            return Ok((claimed, held_back));
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
        Ok((claimed, held_back))
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
                let publish = tracing::info_span!(parent: &span, span::PUBLISH,
                    otel.kind = "producer",
                    "tiersweep.change_id" = %entry.id,
                    "messaging.system" = attr::GCP_PUBSUB,
                    "messaging.operation.name" = "create",
                    "messaging.destination.name" = %self.queue.destination(),
                    error.type = tracing::field::Empty,
                    otel.status_code = tracing::field::Empty);
                Some((won, CleanupJob::new(entry.id, claimer), publish))
            }
            Claim::Lost => None,
        })
    }

    /// Scans until cancelled: at once while pages come back full or claims are won,
    /// `idle_poll` apart when nothing is stale, with backoff on errors.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut backoff = None;
        while !cancel.is_cancelled() {
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
        tracing::info!(shards = ?self.shards, "scanner stopped");
    }
}

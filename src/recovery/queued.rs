//! The claims a scanner has published and keeps alive until a cleaner takes them.
//!
//! A claim's lease says how long the row is withheld from scans. A job can wait in the
//! queue longer than that (cleaners slower than scanners, an outage backlog), and a job can
//! be lost (a message past retention, a deleted subscription, an emulator that never
//! redelivers what it handed to a stream that went away). The lease alone cannot tell the
//! two apart: a short one re-claims queued work, a long one leaves lost work for long.
//! So whoever holds a job keeps its claim alive:
//!
//! * the scanner, while the job is queued: it re-reads its waiting claims (one `ReadRows`
//!   over their keys) and moves on the lease of each that still waits;
//! * the cleaner, once it has the job (see [`super::cleaner`]), for as long as it works.
//!
//! A waiting claim is one whose row is still as the scanner left it: same owner, same
//! stamp, same `due_at`. Anything else means a cleaner took it (it removed,
//! deferred or extended the row) or another claim replaced it, and the scanner forgets it
//! — but not the row: a review hands back every claim it forgets whose row is still there
//! ([`Forgotten`]), and the scanner watches it until it could be claimable again (a
//! deferred row at its `due_at`, a released claim when its lease ends). Its id was
//! minted before the scanner's key bound, so nothing else would read it before the next
//! full sweep.
//!
//! A job still waiting `republish_after` after it was published is published again under
//! the same claim: a duplicate, never a second claim, and whichever copy comes second finds
//! the row converged. Up to [`MAX_REPUBLISHES`] times; a claim still waiting
//! `republish_after` after that is let go (its lease ends and the row is claimed again, as
//! before, with a longer lease), so nothing keeps a claim alive forever.
//!
//! If the scanner itself dies, nobody keeps its waiting claims alive: they are claimed
//! again once their leases end. That is the one way queued work is re-claimed.

use std::sync::Arc;

use futures::StreamExt;

use super::RecoveryConfig;
use super::job::CleanupJob;
use crate::changelog::{Changelog, ChangelogEntry, Extension};
use crate::error::StoreResult;
use crate::model::{ChangeId, OwnerToken, Timestamp};
use crate::queue::JobQueue;
use crate::telemetry::metrics::METRICS;
use crate::telemetry::{attr, propagation, span};

/// Times one claim's job is published again before the scanner lets its lease end.
pub const MAX_REPUBLISHES: u32 = 2;

/// One claim whose job was published and, when last seen, not yet taken.
#[derive(Debug, Clone)]
struct Waiting {
    id: ChangeId,
    claim: OwnerToken,
    /// The stamp the row carries while nobody but this scanner touched it.
    stamp: Timestamp,
    due_at: Option<Timestamp>,
    /// The row's claim count, which sets its lease.
    claims: u32,
    /// When its job was first published, and last, in the changelog's time.
    first_published: Timestamp,
    published: Timestamp,
    republished: u32,
}

/// A claim a review stopped keeping whose row may still need recovery: when it could be
/// claimable again is its stamp plus the staleness threshold, or its `due_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forgotten {
    pub id: ChangeId,
    pub stamp: Timestamp,
    pub due_at: Option<Timestamp>,
}

/// What one review of the waiting claims did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Review {
    /// Claims a cleaner took (or another claim replaced), now forgotten.
    pub taken: usize,
    pub extended: usize,
    pub republished: usize,
    /// Claims still waiting `MAX_REPUBLISHES + 1` times `republish_after` after their
    /// first publish (republished, or their republishing failed), let go.
    pub released: usize,
}

#[derive(Debug, Default)]
pub(super) struct QueuedClaims {
    /// Oldest first: claims are appended as they are published.
    waiting: Vec<Waiting>,
    last_review: Option<Timestamp>,
    /// How many claims the last room review freed: the next one starts with a read of
    /// half as many (see [`QueuedClaims::free_room`]).
    last_freed: usize,
    /// The page (by its time) whose room was last reviewed: one room review per page.
    room_reviewed: Option<Timestamp>,
    /// Rows of waiting claims re-read so far.
    rows_read: usize,
}

impl QueuedClaims {
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Rows of waiting claims re-read so far, by reviews and room reviews.
    pub fn rows_read(&self) -> usize {
        self.rows_read
    }

    /// Remembers a claim whose job was just published.
    pub fn published(&mut self, won: &ChangelogEntry, now: Timestamp) {
        self.waiting.push(Waiting {
            id: won.id.clone(),
            claim: won.record.owner.clone(),
            stamp: won.stamp,
            due_at: won.record.due_at,
            claims: won.record.claims,
            first_published: now,
            published: now,
            republished: 0,
        });
    }

    pub fn review_due(&self, config: &RecoveryConfig, now: Timestamp) -> bool {
        !self.waiting.is_empty()
            && self
                .last_review
                .is_none_or(|at| at.saturating_add(config.review_every()) <= now)
    }

    /// Re-reads every waiting claim, forgets those taken, extends the leases of the rest
    /// that are past half their lease, and republishes the jobs that waited too long.
    /// Returns what it did and the claims it forgot whose rows the scanner must come back
    /// to.
    pub async fn review(
        &mut self,
        changelog: &Arc<dyn Changelog>,
        queue: &Arc<dyn JobQueue>,
        config: &RecoveryConfig,
        now: Timestamp,
    ) -> StoreResult<(Review, Vec<Forgotten>)> {
        let mut review = Review::default();
        let mut forgotten = Vec::new();
        self.last_review = Some(now);
        if self.waiting.is_empty() {
            return Ok((review, forgotten));
        }
        review.taken = self
            .forget_taken(changelog, config, 0, self.waiting.len(), &mut forgotten)
            .await?;

        let (keep, released): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| !given_up(w, config, now));
        // One line per review, not per job: when no cleaner takes jobs (cleaners down, a
        // subscription gone) a scanner gives up on a whole room of claims at a time, and
        // a warning per job would be thousands of lines a cycle saying one thing.
        if let Some(first) = released.first() {
            tracing::warn!(jobs = released.len(), first_change = %first.id,
                republished = first.republished,
                "jobs still not taken after being republished; letting their claim leases end so their rows are claimed again (are the cleaners running?)");
        }
        for w in &released {
            tracing::debug!(change = %w.id, claim = %w.claim, republished = w.republished,
                "job given up: its claim lease will end");
            forgotten.push(Forgotten {
                id: w.id.clone(),
                stamp: w.stamp,
                due_at: w.due_at,
            });
        }
        review.released = released.len();
        self.waiting = keep;

        review.republished = self.republish_overdue(queue, config, now).await;
        review.extended = self
            .extend_ending(changelog, config, now, &mut forgotten)
            .await;
        METRICS.claims_extended.add(review.extended as u64);
        METRICS.jobs_republished.add(review.republished as u64);
        Ok((review, forgotten))
    }

    /// Re-reads `count` waiting claims from `from` on (one `ReadRows`) and forgets those a
    /// cleaner took or another claim replaced; those whose rows are still there go to
    /// `forgotten`. Returns how many it forgot.
    async fn forget_taken(
        &mut self,
        changelog: &Arc<dyn Changelog>,
        config: &RecoveryConfig,
        from: usize,
        count: usize,
        forgotten: &mut Vec<Forgotten>,
    ) -> StoreResult<usize> {
        let read = from..from + count;
        let ids: Vec<ChangeId> = self.waiting[read.clone()]
            .iter()
            .map(|w| w.id.clone())
            .collect();
        let rows = config
            .retry
            .run("get_many", || changelog.get_many(&ids))
            .await?;
        self.rows_read += ids.len();
        let mut rows = rows.into_iter();
        let before = self.waiting.len();
        let mut at = 0;
        self.waiting.retain(|w| {
            let i = at;
            at += 1;
            if !read.contains(&i) {
                return true;
            }
            match rows.next().flatten() {
                Some(row) if still_waiting(w, &row) => {
                    !crate::mutants::on(crate::mutants::Mutant::RoomReviewDropsUntaken)
                }
                // Taken and changed (deferred, extended, re-claimed): watched from here on.
                Some(row) => {
                    forgotten.push(Forgotten {
                        id: row.id,
                        stamp: row.stamp,
                        due_at: row.record.due_at,
                    });
                    false
                }
                // Removed (converged), or malformed (reported by scans, never claimed).
                None => false,
            }
        });
        Ok(before - self.waiting.len())
    }

    /// Makes room for up to `want` more claims by re-reading the oldest waiting claims
    /// only: cleaners take jobs roughly in the order they were published, so the taken
    /// ones are mostly at the front. Reads a chunk of half as many as the last room review
    /// freed (at least one), doubling while at least half of a chunk was taken, and stops
    /// at a chunk mostly still waiting or once `want` are freed. A drain keeps the room
    /// full, and a review of every waiting claim per page read the whole room for the few
    /// claims cleaners took since the last page. Claims taken out of order are found by
    /// the next full review. At most once per page (`now`): the page's parts (watched
    /// rows, spans, fresh rows, the round) share what it found. Returns how many it freed
    /// and the rows forgotten (as [`QueuedClaims::review`] does).
    pub async fn free_room(
        &mut self,
        changelog: &Arc<dyn Changelog>,
        config: &RecoveryConfig,
        want: usize,
        now: Timestamp,
    ) -> StoreResult<(usize, Vec<Forgotten>)> {
        let mut forgotten = Vec::new();
        if self.room_reviewed == Some(now) {
            return Ok((0, forgotten));
        }
        self.room_reviewed = Some(now);
        let mut freed = 0;
        let mut from = 0;
        let mut chunk = (self.last_freed / 2).max(1);
        while freed < want && from < self.waiting.len() {
            let count = chunk.min(self.waiting.len() - from);
            let taken = self
                .forget_taken(changelog, config, from, count, &mut forgotten)
                .await?;
            freed += taken;
            // The claims of the chunk still waiting stay where they were.
            from += count - taken;
            if taken * 2 < count {
                break;
            }
            chunk *= 2;
        }
        self.last_freed = freed;
        Ok((freed, forgotten))
    }

    /// Publishes again, in one batch, the jobs that waited `republish_after`. A failed
    /// publish is retried at the next review.
    async fn republish_overdue(
        &mut self,
        queue: &Arc<dyn JobQueue>,
        config: &RecoveryConfig,
        now: Timestamp,
    ) -> usize {
        let overdue: Vec<usize> = (0..self.waiting.len())
            .filter(|&i| {
                let w = &self.waiting[i];
                w.republished < MAX_REPUBLISHES && overdue(w, config, now)
            })
            .collect();
        if overdue.is_empty() {
            return 0;
        }
        let messages = overdue
            .iter()
            .map(|&i| {
                let w = &self.waiting[i];
                // A new trace: the claim's trace ended when its first job was published.
                let topic = queue.destination();
                let span = tracing::info_span!(parent: None, span::PUBLISH,
                    otel.name = %crate::telemetry::messaging_span_name("create", &topic),
                    otel.kind = "producer",
                    "tiersweep.change_id" = %w.id,
                    "tiersweep.republish" = w.republished + 1,
                    "messaging.system" = attr::GCP_PUBSUB,
                    "messaging.operation.name" = "create",
                    "messaging.operation.type" = "create",
                    "messaging.destination.name" = %topic);
                CleanupJob::new(w.id.clone(), w.claim.clone())
                    .to_message(propagation::inject(&span))
            })
            .collect();
        if let Err(e) = queue.publish(messages).await {
            tracing::warn!(error = %e, jobs = overdue.len(),
                "republishing jobs that waited too long failed; retrying at the next review");
            return 0;
        }
        for &i in &overdue {
            let w = &mut self.waiting[i];
            tracing::info!(change = %w.id, claim = %w.claim, waited = ?w.published.age_at(now),
                "job not taken within republish_after; published it again under the same claim");
            w.published = now;
            w.republished += 1;
        }
        overdue.len()
    }

    /// Extends, `claim_concurrency` at a time, the leases past half their length. A claim
    /// whose extension is refused was taken meanwhile and is forgotten, its row handed to
    /// `forgotten` as of `now` (what became of it is unknown until it is read again).
    async fn extend_ending(
        &mut self,
        changelog: &Arc<dyn Changelog>,
        config: &RecoveryConfig,
        now: Timestamp,
        forgotten: &mut Vec<Forgotten>,
    ) -> usize {
        let ending: Vec<(usize, Timestamp)> = self
            .waiting
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                let lease = config.lease_for(w.claims.saturating_sub(1));
                (w.stamp < now.saturating_add(lease / 2)).then(|| (i, now.saturating_add(lease)))
            })
            .collect();
        let results: Vec<(usize, Timestamp, StoreResult<Extension>)> =
            futures::stream::iter(ending)
                .map(|(i, until)| {
                    let w = &self.waiting[i];
                    let (id, claim) = (w.id.clone(), w.claim.clone());
                    async move {
                        let r = config
                            .retry
                            .run("extend_claim", || {
                                changelog.extend_claim(&id, &claim, until)
                            })
                            .await;
                        (i, until, r)
                    }
                })
                .buffer_unordered(config.claim_concurrency)
                .collect()
                .await;
        let mut extended = 0;
        let mut gone = vec![false; self.waiting.len()];
        for (i, until, r) in results {
            match r {
                Ok(Extension::Extended) => {
                    self.waiting[i].stamp = until;
                    extended += 1;
                }
                Ok(Extension::Refused) => {
                    gone[i] = true;
                    forgotten.push(Forgotten {
                        id: self.waiting[i].id.clone(),
                        stamp: now,
                        due_at: None,
                    });
                }
                // Tried again at the next review; the lease has half its length left.
                Err(e) => tracing::warn!(change = %self.waiting[i].id, error = %e,
                    "extending a queued claim's lease failed"),
            }
        }
        let mut gone = gone.into_iter();
        self.waiting.retain(|_| !gone.next().unwrap_or(false));
        extended
    }
}

fn still_waiting(w: &Waiting, row: &ChangelogEntry) -> bool {
    row.record.owner == w.claim
        && row.stamp == w.stamp
        && row.record.due_at == w.due_at
}

/// Past the point where the scanner stops keeping the claim alive, whether or not its
/// republishing succeeded: nothing keeps a claim forever.
fn given_up(w: &Waiting, config: &RecoveryConfig, now: Timestamp) -> bool {
    w.first_published
        .saturating_add(config.republish_after * (MAX_REPUBLISHES + 1))
        <= now
}

fn overdue(w: &Waiting, config: &RecoveryConfig, now: Timestamp) -> bool {
    w.published.saturating_add(config.republish_after) <= now
}

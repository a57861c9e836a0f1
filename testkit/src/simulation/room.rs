//! What the liveness oracle must allow for under backpressure.
//!
//! A scanner keeps at most `max_queued_claims` claims waiting for cleaners. While its
//! round's part of that room (all but a tenth) is taken, the round holds back: a row it
//! would claim next waits for cleaners, rightly. Rows that turn stale during the drain do
//! not: the fresh read and the watch set claim them with the whole room. So a due row's
//! wait is excused from the last moment its scanner's room was full — the round's part
//! for a row of the backlog, the whole room for one recorded since the scanners last
//! started.
//!
//! The room a scanner uses is not visible from outside; the rows it holds claims on are.
//! Counted here every second, they over-count what the scanner believes it holds (a row a
//! cleaner deferred, a claim it let go, a predecessor's claims) — which only excuses more —
//! and under-count it by the rows cleaners removed that the scanner learns of at its next
//! review, which is why an excuse lasts a review period longer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use tiersweep::changelog::{Changelog as _, MemoryChangelog};
use tiersweep::clock::SharedClock;
use tiersweep::model::{ChangeId, ShardRange, Timestamp};

/// When each scanner's room was last seen full.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    /// The round's part of the room (`max - max / 10`) was taken.
    round_full: Option<Timestamp>,
    /// The whole room was taken.
    full: Option<Timestamp>,
}

/// Each scanner's room over time, for scanners that read fixed shard ranges.
pub(super) struct Room {
    ranges: Vec<ShardRange>,
    max: usize,
    round_part: usize,
    seen: Mutex<Vec<Seen>>,
}

impl Room {
    pub(super) fn new(ranges: Vec<ShardRange>, max_queued_claims: usize) -> Arc<Self> {
        let max = max_queued_claims;
        Arc::new(Self {
            seen: Mutex::new(vec![Seen::default(); ranges.len()]),
            ranges,
            max,
            // The scanner's own split (`FRESH_RESERVE`): a tenth is kept for fresh rows.
            round_part: max - max / 10,
        })
    }

    /// Counts each scanner's claimed rows every second, until aborted.
    pub(super) fn watch(
        self: Arc<Self>,
        changelog: Arc<MemoryChangelog>,
        clock: SharedClock,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.look(&changelog, clock.now()).await;
            }
        })
    }

    async fn look(&self, changelog: &MemoryChangelog, now: Timestamp) {
        let mut claimed = vec![0usize; self.ranges.len()];
        for key in changelog.keys() {
            let Ok(id) = ChangeId::parse(&key) else {
                continue;
            };
            let Ok(Some(entry)) = changelog.get(&id).await else {
                continue;
            };
            if !entry.record.owner.is_recovery_claim() {
                continue;
            }
            if let Some(i) = self.scanner_of(&id) {
                claimed[i] += 1;
            }
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for (seen, n) in seen.iter_mut().zip(claimed) {
            if n >= self.round_part {
                seen.round_full = Some(now);
            }
            if n >= self.max {
                seen.full = Some(now);
            }
        }
    }

    fn scanner_of(&self, id: &ChangeId) -> Option<usize> {
        let shard = id.shard();
        self.ranges.iter().position(|r| r.contains(shard))
    }

    /// Until when row `id`'s wait is excused by its scanner's room: the last time the room
    /// it may use was seen full, plus `review` (the scanner learns of freed room at its
    /// next review). A row recorded since the scanners last started (`fresh`) may use the
    /// whole room; one of the backlog only the round's part.
    pub(super) fn excused_until(
        &self,
        id: &ChangeId,
        fresh: bool,
        review: Duration,
    ) -> Option<Timestamp> {
        let i = self.scanner_of(id)?;
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner())[i];
        let full = if fresh { seen.full } else { seen.round_full };
        full.map(|t| t.saturating_add(review))
    }
}

//! What the liveness oracle must allow for under backpressure.
//!
//! A scanner keeps at most `max_queued_claims` claims waiting for cleaners. While its
//! round's part of that room (all but a tenth) is taken, the round holds back: a row it
//! would claim next waits for cleaners, rightly. Rows that turn stale during the drain do
//! not: the fresh read and the watch set claim them with the whole room. So a due row's
//! wait is excused from the last moment the room of its shard's holder was full — the
//! round's part for a row of the backlog, the whole room for one that crashed since the
//! scanners last all started.
//!
//! The room a scanner uses is not visible from outside; the rows under claims it won are.
//! Counted here every second, they over-count what the scanner believes it holds (a row a
//! cleaner deferred, a claim it let go, a predecessor's claims, claims it made in shards
//! it has since let go) — which only excuses more — and under-count it by the rows
//! cleaners removed that the scanner learns of at its next review, which is why an excuse
//! lasts a review period longer. Each second's count is charged to the shards the scanner
//! holds then: its fixed half, or under shard leases its valid assignment, so a row in a
//! shard that changed hands is judged by its new holder's room.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use tiersweep::changelog::{Changelog as _, MemoryChangelog};
use tiersweep::clock::SharedClock;
use tiersweep::model::{ChangeId, SHARD_COUNT, ShardSet, Timestamp};

use super::hooks::WonClaims;

/// When the room of a shard's holder was last seen full.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    /// The round's part of the room (`max - max / 10`) was taken.
    round_full: Option<Timestamp>,
    /// The whole room was taken.
    full: Option<Timestamp>,
}

/// Which shards each scanner holds.
pub(super) enum Holders {
    /// Each reads a fixed set.
    Fixed(Vec<ShardSet>),
    /// Under shard leases: each one's valid assignment now (`None`: not running).
    Leased(Box<dyn Fn() -> Vec<Option<ShardSet>> + Send + Sync>),
}

impl Holders {
    fn now(&self) -> Vec<Option<ShardSet>> {
        match self {
            Self::Fixed(sets) => sets.iter().copied().map(Some).collect(),
            Self::Leased(held) => held(),
        }
    }
}

/// The rooms of each shard's holders over time.
pub(super) struct Room {
    /// Which scanner won each claim.
    won: WonClaims,
    scanners: usize,
    max: usize,
    round_part: usize,
    /// Per shard.
    seen: Mutex<Vec<Seen>>,
}

impl Room {
    pub(super) fn new(scanners: usize, won: WonClaims, max_queued_claims: usize) -> Arc<Self> {
        let max = max_queued_claims;
        Arc::new(Self {
            won,
            scanners,
            seen: Mutex::new(vec![Seen::default(); usize::from(SHARD_COUNT)]),
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
        holders: Holders,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.look(&changelog, clock.now(), &holders).await;
            }
        })
    }

    async fn look(&self, changelog: &MemoryChangelog, now: Timestamp, holders: &Holders) {
        let mut claimed = vec![0usize; self.scanners];
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
            let winner = self
                .won
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&entry.record.owner)
                .copied();
            if let Some(n) = winner.and_then(|i| claimed.get_mut(i)) {
                *n += 1;
            }
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for (held, n) in holders.now().into_iter().zip(claimed) {
            for shard in held.iter().flat_map(|set| set.iter()) {
                let Some(seen) = seen.get_mut(usize::from(shard.0)) else {
                    continue;
                };
                if n >= self.round_part {
                    seen.round_full = Some(now);
                }
                if n >= self.max {
                    seen.full = Some(now);
                }
            }
        }
    }

    /// Until when row `id`'s wait is excused by its shard's holder's room: the last time
    /// the room it may use was seen full, plus `review` (the scanner learns of freed room
    /// at its next review). A row that crashed since the scanners last all started
    /// (`fresh`) may use the whole room; one of the backlog only the round's part.
    pub(super) fn excused_until(
        &self,
        id: &ChangeId,
        fresh: bool,
        review: Duration,
    ) -> Option<Timestamp> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let seen = seen.get(usize::from(id.shard().0))?;
        let full = if fresh { seen.full } else { seen.round_full };
        full.map(|t| t.saturating_add(review))
    }
}

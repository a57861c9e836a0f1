//! Cleaners' deletes paced to what the bucket takes: an adaptive rate, cut when GCS
//! refuses, raised while it does not.
//!
//! A bucket's object writes and deletes are limited (1,000/s for a new bucket, more as it
//! warms up), and the limit is shared by every cleaner of a pool and by the writers.
//! Cleaners that only back off when refused offer more than the limit, are refused about
//! as often as they are admitted, and leave the limit idle while their backoffs run out.
//! Each cleaner process instead keeps its own rate (additive increase, multiplicative
//! decrease, the rule TCP uses to share a link): a transient error of a delete — GCS's
//! `429` and `503` both mean "slower" — cuts the rate by a fifth, at most once a second
//! (one burst of refusals is one signal); every delete that succeeds raises it, so that at
//! full pace it grows by [`GROWTH`] a second: a cut is won back in about five seconds, and
//! a warm bucket's limit, twenty times a new one's, is reached in about a minute. Cleaners
//! sharing a bucket settle near their share of its limit without knowing how many they
//! are, and follow it as it grows.
//!
//! Liveness only: the rate never falls below [`FLOOR_PER_S`], and a delete waits at most
//! its turn. Time is tokio's, so paused-time tests and the simulation pace in virtual time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::{BlobInfo, ByteStream, Declared, ListPage, LtStore, NameRange};
use crate::error::{ErrorKind, StoreResult};
use crate::model::{ObjectMeta, Revision};

/// The rate a cleaner starts at by default (`recovery.gcs_deletes_per_s`), deletes a
/// second: a quarter of a new bucket's limit.
pub const START_PER_S: f64 = 250.0;
/// The lowest rate a cut leaves: a cleaner refused for minutes still makes progress.
pub const FLOOR_PER_S: f64 = 1.0;
/// How much the rate grows, as a fraction of itself, each second it is used in full
/// without a refusal.
pub const GROWTH: f64 = 0.05;
/// What a cut leaves of the rate.
const DECREASE: f64 = 0.8;
/// Refusals within this long of a cut are the same signal.
const CUT_EVERY: Duration = Duration::from_secs(1);

/// An adaptive rate: see the module documentation.
#[derive(Debug)]
pub struct Pace {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    per_s: f64,
    /// The earliest time the next call may go.
    next: Instant,
    last_cut: Option<Instant>,
}

impl Pace {
    /// A pace starting at `per_s` calls a second.
    pub fn starting_at(per_s: f64) -> Self {
        Self {
            state: Mutex::new(State {
                per_s: per_s.max(FLOOR_PER_S),
                next: Instant::now(),
                last_cut: None,
            }),
        }
    }

    /// The current rate, calls a second.
    #[cfg(test)]
    pub fn per_s(&self) -> f64 {
        self.lock().per_s
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for this call's turn. A turn taken and then abandoned (the caller cancelled)
    /// is a slot left unused, nothing more.
    pub async fn turn(&self) {
        let at = {
            let mut s = self.lock();
            let now = Instant::now();
            let at = s.next.max(now);
            s.next = at + Duration::from_secs_f64(1.0 / s.per_s);
            at
        };
        tokio::time::sleep_until(at).await;
    }

    /// Learns from a call's outcome: a transient error cuts the rate, success raises it.
    pub fn learn<T>(&self, outcome: &StoreResult<T>) {
        let mut s = self.lock();
        match outcome {
            // `per_s` successes a second at full pace, each adding GROWTH.
            Ok(_) => s.per_s += GROWTH,
            Err(e) if e.kind == ErrorKind::Transient => {
                let now = Instant::now();
                if s.last_cut.is_some_and(|t| now < t + CUT_EVERY) {
                    return;
                }
                s.last_cut = Some(now);
                let floor = if crate::mutants::on(crate::mutants::Mutant::PaceWithoutFloor) {
                    0.0
                } else {
                    FLOOR_PER_S
                };
                s.per_s = (s.per_s * DECREASE).max(floor);
                if s.per_s < FLOOR_PER_S {
                    // No rate: the next turn never comes.
                    s.next = now + Duration::from_secs(u64::from(u32::MAX));
                }
                tracing::info!(
                    per_s = s.per_s.round(),
                    error = %e,
                    "GCS refused a delete; pacing this cleaner's deletes slower"
                );
            }
            Err(_) => {}
        }
    }
}

/// An LT store whose deletes go at a [`Pace`]; everything else passes through.
#[derive(Debug)]
pub struct PacedLt {
    inner: Arc<dyn LtStore>,
    pace: Pace,
}

impl PacedLt {
    /// `inner`, its deletes starting at `per_s` a second.
    pub fn new(inner: Arc<dyn LtStore>, per_s: f64) -> Self {
        Self {
            inner,
            pace: Pace::starting_at(per_s),
        }
    }
}

#[async_trait]
impl LtStore for PacedLt {
    async fn put_with_meta(
        &self,
        rev: &Revision,
        bytes: Bytes,
        meta: &ObjectMeta,
    ) -> StoreResult<()> {
        self.inner.put_with_meta(rev, bytes, meta).await
    }
    async fn put_stream(
        &self,
        rev: &Revision,
        body: ByteStream,
        meta: &ObjectMeta,
    ) -> StoreResult<u64> {
        self.inner.put_stream(rev, body, meta).await
    }
    async fn put_stream_sized(
        &self,
        rev: &Revision,
        body: ByteStream,
        declared: Declared,
        meta: &ObjectMeta,
    ) -> StoreResult<u64> {
        self.inner.put_stream_sized(rev, body, declared, meta).await
    }
    async fn get(&self, rev: &Revision) -> StoreResult<Option<Bytes>> {
        self.inner.get(rev).await
    }
    async fn get_stream(&self, rev: &Revision) -> StoreResult<Option<ByteStream>> {
        self.inner.get_stream(rev).await
    }
    async fn stat(&self, rev: &Revision) -> StoreResult<Option<BlobInfo>> {
        self.inner.stat(rev).await
    }
    async fn exists(&self, rev: &Revision) -> StoreResult<bool> {
        self.inner.exists(rev).await
    }
    async fn delete(&self, rev: &Revision) -> StoreResult<()> {
        self.pace.turn().await;
        let outcome = self.inner.delete(rev).await;
        self.pace.learn(&outcome);
        outcome
    }
    async fn list(&self, range: &NameRange, page_token: Option<String>) -> StoreResult<ListPage> {
        self.inner.list(range, page_token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{StoreError, StoreKind};

    fn refused() -> StoreResult<()> {
        Err(StoreError::new(
            StoreKind::Lt,
            "delete",
            "bucket/blob",
            ErrorKind::Transient,
            "429 Too Many Requests",
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn turns_are_spaced_at_the_rate() {
        let pace = Pace::starting_at(100.0);
        let start = Instant::now();
        for _ in 0..101 {
            pace.turn().await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(1), "100 a second");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_refusals_is_one_cut_and_the_floor_holds() {
        let pace = Pace::starting_at(100.0);
        for _ in 0..10 {
            pace.learn(&refused());
        }
        assert_eq!(pace.per_s(), 80.0, "one cut for one burst");
        for _ in 0..100 {
            tokio::time::advance(CUT_EVERY).await;
            pace.learn(&refused());
        }
        assert_eq!(pace.per_s(), FLOOR_PER_S, "never below the floor");
        // A permanent error says nothing about the rate.
        tokio::time::advance(CUT_EVERY).await;
        pace.learn::<()>(&Err(StoreError::new(
            StoreKind::Lt,
            "delete",
            "bucket/blob",
            ErrorKind::Permanent,
            "403",
        )));
        assert_eq!(pace.per_s(), FLOOR_PER_S);
    }

    #[tokio::test(start_paused = true)]
    async fn successes_raise_the_rate_by_its_growth_a_second_at_full_pace() {
        let pace = Pace::starting_at(100.0);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            pace.turn().await;
            pace.learn(&Ok(()));
        }
        // 5 % a second, compounded over 10 s: 100 × 1.05^10 ≈ 163.
        let now = pace.per_s();
        assert!((155.0..=170.0).contains(&now), "{now}");
    }
}

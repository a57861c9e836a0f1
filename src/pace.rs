//! An adaptive client-side rate for a service that refuses what it cannot take: cut when
//! the service refuses, raised while it does not and the rate is what holds the caller
//! back.
//!
//! Two of recovery's services are shared by every worker of a pool and by the writers, and
//! limit what they take: a GCS bucket its object writes and deletes (1,000/s for a new
//! bucket, more as it warms up), a Bigtable cluster its rows (about 10,000/s per node).
//! Workers that only back off when refused offer more than the limit, are refused about as
//! often as they are admitted, leave the limit idle while their backoffs run out — and
//! crowd out the writers, whose calls are refused with theirs. Each worker process instead
//! keeps a rate per service (additive increase, multiplicative decrease, the rule TCP uses
//! to share a link): a transient error (`429`, `503`, `UNAVAILABLE`, `RESOURCE_EXHAUSTED`
//! all mean "slower") cuts the rate by a fifth, at most once a second, so one burst of
//! refusals is one signal; each unit that succeeds after waiting for its turn raises it, so
//! that at full pace it grows by [`GROWTH`] a second. A success that did not wait says
//! nothing about whether more would be taken, so a rate the caller does not use stays where
//! it is (as TCP validates its window, RFC 7661): after a quiet hour the first refusal
//! still finds the rate near the limit, not far above it.
//!
//! Units are the service's: a delete, a Bigtable row. A call takes one unit's turn before
//! it goes and is charged the rest of its units when it returns ([`Pace::run`]), because
//! a scan learns how many rows it read only then.
//!
//! Liveness only: the rate never falls below [`FLOOR_PER_S`], and a call waits at most its
//! turn (plus the debt of the calls before it). Time is tokio's, so paused-time tests and
//! the simulation pace in virtual time. The design: docs/design/pacing.md.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{ErrorKind, StoreResult};
use crate::mutants::{self, Mutant};

/// The rate a recovery worker's Bigtable calls start at by default
/// (`recovery.bigtable_rows_per_s`), rows a second: a fifth of a node's budget, so that a
/// small pool starts under a small cluster's and grows into what it leaves.
pub const BIGTABLE_START_PER_S: f64 = 2_000.0;
/// The lowest rate a cut leaves: a worker refused for minutes still makes progress.
pub const FLOOR_PER_S: f64 = 1.0;
/// How much the rate grows, as a fraction of itself, each second it is used in full
/// without a refusal.
pub const GROWTH: f64 = 0.05;
/// What a cut leaves of the rate.
const DECREASE: f64 = 0.8;
/// Refusals within this long of a cut are the same signal.
const CUT_EVERY: Duration = Duration::from_secs(1);

/// Which service a pace is for: named in its log lines, and the mutation a mutant makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paced {
    /// A cleaner's GCS deletes.
    GcsDeletes,
    /// A recovery worker's Bigtable rows (changelog and HV calls).
    BigtableRows,
}

impl Paced {
    fn floor(self) -> f64 {
        let mutant = match self {
            Paced::GcsDeletes => Mutant::PaceWithoutFloor,
            Paced::BigtableRows => Mutant::BigtablePaceWithoutFloor,
        };
        if mutants::on(mutant) { 0.0 } else { FLOOR_PER_S }
    }

    /// Whether the rate starts by doubling each second it is used in full, until the first
    /// refusal (TCP's slow start). A Bigtable cluster's rows per worker depend on its nodes
    /// and the pool's size, so a start rate is a guess that may be far below what a drain
    /// needs: growing 5 % a second from it would cost a burst of work tens of seconds. A
    /// bucket's limit for a new bucket is known, and the GCS start is set from it.
    fn slow_start(self) -> bool {
        self == Paced::BigtableRows
    }

    fn refused(self) -> &'static str {
        match self {
            Paced::GcsDeletes => "GCS refused a delete; pacing this cleaner's deletes slower",
            Paced::BigtableRows => {
                "Bigtable refused a call; pacing this worker's Bigtable calls slower"
            }
        }
    }
}

/// An adaptive rate: see the module documentation.
#[derive(Debug)]
pub struct Pace {
    paced: Paced,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    per_s: f64,
    /// The earliest time the next call may go.
    next: Instant,
    last_cut: Option<Instant>,
    /// Doubling while used in full, until the first refusal ([`Paced::slow_start`]).
    slow_start: bool,
}

/// A call's turn, taken by [`Pace::turn`] and handed back to [`Pace::learn`].
#[derive(Debug, Clone, Copy)]
struct Turn {
    /// The call waited for its turn: the rate, not the caller, set its time.
    waited: bool,
}

impl Pace {
    /// A pace for `paced` starting at `per_s` units a second.
    pub fn starting_at(paced: Paced, per_s: f64) -> Self {
        Self {
            paced,
            state: Mutex::new(State {
                per_s: per_s.max(FLOOR_PER_S),
                next: Instant::now(),
                last_cut: None,
                slow_start: paced.slow_start(),
            }),
        }
    }

    /// The current rate, units a second.
    #[cfg(test)]
    pub fn per_s(&self) -> f64 {
        self.lock().per_s
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for one unit's turn. A turn taken and then abandoned (the caller cancelled)
    /// is a slot left unused, nothing more.
    ///
    /// A turn that is due already is taken without touching the timer: tokio rounds every
    /// sleep up to its next millisecond tick, a deadline of now included, so sleeping until
    /// a turn that has come would add a millisecond and a timer wake-up to every call a
    /// pace does not hold back — most calls, most of the time.
    async fn turn(&self) -> Turn {
        let (at, now) = {
            let mut s = self.lock();
            let now = Instant::now();
            let at = s.next.max(now);
            s.next = at + Duration::from_secs_f64(1.0 / s.per_s);
            (at, now)
        };
        let waited = at > now;
        if waited {
            tokio::time::sleep_until(at).await;
        }
        Turn { waited }
    }

    /// Charges `units` more to a call that has had its turn (a batch's rows beyond its
    /// first): the calls after it wait for them.
    fn charge(&self, units: usize) {
        if units == 0 {
            return;
        }
        let mut s = self.lock();
        let debt = Duration::from_secs_f64(units as f64 / s.per_s);
        let now = Instant::now();
        s.next = s.next.max(now) + debt;
    }

    /// Learns from a call's outcome: a transient error cuts the rate; success, for a call
    /// that waited its turn, raises it by [`GROWTH`] for each of the call's `units`.
    fn learn<T>(&self, turn: Turn, units: usize, outcome: &StoreResult<T>) {
        let mut s = self.lock();
        match outcome {
            // `per_s` units a second at full pace, each adding GROWTH (in slow start ln 2,
            // which doubles the rate each second).
            Ok(_) if turn.waited => {
                let growth = if s.slow_start { std::f64::consts::LN_2 } else { GROWTH };
                s.per_s += growth * units.max(1) as f64;
            }
            Ok(_) => {}
            Err(e) if e.kind == ErrorKind::Transient => {
                let now = Instant::now();
                if s.last_cut.is_some_and(|t| now < t + CUT_EVERY) {
                    return;
                }
                s.last_cut = Some(now);
                s.slow_start = false;
                s.per_s = (s.per_s * DECREASE).max(self.paced.floor());
                if s.per_s < FLOOR_PER_S {
                    // No rate: the next turn never comes.
                    s.next = now + Duration::from_secs(u64::from(u32::MAX));
                }
                tracing::info!(per_s = s.per_s.round(), error = %e, "{}", self.paced.refused());
            }
            Err(_) => {}
        }
    }

    /// Runs `call` at this pace, charged `units(&outcome)` units in all (at least the one
    /// its turn took).
    pub async fn run<T, F>(&self, call: F, units: impl FnOnce(&StoreResult<T>) -> usize) -> StoreResult<T>
    where
        F: std::future::Future<Output = StoreResult<T>>,
    {
        let turn = self.turn().await;
        let outcome = call.await;
        let units = units(&outcome).max(1);
        self.charge(units - 1);
        self.learn(turn, units, &outcome);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{StoreError, StoreKind};
    use std::future::Future;

    fn refused() -> StoreResult<()> {
        Err(StoreError::new(
            StoreKind::Lt,
            "delete",
            "bucket/blob",
            ErrorKind::Transient,
            "429 Too Many Requests",
        ))
    }

    fn pace(per_s: f64) -> Pace {
        Pace::starting_at(Paced::GcsDeletes, per_s)
    }

    #[tokio::test(start_paused = true)]
    async fn turns_are_spaced_at_the_rate() {
        let pace = pace(100.0);
        let start = Instant::now();
        for _ in 0..101 {
            let _ = pace.turn().await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(1), "100 a second");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_charged_after_its_call_delays_the_calls_after_it() {
        let pace = pace(100.0);
        let start = Instant::now();
        // One call of 50 units: its own turn now, the next call's half a second on.
        pace.run(async { Ok(()) }, |_| 50).await.unwrap();
        let _ = pace.turn().await;
        assert_eq!(start.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_refusals_is_one_cut_and_the_floor_holds() {
        let pace = pace(100.0);
        let turn = Turn { waited: true };
        for _ in 0..10 {
            pace.learn(turn, 1, &refused());
        }
        assert_eq!(pace.per_s(), 80.0, "one cut for one burst");
        for _ in 0..100 {
            tokio::time::advance(CUT_EVERY).await;
            pace.learn(turn, 1, &refused());
        }
        assert_eq!(pace.per_s(), FLOOR_PER_S, "never below the floor");
        // A permanent error says nothing about the rate.
        tokio::time::advance(CUT_EVERY).await;
        pace.learn::<()>(
            turn,
            1,
            &Err(StoreError::new(
                StoreKind::Lt,
                "delete",
                "bucket/blob",
                ErrorKind::Permanent,
                "403",
            )),
        );
        assert_eq!(pace.per_s(), FLOOR_PER_S);
    }

    #[tokio::test(start_paused = true)]
    async fn successes_raise_the_rate_by_its_growth_a_second_at_full_pace() {
        let pace = pace(100.0);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            pace.run(async { Ok(()) }, |_| 1).await.unwrap();
        }
        // 5 % a second, compounded over 10 s: 100 × 1.05^10 ≈ 163.
        let now = pace.per_s();
        assert!((155.0..=170.0).contains(&now), "{now}");
    }

    /// A Bigtable pace doubles each second it is used in full until the first refusal,
    /// then grows by its growth.
    #[tokio::test(start_paused = true)]
    async fn a_bigtable_pace_starts_slow_until_refused() {
        let pace = Pace::starting_at(Paced::BigtableRows, 100.0);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            pace.run(async { Ok(()) }, |_| 1).await.unwrap();
        }
        // Doubling a second: 100 × 2^3 = 800.
        let now = pace.per_s();
        assert!((700.0..=900.0).contains(&now), "{now}");
        pace.learn(Turn { waited: true }, 1, &refused());
        let cut = pace.per_s();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(1) {
            pace.run(async { Ok(()) }, |_| 1).await.unwrap();
        }
        let after = pace.per_s();
        assert!(
            after > cut && after <= cut * 1.06,
            "after a cut, 5 % a second: {cut} -> {after}"
        );
    }

    /// A turn that has come is taken at once, on the first poll, not at the timer's next
    /// tick (a millisecond later in real time, with a wake-up).
    #[tokio::test]
    async fn a_turn_that_has_come_is_taken_without_the_timer() {
        // A hundred seconds between turns: the second is not due however late this thread
        // runs, so the verdict does not rest on the machine's speed.
        let pace = pace(0.01);
        let mut turn = std::pin::pin!(pace.turn());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match turn.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(t) => assert!(!t.waited),
            std::task::Poll::Pending => panic!("a due turn waited for the timer"),
        }
        // The next one is a hundred seconds away: that one waits.
        let mut next = std::pin::pin!(pace.turn());
        assert!(next.as_mut().poll(&mut cx).is_pending());
    }

    /// A caller that never waits for its turn is not held back by the rate, so its
    /// successes say nothing about a higher one: the rate stays where it was.
    #[tokio::test(start_paused = true)]
    async fn a_rate_the_caller_does_not_use_does_not_grow() {
        let pace = pace(100.0);
        for _ in 0..1_000 {
            tokio::time::advance(Duration::from_millis(50)).await;
            pace.run(async { Ok(()) }, |_| 1).await.unwrap();
        }
        assert_eq!(pace.per_s(), 100.0);
    }
}

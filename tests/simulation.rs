//! The whole pipeline under the fault model, schedule after schedule (see
//! `tiersweep_testkit::simulation`).
//!
//! `TIERSWEEP_SCHEDULES=N` runs N schedules (10,000 by default, what CI runs) from
//! consecutive seeds starting at `TIERSWEEP_SEED_BASE` (random by default) and prints the
//! rate, over one thread per core (`TIERSWEEP_SIM_THREADS=N` for another number);
//! `TIERSWEEP_SEED=<seed>` replays one. A failure prints its seed, the violation and
//! the shrunk schedule. `TIERSWEEP_SIM_LOG=<filter>` (e.g.
//! `tiersweep::recovery::scanner=debug`) makes the replay print the schedule and the run's
//! log, stamped with simulated seconds, instead of judging it; a schedule's outcome can
//! differ between replays (tokio's `select!` order is not seeded).

use tiersweep_testkit::simulation::plan::{Plan, Shape};
use tiersweep_testkit::simulation::{run, shrink};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

fn check(seed: u64) {
    let shape = Shape::default();
    let plan = Plan::generate(seed, shape);
    if let Err(violation) = run(&plan, shape) {
        let small = shrink(&plan, shape, 3);
        panic!(
            "seed {seed} failed (replay with TIERSWEEP_SEED={seed}): {violation}\nshrunk schedule ({} of {} events):\n{:#?}",
            small.events.len(),
            plan.events.len(),
            small.events
        );
    }
}

#[test]
fn the_pipeline_keeps_every_invariant_under_the_fault_model() {
    let n = env_u64("TIERSWEEP_SCHEDULES").unwrap_or(10_000);
    let base = env_u64("TIERSWEEP_SEED_BASE").unwrap_or_else(rand::random);
    // Each schedule runs on a runtime of its own: the seeds are shared out among threads,
    // one per core unless `TIERSWEEP_SIM_THREADS` says otherwise.
    let threads = env_u64("TIERSWEEP_SIM_THREADS")
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .map(|p| p.get() as u64)
        })
        .unwrap_or(1)
        .clamp(1, n.max(1));
    let start = std::time::Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                for i in (t..n).step_by(threads as usize) {
                    let began = std::time::Instant::now();
                    check(base.wrapping_add(i));
                    if began.elapsed() > std::time::Duration::from_millis(500) {
                        eprintln!("seed {} took {:?}", base.wrapping_add(i), began.elapsed());
                    }
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{n} schedules, 0 violations, in {secs:.1} s ({:.0} schedules/s over {threads} threads); seeds {base}..{}",
        n as f64 / secs,
        base.wrapping_add(n)
    );
}

#[test]
fn replay_seed_from_env() {
    // Without a seed, a fixed one, so this test still exercises the replay path.
    let seed = env_u64("TIERSWEEP_SEED").unwrap_or(11);
    match std::env::var("TIERSWEEP_SIM_LOG") {
        Ok(filter) => trace(seed, &filter),
        Err(_) => check(seed),
    }
}

/// Replays `seed` with its log on stderr, to see why a schedule failed.
fn trace(seed: u64, filter: &str) {
    /// Seconds of simulated time since the first line.
    struct Simulated;
    impl tracing_subscriber::fmt::time::FormatTime for Simulated {
        fn format_time(
            &self,
            w: &mut tracing_subscriber::fmt::format::Writer<'_>,
        ) -> std::fmt::Result {
            static START: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
            let start = START.get_or_init(tokio::time::Instant::now);
            write!(w, "{:>9.3}", start.elapsed().as_secs_f64())
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_timer(Simulated)
        .with_test_writer()
        .try_init();
    let plan = Plan::generate(seed, Shape::default());
    eprintln!("{plan:#?}");
    eprintln!("outcome: {:?}", run(&plan, Shape::default()));
}

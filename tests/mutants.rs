//! Mutation score of the simulation: every known-bad protocol variant in
//! `tiersweep::mutants` must be caught. Prints "mutant → schedules until caught".
//!
//! `TIERSWEEP_MUTANT_BUDGET` bounds the schedules tried per mutant (15,000 by default: the
//! slowest to catch, `FreshReadWithoutReserve` and `FenceAfterRead`, take one or two
//! thousand schedules, so they survive the budget with odds of about e^-8 or less);
//! `TIERSWEEP_SEED_BASE` picks the first seed (random by default); `TIERSWEEP_MUTANT=<name>`
//! hunts that one mutant only. The mutants are shared among one thread per core
//! (`TIERSWEEP_SIM_THREADS=N` for another number).

use tiersweep::mutants::{Mutant, activate};
use tiersweep_testkit::simulation::plan::{Plan, Shape};
use tiersweep_testkit::simulation::run;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// The first schedule that catches `m`, as (schedules tried, seed, violation).
fn hunt(m: Mutant, base: u64, budget: u64) -> Option<(u64, u64, String)> {
    let shape = Shape::default();
    activate(Some(m));
    let found = (0..budget).find_map(|i| {
        let seed = base.wrapping_add(i);
        run(&Plan::generate(seed, shape), shape)
            .err()
            .map(|v| (i + 1, seed, v))
    });
    activate(None);
    found
}

#[test]
fn the_simulation_catches_every_mutant() {
    let budget = env_u64("TIERSWEEP_MUTANT_BUDGET").unwrap_or(15_000);
    let base = env_u64("TIERSWEEP_SEED_BASE").unwrap_or_else(rand::random);
    let only = std::env::var("TIERSWEEP_MUTANT").ok();
    let mutants: Vec<Mutant> = Mutant::ALL
        .into_iter()
        .filter(|m| only.as_deref().is_none_or(|name| name == format!("{m:?}")))
        .collect();
    // One hunt per thread at a time (the mutant switch is per thread), one thread per core
    // unless `TIERSWEEP_SIM_THREADS` says otherwise.
    let threads = env_u64("TIERSWEEP_SIM_THREADS")
        .map(|n| n as usize)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .clamp(1, mutants.len().max(1));
    eprintln!(
        "mutant → schedules until caught (seeds from {base}, budget {budget}, {threads} threads)"
    );
    let next = std::sync::atomic::AtomicUsize::new(0);
    let survivors = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while let Some(&m) =
                    mutants.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    match hunt(m, base, budget) {
                        Some((tries, seed, violation)) => {
                            let first = violation.lines().next().unwrap_or_default();
                            let first: String = first.chars().take(140).collect();
                            eprintln!("{m:?} → {tries} (seed {seed}: {first})");
                        }
                        None => {
                            eprintln!("{m:?} → SURVIVED {budget} schedules");
                            survivors.lock().unwrap_or_else(|e| e.into_inner()).push(m);
                        }
                    }
                }
            });
        }
    });
    let survivors = survivors.into_inner().unwrap_or_else(|e| e.into_inner());
    assert!(
        survivors.is_empty(),
        "mutants the simulation did not catch: {survivors:?}"
    );
}

/// The mutant switch itself: off unless activated, and per thread.
#[test]
fn mutants_are_off_by_default() {
    for m in Mutant::ALL {
        assert!(!tiersweep::mutants::on(m));
    }
    activate(Some(Mutant::NoHvFence));
    assert!(tiersweep::mutants::on(Mutant::NoHvFence));
    assert!(
        !std::thread::spawn(|| tiersweep::mutants::on(Mutant::NoHvFence))
            .join()
            .unwrap()
    );
    activate(None);
    assert!(!tiersweep::mutants::on(Mutant::NoHvFence));
}

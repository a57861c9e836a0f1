//! A deterministic-schedule simulation of the whole pipeline: writers, scanners, cleaners
//! and the queue between them, on the in-memory stores, in tokio's paused time.
//!
//! One seed makes one [`Plan`]: a list of events (writes with their faults, reads, sleeps,
//! scanner restarts and outages, cleaners killed or stalled mid-job, forged jobs, queue
//! faults). Playing it runs every process as its own task on one current-thread runtime;
//! virtual time jumps to the next timer whenever every task waits, so a day-long suspend
//! costs nothing. The invariants are checked after every event and at quiescence:
//!
//! * I1: no tombstone points at a missing blob; every object reads back as a value some
//!   write could have left (the last acknowledged one, or a later one with unknown outcome);
//! * I2: at quiescence no orphan blob and no changelog row is left in scope;
//! * I3/I4: recovery never touches an object outside its prefix, and a write that met no
//!   fault is never taken over (fenced or left without its guard);
//! * I5: every job a cleaner dead-letters carries its reason;
//! * a read never reports a dangling tombstone.
//!
//! Why tokio's paused time and not turmoil or madsim: the system under test is tokio code
//! talking to stores through traits, and the faults worth injecting sit at those traits
//! (a call that lands late, lands after its error, or never returns), not in a network
//! stack. Paused time gives virtual time to the real scanner, cleaner and writer code
//! unchanged; turmoil simulates TCP hosts we do not have here, and madsim would replace
//! tokio under every dependency. The price: tokio does not let a stable build seed its
//! scheduler's choices (`select!` branch order), and ids are random UUIDs, so a seed
//! replays its schedule exactly but concurrent tasks may interleave differently; a failing
//! seed reproduces on most replays, and [`shrink`] re-tries each candidate.

pub mod history;
pub mod hooks;
pub mod plan;
pub mod queue;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::history::{Ending, History};
use self::hooks::{ClaimWitness, Freeze, Jitter, ScopeWitness};
use self::plan::{Event, Forgery, Plan, Process, Shape, Value};
use self::queue::ChaosQueue;
use crate::config::ProtocolConfig;
use crate::model::{ChangeId, ObjectPath, OwnerToken, ShardRange};
use crate::queue::{JobQueue, Message};
use crate::recovery::{Cleaner, CleanupJob, RecoveryConfig, Scanner};
use crate::stores::Stores;
use crate::testing::crash::{INLINE_THRESHOLD, test_recovery_config, test_writer_config};
use crate::testing::faults::{Fault, Faults, Rule};
use crate::testing::{MemoryStores, SkewedClock, intercept, invariants};
use crate::writer::{ReadOutcome, TieredStorage, WriteError};

/// The prefix the cleaners are confined to.
const PREFIX: &str = "sim";
const ACK_DEADLINE: Duration = Duration::from_secs(10);
const JITTER: Duration = Duration::from_millis(20);

/// Plays `plan` on a fresh paused-time runtime. `Err` describes the first violation.
pub fn run(plan: &Plan, shape: Shape) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(World::new(plan.seed, shape, plan.recovery_settle).play(plan))
}

/// Drops events from a failing plan while it still fails (each candidate tried `tries`
/// times, since interleavings may differ between replays); returns the smallest found.
pub fn shrink(plan: &Plan, shape: Shape, tries: usize) -> Plan {
    let mut best = plan.clone();
    let mut i = 0;
    while i < best.events.len() {
        let candidate = best.without(i);
        if (0..tries).any(|_| run(&candidate, shape).is_err()) {
            best = candidate;
        } else {
            i += 1;
        }
    }
    best
}

/// The writers' configuration: the test one, with an upload settle longer than the
/// longest upload straggler the plan makes for a writer that lives to see it (58 s; the
/// minutes-long ones of [`plan::MAX_UPLOAD_STRAGGLE`] are a dead writer's, which recovery's
/// settle covers), as production's must be longer than any
/// upload can trail its error.
fn sim_writer_config(protocol: ProtocolConfig) -> crate::writer::WriterConfig {
    let mut config = test_writer_config(protocol);
    config.upload_settle = Duration::from_secs(90);
    config
}

fn sim_stores() -> MemoryStores {
    MemoryStores::new()
}

struct Write {
    path: ObjectPath,
    value: Option<Bytes>,
    /// It met no fault: it must not be taken over.
    healthy: bool,
    faults: Arc<Faults>,
    start: Instant,
    task: JoinHandle<(Result<(), WriteError>, Instant)>,
}

/// Shared switches the driver flips and the process supervisors obey.
#[derive(Debug, Default)]
struct Control {
    outage_until: Mutex<Option<Instant>>,
    outage: Notify,
    restart_scanner: Vec<Notify>,
    scanner_rules: Vec<Mutex<Vec<Rule>>>,
    cleaner_rules: Vec<Mutex<Vec<Rule>>>,
    restart_cleaner: Vec<Notify>,
}

struct World {
    shape: Shape,
    mem: MemoryStores,
    protocol: ProtocolConfig,
    recovery: RecoveryConfig,
    queue: ChaosQueue,
    control: Arc<Control>,
    paths: Vec<ObjectPath>,
    history: History,
    writes: Vec<Write>,
    reads: Vec<(ObjectPath, JoinHandle<Option<ReadOutcome>>)>,
    trespasses: Arc<Mutex<Vec<ObjectPath>>>,
    /// Claims won on rows that were not stale when the claim landed (I4).
    stale_claims: Arc<Mutex<Vec<String>>>,
    claims_seen: HashMap<ChangeId, Vec<OwnerToken>>,
    /// Takeovers of writes that met no fault (I4).
    precision: Vec<String>,
    processes: Vec<JoinHandle<()>>,
    /// Each cleaner host's wall clock (stepped by [`Event::SkewCleaner`]).
    cleaner_clocks: Vec<Arc<SkewedClock>>,
    next_seed: u64,
}

impl World {
    fn new(seed: u64, shape: Shape, recovery_settle: Duration) -> Self {
        let protocol = ProtocolConfig::default();
        let mut recovery = test_recovery_config(protocol);
        recovery.object_prefix = PREFIX.to_owned();
        recovery.idle_poll = Duration::from_secs(20);
        recovery.cleaner_concurrency = 4;
        recovery.max_delivery_attempts = 5;
        recovery.upload_settle = recovery_settle;
        let mut paths: Vec<ObjectPath> = (0..shape.objects)
            .map(|i| ObjectPath::new(format!("{PREFIX}/{seed}/{i}")))
            .collect::<Result<_, _>>()
            .expect("simulation object paths are valid");
        // Outside the prefix: a sibling a string match would admit, and another tree.
        for p in [format!("{PREFIX}x/{seed}/0"), format!("other/{seed}/0")] {
            paths.push(ObjectPath::new(p).expect("simulation object paths are valid"));
        }
        let control = Control {
            restart_scanner: (0..shape.scanners).map(|_| Notify::new()).collect(),
            scanner_rules: (0..shape.scanners)
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            cleaner_rules: (0..shape.cleaners)
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            restart_cleaner: (0..shape.cleaners).map(|_| Notify::new()).collect(),
            ..Control::default()
        };
        Self {
            shape,
            mem: sim_stores(),
            protocol,
            history: History::new(paths.clone(), plan::MAX_STRAGGLE),
            paths,
            recovery: recovery.clone(),
            queue: ChaosQueue::new(seed, ACK_DEADLINE, recovery.max_delivery_attempts),
            control: Arc::new(control),
            writes: Vec::new(),
            reads: Vec::new(),
            trespasses: Arc::default(),
            stale_claims: Arc::default(),
            claims_seen: HashMap::new(),
            precision: Vec::new(),
            processes: Vec::new(),
            cleaner_clocks: Vec::new(),
            next_seed: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        }
    }

    fn sub_seed(&mut self) -> u64 {
        self.next_seed = self.next_seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.next_seed
    }

    fn in_scope(&self, path: &ObjectPath) -> bool {
        self.paths[..self.shape.objects].contains(path)
    }

    async fn play(mut self, plan: &Plan) -> Result<(), String> {
        self.start_processes();
        for (step, event) in plan.events.iter().enumerate() {
            self.apply(event).await;
            self.settle(false).await;
            self.check_step()
                .await
                .map_err(|e| format!("after event {step} ({event:?}): {e}"))?;
        }
        self.quiesce().await?;
        for p in &self.processes {
            p.abort();
        }
        Ok(())
    }

    fn start_processes(&mut self) {
        for i in 0..self.shape.scanners {
            let seed = self.sub_seed();
            let jitter = Jitter::new(seed, JITTER);
            let mem = self.mem.stores();
            let stale_claims = self.stale_claims.clone();
            let (queue, config, control) = (
                Arc::new(self.queue.clone()) as Arc<dyn JobQueue>,
                self.recovery.clone(),
                self.control.clone(),
            );
            self.processes.push(tokio::spawn(async move {
                loop {
                    let until = *control
                        .outage_until
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    if let Some(until) = until.filter(|u| *u > Instant::now()) {
                        // Until the outage ends, or is called off.
                        tokio::select! {
                            _ = tokio::time::sleep_until(until) => {}
                            _ = control.outage.notified() => {}
                        }
                        continue;
                    }
                    let rules = std::mem::take(
                        &mut *control.scanner_rules[i]
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()),
                    );
                    let mut stores = mem.clone();
                    stores.changelog = Arc::new(ClaimWitness {
                        inner: mem.changelog.clone(),
                        cutoff_age: config.protocol.staleness_threshold,
                        fresh_claims: stale_claims.clone(),
                    });
                    let changelog =
                        intercept::wrap(jitter.clone(), &Faults::new(rules).wrap(&stores))
                            .changelog;
                    let cancel = CancellationToken::new();
                    let scanner =
                        Scanner::new(changelog, queue.clone(), config.clone(), ShardRange::ALL);
                    let task = tokio::spawn(scanner.run(cancel.clone()));
                    tokio::select! {
                        _ = control.restart_scanner[i].notified() => {}
                        _ = control.outage.notified() => {}
                    }
                    cancel.cancel();
                    task.abort();
                }
            }));
        }
        for i in 0..self.shape.cleaners {
            let seed = self.sub_seed();
            let mem = self.mem.stores();
            let clock = SkewedClock::new(self.mem.clock.clone());
            self.cleaner_clocks.push(clock.clone());
            let (queue, config, control) = (
                Arc::new(self.queue.clone()) as Arc<dyn JobQueue>,
                self.recovery.clone(),
                self.control.clone(),
            );
            let trespasses = self.trespasses.clone();
            self.processes.push(tokio::spawn(async move {
                let jitter = Jitter::new(seed, JITTER);
                loop {
                    let rules = std::mem::take(
                        &mut *control.cleaner_rules[i]
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()),
                    );
                    let faults = Faults::new(rules);
                    let mut stores = intercept::wrap(jitter.clone(), &faults.wrap(&mem));
                    stores.hv = Arc::new(ScopeWitness {
                        inner: stores.hv.clone(),
                        prefix: PREFIX.to_owned(),
                        trespasses: trespasses.clone(),
                    });
                    stores.clock = clock.clone();
                    let cancel = CancellationToken::new();
                    let cleaner = Cleaner::new(stores, queue.clone(), config.clone());
                    let task = tokio::spawn(cleaner.run(cancel.clone(), Duration::from_secs(1)));
                    tokio::select! {
                        // Killed: the task stops where it stands; its unsettled jobs come back
                        // after the ack deadline.
                        _ = faults.crashed() => task.abort(),
                        _ = control.restart_cleaner[i].notified() => {
                            cancel.cancel();
                            let _ = task.await;
                        }
                    }
                }
            }));
        }
    }

    async fn apply(&mut self, event: &Event) {
        match event {
            Event::Write {
                object,
                value,
                faults,
                process,
            } => self.write(*object, *value, faults, *process).await,
            Event::Read { object, hold } => {
                let path = self.paths[*object % self.paths.len()].clone();
                let rules =
                    hold.map(|d| Rule::once(crate::testing::faults::Op::LtGet, Fault::Delay(d)));
                let faults = Faults::new(rules);
                let reader = TieredStorage::new(
                    faults.wrap(&self.mem.stores()),
                    sim_writer_config(self.protocol),
                );
                if let Ok(reader) = reader {
                    let p = path.clone();
                    self.reads
                        .push((path, tokio::spawn(async move { reader.get(&p).await.ok() })));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Event::Sleep(d) => tokio::time::sleep(*d).await,
            Event::RecoveryOutage(d) => {
                *self
                    .control
                    .outage_until
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + *d);
                self.control.outage.notify_waiters();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Event::RestartScanner(i) => {
                self.control.restart_scanner[*i % self.shape.scanners].notify_one();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Event::KillCleaner { cleaner, at_call } => {
                let i = *cleaner % self.shape.cleaners;
                let fault = if at_call % 2 == 0 {
                    Fault::CrashBefore
                } else {
                    Fault::CrashAfter
                };
                self.cleaner_rule(i, Rule::nth_call(*at_call, fault));
            }
            Event::StallCleaner {
                cleaner,
                at_call,
                stall,
            } => {
                let i = *cleaner % self.shape.cleaners;
                self.cleaner_rule(i, Rule::nth_call(*at_call, Fault::Delay(*stall)));
            }
            Event::StallScanner { scanner, stall } => {
                let i = *scanner % self.shape.scanners;
                self.control.scanner_rules[i]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Rule::once(
                        crate::testing::faults::Op::Claim,
                        Fault::Delay(*stall),
                    ));
                self.control.restart_scanner[i].notify_one();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Event::Forge { object, forgery } => self.forge(*object, *forgery).await,
            Event::Queue(f) => self.queue.inject(*f),
            Event::SkewCleaner { cleaner, by, ahead } => {
                self.cleaner_clocks[*cleaner % self.shape.cleaners].jump(*by, *ahead)
            }
        }
    }

    fn cleaner_rule(&self, i: usize, rule: Rule) {
        self.control.cleaner_rules[i]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(rule);
        self.control.restart_cleaner[i].notify_one();
    }

    async fn write(&mut self, object: usize, value: Value, rules: &[Rule], process: Process) {
        let path = self.paths[object % self.paths.len()].clone();
        let bytes = match value {
            Value::Absent => None,
            Value::Small => Some(Bytes::from(format!("s{}", self.writes.len() % 10))),
            Value::Large => Some(Bytes::from(format!(
                "large{}:{}",
                self.writes.len(),
                "L".repeat(INLINE_THRESHOLD * 2)
            ))),
        };
        let healthy = rules.is_empty() && process == Process::Healthy;
        let faults = Faults::new(rules.iter().copied());
        let clock = SkewedClock::new(self.mem.clock.clone());
        let seed = self.sub_seed();
        let mut stores: Stores = faults.wrap(&self.mem.stores());
        if let Process::SuspendAfter(op, d) = process {
            stores = intercept::wrap(Freeze::new(op, d, clock.clone()), &stores);
        }
        stores = intercept::wrap(Jitter::new(seed, JITTER), &stores);
        stores.clock = clock.clone();
        let Ok(writer) = TieredStorage::new(stores, sim_writer_config(self.protocol)) else {
            return;
        };
        if let Process::ClockStep(by, forward) = process {
            let clock = clock.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                clock.jump(by, forward);
            });
        }
        let start = Instant::now();
        let task = tokio::spawn({
            let (path, bytes) = (path.clone(), bytes.clone());
            async move {
                let r = match bytes {
                    Some(b) => writer.put(&path, b).await,
                    None => writer.delete(&path).await,
                };
                (r, Instant::now())
            }
        });
        self.writes.push(Write {
            path,
            value: bytes,
            healthy,
            faults,
            start,
            task,
        });
        // Give the write a moment before the next event.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    async fn forge(&mut self, object: usize, forgery: Forgery) {
        let path = self.paths[object % self.paths.len()].clone();
        let message = if forgery == Forgery::Poison {
            Message {
                data: Bytes::from_static(b"{\"v\":1,\"change\":\"not a change\"}"),
                attributes: BTreeMap::new(),
            }
        } else {
            let entry = crate::testing::schedules::entries_for(&self.mem.stores(), &path)
                .await
                .into_iter()
                .next();
            let (change, owner) = match entry {
                Some(e) => (e.id, e.record.owner),
                None => (ChangeId::mint(), OwnerToken::recovery_claim()),
            };
            let claim = match forgery {
                Forgery::OwnersToken => owner,
                Forgery::OldClaim => self
                    .claims_seen
                    .get(&change)
                    .and_then(|c| c.first().cloned())
                    .unwrap_or(owner),
                _ => OwnerToken::recovery_claim(),
            };
            CleanupJob::new(change, claim).to_message(BTreeMap::new())
        };
        let _ = self.queue.publish(vec![message]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Folds finished writes into the history, in the order they finished. With `all`,
    /// waits for every write whose process is alive, and abandons the crashed ones.
    async fn settle(&mut self, all: bool) {
        let mut done: Vec<(Instant, Instant, ObjectPath, Option<Bytes>, Ending, bool)> = Vec::new();
        let mut i = 0;
        while i < self.writes.len() {
            let w = &self.writes[i];
            let crashed = w.faults.is_crashed();
            if w.task.is_finished() || (all && !crashed) {
                let w = self.writes.remove(i);
                match w.task.await {
                    Ok((r, at)) => {
                        done.push((at, w.start, w.path, w.value, Ending::Returned(r), w.healthy))
                    }
                    Err(_) => done.push((
                        Instant::now(),
                        w.start,
                        w.path,
                        w.value,
                        Ending::Crashed,
                        false,
                    )),
                }
            } else if crashed {
                let w = self.writes.remove(i);
                w.task.abort();
                done.push((
                    Instant::now(),
                    w.start,
                    w.path,
                    w.value,
                    Ending::Crashed,
                    false,
                ));
            } else {
                i += 1;
            }
        }
        done.sort_by_key(|d| d.0);
        for (end, start, path, value, ending, healthy) in done {
            if healthy
                && let Ending::Returned(Err(
                    e @ (WriteError::Fenced { .. } | WriteError::GuardLost { .. }),
                )) = &ending
            {
                self.precision
                    .push(format!("a write that met no fault was taken over: {e}"));
            }
            self.history.settle(start, end, &path, value, ending);
        }
    }

    /// The invariants that hold at every moment.
    async fn check_step(&mut self) -> Result<(), String> {
        let report = invariants::check(&self.mem.stores(), &self.history.acceptable())
            .await
            .map_err(|e| e.to_string())?;
        if !report.dangling.is_empty() {
            return Err(format!(
                "I1: a tombstone points at a missing blob: {:?}",
                report.dangling
            ));
        }
        self.check_witnesses().await?;
        // Remember the claims seen on rows, for forged jobs that replay an old one.
        for path in self.paths.clone() {
            for e in crate::testing::schedules::entries_for(&self.mem.stores(), &path).await {
                if e.record.owner.is_recovery_claim() {
                    let seen = self.claims_seen.entry(e.id).or_default();
                    if !seen.contains(&e.record.owner) {
                        seen.push(e.record.owner);
                    }
                }
            }
        }
        Ok(())
    }

    /// What processes observed: reads, trespasses, takeovers, dead letters.
    async fn check_witnesses(&mut self) -> Result<(), String> {
        let mut i = 0;
        while i < self.reads.len() {
            if self.reads[i].1.is_finished() {
                let (path, task) = self.reads.remove(i);
                if let Ok(Some(ReadOutcome::Dangling(rev))) = task.await {
                    return Err(format!(
                        "a read of {path} reported a dangling tombstone ({rev})"
                    ));
                }
            } else {
                i += 1;
            }
        }
        let trespasses = self
            .trespasses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !trespasses.is_empty() {
            return Err(format!(
                "I4: recovery acted outside its prefix {PREFIX:?}: {trespasses:?}"
            ));
        }
        if let Some(c) = self
            .stale_claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first()
        {
            return Err(format!("I4: {c}"));
        }
        if let Some(p) = self.precision.first() {
            return Err(format!("I4: {p}"));
        }
        for dead in self.queue.dead_letters() {
            if !dead.by_policy && dead.reason().is_none_or(str::is_empty) {
                return Err(format!(
                    "I5: a cleaner dead-lettered a job without its reason: {:?}",
                    dead.message
                ));
            }
        }
        Ok(())
    }

    /// Lets every write finish, heals every fault, and waits for recovery to converge what
    /// is in scope; then checks the end state.
    async fn quiesce(&mut self) -> Result<(), String> {
        self.queue.heal();
        *self
            .control
            .outage_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        self.control.outage.notify_waiters();
        for i in 0..self.shape.cleaners {
            self.control.cleaner_rules[i]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            self.control.restart_cleaner[i].notify_one();
        }
        // Writers held past every TTL finish within a day and a bit.
        let deadline = Instant::now() + plan::LONGER_THAN_TTLS + Duration::from_secs(600);
        while self
            .writes
            .iter()
            .any(|w| !w.task.is_finished() && !w.faults.is_crashed())
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
        self.settle(true).await;
        while !self.reads.iter().all(|r| r.1.is_finished()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        self.check_witnesses().await?;

        let (inside, outside): (BTreeMap<_, _>, BTreeMap<_, _>) = self
            .history
            .acceptable()
            .into_iter()
            .partition(|(p, _)| self.in_scope(p));
        // Every claim's lease (up to 16 × 40 s) runs out well within two hours, and every
        // abandoned change is claimed, converged or re-claimed within it.
        let give_up = Instant::now() + Duration::from_secs(2 * 3600);
        let stores = self.mem.stores();
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let report = invariants::check(&stores, &inside)
                .await
                .map_err(|e| e.to_string())?;
            if report.is_converged() {
                break;
            }
            if Instant::now() >= give_up {
                return Err(format!(
                    "I2: recovery did not converge within two hours of quiescence: {report:#?}\nqueue: {} published, {} pending, dead letters {:?}",
                    self.queue.published(),
                    self.queue.pending(),
                    self.queue
                        .dead_letters()
                        .iter()
                        .map(|d| d.reason().unwrap_or("(policy)").to_owned())
                        .collect::<Vec<_>>()
                ));
            }
        }
        let outside_report = invariants::check(&stores, &outside)
            .await
            .map_err(|e| e.to_string())?;
        if !outside_report.lost.is_empty() || !outside_report.dangling.is_empty() {
            return Err(format!("I1 outside the prefix: {outside_report:#?}"));
        }
        self.check_witnesses().await
    }
}

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
//! Why tokio's paused time and not turmoil or madsim, and what a seed does and does not
//! replay: `docs/simulation.md`, "How a schedule plays".

mod fanout;
pub mod history;
pub mod hooks;
pub mod plan;
pub mod queue;
mod room;
mod writes;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::history::{History, WriteEnding};
use self::hooks::{ClaimWitness, Freeze, FrozenLeases, Jitter, ScopeWitness};
use self::plan::{Event, Forgery, Plan, Process, Shape, Value};
use self::queue::ChaosQueue;
use crate::crash::{INLINE_THRESHOLD, test_recovery_config, test_writer_config};
use tiersweep::changelog::Changelog as _;
use tiersweep::model::{ChangeId, ObjectPath, OwnerToken, ShardRange, ShardSet, Timestamp};
use tiersweep::protocol::ProtocolConfig;
use tiersweep::queue::{JobQueue, Message};
use tiersweep::recovery::{Cleaner, CleanupJob, RecoveryConfig, Scanner};
use tiersweep::stores::Stores;
use tiersweep::testing::faults::{Fault, Faults, Op, Rule};
use tiersweep::testing::trail::MemoryTrail;
use tiersweep::testing::{MemoryStores, SkewedClock, intercept, invariants};
use tiersweep::writer::{ReadOutcome, TieredStorage, WriteError};

/// The prefix the cleaners are confined to.
const PREFIX: &str = "sim";
const ACK_DEADLINE: Duration = Duration::from_secs(10);
const JITTER: Duration = Duration::from_millis(20);
/// The scanners' lease period when they hold their shards under leases: the deployed
/// default (a TTL of 20 s, renewed every 7.5 s).
const LEASE_PERIOD: Duration = Duration::from_secs(30);
/// How often quiescence looks at the stores.
const LIVENESS_POLL: Duration = Duration::from_secs(10);
/// How long a running scanner may take to claim a row once it is due: an idle poll, a
/// page, and the poll of the check itself, with room for the writers' and cleaners'
/// jitter.
const ONE_ROUND: Duration = Duration::from_secs(60);

/// Adds `rule` to a process's running incarnation (counting its calls from now), or, when
/// none runs, to the rules its next incarnation starts with.
fn add_rule(running: &Mutex<Option<Arc<Faults>>>, next: &Mutex<Vec<Rule>>, rule: Rule) {
    let running = running.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match running {
        Some(faults) => faults.add(rule),
        None => next.lock().unwrap_or_else(|e| e.into_inner()).push(rule),
    }
}

/// No shard is readable by two scanners at once: a holder stops reading a shard (its lease
/// used up to 0.9 × TTL from the renewal's sending) before another may take it.
fn overlap(control: &Control) -> Result<(), String> {
    let mut seen = ShardSet::EMPTY;
    for (i, set) in control.held_now().into_iter().enumerate() {
        let Some(set) = set else {
            continue;
        };
        let both = seen.intersection(&set);
        if !both.is_empty() {
            return Err(format!(
                "shards {both} readable by scanner {i} and another at once"
            ));
        }
        for s in set.iter() {
            seen.insert(s);
        }
    }
    Ok(())
}

/// Plays `plan` on a fresh paused-time runtime. `Err` describes the first violation.
pub fn run(plan: &Plan, shape: Shape) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(World::new(plan, shape).play(plan))
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
fn sim_writer_config(protocol: ProtocolConfig) -> tiersweep::writer::WriterConfig {
    let mut config = test_writer_config(protocol);
    config.upload_settle = Duration::from_secs(90);
    config
}

fn sim_stores() -> MemoryStores {
    MemoryStores::new()
}

/// One `audit --delete` the schedule started.
struct AuditRun {
    /// The changelog's time when it started (before its snapshot).
    started: Timestamp,
    min_age: Duration,
    trail: Arc<MemoryTrail>,
    task: JoinHandle<()>,
}

struct Write {
    path: ObjectPath,
    value: Option<Bytes>,
    /// Whether the object may take its value: not for a stream that fails, nor for a
    /// deferred put aborted or never finished.
    may_land: bool,
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
    /// The faults of each scanner's running incarnation, healed at quiescence.
    scanner_faults: Vec<Mutex<Option<Arc<Faults>>>>,
    /// Until when each scanner host is frozen (its lease keeper with it).
    frozen_until: Vec<Arc<Mutex<Option<Instant>>>>,
    /// Each leased scanner's current assignment, for the disjointness oracle.
    assignments: Vec<Mutex<Option<tokio::sync::watch::Receiver<tiersweep::recovery::Assignment>>>>,
    cleaner_rules: Vec<Mutex<Vec<Rule>>>,
    /// The faults of each cleaner's running incarnation.
    cleaner_faults: Vec<Mutex<Option<Arc<Faults>>>>,
    restart_cleaner: Vec<Notify>,
}

/// From when (changelog time) the liveness oracle counts a row's wait: for a row under a
/// recovery claim, and for one nobody has claimed.
#[derive(Debug, Clone, Copy)]
struct Steady {
    claimed: Timestamp,
    unclaimed: Timestamp,
}

impl Control {
    /// Each leased scanner's valid assignment now (`None`: not running).
    fn held_now(&self) -> Vec<Option<ShardSet>> {
        let now = Instant::now();
        self.assignments
            .iter()
            .map(|a| {
                a.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map(|rx| rx.borrow().valid_at(now))
            })
            .collect()
    }
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
    /// Claims won on rows that were not stale when the claim landed, and rows a cleaner
    /// removed or deferred under no claim a scanner won (I4).
    stale_claims: Arc<Mutex<Vec<String>>>,
    /// Every claim token a scanner won.
    won_claims: hooks::WonClaims,
    claims_seen: HashMap<ChangeId, Vec<OwnerToken>>,
    /// Takeovers of writes that met no fault (I4).
    precision: Vec<String>,
    /// The audits started, with what they asked for.
    audits: Vec<AuditRun>,
    /// The fanned-out audits' runs and workers, from the first such event.
    fanned: Option<fanout::FannedAudits>,
    /// The scanners' shard leases, when they hold their shards under leases (`None`: each
    /// reads a fixed half).
    leases: Option<Arc<dyn tiersweep::shard_lease::ShardLeases>>,
    /// Overlapping assignments the watcher saw.
    overlaps: Arc<Mutex<Vec<String>>>,
    processes: Vec<JoinHandle<()>>,
    /// Each cleaner host's wall clock (stepped by [`Event::SkewCleaner`]).
    cleaner_clocks: Vec<Arc<SkewedClock>>,
    /// From when (changelog time) the scanners have run undisturbed: no outage, restart
    /// or stalled claim since. The liveness oracle counts a row's wait from here at the
    /// earliest.
    scanners_steady_from: Timestamp,
    /// From when (changelog time) a crash is one the scanners must claim ahead of any
    /// backlog (the fresh read): since they last all started. Each scanner reading a fixed
    /// half, a restarted or frozen one's rows are its backlog, so it is
    /// [`Self::scanners_steady_from`]; under shard leases a stopped or frozen holder's
    /// shards pass to a running scanner, whose fresh read looks back over the handover, so
    /// only an outage of them all moves it.
    fresh_since: Timestamp,
    /// From when every shard has had a running holder: the earliest a row nobody has
    /// claimed is counted as waiting. Under shard leases a frozen holder's shards pass to
    /// another within a lease period, so this is a lease period after the freeze, while
    /// [`Self::scanners_steady_from`] waits for the frozen one to wake (a claim it won
    /// just before freezing is published only then).
    holders_steady_from: Timestamp,
    /// A scanner still had a stalled claim to come at the last check.
    stall_pending: bool,
    /// Each scanner's room for waiting claims over time, under backpressure.
    room: Option<Arc<room::Room>>,

    next_seed: u64,
}

impl World {
    fn new(plan: &Plan, shape: Shape) -> Self {
        let seed = plan.seed;
        let protocol = ProtocolConfig::default();
        let mut recovery = test_recovery_config(protocol);
        recovery.object_prefix = PREFIX.to_owned();
        recovery.idle_poll = Duration::from_secs(20);
        recovery.cleaner_concurrency = 4;
        recovery.max_delivery_attempts = 5;
        recovery.upload_settle = plan.recovery_settle;
        recovery.claim_lease = plan.claim_lease;
        recovery.republish_after = plan.claim_lease;
        recovery.max_watched_rows = plan.watch_room;
        recovery.gcs_deletes_per_s = f64::from(plan.delete_pace);
        recovery.bigtable_rows_per_s = f64::from(plan.bigtable_pace);
        if plan.watch_room < RecoveryConfig::default().max_watched_rows {
            // Pages of two rows: a span of a handful of rows is read part-way.
            recovery.scan_batch = plan::SMALL_WATCH_BATCH;
        }
        if plan.backpressure {
            recovery.max_queued_claims = plan::BACKPRESSURE_ROOM;
            recovery.scan_batch = plan::BACKPRESSURE_BATCH;
        }
        let won_claims = hooks::WonClaims::default();
        let room = plan.backpressure.then(|| {
            room::Room::new(
                shape.scanners,
                won_claims.clone(),
                recovery.max_queued_claims,
            )
        });
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
            scanner_faults: (0..shape.scanners).map(|_| Mutex::new(None)).collect(),
            frozen_until: (0..shape.scanners).map(|_| Arc::default()).collect(),
            assignments: (0..shape.scanners).map(|_| Mutex::new(None)).collect(),
            cleaner_rules: (0..shape.cleaners)
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            cleaner_faults: (0..shape.cleaners).map(|_| Mutex::new(None)).collect(),
            restart_cleaner: (0..shape.cleaners).map(|_| Notify::new()).collect(),
            ..Control::default()
        };
        let mem = sim_stores();
        let leases = plan.leased.then(|| {
            Arc::new(tiersweep::shard_lease::MemoryShardLeases::new(
                mem.clock.clone(),
            )) as Arc<dyn tiersweep::shard_lease::ShardLeases>
        });
        Self {
            shape,
            leases,
            overlaps: Arc::default(),
            mem,
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
            won_claims,
            claims_seen: HashMap::new(),
            precision: Vec::new(),
            audits: Vec::new(),
            fanned: None,
            processes: Vec::new(),
            cleaner_clocks: Vec::new(),
            scanners_steady_from: Timestamp(0),
            fresh_since: Timestamp(0),
            holders_steady_from: Timestamp(0),
            stall_pending: false,
            room,
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
        self.watch_assignments();
        for (step, event) in plan.events.iter().enumerate() {
            let at = |e| format!("after event {step} ({event:?}): {e}");
            match event {
                // Looked at every poll while time passes, not only at the end: a row left
                // waiting past its due time may be converged by the end of a long sleep.
                Event::Sleep(d) => self.sleep_checking(*d).await.map_err(at)?,
                _ => self.apply(event).await,
            }
            self.settle(false).await;
            self.check_step().await.map_err(at)?;
        }
        self.quiesce().await?;
        for p in &self.processes {
            p.abort();
        }
        Ok(())
    }

    fn start_processes(&mut self) {
        if let Some(room) = &self.room {
            let holders = if self.leases.is_some() {
                let control = self.control.clone();
                room::Holders::Leased(Box::new(move || control.held_now()))
            } else {
                room::Holders::Fixed(
                    (0..self.shape.scanners)
                        .map(|i| {
                            ShardRange::for_member(i as u16, self.shape.scanners as u16)
                                .expect("the simulation has fewer scanners than shards")
                                .into()
                        })
                        .collect(),
                )
            };
            let watch =
                room.clone()
                    .watch(self.mem.changelog.clone(), self.mem.clock.clone(), holders);
            self.processes.push(watch);
        }
        for i in 0..self.shape.scanners {
            // Each scanner reads its own part of the key space, as in production: a
            // scanner's forgetting is not covered by another that happens to watch the row.
            let shards = ShardRange::for_member(i as u16, self.shape.scanners as u16)
                .expect("the simulation has fewer scanners than shards");
            let seed = self.sub_seed();
            let jitter = Jitter::new(seed, JITTER);
            let mem = self.mem.stores();
            let stale_claims = self.stale_claims.clone();
            let won_claims = self.won_claims.clone();
            let leases = self.leases.clone();
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
                    let stores = mem.clone().with_changelog(Arc::new(ClaimWitness {
                        inner: mem.changelog().clone(),
                        cutoff_age: config.protocol.staleness_threshold,
                        violations: stale_claims.clone(),
                        won: won_claims.clone(),
                        scanner: i,
                    }));
                    let faults = Faults::new(rules);
                    *control.scanner_faults[i]
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(faults.clone());
                    let changelog = intercept::wrap(jitter.clone(), &faults.wrap(&stores))
                        .changelog()
                        .clone();
                    let cancel = CancellationToken::new();
                    let Some(leases) = leases.clone() else {
                        let scanner =
                            Scanner::new(changelog, queue.clone(), config.clone(), shards);
                        let task = tokio::spawn(scanner.run(cancel.clone()));
                        tokio::select! {
                            _ = control.restart_scanner[i].notified() => {}
                            _ = control.outage.notified() => {}
                        }
                        cancel.cancel();
                        task.abort();
                        continue;
                    };
                    // A new member each incarnation, as a restarted pod is.
                    let me = tiersweep::shard_lease::MemberId::fresh(&format!("scanner{i}"))
                        .expect("a valid member name");
                    let frozen = Arc::new(FrozenLeases {
                        inner: leases,
                        until: control.frozen_until[i].clone(),
                    });
                    let (keeper, assignment) =
                        tiersweep::recovery::LeaseKeeper::new(frozen, me, LEASE_PERIOD);
                    *control.assignments[i]
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(assignment.clone());
                    let keeper_stop = CancellationToken::new();
                    let keeper = tokio::spawn(keeper.run(keeper_stop.clone()));
                    let scanner =
                        Scanner::new(changelog, queue.clone(), config.clone(), ShardSet::EMPTY);
                    let task = tokio::spawn(scanner.run_leased(assignment, cancel.clone()));
                    let killed = tokio::select! {
                        _ = control.restart_scanner[i].notified() => true,
                        _ = control.outage.notified() => false,
                    };
                    cancel.cancel();
                    task.abort();
                    if killed {
                        // Killed: its leases lapse on their own, a TTL later.
                        keeper.abort();
                    } else {
                        // Stopped: it releases its leases on the way out.
                        keeper_stop.cancel();
                        let _ = keeper.await;
                    }
                    *control.assignments[i]
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = None;
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
            let (violations, won_claims) = (self.stale_claims.clone(), self.won_claims.clone());
            self.processes.push(tokio::spawn(async move {
                let jitter = Jitter::new(seed, JITTER);
                loop {
                    let rules = std::mem::take(
                        &mut *control.cleaner_rules[i]
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()),
                    );
                    let faults = Faults::new(rules);
                    // A batched removal can fail half done.
                    faults.split_batches();
                    *control.cleaner_faults[i]
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(faults.clone());
                    let hooked = intercept::wrap(jitter.clone(), &faults.wrap(&mem));
                    let stores = hooked
                        .clone()
                        .with_hv(Arc::new(ScopeWitness {
                            inner: hooked.hv().clone(),
                            prefix: PREFIX.to_owned(),
                            trespasses: trespasses.clone(),
                        }))
                        .with_clock(clock.clone())
                        .with_changelog(Arc::new(ClaimWitness {
                            inner: hooked.changelog().clone(),
                            cutoff_age: config.protocol.staleness_threshold,
                            violations: violations.clone(),
                            won: won_claims.clone(),
                            scanner: usize::MAX,
                        }));
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
            Event::Read {
                object,
                hold,
                streamed,
            } => {
                let path = self.paths[*object % self.paths.len()].clone();
                let rules = hold
                    .map(|d| Rule::once(tiersweep::testing::faults::Op::LtGet, Fault::Delay(d)));
                let faults = Faults::new(rules);
                let reader = TieredStorage::new(
                    faults.wrap(&self.mem.stores()),
                    sim_writer_config(self.protocol),
                );
                if let Ok(reader) = reader {
                    let (p, streamed) = (path.clone(), *streamed);
                    self.reads.push((
                        path,
                        tokio::spawn(async move { writes::read(&reader, &p, streamed).await }),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Event::Sleep(d) => tokio::time::sleep(*d).await,
            Event::RecoveryOutage(d) => {
                self.scanners_disturbed_until(*d + self.handover());
                self.fresh_since = self.scanners_steady_from;
                *self
                    .control
                    .outage_until
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + *d);
                self.control.outage.notify_waiters();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Event::RestartScanner(i) => {
                self.scanners_disturbed_until(self.handover());
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
                        tiersweep::testing::faults::Op::Claim,
                        Fault::Delay(*stall),
                    ));
                self.control.restart_scanner[i].notify_one();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Event::FailScanner {
                scanner,
                op,
                skip,
                times,
            } => {
                let rule = Rule {
                    op: Some(*op),
                    skip: *skip,
                    times: *times,
                    fault: Fault::Fail,
                };
                let i = *scanner % self.shape.scanners;
                add_rule(
                    &self.control.scanner_faults[i],
                    &self.control.scanner_rules[i],
                    rule,
                );
            }
            Event::FaultCleaner { cleaner, rule } => {
                let i = *cleaner % self.shape.cleaners;
                add_rule(
                    &self.control.cleaner_faults[i],
                    &self.control.cleaner_rules[i],
                    *rule,
                );
            }
            Event::FreezeScanner { scanner, freeze } => {
                let i = *scanner % self.shape.scanners;
                // Its shards wait until another takes them over (a lease period) or, with
                // fixed halves, until it wakes; a row under a claim it won may wait for it
                // to wake in either case. The liveness bound counts from then.
                if self.leases.is_some() {
                    let now = self.mem.clock.now();
                    self.holders_steady_from = self
                        .holders_steady_from
                        .max(now.saturating_add(LEASE_PERIOD));
                    self.scanners_steady_from = self
                        .scanners_steady_from
                        .max(now.saturating_add(*freeze + LEASE_PERIOD));
                } else {
                    self.scanners_disturbed_until(*freeze + LEASE_PERIOD);
                }
                *self.control.frozen_until[i]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + *freeze);
                let rule = Rule::nth_call(0, Fault::Delay(*freeze));
                add_rule(
                    &self.control.scanner_faults[i],
                    &self.control.scanner_rules[i],
                    rule,
                );
            }
            Event::Audit {
                min_age,
                list_delay,
            } => self.audit(*min_age, *list_delay),
            Event::FannedAudit {
                min_age,
                list_delay,
                delete,
                replay,
            } => {
                let stores = self.mem.stores();
                let seed = self.sub_seed();
                self.fanned
                    .get_or_insert_with(|| fanout::FannedAudits::new(seed, &stores, *list_delay))
                    .start(&stores, PREFIX, *min_age, *delete, *replay)
                    .await;
            }
            Event::Forge { object, forgery } => self.forge(*object, *forgery).await,
            Event::Queue(f) => self.queue.inject(*f),
            Event::SkewCleaner { cleaner, by, ahead } => {
                self.cleaner_clocks[*cleaner % self.shape.cleaners].jump(*by, *ahead)
            }
            Event::DriftCleaner { cleaner, ppm } => {
                self.cleaner_clocks[*cleaner % self.shape.cleaners].set_rate(*ppm)
            }
            Event::Backlog { writers } => {
                let crash = [Rule::once(Op::HvCas, Fault::CrashBefore)];
                for i in 0..*writers {
                    // Large: a small put over a small value records no change.
                    self.write(
                        i % self.shape.objects,
                        Value::Large,
                        &crash,
                        Process::Healthy,
                    )
                    .await;
                }
            }
        }
    }

    /// Lets `d` pass, checking liveness and the rows' stamps every [`LIVENESS_POLL`]
    /// meanwhile (the other oracles look at the state it leaves, after the event).
    async fn sleep_checking(&mut self, d: Duration) -> Result<(), String> {
        let until = Instant::now() + d;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left <= LIVENESS_POLL {
                tokio::time::sleep(left).await;
                return Ok(());
            }
            tokio::time::sleep(LIVENESS_POLL).await;
            // A lease stamped on a host clock lasts only as long as its job: looked for at
            // every poll, as a row left waiting is.
            self.check_stamps().await?;
            self.note_scanner_stalls();
            if !self.outage_in_effect() {
                self.check_liveness(self.steady_from()).await?;
            }
        }
    }

    /// How long shards may wait for a holder after a scanner stops or starts: a lease
    /// period when they are held under leases (the dead member's lapse, the others take
    /// them at their next tick), nothing when each scanner reads a fixed half.
    fn handover(&self) -> Duration {
        if self.leases.is_some() {
            LEASE_PERIOD
        } else {
            Duration::ZERO
        }
    }

    /// Watches the leased scanners' assignments every second (an overlap may last seconds):
    /// see [`overlap`].
    fn watch_assignments(&mut self) {
        if self.leases.is_none() {
            return;
        }
        let (control, seen) = (self.control.clone(), self.overlaps.clone());
        self.processes.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Err(e) = overlap(&control) {
                    seen.lock().unwrap_or_else(|e| e.into_inner()).push(e);
                    return;
                }
            }
        }));
    }

    fn check_assignments(&self) -> Result<(), String> {
        match self
            .overlaps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first()
        {
            Some(e) => Err(e.clone()),
            None => overlap(&self.control),
        }
    }

    /// From when the scanners have run undisturbed, for rows under a claim and the rest.
    fn steady_from(&self) -> Steady {
        Steady {
            claimed: self.scanners_steady_from,
            unclaimed: self.holders_steady_from,
        }
    }

    /// The scanners are disturbed (stopped, restarted) from now until `d` from now.
    fn scanners_disturbed_until(&mut self, d: Duration) {
        let until = self.mem.clock.now().saturating_add(d);
        self.scanners_steady_from = self.scanners_steady_from.max(until);
        self.holders_steady_from = self.holders_steady_from.max(until);
        if self.leases.is_none() {
            self.fresh_since = self.scanners_steady_from;
        }
    }

    /// A scanner's stalled claim may have been held since the last check: treated as
    /// held until the longest stall from now.
    fn note_scanner_stalls(&mut self) {
        let pending = self.control.scanner_faults.iter().any(|f| {
            f.lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(|f| f.pending())
        }) || self
            .control
            .scanner_rules
            .iter()
            .any(|r| !r.lock().unwrap_or_else(|e| e.into_inner()).is_empty());
        if pending || self.stall_pending {
            self.scanners_disturbed_until(plan::MAX_SCANNER_STALL);
        }
        self.stall_pending = pending;
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
            Value::Large | Value::Streamed { .. } | Value::Deferred { .. } => {
                Some(Bytes::from(format!(
                    "large{}:{}",
                    self.writes.len(),
                    "L".repeat(INLINE_THRESHOLD * 2)
                )))
            }
        };
        // A writer whose clock is off from the start, or runs up to 2 % fast or slow, is
        // healthy: staleness is judged in the changelog's time, never the writer's, and the
        // safety margin is a sixth of the threshold. So is one whose upload is merely slow: its
        // heartbeats keep its change its own however long the upload takes.
        let slow_upload_only = rules
            .iter()
            .all(|r| r.op == Some(Op::LtPut) && matches!(r.fault, Fault::Delay(_)));
        let healthy = slow_upload_only
            && matches!(
                process,
                Process::Healthy | Process::ClockOff(..) | Process::ClockRate(_)
            )
            && writes::in_time(value, self.protocol);
        let faults = Faults::new(rules.iter().copied());
        let clock = SkewedClock::new(self.mem.clock.clone());
        match process {
            Process::ClockOff(by, ahead) => clock.jump(by, ahead),
            Process::ClockRate(ppm) => clock.set_rate(ppm),
            _ => {}
        }

        let seed = self.sub_seed();
        let mut stores: Stores = faults.wrap(&self.mem.stores());
        if let Process::SuspendAfter(op, d) = process {
            stores = intercept::wrap(Freeze::new(op, d, clock.clone()), &stores);
        }
        stores = intercept::wrap(Jitter::new(seed, JITTER), &stores).with_clock(clock.clone());
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
                let r = writes::perform(&writer, &path, value, bytes).await;
                (r, Instant::now())
            }
        });
        self.writes.push(Write {
            path,
            value: bytes,
            may_land: writes::may_land(value),
            healthy,
            faults,
            start,
            task,
        });
        // Give the write a moment before the next event.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// Starts an `audit --delete` of the simulation's prefix whose listing calls each take
    /// `list_delay`. Only the listing is slowed (no jitter on the audit's other calls), so
    /// its changelog snapshot is taken at the `started` the oracle judges it by.
    fn audit(&mut self, min_age: Duration, list_delay: Duration) {
        let config = tiersweep::audit::AuditConfig {
            prefix: format!("{PREFIX}/"),
            ranges: 4,
            concurrency: 2,
            min_age,
            delete: true,
            max_deletes_per_s: None,
            max_lists_per_s: None,
            ..tiersweep::audit::AuditConfig::default()
        };
        let trail = Arc::new(MemoryTrail::default());
        let slow_listing = Faults::new([Rule::on(Op::LtList, Fault::Delay(list_delay))]);
        let audit = tiersweep::audit::Audit::new(slow_listing.wrap(&self.mem.stores()), config)
            .trail(trail.clone());
        self.audits.push(AuditRun {
            started: self.mem.clock.now(),
            min_age,
            trail,
            task: tokio::spawn(async move {
                let _ = audit.run().await;
            }),
        });
    }

    /// Whether an audit asked for the deletion of a blob of `path`: recovery's fence for it
    /// may refuse a concurrent write of the object, as documented, whatever that write met.
    fn audited(&self, path: &ObjectPath) -> bool {
        let asked = |trail: &MemoryTrail| {
            trail
                .entries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|e| {
                    tiersweep::model::Revision::parse(e.blob.as_str())
                        .is_ok_and(|r| r.object() == path.as_str())
                })
        };
        self.audits.iter().any(|a| asked(&a.trail))
            || self.fanned.as_ref().is_some_and(|f| asked(f.trail()))
    }

    async fn forge(&mut self, object: usize, forgery: Forgery) {
        let path = self.paths[object % self.paths.len()].clone();
        let message = if forgery == Forgery::Poison {
            Message {
                data: Bytes::from_static(b"{\"v\":1,\"change\":\"not a change\"}"),
                attributes: BTreeMap::new(),
            }
        } else {
            let entry = crate::schedules::entries_for(&self.mem.stores(), &path)
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
        let mut done: Vec<(Instant, Write, WriteEnding)> = Vec::new();
        let mut i = 0;
        while i < self.writes.len() {
            let w = &self.writes[i];
            let crashed = w.faults.is_crashed();
            if w.task.is_finished() || (all && !crashed) {
                let mut w = self.writes.remove(i);
                match (&mut w.task).await {
                    Ok((r, at)) => done.push((at, w, WriteEnding::Returned(r))),
                    Err(_) => done.push((Instant::now(), w, WriteEnding::Crashed)),
                }
            } else if crashed {
                let w = self.writes.remove(i);
                w.task.abort();
                done.push((Instant::now(), w, WriteEnding::Crashed));
            } else {
                i += 1;
            }
        }
        done.sort_by_key(|d| d.0);
        for (end, w, ending) in done {
            if w.healthy
                && !self.audited(&w.path)
                && let WriteEnding::Returned(Err(
                    e @ (WriteError::Fenced { .. } | WriteError::GuardLost { .. }),
                )) = &ending
            {
                self.precision
                    .push(format!("a write that met no fault was taken over: {e}"));
            }
            // A write that cannot land leaves no candidate: the object must never read
            // back as its value.
            if w.may_land {
                self.history.settle(w.start, end, &w.path, w.value, ending);
            }
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
        self.check_stamps().await?;
        self.check_assignments()?;
        self.note_scanner_stalls();
        if !self.outage_in_effect() {
            self.check_liveness(self.steady_from()).await?;
        }
        // Remember the claims seen on rows, for forged jobs that replay an old one.
        for path in self.paths.clone() {
            for e in crate::schedules::entries_for(&self.mem.stores(), &path).await {
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

    /// Liveness, while scanners run undisturbed (at quiescence): every row due for recovery
    /// (stale, or past its `due_at`) is claimed or changed within [`ONE_ROUND`] and a
    /// scanner's review period of becoming due — found by a running scanner's rounds, watch set or fresh read, not left
    /// to its next full sweep. A row whose id was minted more than a staleness threshold
    /// before the row was created (a writer's clock behind, or a record attempt held while
    /// its host froze) is, by design, the sweep's to find, and is judged only by the
    /// convergence bound; a row
    /// whose id was minted more than `max_writer_skew` ahead is found when the rounds'
    /// cutoff passes its id.
    async fn check_liveness(&self, since: Steady) -> Result<(), String> {
        let threshold = self.protocol.staleness_threshold;
        let now = self.mem.clock.now();
        for key in self.mem.changelog.keys() {
            let Ok(id) = ChangeId::parse(&key) else {
                return Err(format!("a changelog row with a malformed key: {key}"));
            };
            let (Ok(Some(entry)), Some(created), Some(minted)) = (
                self.mem.changelog.get(&id).await,
                self.mem.changelog.created(&id),
                id.minted_at(),
            ) else {
                continue;
            };
            // Recorded more than a threshold after its id's time (a writer's clock behind,
            // or a record attempt held while its host froze): by design a sweep's to find.
            if created > minted.saturating_add(threshold) {
                continue;
            }
            let since = if entry.record.owner.is_recovery_claim() {
                since.claimed
            } else {
                since.unclaimed
            };
            let mut due = entry.stamp.saturating_add(threshold).max(since);
            if let Some(after) = entry.record.due_at {
                due = due.max(after);
            }
            if minted > created.saturating_add(self.recovery.max_writer_skew) {
                due = due.max(minted.saturating_add(threshold));
            }
            // Under backpressure a row of the backlog waits for cleaners while the round's
            // part of its scanner's room is taken; one recorded since the scanners started
            // waits only while the whole room is.
            // A deferral made by a cleaner is learnt at the claiming scanner's next review.
            let mut late = ONE_ROUND + self.recovery.review_every();
            if let Some(room) = &self.room {
                let fresh = created >= self.fresh_since;
                if let Some(t) = room.excused_until(&id, fresh, self.recovery.review_every()) {
                    due = due.max(t);
                }
                // A fresh row nobody claimed yet has no deferral to learn: the fresh read
                // takes it at the next page (its room excused above).
                if fresh && !entry.record.owner.is_recovery_claim() {
                    late = ONE_ROUND;
                }
            }
            if now > due.saturating_add(late) {
                return Err(format!(
                    "liveness: row {id} ({}, owner {}, {} claims) due at {due} is still there at {now}, \
                     more than {late:?} later (stamp {}, due_at {:?}, created {created}, minted {minted})",
                    entry.record.object,
                    entry.record.owner,
                    entry.record.claims,
                    entry.stamp,
                    entry.record.due_at,
                ));
            }
        }
        Ok(())
    }

    /// No row is stamped further ahead of the changelog's time than the longest claim lease:
    /// a stamp beyond it is a lease extended on a host's clock, which would hold a dead
    /// job's row for that host's skew.
    async fn check_stamps(&self) -> Result<(), String> {
        let now = self.mem.clock.now();
        let limit = now.saturating_add(self.recovery.lease_for(u32::MAX) + Duration::from_secs(1));
        for key in self.mem.changelog.keys() {
            let Ok(id) = ChangeId::parse(&key) else {
                continue;
            };
            if let Ok(Some(entry)) = self.mem.changelog.get(&id).await
                && entry.stamp > limit
            {
                return Err(format!(
                    "row {id} is stamped {:?} ahead of the changelog's time, past the longest claim lease",
                    now.age_at(entry.stamp)
                ));
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
        // An audit judges only blobs older than its start less its minimum age: a younger
        // one may belong to a write recorded after its snapshot.
        for audit in &self.audits {
            let entries = audit
                .trail
                .entries
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for e in entries.iter() {
                if e.created.saturating_add(audit.min_age) >= audit.started {
                    return Err(format!(
                        "an audit started at {:?} with a minimum age of {:?} asked to delete {}, created at {:?}",
                        audit.started, audit.min_age, e.blob, e.created
                    ));
                }
            }
        }
        if let Some(fanned) = &self.fanned {
            fanned.check().await?;
        }
        if let Some(message) = self.queue.unexplained_dead_letter() {
            return Err(format!(
                "I5: a cleaner dead-lettered a job without its reason: {message:?}"
            ));
        }
        Ok(())
    }

    fn outage_in_effect(&self) -> bool {
        self.control
            .outage_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| until > Instant::now())
    }

    /// Lets every write finish, heals every fault, and waits for recovery to converge what
    /// is in scope; then checks the end state.
    async fn quiesce(&mut self) -> Result<(), String> {
        self.queue.heal();
        // An outage in effect is called off; scanners that run go on running, their watch
        // sets and round bounds intact (a restart would read every shard whole and hide
        // whatever a round forgot).
        let outage = self
            .control
            .outage_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if outage.is_some_and(|until| until > Instant::now()) {
            self.control.outage.notify_waiters();
        }
        for faults in &self.control.scanner_faults {
            if let Some(f) = &*faults.lock().unwrap_or_else(|e| e.into_inner()) {
                f.heal();
            }
        }
        // Cleaners too are healed where they run: a restart would hide a cleaner that an
        // outage left lame (its delete pace cut to nothing, say) behind a fresh one.
        for i in 0..self.shape.cleaners {
            self.control.cleaner_rules[i]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            if let Some(f) = &*self.control.cleaner_faults[i]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
            {
                f.heal();
            }
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
        // Audits under way finish (a minute of listing); recovery converges what they
        // handed it like any other change.
        for audit in &mut self.audits {
            let _ = (&mut audit.task).await;
        }
        if let Some(fanned) = &self.fanned {
            fanned.heal();
            while !fanned.finished().await && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            let unfinished = fanned.unfinished(self.mem.clock.now()).await;
            if !unfinished.is_empty() {
                return Err(format!(
                    "fanned-out audits not finished at quiescence: {unfinished:?}"
                ));
            }
        }
        self.check_witnesses().await?;

        let (inside, outside): (BTreeMap<_, _>, BTreeMap<_, _>) = self
            .history
            .acceptable()
            .into_iter()
            .partition(|(p, _)| self.in_scope(p));
        // Every abandoned change is claimed, converged or re-claimed within two hours and
        // the longest claim lease (16 × the first); the liveness oracle holds each row to
        // far less.
        let give_up =
            Instant::now() + Duration::from_secs(2 * 3600) + self.recovery.lease_for(u32::MAX);
        let stores = self.mem.stores();
        // Scanners run undisturbed from here (a stalled claim already under way runs out).
        self.note_scanner_stalls();
        let now = self.mem.clock.now();
        let steady = self.steady_from();
        let recovering_since = Steady {
            claimed: steady.claimed.max(now),
            unclaimed: steady.unclaimed.max(now),
        };
        loop {
            tokio::time::sleep(LIVENESS_POLL).await;
            let report = invariants::check(&stores, &inside)
                .await
                .map_err(|e| e.to_string())?;
            if report.is_converged() {
                break;
            }
            self.check_liveness(recovering_since).await?;
            if Instant::now() >= give_up {
                return Err(format!(
                    "I2: recovery did not converge within two hours and a lease of quiescence: {report:#?}\nqueue: {} published, {} pending, dead letters {:?}",
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
        // An audit of the converged stores agrees: no orphan.
        let audit = tiersweep::audit::Audit::new(
            stores.clone(),
            tiersweep::audit::AuditConfig {
                prefix: format!("{PREFIX}/"),
                min_age: Duration::ZERO,
                max_lists_per_s: None,
                ..tiersweep::audit::AuditConfig::default()
            },
        )
        .run()
        .await
        .map_err(|e| format!("the audit at quiescence failed: {e}"))?;
        if !audit.complete() || audit.totals.orphans > 0 {
            return Err(format!(
                "the audit at quiescence disagrees with the converged stores: {:?}",
                audit.totals
            ));
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

//! A schedule: the seeded list of events one simulation run plays. Generated from a seed,
//! printed when a run fails, and shrunk by dropping events, so a failure comes with the
//! smallest schedule found that still fails.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use tiersweep::testing::faults::{Fault, Op, Rule};

/// The value a write leaves, and how it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// A delete.
    Absent,
    Small,
    Large,
    /// A large put from a client-paced stream ([`put_stream`]): its three chunks `pace`
    /// apart, its end `end` after its last chunk; a stream that `fails` errs after its
    /// first chunk, and the object must keep its earlier value.
    ///
    /// [`put_stream`]: tiersweep::writer::TieredStorage::put_stream
    Streamed {
        pace: Duration,
        end: Duration,
        fails: bool,
    },
    /// A deferred put ([`begin_deferred_put`]): recorded due `within` from now, then
    /// finished, aborted or left as `finish` says.
    ///
    /// [`begin_deferred_put`]: tiersweep::writer::TieredStorage::begin_deferred_put
    Deferred {
        within: Duration,
        finish: Finish,
    },
}

/// What the client of a deferred put does after its begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Starts its stream `after` the begin, sends every part at once, and ends the stream
    /// `end` after its last part: in time, or after the deadline (a multipart upload
    /// completed late).
    Stream { after: Duration, end: Duration },
    /// Aborts it `after` the begin.
    Abort { after: Duration },
    /// Goes away: the put is never finished, and recovery takes it at its deadline.
    Never,
}

/// What happens to the writing process besides its store calls' faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    Healthy,
    /// Its wall clock is stepped by this much (forward when `true`) mid-write.
    ClockStep(Duration, bool),
    /// Its wall clock is off by this much (ahead when `true`) from the start: its change
    /// ids are minted in the future or the past, which is what bounds the scanners' rounds.
    ClockOff(Duration, bool),
    /// Its clocks, wall and monotonic, run this many parts per million fast (slow when
    /// negative): within the safety margin's share of the threshold it is healthy.
    ClockRate(i64),
    /// The first call of `op` lands, then the whole process freezes for the duration (its
    /// heartbeats too, and its monotonic clock does not count it), then sees an error.
    SuspendAfter(Op, Duration),
}

/// A forged or stale job a bystander publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgery {
    /// Names a live row with the token that row's owner has (a writer's, when live).
    OwnersToken,
    /// Names a row with a claim token seen on it earlier.
    OldClaim,
    /// Names a row with a fresh recovery-claim token nobody holds.
    UnknownClaim,
    /// A body that is not a job.
    Poison,
}

/// A range job a bystander publishes beside a fanned-out audit's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Names a run nobody recorded.
    Forged,
    /// Names a run recorded long ago and expired (a backlog of jobs drained late).
    Expired,
    /// One of the current run's jobs, again.
    Duplicate,
    /// A range the current run does not have.
    NoSuchRange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueFault {
    /// The next publishes are delivered twice.
    Duplicate(u32),
    /// The next publish is accepted and then lost (retention, a deleted subscription).
    Drop(u32),
    /// The next publishes become deliverable only this much later.
    Delay(u32, Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Write {
        object: usize,
        value: Value,
        faults: Vec<Rule>,
        process: Process,
    },
    /// A read, whose blob fetch may be held (a read racing an overwrite).
    Read {
        object: usize,
        hold: Option<Duration>,
        /// Read as a stream ([`get_stream`](tiersweep::writer::TieredStorage::get_stream)),
        /// to its end.
        streamed: bool,
    },
    Sleep(Duration),
    /// Scanners stop for this long (a scanner pool outage), then start again.
    RecoveryOutage(Duration),
    /// The scanner is killed and restarted (its cursor is lost).
    RestartScanner(usize),
    /// The cleaner's process dies at its `n`-th store call from now, mid-job.
    KillCleaner {
        cleaner: usize,
        at_call: usize,
    },
    /// The cleaner's `at_call`-th store call from now is held this long: past the ack
    /// deadline, so another cleaner gets the job while this one still works on it.
    StallCleaner {
        cleaner: usize,
        at_call: usize,
        stall: Duration,
    },
    /// The scanner's next claim is held this long after its scan (a GC pause, a frozen
    /// node): what it saw stale may have come back to life.
    StallScanner {
        scanner: usize,
        stall: Duration,
    },
    Forge {
        object: usize,
        forgery: Forgery,
    },
    Queue(QueueFault),
    /// The scanner's next calls of `op` fail (after `skip` that succeed), `times` in a row:
    /// a Bigtable hiccup. The scanner runs on, its watch set and bounds intact, and must not
    /// lose track of a row for it.
    FailScanner {
        scanner: usize,
        op: Op,
        skip: usize,
        times: usize,
    },
    /// The running cleaner's calls meet `rule` (counted from now): Bigtable or GCS failing,
    /// losing a response, or landing a call late after its error, on recovery's side — a
    /// re-read, a defer, a batched removal, a claim extension, an HV fence, an LT delete.
    /// The cleaner runs on; a job it fails is redelivered.
    FaultCleaner {
        cleaner: usize,
        rule: Rule,
    },
    /// The scanner's host freezes for this long (a long GC pause, a suspended VM): its next
    /// store call and its lease keeper wait it out. Its shard leases lapse meanwhile and
    /// another scanner takes them; it must stop reading them before that.
    FreezeScanner {
        scanner: usize,
        freeze: Duration,
    },
    /// An `audit --delete` starts, racing writers and recovery: it reads the changelog, then
    /// lists the bucket, each listing call taking `list_delay` (a big bucket: writes land
    /// meanwhile), and hands what it judges orphans older than `min_age` to recovery.
    Audit {
        min_age: Duration,
        list_delay: Duration,
    },
    /// The cleaner host's wall clock is stepped by this much (forward when `ahead`): NTP
    /// broken or corrected. Every recovery decision must be in the changelog's time.
    SkewCleaner {
        cleaner: usize,
        by: Duration,
        ahead: bool,
    },
    /// An audit spread over workers starts (`audit::fanout`): a run of four ranges whose
    /// jobs two workers take from their own queue, each listing call held `list_delay`; a
    /// bystander may then publish a job `replay` says.
    FannedAudit {
        min_age: Duration,
        list_delay: Duration,
        delete: bool,
        replay: Option<Replay>,
    },
    /// The cleaner host's clocks run this many parts per million fast (slow when negative)
    /// from now on: an oscillator off with NTP gone.
    DriftCleaner {
        cleaner: usize,
        ppm: i64,
    },
    /// This many writers die at once, each after recording its change and before its HV
    /// write (a node running many writers lost): a backlog for recovery. A schedule with
    /// one runs its scanners under backpressure ([`Plan::backpressure`]).
    Backlog {
        writers: usize,
    },
}

/// The longest a straggling call lands after its caller saw the error: the deadline every
/// Bigtable write carries (10 s), within an upload's settle time.
pub const MAX_STRAGGLE: Duration = Duration::from_secs(10);

/// Recovery's upload settle in half the schedules (and every one that skews cleaner
/// clocks): production's default, 20 times the staleness threshold, so that a settle cut
/// short is a hole the simulation can see (with the settle equal to the threshold, a due
/// time stamped early changes nothing).
pub const RECOVERY_SETTLE: Duration = Duration::from_secs(600);

/// Recovery's upload settle in the other half: the staleness threshold, whose second pass
/// comes while the first pass's consequences (a fenced live writer, a forged job's
/// deferral) are still in play.
pub const SHORT_RECOVERY_SETTLE: Duration = Duration::from_secs(30);

/// The longest a dead writer's upload lands after its error in the openings that test the
/// settle: minutes, within [`RECOVERY_SETTLE`] (the settle is the hypothesis that none
/// lands later; the audit, not recovery, is what catches one that does).
pub const MAX_UPLOAD_STRAGGLE: Duration = Duration::from_secs(300);

/// The longest a scanner's claim is held after its scan ([`Event::StallScanner`]).
pub const MAX_SCANNER_STALL: Duration = Duration::from_secs(60);

/// Longer than every lease, threshold and deadline the simulated deployment has (the
/// claim lease, the staleness threshold, a straggler's deadline, an upload's settle time).
pub const LONGER_THAN_TTLS: Duration = Duration::from_secs(660);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub seed: u64,
    pub events: Vec<Event>,
    /// Recovery's upload settle for this schedule ([`RECOVERY_SETTLE`] or
    /// [`SHORT_RECOVERY_SETTLE`]).
    pub recovery_settle: Duration,
    /// The first claim's lease (and the scanners' `republish_after`): [`CLAIM_LEASE`] or
    /// [`SHORT_CLAIM_LEASE`].
    pub claim_lease: Duration,
    /// The scanners hold their shards under leases (joining, leaving and freezing move
    /// shards between them) instead of each reading a fixed half.
    pub leased: bool,
    /// The scanners keep at most [`BACKPRESSURE_ROOM`] claims waiting for cleaners and
    /// read [`BACKPRESSURE_BATCH`] rows a page: a backlog bigger than the room is drained
    /// under backpressure, its rounds held back, and rows that turn stale meanwhile must
    /// be claimed ahead of it (the fresh read and the watch set, with the room kept for
    /// them). Set in every schedule with an [`Event::Backlog`].
    pub backpressure: bool,
    /// The scanners' `max_watched_rows`: a handful in most schedules, so that rows spill
    /// into overflow spans, which merge ([`WATCH_ROOMS`]); production's default in the rest.
    pub watch_room: usize,
    /// The deletes a second each cleaner starts pacing at: production's default, or the
    /// floor in half the schedules, so that deletes wait their turn while leases run and
    /// a refused delete's cut is felt.
    pub delete_pace: u32,
    /// The Bigtable rows a second each scanner and cleaner starts pacing at: production's
    /// default, or the floor in half the schedules, so that changelog and HV calls wait
    /// their turns while leases and claims run, and a refused call's cut is felt.
    pub bigtable_pace: u32,
}

/// The scanners' `scan_batch` with a small watch set: spans of a few rows are read in
/// more than one page.
pub const SMALL_WATCH_BATCH: usize = 2;

/// The small watch sets schedules draw from: every row overflows (one span), a few fit
/// (one span), a dozen fit (three spans, merged in part).
pub const WATCH_ROOMS: [usize; 3] = [0, 2, 12];

/// The scanners' `max_queued_claims` under backpressure: the smallest room with a part kept
/// for fresh rows (a tenth of it: one claim).
pub const BACKPRESSURE_ROOM: usize = 10;

/// The scanners' `scan_batch` under backpressure: a backlog spans several pages.
pub const BACKPRESSURE_BATCH: usize = 3;

/// The claim lease as deployed: with a settle shorter than it, a deferred row that is
/// read again only at its lease's end (not at its `due_at`) waits minutes.
pub const CLAIM_LEASE: Duration = Duration::from_secs(600);

/// The claim lease in the other half: four heartbeats, so that leases end, double and are
/// re-claimed many times within one schedule.
pub const SHORT_CLAIM_LEASE: Duration = Duration::from_secs(40);

/// Sizes of the simulated deployment.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// In-scope objects; two more lie outside the cleaners' prefix.
    pub objects: usize,
    pub scanners: usize,
    pub cleaners: usize,
    pub steps: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            objects: 3,
            scanners: 2,
            cleaners: 2,
            steps: 16,
        }
    }
}

impl Shape {
    /// In-scope objects plus the two outside the prefix (`simx/…`, `other/…`).
    pub fn all_objects(&self) -> usize {
        self.objects + 2
    }
}

impl Plan {
    pub fn generate(seed: u64, shape: Shape) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut events = Vec::with_capacity(shape.steps + 2);
        // One schedule in eight is a long one: recovery is down for a day while a writer
        // freezes longer than every TTL; what must hold then is not what holds in minutes.
        if rng.random_ratio(1, 8) {
            events.push(Event::RecoveryOutage(
                LONGER_THAN_TTLS + Duration::from_secs(300),
            ));
        }
        // One in four opens with a known-dangerous shape (swarm testing): the purely random
        // mix reaches these only rarely, and each has hidden a real hole before.
        if rng.random_ratio(1, 4) {
            events.extend(opening(&mut rng));
        }
        let lease_opening = events
            .iter()
            .any(|e| matches!(e, Event::FreezeScanner { .. }));
        for _ in 0..shape.steps {
            events.push(event(&mut rng, shape));
        }
        let skews = events
            .iter()
            .any(|e| matches!(e, Event::SkewCleaner { .. }));
        let recovery_settle = if skews || rng.random_bool(0.5) {
            RECOVERY_SETTLE
        } else {
            SHORT_RECOVERY_SETTLE
        };
        let claim_lease = if rng.random_bool(0.5) {
            CLAIM_LEASE
        } else {
            SHORT_CLAIM_LEASE
        };
        // Shard leases cost a keeper's tick per member every 7.5 s (1,024 renewals a
        // period): one schedule in twenty, and every one that opens with a frozen holder.
        let leased = lease_opening || rng.random_ratio(1, 20);
        let backpressure = events.iter().any(|e| matches!(e, Event::Backlog { .. }));
        let watch_room = WATCH_ROOMS
            .get(rng.random_range(0..=WATCH_ROOMS.len()))
            .copied()
            .unwrap_or(tiersweep::recovery::RecoveryConfig::default().max_watched_rows);
        let delete_pace = if rng.random_bool(0.5) {
            tiersweep::pace::FLOOR_PER_S
        } else {
            tiersweep::lt::paced::START_PER_S
        } as u32;
        let bigtable_pace = if rng.random_bool(0.5) {
            tiersweep::pace::FLOOR_PER_S
        } else {
            tiersweep::pace::BIGTABLE_START_PER_S
        } as u32;
        Self {
            seed,
            events,
            recovery_settle,
            claim_lease,
            leased,
            backpressure,
            watch_room,
            delete_pace,
            bigtable_pace,
        }
    }

    /// The plan without event `i`.
    pub fn without(&self, i: usize) -> Self {
        let mut events = self.events.clone();
        events.remove(i);
        Self {
            seed: self.seed,
            events,
            recovery_settle: self.recovery_settle,
            claim_lease: self.claim_lease,
            leased: self.leased,
            backpressure: self.backpressure,
            watch_room: self.watch_room,
            delete_pace: self.delete_pace,
            bigtable_pace: self.bigtable_pace,
        }
    }
}

/// A large put of object 0 with these faults.
fn large_put(faults: Vec<Rule>, process: Process) -> Event {
    Event::Write {
        object: 0,
        value: Value::Large,
        faults,
        process,
    }
}

fn healthy_write(value: Value) -> Event {
    Event::Write {
        object: 0,
        value,
        faults: vec![],
        process: Process::Healthy,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Openings that each set up one hazard, with some play in their timings.
fn opening(rng: &mut StdRng) -> Vec<Event> {
    match rng.random_range(0..16) {
        // The scanners are down while a node's writers die at once, more of them than a
        // scanner keeps claims waiting for, and the cleaners are slow (their fences held
        // most of a minute): back, the scanners drain a backlog under backpressure. Writers
        // that die during the drain must not wait behind it.
        15 => {
            let outage = secs(rng.random_range(60..240));
            let slow = Rule {
                op: Some(Op::HvFence),
                skip: 0,
                times: 40,
                fault: Fault::Delay(secs(rng.random_range(90..240))),
            };
            let mut events = vec![Event::RecoveryOutage(outage)];
            for cleaner in 0..2 {
                events.push(Event::FaultCleaner {
                    cleaner,
                    rule: slow,
                });
            }
            // In half, the scanners hold their shards under leases and one freezes early
            // in a long drain, up to 15 s after a writer that died turned stale: between
            // its pages, its row changes hands unclaimed, read by neither holder's fresh
            // read unless the new one looks back over the handover.
            if rng.random_bool(0.5) {
                events.push(Event::Backlog {
                    writers: rng.random_range(50..60),
                });
                events.push(Event::Sleep(outage + secs(rng.random_range(10..30))));
                // One: a second, in the other scanner's shards, would take that one's
                // room kept for fresh rows, and the first would rightly wait for room.
                events.push(Event::Backlog { writers: 1 });
                events.push(Event::Sleep(secs(rng.random_range(30..45))));
                events.push(Event::FreezeScanner {
                    scanner: rng.random_range(0..2),
                    freeze: secs(rng.random_range(100..200)),
                });
            } else {
                events.push(Event::Backlog {
                    writers: rng.random_range(30..60),
                });
                events.push(Event::Sleep(outage + secs(rng.random_range(10..120))));
                for _ in 0..rng.random_range(1..4) {
                    events.push(Event::Backlog { writers: 1 });
                    events.push(Event::Sleep(secs(rng.random_range(5..60))));
                }
            }
            events.push(Event::Sleep(secs(rng.random_range(300..600))));
            events
        }
        // A deferred put's client sends its parts in time and completes the upload long
        // after the deadline, after recovery converged the change and removed its row; the
        // writer dies right after its upload call. The end of the stream is what creates
        // the object: it must not pass once the guard has lapsed, or the blob lands with no
        // row naming it and no writer left to delete it (I2). Or its upload fails long
        // before a distant deadline, and the writer hands the change to recovery after its
        // upload settle: not before the deadline a scanner may already be watching for.
        10 => {
            let within = secs(rng.random_range(40..600));
            let after = secs(rng.random_range(0..within.as_secs() / 2));
            let (end, fault) = if rng.random_bool(0.5) {
                (
                    within + RECOVERY_SETTLE + secs(rng.random_range(120..600)),
                    Fault::CrashAfter,
                )
            } else {
                (secs(rng.random_range(0..10)), Fault::Fail)
            };
            vec![
                Event::Write {
                    object: 0,
                    value: Value::Deferred {
                        within,
                        finish: Finish::Stream { after, end },
                    },
                    faults: vec![Rule::once(Op::LtPut, fault)],
                    process: Process::Healthy,
                },
                Event::Sleep(end + RECOVERY_SETTLE + secs(700)),
            ]
        }
        // A writer dies before its HV write while the cleaners' calls fail for a while on
        // one store (a GCS or Bigtable outage on recovery's side, outlasting their retries)
        // or land late after their errors: no job may end as if a failed call had done its
        // work, and none may be lost for one.
        11 => {
            // GCS deletes twice as often: the call whose failure is easiest to mistake.
            let op = [
                Op::LtDelete,
                Op::LtDelete,
                Op::HvFence,
                Op::Defer,
                Op::RemoveMany,
                Op::Get,
            ][rng.random_range(0..6)];
            let fault = if rng.random_bool(0.75) {
                Fault::Fail
            } else {
                Fault::Straggle(secs(rng.random_range(1..=MAX_STRAGGLE.as_secs())))
            };
            // A hiccup past the retries, or an outage until quiescence heals it.
            let times = if rng.random_bool(0.5) {
                rng.random_range(3..=12)
            } else {
                usize::MAX
            };
            let rule = Rule {
                op: Some(op),
                skip: 0,
                times,
                fault,
            };
            vec![
                Event::FaultCleaner { cleaner: 0, rule },
                Event::FaultCleaner { cleaner: 1, rule },
                large_put(
                    vec![Rule::once(Op::HvCas, Fault::CrashBefore)],
                    Process::Healthy,
                ),
                Event::Sleep(secs(rng.random_range(60..300))),
            ]
        }
        // An audit reads the changelog, and its listing takes a minute or two; meanwhile a
        // writer records a change, uploads and dies before its HV write (or a healthy one
        // completes). The blob is younger than the audit's snapshot: not the audit's to
        // judge, whatever its minimum age (the change's row, recorded after the snapshot,
        // is what recovery acts on).
        12 => vec![
            Event::Audit {
                min_age: Duration::ZERO,
                list_delay: secs(rng.random_range(30..120)),
            },
            large_put(
                if rng.random_bool(0.5) {
                    vec![Rule::once(Op::HvCas, Fault::CrashBefore)]
                } else {
                    vec![]
                },
                Process::Healthy,
            ),
            Event::Sleep(secs(rng.random_range(150..300))),
        ],
        // Scanners hold their shards under leases. A writer dies before its HV write; as
        // its row turns stale one scanner's host freezes past its leases' TTL (and in half
        // of them the other is killed and replaced). The frozen holder must stop reading
        // its shards before another takes them; the taker reads them whole and claims the
        // row within a lease period and a round.
        13 => {
            let mut events = vec![
                large_put(
                    vec![Rule::once(Op::HvCas, Fault::CrashBefore)],
                    Process::Healthy,
                ),
                Event::Sleep(secs(rng.random_range(5..35))),
                Event::FreezeScanner {
                    scanner: rng.random_range(0..2),
                    freeze: secs(rng.random_range(25..150)),
                },
            ];
            if rng.random_bool(0.5) {
                events.push(Event::RestartScanner(rng.random_range(0..2)));
            }
            events.push(Event::Sleep(secs(rng.random_range(150..400))));
            events
        }
        // Three writers die before their HV writes at once, so that their jobs reach the
        // cleaners together and the removals share a batch; a batch's second half fails,
        // loses its response or lands late. Rows a failed half left must be converged
        // again; none may be taken for removed.
        14 => {
            let fault = match rng.random_range(0..3) {
                0 => Fault::Fail,
                1 => Fault::LoseResponse,
                _ => Fault::Straggle(secs(rng.random_range(1..=MAX_STRAGGLE.as_secs()))),
            };
            // The first removal is slow, so the next ones queue behind it and leave as
            // one batch, whose halves are the second and third calls.
            let slow = Rule::once(Op::RemoveMany, Fault::Delay(secs(2)));
            let rule = Rule {
                op: Some(Op::RemoveMany),
                skip: rng.random_range(1..3),
                times: rng.random_range(1..6),
                fault,
            };
            let mut events = Vec::new();
            for cleaner in 0..2 {
                events.push(Event::FaultCleaner {
                    cleaner,
                    rule: slow,
                });
                events.push(Event::FaultCleaner { cleaner, rule });
            }
            for object in 0..3 {
                events.push(Event::Write {
                    object,
                    value: Value::Large,
                    faults: vec![Rule::once(Op::HvCas, Fault::CrashBefore)],
                    process: Process::Healthy,
                });
            }
            events.push(Event::Sleep(secs(rng.random_range(120..300))));
            events
        }
        // The cleaners' clocks are off by an hour or more — both behind, or one behind and
        // one ahead — while a writer dies before its HV write with its first upload attempt
        // still on its way for minutes. Recovery deletes the upload and must keep the row
        // for the whole settle, in the changelog's time, whichever cleaner takes the job
        // and its duplicates.
        5 => {
            let straggle = secs(rng.random_range(60..=MAX_UPLOAD_STRAGGLE.as_secs()));
            let skew = secs(rng.random_range(1800..7200));
            // Duplicates of the job reach cleaners ahead and behind; without them, only
            // the scanner that watches the deferred row takes it up at its due time.
            let duplicates = if rng.random_bool(0.5) {
                Event::Queue(QueueFault::Duplicate(rng.random_range(1..4)))
            } else {
                Event::Sleep(secs(1))
            };
            // In half, jobs run long (each cleaner's first fence held past half a lease)
            // and the first cleaner runs ahead (the second behind), so a claim is extended
            // while a clock is off: the extension must be in the changelog's time, or a dead job's row is
            // held for the skew.
            let slow = rng.random_bool(0.5);
            let fence = Rule::once(Op::HvFence, Fault::Delay(secs(rng.random_range(30..400))));
            let mut events: Vec<Event> = if slow {
                (0..2)
                    .map(|cleaner| Event::FaultCleaner {
                        cleaner,
                        rule: fence,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            // In half, GCS cannot answer the second pass's existence check (an outage
            // that outlasts the retries): the pass must fail and keep the row, not take
            // "no answer" for "no blob" with the late landing there.
            if rng.random_bool(0.5) {
                let times = rng.random_range(5..=12);
                events.extend((0..2).map(|cleaner| Event::FaultCleaner {
                    cleaner,
                    rule: Rule {
                        op: Some(Op::LtExists),
                        skip: 0,
                        times,
                        fault: Fault::Fail,
                    },
                }));
            }
            // In half, the cleaners read the changelog's time long before: two earlier
            // crashes recovered (both passes), then the pool idles for half an hour or so.
            // A time kept from then (a cache) would stamp the deferral far in the past.
            // First of all, so that the faults above meet the scenario, not these.
            if rng.random_bool(0.5) {
                let crash = || {
                    large_put(
                        vec![Rule::once(Op::HvCas, Fault::CrashBefore)],
                        Process::Healthy,
                    )
                };
                let idle = Event::Sleep(RECOVERY_SETTLE + secs(rng.random_range(1200..2400)));
                events.splice(0..0, [crash(), crash(), idle]);
            }
            events.extend([
                Event::SkewCleaner {
                    cleaner: 0,
                    by: skew,
                    ahead: slow,
                },
                Event::SkewCleaner {
                    cleaner: 1,
                    by: skew,
                    ahead: !slow && rng.random_ratio(1, 3),
                },
                large_put(
                    vec![
                        Rule::once(Op::LtPut, Fault::Straggle(straggle)),
                        Rule::once(Op::HvCas, Fault::CrashBefore),
                    ],
                    Process::Healthy,
                ),
                duplicates,
                Event::Sleep(MAX_UPLOAD_STRAGGLE + secs(60)),
            ]);
            events
        }
        // A small write lands and its host freezes before the response arrives; a large put
        // reads the row after it and its write is held while its row goes stale, so
        // recovery fences. The small write wakes, is refused by the fence, re-reads and
        // overwrites: it must not bring back the version the held write still expects.
        3 => vec![
            Event::Write {
                object: 0,
                value: if rng.random_bool(0.5) {
                    Value::Absent
                } else {
                    Value::Small
                },
                faults: vec![],
                process: Process::SuspendAfter(Op::HvCas, LONGER_THAN_TTLS),
            },
            large_put(
                vec![
                    Rule::once(
                        Op::HvCas,
                        Fault::Delay(LONGER_THAN_TTLS + secs(rng.random_range(2..8))),
                    ),
                    Rule::on(Op::Heartbeat, Fault::Delay(LONGER_THAN_TTLS * 2)),
                ],
                Process::Healthy,
            ),
            Event::Sleep(LONGER_THAN_TTLS + secs(60)),
        ],
        // Recovery is down while a writer whose first attempt landed freezes past every
        // TTL, and the object is deleted meanwhile: the writer's retry must not be sent.
        0 => vec![
            Event::RecoveryOutage(LONGER_THAN_TTLS + secs(300)),
            large_put(vec![], Process::SuspendAfter(Op::HvCas, LONGER_THAN_TTLS)),
            Event::Sleep(secs(rng.random_range(5..60))),
            healthy_write(Value::Absent),
            Event::Sleep(LONGER_THAN_TTLS),
        ],
        // A writer whose clock runs behind sees its upload's first attempt fail and land
        // most of a minute later; its retry succeeds, and an overlapping put makes the
        // revision unreferenced either way. The writer hands the change to recovery due
        // after its upload settle — in the changelog's time, or recovery deletes before the
        // late attempt lands. In half of them it cannot read the changelog's time at all.
        9 => {
            let mut faults = vec![Rule::once(
                Op::LtPut,
                Fault::Straggle(secs(rng.random_range(40..=58))),
            )];
            if rng.random_bool(0.5) {
                faults.push(Rule::on(Op::Now, Fault::Fail));
            }
            vec![
                Event::Write {
                    object: 0,
                    value: Value::Large,
                    faults,
                    process: Process::ClockOff(secs(rng.random_range(300..3600)), false),
                },
                healthy_write(Value::Large),
                Event::Sleep(secs(rng.random_range(120..240))),
            ]
        }
        // A live writer's upload is slow (its heartbeats on time) while a bystander
        // publishes a job naming its row: with the owner's token, or a claim nobody holds.
        // No cleaner may act on it.
        8 => vec![
            large_put(
                vec![Rule::once(
                    Op::LtPut,
                    Fault::Delay(secs(rng.random_range(40..90))),
                )],
                Process::Healthy,
            ),
            Event::Sleep(secs(1)),
            Event::Forge {
                object: 0,
                forgery: if rng.random_bool(0.5) {
                    Forgery::OwnersToken
                } else {
                    Forgery::UnknownClaim
                },
            },
            Event::Sleep(secs(100)),
        ],
        // A writer dies before its HV write; a scanner claims the change and is restarted
        // while the job waits in the queue. The cleaner that takes the job defers the row
        // for its settle: the restarted scanner, which saw the row under its predecessor's
        // lease, must take it up at its `due_at`, not when the lease ends.
        7 => vec![
            Event::Queue(QueueFault::Delay(1, secs(rng.random_range(60..180)))),
            large_put(
                vec![Rule::once(Op::HvCas, Fault::CrashBefore)],
                Process::Healthy,
            ),
            // Claimed a threshold and a poll after the crash; restarted before the job
            // arrives; looked at again after the deferral's due time but before the lease's
            // end (a lease of ten minutes).
            Event::Sleep(secs(rng.random_range(55..75))),
            Event::RestartScanner(0),
            Event::RestartScanner(1),
            Event::Sleep(secs(rng.random_range(450..580))),
        ],
        // A writer's record lands and its host freezes past the staleness threshold before
        // the response arrives: recovery claims the change meanwhile (and may defer it for
        // its settle). The writer wakes and sends the record again; that attempt must not
        // take the row back, or the scanner watching it loses track of when it is due.
        6 => vec![
            large_put(
                vec![],
                Process::SuspendAfter(Op::Record, secs(rng.random_range(70..200))),
            ),
            Event::Sleep(secs(rng.random_range(200..400))),
        ],
        // A writer freezes after its upload; scanners see its row stale but their claims
        // stall until after it has woken and heartbeated: they must lose.
        1 => {
            let freeze = secs(rng.random_range(45..80));
            let stall = secs(rng.random_range(40..60));
            vec![
                large_put(vec![], Process::SuspendAfter(Op::LtPut, freeze)),
                Event::StallScanner { scanner: 0, stall },
                Event::StallScanner { scanner: 1, stall },
                Event::Sleep(secs(150)),
            ]
        }
        // A writer's compare-and-write is held while its row goes stale; the cleaner that
        // takes the job stalls at its third call: the held write lands meanwhile.
        2 => {
            let held = secs(rng.random_range(45..70));
            let stall = secs(rng.random_range(20..40));
            vec![
                large_put(
                    vec![
                        Rule::on(Op::Heartbeat, Fault::Delay(secs(120))),
                        Rule::once(Op::HvCas, Fault::Delay(held)),
                    ],
                    Process::Healthy,
                ),
                Event::StallCleaner {
                    cleaner: 0,
                    at_call: 2,
                    stall,
                },
                Event::StallCleaner {
                    cleaner: 1,
                    at_call: 2,
                    stall,
                },
                Event::Sleep(secs(150)),
            ]
        }
        // A writer's first attempt straggles and its retry conflicts with another large
        // put; the object is then deleted, before the straggler lands on the empty row. In
        // half of them the straggler is held for longer than every TTL and deadline: no
        // refusal may rest on one.
        _ => {
            let (straggle, after) = if rng.random_bool(0.5) {
                (secs(rng.random_range(7..10)), secs(20))
            } else {
                (LONGER_THAN_TTLS, LONGER_THAN_TTLS + secs(20))
            };
            vec![
                large_put(
                    vec![
                        Rule::once(Op::HvCas, Fault::Straggle(straggle)),
                        Rule {
                            op: Some(Op::HvCas),
                            skip: 1,
                            times: 1,
                            fault: Fault::Delay(secs(2)),
                        },
                    ],
                    Process::Healthy,
                ),
                healthy_write(Value::Large),
                Event::Sleep(secs(3)),
                healthy_write(Value::Absent),
                Event::Sleep(after),
            ]
        }
    }
}

/// A clock rate off by 100 ppm to 2 %, either way.
fn drift(rng: &mut StdRng) -> i64 {
    let ppm = rng.random_range(100..20_000);
    if rng.random_bool(0.5) { ppm } else { -ppm }
}

fn event(rng: &mut StdRng, shape: Shape) -> Event {
    // Most writes go to the in-scope objects; one in ten to an object recovery must leave.
    let object = if rng.random_ratio(1, 10) {
        shape.objects + rng.random_range(0..2)
    } else {
        rng.random_range(0..shape.objects)
    };
    match rng.random_range(0..100) {
        0..=49 => {
            let value = match rng.random_range(0..12) {
                0..=2 => Value::Absent,
                3..=5 => Value::Small,
                6..=8 => Value::Large,
                9..=10 => streamed(rng),
                _ => deferred(rng),
            };
            let faults = write_faults(rng);
            let process = match rng.random_range(0..14) {
                0 => Process::SuspendAfter(Op::HvCas, LONGER_THAN_TTLS),
                1 => Process::SuspendAfter(
                    if rng.random_bool(0.5) {
                        Op::LtPut
                    } else {
                        Op::Record
                    },
                    Duration::from_secs(rng.random_range(20..200)),
                ),
                2 => Process::ClockStep(
                    Duration::from_secs(rng.random_range(60..7200)),
                    rng.random_bool(0.5),
                ),
                // Within the skew a running scanner's rounds allow for (an hour), or past it.
                3 => Process::ClockOff(
                    Duration::from_secs(rng.random_range(60..5400)),
                    rng.random_bool(0.5),
                ),
                // Up to 2 %, either way: a broken oscillator, far past a real one's 50 ppm.
                4 => Process::ClockRate(drift(rng)),
                _ => Process::Healthy,
            };
            Event::Write {
                object,
                value,
                faults,
                process,
            }
        }
        50..=55 => Event::Read {
            object,
            hold: rng
                .random_bool(0.5)
                .then(|| Duration::from_millis(rng.random_range(10..3000))),
            streamed: rng.random_bool(0.5),
        },
        56..=57 => Event::FaultCleaner {
            cleaner: rng.random_range(0..shape.cleaners),
            rule: cleaner_fault(rng),
        },
        58..=59 => Event::FailScanner {
            scanner: rng.random_range(0..shape.scanners),
            // The re-read of watched rows twice as often: it is what a round relies on.
            op: [Op::Scan, Op::Get, Op::Get, Op::Claim, Op::Now, Op::Extend]
                [rng.random_range(0..6)],
            skip: rng.random_range(0..4),
            times: rng.random_range(1..4),
        },
        69 => Event::FreezeScanner {
            scanner: rng.random_range(0..shape.scanners),
            freeze: secs(rng.random_range(5..120)),
        },
        60..=68 => Event::Sleep(match rng.random_range(0..10) {
            0 => LONGER_THAN_TTLS,
            1..=3 => Duration::from_secs(rng.random_range(30..300)),
            _ => Duration::from_secs(rng.random_range(1..30)),
        }),
        72..=73 => Event::RestartScanner(rng.random_range(0..shape.scanners)),
        74 => {
            let min_age = [Duration::ZERO, secs(30), secs(300)][rng.random_range(0..3)];
            let list_delay = secs(rng.random_range(0..120));
            if rng.random_bool(0.5) {
                Event::Audit {
                    min_age,
                    list_delay,
                }
            } else {
                Event::FannedAudit {
                    min_age,
                    list_delay,
                    delete: rng.random_ratio(3, 4),
                    replay: match rng.random_range(0..6) {
                        0 => Some(Replay::Forged),
                        1 => Some(Replay::Expired),
                        2 => Some(Replay::Duplicate),
                        3 => Some(Replay::NoSuchRange),
                        _ => None,
                    },
                }
            }
        }
        75..=78 => Event::KillCleaner {
            cleaner: rng.random_range(0..shape.cleaners),
            at_call: rng.random_range(0..6),
        },
        79..=81 => Event::StallCleaner {
            cleaner: rng.random_range(0..shape.cleaners),
            at_call: rng.random_range(0..4),
            stall: Duration::from_secs(rng.random_range(5..90)),
        },
        82 => Event::StallScanner {
            scanner: rng.random_range(0..shape.scanners),
            stall: Duration::from_secs(rng.random_range(5..MAX_SCANNER_STALL.as_secs())),
        },
        70 => Event::SkewCleaner {
            cleaner: rng.random_range(0..shape.cleaners),
            by: Duration::from_secs(rng.random_range(60..7200)),
            ahead: rng.random_bool(0.5),
        },
        71 => Event::DriftCleaner {
            cleaner: rng.random_range(0..shape.cleaners),
            ppm: drift(rng),
        },
        83..=90 => Event::Forge {
            object,
            forgery: match rng.random_range(0..4) {
                0 => Forgery::OwnersToken,
                1 => Forgery::OldClaim,
                2 => Forgery::UnknownClaim,
                _ => Forgery::Poison,
            },
        },
        91..=93 => Event::RecoveryOutage(Duration::from_secs(rng.random_range(30..600))),
        _ => Event::Queue(match rng.random_range(0..3) {
            0 => QueueFault::Duplicate(rng.random_range(1..5)),
            1 => QueueFault::Drop(rng.random_range(1..3)),
            _ => QueueFault::Delay(
                rng.random_range(1..5),
                Duration::from_secs(rng.random_range(5..120)),
            ),
        }),
    }
}

/// A fault on recovery's side: any of a cleaner's calls failing, losing its response,
/// landing late after its error (within a Bigtable deadline), or held (a host suspended
/// mid-call, mid-`keep_claim`).
fn cleaner_fault(rng: &mut StdRng) -> Rule {
    let op = [
        Op::Get,
        Op::Defer,
        Op::RemoveMany,
        Op::Extend,
        Op::Now,
        Op::HvFence,
        Op::HvRead,
        Op::LtDelete,
        Op::LtExists,
    ][rng.random_range(0..9)];
    let fault = match rng.random_range(0..4) {
        0 => Fault::Fail,
        1 => Fault::LoseResponse,
        2 => Fault::Straggle(secs(rng.random_range(1..=MAX_STRAGGLE.as_secs()))),
        _ => Fault::Delay(secs(rng.random_range(1..90))),
    };
    // A hiccup the retries hide, or, in a third, an outage that outlasts them.
    let times = if rng.random_ratio(1, 3) {
        rng.random_range(5..=12)
    } else {
        rng.random_range(1..4)
    };
    Rule {
        op: Some(op),
        skip: rng.random_range(0..3),
        times,
        fault,
    }
}

/// A streamed put: paced slower than the staleness threshold in some (its heartbeats must
/// carry it), ending late in some, failing in a quarter.
fn streamed(rng: &mut StdRng) -> Value {
    Value::Streamed {
        pace: secs(rng.random_range(0..45)),
        end: secs(rng.random_range(0..60)),
        fails: rng.random_ratio(1, 4),
    }
}

/// A deferred put: finished in time in most, its stream ending after the deadline in some
/// (by up to a long settle), aborted or never finished in a sixth each.
fn deferred(rng: &mut StdRng) -> Value {
    let within = secs(rng.random_range(40..600));
    let after = secs(rng.random_range(0..within.as_secs() / 2));
    let finish = match rng.random_range(0..6) {
        0 => Finish::Abort { after },
        1 => Finish::Never,
        2 => Finish::Stream {
            after,
            end: within + secs(rng.random_range(0..900)),
        },
        _ => Finish::Stream {
            after,
            end: secs(rng.random_range(0..within.as_secs() / 4)),
        },
    };
    Value::Deferred { within, finish }
}

/// The faults one write's store calls meet: crashes at any call, pauses, lost responses,
/// failures, and stragglers (a call that fails to its caller and lands later anyway).
fn write_faults(rng: &mut StdRng) -> Vec<Rule> {
    let pause = Duration::from_secs(rng.random_range(20..70));
    let straggle = Duration::from_secs(rng.random_range(1..=MAX_STRAGGLE.as_secs()));
    let crash = if rng.random_bool(0.5) {
        Fault::CrashBefore
    } else {
        Fault::CrashAfter
    };
    let short = Duration::from_secs(rng.random_range(1..4));
    match rng.random_range(0..32) {
        0..=9 => vec![],
        10..=14 => vec![Rule::nth_call(rng.random_range(0..7), crash)],
        15..=16 => vec![
            Rule::on(Op::Heartbeat, Fault::Delay(pause)),
            Rule::on(Op::LtPut, Fault::Delay(pause)),
        ],
        17 => vec![
            Rule::on(Op::Heartbeat, Fault::Delay(pause)),
            Rule::once(Op::HvCas, Fault::Delay(pause)),
        ],
        18..=19 => vec![Rule::on(Op::HvCas, Fault::LoseResponse)],
        20 => vec![Rule::once(Op::HvCas, Fault::Straggle(straggle))],
        21 => vec![Rule::on(Op::HvCas, Fault::Straggle(straggle))],
        22 => vec![Rule::once(Op::LtPut, Fault::Straggle(straggle))],
        23 => vec![Rule::on(Op::LtPut, Fault::Straggle(straggle))],
        24 => vec![Rule::once(Op::LtGet, Fault::Delay(pause))],
        25 => vec![Rule::on(Op::Heartbeat, Fault::Straggle(straggle))],
        26 => vec![Rule::once(Op::Remove, Fault::Fail)],
        // A heartbeat attempt lands late while its retry succeeded, during a slow write:
        // it may land after the change's row is gone.
        28 => vec![
            Rule::on(Op::LtPut, Fault::Delay(pause)),
            Rule {
                op: Some(Op::Heartbeat),
                skip: rng.random_range(0..6),
                times: 1,
                fault: Fault::Straggle(straggle),
            },
        ],
        // The first attempt straggles and the retry is slow: others may commit in between,
        // so the retry conflicts while the first attempt is still on its way.
        29 => vec![
            Rule::once(Op::HvCas, Fault::Straggle(straggle)),
            Rule {
                op: Some(Op::HvCas),
                skip: 1,
                times: 1,
                fault: Fault::Delay(short),
            },
        ],
        // The upload's first attempt fails to the writer and lands later; its retry
        // succeeds; the writer dies before its HV write. Recovery deletes the upload (a
        // staleness threshold and up to a scan interval later), and the straggler lands
        // after that but within threshold + settle: the row must still be there, so that a
        // second pass deletes it.
        31 => vec![
            Rule::once(
                Op::LtPut,
                Fault::Straggle(Duration::from_secs(rng.random_range(45..=58))),
            ),
            Rule::once(Op::HvCas, Fault::CrashBefore),
        ],
        // The request is held past every TTL after the guard passed it (the process stalls,
        // its heartbeats with it).
        _ => vec![
            Rule::once(Op::HvCas, Fault::Delay(LONGER_THAN_TTLS)),
            Rule::on(Op::Heartbeat, Fault::Delay(LONGER_THAN_TTLS)),
        ],
    }
}

//! `tiersweep audit`: list the LT bucket, find orphans, and with `--delete` hand them to
//! recovery. The work is `tiersweep::audit`; this wires arguments, signals, progress and
//! the report.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tiersweep::Stores;
use tiersweep::worker::Config;
use tiersweep::worker::audit::{
    Audit, AuditConfig, AuditReport, AuditTrail, Checkpoint, Counts, FileTrail, RangeState,
    TopicTrail,
};
use tiersweep::{LtAccess, clock};
use tokio_util::sync::CancellationToken;

use crate::exit::ConfigFailure;

mod fanned;

fn duration(text: &str) -> Result<Duration, String> {
    tiersweep::worker::parse_duration(text)
}

#[derive(Debug, clap::Args)]
#[command(
    long_about = "List the LT bucket and join every blob with HV and the changelog: \
    referenced (HV's tombstone names it), in flight (a changelog row names it), too young to \
    judge (created less than --min-age before the audit began), or an orphan.\n\n\
    A dry run by default. With --delete, each orphan becomes a recovery change (a changelog \
    row naming it), which `tiersweep scan` + `tiersweep clean` converge like any other: they \
    fence the object's HV row and keep the blob if HV names it. Each deletion is written to \
    --trail first.\n\n\
    Fails closed: a listing or read error ends its range with nothing deleted in it, and a \
    malformed changelog row stops every deletion. Progress is saved per range to \
    --checkpoint; run the same command again to resume.\n\n\
    For buckets too big for one process: `--fan-out` records the run in the changelog table \
    and publishes one job per range to pubsub.audit_topic, then waits for the ranges to \
    finish; `--worker` processes (any number, long-running) take the jobs. A worker takes \
    every parameter from the recorded run, none from the message, and refuses (dead-letters) \
    jobs of unknown or expired runs."
)]
pub struct AuditArgs {
    /// Only blobs whose names start with this (default: the whole bucket).
    #[arg(long, default_value = "")]
    prefix: String,
    /// Split the prefix into this many name ranges (1–62), listed in parallel and
    /// checkpointed one by one.
    #[arg(long, default_value_t = 16)]
    ranges: usize,
    /// Ranges listed at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Never judge a blob younger than this (GCS creation time): an upload may just have
    /// landed. Accepts 30m, 24h, 7d.
    #[arg(long, default_value = "24h", value_parser = duration)]
    min_age: Duration,
    /// Request deletion of the orphans found (through recovery). Needs --trail or
    /// --trail-topic (with --fan-out, the workers' own).
    #[arg(long, conflicts_with = "worker")]
    delete: bool,
    /// JSON-lines file every requested deletion is appended to (and synced) before it is
    /// requested: blob, reason, change id, audit run.
    #[arg(long, value_name = "FILE", conflicts_with = "trail_topic")]
    trail: Option<PathBuf>,
    /// Record every requested deletion as a message on pubsub.audit_trail_topic instead,
    /// each accepted by Pub/Sub before its deletion is requested (workers without a
    /// lasting disk).
    #[arg(long)]
    trail_topic: bool,
    /// Deletion requests per second, across ranges.
    #[arg(long, default_value_t = 50.0)]
    max_deletes_per_s: f64,
    /// Listing calls (1,000 blobs each) per second, across ranges.
    #[arg(long, default_value_t = 50.0)]
    max_lists_per_s: f64,
    /// A range with more orphans than this deletes none (a misconfigured HV table makes
    /// every blob look orphaned).
    #[arg(long, default_value_t = 100_000)]
    max_orphans_per_range: usize,
    /// Also check that every HV tombstone names a blob that exists (one blob check per
    /// large object); dangling ones are reported, never repaired.
    #[arg(long)]
    dangling: bool,
    /// Save progress here after each range, and resume from it; removed once the audit
    /// completes.
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Print the JSON report on stdout instead of the summary.
    #[arg(long)]
    json: bool,
    /// Record this audit as a run and publish its ranges as jobs for `--worker`
    /// processes, then wait for them (progress as ranges finish).
    #[arg(long, conflicts_with_all = ["worker", "checkpoint", "resume_run"])]
    fan_out: bool,
    /// With --fan-out: how long the run's jobs stay valid (by the changelog's clock);
    /// a job delivered later is refused as stale.
    #[arg(long, default_value = "7d", value_parser = duration)]
    run_ttl: Duration,
    /// Publish again the jobs of this run's unfinished ranges, and wait for them.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["worker", "checkpoint"])]
    resume_run: Option<String>,
    /// With --fan-out or --resume-run: return once the jobs are published.
    #[arg(long)]
    no_wait: bool,
    /// Take range jobs from pubsub.audit_subscription until SIGTERM (a long-running
    /// pool; health endpoints as the other workers). Parameters come from each job's
    /// recorded run; --trail, --max-deletes-per-s and --max-lists-per-s are this worker's.
    #[arg(long, conflicts_with = "checkpoint")]
    worker: bool,
}

pub async fn run(args: &AuditArgs, config: Config) -> Result<()> {
    if args.worker {
        return fanned::worker(args, config).await;
    }
    let audit_config = AuditConfig {
        prefix: args.prefix.clone(),
        ranges: args.ranges,
        concurrency: args.concurrency,
        min_age: args.min_age,
        delete: args.delete,
        max_deletes_per_s: Some(args.max_deletes_per_s),
        max_lists_per_s: Some(args.max_lists_per_s),
        max_orphans_per_range: args.max_orphans_per_range,
        dangling: args.dangling,
        // The retries of a batch job that would rather wait than give up a range.
        ..AuditConfig::default()
    };
    audit_config
        .validate()
        .context(ConfigFailure("checking the audit's arguments".into()))?;
    if args.fan_out || args.resume_run.is_some() {
        let report = fanned::coordinate(args, &config, &audit_config).await?;
        return match report {
            Some(report) => conclude(args, &report),
            None => Ok(()),
        };
    }
    if args.delete && args.trail.is_none() && !args.trail_topic {
        return Err(anyhow::Error::new(ConfigFailure(
            "--delete needs --trail or --trail-topic: every deletion is recorded before it is \
             requested"
                .into(),
        )));
    }
    let stores = Stores::connect_to(
        &config.bigtable,
        &config.gcs,
        clock::system(),
        LtAccess::Audit,
    )
    .await
    .context("connecting to Bigtable and GCS")?;
    let cancel = CancellationToken::new();
    crate::worker::cancel_on_signals(cancel.clone())?;
    let mut audit = Audit::new(stores, audit_config).cancel_on(cancel.clone());
    if let Some(path) = &args.checkpoint {
        audit = audit.checkpoint(Checkpoint::new(path));
    }
    if let Some(trail) = open_trail(args, &config).await? {
        audit = audit.trail(trail);
    }
    let progress = tokio::spawn(show_progress(audit.counts(), args.ranges, cancel.clone()));
    let report = audit.run().await;
    progress.abort();
    let report = report?;
    conclude(args, &report)?;
    if !report.complete() {
        eprintln!(
            "interrupted: {} range(s) unfinished{}",
            report
                .ranges
                .iter()
                .filter(|r| r.state == RangeState::Interrupted)
                .count(),
            if args.checkpoint.is_some() {
                "; run the same command to resume"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// The trail the arguments name: a file, the trail topic, or none.
async fn open_trail(args: &AuditArgs, config: &Config) -> Result<Option<Arc<dyn AuditTrail>>> {
    if let Some(path) = &args.trail {
        return Ok(Some(Arc::new(FileTrail::open(path).await?)));
    }
    if args.trail_topic {
        let trail = TopicTrail::connect(&config.pubsub)
            .await
            .context("connecting to the audit trail topic")?;
        return Ok(Some(Arc::new(trail)));
    }
    Ok(None)
}

/// Writes and prints the report; fails when a range failed.
fn conclude(args: &AuditArgs, report: &AuditReport) -> Result<()> {
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_summary(report);
    }
    let failed = report.failed().count();
    if failed > 0 {
        bail!(
            "{failed} range(s) failed and were not judged whole; nothing was deleted in them \
             after the error (see the report; run again to retry them)"
        );
    }
    Ok(())
}

/// A line rewritten in place on a terminal; a log line every 10 s otherwise.
async fn show_progress(counts: Arc<Counts>, ranges: usize, cancel: CancellationToken) {
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(10)
    };
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = cancel.cancelled() => return,
        }
        let (listed, orphans, deletes, done) = (
            counts.listed.load(Ordering::Relaxed),
            counts.orphans.load(Ordering::Relaxed),
            counts.deletes_requested.load(Ordering::Relaxed),
            counts.ranges_finished.load(Ordering::Relaxed),
        );
        if terminal {
            eprint!(
                "\raudit: {done}/{ranges} ranges, {listed} blobs listed, {orphans} orphans, \
                 {deletes} deletions requested "
            );
        } else {
            tracing::info!(
                ranges_finished = done,
                ranges,
                listed,
                orphans,
                deletes_requested = deletes,
                "audit in progress"
            );
        }
    }
}

fn print_summary(r: &AuditReport) {
    let t = &r.totals;
    eprintln!();
    println!(
        "audit {} of {:?} (min age {}s, {}), judged at {}",
        r.run,
        r.prefix,
        r.min_age_s,
        if r.delete { "deleting" } else { "dry run" },
        r.judged_at
    );
    println!(
        "  {} blobs: {} referenced, {} in flight, {} young, {} not tiersweep's, {} orphans",
        t.listed, t.referenced, t.in_flight, t.young, t.foreign, t.orphans
    );
    for (bucket, n) in &t.orphans_by_age {
        println!("    orphans aged {bucket}: {n}");
    }
    if r.delete {
        println!(
            "  deletions requested (through recovery): {}",
            t.deletes_requested
        );
    }
    if r.malformed_changelog_rows > 0 {
        println!(
            "  WARNING: {} malformed changelog rows; blobs they name may be counted as orphans",
            r.malformed_changelog_rows
        );
    }
    for range in &r.ranges {
        if let RangeState::Failed { error } = &range.state {
            println!("  range {} FAILED: {error}", range.index);
        }
    }
    if t.tombstones_checked > 0 || t.dangling > 0 {
        println!(
            "  tombstones checked: {}, dangling: {}",
            t.tombstones_checked, t.dangling
        );
        for d in &r.dangling_examples {
            println!("  DANGLING {} -> {} (missing)", d.object, d.blob);
        }
    }
    for o in r.orphan_examples.iter().take(10) {
        println!("  orphan {} ({} s old)", o.blob, o.age_s);
    }
    if r.orphan_examples.len() > 10 {
        println!(
            "  … the report (--report) names up to {}",
            r.orphan_examples.len()
        );
    }
}

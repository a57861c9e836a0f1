//! `tiersweep audit --fan-out` / `--resume-run` (the coordinator) and `--worker`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tiersweep::worker::audit::{
    self, AuditConfig, AuditReport, AuditRuns, AuditWorker, BigtableRuns, Coordinator,
    progress_report,
};
use tiersweep::worker::{Config, PubsubQueue};
use tiersweep::{LtAccess, Stores, clock};
use tokio_util::sync::CancellationToken;

use super::AuditArgs;
use crate::exit::ConfigFailure;

/// How often the coordinator reads the run's progress.
const POLL: Duration = Duration::from_secs(2);

/// Records the run (or finds the one to resume), publishes its jobs and, unless told not
/// to, waits for its ranges; the report of what finished, or `None` without waiting.
pub async fn coordinate(
    args: &AuditArgs,
    config: &Config,
    audit: &AuditConfig,
) -> Result<Option<AuditReport>> {
    // The changelog (its time, the run's row) and the audit topic: nothing else.
    let coordinator = Coordinator::connect(config)
        .await
        .context("connecting to the changelog table and the audit topic")?;
    let runs = coordinator.runs();
    let run = match &args.resume_run {
        Some(id) => {
            let (run, published) = coordinator
                .resume(id)
                .await
                .context(ConfigFailure(format!("resuming audit run {id}")))?;
            tracing::info!(run = %run.run, published, "unfinished range jobs published again");
            run
        }
        None => {
            let run = coordinator
                .start(audit, args.run_ttl)
                .await
                .context("starting the audit run")?;
            tracing::info!(run = %run.run, ranges = run.ranges, topic = %config.pubsub.audit_topic,
                expires = %run.expires, "range jobs published; --resume-run publishes unfinished ones again");
            run
        }
    };
    if args.no_wait {
        println!("{}", run.run);
        return Ok(None);
    }
    let cancel = CancellationToken::new();
    crate::worker::cancel_on_signals(cancel.clone())?;
    let mut last = usize::MAX;
    let mut polls = 0u32;
    loop {
        polls += 1;
        let state = runs
            .get(&run.run)
            .await
            .context("reading the run's progress")?
            .with_context(|| format!("audit run {} disappeared", run.run))?;
        let done = state.done.len();
        // On change, and once a minute regardless: a run no worker takes (the worker
        // Deployment ships scaled to zero) must not look like a hang.
        if done != last || polls.is_multiple_of(30) {
            let orphans: u64 = state.done.values().map(|s| s.orphans).sum();
            tracing::info!(run = %run.run, ranges_finished = done, ranges = run.ranges, orphans,
                "audit run in progress");
            last = done;
        }
        if done >= run.ranges || cancel.is_cancelled() {
            if done < run.ranges {
                tracing::warn!(run = %run.run, unfinished = run.ranges - done,
                    "stopped waiting; workers go on, and --resume-run waits again");
            }
            return Ok(Some(progress_report(&state)));
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = cancel.cancelled() => {}
        }
    }
}

/// Serves range jobs until SIGTERM, with health endpoints like the other pools.
pub async fn worker(args: &AuditArgs, config: Config) -> Result<()> {
    let trail = super::open_trail(args, &config).await?;
    // All three stores (listing on the bucket), the runs, the audit subscription.
    let connect = || async {
        let stores = Stores::connect_to(
            &config.bigtable,
            &config.gcs,
            clock::system(),
            LtAccess::Audit,
        )
        .await?;
        let runs: Arc<dyn AuditRuns> = Arc::new(BigtableRuns::connect(&config.bigtable).await?);
        let queue = PubsubQueue::connect_audit_worker(&config.pubsub).await?;
        Ok((stores, runs, Arc::new(queue)))
    };
    let Some(s) = crate::worker::start(&config, "audit worker", connect).await? else {
        return Ok(());
    };
    let (stores, runs, queue) = s.connected.clone();
    let mut worker = AuditWorker::new(stores, runs)
        .rates(Some(args.max_deletes_per_s), Some(args.max_lists_per_s))
        .cancel_on(s.cancel.clone());
    if let Some(trail) = trail {
        worker = worker.trail(trail);
    }
    tracing::info!(subscription = %config.pubsub.audit_subscription,
        trail = args.trail.is_some() || args.trail_topic, "taking audit range jobs");
    audit::serve(&worker, &queue)
        .await
        .context("pulling audit range jobs")?;
    crate::worker::finish(s).await
}

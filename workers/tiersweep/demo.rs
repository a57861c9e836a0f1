//! `tiersweep demo`: picks a backend, runs the library's demo with a progress line on
//! stderr, prints the report (and, with --json, one JSON object as the last stdout line).

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use tiersweep::demo::{self, DemoConfig, DemoProgress, DemoReport};
use tiersweep::queue::{JobQueue, MemoryQueue, PubsubQueue};
use tiersweep::testing::MemoryStores;
use tiersweep_testkit::emulators;

use crate::Cli;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The emulators when the gcloud emulators are installed, else in-memory stores.
    Auto,
    /// In-memory stores and queue, in this process.
    Memory,
    /// cbtemulator, the Pub/Sub emulator and fake-gcs-server, started through
    /// infra/local/start.sh when they are not running. Each run uses fresh tables,
    /// topics and bucket.
    Emulators,
    /// The stores and topic of the configuration (--config, TIERSWEEP_*), as the
    /// workers use them: the writer load for docker-compose or a test cluster. Timings
    /// come from the configuration's [protocol] section.
    Configured,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
    /// Two-tier writes to run (puts of large and small values, and deletes).
    #[arg(long, default_value_t = 1000)]
    writes: usize,
    /// Fraction of writes crashed at a random store call (0..=1).
    #[arg(long, default_value_t = 0.1)]
    crash_rate: f64,
    /// Stale-scan workers; they split the changelog's shards between them.
    #[arg(long, default_value_t = 2)]
    scanners: u16,
    /// Cleanup workers pulling jobs from the queue.
    #[arg(long, default_value_t = 4)]
    cleaners: usize,
    /// Only write, then watch the changelog drain: scanner and cleaner pools running
    /// elsewhere against the same configuration do the recovery.
    #[arg(long)]
    external_recovery: bool,
    /// With --external-recovery: the longest the demo may wait for the pools. It waits as
    /// long as the workers' settings need (threshold, upload settle, claim lease, full
    /// sweep period, read from the same configuration) and refuses to start when that is
    /// longer than this. Accepts 90s, 20m, 2h.
    #[arg(long, default_value = "5m", value_parser = tiersweep::duration::parse)]
    max_wait: std::time::Duration,
    /// Print the report as one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: &DemoArgs, cli: &Cli) -> Result<()> {
    if !(0.0..=1.0).contains(&args.crash_rate) {
        bail!(
            "--crash-rate must be between 0 and 1, got {}",
            args.crash_rate
        );
    }
    if args.scanners == 0 || args.scanners > 256 || args.cleaners == 0 || args.writes == 0 {
        bail!("--writes and --cleaners must be at least 1, --scanners between 1 and 256");
    }
    let mut config = DemoConfig {
        writes: args.writes,
        crash_rate: args.crash_rate,
        scanners: args.scanners,
        cleaners: args.cleaners,
        external_recovery: args.external_recovery,
        ..DemoConfig::default()
    };
    if args.external_recovery && args.backend != Backend::Configured {
        bail!("--external-recovery needs --backend configured: the pools must see the same stores");
    }
    let backend = match args.backend {
        Backend::Auto if emulators::running().await.is_some() || emulators::installed().await => {
            eprintln!("backend: emulators (auto: the gcloud emulators are installed)");
            Backend::Emulators
        }
        Backend::Auto => {
            eprintln!(
                "backend: in-memory (auto: no gcloud emulators installed; see docs/development.md to install them)"
            );
            Backend::Memory
        }
        b => b,
    };
    let report = match backend {
        Backend::Configured => {
            let settings = crate::load_config(cli)?;
            config.protocol = settings.protocol;
            if config.external_recovery {
                let needed = demo::external_recovery_bound(&settings.protocol, &settings.recovery);
                if needed > args.max_wait {
                    bail!(
                        "the workers' settings need up to {} to converge a crashed write \
                         (staleness_threshold {}, recovery.upload_settle {}, the later of \
                         recovery.claim_lease {} and recovery.full_sweep_every {}), more than \
                         --max-wait {}: shorten those settings for the workers and this demo \
                         alike (docker-compose.yml shows demo timings), or raise --max-wait",
                        fmt(needed),
                        fmt(settings.protocol.staleness_threshold),
                        fmt(settings.recovery.upload_settle),
                        fmt(settings.recovery.claim_lease),
                        fmt(settings.recovery.full_sweep_every),
                        fmt(args.max_wait),
                    );
                }
                eprintln!(
                    "waiting up to {} for the pools (from the workers' settings)",
                    fmt(needed)
                );
                config.deadline = needed;
            }
            let clock = tiersweep::clock::system();
            let stores = tiersweep::Stores::connect_to(
                &settings.bigtable,
                &settings.gcs,
                clock,
                tiersweep::lt::LtAccess::Write,
            )
            .await
            .context("connecting to the configured stores")?;
            let queue = PubsubQueue::connect(&settings.pubsub)
                .await
                .context("connecting to Pub/Sub")?;
            execute("configured", stores, Arc::new(queue), &config).await?
        }
        Backend::Emulators => {
            let e = emulators::start_or_reuse()
                .await
                .map_err(anyhow::Error::msg)?;
            let clock = tiersweep::clock::system();
            let stores = e.stores(clock).await;
            let queue = PubsubQueue::connect(&e.pubsub_config().await)
                .await
                .context("connecting to the Pub/Sub emulator")?;
            execute("emulators", stores, Arc::new(queue), &config).await?
        }
        _ => {
            let stores = MemoryStores::new().stores();
            let queue = MemoryQueue::new(1024, 5);
            execute("memory", stores, Arc::new(queue), &config).await?
        }
    };
    print(&report, args.json)?;
    if !report.converged {
        bail!("the stores did not converge: see the report above");
    }
    Ok(())
}

fn fmt(d: std::time::Duration) -> String {
    tiersweep::duration::format(d)
}

async fn execute(
    backend: &str,
    stores: tiersweep::Stores,
    queue: Arc<dyn JobQueue>,
    config: &DemoConfig,
) -> Result<DemoReport> {
    let pools = if config.external_recovery {
        "recovery by the external scanner and cleaner pools".to_owned()
    } else {
        format!("{} scanners, {} cleaners", config.scanners, config.cleaners)
    };
    eprintln!(
        "demo on {backend}: {} writes, {:.0}% crashed, {pools}",
        config.writes,
        config.crash_rate * 100.0,
    );
    let report = demo::run(backend, stores, queue, config, |p| {
        let line = match p {
            DemoProgress::Writing {
                done,
                total,
                crashed,
            } => {
                format!("writing   {done:>7}/{total} ({crashed} crashed)")
            }
            DemoProgress::WaitingForStaleness(d) => {
                format!("waiting {d:.1?} for abandoned changes to go stale")
            }
            DemoProgress::Recovering { remaining, total } => {
                format!(
                    "recovering {:>6}/{total} changelog rows converged",
                    total - remaining.min(total)
                )
            }
        };
        let mut err = std::io::stderr();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    })
    .await
    .context("running the demo")?;
    eprintln!();
    Ok(report)
}

fn print(r: &DemoReport, json: bool) -> Result<()> {
    let verdict = if r.converged {
        "CONVERGED"
    } else {
        "NOT CONVERGED"
    };
    eprintln!(
        "{verdict} on {}: {} writes ({} acknowledged, {} crashed); recovery converged {} changes in {:.1} s\n\
         invariants: {} orphaned blobs, {} dangling tombstones, {} lost objects, {} changelog rows left\n\
         audit (listing LT, independent of the changelog): {} blobs listed, {} orphans, {} dangling tombstones",
        r.backend,
        r.writes,
        r.acked,
        r.crashes_injected,
        r.changes_recovered,
        r.recovery_phase_s,
        r.orphans,
        r.dangling_tombstones,
        r.lost_objects,
        r.changelog_remaining,
        r.audit_listed,
        r.audit_orphans,
        r.audit_dangling
    );
    if json {
        println!("{}", serde_json::to_string(r)?);
    }
    Ok(())
}

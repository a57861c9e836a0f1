//! `tiersweep`: the one binary for every tiersweep process. `scan` and `clean` are the
//! worker pools' entry points; `demo` runs the whole pipeline on one machine; `status`,
//! `inspect`, `recover --dry-run` and `audit` are the operator's tools. The work itself lives in the
//! library; this file parses arguments and wires things together.

// As in the library: under 80 lines a function (clippy.toml), the demo and benchmark exempt.
#![warn(clippy::too_many_lines)]

mod audit;
#[cfg(feature = "dev")]
#[allow(clippy::too_many_lines)]
mod demo;
mod dlq;
mod exit;
mod ops;
mod worker;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tiersweep::worker::Config;
use tiersweep::worker::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "tiersweep",
    version,
    about = "Crash recovery for tiered object storage (Bigtable HV + GCS LT)",
    long_about = "Crash recovery for tiered object storage on Google Cloud.\n\n\
        Writers record every two-tier mutation in a Bigtable changelog before they start and \
        heartbeat it. Stale-scan workers (`tiersweep scan`) claim abandoned rows and publish \
        cleanup jobs to Pub/Sub; cleanup workers (`tiersweep clean`) converge them: delete each \
        LT revision HV does not reference, then remove the row.\n\n\
        Configuration: a TOML file (--config), then TIERSWEEP_<SECTION>__<KEY> environment \
        variables, then --set section.key=value flags. BIGTABLE_EMULATOR_HOST, \
        PUBSUB_EMULATOR_HOST and STORAGE_EMULATOR_HOST point it at the emulators \
        (infra/local/start.sh prints them).\n\n\
        Exit codes: 0 done; 1 runtime failure; 2 bad command line; 3 configuration error; \
        4 a resource is missing or refused (table, bucket, topic, subscription, permission)."
)]
struct Cli {
    /// TOML configuration file (see infra/local/tiersweep.toml for every key).
    #[arg(long, env = "TIERSWEEP_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Override one setting, e.g. --set pubsub.topic=jobs (repeatable; wins over file and env).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE", global = true)]
    overrides: Vec<String>,
    /// Log format on stderr: `json` writes one Cloud-Logging-shaped object per line (level as
    /// `severity`, trace ids). The level comes from RUST_LOG (default info).
    #[arg(long, value_enum, env = "TIERSWEEP_LOG_FORMAT", default_value_t = LogFormatArg::Text, global = true)]
    log_format: LogFormatArg,
    /// Threads that run the work: 1 runs everything on one thread (the default of `scan`
    /// and `clean`, whose pods ask for a fraction of a core); 0 starts one per core of the
    /// machine (the default of the other commands). A worker given more than a core can
    /// use them with 0 or a count.
    #[arg(long, env = "TIERSWEEP_THREADS", global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole pipeline on this machine: writer load with injected crashes, a scanner
    /// pool and a cleaner pool, then a convergence report checked against the invariants.
    #[cfg(feature = "dev")]
    Demo(demo::DemoArgs),
    /// Run a stale-scan worker: scan this member's shards for stale changelog rows, claim
    /// them, publish cleanup jobs. Runs until SIGTERM/SIGINT.
    Scan(worker::WorkerArgs),
    /// Run a cleanup worker: pull jobs, converge HV and LT, remove the row. Runs until
    /// SIGTERM/SIGINT, then finishes in-flight jobs within worker.shutdown_deadline.
    Clean(worker::WorkerArgs),
    /// Measure recovery throughput (sequential baseline vs the pipeline at growing
    /// concurrency), RPCs per change, lost claims and write-path latency; prints a table,
    /// writes bench.json and throughput.svg (docs/performance.md explains the figures).
    #[cfg(feature = "dev")]
    Bench(tiersweep_bench::driver::BenchArgs),
    /// Show the changelog backlog by age and the oldest stale change.
    Status(ops::StatusArgs),
    /// Show one change: its changelog row, what HV holds for its object, which of its
    /// revisions exist in LT.
    Inspect(ops::InspectArgs),
    /// Show what recovery would delete for each stale change, without claiming, fencing or
    /// deleting anything.
    Recover(ops::RecoverArgs),
    /// Find LT blobs that neither HV nor the changelog references (orphans) by listing the
    /// bucket; with --delete, hand them to recovery. A dry run by default.
    Audit(audit::AuditArgs),
    /// Put a change that keeps failing back in line once its cause is fixed: its claim
    /// count goes back to zero (and its claim lease to the base one).
    Reset(ops::ResetArgs),
    /// The dead letters: list them by reason, replay them after a fix, purge old ones.
    Dlq(dlq::DlqArgs),
}

impl Command {
    /// The demo and the benchmark draw their own progress; their workers' routine logs
    /// would only interleave with it.
    fn is_dev(&self) -> bool {
        #[cfg(feature = "dev")]
        if matches!(self, Command::Demo(_) | Command::Bench(_)) {
            return true;
        }
        false
    }

    /// The subcommand, as `tiersweep_build_info{role}` names the process.
    fn name(&self) -> &'static str {
        match self {
            #[cfg(feature = "dev")]
            Command::Demo(_) => "demo",
            #[cfg(feature = "dev")]
            Command::Bench(_) => "bench",
            Command::Scan(_) => "scan",
            Command::Clean(_) => "clean",
            Command::Status(_) => "status",
            Command::Inspect(_) => "inspect",
            Command::Recover(_) => "recover",
            Command::Audit(_) => "audit",
            Command::Dlq(_) => "dlq",
            Command::Reset(_) => "reset",
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config> {
    Config::load(cli.config.as_deref(), std::env::vars(), &cli.overrides)
        .context(exit::ConfigFailure("loading configuration".into()))
}

/// The async runtime `cli` asks for. A worker runs on one thread unless told otherwise:
/// a runtime sized to the machine starts a thread per core of the node, not of the pod's
/// CPU request, and those threads spend the pod's share waking each other (the kernel's
/// context switch was the cleaner's hottest symbol, docs/performance.md §10).
fn runtime(cli: &Cli) -> std::io::Result<tokio::runtime::Runtime> {
    let worker = matches!(cli.command, Command::Scan(_) | Command::Clean(_));
    match cli.threads.unwrap_or(if worker { 1 } else { 0 }) {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match runtime(&cli) {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => {
            eprintln!("Error: starting the async runtime: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> std::process::ExitCode {
    let format = match cli.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    };
    let default_level = if cli.command.is_dev() { "warn" } else { "info" };
    let service = match cli.command {
        Command::Scan(_) => "tiersweep-scanner",
        Command::Clean(_) => "tiersweep-cleaner",
        _ => "tiersweep",
    };
    telemetry::set_role(cli.command.name());
    let telemetry = telemetry::init(format, default_level, service);
    let result: Result<()> = async {
        match &cli.command {
            #[cfg(feature = "dev")]
            Command::Demo(args) => demo::run(args, &cli).await,
            #[cfg(feature = "dev")]
            Command::Bench(args) => tiersweep_bench::driver::run(args).await,
            Command::Scan(args) => worker::scan(args, load_config(&cli)?).await,
            Command::Clean(args) => worker::clean(args, load_config(&cli)?).await,
            Command::Status(args) => ops::status(args, load_config(&cli)?).await,
            Command::Inspect(args) => ops::inspect(args, load_config(&cli)?).await,
            Command::Recover(args) => ops::recover(args, load_config(&cli)?).await,
            Command::Audit(args) => audit::run(args, load_config(&cli)?).await,
            Command::Dlq(args) => dlq::run(args, load_config(&cli)?).await,
            Command::Reset(args) => ops::reset(args, load_config(&cli)?).await,
        }
    }
    .await;
    // What this process called on Google Cloud, for cost and for the IAM contract test
    // (tests/processes/pipeline.rs reads it with RUST_LOG=tiersweep::gcp_calls=debug).
    tracing::debug!(
        target: "tiersweep::gcp_calls",
        calls = %tiersweep::worker::calls_summary(),
        "Google Cloud calls made by this process"
    );
    // Under JSON logs the failure is one more JSON line (a collector would file raw text
    // as an ERROR of its own with no context); in a terminal it is anyhow's chain.
    if let (Err(e), LogFormat::Json) = (&result, format) {
        tracing::error!(
            error = format!("{e:#}"),
            exit_code = exit::code(e),
            "failed"
        );
    }
    // Last: the spans of the drained work are flushed before the process exits. The flush
    // blocks its thread until the exporter has sent them, and sending needs the runtime:
    // on a one-thread runtime, blocking that thread would stall the export it waits for.
    if tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .is_err()
    {
        eprintln!("tiersweep: flushing telemetry panicked; the last spans may be lost");
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if matches!(format, LogFormat::Text) {
                eprintln!("Error: {e:?}");
            }
            std::process::ExitCode::from(exit::code(&e))
        }
    }
}

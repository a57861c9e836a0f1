//! The operator's read-only tools: `status`, `inspect`, `recover --dry-run`.

use anyhow::{Context, Result, bail};
use tiersweep::Stores;
use tiersweep::clock;
use tiersweep::config::Config;
use tiersweep::lt::LtAccess;
use tiersweep::model::ChangeId;
use tiersweep::recovery::inspect;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The change id (the changelog row key), e.g. 3f/0192…; the cleaner's logs and job
    /// messages name it.
    change: String,
}

#[derive(Debug, clap::Args)]
pub struct RecoverArgs {
    /// Required: only show what would be deleted. (Recovery itself is `tiersweep scan` +
    /// `tiersweep clean`, which claim and fence before deleting.)
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON object per change.
    #[arg(long)]
    json: bool,
}

/// The operator's views read both tables and check which blobs exist: read access only.
async fn stores(config: &Config) -> Result<Stores> {
    let stores = Stores::connect(config, clock::system(), LtAccess::Read)
        .await
        .context("connecting to Bigtable and GCS")?;
    Ok(stores)
}

pub async fn status(args: &StatusArgs, config: Config) -> Result<()> {
    // The changelog table alone (its rows and the shard leases kept in it).
    let clock = clock::system();
    let (changelog, leases) = tiersweep::stores::connect_scanner(&config, clock.clone())
        .await
        .context("connecting to the changelog")?;
    let b = inspect::backlog(
        changelog.as_ref(),
        &clock,
        config.protocol.staleness_threshold,
        config.recovery.scan_batch,
    )
    .await
    .context("scanning the changelog")?;
    // Read-only, judged by this machine's clock (the operator role may not write the
    // clock row that gives the server's).
    let table = leases
        .read_at(clock.now())
        .await
        .context("reading the shard leases")?;
    let l = tiersweep::recovery::membership::summary(&table, config.worker.lease_period);
    if args.json {
        #[derive(serde::Serialize)]
        struct Status<'a, B: serde::Serialize> {
            #[serde(flatten)]
            backlog: &'a B,
            leases: &'a tiersweep::recovery::membership::LeaseSummary,
        }
        let status = Status {
            backlog: &b,
            leases: &l,
        };
        println!("{}", serde_json::to_string(&status)?);
        return Ok(());
    }
    println!(
        "changelog {}: {} rows",
        config.bigtable.changelog_table, b.rows
    );
    println!("  live (writer heartbeating)  {:>8}", b.live);
    println!("  claimed (job in flight)     {:>8}", b.claimed);
    println!("  stale (waiting for a scan)  {:>8}", b.stale);
    for (bucket, n) in &b.stale_by_age {
        println!("    age {bucket:<6}                {n:>8}");
    }
    println!("  malformed                   {:>8}", b.malformed);
    if b.writer_stamped_in_future > 0 {
        println!(
            "  WARNING: {} writer rows are stamped in the future (a writer stamping with its own clock); recovery cannot see them until then",
            b.writer_stamped_in_future
        );
    }
    match &b.oldest_stale {
        Some(o) => println!(
            "oldest stale: {} ({}), {} s old, claimed {} times",
            o.change, o.object, o.age_s, o.claims
        ),
        None => println!("oldest stale: none"),
    }
    println!(
        "scanners (shard leases): {} live, {} of {} shards held, {} unheld{}",
        l.members.len(),
        l.held,
        l.held + l.unheld,
        l.unheld,
        if l.malformed > 0 {
            format!(", {} malformed lease rows", l.malformed)
        } else {
            String::new()
        }
    );
    for (member, n) in &l.members {
        println!("  {member:<40} {n:>5} shards");
    }
    Ok(())
}

pub async fn inspect(args: &InspectArgs, config: Config) -> Result<()> {
    let id = ChangeId::parse(&args.change).with_context(|| {
        format!(
            "{:?} is not a change id (shard/uuid, e.g. 3f/0192…)",
            args.change
        )
    })?;
    let stores = stores(&config).await?;
    match inspect::inspect(&stores, &id)
        .await
        .context("reading the change")?
    {
        Some(view) => println!("{}", serde_json::to_string_pretty(&view)?),
        None => bail!("no changelog row {id}: converged already, or never recorded"),
    }
    Ok(())
}

pub async fn recover(args: &RecoverArgs, config: Config) -> Result<()> {
    if !args.dry_run {
        bail!(
            "only `recover --dry-run` exists; run `tiersweep scan` and `tiersweep clean` to recover"
        );
    }
    let stores = stores(&config).await?;
    let mut blobs = 0;
    let (changes, malformed) = inspect::dry_run(
        &stores,
        config.protocol.staleness_threshold,
        config.recovery.scan_batch,
        |view| {
            blobs += view.would_delete.len();
            if args.json {
                match serde_json::to_string(&view) {
                    Ok(line) => println!("{line}"),
                    Err(e) => tracing::error!(error = %e, "cannot print a change"),
                }
            } else {
                println!("{} {} (hv: {})", view.change, view.object, view.hv);
                for rev in &view.would_delete {
                    println!("  would delete gs://{}/{rev}", config.gcs.bucket);
                }
            }
        },
    )
    .await
    .context("scanning for stale changes")?;
    tracing::info!(
        changes,
        blobs,
        malformed,
        "dry run: {changes} stale changes, {blobs} blobs would be deleted, {malformed} malformed rows; nothing was changed"
    );
    Ok(())
}

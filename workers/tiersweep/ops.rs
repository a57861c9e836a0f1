//! The operator's tools: `status`, `inspect`, `recover --dry-run` (read only) and
//! `reset` (puts a failing change back in line).

use anyhow::{Context, Result, bail};
use tiersweep::worker::operator::{self, ChangelogStatus, LeaseSummary, Reset};
use tiersweep::worker::{ChangeId, Config};
use tiersweep::{LtAccess, Stores, clock};

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
    let stores = Stores::connect_to(
        &config.bigtable,
        &config.gcs,
        clock::system(),
        LtAccess::Read,
    )
    .await
    .context("connecting to Bigtable and GCS")?;
    Ok(stores)
}

pub async fn status(args: &StatusArgs, config: Config) -> Result<()> {
    // The changelog table alone (its rows and the shard leases kept in it).
    let (b, l) = operator::status(&config)
        .await
        .context("reading the changelog and its shard leases")?;
    if args.json {
        #[derive(serde::Serialize)]
        struct Status<'a, B: serde::Serialize> {
            #[serde(flatten)]
            backlog: &'a B,
            leases: &'a LeaseSummary,
        }
        let status = Status {
            backlog: &b,
            leases: &l,
        };
        println!("{}", serde_json::to_string(&status)?);
        return Ok(());
    }
    print_status(&config.bigtable.changelog_table, &b, &l);
    Ok(())
}

/// `tiersweep status` for a person: the backlog by state and age, then the shard leases.
fn print_status(table: &str, b: &ChangelogStatus, l: &LeaseSummary) {
    println!("changelog {}: {} rows", table, b.rows);
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
    if b.failing > 0 {
        println!(
            "  failing (claimed {}+ times)  {:>8}   tiersweep inspect <change>; tiersweep reset <change> once fixed",
            operator::FAILING_AFTER_CLAIMS,
            b.failing
        );
        for f in &b.failing_rows {
            println!(
                "    {} ({}), claimed {} times",
                f.change, f.object, f.claims
            );
        }
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
}

pub async fn inspect(args: &InspectArgs, config: Config) -> Result<()> {
    let id = ChangeId::parse(&args.change).with_context(|| {
        format!(
            "{:?} is not a change id (shard/uuid, e.g. 3f/0192…)",
            args.change
        )
    })?;
    let stores = stores(&config).await?;
    match operator::inspect(&stores, &id)
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
    let (changes, malformed) = operator::dry_run(
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

#[derive(Debug, clap::Args)]
pub struct ResetArgs {
    /// The change id of a row that keeps failing (`tiersweep status` lists them).
    change: String,
}

/// Sets the row's claim count back to zero, so its claim lease is the base one again, and
/// restamps it now, so recovery takes it up one staleness threshold from now. Conditional
/// on the row's owner as read: a claim that moves the row on meanwhile makes the reset
/// refuse (run it again). Recovery's fence makes a reset harmless whatever it races with.
pub async fn reset(args: &ResetArgs, config: Config) -> Result<()> {
    let id = ChangeId::parse(&args.change).with_context(|| {
        format!(
            "{:?} is not a change id (shard/uuid, e.g. 3f/0192…)",
            args.change
        )
    })?;
    match operator::reset(&config, &id)
        .await
        .context("resetting the row in the changelog")?
    {
        Reset::Reset { object, claims } => {
            tracing::info!(change = %id, object, claims, "reset");
            println!(
                "reset {id} ({object}): was claimed {claims} times; recovery takes it up after the staleness threshold"
            );
            Ok(())
        }
        Reset::NotFound => bail!("no changelog row {id}: converged already, or never recorded"),
        Reset::Moved => bail!(
            "{id} changed owner while it was being reset (a claim or its removal): run tiersweep status and try again"
        ),
    }
}

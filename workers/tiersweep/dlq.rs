//! `tiersweep dlq`: the dead letters, for an operator. The work is
//! `tiersweep::worker::dead_letters`; this parses arguments and prints.

use std::time::Duration;

use anyhow::{Context, Result};
use tiersweep::clock;
use tiersweep::worker::dead_letters::{self, SnapshotOptions};
use tiersweep::worker::{Config, PubsubQueue};

fn duration(text: &str) -> Result<Duration, String> {
    tiersweep::worker::parse_duration(text)
}

#[derive(Debug, clap::Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
    /// A snapshot of the dead-letter subscription ends once it has been quiet this long
    /// (after the first delivery; see --first-wait).
    #[arg(long, default_value = "3s", value_parser = duration, global = true)]
    quiet: Duration,
    /// How long to wait for the first dead letter: a pull may come back empty while
    /// messages are there (Pub/Sub answers unary pulls from whichever server it reaches).
    #[arg(long, default_value = "5s", value_parser = duration, global = true)]
    first_wait: Duration,
    /// At most this many dead letters per run (they are held in memory while it runs).
    #[arg(long, default_value_t = 10_000, global = true)]
    limit: usize,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum DlqCommand {
    /// Count the dead letters by reason, with the oldest of each. Consumes nothing.
    List,
    /// Republish dead letters to the jobs topic (as first published, without the
    /// dead-letter attributes) and remove exactly those, once the publish succeeded. A
    /// replayed job is verified against the changelog like any job: replaying one that is
    /// no longer due converges nothing.
    Replay {
        /// Only dead letters whose reason contains this (default: all).
        #[arg(long, default_value = "")]
        filter: String,
    },
    /// Remove dead letters older than this (30m, 24h, 7d).
    Purge {
        #[arg(long, value_parser = duration)]
        older_than: Duration,
    },
}

pub async fn run(args: &DlqArgs, config: Config) -> Result<()> {
    let dlq = PubsubQueue::connect_dead_letters(&config.pubsub)
        .await
        .context("connecting to the dead-letter subscription")?;
    let how = SnapshotOptions {
        quiet: args.quiet,
        first: args.first_wait,
        limit: args.limit,
    };
    let subscription = &config.pubsub.dead_letter_subscription;
    match &args.command {
        DlqCommand::List => {
            let listing = dead_letters::list(&dlq, how)
                .await
                .context("reading the dead letters")?;
            if args.json {
                println!("{}", serde_json::to_string(&listing)?);
                return Ok(());
            }
            let now = clock::Clock::now(&clock::SystemClock);
            println!(
                "{subscription}: {}{} dead letters",
                listing.total,
                if listing.truncated { "+" } else { "" }
            );
            for (reason, n) in &listing.by_reason {
                let age = n
                    .oldest
                    .map(|t| format!(", oldest {} s ago", t.age_at(now).as_secs()))
                    .unwrap_or_default();
                println!("  {:>6}  {reason}{age}", n.count);
            }
        }
        DlqCommand::Replay { filter } => {
            let out = dead_letters::replay(&dlq, filter, how)
                .await
                .context("replaying dead letters")?;
            report(args.json, "replayed", &out)?;
        }
        DlqCommand::Purge { older_than } => {
            let before = clock::Clock::now(&clock::SystemClock).saturating_sub(*older_than);
            let out = dead_letters::purge(&dlq, before, how)
                .await
                .context("purging dead letters")?;
            report(args.json, "purged", &out)?;
        }
    }
    Ok(())
}

fn report(json: bool, verb: &str, out: &dead_letters::Settled) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(out)?);
    } else {
        println!(
            "{verb} {}, left {}{}",
            out.done,
            out.left,
            if out.truncated {
                " (the run stopped at --limit: run it again for the rest)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

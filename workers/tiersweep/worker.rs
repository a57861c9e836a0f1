//! `tiersweep scan` and `tiersweep clean`: connect, report readiness, run the library's
//! scanner or cleaner until SIGTERM/SIGINT, drain, exit 0.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use tiersweep::worker::{
    self, CleanerConnections, Config, Readiness, ScannerConnections, serve_health,
};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Serve /healthz and /readyz on this address (overrides worker.health_listen).
    #[arg(long)]
    health_listen: Option<SocketAddr>,
}

impl WorkerArgs {
    fn apply(&self, mut config: Config) -> Result<Config> {
        if self.health_listen.is_some() {
            config.worker.health_listen = self.health_listen;
        }
        config.validate().context("validating configuration")?;
        Ok(config)
    }
}

/// Cancels `cancel` on the first SIGTERM or SIGINT.
pub fn cancel_on_signals(cancel: CancellationToken) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        };
        tracing::info!(
            signal = which,
            "shutting down: no new work; finishing what is in flight"
        );
        cancel.cancel();
    });
    Ok(())
}

/// What every worker does before its loop: signals, health endpoints, connections.
/// Connection failures that may pass (service unreachable) are retried until the
/// shutdown signal; permanent ones (missing table, bucket, subscription, grant) end the
/// process.
pub(crate) struct Started<C> {
    pub(crate) cancel: CancellationToken,
    readiness: Readiness,
    /// What the role connected to: each role connects to, and checks, only what its
    /// service account is granted (`src/iam.rs`, `infra/terraform/iam.tf`).
    pub(crate) connected: C,
    /// The health server has its own token: it keeps answering (not ready) while in-flight
    /// work drains after the signal.
    health: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

pub(crate) async fn start<C, F, Fut>(
    config: &Config,
    role: &str,
    connect: F,
) -> Result<Option<Started<C>>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<C, tiersweep::StoreError>>,
{
    let cancel = CancellationToken::new();
    cancel_on_signals(cancel.clone())?;
    let readiness = Readiness::default();
    let health_cancel = CancellationToken::new();
    let health = match config.worker.health_listen {
        Some(addr) => {
            let (bound, task) = serve_health(addr, readiness.clone(), health_cancel.clone())
                .await
                .with_context(|| format!("binding the health endpoint {addr}"))?;
            tracing::info!(%bound, "serving /healthz and /readyz");
            Some((health_cancel, task))
        }
        None => None,
    };
    let mut delay = Duration::from_millis(500);
    loop {
        match connect().await {
            Ok(connected) => {
                readiness.set(true);
                // Not ready from the signal on, while in-flight work drains.
                let (signalled, r) = (cancel.clone(), readiness.clone());
                tokio::spawn(async move {
                    signalled.cancelled().await;
                    r.set(false);
                });
                tracing::info!(role, "connected and checked what this role uses; ready");
                return Ok(Some(Started {
                    cancel,
                    readiness,
                    connected,
                    health,
                }));
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, ?delay, "cannot connect yet; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("{role} cannot start"))),
        }
    }
}

pub async fn scan(args: &WorkerArgs, config: Config) -> Result<()> {
    let config = args.apply(config)?;
    let connect = || ScannerConnections::connect(&config);
    let Some(s) = start(&config, "scanner", connect).await? else {
        return Ok(());
    };
    let recovery = config.recovery();
    if recovery.republish_after < config.recovery.republish_after {
        tracing::info!(republish_after = ?recovery.republish_after,
            "against the Pub/Sub emulator, which never redelivers what a closed pull stream held: \
             jobs no cleaner took are published again sooner");
    }
    worker::scan(s.connected.clone(), &config, s.cancel.clone())
        .await
        .context("scanner")?;
    finish(s).await
}

pub async fn clean(args: &WorkerArgs, config: Config) -> Result<()> {
    let config = args.apply(config)?;
    let connect = || CleanerConnections::connect(&config);
    // Checked once connected: not retried, a configuration that disagrees with the
    // subscription stays wrong.
    let Some(s) = start(&config, "cleaner", connect).await? else {
        return Ok(());
    };
    if let Some(policy) = s.connected.max_delivery_attempts()
        && policy != config.recovery.max_delivery_attempts
    {
        return Err(anyhow::Error::new(crate::exit::ConfigFailure(format!(
            "cleaner cannot start: subscription {} dead-letters after {policy} deliveries but \
             recovery.max_delivery_attempts is {}; they must be equal, or jobs reach the \
             dead-letter topic without the cleaner's reason (or later than needed)",
            config.pubsub.subscription, config.recovery.max_delivery_attempts
        ))));
    }
    worker::clean(s.connected.clone(), &config, s.cancel.clone()).await;
    finish(s).await
}

pub(crate) async fn finish<C>(s: Started<C>) -> Result<()> {
    s.readiness.set(false);
    if let Some((cancel, task)) = s.health {
        cancel.cancel();
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

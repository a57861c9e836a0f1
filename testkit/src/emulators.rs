//! Fixtures for tests against the real emulators: make sure they run (starting them with
//! `infra/local/start.sh` when they do not), and give every test its own tables, topics,
//! subscription and bucket so tests run in parallel without seeing each other's data.
//!
//! A missing emulator is a test failure with instructions, never a skip: a skipped
//! emulator test that reports green would hide exactly the gap these tests exist to close.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use tiersweep::bigtable::{BigtableClient, BigtableConfig};
use tiersweep::changelog::BigtableChangelog;
use tiersweep::clock::SharedClock;
use tiersweep::hv::BigtableHv;
use tiersweep::lt::GcsLt;
use tiersweep::lt::gcs::GcsConfig;
use tiersweep::queue::PubsubQueue;
use tiersweep::queue::pubsub::PubsubConfig;
use tiersweep::stores::Stores;

/// Where the emulators answer. Defaults match `infra/local/common.sh`; the usual
/// `*_EMULATOR_HOST` variables override them.
#[derive(Debug, Clone)]
pub struct Emulators {
    pub bigtable: String,
    pub pubsub: String,
    /// Base URL, `http://host:port`.
    pub gcs: String,
    pub project: String,
    pub instance: String,
}

static EMULATORS: OnceCell<Emulators> = OnceCell::const_new();

/// The repository's root: the test kit's manifest is one directory below it, and the
/// scripts and state the emulators need (`infra/local/`, `.local/`) live at the root.
fn repo_root() -> PathBuf {
    let kit = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    kit.parent().map_or(kit.clone(), PathBuf::from)
}

fn host_port(url: &str) -> &str {
    url.split("://").last().unwrap_or(url)
}

async fn answers(host_port: &str) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(host_port)
        )
        .await,
        Ok(Ok(_))
    )
}

/// The running emulators; starts them on first use in this process if they are down.
/// Panics, with what to do, when they cannot be started.
pub async fn emulators() -> &'static Emulators {
    EMULATORS
        .get_or_init(|| async { start_or_reuse().await.unwrap_or_else(|e| panic!("{e}")) })
        .await
}

fn configured() -> Emulators {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    Emulators {
        bigtable: env("BIGTABLE_EMULATOR_HOST", "127.0.0.1:8086"),
        pubsub: env("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085"),
        gcs: env("STORAGE_EMULATOR_HOST", "http://127.0.0.1:4443"),
        project: env("TIERSWEEP_PROJECT", "tiersweep-local"),
        instance: env("TIERSWEEP_BIGTABLE_INSTANCE", "tiersweep"),
    }
}

async fn down(e: &Emulators) -> Vec<String> {
    let mut down = Vec::new();
    for addr in [e.bigtable.as_str(), e.pubsub.as_str(), host_port(&e.gcs)] {
        if !answers(addr).await {
            down.push(addr.to_owned());
        }
    }
    down
}

/// The emulators, if all three answer now.
pub async fn running() -> Option<Emulators> {
    let e = configured();
    down(&e).await.is_empty().then_some(e)
}

/// True when the gcloud SDK with both emulators (and Java for Pub/Sub's) is installed, so
/// that `infra/local/start.sh` can start them without installing anything.
pub async fn installed() -> bool {
    let Ok(out) = tokio::process::Command::new("gcloud")
        .args(["info", "--format=value(installation.sdk_root)"])
        .output()
        .await
    else {
        return false;
    };
    let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    out.status.success()
        && root.join("platform/bigtable-emulator/cbtemulator").exists()
        && root
            .join("platform/pubsub-emulator/bin/cloud-pubsub-emulator")
            .exists()
        && std::process::Command::new("java")
            .arg("-version")
            .output()
            .is_ok()
}

/// The emulators that `infra/local/start.sh` started and that still run, as (name, pid):
/// read from its state directory (`TIERSWEEP_LOCAL_DIR`, default `.local` in the
/// repository), trusting a pid only while its process's start time is the one recorded
/// beside it, as `status.sh` does. Emulators started some other way are not listed.
pub fn started_processes() -> Vec<(String, u32)> {
    let dir = std::env::var_os("TIERSWEEP_LOCAL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".local"));
    let read = |file: String| std::fs::read_to_string(dir.join(file)).ok();
    ["bigtable", "pubsub", "gcs"]
        .into_iter()
        .filter_map(|name| {
            let pid: u32 = read(format!("{name}.pid"))?.trim().parse().ok()?;
            let recorded = read(format!("{name}.start"))?;
            let started = tiersweep::telemetry::process::start_ticks(&pid.to_string())?;
            (started.to_string() == recorded.trim()).then(|| (name.to_owned(), pid))
        })
        .collect()
}

/// The emulators, started with `infra/local/start.sh` when any of them is down.
pub async fn start_or_reuse() -> Result<Emulators, String> {
    let e = configured();
    let down = down(&e).await;
    if !down.is_empty() {
        start(&down).await?;
    }
    Ok(e)
}

async fn start(down: &[String]) -> Result<(), String> {
    let script = repo_root().join("infra/local/start.sh");
    eprintln!(
        "emulators not answering on {down:?}; starting them with {}",
        script.display()
    );
    let output = tokio::process::Command::new(&script)
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "the emulators are not running and {} could not start them.\n\
         Emulator tests never skip: install what it asks for, or start the emulators yourself \
         and export BIGTABLE_EMULATOR_HOST, PUBSUB_EMULATOR_HOST and STORAGE_EMULATOR_HOST.\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// A fresh name for one test's resources: lowercase, short, valid for tables, topics and
/// buckets alike.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

impl Emulators {
    pub fn bigtable_config(&self, hv_table: &str, changelog_table: &str) -> BigtableConfig {
        BigtableConfig {
            project: self.project.clone(),
            instance: self.instance.clone(),
            emulator_host: Some(self.bigtable.clone()),
            hv_table: hv_table.to_owned(),
            changelog_table: changelog_table.to_owned(),
            ..BigtableConfig::default()
        }
    }

    /// A client and a config naming two new, empty tables.
    pub async fn new_tables(&self) -> (BigtableClient, BigtableConfig) {
        let config = self.bigtable_config(&unique("hv"), &unique("changelog"));
        tiersweep::bigtable::admin::ensure_tables_on_emulator(
            &self.bigtable,
            &self.project,
            &self.instance,
            &config.hv_table,
            &config.changelog_table,
        )
        .await
        .expect("creating tables on the Bigtable emulator");
        let client = BigtableClient::connect(&config)
            .await
            .expect("Bigtable client");
        (client, config)
    }

    pub async fn hv(&self) -> Arc<BigtableHv> {
        let (client, config) = self.new_tables().await;
        Arc::new(BigtableHv::new(client, &config.hv_table))
    }

    pub async fn changelog(&self, clock: SharedClock) -> Arc<BigtableChangelog> {
        let (client, config) = self.new_tables().await;
        Arc::new(BigtableChangelog::new(
            client,
            &config.changelog_table,
            clock,
        ))
    }

    /// Shard leases in a fresh changelog table.
    pub async fn leases(&self) -> Arc<tiersweep::shard_lease::BigtableShardLeases> {
        let (client, config) = self.new_tables().await;
        Arc::new(tiersweep::shard_lease::BigtableShardLeases::new(
            client,
            &config.changelog_table,
        ))
    }

    /// A new, empty bucket.
    pub async fn gcs_config(&self) -> GcsConfig {
        let bucket = unique("lt");
        let url = format!("{}/storage/v1/b?project={}", self.gcs, self.project);
        let response = reqwest::Client::new()
            .post(&url)
            .json(&serde_json::json!({ "name": bucket }))
            .send()
            .await
            .expect("fake-gcs-server answers");
        assert!(
            response.status().is_success(),
            "creating bucket {bucket}: HTTP {}",
            response.status()
        );
        GcsConfig {
            bucket,
            emulator_url: Some(self.gcs.clone()),
            ..GcsConfig::default()
        }
    }

    pub async fn lt(&self) -> Arc<GcsLt> {
        Arc::new(
            GcsLt::connect(&self.gcs_config().await, tiersweep::lt::LtAccess::Write)
                .await
                .expect("GCS client"),
        )
    }

    /// New topics and a subscription with the same policies `infra/local/provision.sh`
    /// sets, except a short ack deadline so that abandoned deliveries return quickly.
    pub async fn pubsub_config(&self) -> PubsubConfig {
        let dead_letter_topic = unique("dead");
        let config = PubsubConfig {
            project: self.project.clone(),
            topic: unique("jobs"),
            subscription: unique("cleaners"),
            dead_letter_subscription: format!("{dead_letter_topic}-audit"),
            dead_letter_topic,
            audit_topic: unique("audit-jobs"),
            audit_subscription: unique("audit-workers"),
            audit_dead_letter_topic: unique("audit-dead"),
            audit_trail_topic: unique("audit-trail"),
            emulator_host: Some(self.pubsub.clone()),
            ..PubsubConfig::default()
        };
        let base = format!("http://{}/v1/projects/{}", self.pubsub, self.project);
        let topic = |t: &str| format!("projects/{}/topics/{t}", self.project);
        let http = reqwest::Client::new();
        let put = |path: String, body: serde_json::Value| {
            let request = http.put(format!("{base}/{path}")).json(&body);
            async move {
                let response = request.send().await.expect("Pub/Sub emulator answers");
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                assert!(status.is_success(), "PUT {path}: HTTP {status}: {text}");
            }
        };
        put(format!("topics/{}", config.topic), serde_json::json!({})).await;
        put(
            format!("topics/{}", config.dead_letter_topic),
            serde_json::json!({}),
        )
        .await;
        put(
            format!("subscriptions/{}", config.subscription),
            serde_json::json!({
                "topic": topic(&config.topic),
                "ackDeadlineSeconds": 10,
                "retryPolicy": {"minimumBackoff": "0.1s", "maximumBackoff": "1s"},
                "deadLetterPolicy": {
                    "deadLetterTopic": topic(&config.dead_letter_topic),
                    "maxDeliveryAttempts": 5
                }
            }),
        )
        .await;
        put(
            format!("subscriptions/{}", config.dead_letter_subscription),
            serde_json::json!({ "topic": topic(&config.dead_letter_topic), "ackDeadlineSeconds": 10 }),
        )
        .await;
        for t in [
            &config.audit_topic,
            &config.audit_dead_letter_topic,
            &config.audit_trail_topic,
        ] {
            put(format!("topics/{t}"), serde_json::json!({})).await;
        }
        put(
            format!("subscriptions/{}", config.audit_subscription),
            serde_json::json!({
                "topic": topic(&config.audit_topic),
                "ackDeadlineSeconds": 10,
                "retryPolicy": {"minimumBackoff": "0.1s", "maximumBackoff": "1s"},
                "deadLetterPolicy": {
                    "deadLetterTopic": topic(&config.audit_dead_letter_topic),
                    "maxDeliveryAttempts": 5
                }
            }),
        )
        .await;
        config
    }

    /// Pulls (and acks) what reached `config`'s dead-letter topic, through the audit
    /// subscription [`pubsub_config`](Self::pubsub_config) made; waits up to `wait` for at
    /// least `want` messages.
    pub async fn dead_letters(
        &self,
        config: &PubsubConfig,
        want: usize,
        wait: Duration,
    ) -> Vec<tiersweep::queue::Message> {
        use base64::Engine;
        let sub = format!(
            "http://{}/v1/projects/{}/subscriptions/{}-audit",
            self.pubsub, self.project, config.dead_letter_topic
        );
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + wait;
        let mut got = Vec::new();
        while got.len() < want && tokio::time::Instant::now() < deadline {
            let body: serde_json::Value = http
                .post(format!("{sub}:pull"))
                .json(&serde_json::json!({ "maxMessages": 100, "returnImmediately": true }))
                .send()
                .await
                .expect("Pub/Sub emulator answers")
                .json()
                .await
                .expect("a pull response");
            let received = body["receivedMessages"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if received.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let mut ack_ids = Vec::new();
            for r in received {
                ack_ids.push(r["ackId"].clone());
                let m = &r["message"];
                let data = base64::engine::general_purpose::STANDARD
                    .decode(m["data"].as_str().unwrap_or_default())
                    .expect("base64 data");
                let attributes = m["attributes"]
                    .as_object()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                got.push(tiersweep::queue::Message {
                    data: data.into(),
                    attributes,
                });
            }
            http.post(format!("{sub}:acknowledge"))
                .json(&serde_json::json!({ "ackIds": ack_ids }))
                .send()
                .await
                .expect("ack dead letters");
        }
        got
    }

    pub async fn queue(&self) -> PubsubQueue {
        PubsubQueue::connect(&self.pubsub_config().await)
            .await
            .expect("Pub/Sub client")
    }

    /// A full configuration naming fresh tables, bucket, topics and subscription, with the
    /// given protocol; `env()` turns it into the variables a child process reads.
    pub async fn fresh_config(
        &self,
        protocol: tiersweep::protocol::ProtocolConfig,
    ) -> tiersweep::config::Config {
        let (_, bigtable) = self.new_tables().await;
        tiersweep::config::Config {
            bigtable,
            gcs: self.gcs_config().await,
            pubsub: self.pubsub_config().await,
            protocol,
            // Seconds, not ten minutes: the second pass of a change recovered before its
            // HV write is part of what the process tests see.
            recovery: tiersweep::recovery::RecoveryConfig {
                upload_settle: protocol.staleness_threshold,
                // The Pub/Sub emulator never redelivers what it handed to a pull stream
                // that went away (a killed or restarted cleaner): such a job comes back
                // only when its scanner publishes it again.
                republish_after: protocol.staleness_threshold * 2,
                ..Default::default()
            },
            // Scanners share the shards through leases; a killed one's shards are read
            // again within seconds, not the 30 s a deployment waits.
            worker: tiersweep::config::WorkerConfig {
                lease_period: std::time::Duration::from_secs(4),
                ..Default::default()
            },
        }
    }

    /// Two processes' views of the same fresh tables and bucket, each with its own clock
    /// (for clock-skew schedules: each view's changelog handle has its process's clock).
    pub async fn stores_pair(&self, a: SharedClock, b: SharedClock) -> (Stores, Stores) {
        let (client, config) = self.new_tables().await;
        let lt = self.lt().await;
        let view = |clock: SharedClock| {
            Stores::from_parts(
                Arc::new(BigtableHv::new(client.clone(), &config.hv_table)),
                lt.clone(),
                Arc::new(BigtableChangelog::new(
                    client.clone(),
                    &config.changelog_table,
                    clock.clone(),
                )),
                clock,
            )
        };
        (view(a), view(b))
    }

    /// HV, LT and changelog on the emulators, with fresh tables and bucket.
    /// Fresh stores, and audit runs kept in their changelog table.
    pub async fn stores_and_runs(
        &self,
        clock: SharedClock,
    ) -> (Stores, Arc<dyn tiersweep::audit::AuditRuns>) {
        let (client, config) = self.new_tables().await;
        let runs = Arc::new(
            tiersweep::audit::BigtableRuns::connect(&config)
                .await
                .expect("the audit runs in the fresh changelog table"),
        );
        let stores = Stores::from_parts(
            Arc::new(BigtableHv::new(client.clone(), &config.hv_table)),
            self.lt().await,
            Arc::new(BigtableChangelog::new(
                client,
                &config.changelog_table,
                clock.clone(),
            )),
            clock,
        );
        (stores, runs)
    }

    /// Fresh stores: new tables and a new bucket.
    pub async fn stores(&self, clock: SharedClock) -> Stores {
        self.stores_and_runs(clock).await.0
    }
}

/// The `TIERSWEEP_<SECTION>__<KEY>` variables that make a child `tiersweep` process use
/// `config`'s resources and timings (and the emulator endpoints).
pub fn env_for(config: &tiersweep::config::Config) -> Vec<(String, String)> {
    use tiersweep::duration::format;
    let mut env = vec![
        (
            "TIERSWEEP_BIGTABLE__PROJECT",
            config.bigtable.project.clone(),
        ),
        (
            "TIERSWEEP_BIGTABLE__INSTANCE",
            config.bigtable.instance.clone(),
        ),
        (
            "TIERSWEEP_BIGTABLE__HV_TABLE",
            config.bigtable.hv_table.clone(),
        ),
        (
            "TIERSWEEP_BIGTABLE__CHANGELOG_TABLE",
            config.bigtable.changelog_table.clone(),
        ),
        ("TIERSWEEP_GCS__BUCKET", config.gcs.bucket.clone()),
        ("TIERSWEEP_PUBSUB__PROJECT", config.pubsub.project.clone()),
        ("TIERSWEEP_PUBSUB__TOPIC", config.pubsub.topic.clone()),
        (
            "TIERSWEEP_PUBSUB__SUBSCRIPTION",
            config.pubsub.subscription.clone(),
        ),
        (
            "TIERSWEEP_PUBSUB__DEAD_LETTER_TOPIC",
            config.pubsub.dead_letter_topic.clone(),
        ),
        (
            "TIERSWEEP_PUBSUB__DEAD_LETTER_SUBSCRIPTION",
            config.pubsub.dead_letter_subscription.clone(),
        ),
        (
            "TIERSWEEP_PUBSUB__AUDIT_TOPIC",
            config.pubsub.audit_topic.clone(),
        ),
        (
            "TIERSWEEP_PUBSUB__AUDIT_SUBSCRIPTION",
            config.pubsub.audit_subscription.clone(),
        ),
        (
            "TIERSWEEP_PUBSUB__AUDIT_DEAD_LETTER_TOPIC",
            config.pubsub.audit_dead_letter_topic.clone(),
        ),
        (
            "TIERSWEEP_PUBSUB__AUDIT_TRAIL_TOPIC",
            config.pubsub.audit_trail_topic.clone(),
        ),
        (
            "TIERSWEEP_PROTOCOL__HEARTBEAT_INTERVAL",
            format(config.protocol.heartbeat_interval),
        ),
        (
            "TIERSWEEP_PROTOCOL__STALENESS_THRESHOLD",
            format(config.protocol.staleness_threshold),
        ),
        (
            "TIERSWEEP_PROTOCOL__SAFETY_MARGIN",
            format(config.protocol.safety_margin),
        ),
        (
            "TIERSWEEP_RECOVERY__CLAIM_LEASE",
            format(config.recovery.claim_lease),
        ),
        (
            "TIERSWEEP_RECOVERY__IDLE_POLL",
            format(config.recovery.idle_poll),
        ),
        (
            "TIERSWEEP_RECOVERY__UPLOAD_SETTLE",
            format(config.recovery.upload_settle),
        ),
        (
            "TIERSWEEP_RECOVERY__REPUBLISH_AFTER",
            format(config.recovery.republish_after),
        ),
        (
            "TIERSWEEP_RECOVERY__OBJECT_PREFIX",
            format!("{:?}", config.recovery.object_prefix),
        ),
        (
            "TIERSWEEP_WORKER__LEASE_PERIOD",
            format(config.worker.lease_period),
        ),
    ];
    let hosts = [
        (
            "BIGTABLE_EMULATOR_HOST",
            config.bigtable.emulator_host.clone(),
        ),
        ("PUBSUB_EMULATOR_HOST", config.pubsub.emulator_host.clone()),
        ("STORAGE_EMULATOR_HOST", config.gcs.emulator_url.clone()),
    ];
    env.extend(hosts.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::repo_root;

    /// The bench watches the emulators' CPU through the PIDs `start.sh` records under the
    /// root's `.local/`, and starts them with that script: both must be found from the kit.
    #[test]
    fn the_root_holds_the_emulator_scripts() {
        let root = repo_root();
        assert!(
            root.join("infra/local/start.sh").is_file(),
            "no infra/local/start.sh under {}",
            root.display()
        );
    }
}

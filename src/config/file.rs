//! The configuration every tiersweep process reads: one TOML file, then environment
//! overrides, then command-line overrides, validated once before anything connects.
//!
//! ```toml
//! [bigtable]            # crate::bigtable::BigtableConfig
//! [gcs]                 # crate::lt::gcs::GcsConfig
//! [pubsub]              # crate::queue::pubsub::PubsubConfig
//! [protocol]            # ProtocolConfig: heartbeat_interval, staleness_threshold, safety_margin
//! [recovery]            # crate::recovery::RecoveryConfig
//! [worker]              # WorkerConfig: shard split, health endpoint, shutdown deadline
//! ```
//!
//! Overrides name a key as `section.key`: on the command line `--set pubsub.topic=jobs`,
//! in the environment `TIERSWEEP_PUBSUB__TOPIC=jobs` (section and key separated by a double
//! underscore). Values are read as TOML when they parse as such (`5`, `true`) and as
//! strings otherwise (`10s`, `my-project`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, ProtocolConfig};
use crate::bigtable::BigtableConfig;
use crate::lt::gcs::GcsConfig;
use crate::queue::pubsub::PubsubConfig;
use crate::recovery::RecoveryConfig;

/// `recovery.republish_after` at most, against the Pub/Sub emulator ([`Config::recovery`]).
pub const EMULATOR_REPUBLISH_AFTER: Duration = Duration::from_secs(30);

/// The environment prefix for overrides.
pub const ENV_PREFIX: &str = "TIERSWEEP_";

/// The workers' whole configuration, one section per concern, as the TOML file has it
/// (infra/local/tiersweep.toml lists every key).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[bigtable]`: instance, tables, app profile, emulator.
    pub bigtable: BigtableConfig,
    /// `[gcs]`: the LT bucket.
    pub gcs: GcsConfig,
    /// `[pubsub]`: topics and subscription.
    pub pubsub: PubsubConfig,
    /// `[protocol]`: heartbeat and staleness timings, shared with writers.
    pub protocol: ProtocolConfig,
    /// `[recovery]`: scanner and cleaner settings.
    pub recovery: RecoveryConfig,
    /// `[worker]`: membership, health endpoint, shutdown.
    pub worker: WorkerConfig,
}

/// What one worker process is, as opposed to what the pool does. Scanners share the
/// changelog's shards through shard leases in the changelog table (`crate::shard_lease`): a pool
/// of any size, resized or losing members with no configuration change.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// A dead scanner's shards are read again within this; members renew and
    /// rebalance every quarter of it (see `crate::recovery::membership`).
    #[serde(with = "crate::duration")]
    pub lease_period: Duration,
    /// The name a scanner's member id begins with (a fresh suffix follows);
    /// the pod name (`HOSTNAME`) by default.
    pub member_name: Option<String>,
    /// Where `/healthz`, `/readyz` (and `/metrics`) are served; unset disables them.
    pub health_listen: Option<SocketAddr>,
    /// After SIGTERM, how long in-flight jobs may run before they are abandoned to
    /// redelivery. Keep it below the pod's `terminationGracePeriodSeconds`.
    #[serde(with = "crate::duration")]
    pub shutdown_deadline: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            lease_period: Duration::from_secs(30),
            member_name: None,
            health_listen: None,
            shutdown_deadline: Duration::from_secs(20),
        }
    }
}

/// Why a configuration could not be loaded, naming the file, override or setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration (an unknown key, a wrong type).
    #[error("configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said.
        message: String,
    },
    /// A `--set` or environment override could not be applied.
    #[error("override {name}: {reason}")]
    Override {
        /// The override, as given.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// A setting parsed but cannot work.
    #[error("invalid configuration: {field}: {reason}")]
    Invalid {
        /// The setting, by its name in the file.
        field: String,
        /// Why it cannot work.
        reason: String,
    },
}

impl LoadError {
    fn invalid(section: &str, e: ConfigError) -> Self {
        LoadError::Invalid {
            field: format!("{section}.{}", e.field),
            reason: e.reason,
        }
    }
}

impl Config {
    /// Reads `file` (if any), applies `TIERSWEEP_<SECTION>__<KEY>` variables from `env`,
    /// then `overrides` (`section.key=value`), and validates the result.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[String],
    ) -> Result<Self, LoadError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>().map_err(|e| LoadError::Parse {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?
            }
            None => toml::Table::new(),
        };
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
            .collect();
        env.sort();
        for (name, value) in env {
            let key = name[ENV_PREFIX.len()..]
                .to_ascii_lowercase()
                .replacen("__", ".", 1);
            apply(&mut table, &key, &value)
                .map_err(|reason| LoadError::Override { name, reason })?;
        }
        for o in overrides {
            let (key, value) = o.split_once('=').ok_or_else(|| LoadError::Override {
                name: o.clone(),
                reason: "expected section.key=value".into(),
            })?;
            apply(&mut table, key.trim(), value.trim()).map_err(|reason| LoadError::Override {
                name: key.to_owned(),
                reason,
            })?;
        }
        let origin = file.map_or("(defaults and overrides)".to_owned(), |p| {
            p.display().to_string()
        });
        let config: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| LoadError::Parse {
                path: origin,
                message: e.to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// The recovery settings with the shared protocol filled in.
    /// The recovery settings, with the protocol's. Against the Pub/Sub emulator,
    /// `republish_after` is at most `EMULATOR_REPUBLISH_AFTER`: the emulator never
    /// redelivers what it handed to a pull stream that went away (a stopped or restarted
    /// cleaner), so there a job comes back only when its scanner publishes it again, and
    /// ten minutes is too long to wait on a laptop.
    pub fn recovery(&self) -> RecoveryConfig {
        let mut recovery = RecoveryConfig {
            protocol: self.protocol,
            ..self.recovery.clone()
        };
        if self.pubsub.emulator_host.is_some() {
            recovery.republish_after = recovery.republish_after.min(EMULATOR_REPUBLISH_AFTER);
        }
        recovery
    }

    /// Checks every section, naming the first setting that cannot work.
    pub fn validate(&self) -> Result<(), LoadError> {
        self.protocol
            .validate()
            .map_err(|e| LoadError::invalid("protocol", e))?;
        self.recovery()
            .validate()
            .map_err(|e| LoadError::invalid("recovery", e))?;
        if self.worker.lease_period < Duration::from_secs(2) {
            return Err(LoadError::Invalid {
                field: "worker.lease_period".into(),
                reason: format!(
                    "{:?} is too short: members renew every quarter of it; at least 2s",
                    self.worker.lease_period
                ),
            });
        }
        if let Some(name) = &self.worker.member_name {
            crate::shard_lease::MemberId::parse(name).map_err(|e| LoadError::Invalid {
                field: "worker.member_name".into(),
                reason: e.to_string(),
            })?;
        }
        let required = [
            ("bigtable.project", &self.bigtable.project),
            ("bigtable.instance", &self.bigtable.instance),
            ("bigtable.hv_table", &self.bigtable.hv_table),
            ("bigtable.changelog_table", &self.bigtable.changelog_table),
            ("gcs.bucket", &self.gcs.bucket),
            ("pubsub.project", &self.pubsub.project),
            ("pubsub.topic", &self.pubsub.topic),
            ("pubsub.subscription", &self.pubsub.subscription),
            ("pubsub.dead_letter_topic", &self.pubsub.dead_letter_topic),
            (
                "pubsub.dead_letter_subscription",
                &self.pubsub.dead_letter_subscription,
            ),
            ("pubsub.audit_topic", &self.pubsub.audit_topic),
            ("pubsub.audit_subscription", &self.pubsub.audit_subscription),
            (
                "pubsub.audit_dead_letter_topic",
                &self.pubsub.audit_dead_letter_topic,
            ),
            ("pubsub.audit_trail_topic", &self.pubsub.audit_trail_topic),
        ];
        for (field, value) in required {
            if value.trim().is_empty() {
                return Err(LoadError::Invalid {
                    field: field.into(),
                    reason: "must not be empty".into(),
                });
            }
        }
        if self.worker.shutdown_deadline >= self.recovery.claim_lease {
            return Err(LoadError::Invalid {
                field: "worker.shutdown_deadline".into(),
                reason:
                    "must be shorter than recovery.claim_lease, or a job abandoned at shutdown \
                         could be re-claimed while it still runs"
                        .into(),
            });
        }
        Ok(())
    }
}

/// Sets `section.key` in `table` to `value`, read as TOML when it parses, else as a string.
fn apply(table: &mut toml::Table, key: &str, value: &str) -> Result<(), String> {
    let (section, field) = key
        .split_once('.')
        .filter(|(s, f)| !s.is_empty() && !f.is_empty() && !f.contains('.'))
        .ok_or_else(|| format!("{key:?} is not of the form section.key"))?;
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let entry = table
        .entry(section.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let section_table = entry
        .as_table_mut()
        .ok_or_else(|| format!("{section} is not a section"))?;
    section_table.insert(field.to_owned(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)], overrides: &[&str]) -> Result<Config, LoadError> {
        let dir = std::env::temp_dir().join(format!("tiersweep-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tiersweep.toml");
        std::fs::write(&path, text).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let loaded = Config::load(Some(&path), env, &overrides);
        let _ = std::fs::remove_dir_all(&dir);
        loaded
    }

    #[test]
    fn file_then_env_then_flags() {
        let c = load(
            "[pubsub]\ntopic = \"from-file\"\nsubscription = \"s\"\n[protocol]\nheartbeat_interval = \"2s\"\nstaleness_threshold = \"9s\"\nsafety_margin = \"1s\"\n",
            &[("TIERSWEEP_PUBSUB__TOPIC", "from-env"), ("TIERSWEEP_RECOVERY__SCAN_BATCH", "7")],
            &["pubsub.subscription=from-flag", "recovery.idle_poll=250ms"],
        )
        .unwrap();
        assert_eq!(c.pubsub.topic, "from-env");
        assert_eq!(c.pubsub.subscription, "from-flag");
        assert_eq!(c.recovery.scan_batch, 7);
        assert_eq!(c.recovery.idle_poll, Duration::from_millis(250));
        assert_eq!(
            c.recovery().protocol.heartbeat_interval,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn against_the_pubsub_emulator_jobs_are_republished_sooner() {
        let mut c = Config::default();
        c.pubsub.emulator_host = None;
        assert_eq!(
            c.recovery().republish_after,
            RecoveryConfig::default().republish_after
        );
        c.pubsub.emulator_host = Some("127.0.0.1:8085".into());
        assert_eq!(c.recovery().republish_after, EMULATOR_REPUBLISH_AFTER);
        c.recovery.republish_after = Duration::from_secs(5);
        assert_eq!(c.recovery().republish_after, Duration::from_secs(5));
    }

    #[test]
    fn the_documented_example_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/local/tiersweep.toml");
        let example = Config::load(Some(&path), [], &[]).unwrap();
        let defaults = Config::default();
        assert_eq!(example.protocol, defaults.protocol);
        assert_eq!(example.worker, defaults.worker);
        assert_eq!(example.pubsub, defaults.pubsub);
        assert_eq!(example.gcs, defaults.gcs);
        assert_eq!(example.bigtable, defaults.bigtable);
        assert_eq!(
            format!("{:?}", example.recovery),
            format!("{:?}", defaults.recovery)
        );
    }

    #[test]
    fn errors_name_the_field() {
        let err = load("[pubsub]\ntopik = \"x\"\n", &[], &[]).unwrap_err();
        assert!(err.to_string().contains("topik"), "{err}");
        let err = load("[protocol]\nstaleness_threshold = \"5s\"\n", &[], &[]).unwrap_err();
        assert!(
            err.to_string().contains("protocol.staleness_threshold"),
            "{err}"
        );
        let err = load("", &[], &["recovery.claim_lease=soon"]).unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
        let err = load("", &[], &["worker.lease_period=\"500ms\""]).unwrap_err();
        assert!(err.to_string().contains("worker.lease_period"), "{err}");
        let err = load("", &[], &["worker.member_name=\"a/b\""]).unwrap_err();
        assert!(err.to_string().contains("worker.member_name"), "{err}");
        // Static membership's keys are not settings: a configuration that sets one is
        // refused, naming it.
        for retired in ["worker.membership=\"static\"", "worker.member_index=1"] {
            let err = load("", &[], &[retired]).unwrap_err();
            let key = retired.split('=').next().unwrap_or_default();
            let field = key.trim_start_matches("worker.");
            assert!(err.to_string().contains(field), "{retired}: {err}");
        }
        for rate in ["gcs_deletes_per_s", "bigtable_rows_per_s"] {
            let err = load("", &[], &[&format!("recovery.{rate}=0")]).unwrap_err();
            assert!(err.to_string().contains(rate), "{err}");
        }
        let err = load("", &[], &["gcs.bucket="]).unwrap_err();
        assert!(err.to_string().contains("gcs.bucket"), "{err}");
        let err = load("", &[], &["nodot=1"]).unwrap_err();
        assert!(err.to_string().contains("section.key"), "{err}");
        let err = Config::load(Some(Path::new("/no/such/file.toml")), [], &[]).unwrap_err();
        assert!(err.to_string().contains("/no/such/file.toml"), "{err}");
    }
}

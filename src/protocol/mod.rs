//! What writers and recovery share: the timing contract between them
//! ([`ProtocolConfig`], [`UPLOAD_SETTLE`]) and the convergence of a change
//! ([`converge`](converge::converge)), which a writer runs to complete its own change and a
//! cleaner to complete an abandoned one.

pub mod converge;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration;
use crate::error::ConfigError;

/// How long an upload may still land after its writer saw it fail or died: GCS finalizes an
/// object once it has every byte, whether or not the client is still there, and bytes can
/// trail a failed request or a dead process (its kernel keeps sending, a proxy holds them, a
/// retransmission arrives). Writers after a failed upload and recovery after deleting a dead
/// writer's upload keep the change's row this long, and delete the revision again after it.
/// Ten minutes covers a dead process's socket retransmissions and a proxy's timeouts; what
/// it cannot cover (a host suspended mid-upload for longer, then killed as it resumes) is
/// left to the listing-based audit.
pub const UPLOAD_SETTLE: Duration = Duration::from_secs(600);

/// The timing contract between writers and recovery. Writers and recovery workers must be
/// configured with the same values.
///
/// A writer heartbeats every `heartbeat_interval`; recovery treats an entry as abandoned
/// once it is `staleness_threshold` old. A writer considers its own guard valid only while
/// its last successful heartbeat (measured on its local monotonic clock from when the
/// heartbeat was *sent*) is younger than `staleness_threshold - safety_margin`. The margin
/// must cover the worst clock skew between a writer and a recovery worker (entry stamps are
/// wall-clock) plus the time a compare-and-write may spend in flight; the HV fence covers
/// what exceeds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtocolConfig {
    /// How often a writer re-stamps its changelog entry (10 s).
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// How old an entry's stamp must be before recovery takes it over (30 s). Writers and
    /// recovery must agree on it.
    #[serde(with = "duration")]
    pub staleness_threshold: Duration,
    /// How long before the threshold a writer stops acting on its change (5 s): room for
    /// a call in flight and for clock-rate drift.
    #[serde(with = "duration")]
    pub safety_margin: Duration,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(10),
            staleness_threshold: Duration::from_secs(30),
            safety_margin: Duration::from_secs(5),
        }
    }
}

impl ProtocolConfig {
    /// How long after its last heartbeat was sent a writer may still perform its HV write.
    pub fn guard_validity(&self) -> Duration {
        self.staleness_threshold.saturating_sub(self.safety_margin)
    }

    /// Checks the timings are consistent — heartbeats positive, the staleness threshold at
    /// least three of them, the guard valid for at least two — naming the first setting
    /// that is not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval.is_zero() {
            return Err(ConfigError::new("heartbeat_interval", "must be positive"));
        }
        if self.staleness_threshold < self.heartbeat_interval * 3 {
            return Err(ConfigError::new(
                "staleness_threshold",
                format!(
                    "{:?} is less than 3 x heartbeat_interval ({:?}); one delayed heartbeat would let recovery take over a live write",
                    self.staleness_threshold, self.heartbeat_interval
                ),
            ));
        }
        if self.guard_validity() < self.heartbeat_interval * 2 {
            return Err(ConfigError::new(
                "safety_margin",
                format!(
                    "{:?} leaves the writer's guard valid for less than 2 heartbeat intervals; lower it or raise staleness_threshold",
                    self.safety_margin
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_protocol_is_valid_and_rules_are_enforced() {
        ProtocolConfig::default().validate().unwrap();
        let short = ProtocolConfig {
            staleness_threshold: Duration::from_secs(20),
            ..Default::default()
        };
        assert_eq!(short.validate().unwrap_err().field, "staleness_threshold");
        let wide = ProtocolConfig {
            safety_margin: Duration::from_secs(15),
            ..Default::default()
        };
        assert_eq!(wide.validate().unwrap_err().field, "safety_margin");
    }
}

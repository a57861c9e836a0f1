//! Typed configuration, validated once at start so that a bad value fails with the name of
//! the field instead of surfacing later as a wrong deletion or a stuck loop.

use std::time::Duration;

/// A configuration value that cannot work, named by its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

impl ConfigError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolConfig {
    pub heartbeat_interval: Duration,
    pub staleness_threshold: Duration,
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

/// Durations in configuration files read as `"250ms"`, `"10s"`, `"5m"`, `"1h"`, or a bare
/// number of seconds; they serialize back in milliseconds or whole seconds.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: f64 = number.parse().map_err(|_| {
            format!("{text:?} is not a duration such as \"500ms\", \"10s\" or \"5m\"")
        })?;
        let seconds = match unit.trim() {
            "ms" => value / 1000.0,
            "" | "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {text:?}; use ms, s, m or h"
                ));
            }
        };
        Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
    }

    pub fn format(d: Duration) -> String {
        if d.subsec_millis() == 0 {
            format!("{}s", d.as_secs())
        } else {
            format!("{}ms", d.as_millis())
        }
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Seconds(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => parse(&t).map_err(de::Error::custom),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_the_units_and_rejects_the_rest() {
            assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
            assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
            assert_eq!(parse("1.5m"), Ok(Duration::from_secs(90)));
            assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
            assert_eq!(parse("7"), Ok(Duration::from_secs(7)));
            assert!(parse("10 parsecs").unwrap_err().contains("unknown unit"));
            assert!(parse("soon").is_err());
            assert_eq!(format(Duration::from_millis(1500)), "1500ms");
            assert_eq!(format(Duration::from_secs(30)), "30s");
        }
    }
}

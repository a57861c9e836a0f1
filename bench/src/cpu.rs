//! CPU time by process, for benchmarks that run every service on one machine. On the
//! emulators the three services and tiersweep share the same cores, so a rate measured one
//! service at a time overstates what the machine allows when they all run at once; what
//! bounds the pipeline there is CPU, and the question "how close to the ceiling" becomes
//! "how many CPU-seconds does a change cost, and whose".
//!
//! Per process, from `/proc/<pid>/stat` (user + system time), so other tenants of a shared
//! machine do not count. Linux only: elsewhere a probe watches nothing and reports nothing.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

/// The processes whose CPU time is sampled, by name.
#[derive(Debug, Clone)]
pub struct CpuProbe {
    procs: Vec<(String, u32)>,
}

/// CPU seconds used by each process since the process started, at one instant.
#[derive(Debug, Clone)]
pub struct CpuSample {
    at: Instant,
    secs: BTreeMap<String, f64>,
}

/// CPU used over an interval.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuUse {
    pub wall_s: f64,
    /// CPU seconds per process over the interval.
    pub by_process: BTreeMap<String, f64>,
}

impl CpuUse {
    pub fn total_s(&self) -> f64 {
        self.by_process.values().sum()
    }

    /// Cores kept busy on average: 2.0 is all of a 2-core machine.
    pub fn cores_busy(&self) -> f64 {
        self.total_s() / self.wall_s.max(1e-9)
    }
}

/// User + system CPU seconds `pid` has used since it started.
pub fn cpu_s(pid: u32) -> Option<f64> {
    tiersweep::telemetry::process::cpu_time(&pid.to_string()).map(|d| d.as_secs_f64())
}

impl CpuProbe {
    /// Watches this process (as `tiersweep`) and the named others.
    pub fn new(others: impl IntoIterator<Item = (String, u32)>) -> Self {
        let mut procs = vec![("tiersweep".to_owned(), std::process::id())];
        procs.extend(others);
        Self { procs }
    }

    /// The names of the processes that can be read now.
    pub fn watched(&self) -> Vec<&str> {
        self.procs
            .iter()
            .filter(|(_, pid)| cpu_s(*pid).is_some())
            .map(|(n, _)| n.as_str())
            .collect()
    }

    pub fn sample(&self) -> CpuSample {
        let secs = self
            .procs
            .iter()
            .filter_map(|(name, pid)| Some((name.clone(), cpu_s(*pid)?)))
            .collect();
        CpuSample {
            at: Instant::now(),
            secs,
        }
    }
}

impl CpuSample {
    /// What each process used between `earlier` and this sample. A process seen in only
    /// one of the two (it started or ended in between) is left out rather than guessed.
    pub fn since(&self, earlier: &CpuSample) -> CpuUse {
        let by_process = self
            .secs
            .iter()
            .filter_map(|(name, now)| {
                Some((name.clone(), (now - earlier.secs.get(name)?).max(0.0)))
            })
            .collect();
        CpuUse {
            wall_s: self.at.duration_since(earlier.at).as_secs_f64(),
            by_process,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_burning_cpu_shows_in_its_own_row() {
        let probe = CpuProbe::new([("gone".to_owned(), u32::MAX)]);
        if cfg!(not(target_os = "linux")) {
            assert!(probe.watched().is_empty());
            return;
        }
        assert_eq!(probe.watched(), ["tiersweep"]);
        let before = probe.sample();
        // Spin until the probe has seen 0.1 s of this process's CPU: on a loaded machine
        // that takes longer in wall time, so the bound is on CPU, not on the clock. A
        // probe that does not see this process's CPU never gets there; the minute is
        // only there to end such a run.
        let spin = Instant::now();
        let mut x = 0u64;
        let used = loop {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            let used = probe.sample().since(&before);
            if used.by_process["tiersweep"] >= 0.1 || spin.elapsed().as_secs() >= 60 {
                break used;
            }
        };
        assert!(used.by_process["tiersweep"] >= 0.1, "{used:?}");
        assert!(!used.by_process.contains_key("gone"), "{used:?}");
        assert!(used.cores_busy() > 0.0);
    }
}

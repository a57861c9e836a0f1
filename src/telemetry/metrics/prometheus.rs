//! The registry in Prometheus's text format, for the health server's `/metrics`.

use std::fmt::Write as _;

use super::{BUILD_INFO, Counter, GCP_CALLS, LAG_BOUNDS, Metrics, OLDEST_STALE, STALE_ROWS};

/// `tiersweep.claims` + `_total` → `tiersweep_claims_total`.
pub fn prometheus_name(otel: &str, suffix: &str) -> String {
    format!("{}{suffix}", otel.replace('.', "_"))
}

pub(super) fn series(c: &Counter) -> String {
    let name = prometheus_name(c.name, "_total");
    match c.label {
        Some((k, v)) => format!("{name}{{{k}=\"{v}\"}}"),
        None => name,
    }
}

/// The registry in the Prometheus text exposition format (version 0.0.4), then the
/// process metrics (`process_cpu_seconds_total`, …).
pub fn render_prometheus(m: &Metrics) -> String {
    let mut out = String::new();
    let name = prometheus_name(BUILD_INFO.0, "");
    let _ = writeln!(
        out,
        "# HELP {name} {}\n# TYPE {name} gauge\n{name}{{version=\"{}\",role=\"{}\"}} 1",
        BUILD_INFO.1,
        env!("CARGO_PKG_VERSION"),
        m.role()
    );
    let mut last = "";
    for c in m.counters() {
        if c.name != last {
            let name = prometheus_name(c.name, "_total");
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} counter", c.help);
            last = c.name;
        }
        let _ = writeln!(out, "{} {}", series(c), c.get());
    }

    let h = &m.recovery_lag;
    let name = prometheus_name(h.name, "_seconds");
    let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} histogram", h.help);
    let cumulative = h.cumulative();
    for (bound, n) in LAG_BOUNDS.iter().zip(&cumulative) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
    }
    let count = cumulative.last().copied().unwrap_or(0);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}", h.sum().as_secs_f64());
    let _ = writeln!(out, "{name}_count {count}");

    let name = prometheus_name(GCP_CALLS.0, "_total");
    let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} counter", GCP_CALLS.1);
    for (call, n) in crate::iam::calls_made() {
        let _ = writeln!(
            out,
            "{name}{{method=\"{}\",resource=\"{}\"}} {n}",
            call.method.name(),
            call.resource.name()
        );
    }

    let backlog = m.backlog();
    for ((otel, help), suffix) in [(STALE_ROWS, ""), (OLDEST_STALE, "_seconds")] {
        let name = prometheus_name(otel, suffix);
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (shards, b) in &backlog {
            let value = if suffix.is_empty() {
                b.stale_rows as f64
            } else {
                b.oldest_stale_age.as_secs_f64()
            };
            let _ = writeln!(out, "{name}{{shards=\"{shards}\"}} {value}");
        }
    }
    crate::telemetry::process::render_prometheus(&mut out);
    out
}

//! The registry registered with an OpenTelemetry meter, for OTLP export.

use std::collections::BTreeMap;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

use super::{BUILD_INFO, Counter, GCP_CALLS, LAG_BOUNDS, Metrics, OLDEST_STALE, STALE_ROWS};

/// Registers the registry with an OpenTelemetry meter: observable instruments read the
/// atomics at each collection; the lag histogram records into both from then on.
pub fn install_otel(meter: &Meter, m: &'static Metrics) {
    let mut families: BTreeMap<&'static str, Vec<&'static Counter>> = BTreeMap::new();
    for c in m.counters() {
        families.entry(c.name).or_default().push(c);
    }
    for (name, series) in families {
        let help = series[0].help;
        meter
            .u64_observable_counter(name)
            .with_description(help)
            .with_callback(move |observer| {
                for c in &series {
                    let attrs: Vec<KeyValue> = c
                        .label
                        .map(|(k, v)| KeyValue::new(k, v))
                        .into_iter()
                        .collect();
                    observer.observe(c.get(), &attrs);
                }
            })
            .build();
    }
    meter
        .u64_observable_gauge(BUILD_INFO.0)
        .with_description(BUILD_INFO.1)
        .with_callback(move |observer| {
            observer.observe(
                1,
                &[
                    KeyValue::new("version", env!("CARGO_PKG_VERSION")),
                    KeyValue::new("role", m.role()),
                ],
            );
        })
        .build();
    let h = &m.recovery_lag;
    let _ = h.otel.set(
        meter
            .f64_histogram(h.name)
            .with_description(h.help)
            .with_unit("s")
            .with_boundaries(LAG_BOUNDS.to_vec())
            .build(),
    );
    meter
        .u64_observable_counter(GCP_CALLS.0)
        .with_description(GCP_CALLS.1)
        .with_callback(|observer| {
            for (call, n) in crate::iam::calls_made() {
                observer.observe(
                    n,
                    &[
                        KeyValue::new("method", call.method.name()),
                        KeyValue::new("resource", call.resource.name()),
                    ],
                );
            }
        })
        .build();
    meter
        .u64_observable_gauge(STALE_ROWS.0)
        .with_description(STALE_ROWS.1)
        .with_callback(move |observer| {
            for (shards, b) in m.backlog() {
                observer.observe(b.stale_rows, &[KeyValue::new("shards", shards)]);
            }
        })
        .build();
    meter
        .f64_observable_gauge(OLDEST_STALE.0)
        .with_description(OLDEST_STALE.1)
        .with_unit("s")
        .with_callback(move |observer| {
            for (shards, b) in m.backlog() {
                observer.observe(
                    b.oldest_stale_age.as_secs_f64(),
                    &[KeyValue::new("shards", shards)],
                );
            }
        })
        .build();
}

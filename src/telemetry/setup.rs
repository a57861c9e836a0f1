//! Process-wide telemetry setup, shared by every binary: logs on stderr and, when an OTLP
//! endpoint is configured, trace and metric export. Configured by the standard `OTEL_*` variables
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL` = `grpc` or
//! `http/protobuf`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_EXPORTER` /
//! `OTEL_METRICS_EXPORTER` = `none`, `OTEL_RESOURCE_ATTRIBUTES`, …).

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{ExporterBuildError, MetricExporter, SpanExporter};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable, for terminals.
    #[default]
    Text,
    /// One JSON object per line, for log collectors, with the level as `severity` so that
    /// Cloud Logging reads it (see `json_log`).
    Json,
}

/// How long [`Telemetry::shutdown`] waits for each exporter (traces, then metrics) to
/// flush. A pod's `terminationGracePeriodSeconds` must cover `worker.shutdown_deadline`
/// plus twice this, plus a margin (infra/check-deploy.py reads this constant).
pub const EXPORT_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Flushes and stops trace and metric export; call it last, after the work has drained.
#[derive(Debug, Default)]
#[must_use = "dropping the guard without shutdown() may lose the last spans"]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Flushes and stops the exporters: call before the process exits, or the last spans
    /// and metrics are lost. It blocks until they are sent (or five seconds pass each),
    /// and the gRPC exporters send on the async runtime: call it from a thread that is not
    /// the runtime's (`tokio::task::spawn_blocking`), or a one-thread runtime waits out the
    /// timeout and drops them.
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider
            && let Err(e) = provider.shutdown_with_timeout(EXPORT_FLUSH_TIMEOUT)
        {
            eprintln!("tiersweep: flushing traces failed: {e}");
        }
        // Shutting down collects and exports once more, so the final counts arrive.
        if let Some(provider) = self.meter_provider
            && let Err(e) = provider.shutdown_with_timeout(EXPORT_FLUSH_TIMEOUT)
        {
            eprintln!("tiersweep: flushing metrics failed: {e}");
        }
    }
}

/// Whether `signal` (`TRACES`, `METRICS`) is to be exported over OTLP, from the variables
/// `env` looks up: an endpoint is configured, the SDK is not disabled
/// (`OTEL_SDK_DISABLED=true`) and the signal's exporter is not switched off
/// (`OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER` = `none`). Switching one signal off is
/// what a pod needs whose metrics are scraped (`/metrics`) while its traces go out over
/// OTLP: exporting both ways would count every series twice.
fn otlp_wanted(signal: &str, env: impl Fn(&str) -> Option<String>) -> bool {
    let set = |k: &str| env(k).map(|v| v.trim().to_owned());
    // The specification's switch for turning the SDK off whatever else is set.
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return false;
    }
    match set(&format!("OTEL_{signal}_EXPORTER")).as_deref() {
        None | Some("" | "otlp") => {}
        Some("none") => return false,
        Some(other) => {
            // Only OTLP is built in; a name we cannot honour must not pass silently.
            eprintln!(
                "tiersweep: OTEL_{signal}_EXPORTER={other} is not supported (otlp or none); \
                 {} export disabled",
                signal.to_ascii_lowercase()
            );
            return false;
        }
    }
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
        format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"),
    ]
    .iter()
    .any(|k| set(k).is_some_and(|v| !v.is_empty()))
}

fn otlp_configured(signal: &str) -> bool {
    otlp_wanted(signal, |k| std::env::var(k).ok())
}

/// Builds an OTLP exporter where its transport wants to be built: the gRPC transport needs
/// the async runtime; the HTTP transport's blocking client must be built (and dropped) off
/// it.
fn build_exporter<T: Send + 'static>(
    signal: &str,
    build: impl FnOnce() -> Result<T, ExporterBuildError> + Send + 'static,
) -> Result<T, ExporterBuildError> {
    let protocol = std::env::var(format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"))
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    if protocol.trim() == "grpc" {
        build()
    } else {
        std::thread::spawn(build).join().unwrap_or_else(|_| {
            Err(ExporterBuildError::InternalFailure(
                "exporter construction panicked".into(),
            ))
        })
    }
}

/// The process's resource: `service.name` (unless `OTEL_SERVICE_NAME` names it),
/// `service.version` (the crate's), and `service.instance.id` — one id per process, so
/// that two pods' series and spans never merge (Cloud Monitoring rejects points of one
/// series written by two writers). `OTEL_RESOURCE_ATTRIBUTES` is read by the builder and
/// wins over both.
fn resource(service_name: &str) -> Resource {
    use opentelemetry::KeyValue;
    let from_env = std::env::var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    let set = |key: &str| {
        from_env
            .split(',')
            .any(|kv| kv.split_once('=').is_some_and(|(k, _)| k.trim() == key))
    };
    // The builder's own detectors read OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES;
    // ours fill in only what they leave unset.
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() && !set("service.name") {
        resource = resource.with_service_name(service_name.to_owned());
    }
    if !set("service.version") {
        resource =
            resource.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    if !set("service.instance.id") {
        resource = resource.with_attribute(KeyValue::new(
            "service.instance.id",
            uuid::Uuid::now_v7().to_string(),
        ));
    }
    resource.build()
}

/// Installs the process's tracing subscriber: a log layer on stderr filtered by `RUST_LOG`
/// (default `default_level`) and, when an OTLP endpoint is set, an OpenTelemetry layer that
/// exports tiersweep's spans, plus export of the metrics registry (`telemetry::metrics`) every
/// `OTEL_METRIC_EXPORT_INTERVAL` ms (default 60 s). Each layer has its own filter: a global
/// filter would also silence the spans that trace export and context propagation need.
pub fn init(format: LogFormat, default_level: &str, service_name: &str) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let mut telemetry = Telemetry::default();
    let otel = if otlp_configured("TRACES") {
        match build_exporter("TRACES", || SpanExporter::builder().build()) {
            Ok(exporter) => {
                let provider = SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource(service_name))
                    .build();
                let tracer = provider.tracer("tiersweep");
                opentelemetry::global::set_tracer_provider(provider.clone());
                telemetry.tracer_provider = Some(provider);
                // Our spans only: client libraries' internal spans would drown the pipeline's.
                let targets = Targets::new().with_target("tiersweep", tracing::Level::INFO);
                Some(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(targets),
                )
            }
            Err(e) => {
                eprintln!("tiersweep: OTLP trace export disabled: {e}");
                None
            }
        }
    } else {
        None
    };
    if otlp_configured("METRICS") {
        match build_exporter("METRICS", || MetricExporter::builder().build()) {
            Ok(exporter) => {
                let provider = SdkMeterProvider::builder()
                    .with_periodic_exporter(exporter)
                    .with_resource(resource(service_name))
                    .build();
                crate::register_metrics(&provider.meter("tiersweep"));
                telemetry.meter_provider = Some(provider);
            }
            Err(e) => eprintln!("tiersweep: OTLP metric export disabled: {e}"),
        }
    }
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => super::json_log::CloudLoggingJson::from_env()
            .layer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    // A second init (tests running several commands in one process) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(otel)
        .try_init();
    telemetry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(signal: &str, vars: &[(&str, &str)]) -> bool {
        otlp_wanted(signal, |k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn each_signal_can_be_switched_off_alone() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        assert!(wanted("TRACES", &[endpoint]));
        assert!(wanted("METRICS", &[endpoint]));
        let no_metrics = [endpoint, ("OTEL_METRICS_EXPORTER", "none")];
        assert!(wanted("TRACES", &no_metrics));
        assert!(!wanted("METRICS", &no_metrics));
        let no_traces = [endpoint, ("OTEL_TRACES_EXPORTER", "none")];
        assert!(!wanted("TRACES", &no_traces));
        assert!(wanted("METRICS", &no_traces));
        assert!(wanted(
            "TRACES",
            &[endpoint, ("OTEL_TRACES_EXPORTER", "otlp")]
        ));
        // An exporter we do not have is not silently taken for OTLP.
        assert!(!wanted(
            "TRACES",
            &[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")]
        ));
        assert!(!wanted(
            "TRACES",
            &[endpoint, ("OTEL_SDK_DISABLED", "true")]
        ));
        assert!(!wanted("TRACES", &[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]));
        assert!(wanted(
            "METRICS",
            &[(
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "http://c:4318/v1/metrics"
            )]
        ));
    }

    #[test]
    fn the_resource_names_version_and_instance() {
        let a = resource("tiersweep-test");
        let b = resource("tiersweep-test");
        let get = |r: &Resource, k: &'static str| {
            r.get(&opentelemetry::Key::from_static_str(k))
                .map(|v| v.to_string())
        };
        assert_eq!(
            get(&a, "service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            assert_eq!(
                get(&a, "service.name").as_deref(),
                Some("tiersweep-test"),
                "the role's name unless the environment names the service"
            );
        }
        let id = get(&a, "service.instance.id").expect("an instance id");
        assert_ne!(
            Some(id),
            get(&b, "service.instance.id"),
            "one id per process start"
        );
    }
}

//! Process-wide telemetry setup, shared by every binary: logs on stderr and, when an OTLP
//! endpoint is configured, trace and metric export. Configured by the standard `OTEL_*` variables
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL` = `grpc` or
//! `http/protobuf`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, …).

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

/// Flushes and stops trace and metric export; call it last, after the work has drained.
#[derive(Debug, Default)]
#[must_use = "dropping the guard without shutdown() may lose the last spans"]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Flushes and stops the exporters: call before the process exits, or the last spans
    /// and metrics are lost.
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("tiersweep: flushing traces failed: {e}");
        }
        // Shutting down collects and exports once more, so the final counts arrive.
        if let Some(provider) = self.meter_provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("tiersweep: flushing metrics failed: {e}");
        }
    }
}

/// Whether `signal` (`TRACES`, `METRICS`) has an OTLP endpoint configured and the SDK is
/// not disabled (`OTEL_SDK_DISABLED=true`).
fn otlp_configured(signal: &str) -> bool {
    // The specification's switch for turning the SDK off whatever else is set.
    if std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return false;
    }
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
        format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"),
    ]
    .iter()
    .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
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

fn resource(service_name: &str) -> Resource {
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service_name.to_owned());
    }
    resource.build()
}

/// Installs the process's tracing subscriber: a log layer on stderr filtered by `RUST_LOG`
/// (default `default_level`) and, when an OTLP endpoint is set, an OpenTelemetry layer that
/// exports tiersweep's spans, plus export of the [metrics registry](super::metrics) every
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

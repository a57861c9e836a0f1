//! Process-wide telemetry setup, shared by every binary: logs on stderr and, when an OTLP
//! endpoint is configured, trace export. Configured by the standard `OTEL_*` variables
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL` = `grpc` or
//! `http/protobuf`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, …).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
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
    /// One JSON object per line, for log collectors.
    Json,
}

/// Flushes and stops trace export; call it last, after the work has drained.
#[derive(Debug, Default)]
#[must_use = "dropping the guard without shutdown() may lose the last spans"]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn exporting(&self) -> bool {
        self.tracer_provider.is_some()
    }

    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("tiersweep: flushing traces failed: {e}");
        }
    }
}

fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
}

/// Installs the process's tracing subscriber: a log layer on stderr filtered by `RUST_LOG`
/// (default `default_level`) and, when an OTLP endpoint is set, an OpenTelemetry layer that
/// exports tiersweep's spans. Each layer has its own filter: a global filter would also
/// silence the spans that trace export and context propagation need.
pub fn init(format: LogFormat, default_level: &str, service_name: &str) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let mut telemetry = Telemetry::default();
    let otel = if otlp_configured() {
        // The gRPC transport needs the async runtime when it is built; the HTTP
        // transport's blocking client must be built (and dropped) off it.
        let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_default();
        let build = || opentelemetry_otlp::SpanExporter::builder().build();
        let built = if protocol.trim() == "grpc" {
            build()
        } else {
            std::thread::spawn(build).join().unwrap_or_else(|_| {
                Err(opentelemetry_otlp::ExporterBuildError::InternalFailure(
                    "exporter construction panicked".into(),
                ))
            })
        };
        match built {
            Ok(exporter) => {
                let mut resource = Resource::builder();
                if std::env::var("OTEL_SERVICE_NAME").is_err() {
                    resource = resource.with_service_name(service_name.to_owned());
                }
                let provider = SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource.build())
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
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
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

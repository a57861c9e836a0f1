//! `--log-format json`: one JSON object per line, in the shape Cloud Logging's agent reads
//! from a container's stderr — the level as `severity` (`DEBUG`, `INFO`, `WARNING`,
//! `ERROR`), the text as `message`, the time as `timestamp` — so that on GKE a line's
//! severity is its level, not "ERROR because stderr". The event's fields, its target and
//! the fields of the spans it is in are kept beside them, and the OpenTelemetry trace and
//! span ids too (with `logging.googleapis.com/trace` when `GOOGLE_CLOUD_PROJECT` names the
//! project, so Cloud Logging links the line to its trace, and
//! `logging.googleapis.com/trace_sampled`, whether that trace was exported).

use std::fmt;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The event formatter behind [`super::LogFormat::Json`]; [`CloudLoggingJson::layer`]
/// wires it into a subscriber.
#[derive(Debug, Clone, Default)]
pub struct CloudLoggingJson {
    /// `projects/{id}` when the project is known, for `logging.googleapis.com/trace`.
    project: Option<String>,
    /// The dispatcher this formatter runs under, captured when it is registered. Inside
    /// an event callback `Span::current()` and `dispatcher::get_default` see no
    /// dispatcher (tracing guards against re-entry), so the OpenTelemetry context of the
    /// event's span is looked up through this one instead.
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

/// Captures the dispatcher for [`CloudLoggingJson`]; does nothing else.
struct CaptureDispatch(Arc<OnceLock<WeakDispatch>>);

impl<S: Subscriber> Layer<S> for CaptureDispatch {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        // The first registration wins: a layer belongs to one subscriber.
        let _ = self.0.set(subscriber.downgrade());
    }
}

impl CloudLoggingJson {
    /// Reads the project from `GOOGLE_CLOUD_PROJECT`, as Google's client libraries do.
    pub fn from_env() -> Self {
        Self::for_project(std::env::var("GOOGLE_CLOUD_PROJECT").ok())
    }

    pub fn for_project(project: Option<String>) -> Self {
        Self {
            project: project.filter(|p| !p.trim().is_empty()),
            dispatch: Arc::default(),
        }
    }

    /// A fmt layer writing these lines to `writer`, without ANSI colour (span fields are
    /// recorded as plain text) and able to find the event's trace.
    pub fn layer<S, W>(self, writer: W) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
    {
        let capture = CaptureDispatch(self.dispatch.clone());
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .event_format(self)
            .with_writer(writer)
            .and_then(capture)
    }

    /// The OpenTelemetry context of span `id`, when an OpenTelemetry layer is installed.
    fn otel_context(&self, id: &tracing::span::Id) -> Option<opentelemetry::Context> {
        let dispatch = self.dispatch.get()?.upgrade()?;
        tracing_opentelemetry::get_otel_context(id, &dispatch)
    }
}

/// Cloud Logging's `LogSeverity` names for tracing's levels.
fn severity(level: &Level) -> &'static str {
    match *level {
        Level::TRACE | Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARNING",
        Level::ERROR => "ERROR",
    }
}

/// Collects an event's fields as JSON values; `message` is the event's text.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole chain: "claim failed: Bigtable unavailable: …".
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(e) = source {
            text.push_str(": ");
            text.push_str(&e.to_string());
            source = e.source();
        }
        self.0.insert(field.name().to_owned(), text.into());
    }
}

impl<S, N> FormatEvent<S, N> for CloudLoggingJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        line.insert("timestamp".into(), time.into());
        line.insert("severity".into(), severity(meta.level()).into());
        let mut fields = Map::new();
        event.record(&mut Fields(&mut fields));
        let message = fields.remove("message").unwrap_or_default();
        line.insert("message".into(), message);
        line.insert("target".into(), meta.target().into());
        if !fields.is_empty() {
            line.insert("fields".into(), Value::Object(fields));
        }
        // The spans the event is in, outermost first, with the fields the fmt layer
        // recorded for them (as text: `change_id=… shard=…`).
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<Value> = scope
                .from_root()
                .map(|span| {
                    let ext = span.extensions();
                    let fields = ext
                        .get::<FormattedFields<N>>()
                        .map(|f| f.fields.as_str())
                        .unwrap_or_default();
                    let mut s = Map::new();
                    s.insert("name".into(), span.name().into());
                    if !fields.is_empty() {
                        s.insert("fields".into(), fields.into());
                    }
                    Value::Object(s)
                })
                .collect();
            if !spans.is_empty() {
                line.insert("spans".into(), Value::Array(spans));
            }
        }
        // The event's own span (innermost); no extensions are held here, as
        // `get_otel_context` requires.
        let context = ctx
            .lookup_current()
            .map(|span| span.id())
            .and_then(|id| self.otel_context(&id))
            .unwrap_or_default();
        let span = context.span();
        let sc = span.span_context();
        if sc.is_valid() {
            let trace_id = sc.trace_id().to_string();
            if let Some(project) = &self.project {
                line.insert(
                    "logging.googleapis.com/trace".into(),
                    format!("projects/{project}/traces/{trace_id}").into(),
                );
            }
            line.insert("trace_id".into(), trace_id.into());
            line.insert("span_id".into(), sc.span_id().to_string().into());
            line.insert(
                "logging.googleapis.com/spanId".into(),
                sc.span_id().to_string().into(),
            );
            // Without it Cloud Logging shows the trace link but cannot say whether the
            // trace was kept, and its "view trace" lands on nothing for unsampled ones.
            line.insert(
                "logging.googleapis.com/trace_sampled".into(),
                sc.is_sampled().into(),
            );
        }
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// Runs `f` under a subscriber that formats with [`CloudLoggingJson`] into a buffer,
    /// and returns the lines it wrote, parsed.
    fn logged(project: Option<&str>, f: impl FnOnce()) -> Vec<Value> {
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let layer = CloudLoggingJson::for_project(project.map(str::to_owned))
            .layer(move || Sink(sink.clone()));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("claim failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_line_carries_severity_message_fields_and_spans_as_cloud_logging_reads_them() {
        let lines = logged(None, || {
            let span = tracing::info_span!("process", shard = 7);
            let _in = span.enter();
            tracing::warn!(attempt = 2, ok = false, "job failed; nacking");
            let e = Outer(std::io::Error::other("Bigtable unavailable"));
            tracing::error!(error = &e as &dyn std::error::Error, "gave up");
            tracing::info!("plain");
        });
        assert_eq!(lines.len(), 3, "{lines:?}");
        let w = &lines[0];
        assert_eq!(w["severity"], "WARNING");
        assert_eq!(w["message"], "job failed; nacking");
        assert_eq!(w["fields"]["attempt"], 2);
        assert_eq!(w["fields"]["ok"], false);
        assert_eq!(w["spans"][0]["name"], "process");
        assert_eq!(w["spans"][0]["fields"], "shard=7");
        assert!(w["target"].as_str().unwrap().starts_with("tiersweep"));
        // RFC 3339, UTC.
        let ts = w["timestamp"].as_str().unwrap();
        assert!(
            ts.len() >= 20 && ts.ends_with('Z') && ts.contains('T'),
            "{ts}"
        );
        assert_eq!(lines[1]["severity"], "ERROR");
        assert_eq!(
            lines[1]["fields"]["error"],
            "claim failed: Bigtable unavailable"
        );
        assert_eq!(lines[2]["severity"], "INFO");
        assert!(lines[2].get("fields").is_none(), "{:?}", lines[2]);
        // No OpenTelemetry layer here: no trace ids, rather than invalid ones.
        assert!(w.get("trace_id").is_none());
    }

    #[test]
    fn a_line_inside_a_traced_span_names_its_trace_for_the_project() {
        use opentelemetry::trace::TracerProvider as _;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::registry()
            .with(
                CloudLoggingJson::for_project(Some("my-project".into()))
                    .layer(move || Sink(sink.clone())),
            )
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("claim");
            let _in = span.enter();
            tracing::info!("claimed");
        });
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        let trace_id = line["trace_id"].as_str().expect("a trace id");
        assert_eq!(trace_id.len(), 32);
        assert_eq!(
            line["logging.googleapis.com/trace"],
            format!("projects/my-project/traces/{trace_id}")
        );
        assert_eq!(line["span_id"].as_str().unwrap().len(), 16);
        assert_eq!(line["logging.googleapis.com/trace_sampled"], true);
    }

    #[test]
    fn levels_map_to_cloud_logging_severities() {
        assert_eq!(severity(&Level::TRACE), "DEBUG");
        assert_eq!(severity(&Level::DEBUG), "DEBUG");
        assert_eq!(severity(&Level::INFO), "INFO");
        assert_eq!(severity(&Level::WARN), "WARNING");
        assert_eq!(severity(&Level::ERROR), "ERROR");
    }
}

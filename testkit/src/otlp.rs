//! A local OTLP collector (gRPC) for tests and benchmarks that run the workers as
//! processes: it accepts trace and metric exports as a real collector would, so the
//! workers' export path (batching, encoding, the HTTP/2 connection) runs and costs what it
//! costs in production, and keeps what a test needs to check: every span with the service
//! that sent it (or only a count per service, for runs too long to keep them), and the
//! latest value of every metric series.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;

/// (service, metric name, `key=value,…` attributes)
pub type Series = (String, String, String);

#[derive(Default)]
struct Received {
    /// Spans as received, with the service that sent them, when kept.
    spans: Vec<(String, Span)>,
    /// Spans received per service and span name, kept or not.
    span_counts: BTreeMap<(String, String), u64>,
    /// Latest value of each series; the exporter sends cumulative sums, so the latest is
    /// the total.
    series: BTreeMap<Series, f64>,
}

/// The collector's state, shared with its server.
#[derive(Clone)]
pub struct Collector {
    keep_spans: bool,
    received: Arc<Mutex<Received>>,
}

impl Collector {
    /// Starts a collector on a free loopback port, serving until the runtime ends.
    /// `keep_spans` keeps every span (for tests that follow traces); otherwise only counts.
    pub async fn start(keep_spans: bool) -> std::io::Result<(Self, SocketAddr)> {
        let collector = Self {
            keep_spans,
            received: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let incoming = futures::stream::unfold(listener, |l| async move {
            let r = l.accept().await.map(|(s, _)| s);
            Some((r, l))
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector.clone()))
                .add_service(MetricsServiceServer::new(collector.clone()))
                .serve_with_incoming(incoming),
        );
        Ok((collector, addr))
    }

    /// The environment that points a worker's exporters here (gRPC, default batching).
    pub fn env(addr: SocketAddr) -> Vec<(String, String)> {
        vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                format!("http://{addr}"),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "grpc".into()),
        ]
    }

    fn received(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every span kept so far, with its service.
    pub fn spans(&self) -> Vec<(String, Span)> {
        self.received().spans.clone()
    }

    /// Spans received so far, per service and span name.
    pub fn span_counts(&self) -> BTreeMap<(String, String), u64> {
        self.received().span_counts.clone()
    }

    /// The latest value of every metric series received so far.
    pub fn series(&self) -> BTreeMap<Series, f64> {
        self.received().series.clone()
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.received();
        for rs in request.into_inner().resource_spans {
            let service = service_of(rs.resource.as_ref());
            for span in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                *received
                    .span_counts
                    .entry((service.clone(), span.name.clone()))
                    .or_default() += 1;
                if self.keep_spans {
                    received.spans.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut received = self.received();
        for rm in request.into_inner().resource_metrics {
            let service = service_of(rm.resource.as_ref());
            for metric in rm.scope_metrics.into_iter().flat_map(|sm| sm.metrics) {
                let points = match metric.data {
                    Some(Data::Sum(s)) => s.data_points,
                    Some(Data::Gauge(g)) => g.data_points,
                    _ => continue,
                };
                for p in points {
                    let labels = p
                        .attributes
                        .iter()
                        .map(|kv| {
                            format!(
                                "{}={}",
                                kv.key,
                                string(&p.attributes, &kv.key).unwrap_or_default()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(",");
                    let v = match p.value {
                        Some(number_data_point::Value::AsInt(i)) => i as f64,
                        Some(number_data_point::Value::AsDouble(d)) => d,
                        None => continue,
                    };
                    received
                        .series
                        .insert((service.clone(), metric.name.clone(), labels), v);
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// The `service.name` an export names its sender by.
fn service_of(resource: Option<&Resource>) -> String {
    resource
        .and_then(|r| string(&r.attributes, "service.name"))
        .unwrap_or_default()
}

/// The value of attribute `key`, if set.
pub fn value<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()
}

/// Attribute `key` as text (strings, integers and booleans).
pub fn string(attrs: &[KeyValue], key: &str) -> Option<String> {
    match value(attrs, key)? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

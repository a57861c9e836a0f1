//! Trace context across process boundaries, in W3C trace-context form:
//!
//! * **Job messages** carry the producer's context in their attributes, under the plain
//!   keys (`traceparent`, `tracestate`) and under Google's client libraries' keys
//!   (`googclient_traceparent`, …), so that consumers written with either understand them.
//! * **Change records** carry the writer's `traceparent`, so a recovery trace can link back
//!   to the request whose crash left the change behind.

use std::collections::{BTreeMap, HashMap};

use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The prefix Google's Pub/Sub client libraries put before trace-context keys.
pub const GOOGLE_PREFIX: &str = "googclient_";

/// `span`'s context as message attributes (empty when the span is not recorded).
pub fn inject(span: &tracing::Span) -> BTreeMap<String, String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    let mut attributes = BTreeMap::new();
    for (k, v) in carrier {
        attributes.insert(format!("{GOOGLE_PREFIX}{k}"), v.clone());
        attributes.insert(k, v);
    }
    attributes
}

/// The producer's context from message attributes; Google's keys win when both are there
/// (they are what Google's libraries set, and they match ours when we produced it).
pub fn extract(attributes: &BTreeMap<String, String>) -> Context {
    let mut carrier: HashMap<String, String> = HashMap::new();
    for (k, v) in attributes {
        if let Some(plain) = k.strip_prefix(GOOGLE_PREFIX) {
            carrier.insert(plain.to_owned(), v.clone());
        } else {
            carrier.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    TraceContextPropagator::new().extract(&carrier)
}

/// The span context a `traceparent` header names, when it is valid.
pub fn span_context(traceparent: &str) -> Option<SpanContext> {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The current span's `traceparent`, for a change record; `None` when nothing is traced.
pub fn current_traceparent() -> Option<String> {
    inject(&tracing::Span::current()).remove("traceparent")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_keys_are_read_and_bad_headers_ignored() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let attrs = BTreeMap::from([(format!("{GOOGLE_PREFIX}traceparent"), tp.to_owned())]);
        let cx = extract(&attrs);
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert!(span_context(tp).is_some());
        assert!(span_context("00-garbage").is_none());
    }
}

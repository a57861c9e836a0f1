//! One trace per recovered change, across processes: a scanner and a cleaner run as
//! separate processes against the emulators and export to an OTLP receiver inside this
//! test, which then follows each change from `scan` to `converge` and back to the crashed
//! writer's request. The same run checks the metrics both processes export over OTLP and
//! serve on `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tiersweep::Stores;
use tiersweep::clock;
use tiersweep::config::ProtocolConfig;
use tiersweep_testkit::crash::{self, test_writer_config};
use tiersweep_testkit::emulators::{emulators, env_for};
use tiersweep_testkit::otlp::{Collector, string};
use tracing_subscriber::layer::SubscriberExt;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn protocol() -> ProtocolConfig {
    ProtocolConfig {
        heartbeat_interval: Duration::from_millis(200),
        staleness_threshold: Duration::from_millis(1000),
        safety_margin: Duration::from_millis(300),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_recovered_change_is_one_trace_from_claim_to_converge_linked_to_its_scan_and_writer() {
    // The writers in this process record trace context, as an instrumented service would.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("writer")));
    // Global, not thread-local: the writers' tasks run on the runtime's worker threads.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let (collector, otlp) = Collector::start(true).await.unwrap();

    let e = emulators().await;
    let mut config = e.fresh_config(protocol()).await;
    config.recovery.claim_lease = Duration::from_secs(30);
    config.recovery.idle_poll = Duration::from_millis(200);
    // One pass per change, so one trace each (a settle would add a second pass, a second
    // trace, for changes recovered before their HV write).
    config.recovery.upload_settle = Duration::ZERO;
    let stores = Stores::connect_to(
        &config.bigtable,
        &config.gcs,
        clock::system(),
        tiersweep::lt::LtAccess::Write,
    )
    .await
    .unwrap();
    let n = 3;
    let request = tracing::info_span!("crashed request");
    let writer_trace = {
        let _g = request.enter();
        tiersweep::telemetry::propagation::current_traceparent().expect("a traced request")
    };
    let writer_trace_id = writer_trace.split('-').nth(1).unwrap().to_owned();
    let expected = {
        use tracing::Instrument;
        crash::crashed_large_puts(&stores, test_writer_config(protocol()), n)
            .instrument(request)
            .await
    };

    let mut env = env_for(&config);
    env.extend(Collector::env(otlp));
    // No export on a schedule within the test: every span reaches the collector through
    // the flush of a clean exit, so a process whose exit loses its spans fails here.
    env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "3600000".into()));
    let health = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let spawn = |cmd: &str, args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tiersweep"))
            .arg(cmd)
            .args(args)
            .envs(env.clone())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut scanner, mut cleaner) = (
        spawn("scan", &["--set", "worker.member_name=scanner"]),
        spawn("clean", &["--health-listen", &health.to_string()]),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while tiersweep::recovery::inspect::backlog(
        stores.changelog().as_ref(),
        stores.clock(),
        Duration::ZERO,
        100,
    )
    .await
    .unwrap()
    .rows
        > 0
    {
        assert!(Instant::now() < deadline, "not converged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The cleaner's Prometheus endpoint counts what it did (the row is removed before the
    // counter moves, so give it a moment).
    let scrape = format!("http://{health}/metrics");
    let converged_line = format!("tiersweep_jobs_processed_total{{outcome=\"converged\"}} {n}\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = match reqwest::get(&scrape).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(&converged_line) {
            assert!(text.contains("# TYPE tiersweep_recovery_lag_seconds histogram"));
            assert!(text.contains(&format!("tiersweep_recovery_lag_seconds_count {n}\n")));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{scrape} never showed {converged_line}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for child in [&mut scanner, &mut cleaner] {
        let pid = child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(
            child.wait().unwrap().success(),
            "clean exit flushes the spans"
        );
    }
    tiersweep::testing::invariants::check(&stores, &expected)
        .await
        .unwrap()
        .assert_converged();

    let spans = collector.spans();
    let by_change = |name: &str| -> BTreeMap<String, (String, Span)> {
        spans
            .iter()
            .filter(|(_, s)| s.name == name)
            .filter_map(|(svc, s)| {
                string(&s.attributes, "tiersweep.change_id").map(|c| (c, (svc.clone(), s.clone())))
            })
            .collect()
    };
    // The messaging spans carry the conventions' names: `{operation} {destination}`.
    let (topic, subscription) = (&config.pubsub.topic, &config.pubsub.subscription);
    let by_parent = |name: &str| -> BTreeMap<Vec<u8>, Span> {
        spans
            .iter()
            .filter(|(_, s)| s.name == name)
            .map(|(_, s)| (s.parent_span_id.clone(), s.clone()))
            .collect()
    };
    let acks = by_parent(&format!("ack {subscription}"));
    let (claims, publishes, processes, converges) = (
        by_change("claim"),
        by_change(&format!("create {topic}")),
        by_change(&format!("process {subscription}")),
        by_change("converge"),
    );
    let converged: BTreeSet<&String> = converges.keys().collect();
    assert_eq!(
        converged.len(),
        n,
        "a converge span per change: {:?}",
        spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
    );
    let traces: BTreeSet<&Vec<u8>> = converged.iter().map(|c| &claims[*c].1.trace_id).collect();
    assert_eq!(traces.len(), n, "each change is a trace of its own");
    for change in converged {
        let (scan_svc, claim) = &claims[change];
        let (_, publish) = &publishes[change];
        let (clean_svc, process) = &processes[change];
        let (_, converge) = &converges[change];
        assert_eq!(scan_svc, "tiersweep-scanner");
        assert_eq!(clean_svc, "tiersweep-cleaner");
        // One trace from the claim to the converge, across the two processes, rooted at
        // the claim and linked to the scan page that found the change.
        let trace = &claim.trace_id;
        for s in [publish, process, converge] {
            assert_eq!(&s.trace_id, trace, "{} is in the change's trace", s.name);
        }
        assert!(
            claim.parent_span_id.is_empty(),
            "the claim is the trace's root"
        );
        let scan = claim
            .links
            .iter()
            .find_map(|l| spans.iter().find(|(_, s)| s.span_id == l.span_id))
            .map(|(_, s)| s)
            .expect("the claim links to an exported span");
        assert_eq!(scan.name, "scan");
        assert_ne!(&scan.trace_id, trace, "the scan page is a trace of its own");
        // Kinds and the producer link.
        assert_eq!(publish.kind, SpanKind::Producer as i32);
        assert_eq!(process.kind, SpanKind::Consumer as i32);
        assert!(
            process.links.iter().any(|l| l.span_id == publish.span_id),
            "process links to its producer"
        );
        assert_eq!(process.parent_span_id, publish.span_id);
        assert_eq!(converge.parent_span_id, process.span_id);
        // Messaging conventions.
        for s in [publish, process] {
            assert_eq!(
                string(&s.attributes, "messaging.system").as_deref(),
                Some("gcp_pubsub")
            );
            assert!(
                string(&s.attributes, "messaging.destination.name")
                    .is_some_and(|d| d.contains(&config.pubsub.topic))
            );
        }
        assert!(string(&process.attributes, "messaging.message.id").is_some());
        let op_type = |s: &Span| string(&s.attributes, "messaging.operation.type");
        assert_eq!(op_type(publish).as_deref(), Some("create"));
        assert_eq!(op_type(process).as_deref(), Some("process"));
        assert_eq!(
            string(
                &process.attributes,
                "messaging.destination.subscription.name"
            )
            .as_deref()
            .map(|s| s.rsplit('/').next().unwrap_or(s)),
            Some(subscription.as_str())
        );
        // The delivery is settled inside its process span, by an ack span of its own.
        let ack = acks
            .get(&process.span_id)
            .expect("an ack span under process");
        assert_eq!(op_type(ack).as_deref(), Some("settle"));
        assert_eq!(ack.kind, SpanKind::Client as i32);
        assert_eq!(
            string(
                &process.attributes,
                "messaging.gcp_pubsub.message.delivery_attempt"
            )
            .as_deref(),
            Some("1")
        );
        // The link back to the crashed writer's request.
        assert!(
            claim
                .links
                .iter()
                .any(|l| hex(&l.trace_id) == writer_trace_id),
            "claim links to the writer's trace {writer_trace_id}"
        );
        // Database client spans under the change's trace.
        let db: Vec<&Span> = spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| &s.trace_id == trace && s.kind == SpanKind::Client as i32)
            .filter(|s| string(&s.attributes, "db.system.name").as_deref() == Some("gcp.bigtable"))
            .collect();
        assert!(
            db.iter()
                .any(|s| string(&s.attributes, "db.operation.name").as_deref()
                    == Some("CheckAndMutateRow")
                    && string(&s.attributes, "db.collection.name").as_deref()
                        == Some(config.bigtable.changelog_table.as_str())),
            "a CheckAndMutateRow client span on the changelog table"
        );
    }

    // Keep one change's whole trace for docs/observability.md's waterfall
    // (`docs/tools/waterfall.py` renders it).
    let first = &claims[converges.keys().next().unwrap()].1;
    let capture: Vec<serde_json::Value> = spans
        .iter()
        .filter(|(_, s)| s.trace_id == first.trace_id)
        .map(|(svc, s)| to_json(svc, s))
        .collect();
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("recovered-change-trace.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&capture).unwrap()).unwrap();
    eprintln!("captured trace: {}", out.display());

    // Both processes flushed their metrics at exit.
    let metrics = collector.series();
    let get = |svc: &str, name: &str, labels: &str| {
        metrics
            .get(&(svc.to_owned(), name.to_owned(), labels.to_owned()))
            .copied()
    };
    let n = n as f64;
    assert_eq!(
        get("tiersweep-scanner", "tiersweep.claims", "outcome=won"),
        Some(n),
        "{metrics:?}"
    );
    assert_eq!(
        get("tiersweep-scanner", "tiersweep.jobs.published", ""),
        Some(n)
    );
    assert!(
        get("tiersweep-scanner", "tiersweep.changelog.rows_scanned", "").is_some_and(|v| v >= n)
    );
    assert_eq!(
        get(
            "tiersweep-cleaner",
            "tiersweep.jobs.processed",
            "outcome=converged"
        ),
        Some(n)
    );
    assert_eq!(
        get("tiersweep-cleaner", "tiersweep.blobs.deleted", ""),
        Some(n)
    );
    // Labelled by the scanner (its member id under leases, which is fresh per start).
    let backlog = metrics.iter().find(|((svc, name, labels), _)| {
        svc == "tiersweep-scanner"
            && name == "tiersweep.backlog.stale_rows"
            && labels.starts_with("shards=scanner")
    });
    assert!(
        backlog.is_some_and(|(_, v)| *v >= 0.0),
        "the backlog gauge is exported: {metrics:?}"
    );
}

fn to_json(service: &str, s: &Span) -> serde_json::Value {
    let attributes: serde_json::Map<String, serde_json::Value> = s
        .attributes
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), string(&s.attributes, &kv.key)?.into())))
        .collect();
    serde_json::json!({
        "service": service,
        "name": s.name,
        "kind": SpanKind::try_from(s.kind).map(|k| k.as_str_name()).unwrap_or("?"),
        "trace_id": hex(&s.trace_id),
        "span_id": hex(&s.span_id),
        "parent_span_id": hex(&s.parent_span_id),
        "start_unix_nano": s.start_time_unix_nano,
        "end_unix_nano": s.end_time_unix_nano,
        "status": s.status.as_ref().map(|st| st.code).unwrap_or(0),
        "attributes": attributes,
        "links": s.links.iter().map(|l| format!("{}/{}", hex(&l.trace_id), hex(&l.span_id))).collect::<Vec<_>>(),
    })
}

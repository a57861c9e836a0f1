//! The deployment files agree with the code: every configuration file under `infra/` loads
//! and validates, docker-compose only sets settings that exist, and Terraform creates the
//! tables, column families, topics and subscription the workers expect by default.
//! (`infra/validate.sh` checks the same files against their schemas.)

use std::path::{Path, PathBuf};

use tiersweep::bigtable::layout;
use tiersweep::config::Config;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_kubernetes_configuration_loads_and_validates() {
    for file in [
        "infra/k8s/base/tiersweep.toml",
        "infra/k8s/overlays/local/tiersweep.toml",
        "infra/k8s/overlays/gke/tiersweep.toml",
    ] {
        // The drain's fit in the pods' grace period is checked on the rendered
        // manifests (infra/check-deploy.py).
        Config::load(Some(Path::new(&root().join(file))), [], &[])
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

/// The `TIERSWEEP_…` worker settings docker-compose.yml gives every tiersweep container.
fn compose_settings() -> Vec<(String, String)> {
    let compose = read("docker-compose.yml");
    compose
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(": ")?;
            k.starts_with("TIERSWEEP_")
                .then(|| (k.to_owned(), v.trim_matches('"').to_owned()))
        })
        // Provisioning-script variables, not worker settings.
        .filter(|(k, _)| !k.ends_with("_HOST") && k != "TIERSWEEP_LOCAL_DIR")
        .map(|(k, v)| (k, v.split(" #").next().unwrap_or(&v).trim().to_owned()))
        .collect()
}

#[test]
fn docker_compose_sets_only_settings_that_exist() {
    let env = compose_settings();
    assert!(env.len() > 5, "found the settings: {env:?}");
    Config::load(None, env.clone(), &[]).unwrap_or_else(|e| panic!("{e}: {env:?}"));
}

/// The compose `load` service waits for the pools within its `--max-wait`; the workers'
/// timings must let it converge in that time, or it refuses to start.
#[test]
fn the_compose_load_can_converge_within_its_own_deadline() {
    let settings = Config::load(None, compose_settings(), &[]).expect("compose settings load");
    let needed = tiersweep::demo::external_recovery_bound(&settings.protocol, &settings.recovery);
    let compose = read("docker-compose.yml");
    let command = compose
        .split("command: [\"demo\"")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("the load service runs the demo");
    assert!(command.contains("\"--external-recovery\""), "{command}");
    let max_wait = command
        .split("\"--max-wait\", \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(|d| tiersweep::duration::parse(d).expect("a --max-wait duration"))
        .expect("the load names its --max-wait");
    assert!(
        needed <= max_wait,
        "the workers' timings need up to {needed:?} to converge, the load waits {max_wait:?}"
    );
    // The defaults would not: the bound is what makes the load refuse, not time out.
    let defaults = Config::default();
    assert!(
        tiersweep::demo::external_recovery_bound(&defaults.protocol, &defaults.recovery) > max_wait
    );
}

#[test]
fn terraform_creates_what_the_workers_expect() {
    let tf: String = ["bigtable.tf", "pubsub.tf"]
        .iter()
        .map(|f| read(&format!("infra/terraform/{f}")))
        .collect();
    let defaults = Config::default();
    for name in [
        defaults.pubsub.topic,
        defaults.pubsub.subscription,
        defaults.pubsub.dead_letter_topic,
        defaults.pubsub.dead_letter_subscription,
        defaults.pubsub.audit_topic,
        defaults.pubsub.audit_subscription,
        defaults.pubsub.audit_dead_letter_topic,
        defaults.pubsub.audit_trail_topic,
    ] {
        assert!(
            tf.contains(&format!("\"{name}\"")),
            "terraform creates {name}"
        );
    }
    let vars = read("infra/terraform/variables.tf");
    for table in [
        defaults.bigtable.hv_table,
        defaults.bigtable.changelog_table,
    ] {
        assert!(vars.contains(&format!("\"{table}\"")), "table {table}");
    }
    for family in [layout::hv::DATA, layout::changelog::FAMILY] {
        assert!(
            tf.contains(&format!("family = \"{family}\"")),
            "column family {family}"
        );
    }
    assert!(tf.contains("allow_transactional_writes = true"));

    // Every GC policy Terraform sets is the one the code's layout declares; in particular
    // HV's versions get no age limit (the protocol's safety rests on no TTL).
    for (family, gc) in layout::hv_families()
        .into_iter()
        .chain(layout::changelog_families())
    {
        let block = tf
            .split("resource \"google_bigtable_gc_policy\"")
            .find(|b| b.contains(&format!("column_family   = \"{family}\"")))
            .unwrap_or_else(|| panic!("no GC policy for family {family}"));
        let block = block.split("\n}").next().unwrap_or(block);
        match gc {
            layout::Gc::MaxVersions(n) => {
                assert!(
                    block.contains(&format!("max_version {{ number = {n} }}")),
                    "{family}"
                );
                assert!(!block.contains("max_age"), "{family} must not expire");
            }
            layout::Gc::MaxAge(age) => assert!(
                block.contains(&format!(
                    "max_age {{ duration = \"{}h\" }}",
                    age.as_secs() / 3600
                )),
                "{family}"
            ),
        }
    }
}

#[test]
fn the_local_scripts_create_the_families_the_layout_declares() {
    let common = read("infra/local/common.sh");
    let families = |var: &str| -> Vec<String> {
        let line = common
            .lines()
            .find(|l| l.starts_with(&format!("{var}=")))
            .unwrap_or_else(|| panic!("{var} in infra/local/common.sh"));
        line.split('"')
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let declared = |fams: &[(&str, layout::Gc)]| -> Vec<String> {
        fams.iter()
            .map(|(family, gc)| match gc {
                layout::Gc::MaxVersions(n) => format!("{family}:maxversions={n}"),
                layout::Gc::MaxAge(age) => format!("{family}:maxage={}h", age.as_secs() / 3600),
            })
            .collect()
    };
    assert_eq!(families("HV_FAMILIES"), declared(&layout::hv_families()));
    assert_eq!(
        families("CHANGELOG_FAMILIES"),
        declared(&layout::changelog_families())
    );
}

/// The metric families the workers export on `/metrics`, with the series names Prometheus
/// derives from histograms.
fn exported_families() -> std::collections::BTreeSet<String> {
    let text = tiersweep::telemetry::metrics::render_prometheus(
        &tiersweep::telemetry::metrics::Metrics::new(),
    );
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            names.insert(name.to_owned());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

/// Every `tiersweep_…` or `process_…` identifier in `text` (metric names in PromQL).
fn metric_names_in(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let starts = (i == 0 || !ident(bytes[i - 1]))
            && (text[i..].starts_with("tiersweep_") || text[i..].starts_with("process_"));
        if starts {
            let end = (i..bytes.len())
                .find(|&j| !ident(bytes[j]))
                .unwrap_or(bytes.len());
            found.push(text[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    found
}

#[test]
fn alerts_and_the_dashboard_query_only_metrics_the_workers_export() {
    let exported = exported_families();
    assert!(exported.contains("tiersweep_build_info"), "{exported:?}");
    assert!(
        exported.contains("process_cpu_seconds_total"),
        "{exported:?}"
    );
    assert!(exported.contains("tiersweep_recovery_lag_seconds_bucket"));

    // Alert expressions: only the `expr:` lines (the descriptions name settings too).
    let rules = read("infra/monitoring/tiersweep.rules.yaml");
    let mut in_expr = false;
    let mut alerts = 0;
    let mut rule_metrics = Vec::new();
    for line in rules.lines() {
        let t = line.trim_start();
        if t.starts_with("- alert:") {
            alerts += 1;
        }
        if t.starts_with("expr:") {
            in_expr = true;
        } else if t.ends_with(':') || t.contains(": ") {
            in_expr = false;
        }
        if in_expr {
            rule_metrics.extend(metric_names_in(t));
        }
    }
    assert!(alerts >= 10, "{alerts} alerts");
    assert!(!rule_metrics.is_empty());
    for m in &rule_metrics {
        assert!(
            exported.contains(m),
            "an alert queries {m}, which is not exported"
        );
    }

    // KEDA's queries: the scanners scale on what they export (Pub/Sub's own metrics, which
    // the cleaners' triggers read, are not tiersweep's to check).
    let keda = read("infra/k8s/components/keda/scaledobject.yaml");
    let keda_metrics: Vec<String> = keda
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("query:"))
        .flat_map(metric_names_in)
        .collect();
    assert!(keda_metrics.len() >= 2, "{keda_metrics:?}");
    for m in &keda_metrics {
        assert!(
            exported.contains(m),
            "a KEDA trigger queries {m}, which is not exported"
        );
    }

    let dash: serde_json::Value =
        serde_json::from_str(&read("infra/monitoring/grafana-dashboard.json"))
            .expect("the dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = std::collections::BTreeSet::new();
    let mut queried = std::collections::BTreeSet::new();
    for p in panels {
        let id = p["id"].as_u64().expect("a panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} queries nothing", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("an expr");
            let names = metric_names_in(expr);
            assert!(!names.is_empty(), "{expr} queries no tiersweep metric");
            for m in names {
                assert!(
                    exported.contains(&m),
                    "panel {} queries {m}, which is not exported",
                    p["title"]
                );
                queried.insert(m);
            }
        }
    }
    // The dashboard shows every family: a histogram through its buckets; the process
    // start time and open files are for ad-hoc queries.
    let not_charted = ["process_open_fds", "process_start_time_seconds"];
    for family in &exported {
        let part_of_histogram = ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| family.ends_with(s));
        if part_of_histogram || not_charted.contains(&family.as_str()) {
            continue;
        }
        let shown = queried.contains(family) || queried.contains(&format!("{family}_bucket"));
        assert!(shown, "the dashboard does not show {family}");
    }
}

#[test]
fn both_pools_are_scraped_and_log_json_in_the_base_manifests() {
    for file in ["infra/k8s/base/scanner.yaml", "infra/k8s/base/cleaner.yaml"] {
        let text = read(file);
        assert!(
            text.contains("kind: Service") && text.contains("clusterIP: None"),
            "{file}: a headless Service for the ServiceMonitor"
        );
        assert!(text.contains("{name: http, containerPort: 8080}"), "{file}");
        assert!(
            text.contains("name: TIERSWEEP_LOG_FORMAT\n              value: json"),
            "{file}: JSON logs for Cloud Logging"
        );
    }
    for monitor in [
        "infra/k8s/components/prometheus-operator/servicemonitor.yaml",
        "infra/k8s/components/gke-managed-prometheus/podmonitoring.yaml",
    ] {
        let text = read(monitor);
        assert!(
            text.contains("values: [tiersweep-scanner, tiersweep-cleaner]"),
            "{monitor}"
        );
        assert!(text.contains("- port: http"), "{monitor}");
    }
}

#!/usr/bin/env python3
"""Writes grafana-dashboard.json, tiersweep's Grafana dashboard, from the panel list below.

The panels are code so that they stay uniform (one datasource variable, one layout rule)
and so that tests/deploy_config.rs can check that every metric a panel queries is one the
workers export. Run it after editing; `dashboard.py --check` (infra/validate.sh) fails when
the committed JSON differs from what this script writes.
"""
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "grafana-dashboard.json"

# (row title, [(panel title, unit, [(legend, PromQL)], description)])
ROWS = [
    ("Recovery", [
        ("Stale changelog rows (last pass)", "short",
         [("stale rows", "sum(tiersweep_backlog_stale_rows)")],
         "Changes whose writer stopped heartbeating, as the last complete scan pass saw them."),
        ("Oldest stale change", "s",
         [("oldest", "max(tiersweep_backlog_oldest_stale_age_seconds)")],
         "Age of the oldest stale row; alert TiersweepRecoveryBehind fires above 30 minutes."),
        ("Recovery lag (writer record to converged)", "s",
         [(f"p{q}", f"histogram_quantile(0.{q}, sum by (le) (rate(tiersweep_recovery_lag_seconds_bucket[5m])))")
          for q in ("50", "90", "99")],
         "How long a crashed change waited, from its writer's record to the cleaner's convergence."),
        ("Jobs processed by outcome", "ops",
         [("{{outcome}}", "sum by (outcome) (rate(tiersweep_jobs_processed_total[5m]))")],
         "failed and dead_lettered need a look; not_our_claim and not_due are duplicates and early deliveries, settled safely."),
    ]),
    ("Scanners", [
        ("Claims by outcome", "ops",
         [("{{outcome}}", "sum by (outcome) (rate(tiersweep_claims_total[5m]))")],
         "won = this scanner claimed the row; lost = another scanner's compare-and-set won (overlap)."),
        ("Jobs published, republished; claims held back, extended", "ops",
         [("published", "sum(rate(tiersweep_jobs_published_total[5m]))"),
          ("republished", "sum(rate(tiersweep_jobs_republished_total[5m]))"),
          ("held back", "sum(rate(tiersweep_claims_held_back_total[5m]))"),
          ("extended", "sum(rate(tiersweep_claims_extended_total[5m]))"),
          ("repeated (failing changes)", "sum(rate(tiersweep_claims_repeated_total[5m]))")],
         "Held back = left for later by recovery.max_queued_claims (the queue is full enough)."),
        ("Shard leases", "ops",
         [("{{outcome}}", "sum by (outcome) (rate(tiersweep_shard_leases_total[5m]))")],
         "lost = a member's shards were taken while it stalled past its lease."),
        ("Changelog rows scanned and malformed", "ops",
         [("scanned", "sum(rate(tiersweep_changelog_rows_scanned_total[5m]))"),
          ("malformed", "sum(rate(tiersweep_changelog_rows_malformed_total[5m]))")],
         "Malformed rows are left in place and counted; tiersweep inspect shows them."),
    ]),
    ("Cleaners and writers", [
        ("Large-tier blobs deleted; dangling tombstones", "ops",
         [("blobs deleted", "sum(rate(tiersweep_blobs_deleted_total[5m]))"),
          ("dangling tombstones", "sum(rate(tiersweep_tombstones_dangling_total[5m]))")],
         "A dangling tombstone is an object whose blob was lost before recovery saw it."),
        ("Writer heartbeat failures and fenced writes", "ops",
         [("heartbeat failures", "sum(rate(tiersweep_writer_heartbeat_failures_total[5m]))"),
          ("fenced", "sum(rate(tiersweep_writer_fenced_total[5m]))")],
         "Counted in the service embedding the writer, when it exports tiersweep's metrics."),
        ("Pull streams reopened", "ops",
         [("reopened", "sum(rate(tiersweep_queue_pull_streams_reopened_total[5m]))")],
         "Streaming pulls the server ended without an error (normal every few minutes)."),
    ]),
    ("Audit (tiersweep audit)", [
        ("Blobs listed", "short",
         [("listed", "sum(increase(tiersweep_audit_blobs_listed_total[1h]))")],
         "Blobs the audit listed and joined with HV and the changelog (exported over OTLP: the audit is a CronJob)."),
        ("Orphans found by age; deletions requested", "short",
         [("orphans {{age}}", "sum by (age) (increase(tiersweep_audit_orphans_total[1h]))"),
          ("deletions requested", "sum(increase(tiersweep_audit_deletes_requested_total[1h]))"),
          ("dangling tombstones", "sum(increase(tiersweep_audit_dangling_total[1h]))")],
         "Orphans are blobs neither HV nor the changelog names. After recovery there should be none younger than the changelog's deployment."),
        ("Audit jobs refused", "short",
         [("refused", "sum(increase(tiersweep_audit_jobs_refused_total[1h]))")],
         "Range jobs an audit worker refused unjudged (malformed, no recorded run or range, an expired run): forged or stale. Any is worth a look; they are in the audit dead-letter topic."),
    ]),
    ("Google Cloud calls and processes", [
        ("Calls by method", "ops",
         [("{{method}}", "sum by (method) (rate(tiersweep_gcp_calls_total[5m]))")],
         "Every Bigtable, Cloud Storage and Pub/Sub call the workers make; the bill follows this."),
        ("CPU per pod", "percentunit",
         [("{{pod}}", "sum by (pod) (rate(process_cpu_seconds_total{job=~\".*tiersweep.*\"}[5m]))")],
         "Cores busy per pod."),
        ("Resident memory per pod", "bytes",
         [("{{pod}}", "max by (pod) (process_resident_memory_bytes{job=~\".*tiersweep.*\"})")],
         "Bounded by design: nothing grows with the backlog."),
        ("Running versions", "short",
         [("{{role}} {{version}}", "count by (role, version) (tiersweep_build_info)")],
         "Pods by role and version: a rollout shows as two versions side by side."),
    ]),
]


def dashboard():
    panels = []
    pid = 1
    y = 0
    for title, row in ROWS:
        panels.append({"id": pid, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid += 1
        y += 1
        for i, (ptitle, unit, queries, desc) in enumerate(row):
            panels.append({
                "id": pid,
                "type": "timeseries",
                "title": ptitle,
                "description": desc,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                            "tooltip": {"mode": "multi"}},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": y + 8 * (i // 2)},
                "targets": [{"refId": chr(ord("A") + j), "expr": expr, "legendFormat": legend,
                             "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                            for j, (legend, expr) in enumerate(queries)],
            })
            pid += 1
        y += 8 * ((len(row) + 1) // 2)
    return {
        "title": "tiersweep",
        "uid": "tiersweep",
        "description": "Crash recovery of tiered object storage: backlog, lag, scanners, cleaners, Google Cloud calls. Generated by infra/monitoring/dashboard.py.",
        "tags": ["tiersweep"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{
            "name": "datasource", "label": "Prometheus", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0,
        }]},
        "panels": panels,
    }


def main():
    text = json.dumps(dashboard(), indent=2) + "\n"
    if sys.argv[1:] == ["--check"]:
        if not OUT.exists() or OUT.read_text() != text:
            sys.exit(f"infra/monitoring: {OUT.name} is out of date: run infra/monitoring/dashboard.py")
        return
    OUT.write_text(text)


if __name__ == "__main__":
    main()

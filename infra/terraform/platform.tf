# What the deployment needs around tiersweep's own resources: the APIs, enabled before
# anything is created in a fresh project; the identities of the telemetry collector and of
# KEDA (infra/k8s/components); and who may act as the operator account.

# Every API a resource of this module or a pod of the deployment calls. Left enabled when
# the module is destroyed: other workloads in the project may use them.
locals {
  apis = [
    "bigtable.googleapis.com",             # data: reads, CheckAndMutateRow, MutateRows
    "bigtableadmin.googleapis.com",        # the instance, tables, app profile, backups
    "pubsub.googleapis.com",               # topics, subscriptions
    "storage.googleapis.com",              # the LT bucket
    "iam.googleapis.com",                  # service accounts, custom roles
    "iamcredentials.googleapis.com",       # Workload Identity tokens, impersonation
    "cloudresourcemanager.googleapis.com", # project-level IAM
    "monitoring.googleapis.com",           # Managed Prometheus, KEDA's queries, alerting
    "cloudtrace.googleapis.com",           # the collector's trace export
    "logging.googleapis.com",              # JSON logs linked to traces
  ]
}

resource "google_project_service" "apis" {
  for_each           = toset(local.apis)
  service            = each.value
  disable_on_destroy = false
}

# The OpenTelemetry collector (infra/k8s/components/gke-otel-collector): writes traces and
# the metrics that arrive over OTLP, nothing else.
resource "google_service_account" "otel_collector" {
  account_id   = "tiersweep-otel-collector"
  display_name = "tiersweep OpenTelemetry collector (traces, OTLP metrics)"
  depends_on   = [google_project_service.apis]
}

resource "google_project_iam_member" "otel_collector" {
  for_each = toset(["roles/cloudtrace.agent", "roles/monitoring.metricWriter"])
  project  = var.project
  role     = each.value
  member   = google_service_account.otel_collector.member
}

resource "google_service_account_iam_member" "otel_collector_workload_identity" {
  service_account_id = google_service_account.otel_collector.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project}.svc.id.goog[${var.namespace}/otel-collector]"
}

# KEDA's operator reads the backlog (Pub/Sub's and tiersweep's metrics) from Cloud
# Monitoring's Prometheus API (infra/k8s/components/keda): read only.
resource "google_service_account" "keda_operator" {
  account_id   = "tiersweep-keda-operator"
  display_name = "KEDA operator (reads backlog metrics for tiersweep's autoscaling)"
  depends_on   = [google_project_service.apis]
}

resource "google_project_iam_member" "keda_operator_reads_metrics" {
  project = var.project
  role    = "roles/monitoring.viewer"
  member  = google_service_account.keda_operator.member
}

resource "google_service_account_iam_member" "keda_operator_workload_identity" {
  service_account_id = google_service_account.keda_operator.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project}.svc.id.goog[${var.keda_namespace}/keda-operator]"
}

# The operator account (iam.tf says what it may read): people act as it by impersonation,
# and a debugging pod as the Kubernetes service account tiersweep-operator
# (infra/k8s/base/serviceaccounts.yaml) through Workload Identity.
resource "google_service_account_iam_member" "operator_impersonation" {
  for_each           = toset(var.operator_members)
  service_account_id = google_service_account.operator.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = each.value
}

resource "google_service_account_iam_member" "operator_workload_identity" {
  service_account_id = google_service_account.operator.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project}.svc.id.goog[${var.namespace}/tiersweep-operator]"
}

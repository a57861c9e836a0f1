output "scanner_service_account" {
  value = google_service_account.scanner.email
}

output "cleaner_service_account" {
  value = google_service_account.cleaner.email
}

output "operator_service_account" {
  value = google_service_account.operator.email
}

output "bucket" {
  value = google_storage_bucket.lt.name
}

output "app_profile" {
  value = google_bigtable_app_profile.tiersweep.app_profile_id
}

output "otel_collector_service_account" {
  value = google_service_account.otel_collector.email
}

output "keda_operator_service_account" {
  description = "Annotate KEDA's keda-operator Kubernetes service account with it (iam.gke.io/gcp-service-account)."
  value       = google_service_account.keda_operator.email
}

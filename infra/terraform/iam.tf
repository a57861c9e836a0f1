# One Google service account per pool, least privilege, bound to the pool's Kubernetes
# service account through Workload Identity (infra/k8s/base/serviceaccounts.yaml).

resource "google_service_account" "scanner" {
  account_id   = "tiersweep-scanner"
  display_name = "tiersweep stale-scan workers"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "cleaner" {
  account_id   = "tiersweep-cleaner"
  display_name = "tiersweep cleanup workers"
  depends_on   = [google_project_service.apis]
}

# Operators run `tiersweep status`, `inspect`, `recover --dry-run` and `dlq` as this
# account (gcloud --impersonate-service-account, or a Job with its Kubernetes service
# account): the stores read only, nothing deleted, nothing claimed; dead letters listed,
# replayed to the jobs topic (a cleaner verifies every job against the changelog) or purged.
resource "google_service_account" "operator" {
  account_id   = "tiersweep-operator"
  display_name = "tiersweep operator views (read only)"
  depends_on   = [google_project_service.apis]
}

# `tiersweep audit` (the CronJob in infra/k8s/base/audit.yaml): the only account that lists
# the bucket. It deletes nothing itself: each orphan becomes a changelog row that the
# cleaners converge under the usual fence.
resource "google_service_account" "auditor" {
  account_id   = "tiersweep-auditor"
  display_name = "tiersweep audit (lists LT, records orphans for recovery)"
  depends_on   = [google_project_service.apis]
}

locals {
  workload_identity = {
    scanner = google_service_account.scanner.name
    cleaner = google_service_account.cleaner.name
    auditor = google_service_account.auditor.name
  }
}

resource "google_service_account_iam_member" "workload_identity" {
  for_each           = local.workload_identity
  service_account_id = each.value
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project}.svc.id.goog[${var.namespace}/tiersweep-${each.key}]"
}

# Scanner: read and CheckAndMutateRow on the changelog only; publish jobs.
resource "google_bigtable_table_iam_member" "scanner_changelog" {
  instance = google_bigtable_instance.tiersweep.name
  table    = google_bigtable_table.changelog.name
  role     = "roles/bigtable.user"
  member   = google_service_account.scanner.member
}

# Scanner: publish jobs, and read the topic's metadata so that a missing topic stops it at
# start instead of failing every publish.
resource "google_pubsub_topic_iam_member" "scanner_publishes" {
  for_each = toset(["roles/pubsub.publisher", "roles/pubsub.viewer"])
  topic    = google_pubsub_topic.jobs.id
  role     = each.value
  member   = google_service_account.scanner.member
}

# Cleaner: HV read/fence/CAS and the changelog (re-read, remove).
resource "google_bigtable_table_iam_member" "cleaner_tables" {
  for_each = toset([google_bigtable_table.hv.name, google_bigtable_table.changelog.name])
  instance = google_bigtable_instance.tiersweep.name
  table    = each.value
  role     = "roles/bigtable.user"
  member   = google_service_account.cleaner.member
}

# Cleaner: look at and delete blobs, nothing else (no create, no overwrite, no listing, no
# bucket metadata: the readiness check uses testIamPermissions, which needs no permission).
resource "google_project_iam_custom_role" "blob_cleaner" {
  role_id     = "tiersweepBlobCleaner"
  title       = "tiersweep blob cleaner"
  description = "Check that an LT blob exists and delete orphaned ones."
  permissions = ["storage.objects.get", "storage.objects.delete"]
  depends_on  = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "cleaner_blobs" {
  bucket = google_storage_bucket.lt.name
  role   = google_project_iam_custom_role.blob_cleaner.id
  member = google_service_account.cleaner.member
}

# Cleaner: consume jobs; read the subscription's settings (it refuses one without a
# dead-letter policy); dead-letter poison jobs itself, with a reason.
resource "google_pubsub_subscription_iam_member" "cleaner_subscribes" {
  for_each     = toset(["roles/pubsub.subscriber", "roles/pubsub.viewer"])
  subscription = google_pubsub_subscription.cleaners.id
  role         = each.value
  member       = google_service_account.cleaner.member
}

resource "google_pubsub_topic_iam_member" "cleaner_dead_letters" {
  topic  = google_pubsub_topic.dead_letter.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.cleaner.member
}

# Operator: read both tables and check which blobs exist.
resource "google_bigtable_table_iam_member" "operator_tables" {
  for_each = toset([google_bigtable_table.hv.name, google_bigtable_table.changelog.name])
  instance = google_bigtable_instance.tiersweep.name
  table    = each.value
  role     = "roles/bigtable.reader"
  member   = google_service_account.operator.member
}

resource "google_project_iam_custom_role" "blob_reader" {
  role_id     = "tiersweepBlobReader"
  title       = "tiersweep blob reader"
  description = "Check that an LT blob exists, without listing the bucket."
  permissions = ["storage.objects.get"]
  depends_on  = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "operator_blobs" {
  bucket = google_storage_bucket.lt.name
  role   = google_project_iam_custom_role.blob_reader.id
  member = google_service_account.operator.member
}

# Operator: `tiersweep dlq` reads the dead letters kept for it (and acks the ones it
# replays or purges), and replays to the jobs topic.
resource "google_pubsub_subscription_iam_member" "operator_dead_letters" {
  for_each     = toset(["roles/pubsub.subscriber", "roles/pubsub.viewer"])
  subscription = google_pubsub_subscription.dead_letter_audit.id
  role         = each.value
  member       = google_service_account.operator.member
}

resource "google_pubsub_topic_iam_member" "operator_replays" {
  topic  = google_pubsub_topic.jobs.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.operator.member
}

# Auditor: read HV's tombstones; read the changelog, take its time and record orphans in it.
resource "google_bigtable_table_iam_member" "auditor_hv" {
  instance = google_bigtable_instance.tiersweep.name
  table    = google_bigtable_table.hv.name
  role     = "roles/bigtable.reader"
  member   = google_service_account.auditor.member
}

resource "google_bigtable_table_iam_member" "auditor_changelog" {
  instance = google_bigtable_instance.tiersweep.name
  table    = google_bigtable_table.changelog.name
  role     = "roles/bigtable.user"
  member   = google_service_account.auditor.member
}

resource "google_project_iam_custom_role" "blob_lister" {
  role_id     = "tiersweepBlobLister"
  title       = "tiersweep blob lister"
  description = "List the LT bucket's blobs with their creation times, nothing else."
  permissions = ["storage.objects.list"]
  depends_on  = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "auditor_lists" {
  bucket = google_storage_bucket.lt.name
  role   = google_project_iam_custom_role.blob_lister.id
  member = google_service_account.auditor.member
}

# Auditor, fanned out: the coordinator checks the audit topic and publishes range jobs;
# workers check their subscription, pull and ack, and dead-letter the jobs they refuse.
resource "google_pubsub_topic_iam_member" "auditor_audit_jobs" {
  for_each = toset(["roles/pubsub.publisher", "roles/pubsub.viewer"])
  topic    = google_pubsub_topic.audit_jobs.id
  role     = each.value
  member   = google_service_account.auditor.member
}

resource "google_pubsub_subscription_iam_member" "auditor_audit_workers" {
  for_each     = toset(["roles/pubsub.subscriber", "roles/pubsub.viewer"])
  subscription = google_pubsub_subscription.audit_workers.id
  role         = each.value
  member       = google_service_account.auditor.member
}

resource "google_pubsub_topic_iam_member" "auditor_audit_dead_letters" {
  topic  = google_pubsub_topic.audit_dead_letter.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.auditor.member
}

# Auditor: record each requested deletion in the trail topic (--trail-topic).
resource "google_pubsub_topic_iam_member" "auditor_trail" {
  for_each = toset(["roles/pubsub.publisher", "roles/pubsub.viewer"])
  topic    = google_pubsub_topic.audit_trail.id
  role     = each.value
  member   = google_service_account.auditor.member
}

resource "google_pubsub_topic" "jobs" {
  name       = "cleanup-jobs"
  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "dead_letter" {
  name       = "cleanup-jobs-dead-letter"
  depends_on = [google_project_service.apis]
}

resource "google_pubsub_subscription" "cleaners" {
  name  = "cleanup-workers"
  topic = google_pubsub_topic.jobs.id

  # Cleaners extend leases while they work; the deadline is how long a dead cleaner's
  # jobs wait before redelivery.
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  expiration_policy { ttl = "" }

  retry_policy {
    minimum_backoff = "1s"
    maximum_backoff = "60s"
  }

  # Cleaners refuse a subscription without this policy.
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }
}

# Dead letters are kept for an operator to read (each carries a `reason` attribute).
resource "google_pubsub_subscription" "dead_letter_audit" {
  name                       = "cleanup-jobs-dead-letter-audit"
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  expiration_policy { ttl = "" }
}

# Dead-lettering is done by the Pub/Sub service agent: it must publish to the
# dead-letter topic and acknowledge on the source subscription.
locals {
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic_iam_member" "agent_publishes_dead_letters" {
  topic  = google_pubsub_topic.dead_letter.id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "agent_acks_dead_letters" {
  subscription = google_pubsub_subscription.cleaners.id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# The fanned-out audit (`tiersweep audit --fan-out` publishes one job per name range,
# `tiersweep audit --worker` pods take them). A job names only a run recorded in the
# changelog table and a range index; workers refuse (and dead-letter) the rest.
resource "google_pubsub_topic" "audit_jobs" {
  name       = "audit-jobs"
  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "audit_dead_letter" {
  name       = "audit-jobs-dead-letter"
  depends_on = [google_project_service.apis]
}

resource "google_pubsub_subscription" "audit_workers" {
  name  = "audit-workers"
  topic = google_pubsub_topic.audit_jobs.id

  # A range can take hours; workers extend their lease while they list it.
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  expiration_policy { ttl = "" }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.audit_dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }
}

# Refused and repeatedly failing range jobs, kept a week for the operator.
resource "google_pubsub_subscription" "audit_dead_letter_kept" {
  name                       = "audit-jobs-dead-letter-kept"
  topic                      = google_pubsub_topic.audit_dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  expiration_policy { ttl = "" }
}

resource "google_pubsub_topic_iam_member" "agent_publishes_audit_dead_letters" {
  topic  = google_pubsub_topic.audit_dead_letter.id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "agent_acks_audit_dead_letters" {
  subscription = google_pubsub_subscription.audit_workers.id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# The audit trail (`tiersweep audit --trail-topic`): one JSON message per deletion an audit
# requested, published before the request. Kept a week here; route it to BigQuery or
# Cloud Storage with a subscription of that kind for longer.
resource "google_pubsub_topic" "audit_trail" {
  name       = "audit-trail"
  depends_on = [google_project_service.apis]
}

resource "google_pubsub_subscription" "audit_trail_kept" {
  name                       = "audit-trail-kept"
  topic                      = google_pubsub_topic.audit_trail.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  expiration_policy { ttl = "" }
}

resource "google_pubsub_topic" "jobs" {
  name = "cleanup-jobs"
}

resource "google_pubsub_topic" "dead_letter" {
  name = "cleanup-jobs-dead-letter"
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

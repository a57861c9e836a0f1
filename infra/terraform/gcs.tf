resource "google_storage_bucket" "lt" {
  name                        = var.bucket != "" ? var.bucket : "${var.project}-tiersweep-lt"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # Soft delete keeps every deleted blob, billed, for its retention: recovery's deletes
  # would cost a week each at the default. See var.soft_delete_retention_seconds.
  soft_delete_policy {
    retention_duration_seconds = var.soft_delete_retention_seconds
  }

  # Blobs are live data until the object store drops them; never expire them by age.
  # Only abandoned multipart uploads (crashed writers' partial uploads) are cleaned here.
  lifecycle_rule {
    condition { age = 1 }
    action { type = "AbortIncompleteMultipartUpload" }
  }
}

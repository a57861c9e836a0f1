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

  # No lifecycle rule. Blobs are live data until the object store drops them: never expire
  # them by age. Writers upload through the JSON API (one request, or a resumable
  # session): an upload that never completes creates no object and bills no storage, and
  # its session expires on its own after a week. GCS's AbortIncompleteMultipartUpload
  # applies only to the XML API's multipart uploads, which tiersweep does not make.

  depends_on = [google_project_service.apis]
}

variable "project" {
  description = "Google Cloud project id."
  type        = string
}

variable "region" {
  description = "Region of the bucket and default for regional resources."
  type        = string
  default     = "europe-west1"
}

variable "bigtable_zone" {
  description = "Zone of the Bigtable cluster (single-cluster routing: CheckAndMutateRow needs it)."
  type        = string
  default     = "europe-west1-b"
}

variable "bigtable_instance" {
  type    = string
  default = "tiersweep"
}

variable "bigtable_min_nodes" {
  type    = number
  default = 1
}

variable "bigtable_max_nodes" {
  type    = number
  default = 3
}

variable "hv_table" {
  description = "The object store's HV table (small objects and LT tombstones)."
  type        = string
  default     = "objects"
}

variable "changelog_table" {
  type    = string
  default = "changelog"
}

variable "bucket" {
  description = "LT bucket name; defaults to <project>-tiersweep-lt."
  type        = string
  default     = ""
}

variable "soft_delete_retention_seconds" {
  description = <<-EOT
    GCS soft delete keeps deleted objects, billed, for this long. Recovery deletes orphaned
    blobs; with the 7-day default they keep costing a week. 0 turns soft delete off;
    raise it if you want a window to undo deletes.
  EOT
  type        = number
  default     = 0
}

variable "max_delivery_attempts" {
  description = "Deliveries before Pub/Sub dead-letters a job (5..100); = recovery.max_delivery_attempts."
  type        = number
  default     = 5
}

variable "namespace" {
  description = "Kubernetes namespace of the worker pools (Workload Identity binding)."
  type        = string
  default     = "tiersweep"
}

variable "deletion_protection" {
  description = "Refuse to destroy the Bigtable instance and tables (the object store's data)."
  type        = bool
  default     = true
}

variable "backup_retention_days" {
  description = "Days each daily automated backup of the HV and changelog tables is kept (3..90)."
  type        = number
  default     = 7
  validation {
    condition     = var.backup_retention_days >= 3 && var.backup_retention_days <= 90
    error_message = "Bigtable keeps automated backups for 3 to 90 days."
  }
}

variable "operator_members" {
  description = <<-EOT
    Who may act as the operator account (tiersweep status, inspect, dlq): IAM members such as
    "group:storage-oncall@example.com", granted roles/iam.serviceAccountTokenCreator on it
    (gcloud --impersonate-service-account).
  EOT
  type        = list(string)
  default     = []
}

variable "keda_namespace" {
  description = "Namespace of KEDA's operator, whose Kubernetes service account reads the backlog from Cloud Monitoring."
  type        = string
  default     = "keda"
}

resource "google_bigtable_instance" "tiersweep" {
  name                = var.bigtable_instance
  deletion_protection = var.deletion_protection
  depends_on          = [google_project_service.apis]

  cluster {
    cluster_id   = "${var.bigtable_instance}-c1"
    zone         = var.bigtable_zone
    storage_type = "SSD"
    autoscaling_config {
      min_nodes  = var.bigtable_min_nodes
      max_nodes  = var.bigtable_max_nodes
      cpu_target = 60
    }
  }
}

# HV: family v holds the object's value or tombstone and the row's version (one version
# each). Writes are compare-and-writes on the version; recovery's fences are version bumps,
# so a row stays data plus one small cell however many changes it has seen.
#
# The object store's data: a plan that would delete it (a renamed hv_table, a removed
# module) fails at apply instead, and a daily backup is kept for var.backup_retention_days
# (restore: docs/operations.md, "Restoring a table").
resource "google_bigtable_table" "hv" {
  name                = var.hv_table
  instance_name       = google_bigtable_instance.tiersweep.name
  deletion_protection = var.deletion_protection ? "PROTECTED" : "UNPROTECTED"
  column_family { family = "v" }
  automated_backup_policy {
    retention_period = "${var.backup_retention_days * 86400}s"
    frequency        = "86400s"
  }
}

# The changelog: family c, one version (a row is rewritten by every heartbeat and claim).
# Losing it loses the record of every change in flight (their blobs become orphans only
# the audit finds): protected and backed up like HV.
resource "google_bigtable_table" "changelog" {
  name                = var.changelog_table
  instance_name       = google_bigtable_instance.tiersweep.name
  deletion_protection = var.deletion_protection ? "PROTECTED" : "UNPROTECTED"
  column_family { family = "c" }
  automated_backup_policy {
    retention_period = "${var.backup_retention_days * 86400}s"
    frequency        = "86400s"
  }
}

resource "google_bigtable_gc_policy" "hv_value" {
  instance_name   = google_bigtable_instance.tiersweep.name
  table           = google_bigtable_table.hv.name
  column_family   = "v"
  deletion_policy = "ABANDON"
  max_version { number = 1 }
}

resource "google_bigtable_gc_policy" "changelog" {
  instance_name   = google_bigtable_instance.tiersweep.name
  table           = google_bigtable_table.changelog.name
  column_family   = "c"
  deletion_policy = "ABANDON"
  max_version { number = 1 }
}

# CheckAndMutateRow is a transactional write: it needs an app profile with single-cluster
# routing that allows them. Writers and workers use it (bigtable.app_profile).
resource "google_bigtable_app_profile" "tiersweep" {
  instance       = google_bigtable_instance.tiersweep.name
  app_profile_id = "tiersweep"
  description    = "tiersweep writers and workers: single-cluster routing, transactional writes"

  single_cluster_routing {
    cluster_id                 = "${var.bigtable_instance}-c1"
    allow_transactional_writes = true
  }
  ignore_warnings = true
}

resource "google_bigtable_instance" "tiersweep" {
  name                = var.bigtable_instance
  deletion_protection = var.deletion_protection

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

# HV: family v holds the object's value or tombstone (one version); family f holds the
# `applied` markers of writes, which only need to outlive a write's retries (24 h is
# generous); family r holds recovery's fences, which never expire.
resource "google_bigtable_table" "hv" {
  name          = var.hv_table
  instance_name = google_bigtable_instance.tiersweep.name
  column_family { family = "v" }
  column_family { family = "f" }
  column_family { family = "r" }
}

# The changelog: family c, one version (a row is rewritten by every heartbeat and claim).
resource "google_bigtable_table" "changelog" {
  name          = var.changelog_table
  instance_name = google_bigtable_instance.tiersweep.name
  column_family { family = "c" }
}

resource "google_bigtable_gc_policy" "hv_value" {
  instance_name   = google_bigtable_instance.tiersweep.name
  table           = google_bigtable_table.hv.name
  column_family   = "v"
  deletion_policy = "ABANDON"
  max_version { number = 1 }
}

resource "google_bigtable_gc_policy" "hv_fence" {
  instance_name   = google_bigtable_instance.tiersweep.name
  table           = google_bigtable_table.hv.name
  column_family   = "f"
  deletion_policy = "ABANDON"
  max_age { duration = "24h" }
}

# Recovery fences never expire (a writer can stall longer than any TTL with its write on
# the way): one version, no age limit. One small cell per recovered change.
resource "google_bigtable_gc_policy" "hv_recovery_fence" {
  instance_name   = google_bigtable_instance.tiersweep.name
  table           = google_bigtable_table.hv.name
  column_family   = "r"
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

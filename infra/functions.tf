# The bundle (uploaded under its content hash) and the two 2nd gen functions built from it.

resource "google_storage_bucket" "source" {
  #checkov:skip=CKV_GCP_62:Holds only build inputs (the function bundle); access logging of it adds cost and no audit value beyond Cloud Audit Logs.
  project                     = var.project_id
  name                        = local.names.source_bucket
  location                    = var.region
  labels                      = local.labels
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true

  versioning {
    enabled = true
  }

  # Bundles are immutable and named by hash; superseded versions go after 30 days.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_object" "bundle" {
  name   = "${var.prefix}/function-source-${local.bundle_sha256}.zip"
  bucket = google_storage_bucket.source.name
  source = local.bundle_path

  lifecycle {
    precondition {
      condition     = fileexists(local.bundle_path)
      error_message = "No function bundle at ${local.bundle_path}: run `make bundle` (or python -m devtools.bundle) first."
    }
  }
}

resource "google_cloudfunctions2_function" "poller" {
  project     = var.project_id
  name        = local.names.poller_function
  location    = var.region
  description = "batch-relay: one poll tick (called by Cloud Scheduler)"
  labels      = local.labels

  build_config {
    runtime         = "python312"
    entry_point     = "poll_jobs"
    service_account = var.build_service_account
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.bundle.name
      }
    }
  }

  service_config {
    available_memory               = var.poller.memory
    timeout_seconds                = var.poller.timeout_s
    min_instance_count             = 0
    max_instance_count             = var.poller.max_instances
    ingress_settings               = var.ingress_settings
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.poller.email
    environment_variables          = local.function_env

    dynamic "secret_environment_variables" {
      for_each = local.gemini_secret == null ? [] : [local.gemini_secret]
      content {
        key        = "RELAY_GEMINI_API_KEY"
        project_id = secret_environment_variables.value.project_id
        secret     = secret_environment_variables.value.secret_id
        version    = secret_environment_variables.value.version
      }
    }
  }

  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.gemini,
  ]
}

resource "google_cloudfunctions2_function" "reactor" {
  project     = var.project_id
  name        = local.names.reactor_function
  location    = var.region
  description = "batch-relay: copies outputs of succeeded jobs (pushed by the ${local.names.reactor_sub} subscription)"
  labels      = local.labels

  build_config {
    runtime         = "python312"
    entry_point     = "on_job_event"
    service_account = var.build_service_account
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.bundle.name
      }
    }
  }

  service_config {
    available_memory               = var.reactor.memory
    timeout_seconds                = var.reactor.timeout_s
    min_instance_count             = 0
    max_instance_count             = var.reactor.max_instances
    ingress_settings               = var.ingress_settings
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.reactor.email
    environment_variables          = local.function_env

    dynamic "secret_environment_variables" {
      for_each = local.gemini_secret == null ? [] : [local.gemini_secret]
      content {
        key        = "RELAY_GEMINI_API_KEY"
        project_id = secret_environment_variables.value.project_id
        secret     = secret_environment_variables.value.secret_id
        version    = secret_environment_variables.value.version
      }
    }
  }

  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.gemini,
  ]
}

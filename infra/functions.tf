# The bundle (uploaded under its content hash), the Artifact Registry repository its images go to, and
# the 2nd gen functions built from it: one definition, one instance per entry of local.functions.

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

# The functions' images. A repository of our own (instead of the gcf-artifacts one Cloud Functions
# creates on first deploy) exists before the first build, so the build account's writer grant can be on
# it (iam.tf) rather than on the project. Old images are cleaned up; the newest ones are always kept.
resource "google_artifact_registry_repository" "functions" {
  #checkov:skip=CKV_GCP_84:Holds only the function images built from the bundle (code, no data); Google-managed encryption, as in the gcf-artifacts repository Cloud Functions uses otherwise.
  project       = var.project_id
  location      = var.region
  repository_id = local.names.artifact_repository
  description   = "batch-relay function images (built by Cloud Build from the bundle)"
  format        = "DOCKER"
  labels        = local.labels

  cleanup_policy_dry_run = false
  cleanup_policies {
    id     = "keep-newest"
    action = "KEEP"
    most_recent_versions {
      keep_count = 10
    }
  }
  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "2592000s" # 30 days
    }
  }

  depends_on = [google_project_service.apis]
}

locals {
  # The build account: var.build_service_account when set, else the one created in iam.tf.
  build_service_account = coalesce(var.build_service_account, one(google_service_account.build[*].id))

  # One entry per function; `enabled = false` entries are not deployed. Every function runs the same
  # settings (local.function_env) and reads the Gemini API key; each has its own account, sizing and
  # ingress. The secret environment variables map a name to a secret (null: not set).
  functions = {
    poller = {
      description   = "batch-relay: one poll tick (called by Cloud Scheduler; tick parts pushed by ${local.names.tick_parts_sub})"
      enabled       = true
      cpu           = var.poller.cpu
      entry_point   = "poll_jobs"
      env           = local.function_env
      ingress       = var.ingress_settings
      max_instances = var.poller.max_instances
      memory        = var.poller.memory
      min_instances = var.poller.min_instances
      name          = local.names.poller_function
      secret_env = {
        RELAY_GEMINI_API_KEY = local.gemini_secret
      }
      service_account = google_service_account.poller.email
      timeout_s       = var.poller.timeout_s
    }
    reactor = {
      description   = "batch-relay: copies outputs of succeeded jobs (pushed by the ${local.names.reactor_sub} subscription)"
      enabled       = true
      cpu           = null # the memory's share
      entry_point   = "on_job_event"
      env           = local.function_env
      ingress       = var.ingress_settings
      max_instances = var.reactor.max_instances
      memory        = var.reactor.memory
      min_instances = 0
      name          = local.names.reactor_function
      secret_env = {
        RELAY_GEMINI_API_KEY = local.gemini_secret
      }
      service_account = google_service_account.reactor.email
      timeout_s       = var.reactor.timeout_s
    }
    # Gemini API batch webhooks (Standard Webhooks signatures). The Gemini API sends no Google identity
    # token, so this one function is public (allUsers invoker, ingress ALLOW_ALL; iam.tf) and
    # authenticates each delivery by its signature instead.
    webhook = {
      description   = "batch-relay: Gemini API batch webhook deliveries (signed; public endpoint)"
      cpu           = var.webhooks.cpu
      enabled       = var.webhooks.enabled
      entry_point   = "on_gemini_webhook"
      env           = local.function_env
      ingress       = "ALLOW_ALL"
      max_instances = var.webhooks.max_instances
      memory        = var.webhooks.memory
      min_instances = var.webhooks.min_instances
      name          = local.names.webhook_function
      secret_env = {
        RELAY_GEMINI_API_KEY         = local.gemini_secret
        RELAY_GEMINI_WEBHOOK_SECRETS = local.webhook_secret
      }
      service_account = one(google_service_account.webhook[*].email)
      timeout_s       = var.webhooks.timeout_s
    }
  }
}

resource "google_cloudfunctions2_function" "function" {
  #checkov:skip=CKV_GCP_124:Only the webhook instance has ingress ALLOW_ALL (the Gemini API calls it from the internet and sends no Google token; each delivery is signature-checked); poller and reactor use var.ingress_settings (internal by default).
  for_each = { for name, fn in local.functions : name => fn if fn.enabled }

  project     = var.project_id
  name        = each.value.name
  location    = var.region
  description = each.value.description
  labels      = local.labels

  build_config {
    runtime           = "python312"
    entry_point       = each.value.entry_point
    service_account   = local.build_service_account
    docker_repository = google_artifact_registry_repository.functions.id
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.bundle.name
      }
    }
  }

  service_config {
    available_memory = each.value.memory
    # null: the vCPU Cloud Run functions derive from the memory (512Mi: 1/3 vCPU); the poller sets 1 by
    # default (variables.tf; docs/benchmarks.md "Fractional vCPU" has the measurements)
    available_cpu                  = each.value.cpu == null ? null : tostring(each.value.cpu)
    timeout_seconds                = each.value.timeout_s
    min_instance_count             = each.value.min_instances
    max_instance_count             = each.value.max_instances
    ingress_settings               = each.value.ingress
    all_traffic_on_latest_revision = true
    service_account_email          = each.value.service_account
    environment_variables          = each.value.env

    # One request at a time per instance, as Cloud Run functions default to (more would need at least
    # 1 vCPU, available_cpu): a tick or part owns its instance's CPU, and a fan-out takes one instance
    # per part (poller.max_instances is validated against poller.fanout in variables.tf).
    max_instance_request_concurrency = 1

    dynamic "secret_environment_variables" {
      for_each = { for key, secret in each.value.secret_env : key => secret if secret != null }
      content {
        key        = secret_environment_variables.key
        project_id = secret_environment_variables.value.project_id
        secret     = secret_environment_variables.value.secret_id
        version    = secret_environment_variables.value.version
      }
    }
  }

  lifecycle {
    precondition {
      condition     = local.gemini_secret != null || !(var.webhooks.enabled || contains(var.watch.scopes, "gemini"))
      error_message = "Gemini webhooks and the gemini watch scope call the Gemini API: set gemini_api_key_secret."
    }
    precondition {
      condition     = !var.webhooks.enabled || var.webhooks.signing_secrets != null || var.webhooks.jwks_url != null
      error_message = "webhooks.enabled needs webhooks.signing_secrets or webhooks.jwks_url (else every delivery is refused)."
    }
  }

  depends_on = [
    google_project_service.apis,
    google_firestore_index.composite,
    google_secret_manager_secret_iam_member.gemini,
    google_secret_manager_secret_iam_member.webhook_signing,
    google_artifact_registry_repository_iam_member.build_writer,
    google_project_iam_member.build_log_writer,
    google_storage_bucket_iam_member.build_source_reader,
  ]
}

# The two functions were separate resources before; keep them (no destroy and rebuild) on upgrade.
moved {
  from = google_cloudfunctions2_function.poller
  to   = google_cloudfunctions2_function.function["poller"]
}

moved {
  from = google_cloudfunctions2_function.reactor
  to   = google_cloudfunctions2_function.function["reactor"]
}

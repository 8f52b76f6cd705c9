# Provider, shared names and the settings (contract A2) both functions run with.

provider "google" {
  project = var.project_id
  region  = var.region
}

data "google_project" "project" {
  project_id = var.project_id
}

locals {
  bundle_path = coalesce(var.bundle_path, "${path.module}/../dist/function-source.zip")
  # Content hash of the bundle: names the uploaded object, so a code change redeploys both functions.
  # (A missing bundle is reported by the precondition on google_storage_bucket_object.bundle.)
  bundle_sha256 = fileexists(local.bundle_path) ? filesha256(local.bundle_path) : "missing"

  labels = merge({ app = "batch-relay" }, var.labels)

  names = {
    dead_letter_sub    = "${var.prefix}-dead-letter-sub"
    dead_letter_topic  = "${var.prefix}-dead-letter"
    events_topic       = coalesce(var.events_topic, "${var.prefix}-events")
    example_sub        = "${var.prefix}-example-consumer"
    poller_function    = "${var.prefix}-poll-jobs"
    reactor_function   = "${var.prefix}-on-job-event"
    reactor_sub        = "${var.prefix}-reactor-push"
    scheduler_job      = "${var.prefix}-poll-jobs"
    source_bucket      = "${var.project_id}-${var.prefix}-source"
    tick_metric        = replace("${var.prefix}_poll_ticks", "-", "_")
    sa_poller          = "${var.prefix}-poller"
    sa_reactor         = "${var.prefix}-reactor"
    sa_push            = "${var.prefix}-push"
    sa_scheduler       = "${var.prefix}-scheduler"
    firestore_database = var.firestore.database_id
  }

  # Buckets the reactor writes to: the allowed list plus the default destination's bucket.
  default_destination_bucket = (
    var.default_destination == null ? null : split("/", trimprefix(var.default_destination, "gs://"))[0]
  )
  destination_buckets = sort(distinct(compact(concat(var.allowed_buckets, [local.default_destination_bucket]))))

  gemini_secret = var.gemini_api_key_secret == null ? null : {
    project_id = coalesce(var.gemini_api_key_secret.project_id, var.project_id)
    secret_id  = var.gemini_api_key_secret.secret_id
    version    = var.gemini_api_key_secret.version
  }

  # Every setting the code reads (shared/settings.py), except RELAY_GEMINI_API_KEY (a secret environment
  # variable, see functions.tf) and the emulator switches (never set in a deployment). A null value is
  # left unset, so the code's default applies. tests/test_infra.py holds this map against the code.
  settings_env = {
    GOOGLE_CLOUD_PROJECT      = var.project_id
    RELAY_ALLOWED_BUCKETS     = length(local.destination_buckets) > 0 ? join(",", local.destination_buckets) : null
    RELAY_COLLECTION          = var.firestore.collection
    RELAY_COPY_LEASE_S        = tostring(var.reactor.timeout_s + 60) # longer than the reactor's timeout
    RELAY_DEFAULT_DESTINATION = var.default_destination
    RELAY_EVENTS_TOPIC        = google_pubsub_topic.events.name
    RELAY_FIRESTORE_DATABASE  = var.firestore.database_id
    RELAY_GEMINI_BASE_URL     = var.endpoints.gemini_base_url
    RELAY_LOST_AFTER_S        = tostring(var.poller.lost_after_s)
    RELAY_MAX_ATTEMPTS        = tostring(var.poller.max_attempts)
    RELAY_POLL_CONCURRENCY    = tostring(var.poller.concurrency)
    RELAY_PUBLISH_LEASE_S     = tostring(var.poller.publish_lease_s)
    RELAY_REQUEST_TIMEOUT_S   = tostring(var.poller.request_timeout_s)
    RELAY_RETENTION_DAYS      = tostring(var.firestore.retention_days)
    RELAY_TICK_DEADLINE_S     = tostring(var.poller.timeout_s - 30) # the tick ends before the function times out
    RELAY_VERTEX_BASE_URL     = var.endpoints.vertex_base_url
    RELAY_VERTEX_REGION_QPM   = tostring(var.poller.vertex_region_qpm)
  }
  function_env = { for name, value in local.settings_env : name => value if value != null }
}

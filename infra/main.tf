# Providers, shared names and the settings (contract A2) every function runs with.

provider "google" {
  project = var.project_id
  region  = var.region
}

provider "google-beta" {
  project = var.project_id
  region  = var.region
}

locals {
  bundle_path = coalesce(var.bundle_path, "${path.module}/../dist/function-source.zip")
  # Content hash of the bundle: names the uploaded object, so a code change redeploys every function.
  # (A missing bundle is reported by the precondition on google_storage_bucket_object.bundle.)
  bundle_sha256 = fileexists(local.bundle_path) ? filesha256(local.bundle_path) : "missing"

  labels = merge({ app = "batch-relay" }, var.labels)

  names = {
    artifact_repository = "${var.prefix}-functions"
    dashboard           = "batch-relay ${var.prefix}"
    dead_letter_sub     = "${var.prefix}-dead-letter-sub"
    dead_letter_topic   = "${var.prefix}-dead-letter"
    events_topic        = coalesce(var.events_topic, "${var.prefix}-events")
    example_sub         = "${var.prefix}-example-consumer"
    firestore_database  = coalesce(var.firestore.database_id, "${var.prefix}-db")
    poller_function     = "${var.prefix}-poll-jobs"
    reactor_function    = "${var.prefix}-on-job-event"
    reactor_sub         = "${var.prefix}-reactor-push"
    sa_build            = "${var.prefix}-build"
    sa_poller           = "${var.prefix}-poller"
    sa_push             = "${var.prefix}-push"
    sa_reactor          = "${var.prefix}-reactor"
    sa_scheduler        = "${var.prefix}-scheduler"
    sa_tick_push        = "${var.prefix}-tick-push"
    sa_webhook          = "${var.prefix}-webhook"
    scheduler_job       = "${var.prefix}-poll-jobs"
    source_bucket       = "${var.project_id}-${var.prefix}-source"
    stalled_example_sub = "${var.prefix}-stalled-example"
    tick_parts_sub      = "${var.prefix}-tick-parts-push"
    tick_parts_topic    = "${var.prefix}-tick-parts"
    webhook_function    = "${var.prefix}-gemini-webhook"
  }

  # Where the reactor may copy to (RELAY_ALLOWED_BUCKETS): the allowed entries (bucket or bucket/prefix)
  # plus the default destination (gs://bucket/prefix -> bucket/prefix); "*" only by allow_any_destination.
  # Unset (no entry), the reactor refuses every copy. It is granted objectUser on each entry's bucket.
  destination_entries = sort(distinct(concat(var.allowed_buckets,
  var.default_destination == null ? [] : [trimsuffix(trimprefix(var.default_destination, "gs://"), "/")])))
  destination_buckets = sort(distinct([for entry in local.destination_entries : split("/", entry)[0]]))
  allowed_destinations = (
    var.allow_any_destination ? "*" : (length(local.destination_entries) > 0 ? join(",", local.destination_entries) : null)
  )

  # The relay's Firestore database, as IAM conditions name it: every roles/datastore.user grant is held to it.
  firestore_database_resource = "projects/${var.project_id}/databases/${local.names.firestore_database}"

  # Projects of the watched Vertex AI scopes ("vertex:projects/P/locations/L" -> "P"): the poller lists
  # their jobs, so it gets roles/aiplatform.viewer there (iam.tf).
  watch_vertex_projects = distinct([for s in var.watch.scopes : split("/", s)[1] if startswith(s, "vertex:")])

  # Whether the relay reads Vertex AI jobs (poller.vertex_ai; by default: unless it is a Gemini-only relay,
  # one with a Gemini API key that names no Vertex AI project or scope). Only then does the poller get
  # roles/aiplatform.viewer (iam.tf), in this project and every project named.
  vertex_used = coalesce(var.poller.vertex_ai, var.gemini_api_key_secret == null || length(var.poller.vertex_projects) > 0 || length(local.watch_vertex_projects) > 0)

  gemini_secret = var.gemini_api_key_secret == null ? null : {
    project_id = coalesce(var.gemini_api_key_secret.project_id, var.project_id)
    secret_id  = var.gemini_api_key_secret.secret_id
    version    = var.gemini_api_key_secret.version
  }
  webhook_secret = var.webhooks.enabled && var.webhooks.signing_secrets != null ? {
    project_id = coalesce(var.webhooks.signing_secrets.project_id, var.project_id)
    secret_id  = var.webhooks.signing_secrets.secret_id
    version    = var.webhooks.signing_secrets.version
  } : null

  # Pub/Sub's locational endpoint in the deployment's region (the functions and the CLI publish through it).
  pubsub_endpoint = "${var.region}-pubsub.googleapis.com:443"

  # Every setting the code reads (shared/settings.py), except the secrets RELAY_GEMINI_API_KEY and
  # RELAY_GEMINI_WEBHOOK_SECRETS (secret environment variables, see functions.tf) and the emulator
  # switches (never set in a deployment). A null value is left unset, so the code's default applies.
  # Every function gets the whole map (one Settings for all entry points). tests/test_infra.py holds
  # this map against the code.
  settings_env = {
    GOOGLE_CLOUD_PROJECT      = var.project_id
    RELAY_ALLOWED_BUCKETS     = local.allowed_destinations
    RELAY_COLLECTION          = var.firestore.collection
    RELAY_COPY_LEASE_S        = tostring(var.reactor.timeout_s + 60) # longer than the reactor's timeout
    RELAY_DEFAULT_DESTINATION = var.default_destination
    RELAY_EVENTS_TOPIC        = google_pubsub_topic.events.name
    RELAY_FIRESTORE_DATABASE  = local.names.firestore_database
    RELAY_GEMINI_BASE_URL     = var.endpoints.gemini_base_url
    RELAY_GEMINI_JWKS_URL     = var.webhooks.enabled ? var.webhooks.jwks_url : null
    RELAY_LOST_AFTER_S        = tostring(var.poller.lost_after_s)
    RELAY_MAX_ATTEMPTS        = tostring(var.poller.max_attempts)
    RELAY_MAX_POLL_INTERVAL_S = tostring(var.poller.max_poll_interval_s)
    RELAY_OUTPUT_WAIT_S       = tostring(var.reactor.output_wait_s)
    RELAY_POLL_CONCURRENCY    = tostring(var.poller.concurrency)
    RELAY_PRICES              = var.reactor.prices
    RELAY_PUBLISH_LEASE_S     = tostring(var.poller.publish_lease_s)
    RELAY_PUBSUB_ENDPOINT     = local.pubsub_endpoint # ordering holds per region: publish where the functions run
    RELAY_REQUEST_TIMEOUT_S   = tostring(var.poller.request_timeout_s)
    RELAY_RETENTION_DAYS      = tostring(var.firestore.retention_days)
    RELAY_SOURCE_BUCKETS      = length(var.source_buckets) > 0 ? join(",", sort(distinct(var.source_buckets))) : null
    RELAY_STALL_AFTER_S       = tostring(var.poller.stall_after_s)
    RELAY_TICK_DEADLINE_S     = tostring(var.poller.timeout_s - 30) # the tick ends before the function times out
    RELAY_TICK_FANOUT         = tostring(var.poller.fanout)
    RELAY_TICK_INTERVAL_S     = tostring(var.poller.tick_interval_s) # the Scheduler interval (scheduler.tf)
    RELAY_TICK_PARTS_TOPIC    = google_pubsub_topic.tick_parts.name
    RELAY_VERTEX_BASE_URL     = var.endpoints.vertex_base_url
    RELAY_VERTEX_REGION_QPM   = tostring(var.poller.vertex_region_qpm)
    RELAY_WATCH               = length(var.watch.scopes) > 0 ? join(",", var.watch.scopes) : null
    RELAY_WATCH_FILTER        = var.watch.filter
  }
  function_env = { for name, value in local.settings_env : name => value if value != null }
}

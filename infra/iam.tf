# One service account per function (plus one for Scheduler, one per Pub/Sub push subscription and one
# for the function builds), each with only what it needs, granted on the resource wherever the resource
# takes IAM. No primitive roles. Poller and reactor are invoked only with OIDC tokens of the accounts
# below; the webhook function (off by default) is the one public endpoint (see the end of this file).

resource "google_service_account" "poller" {
  project      = var.project_id
  account_id   = local.names.sa_poller
  display_name = "batch-relay poller (poll_jobs)"

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "reactor" {
  project      = var.project_id
  account_id   = local.names.sa_reactor
  display_name = "batch-relay reactor (on_job_event)"

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "webhook" {
  count = var.webhooks.enabled ? 1 : 0

  project      = var.project_id
  account_id   = local.names.sa_webhook
  display_name = "batch-relay Gemini webhook receiver (on_gemini_webhook)"

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "scheduler" {
  project      = var.project_id
  account_id   = local.names.sa_scheduler
  display_name = "batch-relay Cloud Scheduler caller of poll_jobs"

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "push" {
  project      = var.project_id
  account_id   = local.names.sa_push
  display_name = "batch-relay Pub/Sub push identity for on_job_event"

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "tick_push" {
  project      = var.project_id
  account_id   = local.names.sa_tick_push
  display_name = "batch-relay Pub/Sub push identity for poll_jobs tick parts"

  depends_on = [google_project_service.apis]
}

# Cloud Build runs the function builds as this account (unless var.build_service_account names another):
# projects created since mid-2024 may give the default build account too few rights to build.
resource "google_service_account" "build" {
  count = var.build_service_account == null ? 1 : 0

  project      = var.project_id
  account_id   = local.names.sa_build
  display_name = "batch-relay function builds (Cloud Build)"

  depends_on = [google_project_service.apis]
}

locals {
  # The functions' accounts, of the deployed functions only (the keys are known at plan time).
  function_members = {
    for name, member in {
      poller  = google_service_account.poller.member
      reactor = google_service_account.reactor.member
      webhook = one(google_service_account.webhook[*].member)
    } : name => member if local.functions[name].enabled
  }
  build_member = "serviceAccount:${element(split("/", local.build_service_account), 3)}"
}

# --- Firestore. Firestore roles are granted on the project, so each grant of roles/datastore.user
# (read/write documents, no admin) carries an IAM condition holding it to the relay's own database: write
# access to that database is administration of the relay (docs/security.md), and it gives nothing in any
# other database of the project.
resource "google_project_iam_member" "datastore_user" {
  for_each = local.function_members

  project = var.project_id
  role    = "roles/datastore.user"
  member  = each.value

  condition {
    title       = "${var.prefix} Firestore database only"
    description = "roles/datastore.user on the batch-relay database ${local.names.firestore_database} only"
    expression  = "resource.name == \"${local.firestore_database_resource}\""
  }
}

# --- Vertex AI: the poller reads batch prediction jobs (project level is the only level for them), only
# when the relay reads Vertex AI jobs (local.vertex_used): in this project, in poller.vertex_projects and in
# the projects of the watched Vertex AI scopes.
resource "google_project_iam_member" "poller_vertex_viewer" {
  for_each = toset(local.vertex_used ? distinct(concat([var.project_id], var.poller.vertex_projects, local.watch_vertex_projects)) : [])

  project = each.value
  role    = "roles/aiplatform.viewer"
  member  = google_service_account.poller.member
}

# The reactor reads a finished job from Vertex AI at copy time (its output location comes from that reply,
# never from the record), in the same projects.
resource "google_project_iam_member" "reactor_vertex_viewer" {
  for_each = toset(local.vertex_used ? distinct(concat([var.project_id], var.poller.vertex_projects, local.watch_vertex_projects)) : [])

  project = each.value
  role    = "roles/aiplatform.viewer"
  member  = google_service_account.reactor.member
}

# --- Pub/Sub: every function publishes events, on the topic only; only the poller publishes tick parts.
resource "google_pubsub_topic_iam_member" "events_publisher" {
  for_each = local.function_members

  project = var.project_id
  topic   = google_pubsub_topic.events.name
  role    = "roles/pubsub.publisher"
  member  = each.value
}

resource "google_pubsub_topic_iam_member" "tick_parts_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.tick_parts.name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.poller.member
}

# --- Cloud Storage: the reactor reads Vertex outputs and writes (and reads back) copies.
resource "google_storage_bucket_iam_member" "reactor_source_reader" {
  for_each = toset(var.source_buckets)

  bucket = each.value
  role   = "roles/storage.objectViewer"
  member = google_service_account.reactor.member
}

resource "google_storage_bucket_iam_member" "reactor_destination_user" {
  for_each = toset(local.destination_buckets)

  bucket = each.value
  role   = "roles/storage.objectUser"
  member = google_service_account.reactor.member
}

# --- Builds, as Google's "custom build service account" guide for Cloud Run functions describes: write
# build logs (a project-level role: logs have no finer IAM for writing), push images to the functions'
# repository, read the bundle from the source bucket.
resource "google_project_iam_member" "build_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = local.build_member
}

resource "google_artifact_registry_repository_iam_member" "build_writer" {
  project    = var.project_id
  location   = google_artifact_registry_repository.functions.location
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = local.build_member
}

resource "google_storage_bucket_iam_member" "build_source_reader" {
  bucket = google_storage_bucket.source.name
  role   = "roles/storage.objectViewer"
  member = local.build_member
}

# --- Invokers: Scheduler's account and the tick-parts push account may call the poller, the push
# account the reactor; nobody else.
resource "google_cloud_run_v2_service_iam_member" "scheduler_invokes_poller" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.function["poller"].name
  role     = "roles/run.invoker"
  member   = google_service_account.scheduler.member
}

resource "google_cloud_run_v2_service_iam_member" "tick_push_invokes_poller" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.function["poller"].name
  role     = "roles/run.invoker"
  member   = google_service_account.tick_push.member
}

resource "google_cloud_run_v2_service_iam_member" "push_invokes_reactor" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.function["reactor"].name
  role     = "roles/run.invoker"
  member   = google_service_account.push.member
}

# The webhook function, and only it, only when enabled: the Gemini API delivers without a Google
# identity token, so Cloud Run must let unauthenticated requests through; the function verifies each
# delivery's Standard Webhooks signature (RELAY_GEMINI_WEBHOOK_SECRETS) or JWKS token instead.
resource "google_cloud_run_v2_service_iam_member" "webhook_public_invoker" {
  count = var.webhooks.enabled ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.function["webhook"].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# --- The Pub/Sub service agent: created explicitly (it otherwise appears lazily, and the grants below
# would fail on a fresh project), then it mints OIDC tokens for both push accounts, moves poison messages
# to the dead-letter topic and acknowledges them on the push subscriptions.
resource "google_project_service_identity" "pubsub" {
  provider = google-beta

  project = var.project_id
  service = "pubsub.googleapis.com"

  depends_on = [google_project_service.apis]
}

locals {
  pubsub_agent = "serviceAccount:${google_project_service_identity.pubsub.email}"
}

resource "google_service_account_iam_member" "pubsub_agent_token_creator" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

resource "google_service_account_iam_member" "pubsub_agent_tick_push_token_creator" {
  service_account_id = google_service_account.tick_push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "reactor_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.reactor.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "tick_parts_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.tick_parts.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

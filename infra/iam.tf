# One service account per function (plus one for Scheduler and one for Pub/Sub push), each with only
# what it needs, granted on the resource wherever the resource takes IAM. No primitive roles, no public
# invoker: both functions are invoked only with OIDC tokens of the accounts below.

resource "google_service_account" "poller" {
  project      = var.project_id
  account_id   = local.names.sa_poller
  display_name = "batch-relay poller (poll_jobs)"
}

resource "google_service_account" "reactor" {
  project      = var.project_id
  account_id   = local.names.sa_reactor
  display_name = "batch-relay reactor (on_job_event)"
}

resource "google_service_account" "scheduler" {
  project      = var.project_id
  account_id   = local.names.sa_scheduler
  display_name = "batch-relay Cloud Scheduler caller of poll_jobs"
}

resource "google_service_account" "push" {
  project      = var.project_id
  account_id   = local.names.sa_push
  display_name = "batch-relay Pub/Sub push identity for on_job_event"
}

# --- Firestore. Firestore IAM exists only at project level: roles/datastore.user (read/write documents,
# no admin) on the project is the narrowest grant there is.
resource "google_project_iam_member" "datastore_user" {
  for_each = {
    poller  = google_service_account.poller.member
    reactor = google_service_account.reactor.member
  }

  project = var.project_id
  role    = "roles/datastore.user"
  member  = each.value
}

# --- Vertex AI: the poller reads batch prediction jobs (project level is the only level for them).
resource "google_project_iam_member" "poller_vertex_viewer" {
  for_each = toset(distinct(concat([var.project_id], var.poller.vertex_projects)))

  project = each.value
  role    = "roles/aiplatform.viewer"
  member  = google_service_account.poller.member
}

# --- Pub/Sub: both functions publish events, on the topic only.
resource "google_pubsub_topic_iam_member" "events_publisher" {
  for_each = {
    poller  = google_service_account.poller.member
    reactor = google_service_account.reactor.member
  }

  project = var.project_id
  topic   = google_pubsub_topic.events.name
  role    = "roles/pubsub.publisher"
  member  = each.value
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

# --- Invokers: Scheduler's account may call the poller, the push account the reactor; nobody else.
resource "google_cloud_run_v2_service_iam_member" "scheduler_invokes_poller" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.poller.name
  role     = "roles/run.invoker"
  member   = google_service_account.scheduler.member
}

resource "google_cloud_run_v2_service_iam_member" "push_invokes_reactor" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.reactor.name
  role     = "roles/run.invoker"
  member   = google_service_account.push.member
}

# --- The Pub/Sub service agent: mints OIDC tokens for the push account, moves poison messages to the
# dead-letter topic and acknowledges them on the reactor's subscription.
locals {
  pubsub_agent = "serviceAccount:service-${data.google_project.project.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_service_account_iam_member" "pubsub_agent_token_creator" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent

  depends_on = [google_project_service.apis]
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

# Events topic, dead-letter topic, the reactor's push subscription and an example consumer.

resource "google_pubsub_topic" "events" {
  #checkov:skip=CKV_GCP_83:CMEK is opt-in (var.pubsub_kms_key_name); events carry job metadata, not model outputs, so Google-managed encryption is the default.
  project      = var.project_id
  name         = local.names.events_topic
  labels       = local.labels
  kms_key_name = var.pubsub_kms_key_name

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:CMEK is opt-in (var.pubsub_kms_key_name), as for the events topic whose messages it holds.
  project      = var.project_id
  name         = local.names.dead_letter_topic
  labels       = local.labels
  kms_key_name = var.pubsub_kms_key_name

  depends_on = [google_project_service.apis]
}

# Keeps dead-lettered messages (7 days) so they are visible, can be replayed and feed the backlog alert.
resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project_id
  name                       = local.names.dead_letter_sub
  topic                      = google_pubsub_topic.dead_letter.id
  labels                     = local.labels
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

# Delivery to the reactor. An Eventarc trigger offers no attribute filter and no dead-letter topic; this
# subscription has both, plus a retry policy, and pushes with an OIDC token of its own account.
# functions-framework turns the push body into a messagePublished CloudEvent; the URL path carries the
# topic so the event's source names it.
resource "google_pubsub_subscription" "reactor" {
  project = var.project_id
  name    = local.names.reactor_sub
  topic   = google_pubsub_topic.events.id
  labels  = local.labels
  filter  = "attributes.ce-type = \"batchrelay.job.v1.stateChanged\" AND (attributes.state = \"JOB_STATE_SUCCEEDED\" OR attributes.state = \"JOB_STATE_PARTIALLY_SUCCEEDED\")"

  # The longest Pub/Sub allows; the reactor's timeout is at most 540 s (variables.tf), so a copy still
  # running is never redelivered to a second instance.
  ack_deadline_seconds       = 600
  message_retention_duration = "604800s"

  push_config {
    push_endpoint = "${google_cloudfunctions2_function.reactor.service_config[0].uri}/projects/${var.project_id}/topics/${google_pubsub_topic.events.name}"
    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = google_cloudfunctions2_function.reactor.service_config[0].uri
    }
  }

  retry_policy {
    minimum_backoff = "${var.reactor.minimum_backoff_s}s"
    maximum_backoff = "${var.reactor.maximum_backoff_s}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.reactor.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.push_invokes_reactor,
    google_pubsub_topic_iam_member.dead_letter_publisher,
  ]
}

# An example consumer: every event, in per-job order (events are published with ordering key = job).
# Copy it for your own consumers, with a filter such as
#   attributes.ce-type = "batchrelay.job.v1.outputsReady"
resource "google_pubsub_subscription" "example" {
  project                    = var.project_id
  name                       = local.names.example_sub
  topic                      = google_pubsub_topic.events.id
  labels                     = local.labels
  enable_message_ordering    = true
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

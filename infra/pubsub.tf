# Events topic, dead-letter topic, the reactor's push subscription, the tick-parts topic and its push
# subscription to the poller, and two example consumers (every event; stalled jobs only).

resource "google_pubsub_topic" "events" {
  #checkov:skip=CKV_GCP_83:CMEK is opt-in (var.pubsub_kms_key_name); events carry job metadata, not model outputs, so Google-managed encryption is the default.
  project      = var.project_id
  name         = local.names.events_topic
  labels       = local.labels
  kms_key_name = var.pubsub_kms_key_name

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:CMEK is opt-in (var.pubsub_kms_key_name), as for the events topic and tick parts whose messages it holds.
  project      = var.project_id
  name         = local.names.dead_letter_topic
  labels       = local.labels
  kms_key_name = var.pubsub_kms_key_name

  depends_on = [google_project_service.apis]
}

# Keeps dead-lettered messages (7 days) so they are visible, can be replayed and feed the backlog alert.
# Both push subscriptions dead-letter here; the attribute CloudPubSubDeadLetterSourceSubscription tells
# reactor events from tick parts.
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
# The filter: state changes (only they carry `previous_state`) to a terminal state, every one of them, since
# a job that ended CANCELLED, EXPIRED or FAILED may have partial outputs (the reactor's TRIGGER_STATES). A
# filter holds at most 256 bytes, which `attributes.ce-type = "batchrelay.job.v1.stateChanged"` and the five
# states would pass. A filter cannot be changed in place: a new one replaces the subscription (and drops
# what it held undelivered: see docs/deploy.md).
resource "google_pubsub_subscription" "reactor" {
  project = var.project_id
  name    = local.names.reactor_sub
  topic   = google_pubsub_topic.events.id
  labels  = local.labels
  filter  = "attributes:previous_state AND (attributes.state = \"JOB_STATE_SUCCEEDED\" OR attributes.state = \"JOB_STATE_PARTIALLY_SUCCEEDED\" OR attributes.state = \"JOB_STATE_FAILED\" OR attributes.state = \"JOB_STATE_CANCELLED\" OR attributes.state = \"JOB_STATE_EXPIRED\")"

  # The longest Pub/Sub allows; the reactor's timeout is at most 540 s (variables.tf), so a copy still
  # running is never redelivered to a second instance.
  ack_deadline_seconds       = 600
  message_retention_duration = "604800s"

  push_config {
    push_endpoint = "${google_cloudfunctions2_function.function["reactor"].service_config[0].uri}/projects/${var.project_id}/topics/${google_pubsub_topic.events.name}"
    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = google_cloudfunctions2_function.function["reactor"].service_config[0].uri
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

# Stalled jobs only (batchrelay.job.v1.stalled: a job that has not changed for poller.stall_after_s), in
# per-job order: an example of alerting from events rather than from logs (monitoring.tf does the latter).
resource "google_pubsub_subscription" "stalled_example" {
  project                    = var.project_id
  name                       = local.names.stalled_example_sub
  topic                      = google_pubsub_topic.events.id
  labels                     = local.labels
  filter                     = "attributes.ce-type = \"batchrelay.job.v1.stalled\""
  enable_message_ordering    = true
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

# --- Tick fan-out. With poller.fanout = K > 1 the scheduled tick (the coordinator) publishes K messages
# here, each a shard range {"shard_lo": a, "shard_hi": b}; the push subscription below delivers each
# one to the poller as the request body, so Cloud Run runs the parts in parallel. With K = 1 nothing is
# published and both stay idle.
resource "google_pubsub_topic" "tick_parts" {
  #checkov:skip=CKV_GCP_83:CMEK is opt-in (var.pubsub_kms_key_name); tick parts carry only shard ranges.
  project      = var.project_id
  name         = local.names.tick_parts_topic
  labels       = local.labels
  kms_key_name = var.pubsub_kms_key_name

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_subscription" "tick_parts" {
  project = var.project_id
  name    = local.names.tick_parts_sub
  topic   = google_pubsub_topic.tick_parts.id
  labels  = local.labels

  # The longest Pub/Sub allows; with fanout > 1 the poller's timeout is at most 600 s (variables.tf), so
  # a part still running is never pushed to a second instance.
  ack_deadline_seconds = 600
  # The shortest retention Pub/Sub allows: a part is worth nothing once later ticks have run.
  message_retention_duration = "600s"

  push_config {
    push_endpoint = google_cloudfunctions2_function.function["poller"].service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.tick_push.email
      audience              = google_cloudfunctions2_function.function["poller"].service_config[0].uri
    }
    # The message data itself is the POST body (the shard range), as poll_jobs reads it.
    no_wrapper {
      write_metadata = false
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "60s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = 5
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.tick_push_invokes_poller,
    google_pubsub_topic_iam_member.dead_letter_publisher,
  ]
}

# Alerts operators expect: the poller stopped ticking, and messages piling up in the dead-letter topic.

# One count per finished tick: the poller logs one JSON line {"severity": "INFO", "message": "tick finished"}.
resource "google_logging_metric" "ticks" {
  project     = var.project_id
  name        = local.names.tick_metric
  description = "batch-relay poll ticks finished (log-based)"
  filter      = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${local.names.poller_function}\" AND jsonPayload.message=\"tick finished\""

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
  }

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "stale_heartbeat" {
  count = var.alerts.enabled ? 1 : 0

  project               = var.project_id
  display_name          = "batch-relay ${var.prefix}: no poll tick for ${var.alerts.heartbeat_stale_minutes} minutes"
  combiner              = "OR"
  notification_channels = var.alerts.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "poll ticks absent"
    condition_absent {
      filter   = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.ticks.name}\" AND resource.type=\"cloud_run_revision\""
      duration = "${var.alerts.heartbeat_stale_minutes * 60}s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM" # one series across revisions: a redeploy is not an outage
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The poller `${local.names.poller_function}` has logged no `tick finished` for ${var.alerts.heartbeat_stale_minutes} minutes. Check the Cloud Scheduler job `${local.names.scheduler_job}` and the function's logs; the heartbeat document is `${var.firestore.collection}_meta/heartbeat`."
  }
}

resource "google_monitoring_alert_policy" "dead_letter_backlog" {
  count = var.alerts.enabled ? 1 : 0

  project               = var.project_id
  display_name          = "batch-relay ${var.prefix}: messages in the dead-letter subscription"
  combiner              = "OR"
  notification_channels = var.alerts.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "dead-letter backlog above ${var.alerts.dead_letter_threshold}"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${google_pubsub_subscription.dead_letter.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alerts.dead_letter_threshold
      duration        = "300s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Events the reactor `${local.names.reactor_function}` failed on ${var.reactor.max_delivery_attempts} times are in `${google_pubsub_subscription.dead_letter.name}`. Inspect them with `gcloud pubsub subscriptions pull ${google_pubsub_subscription.dead_letter.name}`, fix the cause, then `batch-relay recopy JOB`."
  }
}

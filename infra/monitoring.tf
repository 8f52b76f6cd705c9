# Log-based metrics from the functions' JSON logs (one JSON object per line on stdout: Cloud Logging
# puts it in jsonPayload), the alerts operators expect, and an operations dashboard.
# docs/operations.md ("The dashboard") says what each chart means.

locals {
  log_filter = {
    poller  = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${local.names.poller_function}\""
    reactor = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${local.names.reactor_function}\""
    webhook = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${local.names.webhook_function}\""
    all     = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=(\"${local.names.poller_function}\" OR \"${local.names.reactor_function}\" OR \"${local.names.webhook_function}\")"
  }
  count_buckets   = { growth_factor = 2, num_finite_buckets = 20, scale = 1 }   # 1 .. ~1M
  seconds_buckets = { growth_factor = 2, num_finite_buckets = 24, scale = 0.1 } # 0.1 s .. ~10 days

  # One log-based metric per entry. value_field null: a counter of matching lines (INT64); else a
  # distribution of that jsonPayload field. labels: metric label => jsonPayload field.
  log_metrics = {
    ticks = {
      buckets     = null
      description = "poll ticks finished"
      filter      = "${local.log_filter.poller} AND jsonPayload.message=\"tick finished\""
      labels      = {}
      name        = "poll_ticks"
      unit        = "1"
      value_field = null
    }
    jobs_polled = {
      buckets     = local.count_buckets
      description = "jobs polled per tick"
      filter      = "${local.log_filter.poller} AND jsonPayload.message=\"tick finished\""
      labels      = {}
      name        = "jobs_polled"
      unit        = "1"
      value_field = "polled"
    }
    job_changes = {
      buckets     = local.count_buckets
      description = "job state changes recorded per tick"
      filter      = "${local.log_filter.poller} AND jsonPayload.message=\"tick finished\""
      labels      = {}
      name        = "job_changes"
      unit        = "1"
      value_field = "changed"
    }
    jobs_deferred = {
      buckets     = local.count_buckets
      description = "jobs deferred to a later tick (adaptive cadence, quota) per tick"
      filter      = "${local.log_filter.poller} AND jsonPayload.message=\"tick finished\""
      labels      = {}
      name        = "jobs_deferred"
      unit        = "1"
      value_field = "deferred"
    }
    poll_errors = {
      buckets     = null
      description = "failed job status fetches"
      filter      = "${local.log_filter.poller} AND jsonPayload.message=\"status fetch failed\""
      labels      = { api = "api", kind = "kind" }
      name        = "status_fetch_errors"
      unit        = "1"
      value_field = null
    }
    publish_lag = {
      buckets     = local.seconds_buckets
      description = "seconds from observing a change to publishing its event"
      filter      = "${local.log_filter.all} AND jsonPayload.message=\"event published\""
      labels      = { type = "type" }
      name        = "publish_lag"
      unit        = "s"
      value_field = "lag_s"
    }
    copy_duration = {
      buckets     = local.seconds_buckets
      description = "seconds an output copy took"
      filter      = "${local.log_filter.reactor} AND jsonPayload.message=\"outputs copied\""
      labels      = { api = "api", status = "status" }
      name        = "copy_duration"
      unit        = "s"
      value_field = "duration_s"
    }
    copy_failures = {
      buckets     = null
      description = "failed output copy attempts"
      filter      = "${local.log_filter.reactor} AND jsonPayload.message=\"copy failed\""
      labels      = { api = "api" }
      name        = "copy_failures"
      unit        = "1"
      value_field = null
    }
    job_stalls = {
      buckets     = null
      description = "jobs reported stalled (no change for poller.stall_after_s)"
      filter      = "${local.log_filter.poller} AND jsonPayload.message=\"job stalled\""
      labels      = { api = "api", state = "state" }
      name        = "job_stalls"
      unit        = "1"
      value_field = null
    }
    webhooks_disabled = {
      buckets     = null
      description = "Gemini webhooks found not enabled by the poller's hourly check (e.g. disabled_due_to_failed_deliveries)"
      filter      = "${local.log_filter.poller} AND jsonPayload.message=\"webhook disabled\""
      labels      = { state = "state" }
      name        = "webhooks_disabled"
      unit        = "1"
      value_field = null
    }
    webhook_deliveries = {
      buckets     = null
      description = "Gemini webhook deliveries received"
      filter      = "${local.log_filter.webhook} AND jsonPayload.message=~\"^webhook delivery\""
      labels      = { result = "result", type = "type" }
      name        = "webhook_deliveries"
      unit        = "1"
      value_field = null
    }
  }
}

resource "google_logging_metric" "metric" {
  for_each = local.log_metrics

  project          = var.project_id
  name             = replace("${var.prefix}_${each.value.name}", "-", "_")
  description      = "batch-relay ${each.value.description} (log-based)"
  filter           = each.value.filter
  value_extractor  = each.value.value_field == null ? null : "EXTRACT(jsonPayload.${each.value.value_field})"
  label_extractors = { for label, field in each.value.labels : label => "EXTRACT(jsonPayload.${field})" }

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = each.value.value_field == null ? "INT64" : "DISTRIBUTION"
    unit        = each.value.unit

    dynamic "labels" {
      for_each = each.value.labels
      content {
        key        = labels.key
        value_type = "STRING"
      }
    }
  }

  dynamic "bucket_options" {
    for_each = each.value.buckets == null ? [] : [each.value.buckets]
    content {
      exponential_buckets {
        growth_factor      = bucket_options.value.growth_factor
        num_finite_buckets = bucket_options.value.num_finite_buckets
        scale              = bucket_options.value.scale
      }
    }
  }

  depends_on = [google_project_service.apis]
}

# The tick metric was a resource of its own before.
moved {
  from = google_logging_metric.ticks
  to   = google_logging_metric.metric["ticks"]
}

# Cloud Monitoring answers 404 "Cannot find metric(s)" for up to ten minutes after a log-based metric is
# created. Everything that names a metric (alert policies, the dashboard) takes its name from this
# resource's triggers, so it is created only after the wait; adding a metric waits again.
resource "time_sleep" "log_metrics" {
  create_duration = "600s"
  triggers        = { for key, metric in google_logging_metric.metric : key => metric.name }
}

locals {
  user_metric = { for key, name in time_sleep.log_metrics.triggers : key => "logging.googleapis.com/user/${name}" }
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
      filter   = "metric.type=\"logging.googleapis.com/user/${time_sleep.log_metrics.triggers["ticks"]}\" AND resource.type=\"cloud_run_revision\""
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
    content   = "Messages a push subscription failed to deliver are in `${google_pubsub_subscription.dead_letter.name}`; the attribute `CloudPubSubDeadLetterSourceSubscription` names the source. From `${local.names.reactor_sub}`: events the reactor `${local.names.reactor_function}` failed on ${var.reactor.max_delivery_attempts} times; inspect them with `gcloud pubsub subscriptions pull ${google_pubsub_subscription.dead_letter.name}`, fix the cause, then `batch-relay recopy JOB`. From `${local.names.tick_parts_sub}`: tick parts the poller failed 5 times; later ticks poll those shards again, so they can be acknowledged once the poller's errors are understood."
  }
}

resource "google_monitoring_alert_policy" "poll_errors" {
  count = var.alerts.enabled ? 1 : 0

  project               = var.project_id
  display_name          = "batch-relay ${var.prefix}: job status fetches failing"
  combiner              = "OR"
  notification_channels = var.alerts.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "more than ${var.alerts.poll_error_threshold} failed status fetches per 5 minutes, for ${var.alerts.poll_error_minutes} minutes"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${time_sleep.log_metrics.triggers["poll_errors"]}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alerts.poll_error_threshold
      duration        = "${var.alerts.poll_error_minutes * 60}s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The poller `${local.names.poller_function}` keeps failing to fetch job status (one `status fetch failed` WARNING per failure, with `job`, `api`, `kind` and `error`). The dashboard's \"Status fetch failures\" chart splits them by API and kind. Usual causes: the Gemini API key was revoked or rotated (check the secret), the poller lost `roles/aiplatform.viewer` in a Vertex AI project, quota (lower `poller.concurrency` or `poller.vertex_region_qpm`), or an API outage."
  }
}

resource "google_monitoring_alert_policy" "stalled_jobs" {
  count = var.alerts.enabled && var.alerts.stalled_jobs ? 1 : 0

  project               = var.project_id
  display_name          = "batch-relay ${var.prefix}: jobs stalled"
  combiner              = "OR"
  notification_channels = var.alerts.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "a job was reported stalled"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${time_sleep.log_metrics.triggers["job_stalls"]}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A tracked job has not changed state for ${var.poller.stall_after_s} s (`poller.stall_after_s`). The poller logged `job stalled` (fields `job`, `api`, `state`, `stalled_for_s`, `version`) and published a `batchrelay.job.v1.stalled` event (see the `${local.names.stalled_example_sub}` subscription). Check the job in its console; `batch-relay show JOB` shows what the relay last saw."
  }
}

resource "google_monitoring_alert_policy" "disabled_webhooks" {
  count = var.alerts.enabled && var.alerts.disabled_webhooks ? 1 : 0

  project               = var.project_id
  display_name          = "batch-relay ${var.prefix}: Gemini webhook disabled"
  combiner              = "OR"
  notification_channels = var.alerts.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "the poller found a Gemini webhook that is not enabled"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${time_sleep.log_metrics.triggers["webhooks_disabled"]}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        # the check runs at most once an hour: a two-hour window keeps the incident open between checks
        alignment_period     = "7200s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The poller `${local.names.poller_function}` checks the project's static Gemini API webhooks once an hour and found one subscribed to batch events that is not `enabled` (WARNING `webhook disabled`, fields `webhook`, `state`, `uri`). `disabled_due_to_failed_deliveries`: the Gemini API gave up after a day of failed deliveries, and batches are noticed by the ticks only. Check `${local.names.webhook_function}`'s logs (`webhook delivery refused`: a signing secret that does not match), fix the cause, then register the webhook anew (`batch-relay webhook register --secret ...`) and unregister the disabled one (`batch-relay webhook list`, `batch-relay webhook unregister ID`). See docs/webhooks.md, \"Webhook health\"."
  }
}

# --- The operations dashboard: one chart per log-based metric (plus the dead-letter backlog).
locals {
  # metric: a key of local.log_metrics (its chart filter is built below), or null with filter set.
  # The aligner applies per series over 60 s; each reducer (across series, by group_by) is one line.
  dashboard_charts = [
    { title = "Poll ticks per minute", metric = "ticks", filter = null, aligner = "ALIGN_SUM", reducers = ["REDUCE_SUM"], group_by = [], unit = "ticks", enabled = true },
    { title = "Jobs polled per tick (mean)", metric = "jobs_polled", filter = null, aligner = "ALIGN_DELTA", reducers = ["REDUCE_MEAN"], group_by = [], unit = "jobs", enabled = true },
    { title = "State changes per tick (mean)", metric = "job_changes", filter = null, aligner = "ALIGN_DELTA", reducers = ["REDUCE_MEAN"], group_by = [], unit = "changes", enabled = true },
    { title = "Status fetch failures per minute, by API and kind", metric = "poll_errors", filter = null, aligner = "ALIGN_SUM", reducers = ["REDUCE_SUM"], group_by = ["metric.label.api", "metric.label.kind"], unit = "failures", enabled = true },
    { title = "Deferred jobs per tick (mean)", metric = "jobs_deferred", filter = null, aligner = "ALIGN_DELTA", reducers = ["REDUCE_MEAN"], group_by = [], unit = "jobs", enabled = true },
    { title = "Publish lag, seconds (p50, p99)", metric = "publish_lag", filter = null, aligner = "ALIGN_DELTA", reducers = ["REDUCE_PERCENTILE_50", "REDUCE_PERCENTILE_99"], group_by = [], unit = "s", enabled = true },
    { title = "Output copy duration, seconds (p50, p99)", metric = "copy_duration", filter = null, aligner = "ALIGN_DELTA", reducers = ["REDUCE_PERCENTILE_50", "REDUCE_PERCENTILE_99"], group_by = [], unit = "s", enabled = true },
    { title = "Copy failures per minute, by API", metric = "copy_failures", filter = null, aligner = "ALIGN_SUM", reducers = ["REDUCE_SUM"], group_by = ["metric.label.api"], unit = "failures", enabled = true },
    { title = "Jobs reported stalled per minute, by API", metric = "job_stalls", filter = null, aligner = "ALIGN_SUM", reducers = ["REDUCE_SUM"], group_by = ["metric.label.api"], unit = "jobs", enabled = true },
    { title = "Gemini webhooks found disabled (hourly check), by state", metric = "webhooks_disabled", filter = null, aligner = "ALIGN_SUM", reducers = ["REDUCE_SUM"], group_by = ["metric.label.state"], unit = "webhooks", enabled = var.gemini_api_key_secret != null },
    { title = "Webhook deliveries per minute, by result", metric = "webhook_deliveries", filter = null, aligner = "ALIGN_SUM", reducers = ["REDUCE_SUM"], group_by = ["metric.label.result"], unit = "deliveries", enabled = var.webhooks.enabled },
    { title = "Dead-letter backlog (messages)", metric = null, filter = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" resource.type=\"pubsub_subscription\" resource.label.\"subscription_id\"=\"${google_pubsub_subscription.dead_letter.name}\"", aligner = "ALIGN_MAX", reducers = ["REDUCE_MAX"], group_by = [], unit = "messages", enabled = true },
  ]
  visible_charts = [for chart in local.dashboard_charts : chart if chart.enabled]
}

resource "google_monitoring_dashboard" "operations" {
  count = var.alerts.dashboard ? 1 : 0

  project = var.project_id
  dashboard_json = jsonencode({
    displayName = local.names.dashboard
    mosaicLayout = {
      columns = 12
      tiles = [for i, chart in local.visible_charts : {
        xPos   = (i % 2) * 6
        yPos   = floor(i / 2) * 4
        width  = 6
        height = 4
        widget = {
          title = chart.title
          xyChart = {
            chartOptions = { mode = "COLOR" }
            dataSets = [for reducer in chart.reducers : {
              plotType   = "LINE"
              targetAxis = "Y1"
              timeSeriesQuery = {
                timeSeriesFilter = {
                  filter = chart.metric == null ? chart.filter : "metric.type=\"${local.user_metric[chart.metric]}\" resource.type=\"cloud_run_revision\""
                  aggregation = {
                    alignmentPeriod    = "60s"
                    perSeriesAligner   = chart.aligner
                    crossSeriesReducer = reducer
                    groupByFields      = chart.group_by
                  }
                }
              }
            }]
            yAxis = { label = chart.unit, scale = "LINEAR" }
          }
        }
      }]
    }
  })
}

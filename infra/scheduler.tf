# Cloud Scheduler calls poll_jobs every minute (by default) with an OIDC token of its own account; the
# code is told the interval (RELAY_TICK_INTERVAL_S = poller.tick_interval_s, validated against the
# schedule). The attempt deadline sits between the tick deadline (timeout - 30 s) and the function
# timeout. The job lives in var.region, which must be a Cloud Scheduler location.

resource "google_cloud_scheduler_job" "poll" {
  project          = var.project_id
  region           = var.region
  name             = local.names.scheduler_job
  description      = "batch-relay: one poll tick"
  schedule         = var.poller.schedule
  time_zone        = var.poller.time_zone
  attempt_deadline = "${var.poller.timeout_s - 10}s"

  # The next scheduled tick is the retry.
  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.function["poller"].service_config[0].uri
    headers     = { "Content-Type" = "application/json" }
    body        = base64encode("{}")

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = google_cloudfunctions2_function.function["poller"].service_config[0].uri
    }
  }

  depends_on = [google_cloud_run_v2_service_iam_member.scheduler_invokes_poller]
}

output "cli_environment" {
  description = "Settings for running the batch-relay CLI against this deployment (export them, then `batch-relay track NAME`; `recopy` copies in-process under the same allow-lists). Null values are left unset. The CLI needs roles/datastore.user conditioned on the relay's database (firestore_iam_condition): that is administration of the relay."
  value = {
    GOOGLE_CLOUD_PROJECT     = var.project_id
    RELAY_ALLOWED_BUCKETS    = local.allowed_destinations
    RELAY_COLLECTION         = var.firestore.collection
    RELAY_EVENTS_TOPIC       = google_pubsub_topic.events.name
    RELAY_FIRESTORE_DATABASE = local.names.firestore_database
    RELAY_PUBSUB_ENDPOINT    = local.pubsub_endpoint
    RELAY_SOURCE_BUCKETS     = local.settings_env.RELAY_SOURCE_BUCKETS
  }
}

output "dashboard" {
  description = "Id of the operations dashboard, projects/NUMBER/dashboards/ID (null when alerts.dashboard is false). Open it under Monitoring > Dashboards."
  value       = try(google_monitoring_dashboard.operations[0].id, null)
}

output "dead_letter" {
  description = "Dead-letter topic and the subscription that keeps its messages."
  value = {
    subscription = google_pubsub_subscription.dead_letter.id
    topic        = google_pubsub_topic.dead_letter.id
  }
}

output "events_topic" {
  description = "The events topic (RELAY_EVENTS_TOPIC): create your subscriptions on it."
  value       = google_pubsub_topic.events.id
}

output "example_subscription" {
  description = "Example consumer subscription (message ordering enabled)."
  value       = google_pubsub_subscription.example.id
}

output "firestore_iam_condition" {
  description = "The IAM condition expression that holds a roles/datastore.user grant to the relay's database (use it when granting the CLI's users: gcloud projects add-iam-policy-binding ... --condition)."
  value       = "resource.name == \"${local.firestore_database_resource}\""
}

output "function_bundle" {
  description = "The uploaded bundle object (named by its sha256)."
  value       = "gs://${google_storage_bucket.source.name}/${google_storage_bucket_object.bundle.name}"
}

output "function_urls" {
  description = "URLs of the deployed functions, by entry point (poller and reactor require an OIDC token of their invoker accounts; the webhook is public)."
  value       = { for name, fn in google_cloudfunctions2_function.function : local.functions[name].entry_point => fn.service_config[0].uri }
}

output "reactor_subscription" {
  description = "The push subscription delivering successes to on_job_event."
  value       = google_pubsub_subscription.reactor.id
}

output "scheduler_job" {
  description = "The Cloud Scheduler job that runs poll_jobs."
  value       = google_cloud_scheduler_job.poll.id
}

output "service_accounts" {
  description = "Service accounts created, by role (webhook null when webhooks are off; build null when build_service_account is set)."
  value = {
    build     = one(google_service_account.build[*].email)
    poller    = google_service_account.poller.email
    push      = google_service_account.push.email
    reactor   = google_service_account.reactor.email
    scheduler = google_service_account.scheduler.email
    tick_push = google_service_account.tick_push.email
    webhook   = one(google_service_account.webhook[*].email)
  }
}

output "stalled_subscription" {
  description = "Example subscription receiving only batchrelay.job.v1.stalled events (ordered)."
  value       = google_pubsub_subscription.stalled_example.id
}

output "tick_parts" {
  description = "Topic the coordinator tick publishes shard ranges to, and the push subscription delivering them to poll_jobs."
  value = {
    subscription = google_pubsub_subscription.tick_parts.id
    topic        = google_pubsub_topic.tick_parts.id
  }
}

output "webhook_url" {
  description = "URL to register with the Gemini API as the batch webhook endpoint (null when webhooks are off)."
  value       = try(google_cloudfunctions2_function.function["webhook"].service_config[0].uri, null)
}

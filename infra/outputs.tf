output "cli_environment" {
  description = "Settings for running the batch-relay CLI against this deployment (export them, then `batch-relay track NAME`)."
  value = {
    GOOGLE_CLOUD_PROJECT     = var.project_id
    RELAY_COLLECTION         = var.firestore.collection
    RELAY_EVENTS_TOPIC       = google_pubsub_topic.events.name
    RELAY_FIRESTORE_DATABASE = var.firestore.database_id
  }
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

output "function_bundle" {
  description = "The uploaded bundle object (named by its sha256)."
  value       = "gs://${google_storage_bucket.source.name}/${google_storage_bucket_object.bundle.name}"
}

output "function_urls" {
  description = "URLs of the two functions (both require an OIDC token of their invoker account)."
  value = {
    on_job_event = google_cloudfunctions2_function.reactor.service_config[0].uri
    poll_jobs    = google_cloudfunctions2_function.poller.service_config[0].uri
  }
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
  description = "Service accounts created, by role."
  value = {
    poller    = google_service_account.poller.email
    push      = google_service_account.push.email
    reactor   = google_service_account.reactor.email
    scheduler = google_service_account.scheduler.email
  }
}

"""batch-relay's Cloud Functions entry points (contract A1). Thin: decode, call ``batch_relay``, return."""

import functions_framework

from batch_relay import entrypoints


@functions_framework.http
def poll_jobs(request):
    """One poll tick (POST only, from Cloud Scheduler): replies with the tick's JSON summary."""
    return entrypoints.handle_poll(request)


@functions_framework.cloud_event
def on_job_event(cloud_event):
    """Reacts to stateChanged events of succeeded jobs: copies their outputs and announces them."""
    entrypoints.handle_event(cloud_event)


@functions_framework.http
def on_gemini_webhook(request):
    """A signed Gemini API webhook delivery (POST): fetches that batch at once and applies it."""
    return entrypoints.handle_webhook(request)

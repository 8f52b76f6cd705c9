"""The poller: one tick of ``poll_jobs`` — republish, observe (GET and list), commit what changed, publish."""

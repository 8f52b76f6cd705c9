"""The reactor: ``on_job_event`` copies a succeeded job's outputs with its Cloud Storage client, verifies
them, writes the manifest and announces the result."""

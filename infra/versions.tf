# Terraform and provider versions. State lives in a GCS bucket: `terraform init
# -backend-config=bucket=STATE_BUCKET -backend-config=prefix=batch-relay` (see docs/deploy.md).
#
# This repository ships no dependency lock file (.terraform.lock.hcl): only `terraform init` or
# `terraform providers lock` with the providers downloaded can write one, and its checks run without
# them. So each provider is pinned to one minor release (patch releases only): the release whose schema
# tests/test_infra_schema.py holds this configuration against (infra/schema/providers.json, written by
# `make tf-schema` from the provider's prebuilt bindings). A wider range (`~> 8.7`) would let `init`
# pick a later minor release nothing here has checked. Your first `init` writes a lock file with the
# exact versions and checksums: keep it with your deployment (docs/deploy.md, step 7). Move a pin on
# purpose: read the provider's upgrade guides and changelog, regenerate the schema for the new version
# (TF_SCHEMA_BINDINGS in the Makefile), and let the tests say what the configuration must change.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 8.7.0"
    }
    # Only for google_project_service_identity (the Pub/Sub service agent): still beta-only in 8.x.
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 8.7.0"
    }
    # time_sleep: Cloud Monitoring knows a new log-based metric only minutes after it is created.
    time = {
      source  = "hashicorp/time"
      version = "~> 0.13.0"
    }
  }

  backend "gcs" {}
}

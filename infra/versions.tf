# Terraform and provider versions. State lives in a GCS bucket: `terraform init
# -backend-config=bucket=STATE_BUCKET -backend-config=prefix=batch-relay` (see docs/deploy.md).
#
# Providers are pinned to one minor release each (patch releases only) because no dependency lock
# file is shipped: commit the `.terraform.lock.hcl` your first `terraform init` writes, and move a pin
# (and the lock, `terraform init -upgrade`) on purpose, after reading the provider's changelog.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.45.0"
    }
    # Only for google_project_service_identity (the Pub/Sub service agent), which is beta-only in 6.x.
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.45.0"
    }
    # time_sleep: Cloud Monitoring knows a new log-based metric only minutes after it is created.
    time = {
      source  = "hashicorp/time"
      version = "~> 0.13.0"
    }
  }

  backend "gcs" {}
}

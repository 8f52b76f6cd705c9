# Terraform and provider versions. State lives in a GCS bucket: `terraform init
# -backend-config=bucket=STATE_BUCKET -backend-config=prefix=batch-relay` (see docs/deploy.md).

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
  }

  backend "gcs" {}
}

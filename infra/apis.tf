# APIs the deployment uses. Left enabled on destroy: other workloads in the project may rely on them
# (disable_on_destroy = false is the provider's default since 7.0; kept explicit).

locals {
  services = [
    "artifactregistry.googleapis.com", # function images
    "cloudbuild.googleapis.com",       # function builds
    "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com", # 2nd gen functions run on Cloud Run
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ]
}

resource "google_project_service" "apis" {
  for_each = toset(local.services)

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

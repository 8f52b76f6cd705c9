# The Gemini API key stays in Secret Manager (created by you, see docs/deploy.md); Terraform only gets
# its id and lets each function's account read that one secret. The functions receive it as the secret
# environment variable RELAY_GEMINI_API_KEY (functions.tf).

resource "google_secret_manager_secret_iam_member" "gemini" {
  for_each = local.gemini_secret == null ? {} : {
    poller  = google_service_account.poller.member
    reactor = google_service_account.reactor.member
  }

  project   = local.gemini_secret.project_id
  secret_id = local.gemini_secret.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}

# Secrets stay in Secret Manager (created by you, see docs/deploy.md); Terraform only gets their ids and
# lets each function's account read the one secret it needs. The functions receive them as secret
# environment variables (functions.tf):
# - RELAY_GEMINI_API_KEY: the Gemini API key, for every function;
# - RELAY_GEMINI_WEBHOOK_SECRETS: the webhook signing secrets (one secret whose value is a comma list of
#   whsec_... secrets, so a rotation can overlap), for the webhook function only.

resource "google_secret_manager_secret_iam_member" "gemini" {
  for_each = local.gemini_secret == null ? {} : local.function_members

  project   = local.gemini_secret.project_id
  secret_id = local.gemini_secret.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}

resource "google_secret_manager_secret_iam_member" "webhook_signing" {
  count = local.webhook_secret == null ? 0 : 1

  project   = local.webhook_secret.project_id
  secret_id = local.webhook_secret.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.webhook[0].member
}

# Firestore: the database (optional), the composite indexes the code's queries need, and TTL policies
# that delete finished records `firestore.retention_days` after they finish (the code sets `expire_at`).

resource "google_firestore_database" "database" {
  count = var.firestore.create_database ? 1 : 0

  project                 = var.project_id
  name                    = var.firestore.database_id
  location_id             = coalesce(var.firestore.location_id, var.region)
  type                    = "FIRESTORE_NATIVE"
  delete_protection_state = var.firestore.delete_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  # With delete protection on, `terraform destroy` leaves the database (and its data) in place.
  deletion_policy = var.firestore.delete_protection ? "ABANDON" : "DELETE"

  depends_on = [google_project_service.apis]
}

# One resource per entry of shared/store.py COMPOSITE_INDEXES (tests/test_infra.py checks the two agree).
# Poll query: terminal == false AND shard >= a AND shard < b ORDER BY shard.
resource "google_firestore_index" "jobs_terminal_shard" {
  project     = var.project_id
  database    = local.names.firestore_database
  collection  = var.firestore.collection
  query_scope = "COLLECTION"

  fields {
    field_path = "terminal"
    order      = "ASCENDING"
  }
  fields {
    field_path = "shard"
    order      = "ASCENDING"
  }

  depends_on = [google_firestore_database.database, google_project_service.apis]
}

# TTL on `expire_at` for job records and their `transitions` (a collection group). The timestamp is
# never queried, so its single-field indexes are switched off (monotonic values would hotspot).
resource "google_firestore_field" "expire_at" {
  for_each = {
    jobs        = var.firestore.collection
    transitions = "transitions"
  }

  project    = var.project_id
  database   = local.names.firestore_database
  collection = each.value
  field      = "expire_at"

  ttl_config {}
  index_config {}

  depends_on = [google_firestore_database.database, google_project_service.apis]
}

# Firestore: the relay's own database (created by default: write access to it is administration of the
# relay, so iam.tf grants roles/datastore.user on it alone), the composite indexes the code's queries need, and TTL policies
# that delete finished records `firestore.retention_days` after they finish (the code sets `expire_at`).

resource "google_firestore_database" "database" {
  count = var.firestore.create_database ? 1 : 0

  project                 = var.project_id
  name                    = local.names.firestore_database
  location_id             = coalesce(var.firestore.location_id, var.region)
  type                    = "FIRESTORE_NATIVE"
  delete_protection_state = var.firestore.delete_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  # With delete protection on, `terraform destroy` leaves the database (and its data) in place.
  deletion_policy = var.firestore.delete_protection ? "ABANDON" : "DELETE"

  depends_on = [google_project_service.apis]
}

# The composite indexes the code's queries need: one entry per entry of COMPOSITE_INDEXES in
# shared/record/store.py (tests/test_infra.py checks the two agree; change both together).
locals {
  composite_indexes = {
    # Poll query: poll_slot == "1:0" AND shard >= a AND shard < b ORDER BY shard.
    poll_slot_shard = {
      fields = [
        { field_path = "poll_slot", order = "ASCENDING" },
        { field_path = "shard", order = "ASCENDING" },
      ]
      query_scope = "COLLECTION"
    }
  }
}

# Creating an index waits until it is built, and the functions wait for the indexes (functions.tf):
# new code never runs a query whose index does not exist yet.
resource "google_firestore_index" "composite" {
  for_each = local.composite_indexes

  project     = var.project_id
  database    = local.names.firestore_database
  collection  = var.firestore.collection
  query_scope = each.value.query_scope

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path = fields.value.field_path
      order      = fields.value.order
    }
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

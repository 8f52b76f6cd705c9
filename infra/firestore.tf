# Firestore: the relay's own database (created by default: write access to it is administration of the
# relay, so iam.tf grants roles/datastore.user on it alone), the composite indexes the code's queries need,
# the single-field index exemptions of the fields no query reads, and TTL policies that delete finished
# records `firestore.retention_days` after they finish (the code sets `expire_at`).

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

# The composite indexes the code's queries need. tests/test_infra.py reads every query of shared/ (its
# filters and orders, from the code's syntax tree) and checks that each one that needs a composite index
# has it here, and that nothing here is unused.
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

# Single-field index exemptions: by default Firestore indexes every field, every map subfield and every
# array element of every document. These fields are read by no query of the code, and by none that
# docs/record.md shows users, so their indexes are switched off (an empty `index_config`):
# - sequential timestamps written on every poll, lease or change: an indexed field of sequential values
#   caps a collection at 500 writes/s (Firestore "Quotas and limits");
# - blobs no query reads (the outbox's events, a copy's rewrite tokens, a transition's event, the tick's
#   summary): every subfield is an index entry, storage that is paid for;
# - the meta collection's digest `entries` (5 to 7 index entries per watched job: a digest part would be
#   refused at ~5,700 jobs, far below its 1 MiB) and a scope's `settled` ids (one entry per id).
# tests/test_infra.py checks that no query of the code or of docs/record.md uses any of them.
locals {
  unindexed_fields = {
    jobs_polled_at          = { collection = var.firestore.collection, field = "polled_at" }
    jobs_tracked_at         = { collection = var.firestore.collection, field = "tracked_at" }
    jobs_changed_at         = { collection = var.firestore.collection, field = "changed_at" }
    jobs_stalled_at         = { collection = var.firestore.collection, field = "stalled_at" }
    jobs_publish_lease      = { collection = var.firestore.collection, field = "publish_lease" }
    jobs_copy_lease_until   = { collection = var.firestore.collection, field = "copy_lease_until" }
    jobs_copy_rewrites      = { collection = var.firestore.collection, field = "copy_rewrites" }
    jobs_outbox             = { collection = var.firestore.collection, field = "outbox" }
    jobs_resubmit_claim     = { collection = var.firestore.collection, field = "resubmit_claim" }
    transitions_observed_at = { collection = "transitions", field = "observed_at" }
    transitions_event       = { collection = "transitions", field = "event" }
    meta_entries            = { collection = "${var.firestore.collection}_meta", field = "entries" }
    meta_settled            = { collection = "${var.firestore.collection}_meta", field = "settled" }
    meta_summary            = { collection = "${var.firestore.collection}_meta", field = "summary" }
  }
}

resource "google_firestore_field" "unindexed" {
  for_each = local.unindexed_fields

  project    = var.project_id
  database   = local.names.firestore_database
  collection = each.value.collection
  field      = each.value.field

  index_config {}

  depends_on = [google_firestore_database.database, google_project_service.apis]
}

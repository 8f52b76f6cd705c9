"""Google Cloud's production limits that the emulators do not enforce, each held by the code: documents
measured by Firestore's documented rules (``batch_relay.record.limits``), the sizes of what the API
sends, of destinations, of batch reads, and the publisher's endpoint. docs/reliability.md, "Limits of
Google Cloud and how each is held", lists them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from batch_relay.record import digest as digests
from batch_relay.record import limits
from batch_relay.record.digest import Digest, Entry, Part

REPO = Path(__file__).resolve().parent.parent
META = "batch_jobs_meta"
VERTEX_SCOPE = "vertex:projects/my-project/locations/us-central1"


def _meta_exemptions() -> set[str]:
    from devtools.hcl import load_terraform
    from devtools.queries import META as META_KEY
    from devtools.queries import declared_exemptions

    return declared_exemptions(load_terraform(REPO / "infra")).get(META_KEY, set())


# -- the measures, on the examples of Google's pages ----------------------------------------------------------

def test_document_size_follows_the_storage_size_page():
    # "Storage size calculations": users/jeff/tasks/my_task_id with these four fields is 147 bytes
    fields = {"type": "Personal", "done": False, "priority": 1, "description": "Learn Cloud Firestore"}
    assert limits.document_size(["users", "jeff", "tasks", "my_task_id"], fields) == 147
    assert limits.string_size("tasks") == 6 and limits.value_size(dt.datetime.now(dt.UTC)) == 8


def test_index_entries_follow_the_index_overview():
    # a scalar: ascending + descending; a map: both on the map, and its subfields alike; an array: both on
    # the array, and one array-contains entry per element
    doc = {"city": "SF", "temperatures": {"summer": 67, "winter": 55}, "neighborhoods": ["a", "b", "c"]}
    assert limits.index_entries(doc) == 2 + (2 + 2 + 2) + (2 + 3)
    assert limits.index_entries(doc, exempt={"temperatures"}) == 2 + 5  # an exempt map: its subfields too
    assert limits.index_entries(doc, exempt={"temperatures.summer"}, composite=1) == 2 + 4 + 5 + 1


# -- 1. a watched scope's digest parts ------------------------------------------------------------------------

def _full_part(key_bytes: int, name_bytes: int, jobs: int) -> Part:
    part = Part({})
    for i in range(jobs):
        key = str(i).rjust(key_bytes, "9")
        part.entries[key] = Entry(2**62 + i, 10**6, 1.7e9 + i, 10**6 - 1, "n" * name_bytes)
    return part


@pytest.mark.parametrize(("key_bytes", "name_bytes"), [(19, 0), (128, 0), (128, 200)])
def test_a_digest_part_is_held_to_one_mib_and_forty_thousand_index_entries(key_bytes, name_bytes):
    """Vertex AI job ids are 19 digits; 128-character ids, and entries that keep the record's other form of
    the name (a project number), are the worst cases. Whatever the scope holds, the part written is within
    both limits — counted with the exemptions infra/firestore.tf declares."""
    part = _full_part(key_bytes, name_bytes, 40_000)
    doc_id = digests.part_id(VERTEX_SCOPE, 3)
    part.reconciled_at = dt.datetime.now(dt.UTC)
    left_out = part.fit(VERTEX_SCOPE, [META, doc_id])
    assert left_out > 0 and part.full
    doc = part.to_doc(VERTEX_SCOPE)
    assert limits.document_size([META, doc_id], doc) <= limits.MAX_DOCUMENT_BYTES
    assert limits.index_entries(doc, exempt=_meta_exemptions()) <= limits.MAX_INDEX_ENTRIES
    # what the exemption of `entries` is for: indexed, every job would cost 7 of the 40,000 (at Vertex AI's
    # ids, a full part would be refused)
    assert limits.index_entries(doc) > limits.MAX_INDEX_ENTRIES or key_bytes > 19
    assert limits.index_entries(doc) - limits.index_entries(doc, exempt={"entries"}) == 2 + 7 * len(part.entries)


def test_the_documented_capacity_of_a_scope():
    """docs/watching.md: about 19,000 jobs a part at Vertex AI's 19-digit ids (~300,000 a scope), about
    6,400 (~100,000) at 128-character ids."""
    doc_id = digests.part_id(VERTEX_SCOPE, 0)
    vertex = _full_part(19, 0, 30_000)
    vertex.fit(VERTEX_SCOPE, [META, doc_id])
    assert 19_000 <= len(vertex.entries) <= 20_000
    assert 300_000 <= len(vertex.entries) * digests.PARTS
    long_ids = _full_part(128, 0, 30_000)
    long_ids.fit(VERTEX_SCOPE, [META, doc_id])
    assert 6_200 <= len(long_ids.entries) <= 6_600 and len(long_ids.entries) * digests.PARTS >= 99_000


def test_a_full_part_takes_no_new_job_until_one_leaves():
    dig = Digest(VERTEX_SCOPE, {p: Part({}) for p in range(digests.PARTS)})
    key = "1234567890123456789"
    part = dig.parts[digests.part_of(key)]
    part.full = True
    dig.put(key, Entry(1, 1, None))
    assert dig.get(key) is None and not part.dirty
    other = next(k for k in (f"k{i}" for i in range(1000)) if digests.part_of(k) == digests.part_of(key))
    part.entries[other] = Entry(1, 1, None)
    dig.drop(other)
    assert not part.full
    dig.put(key, Entry(1, 1, None))
    assert dig.get(key) == Entry(1, 1, None) and part.dirty
    # read back, a full part stays full
    again = Part.from_doc(Part({}, full=True).to_doc(VERTEX_SCOPE), None)
    assert again.full


# -- 12. settled, API strings, destinations, batch reads, the publisher --------------------------------------

def test_the_settled_list_is_bounded_by_size_as_well_as_count():
    from batch_relay.poller.watch import SETTLED_MAX, SETTLED_MAX_BYTES, bound_settled

    long_ids = {f"{i:0128d}" for i in range(SETTLED_MAX)}  # 15,000 ids of 128 characters: 1.85 MiB
    kept = bound_settled(long_ids)
    stored = sum(limits.string_size(k) for k in kept)
    assert stored <= SETTLED_MAX_BYTES and kept == set(sorted(long_ids)[:len(kept)])
    scope_doc = {"kind": "scope", "scope": VERTEX_SCOPE, "started_at": dt.datetime.now(dt.UTC),
                 "window_at": dt.datetime.now(dt.UTC), "retired": False, "settled": sorted(kept)}
    assert limits.document_size([META, "scope-x" * 20], scope_doc) < limits.MAX_DOCUMENT_BYTES
    short_ids = {str(i) for i in range(3 * SETTLED_MAX)}
    kept = bound_settled(short_ids)
    assert len(kept) == SETTLED_MAX  # indexed or not, the list stays far below 40,000 index entries
    assert limits.index_entries({**scope_doc, "settled": sorted(kept)}) < limits.MAX_INDEX_ENTRIES


def test_api_strings_are_cut_to_their_documented_size():
    from batch_relay.batchapi.wire import DISPLAY_NAME_MAX_BYTES, ERROR_MESSAGE_MAX_BYTES, JobStatus

    huge = "é" * 600_000  # 1.2 MB of two-byte characters
    status = JobStatus.from_vertex({
        "name": "projects/p/locations/us-central1/batchPredictionJobs/1", "state": "JOB_STATE_FAILED",
        "displayName": huge, "error": {"code": 3, "message": huge}})
    assert status.display_name is not None and status.error is not None
    assert len(status.display_name.encode()) <= DISPLAY_NAME_MAX_BYTES and status.display_name.endswith("…")
    assert len(status.error["message"].encode()) <= ERROR_MESSAGE_MAX_BYTES
    assert status.error["message"].startswith("é" * 100)  # no character split
    gemini = JobStatus.from_gemini({"name": "batches/x", "metadata": {
        "name": "batches/x", "state": "BATCH_STATE_RUNNING", "displayName": huge}, "error": {"message": huge}})
    assert len(gemini.display_name.encode()) <= DISPLAY_NAME_MAX_BYTES
    assert len(gemini.error["message"].encode()) <= ERROR_MESSAGE_MAX_BYTES
    lone = JobStatus.from_vertex({"name": "projects/p/locations/l/batchPredictionJobs/3", "state": "JOB_STATE_RUNNING",
                                  "displayName": "\ud800" * 2000})
    assert len(lone.display_name.encode("utf-8", "surrogatepass")) <= DISPLAY_NAME_MAX_BYTES  # as it came, cut
    short = JobStatus.from_vertex({"name": "projects/p/locations/l/batchPredictionJobs/2",
                                   "state": "JOB_STATE_RUNNING", "displayName": "évals"})
    assert short.display_name == "évals"


def test_a_destination_leaves_room_for_the_output_names_under_it():
    from batch_relay.errors import UsageError
    from batch_relay.reactor.plans import MANIFEST, RESPONSES
    from batch_relay.record.jobs import MAX_OBJECT_NAME_BYTES, MAX_PREFIX_BYTES, OUTPUT_NAME_RESERVE_BYTES
    from batch_relay.record.store import check_track_options

    # the relay's own names, and Vertex AI's prediction-{display name <= 128}-{time}/predictions_00001.jsonl
    vertex = f"prediction-{'m' * 128}-2026-01-01T00:00:00.000000Z/predictions_00001.jsonl"
    for name in (MANIFEST, RESPONSES, vertex):
        assert len(name.encode()) <= OUTPUT_NAME_RESERVE_BYTES
    assert MAX_PREFIX_BYTES + 1 + OUTPUT_NAME_RESERVE_BYTES == MAX_OBJECT_NAME_BYTES
    fits = "ü" * (MAX_PREFIX_BYTES // 2)
    assert check_track_options(f"gs://bucket/{fits}", None)[0] == f"gs://bucket/{fits}"
    with pytest.raises(UsageError, match="object prefix"):
        check_track_options(f"gs://bucket/{fits}é", None)
    with pytest.raises(UsageError, match="object prefix"):
        check_track_options(f"gs://bucket/{'a/' * 400}b", None)


def test_a_batch_read_stays_below_the_request_limit():
    """Firestore document paths are at most a few KiB here: the project, the database (63), the collection
    (255 by the settings' rule, and its meta collection), and a document id (1,500 bytes at most)."""
    longest = len(f"projects/{'p' * 30}/databases/{'d' * 63}/documents/{'c' * 260}/untracked/jobs/"
                  f"{'x' * limits.MAX_DOCUMENT_ID_BYTES}")
    assert limits.READ_BATCH * (longest + 16) < limits.MAX_REQUEST_BYTES
    assert [len(b) for b in limits.chunks(range(2 * limits.READ_BATCH + 1))] == [300, 300, 1]


def test_the_publisher_uses_the_configured_regional_endpoint(monkeypatch):
    """Ordering holds per region: RELAY_PUBSUB_ENDPOINT (Terraform sets the deployment's region's) is the
    publisher's endpoint; the emulator, when set, wins."""
    import google.auth
    from google.auth.credentials import AnonymousCredentials

    from batch_relay import wiring
    from batch_relay.settings import Settings

    settings = Settings.from_env({"GOOGLE_CLOUD_PROJECT": "p",
                                  "RELAY_PUBSUB_ENDPOINT": "europe-west4-pubsub.googleapis.com:443"})
    assert settings.pubsub_endpoint == "europe-west4-pubsub.googleapis.com:443"
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    monkeypatch.setattr(google.auth, "default", lambda *a, **k: (AnonymousCredentials(), "p"))
    publisher = wiring.make_publisher(settings)
    assert publisher._transport._host == "europe-west4-pubsub.googleapis.com:443"
    default = wiring.make_publisher(Settings(project="p"))
    assert default._transport._host == "pubsub.googleapis.com:443"
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:8681")
    assert wiring.make_publisher(settings)._transport._host == "127.0.0.1:8681"


@pytest.mark.parametrize("value", ["https://x.googleapis.com", "host:port", "a b", "-x.com"])
def test_a_bad_pubsub_endpoint_is_refused(value):
    from batch_relay.errors import SettingsError
    from batch_relay.settings import Settings

    with pytest.raises(SettingsError, match="RELAY_PUBSUB_ENDPOINT"):
        Settings.from_env({"GOOGLE_CLOUD_PROJECT": "p", "RELAY_PUBSUB_ENDPOINT": value})

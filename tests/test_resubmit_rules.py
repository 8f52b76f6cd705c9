"""The rules of ``resubmit`` as pure functions (no emulator, no network): the claim and the retry numbers
(``record.machine``), and what a plan sends and where it goes (``resubmits.plan``)."""

from __future__ import annotations

import datetime as dt

import pytest

from batch_relay.batchapi.names import JobName
from batch_relay.errors import UsageError
from batch_relay.record import machine
from batch_relay.record.machine import ResubmitStep
from batch_relay.record.model import CopyState, CopyStatus, JobRecord, ResubmitClaim
from batch_relay.resubmits import plan
from batch_relay.settings import Settings

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
S = Settings(project="p")
VERTEX = "projects/p/locations/europe-west4/batchPredictionJobs/123"


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def rec(name: str = "batches/o1", **kw) -> JobRecord:
    return JobRecord.new(JobName.parse(name), destination=None, labels={}, now=T0, tracking_id="tid").replace(**kw)


def begin(record, root=None, *, request_id="r1", again=False, now=T0):
    return machine.begin_resubmit(record, root, record.name if record else "batches/x", request_id=request_id,
                                  again=again, now=now, lease_s=300)


# -- the claim and the retry numbers -------------------------------------------------------------------------

def test_a_first_resubmit_counts_on_the_job_itself_and_claims_it():
    start, change = begin(rec())
    assert (start.step, start.n, start.root, start.root_change) == (ResubmitStep.FRESH, 1, "batches/o1", None)
    assert change.record.resubmits == 1 and change.record.resubmit_claim == ResubmitClaim("r1", 1, at(300), T0)
    assert change.record.public() == rec().public()  # the claim and the counter are internal


def test_a_retry_of_a_retry_takes_the_lineage_s_next_number_on_its_first_job():
    root = rec(resubmits=2, resubmitted_as="batches/r2")
    child = rec("batches/r1", parent="batches/o1", lineage="batches/o1")
    start, change = begin(child, root)
    assert (start.step, start.n, start.root) == (ResubmitStep.FRESH, 3, "batches/o1")
    assert start.root_change.record.resubmits == 3 and start.root_change.record.resubmitted_as == "batches/r2"
    assert change.record.resubmits == 0 and change.record.resubmit_claim.n == 3
    gone, _ = begin(child, None)  # the first job is no longer tracked: the retry starts a lineage of its own
    assert (gone.n, gone.root, gone.root_change) == (1, "batches/r1", None)


def test_a_resubmitted_job_answers_its_batch_unless_again():
    done = rec(resubmits=1, resubmitted_as="batches/r1")
    assert begin(done) == (machine.ResubmitStart(ResubmitStep.EXISTING, existing="batches/r1", root="batches/o1"), None)
    start, change = begin(done, again=True)
    assert (start.step, start.n, change.record.resubmits) == (ResubmitStep.FRESH, 2, 2)


def test_a_claim_under_way_is_busy_until_it_runs_out_then_taken_over_with_its_number():
    held = rec(resubmits=1, resubmit_claim=ResubmitClaim("other", 1, at(300), T0))
    start, change = begin(held, now=at(100), again=True)
    assert (start.step, start.n, start.claim.id, change) == (ResubmitStep.BUSY, 1, "other", None)
    start, change = begin(held, now=at(300), again=True)  # ran out: finished, not started again (not even --again)
    assert (start.step, start.n) == (ResubmitStep.RESUME, 1)
    assert change.record.resubmit_claim == ResubmitClaim("r1", 1, at(600), T0) and change.record.resubmits == 1
    with pytest.raises(UsageError, match="not tracked"):
        begin(None)


def test_only_the_owner_renews_or_gives_back_a_claim_and_giving_back_keeps_the_number():
    held = rec(resubmits=1, resubmit_claim=ResubmitClaim("r1", 1, at(300), T0))
    assert machine.renew_resubmit(held, "r2", at(10), 300) == (False, None)
    assert machine.release_resubmit(held, "r2", at(10)) == (False, None)
    assert machine.renew_resubmit(held, "r1", at(10), 300).change.record.resubmit_claim.until == at(310)
    released = machine.release_resubmit(held, "r1", at(10)).change.record
    assert released.resubmit_claim == ResubmitClaim("r1", 1, at(10), T0)
    assert begin(released, now=at(10), request_id="r3").result.step == ResubmitStep.RESUME


def test_finishing_links_the_job_and_tracks_the_batch_with_its_parent():
    held = rec(resubmits=1, labels={"team": "evals"}, resubmit_claim=ResubmitClaim("r1", 1, at(300), T0))
    batch = JobName.parse("batches/new1")
    done, change = machine.finish_resubmit(held, None, parent=held.name, batch=batch, n=1, root="batches/o1",
                                           destination="gs://b/x/retry-1", labels={"team": "evals"}, now=at(5))
    assert done.linked and done.created and change.record.resubmitted_as == "batches/new1"
    assert change.record.resubmit_claim is None
    child = done.child_change.record
    assert (child.name, child.parent, child.lineage, child.tracked_by, child.version) == (
        "batches/new1", "batches/o1", "batches/o1", "track", 0)
    assert child.destination == "gs://b/x/retry-1" and child.labels == {"team": "evals"} and child.tracked_at == at(5)


def test_finishing_an_older_number_tracks_the_batch_but_leaves_the_newer_claim_alone():
    newer = rec(resubmits=2, resubmit_claim=ResubmitClaim("r2", 2, at(300), T0))
    done, change = machine.finish_resubmit(newer, None, parent=newer.name, batch=JobName.parse("batches/n1"), n=1,
                                           root="batches/o1", destination=None, labels={}, now=at(5))
    assert change is None and not done.linked and done.child_change.record.parent == "batches/o1"


def test_a_batch_a_watched_scope_found_first_gets_only_what_it_lacks():
    found = rec("batches/n1", tracked_by="watch", labels={"team": "mine"}, state="JOB_STATE_RUNNING", version=1)
    linked = rec(resubmitted_as="batches/n1", resubmits=1)  # another resubmit linked it already
    done, change = machine.finish_resubmit(linked, found, parent="batches/o1", batch=JobName.parse("batches/n1"),
                                           n=1, root="batches/o1", destination="gs://b/x/retry-1",
                                           labels={"team": "evals", "run": "7"}, now=at(5))
    assert change is None and done.linked and not done.created
    after = done.child_change.record
    assert after.parent == "batches/o1" and after.lineage == "batches/o1" and after.destination == "gs://b/x/retry-1"
    assert after.labels == {"team": "mine", "run": "7"} and after.version == 1 and after.tracked_by == "watch"


def test_the_record_reads_and_writes_the_resubmit_fields():
    record = rec(parent="batches/p", resubmitted_as="batches/c", lineage="batches/p", resubmits=4,
                 resubmit_claim=ResubmitClaim("r", 2, at(1), T0))
    assert JobRecord.from_doc(record.to_doc()) == record
    old = {k: v for k, v in record.to_doc().items()
           if k not in ("parent", "resubmitted_as", "lineage", "resubmits", "resubmit_claim")}
    again = JobRecord.from_doc(old)
    assert (again.parent, again.resubmitted_as, again.lineage, again.resubmits, again.resubmit_claim) == (
        None, None, "", 0, None)
    assert {"parent", "resubmitted_as"} <= set(record.public()) and "resubmit_claim" not in record.public()


# -- the plan ----------------------------------------------------------------------------------------------

def done_copy(record: JobRecord, uri: str = "gs://dest/x") -> JobRecord:
    return record.replace(state="JOB_STATE_SUCCEEDED", terminal=True, copy=CopyState(status=CopyStatus.DONE, uri=uri))


def test_failed_jsonl_is_beside_the_copy_and_only_once_the_copy_is_done():
    assert plan.failed_uri(done_copy(rec())) == "gs://dest/x/failed.jsonl"
    with pytest.raises(UsageError, match="known once it has ended"):
        plan.failed_uri(rec(state="JOB_STATE_RUNNING"))
    with pytest.raises(UsageError, match="not copied yet"):
        plan.failed_uri(rec(state="JOB_STATE_SUCCEEDED", terminal=True))
    with pytest.raises(UsageError, match="without outputs"):
        plan.failed_uri(rec(state="JOB_STATE_FAILED", terminal=True))
    with pytest.raises(UsageError, match="recopy"):
        plan.failed_uri(rec(state="JOB_STATE_SUCCEEDED", terminal=True,
                            copy=CopyState(status=CopyStatus.FAILED, error={"kind": "not_allowed"})))
    with pytest.raises(UsageError, match="BigQuery"):
        plan.failed_uri(rec(state="JOB_STATE_SUCCEEDED", terminal=True,
                            copy=CopyState(status=CopyStatus.NOT_APPLICABLE)))


def test_retry_destinations_and_vertex_output_folders():
    assert plan.retry_destination(rec(destination="gs://bkt/evals/nightly"), 2, S) == "gs://bkt/evals/nightly/retry-2"
    assert plan.retry_destination(rec(), 1, S) is None
    default = Settings(project="p", default_destination="gs://relay/out")
    assert plan.retry_destination(rec(), 3, default) == "gs://relay/out/gemini/o1/retry-3"
    with pytest.raises(UsageError, match="767"):
        plan.retry_destination(rec(destination="gs://bkt/" + "x" * 760), 1, S)
    root = rec(VERTEX, output={"gcs_uri": "gs://out/captions/prediction-model-2026-01-05T10:00:00.000000Z"})
    assert plan.vertex_output_prefix(root, root, 1) == "gs://out/captions/retry-1"
    flat = rec(VERTEX, output={"gcs_uri": "gs://out/prediction-model-x"})
    assert plan.vertex_output_prefix(flat, flat, 4) == "gs://out/retry-4"
    with pytest.raises(UsageError, match="no Cloud Storage output"):
        plan.vertex_output_prefix(rec(VERTEX, output={"bigquery_uri": "bq://p.d.t"}), rec(VERTEX), 1)


def test_names_labels_and_models_of_a_retry():
    vertex = rec(VERTEX, display_name="captions " + "x" * 200)
    assert plan.vertex_labels(vertex, 2) == {"batch_relay_retry_of": "123", "batch_relay_retry": "2"}
    odd = rec("projects/p/locations/l/batchPredictionJobs/Job_UPPER")
    assert plan.vertex_labels(odd, 1)["batch_relay_retry_of"] != "Job_UPPER"  # not a label value: a hash of the name
    assert len(plan.vertex_labels(odd, 1)["batch_relay_retry_of"]) == 16
    assert plan.vertex_display_name(vertex, 2).startswith("retry-2 of captions") and \
        len(plan.vertex_display_name(vertex, 2)) == 128
    assert plan.gemini_display_name(rec(), 1) == "retry-1 of batches/o1"
    for model in ("models/gemini-2.5-flash", "publishers/google/models/gemini-2.5-flash",
                  "projects/p/locations/l/publishers/google/models/gemini-2.5-flash"):
        assert plan.plain_model(model, "x") == "gemini-2.5-flash"
    with pytest.raises(UsageError, match="no model"):
        plan.plain_model(None, "x")
    with pytest.raises(UsageError, match="not a Google model"):
        plan.plain_model("projects/p/locations/l/models/1234567", "x")


def test_vertex_limits():
    plan.check_limits(rec(VERTEX).api, plan.FailedInput("gs://b/f", 200_000, 10))
    plan.check_limits(rec().api, plan.FailedInput("gs://b/f", 300_000, 10))  # the Gemini API: not these limits
    with pytest.raises(UsageError, match="200000"):
        plan.check_limits(rec(VERTEX).api, plan.FailedInput("gs://b/f", 200_001, 10))
    with pytest.raises(UsageError, match="1 GB"):
        plan.check_limits(rec(VERTEX).api, plan.FailedInput("gs://b/f", 1, 1_000_000_001))

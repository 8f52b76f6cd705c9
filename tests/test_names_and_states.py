import datetime as dt
import json

import pytest

from batch_relay.batchapi import states
from batch_relay.batchapi.listing import parse_page
from batch_relay.batchapi.names import Api, JobName, ProjectMatch, doc_id, project_match
from batch_relay.batchapi.scopes import WatchScope
from batch_relay.errors import UsageError
from batch_relay.events import event as events
from batch_relay.record.model import JobRecord


def test_gemini_and_vertex_names():
    g = JobName.parse("batches/abc-123")
    assert (g.api, g.job_id, g.region_key) == ("gemini", "abc-123", "gemini")
    v = JobName.parse("projects/my-proj/locations/us-central1/batchPredictionJobs/456")
    assert (v.api, v.project, v.location, v.job_id) == ("vertex", "my-proj", "us-central1", "456")
    assert v.region_key == "vertex:us-central1"
    assert doc_id(v.name) == "projects%2Fmy-proj%2Flocations%2Fus-central1%2FbatchPredictionJobs%2F456"


@pytest.mark.parametrize("name", [
    "", "batches/", "batches/a/b", "batch/abc", "models/gemini", "projects/p/locations/l/customJobs/1",
    "projects/p/locations/l/batchPredictionJobs/", "projects/P/locations/l/batchPredictionJobs/1",
    "batches/../x", "batches/a b", "https://x/batches/1", 42, None,
])
def test_malformed_names_are_refused_with_a_clear_error(name):
    with pytest.raises(UsageError, match="job name|must be a string"):
        JobName.parse(name)


@pytest.mark.parametrize(("named", "known", "match"), [
    ("my-proj", ("my-proj",), ProjectMatch.SAME),
    ("424242", ("my-proj", "424242"), ProjectMatch.SAME),  # a number the project is already known by
    ("424242", ("my-proj",), ProjectMatch.MAYBE),  # Vertex may name my-proj by its number
    ("424242", ("my-proj", "111"), ProjectMatch.MAYBE),
    ("other", ("my-proj",), ProjectMatch.OTHER),  # an id is never another id
    ("my-proj", ("424242",), ProjectMatch.OTHER),  # only the named side may be the API's number
    (None, ("my-proj",), ProjectMatch.OTHER),
])
def test_vertex_may_name_a_project_by_its_number(named, known, match):
    assert project_match(named, *known) is match


def vertex(project, job_id="7", location="us-central1"):
    return JobName.parse(f"projects/{project}/locations/{location}/batchPredictionJobs/{job_id}")


def test_the_project_number_rule_where_it_is_used():
    by_id, by_number = vertex("my-proj"), vertex("424242")
    # the same job: the number may be on either side (the reply's or the record's)
    assert by_id.same_job(by_number) and by_number.same_job(by_id) and by_id.same_job(by_id)
    assert not by_id.same_job(vertex("other-proj")) and not by_id.same_job(vertex("my-proj", job_id="8"))
    assert not by_id.same_job(vertex("424242", location="europe-west4"))
    # a scope written by id covers names by number (its list tells); one written by number does not cover ids
    scope = WatchScope.parse("vertex:projects/my-proj/locations/us-central1")
    assert scope.covers(by_id) and scope.covers(by_number) and not scope.covers(vertex("other-proj"))
    assert not WatchScope.parse("vertex:projects/424242/locations/us-central1").covers(by_id)
    # a list page keeps the items its scope covers
    page = parse_page(scope, {"batchPredictionJobs": [{"name": by_number.name}, {"name": by_id.name},
                                                      {"name": vertex("other-proj").name}]})
    assert [item.name for item in page.items] == [by_number.name, by_id.name] and page.rejected == 1


@pytest.mark.parametrize(("wire", "normal"), [
    ("BATCH_STATE_RUNNING", "JOB_STATE_RUNNING"),
    ("JOB_STATE_PARTIALLY_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED"),
    (None, "JOB_STATE_UNSPECIFIED"),
])
def test_states_are_normalized(wire, normal):
    assert states.normalize(wire) == normal


def test_terminal_set():
    assert states.TERMINAL == {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
                               "JOB_STATE_EXPIRED", "JOB_STATE_PARTIALLY_SUCCEEDED"}
    assert not states.is_terminal("JOB_STATE_PAUSED")


@pytest.mark.parametrize("text", ["SUCCEEDED", "JOB_STATE_SUCCEEDED", "BATCH_STATE_SUCCEEDED", "succeeded"])
def test_user_states(text):
    assert states.parse_user_state(text) == "JOB_STATE_SUCCEEDED"


def test_unknown_user_state():
    with pytest.raises(UsageError, match="unknown state"):
        states.parse_user_state("DONE")


def test_known_states_are_members_and_unknown_ones_pass_through_normalized():
    assert states.normalize("running") is states.JobState.RUNNING
    assert states.normalize("BATCH_STATE_PARTIALLY_SUCCEEDED") is states.JobState.PARTIALLY_SUCCEEDED
    future = states.normalize(" batch_state_frobnicating ")
    assert future == "JOB_STATE_FROBNICATING" and type(future) is str
    assert states.stored("JOB_STATE_FROBNICATING") == "JOB_STATE_FROBNICATING"
    assert states.stored("JOB_STATE_QUEUED") is states.JobState.QUEUED
    assert states.stored(None) is states.stored("") is states.JobState.UNSPECIFIED
    assert JobName.parse("batches/x").api is Api.GEMINI and WatchScope.parse("gemini").api is Api.GEMINI


@pytest.mark.parametrize("state", ["RUNNING", "FROBNICATING"])
def test_api_and_state_reach_firestore_json_and_pubsub_as_plain_strings(state):
    now = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    job = JobName.parse("projects/p/locations/us-central1/batchPredictionJobs/7")
    record = JobRecord.new(job, destination=None, labels={}, now=now).replace(state=states.normalize(state))
    full = f"JOB_STATE_{state}"
    for view in (record.to_doc(), record.public()):
        assert (view["api"], view["state"]) == ("vertex", full)
        assert type(view["api"]) is str and type(view["state"]) is str
    event = events.state_changed(record, states.JobState.UNSPECIFIED, "//src", now)
    assert {k: event.attributes[k] for k in ("api", "state", "previous_state")} == {
        "api": "vertex", "state": full, "previous_state": "JOB_STATE_UNSPECIFIED"}
    assert all(type(v) is str for v in event.attributes.values())
    data = json.loads(event.data)
    assert (data["state"], data["previous_state"], data["job"]["api"]) == (full, "JOB_STATE_UNSPECIFIED", "vertex")
    back = JobRecord.from_doc(record.to_doc())
    assert back == record and back.api is Api.VERTEX
    assert (back.state is states.JobState.RUNNING) == (state == "RUNNING")

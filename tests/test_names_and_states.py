import pytest

from batch_relay.batchapi import states
from batch_relay.batchapi.names import JobName, doc_id
from batch_relay.errors import UsageError


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

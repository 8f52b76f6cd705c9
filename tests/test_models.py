import datetime as dt

import pytest

from batch_relay.batchapi.wire import JobStatus, parse_timestamp
from batch_relay.errors import BadResponseError

GEMINI = {
    "name": "batches/abc",
    "metadata": {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
        "name": "batches/abc", "model": "models/gemini-2.5-flash", "displayName": "nightly",
        "state": "BATCH_STATE_SUCCEEDED", "createTime": "2025-12-03T17:23:06.004734302Z",
        "endTime": "2025-12-03T18:00:00Z", "futureField": {"x": 1},
        "batchStats": {"requestCount": "3", "successfulRequestCount": "2", "pendingRequestCount": "1"},
        "output": {"responsesFile": "files/batch-abc"},
    },
    "done": True,
    "response": {"@type": "x", "responsesFile": "files/batch-abc"},
}
VERTEX = {
    "name": "projects/p/locations/us-central1/batchPredictionJobs/123", "displayName": "d",
    "model": "publishers/google/models/gemini-2.5-flash", "state": "JOB_STATE_RUNNING",
    "outputInfo": {"gcsOutputDirectory": "gs://out/x/prediction-model-2025/"},
    "completionStats": {"successfulCount": "10", "failedCount": "1", "incompleteCount": "-1"},
    "createTime": "2025-09-19T21:26:51.569037Z", "labels": {"team": "a"}, "unknown": [1],
}


def test_gemini_operation_is_parsed():
    s = JobStatus.from_gemini(GEMINI)
    assert (s.name, s.api, s.state, s.terminal) == ("batches/abc", "gemini", "JOB_STATE_SUCCEEDED", True)
    assert s.completion_stats == {"successful": 2, "failed": 0, "incomplete": 1}  # omitted zero -> 0
    assert s.output == {"file_name": "files/batch-abc"}
    assert s.create_time == dt.datetime(2025, 12, 3, 17, 23, 6, 4734, tzinfo=dt.UTC)
    assert s.error is None


def test_gemini_failed_batch_has_top_level_error_and_inline_results():
    body = {"name": "batches/x", "metadata": {"name": "batches/x", "state": "BATCH_STATE_CANCELLED",
            "output": {"inlinedResponses": {"inlinedResponses": [{"response": {}}, {"error": {"code": 3}}]}}},
            "done": True, "error": {"code": 1, "message": "cancelled"}}
    s = JobStatus.from_gemini(body)
    assert s.error == {"code": 1, "message": "cancelled"}
    assert s.output == {"inlined_count": 2} and s.has_inline_responses
    assert s.completion_stats is None


def test_vertex_resource_is_parsed():
    s = JobStatus.from_vertex(VERTEX)
    assert s.state == "JOB_STATE_RUNNING" and not s.terminal
    assert s.completion_stats == {"successful": 10, "failed": 1, "incomplete": None}
    assert s.output == {"gcs_uri": "gs://out/x/prediction-model-2025"}
    assert s.labels == {"team": "a"}


def test_vertex_bigquery_output():
    s = JobStatus.from_vertex({**VERTEX, "outputInfo": {"bigqueryOutputTable": "bq://p.d.t"}})
    assert s.output == {"bigquery_uri": "bq://p.d.t"}


@pytest.mark.parametrize("body", [
    [], "text", {"metadata": [1, 2]}, {"name": "batches/a", "metadata": {"state": 42}},
    {"name": "batches/a", "metadata": {"state": "not a state!"}},
    {"name": "batches/a", "metadata": {"batchStats": {"successfulRequestCount": "1e3"}}},
    {"name": "batches/a", "metadata": {"createTime": "yesterday"}},
    {"metadata": {}},
])
def test_garbage_is_a_bad_response(body):
    with pytest.raises(BadResponseError):
        JobStatus.from_gemini(body)


def test_timestamp_offsets_and_nanos():
    assert parse_timestamp("2025-01-01T01:00:00.123456789+01:00", "t") == dt.datetime(2025, 1, 1, 0, 0, 0, 123456,
                                                                                      tzinfo=dt.UTC)
    assert parse_timestamp(None, "t") is None

import pytest

from shared.errors import SettingsError
from shared.settings import Settings, normalize_destination

BASE = {"GOOGLE_CLOUD_PROJECT": "p1"}


def test_defaults_match_the_contract():
    s = Settings.from_env(BASE)
    assert (s.project, s.database, s.collection) == ("p1", "(default)", "batch_jobs")
    assert s.events_topic == "batch-job-events"
    assert s.gemini_base_url == "https://generativelanguage.googleapis.com"
    assert s.vertex_base_url is None and s.default_destination is None and s.allowed_buckets is None
    assert s.poll_concurrency == 32
    assert s.meta_collection == "batch_jobs_meta"
    assert s.event_source == "//batch-relay/projects/p1"


def test_values_are_parsed():
    s = Settings.from_env({**BASE, "RELAY_POLL_CONCURRENCY": "64", "RELAY_ALLOWED_BUCKETS": "out-a, out-b",
                           "RELAY_DEFAULT_DESTINATION": "gs://out-a/runs/", "RELAY_VERTEX_BASE_URL":
                           "https://{location}-aiplatform.example.com/"})
    assert s.poll_concurrency == 64
    assert s.allowed_buckets == frozenset({"out-a", "out-b"})
    assert s.default_destination == "gs://out-a/runs"
    assert s.vertex_base_url == "https://{location}-aiplatform.example.com"


@pytest.mark.parametrize(("var", "value"), [
    ("RELAY_POLL_CONCURRENCY", "many"),
    ("RELAY_POLL_CONCURRENCY", "0"),
    ("RELAY_GEMINI_BASE_URL", "ftp://x"),
    ("RELAY_GEMINI_BASE_URL", "generativelanguage.googleapis.com"),
    ("RELAY_DEFAULT_DESTINATION", "s3://bucket/x"),
    ("RELAY_DEFAULT_DESTINATION", "gs://UPPER/x"),
    ("RELAY_ALLOWED_BUCKETS", "ok-bucket,bad bucket"),
    ("RELAY_ALLOWED_BUCKETS", " , "),
    ("RELAY_TICK_DEADLINE_S", "-1"),
    ("RELAY_COLLECTION", "a/b"),
    ("STORAGE_EMULATOR_HOST", "127.0.0.1:4443"),
])
def test_bad_values_name_the_variable(var, value):
    with pytest.raises(SettingsError) as info:
        Settings.from_env({**BASE, var: value})
    message = str(info.value)
    assert var in message and "\n" not in message


def test_project_is_required():
    with pytest.raises(SettingsError, match="GOOGLE_CLOUD_PROJECT"):
        Settings.from_env({})


def test_api_key_is_not_in_repr():
    s = Settings.from_env({**BASE, "RELAY_GEMINI_API_KEY": "AIzaSECRETSECRETSECRET"})
    assert "SECRET" not in repr(s)


@pytest.mark.parametrize("uri", ["gs://bucket/a/../b", "gs://bucket/a//b", "gs://bucket/a\x01b", "bucket/x"])
def test_unsafe_destinations_are_refused(uri):
    with pytest.raises(ValueError):
        normalize_destination(uri)

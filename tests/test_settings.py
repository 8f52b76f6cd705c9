import pytest

from batch_relay.errors import SettingsError
from batch_relay.settings import Settings, normalize_destination

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
    ("RELAY_ALLOWED_BUCKETS", "gs://ok-bucket"),
    ("RELAY_ALLOWED_BUCKETS", "ok-bucket/../other"),
    ("RELAY_SOURCE_BUCKETS", "ok-bucket/prefix"),
    ("RELAY_SOURCE_BUCKETS", " , "),
    ("RELAY_OUTPUT_WAIT_S", "-1"),
    ("RELAY_OUTPUT_WAIT_S", "half an hour"),
    ("RELAY_TICK_DEADLINE_S", "-1"),
    ("RELAY_COLLECTION", "a/b"),
    ("STORAGE_EMULATOR_HOST", "127.0.0.1:4443"),
    ("RELAY_WATCH", "vertex:projects/p"),
    ("RELAY_WATCH", "gcs"),
    ("RELAY_WATCH", "gemini,vertex:projects/UPPER/locations/us-central1"),
    ("RELAY_WATCH", "vertex:projects/p/locations/us-central1/batchPredictionJobs/1"),
    ("RELAY_WATCH", " , "),
    ("RELAY_WATCH_FILTER", 'labels.team="evals'),
    ("RELAY_WATCH_FILTER", "(state=x"),
    ("RELAY_GEMINI_WEBHOOK_SECRETS", "plain-secret"),
    ("RELAY_GEMINI_WEBHOOK_SECRETS", "whsec_!!not-base64!!"),
    ("RELAY_GEMINI_WEBHOOK_SECRETS", "whsec_c2hvcnQ="),
    ("RELAY_GEMINI_JWKS_URL", "ftp://keys"),
    ("RELAY_STALL_AFTER_S", "-5"),
    ("RELAY_MAX_POLL_INTERVAL_S", "soon"),
    ("RELAY_TICK_FANOUT", "0"),
    ("RELAY_TICK_FANOUT", "65"),
    ("RELAY_PRICES", "https://example.com/prices.json"),
    ("RELAY_PRICES", "gs://bucket-only"),
    ("RELAY_PRICES", "gs://bucket/dir/"),
    ("RELAY_PRICES", "gs://UPPER/prices.json"),
    ("RELAY_PRICES", "prices\x01.json"),
    ("RELAY_OUTPUT_WAIT_S", "-1"),
    ("RELAY_OUTPUT_WAIT_S", "half an hour"),
])
def test_bad_values_name_the_variable(var, value):
    with pytest.raises(SettingsError) as info:
        Settings.from_env({**BASE, var: value})
    message = str(info.value)
    assert var in message and "\n" not in message


def test_this_rounds_settings_default_and_parse():
    s = Settings.from_env(BASE)
    assert s.watch == () and s.watch_filter is None and s.gemini_webhook_secrets == ()
    assert (s.stall_after_s, s.max_poll_interval_s, s.tick_interval_s, s.tick_fanout) == (21600.0, 300.0, 60.0, 1)
    s = Settings.from_env({**BASE, "RELAY_WATCH": "gemini, vertex:projects/p-1/locations/europe-west4, gemini",
                           "RELAY_WATCH_FILTER": "labels.team=evals", "RELAY_STALL_AFTER_S": "0",
                           "RELAY_GEMINI_WEBHOOK_SECRETS": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, "
                                                           "whsec_c2VjcmV0LXR3by1sb25nLWVub3VnaA=="})
    assert [scope.id for scope in s.watch] == ["gemini", "vertex:projects/p-1/locations/europe-west4"]
    assert s.watch_filter == "labels.team=evals" and s.stall_after_s == 0.0
    assert len(s.gemini_webhook_secrets) == 2


def test_webhook_secrets_never_reach_a_message_or_repr():
    secret = "whsec_" + "QUJD" * 3 + "!!"
    with pytest.raises(SettingsError) as info:
        Settings.from_env({**BASE, "RELAY_GEMINI_WEBHOOK_SECRETS": secret})
    assert "QUJD" not in str(info.value)
    s = Settings.from_env({**BASE, "RELAY_GEMINI_WEBHOOK_SECRETS": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
    assert "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" not in repr(s)


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


def test_results_settings_default_and_parse():
    s = Settings.from_env(BASE)
    assert s.prices is None and s.output_wait_s == 1800.0
    s = Settings.from_env({**BASE, "RELAY_PRICES": "gs://price-tables/batch/prices.json", "RELAY_OUTPUT_WAIT_S": "0"})
    assert s.prices == "gs://price-tables/batch/prices.json" and s.output_wait_s == 0.0
    s = Settings.from_env({**BASE, "RELAY_PRICES": "/srv/prices.json", "RELAY_OUTPUT_WAIT_S": "90.5"})
    assert s.prices == "/srv/prices.json" and s.output_wait_s == 90.5


def test_allow_lists_and_the_output_wait():
    s = Settings.from_env(BASE)
    assert s.allowed_buckets is None and s.source_buckets is None and s.output_wait_s == 1800
    s = Settings.from_env({**BASE, "RELAY_ALLOWED_BUCKETS": "out-a, out-b/team-x/, out-c/a/b",
                           "RELAY_SOURCE_BUCKETS": "vertex-out", "RELAY_OUTPUT_WAIT_S": "60"})
    assert s.allowed_buckets == frozenset({"out-a", "out-b/team-x", "out-c/a/b"})
    assert s.source_buckets == frozenset({"vertex-out"}) and s.output_wait_s == 60
    assert Settings.from_env({**BASE, "RELAY_ALLOWED_BUCKETS": "*"}).allowed_buckets == frozenset({"*"})

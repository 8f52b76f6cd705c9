"""devtools/hcl.py: Terraform read with python-hcl2, on small .tf files written here."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from devtools.hcl import (
    blocks,
    duration_expr,
    evaluate,
    load_terraform,
    one,
    refers_to,
    resolve_locals,
    resources,
    strings,
    unquote,
    variable_defaults,
)


def _write(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture
def tf(tmp_path: Path) -> dict:
    _write(tmp_path, "main.tf", """
        locals {
          prefix = "relay"
          topic  = "${local.prefix}-events"
          fns = {
            poll = { entry = "poll_jobs", memory = "256M", timeout = 60, secrets = { KEY = "api-key" } }
            react = { entry = "on_job_event", memory = "512M", timeout = 540, secrets = {} }
          }
        }

        resource "google_cloudfunctions2_function" "fn" {
          for_each = local.fns
          name     = "${local.prefix}-${each.key}"
          build_config {
            entry_point = each.value.entry
          }
          service_config {
            available_memory   = "${each.value.memory}"
            timeout_seconds    = each.value.timeout + 10
            dynamic "secret_environment_variables" {
              for_each = each.value.secrets
              content {
                key    = secret_environment_variables.key
                secret = secret_environment_variables.value
              }
            }
          }
        }

        resource "google_pubsub_topic" "events" {
          name = local.topic
        }
    """)
    _write(tmp_path, "variables.tf", """
        variable "tick_interval_s" {
          type    = number
          default = 60
        }

        variable "limits" {
          type = object({
            deadline_s = optional(number, 540)
            ratio      = optional(number, 0.5)
            name       = optional(string, "x")
          })
          default = {}
        }

        variable "region" {
          type = string
        }

        output "topic" {
          value = google_pubsub_topic.events.name
        }
    """)
    return load_terraform(tmp_path)


def test_files_are_merged_by_kind(tf):
    assert set(tf["resource"]) == {"google_cloudfunctions2_function", "google_pubsub_topic"}
    assert set(tf["variable"]) == {"tick_interval_s", "limits", "region"}
    assert set(tf["output"]) == {"topic"}
    assert tf["locals"]["prefix"] == "relay"
    assert refers_to(tf["output"]["topic"]["value"], "google_pubsub_topic", "events")
    assert not refers_to(tf["output"]["topic"]["value"], "google_pubsub_topic", "other")


def test_for_each_over_a_local_map_becomes_one_body_per_key(tf):
    functions = resources(tf, "google_cloudfunctions2_function")
    assert sorted(functions) == ['fn["poll"]', 'fn["react"]']
    poll = functions['fn["poll"]']
    assert "for_each" not in poll
    assert poll["__each__"]["entry"] == "poll_jobs"
    assert resolve_locals(tf, poll["name"]) == "relay-poll"  # each.key in a template
    assert one(poll, "build_config")["entry_point"] == "poll_jobs"  # a whole each.value.x: its value
    service = one(poll, "service_config")
    assert service["available_memory"] == "256M"  # each.value.x in a template
    assert evaluate(service["timeout_seconds"], {}) == 70  # each.value.x inside an expression
    assert evaluate(one(functions['fn["react"]'], "service_config")["timeout_seconds"], {}) == 550


def test_dynamic_blocks_count_as_blocks(tf):
    service = one(resources(tf, "google_cloudfunctions2_function")['fn["poll"]'], "service_config")
    found = blocks(service, "secret_environment_variables")
    assert [b["key"] for b in found] == ["${secret_environment_variables.key}"]
    assert blocks(service, "no_such_block") == []
    assert one(service, "no_such_block") == {}


def test_locals_resolve_through_each_other(tf):
    topic = resources(tf, "google_pubsub_topic")["events"]["name"]
    assert topic == "${local.topic}"
    assert resolve_locals(tf, topic) == "relay-events"
    assert resolve_locals(tf, "${local.fns.poll.entry}") == "poll_jobs"
    assert resolve_locals(tf, "${local.missing}") == "${local.missing}"


def test_variable_defaults_flatten_optional_numbers(tf):
    assert variable_defaults(tf) == {"tick_interval_s": 60, "limits.deadline_s": 540, "limits.ratio": 0.5}


def test_evaluate_numeric_expressions():
    values = {"tick_interval_s": 60, "limits.deadline_s": 540}
    assert evaluate("${var.tick_interval_s - 10}", values) == 50
    assert evaluate("${var.limits.deadline_s / 2 + var.tick_interval_s}", values) == 330
    assert evaluate("${tostring(var.tick_interval_s * 2)}", values) == 120
    assert evaluate(7, values) == 7
    assert evaluate("${var.unknown + 1}", values) is None
    assert evaluate("${max(var.tick_interval_s, 5)}", values) is None
    assert evaluate(["a"], values) is None


def test_duration_expr():
    assert duration_expr("${var.x - 10}s") == "${var.x - 10}"
    assert duration_expr("300s") == "300"
    assert duration_expr("5m") is None
    assert duration_expr(None) is None


def test_strings_and_unquote():
    assert sorted(strings({"a": ["b", {"c": "d"}], "e": 1})) == ["a", "b", "c", "d", "e"]
    assert unquote('"name"') == "name"
    assert unquote("name") == "name"

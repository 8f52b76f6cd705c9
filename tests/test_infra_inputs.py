"""infra/'s inputs, evaluated by Terraform itself: the validations of infra/variables.tf run by `terraform
plan` on a module holding only that file (no provider, so nothing is downloaded), and the expression that
decides who gets roles/aiplatform.viewer evaluated by `terraform console` on the real locals and for_each.

- alert durations are whole minutes (Cloud Monitoring refuses "210s" for 3.5 minutes);
- secret environment variables pin a version: a number, never "latest" and never left out;
- the poller gets roles/aiplatform.viewer only when the relay reads Vertex AI jobs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from devtools.hcl import load_terraform

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
TERRAFORM = os.environ.get("TERRAFORM", "/usr/local/bin/terraform")
ENV = {**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null", "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
BASE = {"project_id": "my-project-1", "region": "europe-west1"}
KEY = {"secret_id": "gemini-key", "version": "3"}


def _module(folder: Path, viewer: bool) -> Path:
    """A root module of infra/variables.tf alone (``viewer``: plus the locals and the for_each that decide the
    Vertex AI viewer grant, copied from infra/ as they are), initialised."""
    if not Path(TERRAFORM).is_file():
        pytest.skip(f"terraform not found at {TERRAFORM}")
    shutil.copy(INFRA / "variables.tf", folder / "variables.tf")
    if viewer:
        tf = load_terraform(INFRA)
        exprs = {name: _bare(tf["locals"][name]) for name in ("watch_vertex_projects", "vertex_used")}
        grant = _bare(tf["resource"]["google_project_iam_member"]["poller_vertex_viewer"]["for_each"])
        body = "\n".join(f"  {name} = {expr}" for name, expr in exprs.items())
        (folder / "viewer.tf").write_text(f"locals {{\n{body}\n  viewer_projects = {grant}\n}}\n")
    proc = subprocess.run([TERRAFORM, "init", "-input=false", "-backend=false", "-no-color"], cwd=folder, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return folder


@pytest.fixture(scope="module")
def module(tmp_path_factory) -> Path:
    return _module(tmp_path_factory.mktemp("tfvars"), viewer=False)


def _bare(expr: str) -> str:
    """A parsed expression ("${...}") as Terraform source."""
    match = re.fullmatch(r"\$\{(.*)\}", expr.strip(), re.S)
    assert match, expr
    return match[1]


def _vars(module: Path, values: dict) -> Path:
    path = module / "test.tfvars.json"
    path.write_text(json.dumps({**BASE, **values}))
    return path


def plan(module: Path, values: dict) -> str:
    """'' when Terraform accepts these inputs, else its error output."""
    proc = subprocess.run([TERRAFORM, "plan", "-input=false", "-no-color", "-lock=false", "-refresh=false",
                           f"-var-file={_vars(module, values)}"], cwd=module, env=ENV, capture_output=True,
                          text=True, timeout=120)
    return "" if proc.returncode == 0 else proc.stdout + proc.stderr


def viewer_projects(module: Path, values: dict) -> list[str]:
    proc = subprocess.run([TERRAFORM, "console", f"-var-file={_vars(module, values)}"], cwd=module, env=ENV,
                          input="jsonencode(local.viewer_projects)\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return sorted(json.loads(json.loads(proc.stdout.strip().splitlines()[-1])))


@pytest.mark.parametrize("field", ["heartbeat_stale_minutes", "poll_error_minutes"])
def test_alert_minutes_are_whole_numbers(module, field):
    assert plan(module, {"alerts": {field: 30}}) == ""
    refused = plan(module, {"alerts": {field: 30.5}})
    assert f"alerts.{field}" in refused and "whole number" in refused


def test_secret_environment_variables_pin_a_version(module):
    hooks = {"enabled": True, "signing_secrets": {"secret_id": "hook-secrets", "version": "2"}}
    assert plan(module, {"gemini_api_key_secret": KEY, "webhooks": hooks}) == ""
    for version in ("latest", "0", "v3", ""):
        refused = plan(module, {"gemini_api_key_secret": {**KEY, "version": version}})
        assert "gemini_api_key_secret.version must be a version number" in refused, version
        refused = plan(module, {"webhooks": {**hooks, "signing_secrets": {"secret_id": "s", "version": version}}})
        assert "webhooks.signing_secrets.version must be a version number" in refused, version
    unpinned = plan(module, {"gemini_api_key_secret": {"secret_id": "gemini-key"}})
    assert "version" in unpinned and "required" in unpinned
    unpinned = plan(module, {"webhooks": {"enabled": True, "signing_secrets": {"secret_id": "s"}}})
    assert "version" in unpinned and "required" in unpinned


def test_the_vertex_ai_viewer_role_only_when_vertex_ai_is_used(tmp_path):
    module = _module(tmp_path, viewer=True)
    assert viewer_projects(module, {"gemini_api_key_secret": KEY}) == []  # Gemini only: no Vertex AI role
    assert viewer_projects(module, {}) == ["my-project-1"]  # no Gemini key: a Vertex AI relay
    assert viewer_projects(module, {"gemini_api_key_secret": KEY, "poller": {"vertex_ai": True}}) == ["my-project-1"]
    assert viewer_projects(module, {"poller": {"vertex_ai": False}}) == []
    watched = {"gemini_api_key_secret": KEY, "watch": {"scopes": ["gemini", "vertex:projects/other-proj/locations/x"]},
               "poller": {"vertex_projects": ["third-proj"]}}
    assert viewer_projects(module, watched) == ["my-project-1", "other-proj", "third-proj"]


def cloud_run_takes(cpu: float | None, memory_mib: int) -> bool:
    """Cloud Run's CPU and memory pairs (its "Configure CPU limits" page): fractions of a vCPU from 0.08,
    at most 512 MiB below 0.5 vCPU and 1 GiB below 1 vCPU; whole vCPU 1, 2, 4, 6 or 8, at most 4 GiB each,
    4 vCPU from 2 GiB, 6 and 8 from 4 GiB. None: the memory's own share, always."""
    if cpu is None:
        return True
    if cpu < 1:
        return cpu >= 0.08 and memory_mib <= 1024 and (cpu >= 0.5 or memory_mib <= 512)
    return cpu in (1, 2, 4, 6, 8) and {4: 2048, 6: 4096, 8: 4096}.get(int(cpu), 0) <= memory_mib <= cpu * 4096


# (cpu, memory) for the poller and for the webhook function, planned together
CPU_PAIRS = [((None, "512Mi"), (0.333, "512Mi")), ((1, "512Mi"), (0.333, "1Gi")), ((0.583, "1Gi"), (0.583, "2Gi")),
             ((0.4, "1Gi"), (0.5, "1Gi")), ((2, "512Mi"), (1, "8Gi")), ((4, "1Gi"), (4, "2Gi")),
             ((3, "4Gi"), (0.05, "128Mi")), ((8, "32Gi"), (1, "4Gi"))]


@pytest.mark.parametrize(("poller", "webhook"), CPU_PAIRS)
def test_cpu_and_memory_are_a_pair_cloud_run_takes(module, poller, webhook):
    refused = plan(module, {"poller": {"cpu": poller[0], "memory": poller[1]},
                            "webhooks": {"cpu": webhook[0], "memory": webhook[1]}})
    for name, (cpu, memory) in (("poller", poller), ("webhooks", webhook)):
        mib = int(memory[:-2]) * (1024 if memory.endswith("Gi") else 1)
        assert (f"{name}.cpu" not in refused) == cloud_run_takes(cpu, mib), (name, cpu, memory, refused)


def test_the_poller_gets_a_whole_vcpu_and_the_webhook_its_memorys_share_by_default():
    tf = load_terraform(INFRA)
    fields = tf["variable"]["poller"]["type"], tf["variable"]["webhooks"]["type"]
    assert "cpu = optional(number, 1)" in re.sub(r"\s+", " ", fields[0].replace("${", "").replace("}", ""))
    assert "cpu = optional(number)" in re.sub(r"\s+", " ", fields[1].replace("${", "").replace("}", ""))
    functions = tf["resource"]["google_cloudfunctions2_function"]
    for name, var in (("poller", "poller"), ("webhook", "webhooks")):
        service = functions[f'function["{name}"]']["service_config"]
        service = service[0] if isinstance(service, list) else service
        assert f"tostring((var.{var}.cpu))" in service["available_cpu"], service
        assert service["min_instance_count"] == f"${{var.{var}.min_instances}}", service


def test_min_instances_is_a_whole_number_up_to_max_instances(module):
    assert plan(module, {"poller": {"min_instances": 1}, "webhooks": {"min_instances": 1}}) == ""
    for value in (-1, 1.5, 11):
        refused = " ".join(plan(module, {"webhooks": {"min_instances": value}}).split())  # Terraform wraps lines
        assert "webhooks.min_instances must be a whole number between 0 and webhooks.max_instances" in refused, value
    refused = " ".join(plan(module, {"poller": {"min_instances": 4}}).split())  # max_instances 3 by default
    assert "poller.min_instances must be a whole number" in refused

"""The hash-locked requirement files (``make lock``): current with pyproject.toml, every package pinned and
hashed, and the test environment on exactly the versions that are deployed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devtools import lock

LOCKS = Path(__file__).resolve().parents[1] / "requirements"


@pytest.mark.parametrize("name", ["runtime", "dev", "checkov"])
def test_each_lock_is_current_and_fully_hashed(name):
    text = (LOCKS / f"{name}.txt").read_text()
    recorded = re.search(r"^# inputs: ([0-9a-f]+)$", text, re.M)
    assert recorded, "no inputs digest in the header"
    assert recorded[1] == lock.inputs_digest(name), (
        f"pyproject.toml's dependencies changed since requirements/{name}.txt was made: run make lock")
    entries = [e for e in text.replace("\\\n", " ").splitlines() if e.strip() and not e.lstrip().startswith("#")]
    assert entries
    for entry in entries:
        assert re.match(r"^[a-z0-9._-]+==\S+", entry) and "--hash=sha256:" in entry, entry[:120]


def test_the_tests_run_on_the_deployed_versions():
    runtime, dev = lock.pins(LOCKS / "runtime.txt"), lock.pins(LOCKS / "dev.txt")
    assert {name: dev.get(name) for name in runtime} == runtime


def test_the_digest_follows_pyproject(tmp_path):
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    changed = tmp_path / "pyproject.toml"
    changed.write_text(pyproject.replace('"httpx>=0.27,<1"', '"httpx>=0.28,<1"'))
    assert lock.inputs_digest("runtime", changed) != lock.inputs_digest("runtime")
    assert lock.inputs_digest("checkov", changed) == lock.inputs_digest("checkov")

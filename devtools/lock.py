"""Regenerate the hash-locked requirement files: ``make lock`` (``python -m devtools.lock``).

Three files under ``requirements/``, each pinning every package ``==`` with the sha256 of every file the
index holds for that version, so ``pip install --require-hashes`` installs exactly what was locked:

- ``runtime.txt``: the runtime dependencies of pyproject.toml and their closure, resolved for the deploy
  target (CPython 3.12 on Linux x86_64). It is the deploy bundle's ``requirements.txt``.
- ``dev.txt``: the runtime dependencies plus the ``dev`` and ``cli`` extras, resolved for every Python the
  project supports (``--universal``: this machine's 3.11, Cloud Build's 3.12), constrained to the versions
  of ``runtime.txt`` so the tests run on exactly what is deployed. ``make venv`` installs it.
- ``checkov.txt``: checkov, in its own environment (``make checkov``): its ``bc-python-hcl2`` clashes
  with ``python-hcl2``.

Resolution is uv's (``uv pip compile``, a dev dependency): pip has no way to resolve for another Python
than the one it runs on. Each file's header records a digest of the pyproject.toml inputs it was made
from; tests/test_locks.py fails when pyproject.toml's dependencies change and the locks were not remade.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from devtools.bundle import parse_requirements

REPO = Path(__file__).resolve().parents[1]
LOCKS = REPO / "requirements"
CHECKOV = "checkov>=3.2,<4"
TARGET_PYTHON = "3.12"  # the python312 runtime the functions are deployed to
TARGET_PLATFORM = "x86_64-manylinux_2_28"
DEV_PYTHON = "3.11"  # the oldest Python the project supports (requires-python)


def inputs_digest(name: str, pyproject: Path = REPO / "pyproject.toml") -> str:
    """A digest of what lock ``name`` is made from: pyproject.toml's dependency lists (and checkov's pin)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras = project.get("optional-dependencies", {})
    parts: dict[str, object] = {"runtime": project["dependencies"]}
    if name == "dev":
        parts.update(dev=extras.get("dev", []), cli=extras.get("cli", []))
    if name == "checkov":
        parts = {"checkov": CHECKOV}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def header(name: str, purpose: str) -> str:
    return (f"# requirements/{name}.txt: {purpose}\n"
            "# Hash-locked: install with `pip install --require-hashes -r` this file. Do not edit by hand:\n"
            "# regenerate all three files with `make lock` (python -m devtools.lock).\n"
            f"# inputs: {inputs_digest(name)}\n")


def _uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if not found:
        raise SystemExit("lock: uv is not installed (it is in the dev extras: make venv)")
    return found


def _compile(args: list[str], out: Path, head: str, stdin: str | None = None) -> None:
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as tmp:
        subprocess.run([_uv(), "pip", "compile", *args, "--generate-hashes", "--no-header", "--quiet",
                        "--output-file", tmp.name], input=stdin, text=True, check=True, cwd=REPO)
        out.write_text(head + Path(tmp.name).read_text(encoding="utf-8"), encoding="utf-8")


def pins(path: Path) -> dict[str, str]:
    """``name==version`` of a lock file (markers and hashes dropped)."""
    return parse_requirements(path.read_text(encoding="utf-8"))


def lock(upgrade: bool = False) -> None:
    LOCKS.mkdir(exist_ok=True)
    more = ["--upgrade"] if upgrade else []
    runtime = LOCKS / "runtime.txt"
    _compile(["pyproject.toml", "--python-version", TARGET_PYTHON, "--python-platform", TARGET_PLATFORM, *more],
             runtime, header("runtime", "what the deployed functions run (the bundle's requirements.txt)"))
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as constraints:
        constraints.write("".join(f"{name}=={version}\n" for name, version in pins(runtime).items()))
        constraints.flush()
        _compile(["pyproject.toml", "--extra", "dev", "--extra", "cli", "--universal", "--python-version",
                  DEV_PYTHON, "--constraint", constraints.name, *more],
                 LOCKS / "dev.txt", header("dev", "the development and test environment (make venv)"))
    _compile(["-", "--universal", "--python-version", DEV_PYTHON, *more], LOCKS / "checkov.txt",
             header("checkov", "checkov's own environment (make checkov)"), stdin=CHECKOV + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.lock", description=__doc__.splitlines()[0])
    parser.add_argument("--upgrade", action="store_true", help="take the newest versions pyproject.toml allows")
    args = parser.parse_args(argv)
    lock(upgrade=args.upgrade)
    for name in ("runtime", "dev", "checkov"):
        print(f"requirements/{name}.txt: {len(pins(LOCKS / f'{name}.txt'))} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())

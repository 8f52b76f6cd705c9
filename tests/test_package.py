"""The package as users install it: one top-level name, ``batch_relay``, that installs beside anything.

The wheel is built from the repository's own files (copied to a temporary folder, as a clean clone has
them) and installed into a fresh virtual environment, where ``from batch_relay import track, wait`` must
work beside an unrelated ``shared/`` folder on the path (the usual name of a Cloud Functions repository's
own common code)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "shared"  # the package's source folder; its import name is batch_relay


def _source_files() -> set[str]:
    """The files the wheel must carry, by their name inside it."""
    out = set()
    for path in SOURCE.rglob("*"):
        rel = path.relative_to(SOURCE)
        if path.is_file() and "__pycache__" not in rel.parts and path.suffix not in (".pyc", ".pyo"):
            out.add("batch_relay/" + rel.as_posix())
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tree = tmp_path_factory.mktemp("clone")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tree / name)
    shutil.copytree(SOURCE, tree / "shared", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # devtools/ and tests/ sit beside it in a checkout: the wheel must still leave them out
    shutil.copytree(REPO / "devtools", tree / "devtools", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheelhouse")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                           "--wheel-dir", str(out), str(tree)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (built,) = out.glob("batch_relay-*.whl")
    return built


def test_the_wheel_holds_batch_relay_alone(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    top = {name.split("/", 1)[0] for name in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"batch_relay"}, f"top-level names in the wheel: {sorted(top)}"
    package = {n for n in names if n.startswith("batch_relay/")}
    assert package == _source_files(), (f"missing: {sorted(_source_files() - package)}; "
                                        f"extra: {sorted(package - _source_files())}")
    assert "batch_relay/py.typed" in names
    assert len([n for n in names if re.fullmatch(r"batch_relay/events/schemas/.+\.json", n)]) == 5


def test_batch_relay_imports_from_the_wheel_beside_a_shared_folder(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                           "--no-index", "--quiet", str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    project = tmp_path / "my-functions"  # a user's Cloud Functions repository, with its own shared/
    (project / "shared").mkdir(parents=True)
    (project / "shared" / "__init__.py").write_text("OWNER = 'the user'\n")
    probe = (
        "import json, importlib.resources, shared\n"
        "from batch_relay import track, wait\n"
        "import batch_relay\n"
        "schemas = importlib.resources.files('batch_relay') / 'events' / 'schemas'\n"
        "print(json.dumps({'batch_relay': batch_relay.__file__, 'shared': shared.__file__, 'owner': shared.OWNER,"
        " 'callables': callable(track) and callable(wait),"
        " 'schemas': sorted(p.name for p in schemas.iterdir())}))\n"
    )
    proc = subprocess.run([str(python), "-c", probe], cwd=project, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(found["batch_relay"]).resolve().is_relative_to(env_dir.resolve())
    assert Path(found["shared"]).resolve().is_relative_to(project.resolve()) and found["owner"] == "the user"
    assert found["callables"] is True
    assert "batchrelay.job.v1.stateChanged.json" in found["schemas"]


_OLD_IMPORT = re.compile(r"^\s*(from shared(\.| import)|import shared\b)", re.M)


def test_nothing_imports_the_package_by_its_folder_name():
    """Two names for one module would load two copies of every class (``except UsageError`` missing the
    other copy, log redaction split): everything imports ``batch_relay``."""
    found = []
    for folder in ("shared", "functions", "devtools", "tests", "examples", "docs"):
        for path in (REPO / folder).rglob("*"):
            if path.suffix in (".py", ".md") and "__pycache__" not in path.parts:
                for m in _OLD_IMPORT.finditer(path.read_text(encoding="utf-8")):
                    found.append(f"{path.relative_to(REPO)}: {m.group(0).strip()}")
    for name in ("README.md",):
        found += [f"{name}: {m.group(0).strip()}" for m in _OLD_IMPORT.finditer((REPO / name).read_text())]
    assert found == []

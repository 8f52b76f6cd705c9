"""Build the deploy bundle both Cloud Functions run from: ``python -m devtools.bundle [--out dist]``.

The bundle is ``<out>/function-source.zip`` holding exactly

- ``main.py`` (a copy of ``functions/main.py``),
- ``batch_relay/**`` (the package: the repository's ``shared/`` folder, without ``__pycache__``,
  ``*.pyc`` or hidden files),
- ``requirements.txt``: ``requirements/runtime.txt``, the hash-locked runtime dependencies and their whole
  transitive closure (``make lock``), checked against the versions installed in the running interpreter's
  environment: the bundle deploys exactly what the tests ran on.

Nothing else: no tests, no simulator, no dev tools. The archive is deterministic (sorted entries, fixed
timestamps and modes), so its sha256 changes only when its content does; Terraform names the uploaded
object after that hash, so a code change redeploys and nothing else does.

Requirement markers are evaluated for the deploy target (CPython 3.12 on Linux, the ``python312``
runtime), so a dependency the target needs is never dropped because this venv runs another Python. The
Cloud Functions build installs requirements.txt with pip, which checks every hash (``--require-hashes``
mode is on as soon as one requirement carries a hash).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import re
import sys
import tomllib
import zipfile
from collections.abc import Iterable
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
BUNDLE_NAME = "function-source.zip"
PACKAGE = "batch_relay"  # the import name of the repository's shared/ folder
# Zip timestamps before 1980 are not representable; any fixed date keeps the archive reproducible.
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)
_EXCLUDED_DIRS = {"__pycache__"}
_EXCLUDED_SUFFIXES = {".pyc", ".pyo"}

# The Cloud Functions runtime the bundle is deployed to (infra: runtime = "python312").
TARGET_PYTHON = "3.12"


class BundleError(RuntimeError):
    """The bundle cannot be built (missing entry point, dependency not installed, ...)."""


def target_environment() -> dict[str, str]:
    """PEP 508 marker environment of the deploy target: CPython 3.12 on linux/x86_64."""
    env = dict(default_environment())
    env.update({
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "python_version": TARGET_PYTHON,
        "python_full_version": f"{TARGET_PYTHON}.0",
        "implementation_version": f"{TARGET_PYTHON}.0",
        "os_name": "posix",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
    })
    return env


def runtime_requirements(pyproject: Path | None = None) -> list[Requirement]:
    """The ``[project] dependencies`` of pyproject.toml."""
    data = tomllib.loads((pyproject or REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return [Requirement(spec) for spec in data["project"]["dependencies"]]


def _applies(req: Requirement, extras: Iterable[str], env: dict[str, str]) -> bool:
    if req.marker is None:
        return True
    extras = list(extras) or [""]
    return any(req.marker.evaluate({**env, "extra": extra}) for extra in extras)


def resolve_pins(roots: Iterable[Requirement], env: dict[str, str] | None = None) -> dict[str, str]:
    """Walk installed distributions' requirements from ``roots``; return {canonical name: version}.

    Extras requested along the way are followed; requirements whose markers don't apply to ``env`` (the
    deploy target by default) are ignored. A needed distribution that is not installed is an error: the
    pin would be a guess.
    """
    env = env or target_environment()
    pins: dict[str, str] = {}
    names: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    missing: list[str] = []
    queue: list[tuple[Requirement, frozenset[str]]] = [(r, frozenset()) for r in roots]
    while queue:
        req, parent_extras = queue.pop()
        if not _applies(req, parent_extras, env):
            continue
        key = canonicalize_name(req.name)
        extras = frozenset(canonicalize_name(e) for e in req.extras)
        if (key, extras) in seen:
            continue
        seen.add((key, extras))
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            missing.append(str(req))
            continue
        version = dist.version
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            raise BundleError(f"installed {req.name}=={version} does not satisfy {req}")
        pins[key] = version
        names[key] = dist.metadata["Name"] or req.name
        for spec in dist.requires or []:
            child = Requirement(spec)
            queue.append((child, extras))
    if missing:
        raise BundleError("runtime dependencies not installed in this environment (cannot pin): "
                          + ", ".join(sorted(missing)))
    return {canonicalize_name(names[k]): pins[k] for k in pins}


def requirements_txt(repo: Path = REPO) -> str:
    """The bundle's requirements.txt: the runtime lock, if the environment this runs in matches it."""
    lock = repo / "requirements" / "runtime.txt"
    if not lock.is_file():
        raise BundleError(f"{lock} does not exist: run make lock")
    text = lock.read_text(encoding="utf-8")
    locked = parse_requirements(text)
    installed = resolve_pins(runtime_requirements(repo / "pyproject.toml"))
    if locked != installed:
        differ = sorted(set(locked.items()) ^ set(installed.items()))
        raise BundleError("the installed runtime dependencies differ from requirements/runtime.txt (run make venv, "
                          f"or make lock after changing pyproject.toml): {differ[:6]}")
    return text


def _package_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in _EXCLUDED_DIRS or part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.suffix not in _EXCLUDED_SUFFIXES:
            files.append(path)
    return files


def bundle_entries(repo: Path = REPO) -> dict[str, bytes]:
    """Archive name -> content, for everything the bundle holds."""
    main = repo / "functions" / "main.py"
    if not main.is_file():
        raise BundleError(f"{main} does not exist: nothing to deploy")
    source = repo / "shared"  # the package's source folder; its import name is batch_relay
    if not (source / "__init__.py").is_file():
        raise BundleError(f"{source} is not a package")
    entries = {"main.py": main.read_bytes()}
    for path in _package_files(source):
        entries[f"{PACKAGE}/" + path.relative_to(source).as_posix()] = path.read_bytes()
    entries["requirements.txt"] = requirements_txt(repo).encode()
    return entries


def write_zip(entries: dict[str, bytes], target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100644 << 16)  # regular file, rw-r--r--
            info.create_system = 3  # unix, whatever the building machine is
            zf.writestr(info, entries[name], compresslevel=9)
    tmp.replace(target)
    return target


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_bundle(out_dir: str | Path = REPO / "dist", *, repo: Path = REPO) -> Path:
    """Build ``<out_dir>/function-source.zip`` and return its path."""
    return write_zip(bundle_entries(repo), Path(out_dir) / BUNDLE_NAME)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.bundle", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "dist"), help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        path = build_bundle(args.out)
    except BundleError as exc:
        print(f"bundle: {exc}", file=sys.stderr)
        return 1
    print(f"{path}")
    print(f"sha256 {sha256_of(path)}")
    return 0


_PIN_RE = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)")


def parse_requirements(text: str) -> dict[str, str]:
    """``name==version`` lines of a requirements.txt -> {canonical name: version}; comments, hash lines and
    markers skipped."""
    pins = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "--hash")):
            continue
        line = line.strip()
        match = _PIN_RE.match(line)
        if not match:
            raise ValueError(f"not a pinned requirement: {line!r}")
        pins[canonicalize_name(match[1])] = match[2]
    return pins


if __name__ == "__main__":
    sys.exit(main())

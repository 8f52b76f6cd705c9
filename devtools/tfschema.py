"""The provider schema infra/ is checked against: extract it, check against it, compare two versions.

``terraform validate`` needs the providers downloaded, which this repository's checks cannot do. The
provider's schema also ships in its prebuilt CDK bindings on PyPI (``cdktn-provider-google`` 21.1.0 is
generated from hashicorp/google 8.7.0), so:

``python -m devtools.tfschema extract --bindings cdktn-provider-google==21.1.0 ... --tf infra --out FILE``
    downloads each bindings wheel (``pip download --no-deps``; or ``--wheel PATH`` for one already here),
    reads the schema of exactly the resource and data source types the ``--tf`` folders use (each type
    under the provider its block uses: ``provider = google-beta`` picks hashicorp/google-beta) and writes
    them, with each provider's version and the bindings they came from, to FILE (``make tf-schema``).
``python -m devtools.tfschema check --schema FILE --tf infra``
    prints every problem of the configuration against the schema (devtools/tfschema_check.py says which)
    and exits 1 if there is one; tests/test_infra_schema.py runs the same check.
``python -m devtools.tfschema diff --old PKG==V --new PKG==V --tf infra``
    what changed, for the types infra/ uses, between two bindings versions: removed or added arguments and
    blocks, changed types, required/optional/computed and nesting. Read it before moving a provider pin.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from devtools.tfschema_bindings import BindingsError, provider_of, read_bindings, schema_of
from devtools.tfschema_check import check, load_config, load_schema

REPO = Path(__file__).resolve().parents[1]
FORMAT_VERSION = "1.0"


def download(package: str, folder: Path) -> Path:
    """The wheel of ``name==version``, from ``folder`` if it is there, else fetched with pip into it."""
    name, _, version = package.partition("==")
    if not version:
        raise SystemExit(f"{package}: give an exact version (name==version)")
    stem = f"{name.replace('-', '_')}-{version}-"
    for wheel in sorted(folder.glob("*.whl")):
        if wheel.name.startswith(stem):
            return wheel
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--dest", str(folder), package], check=True)
    for wheel in sorted(folder.glob("*.whl")):
        if wheel.name.startswith(stem):
            return wheel
    raise SystemExit(f"pip download {package} left no {stem}*.whl in {folder}")


def used_types(folders: list[Path]) -> dict[str, set[tuple[str, str]]]:
    """Provider source address -> the (kind, type) pairs the configuration's blocks use with it."""
    config = load_config(folders)
    used: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for block in config.blocks:
        used[config.source_of(block)].add((block.kind, block.type))
    return dict(used)


def extract(wheels: list[Path], folders: list[Path]) -> dict[str, Any]:
    """The schema document for the types ``folders`` use, read from ``wheels`` (one per provider)."""
    used = used_types(folders)
    schemas: dict[str, Any] = {}
    for wheel in wheels:
        provider = provider_of(wheel)
        wanted = used.pop(provider.provider_source, None)
        if wanted is None:
            raise SystemExit(f"{provider.package} is for {provider.provider_source}, which no --tf folder uses")
        bindings = read_bindings(wheel, wanted)
        resources, data = {}, {}
        for (kind, rtype), code in sorted(bindings.code.items()):
            (data if kind == "data" else resources)[rtype] = schema_of(code, f"{bindings.package} {kind} {rtype}")
        schemas[bindings.provider_source] = {
            "version": bindings.provider_version,
            "bindings": bindings.package,
            "resource_schemas": resources,
            "data_source_schemas": data,
        }
    if used:
        raise SystemExit("no --bindings given for " + ", ".join(sorted(used)))
    return {"format_version": FORMAT_VERSION, "provider_schemas": schemas}


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def cmd_extract(args: argparse.Namespace) -> int:
    started = time.monotonic()
    folders = [Path(f) for f in args.tf]
    with tempfile.TemporaryDirectory(prefix="tfschema-") as tmp:
        cache = Path(args.wheels) if args.wheels else Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        wheels = [Path(w) for w in args.wheel] + [download(p, cache) for p in args.bindings]
        try:
            doc = extract(wheels, folders)
        except BindingsError as exc:
            raise SystemExit(str(exc)) from exc
    command = ["python", "-m", "devtools.tfschema", "extract",
               *[a for p in args.bindings for a in ("--bindings", p)],
               *[a for f in folders for a in ("--tf", _relative(f))], "--out", _relative(Path(args.out))]
    doc = {
        "format_version": doc["format_version"],
        "about": ("Provider schemas of the resource and data source types the --tf folders use, read from the "
                  "providers' prebuilt CDK bindings (PyPI). Regenerate with `make tf-schema`; "
                  "tests/test_infra_schema.py checks infra/*.tf against it."),
        "generated_by": shlex.join(command),
        "provider_schemas": doc["provider_schemas"],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    for source, provider in doc["provider_schemas"].items():
        print(f"{source} {provider['version']} (from {provider['bindings']}): {len(provider['resource_schemas'])} "
              f"resource types, {len(provider['data_source_schemas'])} data sources")
    print(f"wrote {out} ({out.stat().st_size} bytes) in {time.monotonic() - started:.1f} s")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    problems = check(load_config([Path(f) for f in args.tf]), load_schema(Path(args.schema)))
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s)")
    return 1 if problems else 0


def _flatten(block: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """path -> a one-line description of every attribute and block of a schema block."""
    out = {}
    for name, attribute in block.get("attributes", {}).items():
        mode = "/".join(k for k in ("required", "optional", "computed") if attribute.get(k))
        out[f"{prefix}{name}"] = f"argument {json.dumps(attribute.get('type'))} {mode}"
    for name, spec in block.get("block_types", {}).items():
        limits = f" min {spec.get('min_items', 0)} max {spec.get('max_items', '-')}"
        out[f"{prefix}{name}"] = f"block {spec.get('nesting_mode')}{limits}"
        out.update(_flatten(spec.get("block", {}), f"{prefix}{name}."))
    return out


def cmd_diff(args: argparse.Namespace) -> int:
    used = used_types([Path(f) for f in args.tf])
    with tempfile.TemporaryDirectory(prefix="tfschema-") as tmp:
        cache = Path(args.wheels) if args.wheels else Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        sides = []
        for package in (args.old, args.new):
            wheel = download(package, cache)
            provider = provider_of(wheel)
            wanted = used.get(provider.provider_source, set())
            found = read_bindings(wheel, None).code  # all: a type may be missing on one side
            sides.append((provider, {key: found.get(key) for key in wanted}))
    (old, old_code), (new, new_code) = sides
    print(f"{old.provider_source} {old.provider_version} ({old.package}) -> "
          f"{new.provider_version} ({new.package}), types the --tf folders use:")
    changes = 0
    for key in sorted(old_code.keys() | new_code.keys()):
        before = _flatten(schema_of(old_code[key])["block"]) if old_code.get(key) else None
        after = _flatten(schema_of(new_code[key])["block"]) if new_code.get(key) else None
        if before is None or after is None:
            print(f"  {key[0]} {key[1]}: {'not in the old version' if before is None else 'REMOVED'}")
            changes += 1
            continue
        for path in sorted(before.keys() | after.keys()):
            if before.get(path) != after.get(path):
                print(f"  {key[0]} {key[1]}: {path}: {before.get(path, '(none)')} -> {after.get(path, 'REMOVED')}")
                changes += 1
    print(f"{changes} change(s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.tfschema", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("extract", help="write the schema of the types the --tf folders use")
    p.add_argument("--bindings", action="append", default=[], metavar="PKG==VERSION",
                   help="a bindings package on PyPI, e.g. cdktn-provider-google==21.1.0 (repeat per provider)")
    p.add_argument("--wheel", action="append", default=[], metavar="PATH", help="a bindings wheel already here")
    p.add_argument("--tf", action="append", required=True, metavar="DIR", help="a folder of .tf files (repeat)")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--wheels", metavar="DIR", help="keep downloaded wheels here (default: a temporary folder)")
    p.set_defaults(func=cmd_extract)
    p = sub.add_parser("check", help="check .tf files against a schema file")
    p.add_argument("--schema", required=True, metavar="FILE")
    p.add_argument("--tf", action="append", required=True, metavar="DIR")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("diff", help="compare two bindings versions for the types the --tf folders use")
    p.add_argument("--old", required=True, metavar="PKG==VERSION")
    p.add_argument("--new", required=True, metavar="PKG==VERSION")
    p.add_argument("--tf", action="append", required=True, metavar="DIR")
    p.add_argument("--wheels", metavar="DIR")
    p.set_defaults(func=cmd_diff)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""Rules of the package's layout that no other test would notice being broken: ``record/`` is the only door
to Firestore, and the tick reads top-down (the watched scopes' runs never reach back into the tick)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRESTORE = re.compile(r"google\.cloud\.firestore|from google\.cloud import firestore|\.collection\(|on_snapshot|"
                       r"FieldFilter")


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_only_the_record_package_touches_firestore():
    record = ROOT / "shared" / "record"
    offenders = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                 for path in _sources("shared", "functions") if record not in path.parents
                 for number, line in enumerate(path.read_text().splitlines(), 1) if FIRESTORE.search(line)]
    assert offenders == [], "Firestore is reached through batch_relay.record only:\n" + "\n".join(offenders)


def _imports(path: Path) -> set[str]:
    """The modules a file imports (relative imports resolved within batch_relay, which is shared/)."""
    package = ["batch_relay", *path.relative_to(ROOT / "shared").parent.parts]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
    return out


def test_the_tick_and_the_watched_scopes_do_not_import_each_other():
    tick, watch = ROOT / "shared" / "poller" / "tick.py", ROOT / "shared" / "poller" / "watch.py"
    assert "batch_relay.poller.watch" in _imports(tick)  # (the check below would pass vacuously otherwise)
    assert "batch_relay.poller.tick" not in _imports(watch)
    assert "batch_relay.poller.watch" not in _imports(ROOT / "shared" / "poller" / "apply.py")
    assert "batch_relay.poller.tick" not in _imports(ROOT / "shared" / "poller" / "apply.py")


def test_a_scope_run_does_not_hold_the_poller():
    tree = ast.parse((ROOT / "shared" / "poller" / "watch.py").read_text())
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert "Poller" not in names and "_poller" not in names and "poller" not in names

"""Every Firestore query of a body of Python code, read from its syntax tree: which collection, which
filters and orders. tests/test_infra.py holds the indexes and exemptions of infra/firestore.tf against
them (the queries of shared/, and the example queries of docs/*.md).

A query is a chain of ``.where(filter=FieldFilter(field, op, …))`` / ``.order_by(field)`` calls on a
collection: ``self._jobs`` and ``self._meta`` (the store's two collections), ``….collection(TRANSITIONS)``
(a record's transitions), ``db.collection("batch_jobs")`` and a variable holding one (the docs). A
variable assigned a query and refined later (``query = query.where(…)``) carries its clauses along.
Collections are named as Terraform names them relative to ``RELAY_COLLECTION``: ``{collection}``,
``{collection}_meta``, ``transitions``.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Iterable
from pathlib import Path

JOBS, META, TRANSITIONS = "{collection}", "{collection}_meta", "transitions"
_SELF_ROOTS = {"_jobs": JOBS, "_meta": META}
_CONSTANT_COLLECTIONS = {"batch_jobs": JOBS, "batch_jobs_meta": META, "transitions": TRANSITIONS}
_NAMED_COLLECTIONS = {"TRANSITIONS": TRANSITIONS}
_REFINE = {"where", "order_by"}
_PASS = {"limit", "limit_to_last", "start_after", "start_at", "end_at", "end_before", "select", "stream", "get",
         "count", "on_snapshot", "document", "offset"}
RANGE_OPS = {"<", "<=", ">", ">=", "!=", "not-in"}


@dataclasses.dataclass(frozen=True)
class Clause:
    field: str
    op: str  # a FieldFilter operator, or "order" for order_by


@dataclasses.dataclass(frozen=True)
class Query:
    collection: str
    clauses: tuple[Clause, ...]
    where: str  # file:line

    @property
    def fields(self) -> set[str]:
        return {c.field for c in self.clauses}

    def composite(self) -> tuple[str, ...] | None:
        """The fields of the composite index this query needs (equalities first, then the one field it
        ranges over or orders by), or None when single-field indexes serve it (equalities only, or one
        field)."""
        ranged = [c.field for c in self.clauses if c.op in RANGE_OPS or c.op == "order"]
        if len(self.fields) < 2 or not ranged:
            return None
        equal = list(dict.fromkeys(c.field for c in self.clauses if c.field not in ranged))
        return tuple(equal + list(dict.fromkeys(ranged)))


_State = tuple[str, tuple[Clause, ...]]


class _Finder(ast.NodeVisitor):
    def __init__(self, where: str) -> None:
        self.where = where
        self.queries: list[Query] = []
        self.env: dict[str, _State] = {}
        self.inner: set[int] = set()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        saved, self.env = self.env, {}
        self.generic_visit(node)
        self.env = saved

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        state = self.resolve(node.value)
        for target in node.targets:
            if isinstance(target, ast.Name):
                if state is not None:
                    self.env[target.id] = state
                else:
                    self.env.pop(target.id, None)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit_Assign(ast.Assign(targets=[node.target], value=node.value, lineno=node.lineno))

    def visit_Call(self, node: ast.Call) -> None:
        if _method(node) in _REFINE:
            inner = node.func.value  # type: ignore[attr-defined]
            if isinstance(inner, ast.Call) and _method(inner) in _REFINE:
                self.inner.add(id(inner))
            if id(node) not in self.inner:
                state = self.resolve(node)
                if state is not None and state[1]:
                    self.queries.append(Query(state[0], state[1], f"{self.where}:{node.lineno}"))
        self.generic_visit(node)

    def resolve(self, node: ast.expr) -> _State | None:
        """The collection and clauses an expression queries (None: not a query of a known collection)."""
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            root = _SELF_ROOTS.get(node.attr)
            return (root, ()) if root else None
        if isinstance(node, ast.Name):
            return self.env.get(node.id)
        if isinstance(node, ast.IfExp):
            return self.resolve(node.body) or self.resolve(node.orelse)
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            return None
        method = node.func.attr
        if method == "collection" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                name = _CONSTANT_COLLECTIONS.get(arg.value)
            elif isinstance(arg, ast.Name):
                name = _NAMED_COLLECTIONS.get(arg.id)
            else:
                name = None
            return (name, ()) if name else None
        base = self.resolve(node.func.value)
        if base is None:
            return None
        if method == "where":
            clause = _field_filter(node)
            return (base[0], base[1] + ((clause,) if clause else ()))
        if method == "order_by" and node.args and isinstance(node.args[0], ast.Constant):
            return (base[0], base[1] + (Clause(str(node.args[0].value), "order"),))
        if method in _PASS:
            return base
        return None


def _method(node: ast.Call) -> str | None:
    return node.func.attr if isinstance(node.func, ast.Attribute) else None


def _field_filter(call: ast.Call) -> Clause | None:
    """The clause of ``.where(filter=FieldFilter("f", "op", …))`` (or ``.where("f", "op", …)``)."""
    candidates = [k.value for k in call.keywords if k.arg == "filter"] + list(call.args[:1])
    for cand in candidates:
        if isinstance(cand, ast.Call) and getattr(cand.func, "id", getattr(cand.func, "attr", "")) == "FieldFilter":
            args = cand.args
        elif isinstance(cand, ast.Constant):
            args = call.args
        else:
            continue
        if len(args) >= 2 and all(isinstance(a, ast.Constant) for a in args[:2]):
            return Clause(str(args[0].value), str(args[1].value))  # type: ignore[attr-defined]
    return None


def queries_in(source: str, where: str) -> list[Query]:
    finder = _Finder(where)
    finder.visit(ast.parse(source))
    return finder.queries


def code_queries(folder: Path) -> list[Query]:
    """Every query of the ``*.py`` files under ``folder``."""
    out: list[Query] = []
    for path in sorted(folder.rglob("*.py")):
        out += queries_in(path.read_text(encoding="utf-8"), str(path))
    return out


_PY_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def doc_queries(paths: Iterable[Path]) -> list[Query]:
    """Every query of the ```python blocks of the given Markdown files."""
    out: list[Query] = []
    for path in paths:
        for i, block in enumerate(_PY_BLOCK.findall(path.read_text(encoding="utf-8"))):
            out += queries_in(block, f"{path}#block{i + 1}")
    return out


# -- what infra/*.tf declares about indexes (as read by devtools.hcl) ---------------------------------------

def _collection(expr: object) -> str:
    return str(expr).replace("${var.firestore.collection}", JOBS)


def declared_exemptions(tf: dict) -> dict[str, set[str]]:
    """{collection: fields} whose single-field indexes a ``google_firestore_field`` switches off (an
    ``index_config`` with no index in it)."""
    from devtools.hcl import blocks, resources

    out: dict[str, set[str]] = {}
    for body in resources(tf, "google_firestore_field").values():
        config = blocks(body, "index_config")
        if not config or any(c.get("indexes") for c in config):
            continue
        collection = body.get("collection")
        each = body.get("for_each")
        names = list(each.values()) if collection == "${each.value}" and isinstance(each, dict) else [collection]
        for name in names:
            out.setdefault(_collection(name), set()).add(str(body.get("field")))
    return out


def exempt(field: str, fields: set[str]) -> bool:
    """Whether ``field`` (a path, ``copy.status``) is under one of the exempt ``fields`` (a map's
    exemption covers its subfields)."""
    return any(field == f or field.startswith(f"{f}.") for f in fields)


def declared_composites(tf: dict) -> set[tuple[str, tuple[str, ...]]]:
    """{(collection, fields)} of every ``google_firestore_index`` (``__name__`` left out)."""
    from devtools.hcl import blocks, resources

    out = set()
    for body in resources(tf, "google_firestore_index").values():
        fields = [f.get("field_path") for f in blocks(body, "fields")]
        each = (body.get("__each__") or {}).get("fields")
        if (not fields or any(str(f).startswith("${fields.value") for f in fields)) and isinstance(each, list):
            fields = [f.get("field_path") for f in each]
        out.add((_collection(body.get("collection", "")), tuple(str(f) for f in fields if f != "__name__")))
    return out


# -- what the code writes that no query should need ---------------------------------------------------------

def _uses_now(node: ast.expr) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "now" for n in ast.walk(node))


def clock_stamped(sources: Iterable[Path]) -> dict[str, set[str]]:
    """The fields the code stamps with the tick's clock (a value computed from ``now``): a record field set
    by keyword (``polled_at=now``), a transition's key set in the dict that makes one (the dict that holds
    ``event_id``). Sequential values across the whole collection: indexed, they cap it at 500 writes/s."""
    out: dict[str, set[str]] = {JOBS: set(), TRANSITIONS: set()}
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg and node.arg != "now" and _uses_now(node.value):
                out[JOBS].add(node.arg)
            if isinstance(node, ast.Dict):
                keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
                if "event_id" in keys:
                    out[TRANSITIONS] |= {str(k.value) for k, v in zip(node.keys, node.values, strict=True)
                                         if isinstance(k, ast.Constant) and _uses_now(v)}
    return out


def transition_blobs(sources: Iterable[Path]) -> set[str]:
    """Keys of the transition dict (the one holding ``event_id``) whose value is a whole document
    (``….to_doc()``): stored for re-sending, never queried."""
    out: set[str] = set()
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Dict) and "event_id" in [getattr(k, "value", None) for k in node.keys]:
                for k, v in zip(node.keys, node.values, strict=True):
                    if (isinstance(k, ast.Constant) and isinstance(v, ast.Call)
                            and getattr(v.func, "attr", "") == "to_doc"):
                        out.add(str(k.value))
    return out

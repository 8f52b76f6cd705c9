"""Terraform read with python-hcl2, and the little of its expression language the checks need.

``load_terraform(folder)`` merges every ``.tf`` file of a folder into one structure (resources, data sources,
locals, variables, outputs, the ``terraform``/``provider``/``moved`` blocks). Resources whose ``for_each``
iterates a local map are expanded into one body per key, named ``name["key"]`` as Terraform names the
instances, ``each.key``/``each.value.x`` replaced by that entry's values. The rest reads a parsed body:
nested and dynamic blocks (``blocks``, ``one``), references (``refers_to``, ``resolve_locals``), variable
defaults, and numeric expressions (``evaluate``, ``duration_expr``). Strings come unquoted; an expression
keeps its ``${…}`` wrapper."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import hcl2


def parse_hcl(text: str) -> dict:
    options_cls = getattr(hcl2, "SerializationOptions", None)
    if options_cls is None:  # python-hcl2 < 8: strings come unquoted already
        return hcl2.loads(text)
    options = options_cls(strip_string_quotes=True, explicit_blocks=False, with_comments=False,
                          preserve_heredocs=False)
    return hcl2.loads(text, serialization_options=options)


def unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == '"' else key


def load_terraform(folder: Path) -> dict[str, Any]:
    """All .tf files of `folder` merged: {"resource": {type: {name: body}}, "data": ..., "locals": {...},
    "variable": {name: body}, "output": {name: body}, "terraform": [...], "provider": [...]}."""
    merged: dict[str, Any] = {"resource": {}, "data": {}, "locals": {}, "variable": {}, "output": {},
                              "terraform": [], "provider": [], "moved": []}
    for path in sorted(folder.glob("*.tf")):
        doc = parse_hcl(path.read_text(encoding="utf-8"))
        for kind in ("resource", "data"):
            for item in doc.get(kind, []):
                for rtype, named in item.items():
                    for name, body in named.items():
                        merged[kind].setdefault(unquote(rtype), {})[unquote(name)] = body
        for item in doc.get("locals", []):
            merged["locals"].update(item)
        for kind in ("variable", "output"):
            for item in doc.get(kind, []):
                for name, body in item.items():
                    merged[kind][unquote(name)] = body
        merged["terraform"] += doc.get("terraform", [])
        merged["provider"] += doc.get("provider", [])
        merged["moved"] += doc.get("moved", [])
    return expand_for_each(merged)


_FOR_EACH_LOCAL = re.compile(r"\$\{(?:local\.(\w+)|\{for \w+, \w+ in local\.(\w+) : .*\})\}", re.S)


def _expr_text(value: Any) -> str | None:
    """A parsed value as the text of a Terraform expression (None for maps and lists)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        match = re.fullmatch(r"\$\{(.*)\}", value, re.S)
        return match[1] if match else json.dumps(value)
    return None


def _substitute(node: Any, key: str, each: dict) -> Any:
    """`node` with each.key and each.value.x replaced by this instance's key and values."""
    if isinstance(node, dict):
        return {k: _substitute(v, key, each) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, key, each) for v in node]
    if not isinstance(node, str):
        return node
    whole = re.fullmatch(r"\$\{each\.value\.(\w+)\}", node)
    if whole and whole[1] in each:
        return copy.deepcopy(each[whole[1]])
    if node == "${each.key}":
        return key

    def in_template(match: re.Match) -> str:
        value = each.get(match[1], match[0])
        return str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else match[0]

    def in_expression(match: re.Match) -> str:
        text = _expr_text(each[match[1]]) if match[1] in each else None
        return f"({text})" if text is not None else match[0]

    node = re.sub(r"\$\{each\.value\.(\w+)\}", in_template, node).replace("${each.key}", key)
    node = re.sub(r"\beach\.value\.(\w+)\b(?!\s*[\[.])", in_expression, node)
    return re.sub(r"\beach\.key\b", json.dumps(key), node)


def expand_for_each(tf: dict) -> dict:
    """Resources whose for_each iterates a local map become one body per key, named `name["key"]`;
    each body keeps its entry under `__each__` (for values no expression text can carry, e.g. maps)."""
    for rtype, named in tf["resource"].items():
        expanded = {}
        for name, body in named.items():
            match = _FOR_EACH_LOCAL.fullmatch(str(body.get("for_each", "")).strip())
            source = tf["locals"].get(match[1] or match[2]) if match else None
            if not isinstance(source, dict):
                expanded[name] = body
                continue
            for key, each in source.items():
                each = each if isinstance(each, dict) else {}
                instance = _substitute({k: v for k, v in body.items() if k != "for_each"}, key, each)
                instance["__each__"] = each
                expanded[f'{name}["{key}"]'] = instance
        tf["resource"][rtype] = expanded
    return tf


def resolve_locals(tf: dict, text: Any, depth: int = 6) -> str:
    """`text` with ${local.a.b} references replaced by the locals' (string) values, recursively."""
    text = str(text)

    def sub(match: re.Match) -> str:
        value: Any = tf["locals"]
        for part in match[1].split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value if isinstance(value, str) else match[0]

    for _ in range(depth):
        new = re.sub(r"\$\{local\.([\w.]+)\}", sub, text)
        if new == text:
            break
        text = new
    return text


def blocks(body: dict, name: str) -> list[dict]:
    """Nested blocks `name` of a body, static ones and the `content` of `dynamic "name"` ones."""
    found = body.get(name, [])
    found = [found] if isinstance(found, dict) else list(found)
    for dyn in body.get("dynamic", []):
        for dname, dbody in dyn.items():
            if unquote(dname) == name:
                found += blocks(dbody, "content")
    return found


def one(body: dict, name: str) -> dict:
    found = blocks(body, name)
    return found[0] if found else {}


def resources(tf: dict, rtype: str) -> dict[str, dict]:
    return tf["resource"].get(rtype, {})


def strings(node: Any):
    """Every string anywhere in a parsed structure (keys too)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def refers_to(expr: Any, rtype: str, name: str) -> bool:
    return isinstance(expr, str) and f"{rtype}.{name}." in expr


def variable_defaults(tf: dict) -> dict[str, Any]:
    """Defaults of variables, with `optional(type, default)` attributes of object variables flattened as
    `name.attr` (numbers only, which is what the expressions checked here need)."""
    values: dict[str, Any] = {}
    for name, body in tf["variable"].items():
        if isinstance(body.get("default"), int | float):
            values[name] = body["default"]
        type_expr = body.get("type", "")
        if isinstance(type_expr, str):
            for attr, default in re.findall(r"(\w+)\s*=\s*optional\(\s*number\s*,\s*([0-9.]+)\s*\)", type_expr):
                values[f"{name}.{attr}"] = float(default) if "." in default else int(default)
    return values


_ARITH = re.compile(r"^[0-9+\-*/(). ]+$")


def evaluate(expr: Any, values: dict[str, Any]) -> float | None:
    """Evaluate a numeric Terraform expression built from numbers, `var.x[.y]`, + - * / and tostring().
    None when it uses anything else."""
    if isinstance(expr, int | float):
        return expr
    if not isinstance(expr, str):
        return None
    text = expr.strip()
    if text.startswith("${") and text.endswith("}"):
        text = text[2:-1]
    text = re.sub(r"\btostring\(", "(", text)

    def sub(match: re.Match) -> str:
        key = match[1]
        if key not in values:
            raise KeyError(key)
        return repr(values[key])

    try:
        text = re.sub(r"\bvar\.([A-Za-z_][\w.]*)", sub, text)
    except KeyError:
        return None
    if not _ARITH.match(text):
        return None
    return eval(text, {"__builtins__": {}}, {})  # noqa: S307 - digits and operators only (checked above)


def duration_expr(expr: str) -> str | None:
    """"${var.x - 10}s" -> "${var.x - 10}"; "300s" -> "300"."""
    match = re.fullmatch(r"(.*)s", expr.strip()) if isinstance(expr, str) else None
    return match[1] if match else None

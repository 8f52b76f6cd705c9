"""Terraform configuration checked against provider schemas, without Terraform or the providers.

``terraform validate`` needs the providers downloaded; this reads the configuration with python-hcl2 and
holds every ``resource`` and ``data`` block against a schema file in the shape of ``terraform providers
schema -json`` (``provider_schemas`` → source address → ``resource_schemas``/``data_source_schemas`` → type
→ ``block``; ``python -m devtools.tfschema extract`` writes one). Reported, each as one line naming the file,
the block and the path inside it:

- a resource or data source type the provider does not have;
- an argument or block the schema does not have, and a computed-only attribute that is set;
- a block written as an argument (``x = {...}``) and an argument written as a block (``x {...}``);
- a literal of the wrong shape (a list or map for a string, a single value for a list, ...);
- a missing required argument or required block;
- a block given more often than its nesting allows (a single block twice, more than max_items);
- ``dynamic "x"``: x must be a block of the schema, with one ``content`` checked as block x;
- a reference ``type.name.attr`` or ``data.type.name.attr`` (and on through ``[0]``, ``[*]``, ``["key"]``
  and nested blocks and objects) to a block that is not declared or an attribute the schema does not
  have, an instance key missing on a resource with count/for_each (or given to one without), and an
  index into a set.

Meta-arguments (count, for_each, depends_on, provider, lifecycle, provisioner, connection) are allowed;
``timeouts`` is checked like any block (the providers declare it where a resource has it). Expressions
are not evaluated: a value computed by an expression is not type-checked, and a reference through a
local value or an iteration variable is not followed.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

REGISTRY = "registry.terraform.io"
META_ARGUMENTS = {
    "resource": {"count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection"},
    "data": {"count", "for_each", "depends_on", "provider", "lifecycle"},
}
NOT_CHECKED_FOR_REFERENCES = {"moved", "import", "removed"}  # they name addresses, not values
_DYNAMIC_KEYS = {"for_each", "iterator", "labels", "content"}


def _options() -> Any:
    return hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=True, with_comments=False,
                                     preserve_heredocs=False)


def _unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == '"' else key


def _is_block_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and v.get("__is_block__")
                                                           for v in value)


def _items(body: dict) -> Iterator[tuple[str, Any]]:
    for key, value in body.items():
        if not key.startswith("__"):
            yield _unquote(key), value


# ----------------------------------------------------------------------------------------- loading

@dataclass
class Block:
    """One ``resource`` or ``data`` block."""

    kind: str  # "resource" | "data"
    type: str
    name: str
    body: dict
    file: str

    @property
    def address(self) -> str:
        return f"{'data.' if self.kind == 'data' else ''}{self.type}.{self.name}"

    @property
    def where(self) -> str:
        return f"{self.file}: {self.kind} {self.type}.{self.name}"


@dataclass
class Config:
    """The .tf files of one or more folders: their resource/data blocks, provider local names, and every
    value whose references are checked (where, value)."""

    blocks: list[Block] = field(default_factory=list)
    providers: dict[str, str] = field(default_factory=dict)  # local name -> source address
    values: list[tuple[str, Any]] = field(default_factory=list)

    def source_of(self, block: Block) -> str:
        """The provider source address a block uses: its ``provider`` meta-argument's local name, else the
        type's prefix (Terraform's default), through required_providers."""
        local = _expression(block.body.get("provider")) or block.type.split("_")[0]
        local = local.split(".")[0]
        return self.providers.get(local) or normalize_source(f"hashicorp/{local}")

    def declared(self) -> dict[tuple[str, str, str], Block]:
        return {(b.kind, b.type, b.name): b for b in self.blocks}


def normalize_source(source: str) -> str:
    """``hashicorp/google`` -> ``registry.terraform.io/hashicorp/google``."""
    return source if source.count("/") >= 2 else f"{REGISTRY}/{source}"


def _expression(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    found = re.fullmatch(r"\$\{(.*)\}", value, re.S)
    return (found[1] if found else value).strip()


def load_config(paths: Iterable[Path], relative_to: Path | None = None) -> Config:
    """Parse ``.tf`` files (a folder: every ``*.tf`` in it, not recursing) into one Config."""
    config = Config()
    for given in paths:
        files = sorted(Path(given).glob("*.tf")) if Path(given).is_dir() else [Path(given)]
        for path in files:
            name = str(path.relative_to(relative_to)) if relative_to else str(path)
            doc = hcl2.loads(path.read_text(encoding="utf-8"), serialization_options=_options())
            _collect(doc, name, config)
    return config


def _collect(doc: dict, file: str, config: Config) -> None:
    for top, entries in doc.items():
        if top.startswith("__") or not isinstance(entries, list):
            continue
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            if top in ("resource", "data"):
                for rtype, named in _items(entry):
                    for name, body in _items(named):
                        block = Block(top, rtype, name, body, file)
                        config.blocks.append(block)
                        config.values.append((block.where, body))
                continue
            if top == "terraform":
                for required in entry.get("required_providers", []):
                    for local, spec in _items(required):
                        if isinstance(spec, dict) and spec.get("source"):
                            config.providers[local] = normalize_source(str(spec["source"]))
            if top not in NOT_CHECKED_FOR_REFERENCES:
                config.values.append((f"{file}: {top}", entry))


# ------------------------------------------------------------------------------------------ schema

def load_schema(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _type_schema(schema: dict, source: str, kind: str, rtype: str) -> dict | None:
    provider = schema.get("provider_schemas", {}).get(source)
    if provider is None:
        return None
    found = provider.get("resource_schemas" if kind == "resource" else "data_source_schemas", {}).get(rtype)
    return None if found is None else found.get("block", {})


def _provider_label(schema: dict, source: str) -> str:
    provider = schema.get("provider_schemas", {}).get(source, {})
    return f"{source.removeprefix(REGISTRY + '/')} {provider.get('version', '?')}".strip()


# ------------------------------------------------------------------------------------------- blocks

def check_blocks(config: Config, schema: dict) -> list[str]:
    """Every resource and data block against its provider's schema."""
    problems: list[str] = []
    for block in config.blocks:
        source = config.source_of(block)
        if source not in schema.get("provider_schemas", {}):
            problems.append(f"{block.where}: no schema for provider {source}")
            continue
        block_schema = _type_schema(schema, source, block.kind, block.type)
        if block_schema is None:
            problems.append(f"{block.where}: {_provider_label(schema, source)} has no "
                            f"{'data source' if block.kind == 'data' else 'resource type'} {block.type} "
                            "(or the schema file lacks it: regenerate it, make tf-schema)")
            continue
        _check_body(block.body, block_schema, block.where, problems, META_ARGUMENTS[block.kind])
    return problems


def _check_body(body: dict, schema: dict, where: str, problems: list[str], meta: Iterable[str] = ()) -> None:
    attributes = schema.get("attributes", {})
    block_types = schema.get("block_types", {})
    given: Counter[str] = Counter()
    dynamic: set[str] = set()
    meta = set(meta)
    for key, value in _items(body):
        if key in meta:
            continue
        if key == "dynamic" and isinstance(value, list) and all(isinstance(v, dict) for v in value):
            for item in value:
                for label, spec in _items(item):
                    _check_dynamic(label, spec, attributes, block_types, where, problems)
                    dynamic.add(label)
            continue
        if key in attributes:
            attribute = attributes[key]
            if _is_block_list(value):
                problems.append(f"{where}: {key} is an argument, not a block: write {key} = ...")
            elif attribute.get("computed") and not (attribute.get("optional") or attribute.get("required")):
                problems.append(f"{where}: {key} is read-only (computed by the provider); it cannot be set")
            elif (wrong := _literal_mismatch(value, attribute)) is not None:
                problems.append(f"{where}: {key}: {wrong}")
            continue
        if key in block_types:
            if not _is_block_list(value):
                problems.append(f"{where}: {key} is a block, not an argument: write {key} {{ ... }}, not {key} = ...")
                continue
            given[key] += len(value)
            for instance in value:
                _check_body(instance, block_types[key].get("block", {}), f"{where}: {key}", problems)
            continue
        problems.append(f"{where}: unknown argument or block {key}{_suggest(key, [*attributes, *block_types])}")
    for name, spec in block_types.items():
        most = 1 if spec.get("nesting_mode") == "single" else spec.get("max_items")
        if most and given[name] > most:
            problems.append(f"{where}: block {name} given {given[name]} times; the schema allows at most {most}")
        least = spec.get("min_items") or 0
        if given[name] < least and name not in dynamic:
            problems.append(f"{where}: missing required block {name}")
    for name, spec in attributes.items():
        if spec.get("required") and name not in {key for key, _ in _items(body)}:
            problems.append(f"{where}: missing required argument {name}")


def _check_dynamic(label: str, spec: Any, attributes: dict, block_types: dict, where: str,
                   problems: list[str]) -> None:
    here = f'{where}: dynamic "{label}"'
    if label in attributes:
        problems.append(f"{here}: {label} is an argument, not a block (dynamic makes blocks only)")
        return
    if label not in block_types:
        problems.append(f"{here}: unknown block {label}{_suggest(label, list(block_types))}")
        return
    if not isinstance(spec, dict):
        problems.append(f"{here}: not a block")
        return
    for key, _ in _items(spec):
        if key not in _DYNAMIC_KEYS:
            problems.append(f"{here}: unexpected {key} (a dynamic block takes for_each, iterator, labels, content)")
    if "for_each" not in spec:
        problems.append(f"{here}: missing for_each")
    content = spec.get("content")
    if not _is_block_list(content) or len(content) != 1:
        problems.append(f"{here}: needs exactly one content block")
        return
    _check_body(content[0], block_types[label].get("block", {}), f"{where}: {label} (dynamic content)", problems)


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _kind(cty: Any) -> str:
    return cty if isinstance(cty, str) else cty[0]


def _literal_mismatch(value: Any, attribute: dict) -> str | None:
    """What is wrong with a literal value for this attribute, or None (also for any expression)."""
    if "nested_type" in attribute:
        nesting = attribute["nested_type"].get("nesting_mode", "single")
        kind = {"single": "object", "list": "list", "set": "set", "map": "map"}.get(nesting, "dynamic")
    else:
        kind = _kind(attribute.get("type", "dynamic"))
    if value is None or kind == "dynamic" or (isinstance(value, str) and ("${" in value or "%{" in value)):
        return None
    is_collection = isinstance(value, list | dict)
    if kind in ("string", "number", "bool"):
        if is_collection:
            return f"a {'list' if isinstance(value, list) else 'map'} where the schema wants a {kind}"
        if kind == "number" and isinstance(value, str) and not re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", value):
            return f"{value!r} is not a number"
        if kind == "bool" and isinstance(value, str | int | float) and not isinstance(value, bool) \
                and str(value) not in ("true", "false"):
            return f"{value!r} is not a bool"
        return None
    if kind in ("list", "set"):
        return None if isinstance(value, list) else f"a single value where the schema wants a {kind}"
    if kind in ("map", "object"):
        return None if isinstance(value, dict) else f"not a map/object where the schema wants a {kind}"
    return None


# --------------------------------------------------------------------------------------- references

_REFERENCE = re.compile(
    r"(?<![\w.\-])(data\.)?([a-z][a-z0-9_]*)\.([A-Za-z_][\w-]*)((?:\s*\[[^\[\]]*\]|\.\*|\.[A-Za-z_][\w-]*)*)")
_STEP = re.compile(r"\s*\[([^\[\]]*)\]|\.(\*)|\.([A-Za-z_][\w-]*)")


def code_parts(text: str) -> list[str]:
    """The expression code of a serialized value: what is inside ``${...}``/``%{...}`` (and the whole
    of a value that is one expression), with the text of string literals and template text left out."""
    parts: list[str] = []
    i, n = 0, len(text)

    def template(i: int, closing: str | None) -> int:
        # template text up to the closing quote (None: to the end); code inside ${ } and %{ }
        while i < n:
            if text[i] == "\\":
                i += 2
            elif closing is not None and text[i] == closing:
                return i + 1
            elif text.startswith(("$${", "%%{"), i):  # escaped: literal text
                i += 3
            elif text.startswith(("${", "%{"), i):
                i = code(i + 2)
            else:
                i += 1
        return i

    def code(i: int) -> int:
        depth, start, buf = 1, i, []
        while i < n:
            ch = text[i]
            if ch == '"':
                buf.append(text[start:i] + '""')
                i = template(i + 1, '"')
                start = i
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    buf.append(text[start:i])
                    parts.append("".join(buf))
                    return i + 1
            i += 1
        buf.append(text[start:i])
        parts.append("".join(buf))
        return i

    template(i, None)
    return parts


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if not key.startswith("__"):
                yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def references(value: Any) -> Iterator[tuple[str, str, str, str]]:
    """(kind, type, name, traversal) of each ``[data.]type.name...`` reference in a value's expressions."""
    for text in _strings(value):
        for part in code_parts(text):
            for m in _REFERENCE.finditer(part):
                yield ("data" if m[1] else "resource"), m[2], m[3], m[4] or ""


def check_references(config: Config, schema: dict) -> list[str]:
    declared = config.declared()
    declared_types = {b.type for b in config.blocks if b.kind == "resource"}
    prefixes = tuple(f"{local.replace('-', '_')}_" for local in
                     {*config.providers, *(s.rsplit("/", 1)[-1] for s in schema.get("provider_schemas", {}))})
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for where, value in config.values:
        for kind, rtype, name, tail in references(value):
            if kind == "resource" and rtype not in declared_types and not rtype.startswith(prefixes):
                continue  # var.x, local.x, each.value, an iteration variable, ...
            text = f"{'data.' if kind == 'data' else ''}{rtype}.{name}{tail}"
            if (where, text) in seen:
                continue
            seen.add((where, text))
            problem = _check_reference(kind, rtype, name, tail, declared, config, schema)
            if problem:
                problems.append(f"{where}: {text}: {problem}")
    return problems


def _steps(tail: str) -> list[tuple[str, str]]:
    """("index", key) | ("splat", "*") | ("attr", name) for each step of a traversal."""
    out = []
    for m in _STEP.finditer(tail):
        if m[1] is not None:
            key = m[1].strip()
            out.append(("splat", "*") if key == "*" else ("index", key))
        elif m[2]:
            out.append(("splat", "*"))
        else:
            out.append(("attr", m[3]))
    return out


def _check_reference(kind: str, rtype: str, name: str, tail: str, declared: dict, config: Config,
                     schema: dict) -> str | None:
    block = declared.get((kind, rtype, name))
    if block is None:
        return f"no {'data source' if kind == 'data' else 'resource'} {rtype}.{name} is declared"
    block_schema = _type_schema(schema, config.source_of(block), kind, rtype)
    if block_schema is None:
        return None  # reported by check_blocks
    steps = _steps(tail)
    if not steps:
        return None
    repeated = "count" in block.body or "for_each" in block.body
    if repeated:
        if steps[0][0] == "attr":
            return (f"{block.address} has {'count' if 'count' in block.body else 'for_each'}: give an instance "
                    f"key ([0], [\"key\"] or [*]) before .{steps[0][1]}")
        steps = steps[1:]
    elif steps[0][0] == "index":
        return f"{block.address} has no count or for_each: it has no instances to index"
    return _walk_block(steps, block_schema, block.address)


def _walk_block(steps: list[tuple[str, str]], block: dict, path: str) -> str | None:
    if not steps:
        return None
    step, key = steps[0]
    if step == "splat":
        return _walk_block(steps[1:], block, path)
    if step == "index":
        return None  # obj["name"]: not followed
    attributes, block_types = block.get("attributes", {}), block.get("block_types", {})
    if key in attributes:
        attribute = attributes[key]
        if "nested_type" in attribute:
            return _walk_nested(steps[1:], attribute["nested_type"], f"{path}.{key}")
        return _walk_type(steps[1:], attribute.get("type", "dynamic"), f"{path}.{key}")
    if key in block_types:
        spec = block_types[key]
        nesting = spec.get("nesting_mode", "list")
        inner = spec.get("block", {})
        if nesting == "single" or nesting == "group":
            return _walk_block(steps[1:], inner, f"{path}.{key}")
        return _walk_collection(steps[1:], nesting, lambda rest, p: _walk_block(rest, inner, p), f"{path}.{key}")
    return f"{path} has no attribute {key}{_suggest(key, [*attributes, *block_types])}"


def _walk_nested(steps: list[tuple[str, str]], nested: dict, path: str) -> str | None:
    inner = {"attributes": nested.get("attributes", {})}
    nesting = nested.get("nesting_mode", "single")
    if nesting == "single":
        return _walk_block(steps, inner, path)
    return _walk_collection(steps, nesting, lambda rest, p: _walk_block(rest, inner, p), path)


def _walk_collection(steps: list[tuple[str, str]], kind: str, element: Any, path: str) -> str | None:
    """Steps into a list, set or map whose elements ``element(steps, path)`` walks."""
    if not steps:
        return None
    step, key = steps[0]
    if step == "attr":
        if kind == "map":
            return element(steps[1:], f"{path}.{key}")
        return f"{path} is a {kind}: index it ([0]) or use [*] before .{key}"
    if step == "index" and kind == "set":
        return f"{path} is a set: it cannot be indexed (use [*], one() or a for expression)"
    return element(steps[1:], f"{path}[{key}]")


def _walk_type(steps: list[tuple[str, str]], cty: Any, path: str) -> str | None:
    if not steps:
        return None
    kind = _kind(cty)
    if kind == "dynamic":
        return None
    if kind in ("list", "set", "map"):
        return _walk_collection(steps, kind, lambda rest, p: _walk_type(rest, cty[1], p), path)
    if kind == "object":
        step, key = steps[0]
        if step == "splat":
            return _walk_type(steps[1:], cty, path)
        if step != "attr":
            return None
        fields = cty[1]
        if key not in fields:
            return f"{path} has no attribute {key}{_suggest(key, list(fields))}"
        return _walk_type(steps[1:], fields[key], f"{path}.{key}")
    step, key = steps[0]
    if step == "splat":
        return _walk_type(steps[1:], cty, path)
    return f"{path} is a {kind}: it has no {'attribute ' + key if step == 'attr' else 'elements'}"


def check(config: Config, schema: dict) -> list[str]:
    """Every problem of the configuration against the schema (empty: none found)."""
    return check_blocks(config, schema) + check_references(config, schema)


# ------------------------------------------------------------------------------------- version pins

def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.strip().split("-")[0].split("."))


def admits(constraint: str, version: str) -> bool:
    """Whether a Terraform version constraint (``~> 8.7.0``, ``>= 1.5, < 2``, ...) admits ``version``."""
    have = _version(version)
    for clause in constraint.split(","):
        found = re.fullmatch(r"\s*(~>|>=|<=|!=|=|>|<)?\s*([\d.]+)\s*", clause)
        if not found:
            raise ValueError(f"cannot read version constraint {constraint!r}")
        op, want = found[1] or "=", _version(found[2])
        padded = have + (0,) * max(0, len(want) - len(have))
        if op == "~>":
            upper = (*want[:-2], want[-2] + 1) if len(want) > 1 else None
            ok = padded >= want and (upper is None or padded[:len(upper)] < upper)
        else:
            ok = {"=": padded == want, "!=": padded != want, ">": padded > want, ">=": padded >= want,
                  "<": padded < want, "<=": padded <= want}[op]
        if not ok:
            return False
    return True

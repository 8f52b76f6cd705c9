"""A Terraform provider's resource schema, read out of its prebuilt CDK bindings (a PyPI wheel).

CDK Terrain (``cdktn-provider-*``) and CDK for Terraform (``cdktf-cdktf-provider-*``) publish one wheel per
provider version. Its jsii bundle (``<module>/_jsii/*.jsii.tgz``) holds ``package/package.json``, which names
the provider and version the bindings were generated from, and one ``package/lib/<name>/index.js`` per
resource and data source, generated from ``terraform providers schema -json``. Its source map carries the
TypeScript it was compiled from (``sourcesContent``; older bindings' JavaScript lost the comments read
here, the TypeScript never does). In that TypeScript:

- the resource class carries ``static tfResourceType = "google_x"`` and extends ``TerraformResource`` or
  ``TerraformDataSource``;
- every attribute and block has a getter preceded by ``// <name> - computed: B, optional: B, required: B``
  (the schema's own flags), and the getter says the kind: ``getStringAttribute``, ``getNumberAttribute``,
  ``getBooleanAttribute``, ``getListAttribute`` (``Fn.tolist(...)`` for a set), ``getStringMapAttribute`` …,
  or a nested object: ``new <X>OutputReference(this, "name")`` (one object) or
  ``new <X>List(this, "name", wrapsSet)`` (a list, or a set when wrapsSet is true);
- ``synthesizeHclAttributes()`` (and ``<x>ToHclTerraform(struct)`` for a nested object) lists every
  argument with ``isBlock`` and ``type`` (``simple``/``list``/``set``/``map``/``struct``): a nested object
  with ``isBlock: true`` is a block (``struct``: nesting single), otherwise an attribute of object type.
  Computed-only nested objects are not arguments, so they are attributes (as Terraform has them).

The result has the shape of ``terraform providers schema -json``: a block is ``{"attributes": {name:
{"type": cty-type, "required"|"optional"|"computed": true}}, "block_types": {name: {"nesting_mode":
"single"|"list"|"set", "min_items": n, "max_items": n, "block": {...}}}}``; min_items is 1 for a required
block (the bindings say no more), max_items is 1 for a block the bindings model as one object.
"""

from __future__ import annotations

import base64
import io
import json
import re
import tarfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TYPE_DECL = re.compile(rb'tfResourceType = "([^"]+)";')
_SOURCE_MAP = re.compile(rb"^//# sourceMappingURL=data:application/json;base64,(\S+)\s*\Z", re.M)
_KINDS = {"TerraformResource": "resource", "TerraformDataSource": "data"}
_MAIN_CLASS = re.compile(r"^export class (\w+) extends cdkt[nf]\.(Terraform\w+) \{$", re.M)
_CLASS = re.compile(r"^export class (\w+) extends [\w.]+ \{\n(.*?)^\}$", re.M | re.S)
_FUNCTION = re.compile(r"^export function (\w+)\(struct\?: [^\n]*\): any \{\n(.*?)^\}$", re.M | re.S)
_GETTER = re.compile(r"^ +// (\S+) - computed: (true|false), optional: (true|false), required: (true|false)$", re.M)
_HCL_ENTRY = re.compile(r'(?:"([^"]+)"|(\w+)): \{\s*value: [^\n]*\n\s*isBlock: (true|false),\s*'
                        r'type: "(\w+)",\s*storageClassType: "([^"]+)"')
_SECTION_END = re.compile(r"^ +// =+$|^ +(?:protected |public )?synthesize\w*\(\)", re.M)

_NESTED_ONE = re.compile(r'= new (\w+)OutputReference\(this, "[^"]+"\)')
_NESTED_LIST = re.compile(r'= new (\w+)List\(this, "[^"]+", (true|false)\)')
_NESTED_MAP = re.compile(r'= new (\w+)Map\(this, "[^"]+"\)')
_CDK_COLLECTION = re.compile(r'= new cdkt[nf]\.(\w+)\(this, "[^"]+"(?:, (true|false))?\)')
_GET_ATTRIBUTE = re.compile(r"return (cdkt[nf]\.Fn\.tolist\()?this\.get(\w*)Attribute\('")
_DYNAMIC = re.compile(r"return this\.interpolationForAttribute\('")

# cdktn.get<X>Attribute -> cty type; the list forms become sets when wrapped in Fn.tolist.
_SCALARS: dict[str, Any] = {
    "String": "string", "Number": "number", "Boolean": "bool",
    "List": ["list", "string"], "NumberList": ["list", "number"], "BooleanList": ["list", "bool"],
    "StringMap": ["map", "string"], "NumberMap": ["map", "number"], "BooleanMap": ["map", "bool"],
    "AnyMap": ["map", "dynamic"],
}
# new cdktn.<X>(this, "name"[, wrapsSet]) -> cty type (wrapsSet turns a list into a set)
_CDK_TYPES: dict[str, Any] = {
    "StringMap": ["map", "string"], "NumberMap": ["map", "number"], "BooleanMap": ["map", "bool"],
    "AnyMap": ["map", "dynamic"],
    "StringMapList": ["list", ["map", "string"]], "NumberMapList": ["list", ["map", "number"]],
    "BooleanMapList": ["list", ["map", "bool"]], "AnyMapList": ["list", ["map", "dynamic"]],
    "StringListList": ["list", ["list", "string"]], "NumberListList": ["list", ["list", "number"]],
    "BooleanListList": ["list", ["list", "bool"]],
    "StringListMap": ["map", ["list", "string"]], "NumberListMap": ["map", ["list", "number"]],
    "BooleanListMap": ["map", ["list", "bool"]], "AnyListMap": ["map", ["list", "dynamic"]],
}


class BindingsError(Exception):
    """The bindings do not hold what was asked for, or hold something this reader does not understand."""


@dataclass
class Bindings:
    """What one bindings wheel holds: its provider and the generated code of the types asked for."""

    package: str  # e.g. "cdktn-provider-google==21.1.0"
    provider_source: str  # e.g. "registry.terraform.io/hashicorp/google"
    provider_version: str  # e.g. "8.7.0"
    code: dict[tuple[str, str], str] = field(default_factory=dict)  # ("resource"|"data", type) -> index.ts


def wheel_package(wheel: Path) -> str:
    """``name==version`` of a wheel, from its file name (``name-version-...whl``)."""
    name, version = wheel.name.split("-")[:2]
    return f"{name.replace('_', '-')}=={version}"


def _jsii_tarball(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith(".jsii.tgz")]
        if len(names) != 1:
            raise BindingsError(f"{wheel.name}: expected one .jsii.tgz, found {names}")
        return zf.read(names[0])


def _provider(meta: dict[str, Any], wheel: Path) -> tuple[str, str]:
    provider = (meta.get("cdktn") or meta.get("cdktf") or {}).get("provider") or {}
    if not provider.get("name") or not provider.get("version"):
        raise BindingsError(f"{wheel.name}: package.json names no provider")
    return provider["name"], provider["version"]


def provider_of(wheel: Path) -> Bindings:
    """The provider a bindings wheel was generated from (no types read)."""
    with tarfile.open(fileobj=io.BytesIO(_jsii_tarball(wheel)), mode="r:gz") as tar:
        for member in tar:
            if member.name == "package/package.json":
                meta = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
                return Bindings(wheel_package(wheel), *_provider(meta, wheel))
    raise BindingsError(f"{wheel.name}: no package.json in the jsii bundle")


def read_bindings(wheel: Path, wanted: Iterable[tuple[str, str]] | None = None) -> Bindings:
    """Open a bindings wheel and keep the code of the ``(kind, type)`` pairs in ``wanted`` (kind is
    "resource" or "data"; None keeps every type). Raises BindingsError naming any type not found."""
    want = None if wanted is None else set(wanted)
    want_names = None if want is None else {name.encode() for _, name in want}
    meta: dict[str, Any] | None = None
    code: dict[tuple[str, str], str] = {}
    folder_of: dict[tuple[str, str], str] = {}
    structs: dict[str, list[tuple[str, bytes]]] = {}  # the largest types keep nested classes in index-structs/
    with tarfile.open(fileobj=io.BytesIO(_jsii_tarball(wheel)), mode="r:gz") as tar:
        for member in tar:
            if member.name == "package/package.json":
                meta = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
                continue
            parts = member.name.split("/")
            if not (member.isfile() and parts[:2] == ["package", "lib"] and member.name.endswith(".js")):
                continue
            if len(parts) == 5 and parts[3] == "index-structs" and parts[4].startswith("structs"):
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                structs.setdefault(parts[2], []).append((member.name, data))
                continue
            if not (len(parts) == 4 and parts[3] == "index.js"):
                continue
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            found = _TYPE_DECL.search(data)
            if not found or (want_names is not None and found[1] not in want_names):
                continue
            text = _typescript(data, f"{wheel.name}:{member.name}")
            main = _MAIN_CLASS.search(text)
            if not main:
                raise BindingsError(f"{wheel.name}:{member.name}: no Terraform class")
            if main[2] not in _KINDS:  # ephemeral resources, provider functions
                continue
            key = (_KINDS[main[2]], found[1].decode())
            if want is None or key in want:
                code[key] = text
                folder_of[key] = parts[2]
    for key, folder in folder_of.items():
        extra = [_typescript(data, f"{wheel.name}:{name}") for name, data in sorted(structs.get(folder, []))]
        code[key] = "\n".join([code[key], *extra])
    if meta is None:
        raise BindingsError(f"{wheel.name}: no package.json in the jsii bundle")
    source, version = _provider(meta, wheel)
    missing = sorted(want - code.keys()) if want is not None else []
    if missing:
        raise BindingsError(f"{wheel_package(wheel)} (provider {source} {version}) has no "
                            + ", ".join(f"{kind} {name}" for kind, name in missing))
    return Bindings(wheel_package(wheel), source, version, code)


def _typescript(javascript: bytes, where: str) -> str:
    """The TypeScript an index.js was compiled from (its inline source map's sourcesContent)."""
    found = _SOURCE_MAP.search(javascript)
    if not found:
        raise BindingsError(f"{where}: no inline source map")
    sources = json.loads(base64.b64decode(found[1])).get("sourcesContent") or []
    if len(sources) != 1:
        raise BindingsError(f"{where}: expected one source in the source map, found {len(sources)}")
    return sources[0]


# ----------------------------------------------------------------------------------- one index.ts

def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


def _hcl_entries(text: str) -> dict[str, tuple[bool, str]]:
    """name -> (isBlock, type) of every argument listed in a synthesizeHclAttributes-like body."""
    return {(m[1] or m[2]): (m[3] == "true", m[4]) for m in _HCL_ENTRY.finditer(text)}


def _sections(body: str) -> list[tuple[str, dict[str, bool], str]]:
    """(name, flags, getter code) of each attribute or block of a class body."""
    marks = list(_GETTER.finditer(body))
    out = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(body)
        chunk = body[mark.end():end]
        stop = _SECTION_END.search(chunk)
        chunk = chunk[:stop.start()] if stop else chunk
        flags = {"computed": mark[2] == "true", "optional": mark[3] == "true", "required": mark[4] == "true"}
        out.append((mark[1], flags, chunk))
    return out


class _Module:
    """The classes and functions of one generated index.ts."""

    def __init__(self, text: str, where: str):
        self.where = where
        self.classes = {m[1]: m[2] for m in _CLASS.finditer(text)}
        self.functions = {m[1]: m[2] for m in _FUNCTION.finditer(text)}
        main = _MAIN_CLASS.search(text)
        if not main:
            raise BindingsError(f"{where}: no resource or data source class")
        self.main = main[1]

    def schema(self) -> dict[str, Any]:
        body = self.classes[self.main]
        start = body.find("synthesizeHclAttributes()")
        hcl = _hcl_entries(body[start:]) if start >= 0 else {}
        return {"block": self._block(body, hcl, self.main)}

    def _struct_block(self, struct: str, outer: tuple[str, ...]) -> dict[str, Any]:
        cls = struct + "OutputReference"
        if cls not in self.classes:
            raise BindingsError(f"{self.where}: no class {cls}")
        if cls in outer:
            raise BindingsError(f"{self.where}: {cls} contains itself")
        hcl = _hcl_entries(self.functions.get(_lower_first(struct) + "ToHclTerraform", ""))
        return self._block(self.classes[cls], hcl, cls, outer)

    def _block(self, body: str, hcl: dict[str, tuple[bool, str]], owner: str,
               outer: tuple[str, ...] = ()) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        block_types: dict[str, Any] = {}
        for name, flags, code in _sections(body):
            mode = {key: True for key, value in flags.items() if value}
            is_block, hcl_type = hcl.get(name, (False, ""))
            nested = self._nested(code)
            if nested is None:
                attributes[name] = {"type": self._scalar(code, f"{owner}.{name}"), **mode}
                continue
            shape, struct = nested
            inner = self._struct_block(struct, (*outer, owner))
            if is_block:
                if shape == "one":
                    nesting = {"struct": "single", "set": "set"}.get(hcl_type, "list")
                else:
                    nesting = shape
                entry: dict[str, Any] = {"nesting_mode": nesting, "block": inner}
                if flags["required"]:
                    entry["min_items"] = 1
                if shape == "one" and nesting != "single":
                    entry["max_items"] = 1
                block_types[name] = entry
            else:
                obj = ["object", _object_fields(inner)]
                if shape == "one":
                    cty: Any = ["list", obj] if hcl_type == "list" else ["set", obj] if hcl_type == "set" else obj
                else:
                    cty = [shape, obj]
                attributes[name] = {"type": cty, **mode}
        out: dict[str, Any] = {}
        if attributes:
            out["attributes"] = attributes
        if block_types:
            out["block_types"] = block_types
        return out

    @staticmethod
    def _nested(code: str) -> tuple[str, str] | None:
        if m := _NESTED_ONE.search(code):
            return "one", m[1]
        if m := _NESTED_LIST.search(code):
            return ("set" if m[2] == "true" else "list"), m[1]
        if m := _NESTED_MAP.search(code):
            return "map", m[1]
        return None

    def _scalar(self, code: str, what: str) -> Any:
        if m := _CDK_COLLECTION.search(code):
            cty = _CDK_TYPES.get(m[1])
            if cty is None:
                raise BindingsError(f"{self.where}: {what}: unknown collection class cdktn.{m[1]}")
            if m[2] == "true" and cty[0] == "list":
                cty = ["set", cty[1]]
            return cty
        if m := _GET_ATTRIBUTE.search(code):
            cty = _SCALARS.get(m[2])
            if cty is None:
                raise BindingsError(f"{self.where}: {what}: unknown getter get{m[2]}Attribute")
            if m[1] and isinstance(cty, list) and cty[0] == "list":
                cty = ["set", cty[1]]
            return cty
        if _DYNAMIC.search(code):
            return "dynamic"
        raise BindingsError(f"{self.where}: {what}: cannot tell the attribute's type")


def _object_fields(block: dict[str, Any]) -> dict[str, Any]:
    """A nested block's attributes and blocks as the fields of a cty object type."""
    fields = {name: attr["type"] for name, attr in block.get("attributes", {}).items()}
    for name, nested in block.get("block_types", {}).items():
        obj = ["object", _object_fields(nested["block"])]
        fields[name] = obj if nested["nesting_mode"] == "single" else [nested["nesting_mode"], obj]
    return fields


def schema_of(code: str, where: str = "index.ts") -> dict[str, Any]:
    """The schema (``{"block": ...}``) of the resource or data source whose generated index.ts is ``code``."""
    return _Module(code, where).schema()

"""infra/*.tf against the providers' real schemas, offline.

`terraform validate` needs the providers downloaded, which cannot happen here. The schemas of the
resource and data source types infra/ uses are committed in infra/schema/providers.json, read by
`make tf-schema` (devtools/tfschema.py) from the providers' prebuilt CDK bindings on PyPI; this test holds
every resource and data block of infra/ against them with devtools/tfschema_check.py (unknown or
read-only arguments, blocks written as arguments and the reverse, missing required arguments and blocks,
nesting, dynamic blocks, literals of the wrong shape, references to attributes that do not exist). Each
kind of mistake has a fixture in tests/fixtures/tf/broken/ that must be reported, and
tests/fixtures/tf/valid/ must pass.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import tarfile
import zipfile
from pathlib import Path

import pytest

from devtools.tfschema import used_types
from devtools.tfschema_bindings import read_bindings, schema_of
from devtools.tfschema_check import admits, check, code_parts, load_config, load_schema, references

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
SCHEMA = INFRA / "schema" / "providers.json"
FIXTURES = REPO / "tests" / "fixtures" / "tf"
VALID = FIXTURES / "valid"
BROKEN = FIXTURES / "broken"

# Each broken fixture, and what its one problem must say.
BROKEN_EXPECTED = {
    "argument_as_block.tf": "labels is an argument, not a block",
    "block_as_argument.tf": "push_config is a block, not an argument",
    "computed_argument.tf": "email is read-only",
    "dynamic_content_unknown_argument.tf": "fields (dynamic content): unknown argument or block field",
    "dynamic_for_argument.tf": 'dynamic "labels": labels is an argument, not a block',
    "dynamic_unknown_block.tf": 'dynamic "field": unknown block field',
    "missing_required_argument.tf": "missing required argument topic",
    "missing_required_block.tf": "missing required block conditions",
    "missing_required_nested_argument.tf": "push_config: missing required argument push_endpoint",
    "reference_data_unknown_attribute.tf": "data.google_project.this has no attribute project_number",
    "reference_in_nested_block.tf": "google_service_account.push has no attribute mail",
    "reference_index_without_count.tf": "has no count or for_each",
    "reference_list_block_without_index.tf": "push_config is a list: index it",
    "reference_missing_instance_key.tf": "google_service_account.accounts has count: give an instance key",
    "reference_set_index.tf": "indexes is a set: it cannot be indexed",
    "reference_undeclared.tf": "no resource google_service_account.acount is declared",
    "reference_unknown_attribute.tf": "google_service_account.account has no attribute mail",
    "reference_unknown_nested_attribute.tf": "oidc_token[0] has no attribute audiance",
    "single_block_twice.tf": "block push_config given 2 times; the schema allows at most 1",
    "unknown_argument.tf": "unknown argument or block lables (did you mean labels?)",
    "unknown_nested_argument.tf": "push_config: unknown argument or block attribute",
    "unknown_type.tf": "has no resource type google_pubsub_topics",
    "wrong_literal.tf": "ack_deadline_seconds: 'ten minutes' is not a number",
}


@pytest.fixture(scope="module")
def schema() -> dict:
    return load_schema(SCHEMA)


def test_infra_is_valid_against_the_provider_schemas(schema):
    config = load_config([INFRA], relative_to=REPO)
    assert len(config.blocks) > 40  # the whole of infra/ was read
    assert check(config, schema) == []


def test_valid_fixture_passes(schema):
    assert check(load_config([VALID], relative_to=REPO), schema) == []


def test_every_broken_fixture_has_an_expectation():
    assert sorted(p.name for p in BROKEN.glob("*.tf")) == sorted(BROKEN_EXPECTED)


@pytest.mark.parametrize("name", sorted(BROKEN_EXPECTED))
def test_broken_fixture_is_reported(schema, name):
    problems = check(load_config([BROKEN / name], relative_to=REPO), schema)
    assert len(problems) == 1, problems
    assert BROKEN_EXPECTED[name] in problems[0]
    assert problems[0].startswith(f"tests/fixtures/tf/broken/{name}: ")


def _infra_block(config, rtype, name):
    return next(b for b in config.blocks if (b.type, b.name) == (rtype, name))


def test_infra_check_catches_mutations_of_infra(schema):
    """The real configuration, mutated: each mutation is one problem the check reports."""
    config = load_config([INFRA], relative_to=REPO)

    renamed = copy.deepcopy(config)
    service = _infra_block(renamed, "google_cloudfunctions2_function", "function").body["service_config"][0]
    service["max_instances"] = service.pop("max_instance_count")
    assert any("service_config: unknown argument or block max_instances" in p for p in check(renamed, schema))

    no_topic = copy.deepcopy(config)
    _infra_block(no_topic, "google_pubsub_subscription", "reactor").body.pop("topic")
    assert any("google_pubsub_subscription.reactor: missing required argument topic" in p
               for p in check(no_topic, schema))

    bad_reference = copy.deepcopy(config)
    bad_reference.values.append(("outputs.tf: output", {"value": "${google_cloudfunctions2_function.function"
                                                                  "[\"poller\"].service_config[0].url}"}))
    assert any("service_config[0] has no attribute url (did you mean uri?)" in p for p in check(bad_reference, schema))

    beta_on_ga = copy.deepcopy(config)
    _infra_block(beta_on_ga, "google_project_service_identity", "pubsub").body.pop("provider")
    assert any("hashicorp/google 8.7.0 has no resource type google_project_service_identity" in p
               for p in check(beta_on_ga, schema))


def test_schema_records_where_it_came_from(schema):
    providers = schema["provider_schemas"]
    assert set(providers) == {f"registry.terraform.io/hashicorp/{p}" for p in ("google", "google-beta", "time")}
    for source, provider in providers.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", provider["version"]), source
        assert re.fullmatch(r"[a-z0-9-]+==\d+\.\d+\.\d+", provider["bindings"]), source
    assert providers["registry.terraform.io/hashicorp/google"]["version"].startswith("8.")
    assert "make tf-schema" in schema["about"] and schema["generated_by"].startswith("python -m devtools.tfschema")


def test_schema_holds_exactly_the_types_used(schema):
    """`make tf-schema` keeps the file to the types infra/ (and the valid fixture) use: regenerate it when
    a type is added or dropped."""
    used = used_types([INFRA, VALID])
    held = {source: {("resource", t) for t in p["resource_schemas"]} | {("data", t) for t in p["data_source_schemas"]}
            for source, p in schema["provider_schemas"].items()}
    assert held == used


def test_provider_pins_admit_the_schema_versions(schema):
    """versions.tf pins each provider to a range that holds the version the schema was read from."""
    config = load_config([INFRA])
    assert config.providers == {local: f"registry.terraform.io/hashicorp/{local}"
                                for local in ("google", "google-beta", "time")}
    text = (INFRA / "versions.tf").read_text(encoding="utf-8")
    for source, provider in schema["provider_schemas"].items():
        local = source.rsplit("/", 1)[1]
        pin = re.search(rf'\b{re.escape(local)} = \{{\s*source\s*= "hashicorp/{re.escape(local)}"\s*'
                        r'version\s*= "([^"]+)"', text)
        assert pin, f"versions.tf does not pin {local}"
        assert admits(pin[1], provider["version"]), f"{local} pin {pin[1]} excludes {provider['version']}"


def test_version_constraints():
    assert admits("~> 8.7.0", "8.7.4") and not admits("~> 8.7.0", "8.8.0")
    assert admits("~> 8.7", "8.12.0") and not admits("~> 8.7", "9.0.0") and not admits("~> 8.7", "8.6.0")
    assert admits(">= 1.5.0", "1.11.4") and not admits(">= 4.0, < 6", "6.45.0")


def test_references_skip_string_text_and_escapes():
    value = 'x ${google_a.b.c} "google_d.e.f" $${google_g.h.i} ${coalesce(var.v, "google_j.k.l")}'
    assert [r for r in references(value) if r[1].startswith("google_")] == [("resource", "google_a", "b", ".c")]
    assert code_parts('${{for k, v in google_q.r : k => v.email}}') == ["{for k, v in google_q.r : k => v.email}"]
    assert list(references('${data.google_project.this.number}')) == [("data", "google_project", "this", ".number")]


# --- the bindings reader, on a small wheel shaped like the generated ones

_TYPESCRIPT = '''
export interface FakeThingConfig extends cdktn.TerraformMetaArguments {
  readonly name: string;
}
export function fakeThingSpecToHclTerraform(struct?: FakeThingSpecOutputReference | FakeThingSpec): any {
  const attrs = {
    size: {
      value: cdktn.numberToHclTerraform(struct!.size),
      isBlock: false,
      type: "simple",
      storageClassType: "number",
    },
  };
  return attrs;
}

export class FakeThingSpecOutputReference extends cdktn.ComplexObject {
  // size - computed: false, optional: true, required: false
  private _size?: number;
  public get size() {
    return this.getNumberAttribute('size');
  }

  // checksum - computed: true, optional: false, required: false
  public get checksum() {
    return this.getStringAttribute('checksum');
  }
}
export class FakeThingRuleOutputReference extends cdktn.ComplexObject {
  // action - computed: false, optional: false, required: true
  private _action?: string;
  public get action() {
    return this.getStringAttribute('action');
  }
}
export class FakeThingStatusOutputReference extends cdktn.ComplexObject {
  // code - computed: true, optional: false, required: false
  public get code() {
    return this.getNumberAttribute('code');
  }
}
export class FakeThingTimeoutsOutputReference extends cdktn.ComplexObject {
  // create - computed: false, optional: true, required: false
  private _create?: string;
  public get create() {
    return this.getStringAttribute('create');
  }
}

export class FakeThing extends cdktn.TerraformResource {
  public static readonly tfResourceType = "fake_thing";

  // name - computed: false, optional: false, required: true
  private _name?: string;
  public get name() {
    return this.getStringAttribute('name');
  }

  // tags - computed: false, optional: true, required: false
  private _tags?: string[];
  public get tags() {
    return cdktn.Fn.tolist(this.getListAttribute('tags'));
  }

  // project - computed: true, optional: true, required: false
  private _project?: string;
  public get project() {
    return this.getStringAttribute('project');
  }

  // effective_labels - computed: true, optional: false, required: false
  private _effectiveLabels = new cdktn.StringMap(this, "effective_labels");
  public get effectiveLabels() {
    return this._effectiveLabels;
  }

  // spec - computed: false, optional: false, required: true
  private _spec = new FakeThingSpecOutputReference(this, "spec");
  public get spec() {
    return this._spec;
  }

  // rule - computed: false, optional: true, required: false
  private _rule = new FakeThingRuleList(this, "rule", true);
  public get rule() {
    return this._rule;
  }

  // status - computed: true, optional: false, required: false
  private _status = new FakeThingStatusList(this, "status", false);
  public get status() {
    return this._status;
  }

  // timeouts - computed: false, optional: true, required: false
  private _timeouts = new FakeThingTimeoutsOutputReference(this, "timeouts");
  public get timeouts() {
    return this._timeouts;
  }

  // =========
  // SYNTHESIS
  // =========

  protected synthesizeHclAttributes(): { [name: string]: any } {
    const attrs = {
      name: {
        value: cdktn.stringToHclTerraform(this._name),
        isBlock: false,
        type: "simple",
        storageClassType: "string",
      },
      spec: {
        value: fakeThingSpecToHclTerraform(this._spec.internalValue),
        isBlock: true,
        type: "list",
        storageClassType: "FakeThingSpecList",
      },
      rule: {
        value: cdktn.listMapperHcl(fakeThingRuleToHclTerraform, true)(this._rule.internalValue),
        isBlock: true,
        type: "set",
        storageClassType: "FakeThingRuleList",
      },
      timeouts: {
        value: fakeThingTimeoutsToHclTerraform(this._timeouts.internalValue),
        isBlock: true,
        type: "struct",
        storageClassType: "FakeThingTimeouts",
      },
    };
    return attrs;
  }
}
'''


def _fake_wheel(folder: Path) -> Path:
    source_map = {"version": 3, "sources": ["../../src/fake-thing/index.ts"], "sourcesContent": [_TYPESCRIPT]}
    javascript = ('"use strict";\nclass FakeThing extends cdktn.TerraformResource {\n}\n'
                  'FakeThing.tfResourceType = "fake_thing";\n//# sourceMappingURL=data:application/json;base64,'
                  + base64.b64encode(json.dumps(source_map).encode()).decode() + "\n").encode()
    package = json.dumps({"name": "@cdktn/provider-fake",
                          "cdktn": {"provider": {"name": "registry.terraform.io/acme/fake", "version": "1.2.3"}}})
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as tar:
        for name, data in (("package/package.json", package.encode()), ("package/lib/fake-thing/index.js", javascript)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    wheel = folder / "cdktn_provider_fake-4.5.6-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("cdktn_provider_fake/_jsii/provider-fake@4.5.6.jsii.tgz", tgz.getvalue())
    return wheel


def test_bindings_reader_on_a_generated_shape(tmp_path):
    bindings = read_bindings(_fake_wheel(tmp_path), [("resource", "fake_thing")])
    assert (bindings.package, bindings.provider_source, bindings.provider_version) == (
        "cdktn-provider-fake==4.5.6", "registry.terraform.io/acme/fake", "1.2.3")
    block = schema_of(bindings.code[("resource", "fake_thing")])["block"]
    assert block["attributes"] == {
        "name": {"type": "string", "required": True},
        "tags": {"type": ["set", "string"], "optional": True},
        "project": {"type": "string", "optional": True, "computed": True},
        "effective_labels": {"type": ["map", "string"], "computed": True},
        "status": {"type": ["list", ["object", {"code": "number"}]], "computed": True},
    }
    assert block["block_types"] == {
        "spec": {"nesting_mode": "list", "min_items": 1, "max_items": 1, "block": {"attributes": {
            "size": {"type": "number", "optional": True}, "checksum": {"type": "string", "computed": True}}}},
        "rule": {"nesting_mode": "set", "block": {"attributes": {"action": {"type": "string", "required": True}}}},
        "timeouts": {"nesting_mode": "single",
                     "block": {"attributes": {"create": {"type": "string", "optional": True}}}},
    }
    with pytest.raises(Exception, match="has no resource fake_other"):
        read_bindings(tmp_path / "cdktn_provider_fake-4.5.6-py3-none-any.whl", [("resource", "fake_other")])

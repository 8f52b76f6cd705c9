"""The Cloud Build pipeline: a test build with no deploy rights (cloudbuild.yaml) and a deploy-only build
(infra/cloudbuild-deploy.yaml) started by its success. Both are parsed into the Cloud Build API's ``Build``
message (unknown fields and bad values fail), then held to what each may and must do.

Each check returns a list of problems, so the negative tests can feed it a mutated copy and see it fail.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
TEST_BUILD = REPO / "cloudbuild.yaml"
DEPLOY_BUILD = REPO / "infra" / "cloudbuild-deploy.yaml"
MAKEFILE = REPO / "Makefile"

_BUILTIN_SUBSTITUTIONS = {"PROJECT_ID", "PROJECT_NUMBER", "BUILD_ID", "LOCATION", "TRIGGER_NAME",
                          "COMMIT_SHA", "SHORT_SHA", "REVISION_ID", "BRANCH_NAME", "TAG_NAME", "REPO_NAME",
                          "REPO_FULL_NAME", "SERVICE_ACCOUNT_EMAIL", "SERVICE_ACCOUNT", "REF_NAME",
                          "TRIGGER_BUILD_CONFIG_PATH"}
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _text(step: dict) -> str:
    return " ".join([step.get("name", ""), step.get("entrypoint", "") or "", *(step.get("args") or []),
                     step.get("script", "") or ""])


def _dependencies(steps: list[dict]) -> list[set[int]]:
    """Transitive dependencies of each step: waitFor ids, or every earlier step when waitFor is absent."""
    ids = {s.get("id"): i for i, s in enumerate(steps)}
    deps: list[set[int]] = []
    for i, step in enumerate(steps):
        wait = step.get("waitFor")
        direct = set(range(i)) if wait is None else {ids[w] for w in wait if w in ids}
        closure = set(direct)
        for d in direct:
            closure |= deps[d]
        deps.append(closure)
    return deps


def _find(steps: list[dict], pattern: str) -> list[int]:
    return [i for i, s in enumerate(steps) if re.search(pattern, _text(s))]


def check_build(doc: dict) -> list[str]:
    """What both builds must be: a valid Build, unique step ids, images pinned by digest, one-argument
    scripts, every substitution declared, logs in Cloud Logging, a timeout."""
    from google.cloud.devtools.cloudbuild_v1.types import Build
    from google.protobuf import json_format

    try:
        json_format.ParseDict(doc, Build.pb(Build()))
    except json_format.ParseError as exc:
        return [f"not a valid Build: {exc}"]
    problems = []
    steps = doc.get("steps") or []
    if not steps:
        return ["no steps"]
    ids = [s.get("id") for s in steps]
    if not all(ids) or len(set(ids)) != len(ids):
        problems.append(f"every step needs a unique id: {ids}")
    for step in steps:
        if not _DIGEST.search(step.get("name", "")):
            problems.append(f"step {step.get('id')}: image {step.get('name')!r} is not pinned by digest (@sha256:)")
        entry = (step.get("entrypoint") or "").rsplit("/", 1)[-1]
        args = step.get("args") or []
        if entry in ("bash", "sh") and "-c" in args:
            rest = args[args.index("-c") + 1:]
            if len(rest) != 1:
                problems.append(f"step {step.get('id')}: `{entry} -c` runs only its first argument; "
                                f"put the whole script in one argument ({len(rest)} given)")
    declared = set(doc.get("substitutions") or {})
    used = set()
    for text in [json.dumps(steps), json.dumps(doc.get("options") or {})]:
        text = text.replace("$$", "")
        used |= set(re.findall(r"\$\{?(_[A-Z0-9_]+)", text))
        for name in re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", text):
            if name not in _BUILTIN_SUBSTITUTIONS:
                problems.append(f"${name} is neither a built-in substitution nor escaped as $${name}")
    for name in sorted(used - declared):
        problems.append(f"substitution {name} used but not declared")
    if (doc.get("options") or {}).get("logging") != "CLOUD_LOGGING_ONLY":
        problems.append("options.logging should be CLOUD_LOGGING_ONLY")
    if not doc.get("timeout"):
        problems.append("no build timeout")
    return problems


def check_test_build(doc: dict, makefile: str) -> list[str]:
    """The test build: lint, test and bundle, installed from hash-locked files; nothing that deploys."""
    problems = check_build(doc)
    steps = doc.get("steps") or []
    lint, tests = _find(steps, r"make lint|\bruff\b"), _find(steps, r"make test|pytest")
    bundle = _find(steps, r"devtools\.bundle|make bundle")
    for what, found in (("lint", lint), ("test", tests), ("bundle", bundle)):
        if not found:
            problems.append(f"no {what} step")
    deps = _dependencies(steps)
    for t in tests:
        if lint and not any(i in deps[t] for i in lint):
            problems.append(f"step {steps[t].get('id')} does not wait for the lint step")
    for forbidden, why in ((r"terraform\b[^\n]*\b(plan|apply|init)\b|\bterraform@", "runs Terraform"),
                           (r"gcloud (storage|functions|run|deploy)|gsutil", "touches deployed resources"),
                           (r"tfvars|_STATE_BUCKET", "reads the deployment's inputs")):
        for i in _find(steps, forbidden):
            if not (why == "runs Terraform" and re.search(r"\bfmt\b", _text(steps[i]))):
                problems.append(f"step {steps[i].get('id')} {why}: the test build holds no deploy rights")
    if not re.search(r"pip install[^\n]*--require-hashes -r requirements/dev\.txt", makefile):
        problems.append("make venv does not install requirements/dev.txt with --require-hashes")
    if not re.search(r"pip install[^\n]*--no-deps --no-build-isolation -e \.", makefile):
        problems.append("make venv installs the package with an unpinned build environment or its deps")
    if not re.search(r"pip install[^\n]*--require-hashes -r requirements/checkov\.txt", makefile):
        problems.append("make checkov does not install requirements/checkov.txt with --require-hashes")
    if re.search(r"pip install[^\n]*(--upgrade pip|-e '?\.\[)", makefile):
        problems.append("the Makefile installs something unlocked")
    return problems


def check_deploy_build(doc: dict) -> list[str]:
    """The deploy build: only a tested commit, its bundle built with the runtime lock alone, then
    Terraform in order; no dev dependency, no test, no emulator."""
    problems = check_build(doc)
    steps = doc.get("steps") or []
    declared = doc.get("substitutions") or {}
    for needed in ("_TESTED_COMMIT", "_TEST_STATUS", "_PROJECT_ID", "_REGION", "_STATE_BUCKET"):
        if needed not in declared:
            problems.append(f"substitution {needed} not declared")
    if declared.get("_REGION"):
        problems.append("substitution _REGION has a default, so it would override the tfvars' region")
    for forbidden, why in ((r"\bmake\b", "runs make"), (r"pytest|make test", "runs the tests"),
                           (r"requirements/dev\.txt|requirements/checkov\.txt|\.\[dev\]", "installs dev dependencies"),
                           (r"apt-get|emulator", "installs the emulators")):
        for i in _find(steps, forbidden):
            problems.append(f"step {steps[i].get('id')} {why}: the deploy build runs no development code")
    locked = re.compile(r"pip install[^\n]*--require-hashes -r requirements/runtime\.txt$")
    for step in steps:
        for line in _text(step).splitlines():
            if "pip install" in line and not locked.search(line.strip()):
                problems.append(f"step {step.get('id')} installs something other than the hash-locked runtime: "
                                f"{line.strip()[:100]}")
    for step in steps:
        for arg in step.get("args") or []:
            if re.match(r"-var=(region|project_id)=", str(arg)):
                problems.append(f"step {step.get('id')}: {arg} overrides the tfvars on every build")
    gate = [i for i in _find(steps, r"_TESTED_COMMIT") if re.search(r"COMMIT_SHA", _text(steps[i]))
            and re.search(r'_TEST_STATUS\}?"? != "SUCCESS"', _text(steps[i])) and re.search(r"exit 1", _text(steps[i]))]
    bundle = _find(steps, r"devtools\.bundle")
    plan, apply = _find(steps, r"\bplan\b"), _find(steps, r"\bapply\b")
    for what, found in (("tested-commit gate", gate), ("bundle", bundle), ("terraform plan", plan),
                        ("terraform apply", apply)):
        if not found:
            problems.append(f"no {what} step")
    deps = _dependencies(steps)
    for t in plan + apply:
        for what, found in (("tested-commit gate", gate), ("bundle", bundle)):
            if found and not any(i in deps[t] for i in found):
                problems.append(f"step {steps[t].get('id')} does not wait for the {what} step")
    for t in apply:
        if plan and not any(i in deps[t] for i in plan):
            problems.append(f"step {steps[t].get('id')} does not wait for the plan step")
    return problems


# ----------------------------------------------------------------------------------------------- tests

def test_the_test_build_tests_and_cannot_deploy():
    assert check_test_build(load_yaml(TEST_BUILD), MAKEFILE.read_text()) == []


def test_the_deploy_build_deploys_only_a_tested_commit():
    assert check_deploy_build(load_yaml(DEPLOY_BUILD)) == []


def test_checks_catch_a_broken_test_build():
    doc, makefile = load_yaml(TEST_BUILD), MAKEFILE.read_text()
    ids = [s["id"] for s in doc["steps"]]

    deploying = copy.deepcopy(doc)
    deploying["steps"].append({"id": "apply", "name": doc["steps"][2]["name"], "args": ["-chdir=infra", "apply"]})
    assert any("runs Terraform" in p for p in check_test_build(deploying, makefile))

    tfvars = copy.deepcopy(doc)
    tfvars["substitutions"]["_STATE_BUCKET"] = "x"
    tfvars["steps"][0]["args"][1] += "gcloud storage cp gs://${_STATE_BUCKET}/terraform.tfvars .\n"
    assert any("deploy rights" in p for p in check_test_build(tfvars, makefile))

    by_tag = copy.deepcopy(doc)
    by_tag["steps"][0]["name"] = "python:3.12.8-bookworm"
    assert any("not pinned by digest" in p for p in check_test_build(by_tag, makefile))

    split = copy.deepcopy(doc)
    split["steps"][ids.index("test")]["args"] = ["-c", "make venv", "&&", "make test"]
    assert any("runs only its first argument" in p for p in check_test_build(split, makefile))

    reordered = copy.deepcopy(doc)
    test = reordered["steps"].pop(ids.index("test"))
    reordered["steps"].insert(0, test)
    assert any("does not wait for the lint step" in p for p in check_test_build(reordered, makefile))

    unknown = copy.deepcopy(doc)
    unknown["steps"][0]["waitfor"] = ["-"]
    assert any("not a valid Build" in p for p in check_test_build(unknown, makefile))

    undeclared = copy.deepcopy(doc)
    undeclared["steps"][0]["args"][1] += "echo ${_NOPE}\n"
    assert any("_NOPE" in p for p in check_test_build(undeclared, makefile))

    unlocked = makefile.replace("--require-hashes -r requirements/dev.txt", "-e '.[dev]'")
    assert any("requirements/dev.txt" in p for p in check_test_build(doc, unlocked))
    isolated = makefile.replace("--no-deps --no-build-isolation -e .", "-e .")
    assert any("unpinned build environment" in p for p in check_test_build(doc, isolated))


def test_checks_catch_a_broken_deploy_build():
    doc = load_yaml(DEPLOY_BUILD)
    ids = [s["id"] for s in doc["steps"]]

    testing = copy.deepcopy(doc)
    testing["steps"][ids.index("bundle")]["args"][1] += "make venv && make test\n"
    problems = check_deploy_build(testing)
    assert any("runs make" in p for p in problems) and any("runs the tests" in p for p in problems)

    dev_deps = copy.deepcopy(doc)
    dev_deps["steps"][ids.index("bundle")]["args"][1] += "pip install --require-hashes -r requirements/dev.txt\n"
    assert any("installs dev dependencies" in p for p in check_deploy_build(dev_deps))

    unhashed = copy.deepcopy(doc)
    unhashed["steps"][ids.index("bundle")]["args"][1] += "pip install httpx\n"
    assert any("other than the hash-locked runtime" in p for p in check_deploy_build(unhashed))

    ungated = copy.deepcopy(doc)
    del ungated["steps"][ids.index("tested")]
    assert any("no tested-commit gate" in p for p in check_deploy_build(ungated))

    parallel = copy.deepcopy(doc)
    parallel["steps"][ids.index("terraform-apply")]["waitFor"] = ["-"]
    assert any("does not wait" in p for p in check_deploy_build(parallel))

    region_always = copy.deepcopy(doc)
    region_always["substitutions"]["_REGION"] = "europe-west1"
    region_always["steps"][ids.index("terraform-plan")]["args"].append("-var=region=${_REGION}")
    problems = check_deploy_build(region_always)
    assert any("-var=region" in p for p in problems) and any("_REGION has a default" in p for p in problems)

    bad_value = copy.deepcopy(doc)
    bad_value["options"]["logging"] = "STACKDRIVER_ONLY_PLEASE"
    assert any("not a valid Build" in p for p in check_deploy_build(bad_value))

    no_id = copy.deepcopy(doc)
    del no_id["steps"][1]["id"]
    assert any("unique id" in p for p in check_deploy_build(no_id))

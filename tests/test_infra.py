"""Terraform (infra/) and cloudbuild.yaml, held against the code.

`terraform init/validate` cannot run here (no provider download), so the Terraform is checked three
ways: `terraform fmt -check` (also catches syntax errors), checkov, and python-hcl2 cross-checks against
the code: the settings `shared/settings.py` reads, the entry points of `functions/main.py`, the composite
indexes of `shared/store.py`, plus the IAM, delivery and scheduling rules of the design.
cloudbuild.yaml is parsed into the Cloud Build API's `Build` message (unknown fields and bad values fail).

Each check is a function returning a list of problems, so the negative tests at the end can feed it a
mutated copy and see it fail.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
SETTINGS_PY = REPO / "shared" / "settings.py"
MAIN_PY = REPO / "functions" / "main.py"
CLOUDBUILD = REPO / "cloudbuild.yaml"
TERRAFORM = os.environ.get("TERRAFORM", "/usr/local/bin/terraform")

FUNCTION = "google_cloudfunctions2_function"
SUBSCRIPTION = "google_pubsub_subscription"

# Settings the code reads that Terraform may leave to the code's default, with the reason. Every other
# RELAY_* variable (and GOOGLE_CLOUD_PROJECT) in shared/settings.py must be set by infra/main.tf's
# `settings_env` map. An entry here must have a default in the code (not `required=True`).
LEFT_TO_CODE_DEFAULT: dict[str, str] = {}

# Project-level grants the design allows, because the resource has no IAM of its own.
PROJECT_LEVEL_ROLES = {
    "roles/datastore.user": "Firestore IAM exists only at project level",
    "roles/aiplatform.viewer": "Vertex AI batch prediction jobs have no resource-level IAM",
}
FORBIDDEN_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}
PUBLIC_MEMBERS = {"allUsers", "allAuthenticatedUsers"}


# --------------------------------------------------------------------------------------------- parsing

def _parse_hcl(text: str) -> dict:
    options_cls = getattr(hcl2, "SerializationOptions", None)
    if options_cls is None:  # python-hcl2 < 8: strings come unquoted already
        return hcl2.loads(text)
    options = options_cls(strip_string_quotes=True, explicit_blocks=False, with_comments=False,
                          preserve_heredocs=False)
    return hcl2.loads(text, serialization_options=options)


def _unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == '"' else key


def load_terraform(folder: Path = INFRA) -> dict[str, Any]:
    """All .tf files of `folder` merged: {"resource": {type: {name: body}}, "data": ..., "locals": {...},
    "variable": {name: body}, "output": {name: body}, "terraform": [...], "provider": [...]}."""
    merged: dict[str, Any] = {"resource": {}, "data": {}, "locals": {}, "variable": {}, "output": {},
                              "terraform": [], "provider": []}
    for path in sorted(folder.glob("*.tf")):
        doc = _parse_hcl(path.read_text(encoding="utf-8"))
        for kind in ("resource", "data"):
            for item in doc.get(kind, []):
                for rtype, named in item.items():
                    for name, body in named.items():
                        merged[kind].setdefault(_unquote(rtype), {})[_unquote(name)] = body
        for item in doc.get("locals", []):
            merged["locals"].update(item)
        for kind in ("variable", "output"):
            for item in doc.get(kind, []):
                for name, body in item.items():
                    merged[kind][_unquote(name)] = body
        merged["terraform"] += doc.get("terraform", [])
        merged["provider"] += doc.get("provider", [])
    return merged


def blocks(body: dict, name: str) -> list[dict]:
    """Nested blocks `name` of a body, static ones and the `content` of `dynamic "name"` ones."""
    found = body.get(name, [])
    found = [found] if isinstance(found, dict) else list(found)
    for dyn in body.get("dynamic", []):
        for dname, dbody in dyn.items():
            if _unquote(dname) == name:
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


# ------------------------------------------------------------------------------------ facts from code

_SETTING_RE = re.compile(r'"((?:RELAY_[A-Z0-9_]+)|GOOGLE_CLOUD_PROJECT)"')
_EMULATOR_RE = re.compile(r'"([A-Z0-9_]+_EMULATOR_HOST)"')


def code_settings(path: Path = SETTINGS_PY) -> tuple[set[str], set[str], set[str]]:
    """(settings read, of which required, emulator switches) from shared/settings.py's string literals."""
    text = path.read_text(encoding="utf-8")
    names = set(_SETTING_RE.findall(text))
    required = {n for n in names if re.search(rf'"{n}"[^)]*required\s*=\s*True', text)}
    return names, required, set(_EMULATOR_RE.findall(text))


def code_setting_names_anywhere() -> set[str]:
    """RELAY_* names appearing as string literals anywhere in the deployable code."""
    names: set[str] = set()
    for folder in (REPO / "shared", REPO / "functions"):
        for path in folder.rglob("*.py"):
            names |= set(_SETTING_RE.findall(path.read_text(encoding="utf-8")))
    return names


def entry_points(path: Path = MAIN_PY) -> dict[str, str]:
    """Top-level functions of functions/main.py -> "cloud_event" | "http" (by their decorator)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    kinds = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            kind = "http"
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                if name == "cloud_event":
                    kind = "cloud_event"
            kinds[node.name] = kind
    return kinds


# ---------------------------------------------------------------------------------------------- checks

def terraform_env(tf: dict) -> tuple[set[str], set[str]]:
    """(plain environment names from locals.settings_env, secret environment names of the functions)."""
    plain = set(tf["locals"].get("settings_env", {}))
    secret = set()
    for body in resources(tf, FUNCTION).values():
        for sec in blocks(one(body, "service_config"), "secret_environment_variables"):
            secret.add(sec.get("key"))
    return plain, secret


def check_settings(tf: dict, names: set[str], required: set[str], emulators: set[str],
                   known: set[str], left_to_default: dict[str, str]) -> list[str]:
    problems = []
    plain, secret = terraform_env(tf)
    if not plain:
        problems.append("locals.settings_env is missing or empty")
    if "local.settings_env" not in str(tf["locals"].get("function_env", "")):
        problems.append("locals.function_env is not derived from locals.settings_env")
    for fname, body in resources(tf, FUNCTION).items():
        env = one(body, "service_config").get("environment_variables")
        if env != "${local.function_env}":
            problems.append(f"{FUNCTION}.{fname}: environment_variables is {env!r}, not local.function_env")
    set_by_tf = plain | secret
    for name in sorted(names):
        if name in set_by_tf:
            continue
        if name in left_to_default and name not in required:
            continue
        problems.append(f"{name} is read by the code but not set by Terraform"
                        + (" (and it is required)" if name in required else "")
                        + ": add it to locals.settings_env in infra/main.tf (or, if the code's default is"
                          " right for every deployment, to LEFT_TO_CODE_DEFAULT in tests/test_infra.py)")
    for name in sorted(left_to_default):
        if name in required:
            problems.append(f"{name} is required by the code; it cannot be left to a default")
    for name in sorted(set_by_tf & emulators):
        problems.append(f"Terraform sets the emulator switch {name}")
    for name in sorted(set_by_tf - known - emulators):
        problems.append(f"Terraform sets {name}, which the code never reads (typo?)")
    if "RELAY_GEMINI_API_KEY" in plain:
        problems.append("RELAY_GEMINI_API_KEY must be a secret environment variable, not a plain one")
    for fname, body in resources(tf, FUNCTION).items():
        keys = {s.get("key") for s in blocks(one(body, "service_config"), "secret_environment_variables")}
        if "RELAY_GEMINI_API_KEY" not in keys:
            problems.append(f"{FUNCTION}.{fname}: no secret environment variable RELAY_GEMINI_API_KEY")
    return problems


def check_functions(tf: dict, kinds: dict[str, str]) -> list[str]:
    problems = []
    functions = resources(tf, FUNCTION)
    by_entry = {}
    for fname, body in functions.items():
        build = one(body, "build_config")
        if build.get("runtime") != "python312":
            problems.append(f"{FUNCTION}.{fname}: runtime {build.get('runtime')!r}, expected python312")
        entry = build.get("entry_point")
        by_entry[entry] = fname
        if entry not in kinds:
            problems.append(f"{FUNCTION}.{fname}: entry point {entry!r} is not defined in functions/main.py")
        storage = one(one(build, "source"), "storage_source")
        obj = storage.get("object", "")
        match = re.search(r"google_storage_bucket_object\.(\w+)\.name", str(obj))
        if not match:
            problems.append(f"{FUNCTION}.{fname}: source object is not a google_storage_bucket_object")
        else:
            problems += check_hashed_object(tf, match[1])
    for entry, kind in (("poll_jobs", "http"), ("on_job_event", "cloud_event")):
        if entry not in by_entry:
            problems.append(f"no function deploys entry point {entry}")
        elif kinds.get(entry) != kind:
            problems.append(f"functions/main.py: {entry} is {kinds.get(entry)!r}, expected {kind}")
    return problems


def check_hashed_object(tf: dict, name: str) -> list[str]:
    body = resources(tf, "google_storage_bucket_object").get(name)
    if body is None:
        return [f"google_storage_bucket_object.{name} not declared"]
    object_name = str(body.get("name", ""))
    hashed = re.search(r"file(sha256|md5|sha512|sha1)\(", object_name)
    for local in re.findall(r"local\.(\w+)", object_name):
        hashed = hashed or re.search(r"file(sha256|md5|sha512|sha1)\(", str(tf["locals"].get(local, "")))
    if not hashed:
        return [f"google_storage_bucket_object.{name}: name {object_name!r} does not hold the bundle's hash"]
    if str(body.get("source")) not in (str(tf["locals"].get("bundle_path")), "${local.bundle_path}") \
            and "bundle_path" not in str(body.get("source")):
        return [f"google_storage_bucket_object.{name}: source is not the bundle path"]
    return []


def _function_for(tf: dict, expr: Any) -> str | None:
    for fname in resources(tf, FUNCTION):
        if refers_to(expr, FUNCTION, fname):
            return fname
    return None


def _entry(tf: dict, fname: str | None) -> str | None:
    body = resources(tf, FUNCTION).get(fname or "")
    return one(body, "build_config").get("entry_point") if body else None


def _timeouts(tf: dict, fname: str) -> Any:
    return one(resources(tf, FUNCTION)[fname], "service_config").get("timeout_seconds")


def _value_sets(tf: dict) -> list[dict[str, Any]]:
    """Variable values to evaluate expressions at: the defaults, and each validation bound of a numeric
    attribute found in the variables' conditions."""
    base = variable_defaults(tf)
    sets = [base]
    for name, body in tf["variable"].items():
        for val in blocks(body, "validation"):
            cond = str(val.get("condition", ""))
            for attr, _op, bound in re.findall(rf"var\.{name}\.(\w+)\s*(>=|<=)\s*([0-9]+)\b", cond):
                sets.append({**base, f"{name}.{attr}": int(bound)})
    return sets


def check_scheduler(tf: dict) -> list[str]:
    problems = []
    jobs = resources(tf, "google_cloud_scheduler_job")
    if not jobs:
        return ["no google_cloud_scheduler_job"]
    env = tf["locals"].get("settings_env", {})
    for jname, job in jobs.items():
        target = one(job, "http_target")
        if target.get("http_method") != "POST":
            problems.append(f"scheduler {jname}: http_method must be POST (poll_jobs answers 405 otherwise)")
        oidc = one(target, "oidc_token")
        if not oidc.get("service_account_email"):
            problems.append(f"scheduler {jname}: no oidc_token with a service account")
        fname = _function_for(tf, target.get("uri"))
        if _entry(tf, fname) != "poll_jobs":
            problems.append(f"scheduler {jname}: does not call the poll_jobs function")
            continue
        deadline = duration_expr(job.get("attempt_deadline", ""))
        if deadline is None:
            problems.append(f"scheduler {jname}: no attempt_deadline")
            continue
        for values in _value_sets(tf):
            attempt = evaluate(deadline, values)
            timeout = evaluate(_timeouts(tf, fname), values)
            tick = evaluate(env.get("RELAY_TICK_DEADLINE_S"), values)
            if attempt is None or timeout is None:
                problems.append(f"scheduler {jname}: cannot evaluate attempt_deadline/timeout")
                break
            if not attempt < timeout:
                problems.append(f"scheduler {jname}: attempt_deadline {attempt}s is not below the function "
                                f"timeout {timeout}s")
                break
            if not 15 <= attempt <= 1800:
                problems.append(f"scheduler {jname}: attempt_deadline {attempt}s outside 15..1800 s")
                break
            if tick is None or not tick < attempt:
                problems.append(f"scheduler {jname}: RELAY_TICK_DEADLINE_S ({tick}) is not below the "
                                f"attempt deadline ({attempt})")
                break
    return problems


def members(body: dict) -> str:
    """The member expression of an IAM resource, with `each.value` resolved to its for_each values."""
    member = str(body.get("member", ""))
    if "each.value" in member:
        member += " " + str(body.get("for_each", ""))
    return member


def _members_with_role(tf: dict, rtype: str, role: str) -> list[dict]:
    return [b for b in resources(tf, rtype).values() if b.get("role") == role]


def _sa_ref(expr: Any) -> re.Match | None:
    return re.search(r"google_service_account\.(\w+)\.", str(expr or ""))


def check_delivery(tf: dict) -> list[str]:
    problems = []
    subs = resources(tf, SUBSCRIPTION)
    push = {n: b for n, b in subs.items() if blocks(b, "push_config")}
    if len(push) != 1:
        return [f"expected one push subscription (to the reactor), found {sorted(push)}"]
    sname, sub = next(iter(push.items()))
    cfg = one(sub, "push_config")
    fname = _function_for(tf, cfg.get("push_endpoint"))
    if _entry(tf, fname) != "on_job_event":
        problems.append(f"push subscription {sname}: does not push to the on_job_event function")
    oidc = one(cfg, "oidc_token")
    if not oidc.get("service_account_email"):
        problems.append(f"push subscription {sname}: no oidc_token")
    filt = str(sub.get("filter", ""))
    for needed in ("attributes.ce-type", "attributes.state", '"batchrelay.job.v1.stateChanged"',
                   '"JOB_STATE_SUCCEEDED"', '"JOB_STATE_PARTIALLY_SUCCEEDED"'):
        if needed not in filt:
            problems.append(f"push subscription {sname}: filter lacks {needed}")
    dlp = one(sub, "dead_letter_policy")
    if not dlp.get("dead_letter_topic") or not dlp.get("max_delivery_attempts"):
        problems.append(f"push subscription {sname}: no dead_letter_policy")
    if not blocks(sub, "retry_policy"):
        problems.append(f"push subscription {sname}: no retry_policy")
    if fname:
        for values in _value_sets(tf):
            ack = evaluate(sub.get("ack_deadline_seconds"), values)
            timeout = evaluate(_timeouts(tf, fname), values)
            if ack is None or timeout is None or not timeout <= ack <= 600:
                problems.append(f"push subscription {sname}: ack deadline {ack} must be >= the reactor "
                                f"timeout {timeout} and <= 600")
                break
    # The dead-letter topic must keep what it receives.
    dl_topic = re.search(r"google_pubsub_topic\.(\w+)\.", str(dlp.get("dead_letter_topic", "")))
    if dl_topic and not any(refers_to(b.get("topic"), "google_pubsub_topic", dl_topic[1]) for b in subs.values()):
        problems.append("no subscription on the dead-letter topic (dead-lettered messages would be lost)")
    # Invokers: the push account may invoke the reactor, Scheduler's account the poller.
    invokers = _members_with_role(tf, "google_cloud_run_v2_service_iam_member", "roles/run.invoker") + \
        _members_with_role(tf, "google_cloud_run_service_iam_member", "roles/run.invoker")
    push_sa = _sa_ref(oidc.get("service_account_email"))
    if not any(_function_for(tf, b.get("name", b.get("service"))) == fname and push_sa
               and refers_to(b.get("member"), "google_service_account", push_sa[1]) for b in invokers):
        problems.append("the push subscription's account has no run.invoker on the reactor")
    for jname, job in resources(tf, "google_cloud_scheduler_job").items():
        target = one(job, "http_target")
        sa = _sa_ref(one(target, "oidc_token").get("service_account_email"))
        poller = _function_for(tf, target.get("uri"))
        if not any(_function_for(tf, b.get("name", b.get("service"))) == poller and sa
                   and refers_to(b.get("member"), "google_service_account", sa[1]) for b in invokers):
            problems.append(f"scheduler {jname}: its account has no run.invoker on the poller")
    # The Pub/Sub service agent: token creator on the push account, publisher on the dead-letter topic,
    # subscriber on the subscription.
    def agent(body: dict) -> bool:
        return "gcp-sa-pubsub" in str(body.get("member")) or "pubsub_agent" in str(body.get("member"))

    if not any(agent(b) and push_sa and refers_to(b.get("service_account_id"), "google_service_account", push_sa[1])
               for b in _members_with_role(tf, "google_service_account_iam_member",
                                           "roles/iam.serviceAccountTokenCreator")):
        problems.append("the Pub/Sub service agent cannot mint tokens for the push account")
    if not any(agent(b) and dl_topic and refers_to(b.get("topic"), "google_pubsub_topic", dl_topic[1])
               for b in _members_with_role(tf, "google_pubsub_topic_iam_member", "roles/pubsub.publisher")):
        problems.append("the Pub/Sub service agent cannot publish to the dead-letter topic")
    if not any(agent(b) and refers_to(b.get("subscription"), SUBSCRIPTION, sname)
               for b in _members_with_role(tf, "google_pubsub_subscription_iam_member", "roles/pubsub.subscriber")):
        problems.append("the Pub/Sub service agent is not subscriber on the push subscription")
    return problems


def check_example_subscription(tf: dict) -> list[str]:
    events = [n for n in resources(tf, "google_pubsub_topic")
              if f"google_pubsub_topic.{n}.name" in str(tf["locals"].get("settings_env", {}).get("RELAY_EVENTS_TOPIC"))]
    if not events:
        return ["RELAY_EVENTS_TOPIC is not set from a google_pubsub_topic"]
    for sub in resources(tf, SUBSCRIPTION).values():
        if refers_to(sub.get("topic"), "google_pubsub_topic", events[0]) and not blocks(sub, "push_config") \
                and sub.get("enable_message_ordering") is True:
            return []
    return ["no pull subscription with enable_message_ordering = true on the events topic"]


def check_iam(tf: dict) -> list[str]:
    problems = []
    for text in strings(tf):
        for role in FORBIDDEN_ROLES:
            if re.search(rf"{re.escape(role)}\b", text):
                problems.append(f"primitive role {role} used: {text[:80]!r}")
        for member in PUBLIC_MEMBERS:
            if member in text:
                problems.append(f"public member {member} used: {text[:80]!r}")
    for rtype in ("google_project_iam_member", "google_project_iam_binding", "google_project_iam_policy"):
        for name, body in resources(tf, rtype).items():
            if rtype != "google_project_iam_member":
                problems.append(f"{rtype}.{name}: authoritative project IAM is not allowed")
            elif body.get("role") not in PROJECT_LEVEL_ROLES:
                problems.append(f"{rtype}.{name}: {body.get('role')} granted at project level; grant it on "
                                "the resource")
    accounts = resources(tf, "google_service_account")
    for fname, body in resources(tf, FUNCTION).items():
        sa = one(body, "service_config").get("service_account_email", "")
        match = re.search(r"google_service_account\.(\w+)\.", str(sa))
        if not match or match[1] not in accounts:
            problems.append(f"{FUNCTION}.{fname}: does not run as its own service account")
    used = [re.search(r"google_service_account\.(\w+)\.", str(one(b, "service_config").get("service_account_email")))
            for b in resources(tf, FUNCTION).values()]
    names = [m[1] for m in used if m]
    if len(names) != len(set(names)):
        problems.append("functions share a service account")
    roles = {(b.get("role"), re.search(r"google_service_account\.(\w+)\.", members(b)) is not None)
             for rtype in ("google_storage_bucket_iam_member", "google_secret_manager_secret_iam_member",
                           "google_pubsub_topic_iam_member")
             for b in resources(tf, rtype).values()}
    for role in ("roles/storage.objectViewer", "roles/storage.objectUser",
                 "roles/secretmanager.secretAccessor", "roles/pubsub.publisher"):
        if (role, True) not in roles:
            problems.append(f"no resource-level grant of {role} to a function's account")
    return problems


def check_indexes(tf: dict, needed: list[dict]) -> list[str]:
    declared = []
    for body in resources(tf, "google_firestore_index").values():
        collection = str(body.get("collection", "")).replace("${var.firestore.collection}", "{collection}")
        fields = [(f.get("field_path"), f.get("order") or f.get("array_config")) for f in blocks(body, "fields")]
        fields = [f for f in fields if f[0] != "__name__"]
        declared.append((collection, body.get("query_scope", "COLLECTION"), fields))
    problems = []
    for index in needed:
        want = (index["collection"], index.get("query_scope", "COLLECTION"),
                [(f[0], f[1]) for f in index["fields"]])
        if want not in declared:
            problems.append(f"composite index {want} is needed by shared/store.py but not declared")
    return problems


def check_ttl(tf: dict) -> list[str]:
    fields = resources(tf, "google_firestore_field")
    collections = set()
    for body in fields.values():
        if body.get("field") == "expire_at" and "ttl_config" in body:
            coll = str(body.get("collection", ""))
            if "for_each" in body or coll == "${each.value}":
                collections |= {str(v) for v in (body.get("for_each") or {}).values()} \
                    if isinstance(body.get("for_each"), dict) else set()
            else:
                collections.add(coll)
    problems = []
    for coll in ("${var.firestore.collection}", "transitions"):
        if coll not in collections:
            problems.append(f"no TTL policy on expire_at for collection {coll}")
    return problems


def check_monitoring(tf: dict) -> list[str]:
    problems = []
    metrics = {n: b for n, b in resources(tf, "google_logging_metric").items()
               if "tick finished" in str(b.get("filter"))}
    policies = resources(tf, "google_monitoring_alert_policy").values()
    absent = [one(c, "condition_absent") for p in policies for c in blocks(p, "conditions")]
    if not any(any(refers_to(a.get("filter"), "google_logging_metric", m) for m in metrics) for a in absent):
        problems.append("no metric-absence alert on the 'tick finished' log metric (stale heartbeat)")
    threshold = [one(c, "condition_threshold") for p in policies for c in blocks(p, "conditions")]
    if not any("num_undelivered_messages" in str(t.get("filter")) and "dead_letter" in str(t.get("filter"))
               for t in threshold):
        problems.append("no alert on the dead-letter subscription's backlog")
    return problems


def check_layout(tf: dict) -> list[str]:
    problems = []
    for name in ("versions.tf", "variables.tf", "outputs.tf"):
        if not (INFRA / name).is_file():
            problems.append(f"infra/{name} missing")
    names = list(tf["variable"])
    if names != sorted(names):
        problems.append(f"variables are not in alphabetical order: {names}")
    for needed in ("project_id", "region", "prefix"):
        if needed not in tf["variable"]:
            problems.append(f"variable {needed} missing")
    for out in ("events_topic", "example_subscription", "function_urls", "service_accounts"):
        if out not in tf["output"]:
            problems.append(f"output {out} missing")
    providers = [p for t in tf["terraform"] for rp in blocks(t, "required_providers") for p in [rp.get("google")] if p]
    if not providers or not str(providers[0].get("version", "")).startswith("~> 6."):
        problems.append("google provider is not pinned to ~> 6.x")
    for text in strings(tf["resource"]):
        if re.search(r"\brandom_", text):
            problems.append(f"random names are not allowed: {text[:60]!r}")
    if tf["resource"].get("random_id") or tf["resource"].get("random_string") or tf["resource"].get("random_pet"):
        problems.append("random_* resources are not allowed")
    return problems


# ---------------------------------------------------------------------------------------- cloudbuild

def load_yaml(path: Path) -> Any:
    try:
        import yaml
    except ImportError:
        yaml = None
    if yaml is not None:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    # PyYAML is not a dev dependency yet; checkov's venv (always installed by `make test`) has it.
    for python in _checkov_pythons():
        proc = subprocess.run([python, "-c", "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), "
                               "sys.stdout)", str(path)], capture_output=True, text=True, timeout=60)
        if proc.returncode == 0:
            return json.loads(proc.stdout)
    pytest.skip("no YAML parser: add pyyaml to the dev extra (or install checkov with `make checkov`)")


_BUILTIN_SUBSTITUTIONS = {"PROJECT_ID", "PROJECT_NUMBER", "BUILD_ID", "LOCATION", "TRIGGER_NAME",
                          "COMMIT_SHA", "SHORT_SHA", "REVISION_ID", "BRANCH_NAME", "TAG_NAME", "REPO_NAME",
                          "REPO_FULL_NAME", "SERVICE_ACCOUNT_EMAIL", "SERVICE_ACCOUNT", "REF_NAME",
                          "TRIGGER_BUILD_CONFIG_PATH"}


def _step_text(step: dict) -> str:
    return " ".join([step.get("entrypoint", "") or "", *(step.get("args") or []), step.get("script", "") or ""])


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


def check_cloudbuild(doc: dict) -> list[str]:
    from google.cloud.devtools.cloudbuild_v1.types import Build
    from google.protobuf import json_format

    problems = []
    try:
        json_format.ParseDict(doc, Build.pb(Build()))
    except json_format.ParseError as exc:
        return [f"not a valid Build: {exc}"]
    steps = doc.get("steps") or []
    if not steps:
        return ["no steps"]
    ids = [s.get("id") for s in steps]
    if not all(ids) or len(set(ids)) != len(ids):
        problems.append(f"every step needs a unique id: {ids}")
    for step in steps:
        image = step.get("name", "")
        if "@sha256:" not in image:
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if not tag or tag == "latest" or not re.search(r"\d+\.\d+", tag):
                problems.append(f"step {step.get('id')}: image {image!r} is not pinned to a version or digest")
        entry = (step.get("entrypoint") or "").rsplit("/", 1)[-1]
        args = step.get("args") or []
        if entry in ("bash", "sh") and "-c" in args:
            rest = args[args.index("-c") + 1:]
            if len(rest) != 1:
                problems.append(f"step {step.get('id')}: `{entry} -c` runs only its first argument; "
                                f"put the whole script in one argument ({len(rest)} given)")
    declared = set(doc.get("substitutions") or {})
    for needed in ("_PROJECT_ID", "_REGION", "_STATE_BUCKET"):
        if needed not in declared:
            problems.append(f"substitution {needed} not declared")
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

    def find(pred) -> list[int]:
        return [i for i, s in enumerate(steps) if pred(s)]

    lint = find(lambda s: re.search(r"\bruff\b|make lint", _step_text(s)))
    tests = find(lambda s: re.search(r"make test|pytest", _step_text(s)))
    bundle = find(lambda s: re.search(r"devtools\.bundle|make bundle", _step_text(s)))
    terraform = find(lambda s: ("terraform" in s.get("name", "") or "terraform" in (s.get("entrypoint") or ""))
                     and re.search(r"\b(plan|apply)\b", _step_text(s)))
    for what, found in (("lint", lint), ("test", tests), ("bundle", bundle), ("terraform plan/apply", terraform)):
        if not found:
            problems.append(f"no {what} step")
    deps = _dependencies(steps)
    for t in terraform:
        for what, found in (("lint", lint), ("test", tests), ("bundle", bundle)):
            if found and not any(f in deps[t] for f in found):
                problems.append(f"step {steps[t].get('id')} does not wait for the {what} step")
    return problems


# ----------------------------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def tf() -> dict:
    return load_terraform()


def test_terraform_fmt():
    if not Path(TERRAFORM).is_file():
        pytest.skip(f"terraform not found at {TERRAFORM}")
    proc = subprocess.run([TERRAFORM, "fmt", "-check", "-recursive", "-diff", "infra"], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null"})
    assert proc.returncode == 0, f"terraform fmt -check failed:\n{proc.stdout}\n{proc.stderr}"


def _checkov() -> str | None:
    exe = os.environ.get("CHECKOV") or shutil.which("checkov")
    return exe if exe and Path(exe).exists() else None


def _checkov_pythons() -> list[str]:
    exe = _checkov()
    candidates = [str(Path(exe).parent / "python")] if exe else []
    candidates.append(str(REPO / ".venv-checkov" / "bin" / "python"))
    return [c for c in dict.fromkeys(candidates) if Path(c).exists()]


_SKIP_RE = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")


def test_checkov_passes_with_justified_skips():
    exe = _checkov()
    if not exe:
        pytest.skip("checkov not installed (make checkov; set CHECKOV)")
    proc = subprocess.run([exe, "-d", "infra", "--framework", "terraform", "--skip-download", "--compact",
                           "--quiet", "-o", "json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip(), f"checkov printed nothing:\n{proc.stderr[-2000:]}"
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [(c["check_id"], c["resource"], c.get("check_name")) for r in reports
              for c in r.get("results", {}).get("failed_checks", [])]
    assert not failed, f"checkov failed checks: {failed}"
    for report in reports:
        summary = report.get("summary", {})
        assert summary.get("failed", 0) == 0 and summary.get("parsing_errors", 0) == 0, summary
    # Every skip is an inline comment with a reason.
    for path in INFRA.glob("*.tf"):
        for line in path.read_text(encoding="utf-8").splitlines():
            match = _SKIP_RE.search(line)
            if match:
                reason = (match[2] or "").strip()
                assert len(reason) >= 20, f"{path.name}: checkov skip {match[1]} needs a reason: {line.strip()}"


def test_terraform_layout(tf):
    assert check_layout(tf) == []


def test_every_setting_the_code_reads_is_set_by_terraform(tf):
    names, required, emulators = code_settings()
    assert "GOOGLE_CLOUD_PROJECT" in names and required, "could not read the settings from shared/settings.py"
    known = names | code_setting_names_anywhere()
    assert check_settings(tf, names, required, emulators, known, LEFT_TO_CODE_DEFAULT) == []


def test_functions_match_entry_points(tf):
    if not MAIN_PY.is_file():
        pytest.skip("functions/main.py does not exist yet")
    assert check_functions(tf, entry_points()) == []


def test_scheduler_calls_poller_with_oidc_within_its_timeout(tf):
    assert check_scheduler(tf) == []


def test_reactor_delivery_push_subscription(tf):
    assert check_delivery(tf) == []


def test_example_subscription_is_ordered(tf):
    assert check_example_subscription(tf) == []


def test_iam_least_privilege(tf):
    assert check_iam(tf) == []


def test_every_composite_index_is_declared(tf):
    try:
        from shared.store import COMPOSITE_INDEXES
    except ImportError as exc:
        pytest.skip(f"shared.store.COMPOSITE_INDEXES not importable yet: {exc}")
    assert COMPOSITE_INDEXES, "shared.store.COMPOSITE_INDEXES is empty"
    assert check_indexes(tf, COMPOSITE_INDEXES) == []


def test_ttl_policies(tf):
    assert check_ttl(tf) == []


def test_alerts(tf):
    assert check_monitoring(tf) == []


def test_cloudbuild_is_a_valid_ordered_pinned_build():
    doc = load_yaml(CLOUDBUILD)
    assert check_cloudbuild(doc) == []


# ------------------------------------------------------------------------- the checks fail for real

def _mutated(tf: dict, rtype: str, change) -> dict:
    tf = copy.deepcopy(tf)
    for body in resources(tf, rtype).values():
        change(body)
    return tf


def test_checks_catch_broken_terraform(tf):
    names, required, emulators = code_settings()
    known = names | code_setting_names_anywhere()

    broken = copy.deepcopy(tf)
    broken["locals"]["settings_env"].pop("RELAY_COLLECTION")
    broken["locals"]["settings_env"]["FIRESTORE_EMULATOR_HOST"] = "127.0.0.1:8080"
    broken["locals"]["settings_env"]["RELAY_COLECTION"] = "typo"
    problems = check_settings(broken, names | {"RELAY_COLLECTION"}, required, emulators | {"FIRESTORE_EMULATOR_HOST"},
                              known | {"RELAY_COLLECTION"}, {})
    assert any("RELAY_COLLECTION is read" in p for p in problems)
    assert any("emulator switch" in p for p in problems)
    assert any("RELAY_COLECTION" in p for p in problems)

    no_secret = _mutated(tf, FUNCTION, lambda b: one(b, "service_config").pop("dynamic", None))
    assert any("RELAY_GEMINI_API_KEY" in p for p in check_settings(no_secret, names, required, emulators, known, {}))

    kinds = {"poll_jobs": "http", "on_job_event": "cloud_event"}
    wrong_runtime = _mutated(tf, FUNCTION, lambda b: one(b, "build_config").update(runtime="python311"))
    assert any("python312" in p for p in check_functions(wrong_runtime, kinds))
    assert any("entry point" in p for p in check_functions(tf, {"poll_jobs": "http", "on_event": "cloud_event"}))
    assert any("expected cloud_event" in p for p in check_functions(tf, {"poll_jobs": "http", "on_job_event": "http"}))
    unhashed = _mutated(tf, "google_storage_bucket_object", lambda b: b.update(name="function-source.zip"))
    assert any("hash" in p for p in check_functions(unhashed, kinds))

    no_oidc = _mutated(tf, "google_cloud_scheduler_job", lambda b: one(b, "http_target").pop("oidc_token"))
    assert any("oidc" in p for p in check_scheduler(no_oidc))
    late = _mutated(tf, "google_cloud_scheduler_job",
                    lambda b: b.update(attempt_deadline="${var.poller.timeout_s + 10}s"))
    assert any("not below the function timeout" in p for p in check_scheduler(late))

    def loosen(body):
        if blocks(body, "push_config"):
            body["filter"] = 'attributes.ce-type = "batchrelay.job.v1.stateChanged"'
            body.pop("dead_letter_policy")
            body.pop("retry_policy")
            one(body, "push_config").pop("oidc_token")
            body["ack_deadline_seconds"] = 60
    problems = check_delivery(_mutated(tf, SUBSCRIPTION, loosen))
    for expected in ("filter lacks attributes.state", "dead_letter_policy", "retry_policy", "oidc_token",
                     "ack deadline"):
        assert any(expected in p for p in problems), (expected, problems)

    unordered = _mutated(tf, SUBSCRIPTION, lambda b: b.update(enable_message_ordering=False))
    assert check_example_subscription(unordered)

    editor = copy.deepcopy(tf)
    editor["resource"]["google_project_iam_member"]["x"] = {"role": "roles/editor", "member": "allUsers"}
    problems = check_iam(editor)
    assert any("roles/editor" in p for p in problems) and any("allUsers" in p for p in problems)
    publisher = copy.deepcopy(tf)
    publisher["resource"]["google_project_iam_member"]["y"] = {"role": "roles/pubsub.publisher", "member": "x"}
    assert any("project level" in p for p in check_iam(publisher))

    needed = [{"collection": "{collection}", "fields": [("terminal", "ASCENDING"), ("shard", "ASCENDING")]}]
    assert check_indexes(tf, needed) == []
    assert check_indexes(tf, [{"collection": "{collection}", "fields": [("shard", "ASCENDING"),
                                                                         ("terminal", "ASCENDING")]}])
    no_index = copy.deepcopy(tf)
    no_index["resource"]["google_firestore_index"] = {}
    assert check_indexes(no_index, needed)

    no_ttl = _mutated(tf, "google_firestore_field", lambda b: b.pop("ttl_config"))
    assert check_ttl(no_ttl)
    no_alerts = copy.deepcopy(tf)
    no_alerts["resource"]["google_monitoring_alert_policy"] = {}
    assert len(check_monitoring(no_alerts)) == 2


def test_checks_catch_broken_cloudbuild():
    doc = load_yaml(CLOUDBUILD)
    ids = [s["id"] for s in doc["steps"]]

    reordered = copy.deepcopy(doc)
    plan = next(s for s in reordered["steps"] if "plan" in s.get("args", []))
    reordered["steps"].remove(plan)
    reordered["steps"].insert(0, plan)
    assert any("does not wait for the test step" in p for p in check_cloudbuild(reordered))

    parallel = copy.deepcopy(doc)
    for step in parallel["steps"]:
        if "apply" in step.get("args", []):
            step["waitFor"] = ["-"]
    assert any("does not wait" in p for p in check_cloudbuild(parallel))

    split = copy.deepcopy(doc)
    split["steps"][ids.index("test")]["args"] = ["-c", "make venv", "&&", "make test"]
    assert any("runs only its first argument" in p for p in check_cloudbuild(split))

    latest = copy.deepcopy(doc)
    latest["steps"][0]["name"] = "python:latest"
    assert any("not pinned" in p for p in check_cloudbuild(latest))

    undeclared = copy.deepcopy(doc)
    undeclared["steps"][-1]["args"].append("-var=x=${_NOPE}")
    assert any("_NOPE" in p for p in check_cloudbuild(undeclared))

    unknown = copy.deepcopy(doc)
    unknown["steps"][0]["waitfor"] = ["-"]
    assert any("not a valid Build" in p for p in check_cloudbuild(unknown))

    bad_value = copy.deepcopy(doc)
    bad_value["options"]["logging"] = "STACKDRIVER_ONLY_PLEASE"
    assert any("not a valid Build" in p for p in check_cloudbuild(bad_value))

    no_id = copy.deepcopy(doc)
    del no_id["steps"][1]["id"]
    assert any("unique id" in p for p in check_cloudbuild(no_id))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))

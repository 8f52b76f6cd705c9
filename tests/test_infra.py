"""Terraform (infra/), held against the code.

`terraform init/validate` cannot run here (no provider download), so the Terraform is checked three
ways: `terraform fmt -check` (also catches syntax errors), checkov, and python-hcl2 cross-checks against
the code: the settings `shared/settings.py` reads, the entry points of `functions/main.py`, the composite
indexes of `shared/record/store.py`, the log lines the code writes (log-based metrics, dashboard), plus
the IAM, delivery, fan-out and scheduling rules of the design. The Terraform is read by `devtools/hcl.py`
(tested in tests/test_hcl.py): resources whose `for_each` iterates a local map (the functions, the
log-based metrics) are expanded into one body per key, `each.value.x` replaced by that entry's value, and
named `name["key"]` as Terraform names the instances.
The Cloud Build pipeline is checked in tests/test_pipeline.py.

Each check is a function returning a list of problems, so the negative tests at the end can feed it a
mutated copy and see it fail.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devtools.hcl import (
    blocks,
    duration_expr,
    evaluate,
    load_terraform,
    one,
    refers_to,
    resolve_locals,
    resources,
    strings,
    unquote,
    variable_defaults,
)

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
SETTINGS_PY = REPO / "shared" / "settings.py"
MAIN_PY = REPO / "functions" / "main.py"
TERRAFORM = os.environ.get("TERRAFORM", "/usr/local/bin/terraform")

FUNCTION = "google_cloudfunctions2_function"
SUBSCRIPTION = "google_pubsub_subscription"

# Settings the code reads that Terraform may leave to the code's default, with the reason. Every other
# RELAY_* variable (and GOOGLE_CLOUD_PROJECT) in shared/settings.py must be set by infra/main.tf's
# `settings_env` map. An entry here must have a default in the code (not `required=True`).
LEFT_TO_CODE_DEFAULT: dict[str, str] = {
    "RELAY_SECRET_MANAGER_URL": "only the CLI writes to Secret Manager (webhook register --secret); tests point it "
                                "at a local peer, deployments never need another endpoint",
}

# Project-level grants the design allows, because the resource has no IAM of its own.
PROJECT_LEVEL_ROLES = {
    "roles/datastore.user": "Firestore roles are granted on the project, held to the relay's database by a condition",
    "roles/aiplatform.viewer": "Vertex AI batch prediction jobs have no resource-level IAM",
    "roles/logging.logWriter": "writing log entries can only be granted on the project (the build account)",
}
FORBIDDEN_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}
PUBLIC_MEMBERS = {"allUsers", "allAuthenticatedUsers"}

# Entry points functions/main.py must define, and what they are.
ENTRY_POINTS = {"poll_jobs": "http", "on_job_event": "cloud_event", "on_gemini_webhook": "http"}

# The log lines the code writes (one JSON object per line: Cloud Logging's jsonPayload) that log-based
# metrics must count (field None) or measure (a distribution of that field), and the function writing them.
LOG_METRICS = [
    ("tick finished", None, "poll_jobs"),
    ("tick finished", "polled", "poll_jobs"),
    ("tick finished", "changed", "poll_jobs"),
    ("tick finished", "deferred", "poll_jobs"),
    ("status fetch failed", None, "poll_jobs"),
    ("event published", "lag_s", "poll_jobs"),
    ("outputs copied", "duration_s", "on_job_event"),
    ("copy failed", None, "on_job_event"),
    ("job stalled", None, "poll_jobs"),
    ("webhook disabled", None, "poll_jobs"),
]


_SA_RE = re.compile(r"google_service_account\.(\w+)[.\[]")


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

def secret_keys(body: dict) -> set[str]:
    """Secret environment variable names of a function: literal keys, or, for a dynamic block keyed by
    its iterator (`key = secret_environment_variables.key`), the keys of the map it iterates."""
    keys = set()
    service = one(body, "service_config")
    for sec in blocks(service, "secret_environment_variables"):
        key = sec.get("key")
        if key != "${secret_environment_variables.key}":
            keys.add(key)
    for dyn in service.get("dynamic", []):
        for dname, dbody in dyn.items():
            if unquote(dname) != "secret_environment_variables":
                continue
            attr = re.search(r"each\.value\.(\w+)", str(dbody.get("for_each", "")))
            source = (body.get("__each__") or {}).get(attr[1]) if attr else None
            if isinstance(source, dict):
                keys |= set(source)
    return keys


def terraform_env(tf: dict) -> tuple[set[str], set[str]]:
    """(plain environment names from locals.settings_env, secret environment names of the functions)."""
    plain = set(tf["locals"].get("settings_env", {}))
    secret = set()
    for body in resources(tf, FUNCTION).values():
        secret |= secret_keys(body)
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
        keys = secret_keys(body)
        if "RELAY_GEMINI_API_KEY" not in keys:
            problems.append(f"{FUNCTION}.{fname}: no secret environment variable RELAY_GEMINI_API_KEY")
        if "RELAY_GEMINI_WEBHOOK_SECRETS" in keys and _entry(tf, fname) != "on_gemini_webhook":
            problems.append(f"{FUNCTION}.{fname}: only the webhook function may read the webhook signing secrets")
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
    for entry, kind in ENTRY_POINTS.items():
        if entry not in by_entry:
            problems.append(f"no function deploys entry point {entry}")
        elif kinds.get(entry) != kind:
            problems.append(f"functions/main.py: {entry} is {kinds.get(entry)!r}, expected {kind}")
    # One definition for all functions: a for_each over a local map, not a resource per function.
    if len({name.split("[")[0] for name in functions}) > 1:
        problems.append(f"{FUNCTION}: one resource per function ({sorted(functions)}); use one for_each")
    webhook = by_entry.get("on_gemini_webhook")
    if webhook and "var.webhooks.enabled" not in str((functions[webhook].get("__each__") or {}).get("enabled")):
        problems.append(f"{FUNCTION}.{webhook}: the webhook function must exist only when var.webhooks.enabled")
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


def members(body: dict, tf: dict | None = None) -> str:
    """The member expression of an IAM resource, with `each.value` resolved to its for_each values
    (and the locals those name, when `tf` is given)."""
    member = str(body.get("member", ""))
    if "each.value" in member:
        for_each = str(body.get("for_each", ""))
        member += " " + for_each
        if tf is not None:
            for name in re.findall(r"local\.(\w+)", for_each):
                member += " " + str(tf["locals"].get(name, ""))
    return member


def _members_with_role(tf: dict, rtype: str, role: str) -> list[dict]:
    return [b for b in resources(tf, rtype).values() if b.get("role") == role]


def _sa_ref(expr: Any) -> re.Match | None:
    return _SA_RE.search(str(expr or ""))


def _invokers(tf: dict) -> list[dict]:
    return _members_with_role(tf, "google_cloud_run_v2_service_iam_member", "roles/run.invoker") + \
        _members_with_role(tf, "google_cloud_run_service_iam_member", "roles/run.invoker")


def _is_agent(body: dict) -> bool:
    return "gcp-sa-pubsub" in str(body.get("member")) or "pubsub_agent" in str(body.get("member"))


def _function_by_entry(tf: dict, entry: str) -> str | None:
    return next((f for f in resources(tf, FUNCTION) if _entry(tf, f) == entry), None)


def _push_problems(tf: dict, sname: str, sub: dict, fname: str | None, what: str) -> list[str]:
    """What every push subscription needs: OIDC of an account that may invoke its function, retries, a
    dead-letter topic that keeps messages, and the Pub/Sub service agent's rights for all of it."""
    problems = []
    subs = resources(tf, SUBSCRIPTION)
    cfg = one(sub, "push_config")
    oidc = one(cfg, "oidc_token")
    if not oidc.get("service_account_email"):
        problems.append(f"push subscription {sname}: no oidc_token")
    dlp = one(sub, "dead_letter_policy")
    if not dlp.get("dead_letter_topic") or not dlp.get("max_delivery_attempts"):
        problems.append(f"push subscription {sname}: no dead_letter_policy")
    if not blocks(sub, "retry_policy"):
        problems.append(f"push subscription {sname}: no retry_policy")
    # The dead-letter topic must keep what it receives.
    dl_topic = re.search(r"google_pubsub_topic\.(\w+)\.", str(dlp.get("dead_letter_topic", "")))
    if dl_topic and not any(refers_to(b.get("topic"), "google_pubsub_topic", dl_topic[1]) for b in subs.values()):
        problems.append("no subscription on the dead-letter topic (dead-lettered messages would be lost)")
    push_sa = _sa_ref(oidc.get("service_account_email"))
    if not any(_function_for(tf, b.get("name", b.get("service"))) == fname and push_sa
               and refers_to(b.get("member"), "google_service_account", push_sa[1]) for b in _invokers(tf)):
        problems.append(f"the push subscription {sname}'s account has no run.invoker on the {what}")
    # The Pub/Sub service agent: token creator on the push account, publisher on the dead-letter topic,
    # subscriber on the subscription.
    if not any(_is_agent(b) and push_sa and refers_to(b.get("service_account_id"), "google_service_account", push_sa[1])
               for b in _members_with_role(tf, "google_service_account_iam_member",
                                           "roles/iam.serviceAccountTokenCreator")):
        problems.append(f"the Pub/Sub service agent cannot mint tokens for the push account of {sname}")
    if not any(_is_agent(b) and dl_topic and refers_to(b.get("topic"), "google_pubsub_topic", dl_topic[1])
               for b in _members_with_role(tf, "google_pubsub_topic_iam_member", "roles/pubsub.publisher")):
        problems.append("the Pub/Sub service agent cannot publish to the dead-letter topic")
    if not any(_is_agent(b) and refers_to(b.get("subscription"), SUBSCRIPTION, sname)
               for b in _members_with_role(tf, "google_pubsub_subscription_iam_member", "roles/pubsub.subscriber")):
        problems.append(f"the Pub/Sub service agent is not subscriber on the push subscription {sname}")
    return problems


def check_reactor_filter(sname: str, filt: str) -> list[str]:
    """The reactor's filter against the code: state changes only (their ``ce-type``, or the ``previous_state``
    attribute only they carry), to exactly the states the reactor acts on (``handler.TRIGGER_STATES``), within
    Pub/Sub's 256 bytes."""
    from batch_relay.events.event import STATE_CHANGED
    from batch_relay.reactor.handler import TRIGGER_STATES

    problems = []
    if f'attributes.ce-type = "{STATE_CHANGED}"' not in filt and "attributes:previous_state" not in filt:
        problems.append(f"push subscription {sname}: filter lacks attributes.ce-type (or attributes:previous_state)")
    named = set(re.findall(r'attributes\.state\s*=\s*"([A-Z_]+)"', filt))
    if not named:
        problems.append(f"push subscription {sname}: filter lacks attributes.state")
    elif named != {str(state) for state in TRIGGER_STATES}:
        problems.append(f"push subscription {sname}: filter names the states {sorted(named)}, the reactor acts on "
                        f"{sorted(TRIGGER_STATES)}")
    if " OR " in filt and " AND (" not in filt:
        problems.append(f"push subscription {sname}: filter ORs the states without parentheses")
    if len(filt.encode()) > 256:
        problems.append(f"push subscription {sname}: filter is {len(filt.encode())} bytes, Pub/Sub takes 256")
    return problems


def check_delivery(tf: dict) -> list[str]:
    """The reactor's push subscription (successes only) and Scheduler's invoker rights on the poller."""
    problems = []
    subs = resources(tf, SUBSCRIPTION)
    push = {n: b for n, b in subs.items() if blocks(b, "push_config")}
    targets = {n: _function_for(tf, one(b, "push_config").get("push_endpoint")) for n, b in push.items()}
    to_reactor = [n for n, f in targets.items() if _entry(tf, f) == "on_job_event"]
    for name, fname in targets.items():
        if _entry(tf, fname) not in ("on_job_event", "poll_jobs"):
            problems.append(f"push subscription {name}: pushes to neither the reactor nor the poller")
    if len(to_reactor) != 1:
        return problems + [f"expected one push subscription to the on_job_event function, found {to_reactor}"]
    sname = to_reactor[0]
    sub, fname = push[sname], targets[sname]
    problems += check_reactor_filter(sname, str(sub.get("filter", "")))
    for values in _value_sets(tf):
        ack = evaluate(sub.get("ack_deadline_seconds"), values)
        timeout = evaluate(_timeouts(tf, fname), values)
        if ack is None or timeout is None or not timeout <= ack <= 600:
            problems.append(f"push subscription {sname}: ack deadline {ack} must be >= the reactor "
                            f"timeout {timeout} and <= 600")
            break
    problems += _push_problems(tf, sname, sub, fname, "reactor")
    # Scheduler's account may invoke the poller.
    for jname, job in resources(tf, "google_cloud_scheduler_job").items():
        target = one(job, "http_target")
        sa = _sa_ref(one(target, "oidc_token").get("service_account_email"))
        poller = _function_for(tf, target.get("uri"))
        if not any(_function_for(tf, b.get("name", b.get("service"))) == poller and sa
                   and refers_to(b.get("member"), "google_service_account", sa[1]) for b in _invokers(tf)):
            problems.append(f"scheduler {jname}: its account has no run.invoker on the poller")
    return problems


def check_tick_fanout(tf: dict) -> list[str]:
    """Fan-out: RELAY_TICK_FANOUT from var.poller.fanout (1..64); RELAY_TICK_PARTS_TOPIC a topic only the
    poller publishes to, pushed unwrapped (the shard range is the body) to the poller with OIDC, an ack
    deadline covering the poller's timeout whenever parts are published, retries and dead-lettering."""
    problems = []
    env = tf["locals"].get("settings_env", {})
    if "var.poller.fanout" not in str(env.get("RELAY_TICK_FANOUT")):
        problems.append("RELAY_TICK_FANOUT is not set from var.poller.fanout")
    defaults = variable_defaults(tf)
    if defaults.get("poller.fanout") != 1:
        problems.append("var.poller.fanout must default to 1 (no fan-out)")
    conditions = [str(v.get("condition", "")) for v in blocks(tf["variable"].get("poller", {}), "validation")]
    if not any(re.search(r"var\.poller\.fanout\s*>=\s*1\b", c) and re.search(r"var\.poller\.fanout\s*<=\s*64\b", c)
               for c in conditions):
        problems.append("var.poller.fanout is not validated to 1..64")
    topic = re.search(r"google_pubsub_topic\.(\w+)\.name", str(env.get("RELAY_TICK_PARTS_TOPIC")))
    if not topic:
        return problems + ["RELAY_TICK_PARTS_TOPIC is not set from a google_pubsub_topic"]
    poller = _function_by_entry(tf, "poll_jobs")
    subs = [(n, b) for n, b in resources(tf, SUBSCRIPTION).items()
            if refers_to(b.get("topic"), "google_pubsub_topic", topic[1])]
    push = [(n, b) for n, b in subs if blocks(b, "push_config")]
    if len(push) != 1 or len(subs) != 1:
        return problems + [f"expected one (push) subscription on the tick-parts topic, found {[n for n, _ in subs]}"]
    sname, sub = push[0]
    cfg = one(sub, "push_config")
    if _function_for(tf, cfg.get("push_endpoint")) != poller or poller is None:
        problems.append(f"push subscription {sname}: does not push to the poll_jobs function")
    wrapper = blocks(cfg, "no_wrapper")
    if not wrapper or wrapper[0].get("write_metadata") is not False:
        problems.append(f"push subscription {sname}: needs no_wrapper {{ write_metadata = false }} (poll_jobs "
                        "reads the shard range from the body)")
    if not any("fanout" in c and "timeout_s" in c for c in conditions):
        problems.append("no validation ties var.poller.fanout to the poller timeout (ack deadlines end at 600 s)")
    for values in _value_sets(tf):
        if values.get("poller.fanout", 1) == 1 or poller is None:
            continue
        ack = evaluate(sub.get("ack_deadline_seconds"), values)
        timeout = evaluate(_timeouts(tf, poller), values)
        if ack is None or timeout is None or not timeout <= ack <= 600:
            problems.append(f"push subscription {sname}: ack deadline {ack} must be >= the poller "
                            f"timeout {timeout} and <= 600")
            break
    problems += _push_problems(tf, sname, sub, poller, "poller")
    # Only the poller (the coordinator) publishes parts.
    publishers = [members(b, tf) for b in resources(tf, "google_pubsub_topic_iam_member").values()
                  if refers_to(b.get("topic"), "google_pubsub_topic", topic[1])]
    poller_body = resources(tf, FUNCTION).get(poller or "", {})
    poller_sa = _sa_ref(one(poller_body, "service_config").get("service_account_email"))
    if not publishers or not poller_sa or any(
            {m[1] for m in _SA_RE.finditer(p)} != {poller_sa[1]} for p in publishers):
        problems.append(f"only the poller's account may publish to the tick-parts topic: {publishers}")
    return problems


def _holds(condition: str, values: dict[str, Any]) -> bool | None:
    """Whether a validation condition made of numbers, `var.x[.y]`, arithmetic, comparisons, `&&` and
    `||` holds at ``values``; None when it uses anything else."""
    text = condition.strip()
    if text.startswith("${") and text.endswith("}"):
        text = text[2:-1]
    try:
        text = re.sub(r"\bvar\.([A-Za-z_][\w.]*)", lambda m: repr(values[m[1]]), text)
    except KeyError:
        return None
    text = text.replace("&&", " and ").replace("||", " or ")
    if not re.fullmatch(r"[0-9+\-*/(). <>=!]*(?:(?:and|or)[0-9+\-*/(). <>=!]*)*", text):
        return None
    return bool(eval(text, {"__builtins__": {}}, {}))  # noqa: S307 - digits, operators, and/or (checked above)


def check_instance_capacity(tf: dict) -> list[str]:
    """One request per instance, explicitly (Cloud Run functions' default): then a fanned-out tick needs
    a poller instance per part, and as many again for the next, overlapping tick. Whatever the poller
    variable's validations accept must give ``max_instance_count >= 2 * fanout``, and 2 * fanout must be
    accepted."""
    problems = []
    poller = _function_by_entry(tf, "poll_jobs")
    for fname, body in resources(tf, FUNCTION).items():
        if evaluate(one(body, "service_config").get("max_instance_request_concurrency"), {}) != 1:
            problems.append(f"function {fname}: max_instance_request_concurrency is not set to 1")
    if poller is None:
        return problems + ["no poll_jobs function"]
    max_count = one(resources(tf, FUNCTION)[poller], "service_config").get("max_instance_count")
    conditions = [str(v.get("condition", "")) for v in blocks(tf["variable"].get("poller", {}), "validation")
                  if "max_instances" in str(v.get("condition", ""))]
    base = variable_defaults(tf)
    for fanout in (1, 2, 3, 8, 64):
        for instances in sorted({1, 2, 3, fanout, 2 * fanout - 1, 2 * fanout, 4 * fanout}):
            values = {**base, "poller.fanout": fanout, "poller.max_instances": instances}
            accepted = all(_holds(c, values) for c in conditions)
            count = evaluate(max_count, values)
            if accepted and (count is None or count < 2 * fanout):
                problems.append(f"poller.fanout = {fanout} with {count} instances is accepted: a tick and the "
                                f"next need {2 * fanout} instances of one request each")
                break
            if not accepted and instances >= 2 * fanout:
                problems.append(f"poller.fanout = {fanout} with {instances} instances is refused")
                break
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


def _public_invoker_allowed(tf: dict, rtype: str, body: dict) -> bool:
    """The one public grant the design allows: run.invoker for allUsers on the webhook function (the
    Gemini API sends no Google identity token), and only when webhooks are enabled."""
    return (rtype == "google_cloud_run_v2_service_iam_member" and body.get("role") == "roles/run.invoker"
            and body.get("member") == "allUsers"
            and _entry(tf, _function_for(tf, body.get("name"))) == "on_gemini_webhook"
            and "var.webhooks.enabled" in str(body.get("count", body.get("for_each", ""))))


def check_iam(tf: dict) -> list[str]:
    problems = []
    scanned = copy.deepcopy(tf)
    for rtype, named in scanned["resource"].items():
        for body in named.values():
            if _public_invoker_allowed(tf, rtype, body):
                body.pop("member")
    for text in strings(scanned):
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
    for name, body in accounts.items():
        if "${google_project_service.apis}" not in (body.get("depends_on") or []):
            problems.append(f"google_service_account.{name}: not ordered after the APIs (iam.googleapis.com)")
    functions = resources(tf, FUNCTION)
    for fname, body in functions.items():
        service = one(body, "service_config")
        match = _sa_ref(service.get("service_account_email"))
        if not match or match[1] not in accounts:
            problems.append(f"{FUNCTION}.{fname}: does not run as its own service account")
        ingress = service.get("ingress_settings")
        if _entry(tf, fname) == "on_gemini_webhook":
            if ingress != "ALLOW_ALL":
                problems.append(f"{FUNCTION}.{fname}: the webhook needs ingress ALLOW_ALL (the Gemini API calls it)")
        elif ingress == "ALLOW_ALL":
            problems.append(f"{FUNCTION}.{fname}: ingress ALLOW_ALL; only the webhook function may take it")
    used = [_sa_ref(one(b, "service_config").get("service_account_email")) for b in functions.values()]
    names = [m[1] for m in used if m]
    if len(names) != len(set(names)):
        problems.append("functions share a service account")
    webhook = _function_by_entry(tf, "on_gemini_webhook")
    if webhook and not any(_public_invoker_allowed(tf, "google_cloud_run_v2_service_iam_member", b)
                           for b in resources(tf, "google_cloud_run_v2_service_iam_member").values()):
        problems.append("the webhook function has no (conditional) public run.invoker")
    roles = {(b.get("role"), _SA_RE.search(members(b, tf)) is not None)
             for rtype in ("google_storage_bucket_iam_member", "google_secret_manager_secret_iam_member",
                           "google_pubsub_topic_iam_member")
             for b in resources(tf, rtype).values()}
    for role in ("roles/storage.objectViewer", "roles/storage.objectUser",
                 "roles/secretmanager.secretAccessor", "roles/pubsub.publisher"):
        if (role, True) not in roles:
            problems.append(f"no resource-level grant of {role} to a function's account")
    # Every deployed function's account: Firestore, the events topic, the Gemini API key.
    for rtype, role in (("google_project_iam_member", "roles/datastore.user"),
                        ("google_pubsub_topic_iam_member", "roles/pubsub.publisher"),
                        ("google_secret_manager_secret_iam_member", "roles/secretmanager.secretAccessor")):
        granted = " ".join(members(b, tf) for b in _members_with_role(tf, rtype, role))
        for fname in functions:
            sa = _sa_ref(one(functions[fname], "service_config").get("service_account_email"))
            if sa and f"google_service_account.{sa[1]}" not in granted:
                problems.append(f"{FUNCTION}.{fname}: its account has no {role} ({rtype})")
    if webhook:
        sa = _sa_ref(one(functions[webhook], "service_config").get("service_account_email"))
        secret_grants = [b for b in _members_with_role(tf, "google_secret_manager_secret_iam_member",
                                                       "roles/secretmanager.secretAccessor")
                         if "webhook" in str(b.get("secret_id")) and sa and
                         f"google_service_account.{sa[1]}" in members(b, tf)]
        if not secret_grants:
            problems.append("the webhook account cannot read the webhook signing secret")
    return problems


def check_build(tf: dict) -> list[str]:
    """Builds run as their own account (or var.build_service_account), which can write logs, push to
    the functions' Artifact Registry repository and read the bundle."""
    problems = []
    build_sa = str(tf["locals"].get("build_service_account", ""))
    if "var.build_service_account" not in build_sa or "google_service_account." not in build_sa:
        problems.append("locals.build_service_account must be var.build_service_account or a created account")
    repos = resources(tf, "google_artifact_registry_repository")
    for fname, body in resources(tf, FUNCTION).items():
        build = one(body, "build_config")
        if build.get("service_account") != "${local.build_service_account}":
            problems.append(f"{FUNCTION}.{fname}: build_config.service_account is not local.build_service_account")
        repo = re.search(r"google_artifact_registry_repository\.(\w+)\.id", str(build.get("docker_repository")))
        if not repo or repo[1] not in repos:
            problems.append(f"{FUNCTION}.{fname}: no docker_repository of this deployment")
    build_member = "local.build_member"
    for rtype, role in (("google_project_iam_member", "roles/logging.logWriter"),
                        ("google_artifact_registry_repository_iam_member", "roles/artifactregistry.writer"),
                        ("google_storage_bucket_iam_member", "roles/storage.objectViewer")):
        grants = [b for b in _members_with_role(tf, rtype, role) if build_member in str(b.get("member"))]
        if not grants:
            problems.append(f"the build account has no {role}")
        elif rtype == "google_storage_bucket_iam_member" and not any(
                refers_to(b.get("bucket"), "google_storage_bucket", "source") for b in grants):
            problems.append("the build account cannot read the source bucket")
    if "local.build_service_account" not in str(tf["locals"].get("build_member")):
        problems.append("locals.build_member is not derived from locals.build_service_account")
    return problems


def check_pubsub_agent(tf: dict) -> list[str]:
    """The Pub/Sub service agent exists before anything grants it a role."""
    identities = [n for n, b in resources(tf, "google_project_service_identity").items()
                  if b.get("service") == "pubsub.googleapis.com"
                  and b.get("provider") in ("google-beta", "${google-beta}")]
    if not identities:
        return ["no google_project_service_identity for pubsub.googleapis.com (provider google-beta)"]
    if f"google_project_service_identity.{identities[0]}." not in str(tf["locals"].get("pubsub_agent")):
        return ["locals.pubsub_agent is not taken from the google_project_service_identity"]
    return []


def check_watch(tf: dict) -> list[str]:
    """Watched scopes: RELAY_WATCH (comma-joined) and RELAY_WATCH_FILTER from var.watch, each scope
    validated, and the poller may read jobs in the projects of the Vertex AI scopes."""
    problems = []
    env = tf["locals"].get("settings_env", {})
    if not re.search(r'join\(",", var\.watch\.scopes\)', str(env.get("RELAY_WATCH"))):
        problems.append("RELAY_WATCH is not var.watch.scopes, comma-joined")
    if "var.watch.filter" not in str(env.get("RELAY_WATCH_FILTER")):
        problems.append("RELAY_WATCH_FILTER is not set from var.watch.filter")
    patterns = [m for v in blocks(tf["variable"].get("watch", {}), "validation")
                for m in re.findall(r'regex\("((?:[^"\\]|\\.)*)"', str(v.get("condition", "")))]
    scope_re = next((p.replace("\\\\", "\\") for p in patterns if "gemini" in p), None)
    if scope_re is None:
        problems.append("var.watch.scopes has no validation regex")
    else:
        for good in ("gemini", "vertex:projects/my-project/locations/us-central1"):
            if not re.fullmatch(scope_re, good):
                problems.append(f"var.watch validation rejects {good!r}")
        for bad in ("vertex", "vertex:projects/p/locations", "gemini,vertex", "openai", "projects/p/locations/l",
                    "vertex:projects/my-project/locations/us-central1/batchPredictionJobs/1"):
            if re.fullmatch(scope_re, bad):
                problems.append(f"var.watch validation accepts {bad!r}")
    viewer = [b for b in _members_with_role(tf, "google_project_iam_member", "roles/aiplatform.viewer")
              if "google_service_account.poller." in str(b.get("member"))]
    covered = " ".join(resolve_locals(tf, b.get("for_each", "")) + " " + " ".join(
        str(tf["locals"].get(n, "")) for n in re.findall(r"local\.(\w+)", str(b.get("for_each", ""))))
        for b in viewer)
    if "var.watch.scopes" not in covered:
        problems.append("the poller's roles/aiplatform.viewer does not cover the projects of var.watch.scopes")
    return problems


def check_webhook(tf: dict) -> list[str]:
    """The Gemini webhook: off by default, its secrets by id, JWKS URL when set, URL output."""
    problems = []
    webhooks = tf["variable"].get("webhooks")
    if not webhooks:
        return ["variable webhooks missing"]
    if not re.search(r"enabled\s*=\s*optional\(\s*bool\s*,\s*false\s*\)", str(webhooks.get("type"))):
        problems.append("var.webhooks.enabled must default to false")
    if "var.webhooks.jwks_url" not in str(tf["locals"].get("settings_env", {}).get("RELAY_GEMINI_JWKS_URL")):
        problems.append("RELAY_GEMINI_JWKS_URL is not set from var.webhooks.jwks_url")
    webhook = _function_by_entry(tf, "on_gemini_webhook")
    if not webhook:
        return problems + ["no function deploys on_gemini_webhook"]
    if "RELAY_GEMINI_WEBHOOK_SECRETS" not in secret_keys(resources(tf, FUNCTION)[webhook]):
        problems.append("the webhook function has no secret environment variable RELAY_GEMINI_WEBHOOK_SECRETS")
    if "webhook_url" not in tf["output"]:
        problems.append("output webhook_url missing")
    return problems


def check_indexes(tf: dict, needed: list[dict]) -> list[str]:
    declared = []
    for body in resources(tf, "google_firestore_index").values():
        collection = str(body.get("collection", "")).replace("${var.firestore.collection}", "{collection}")
        fields = [(f.get("field_path"), f.get("order") or f.get("array_config")) for f in blocks(body, "fields")]
        each_fields = (body.get("__each__") or {}).get("fields")
        if any(str(f[0]).startswith("${fields.value") for f in fields) and isinstance(each_fields, list):
            fields = [(f.get("field_path"), f.get("order") or f.get("array_config")) for f in each_fields]
        fields = [f for f in fields if f[0] != "__name__"]
        declared.append((collection, str(body.get("query_scope", "COLLECTION")), fields))
    problems = []
    for index in needed:
        want = (index["collection"], index.get("query_scope", "COLLECTION"),
                [(f[0], f[1]) for f in index["fields"]])
        if want not in declared:
            problems.append(f"composite index {want} is needed by shared/record/store.py but not declared")
    return problems


_DB_CONDITION = re.compile(r'resource\.name\s*==\s*"\$\{local\.firestore_database_resource\}"')


def check_trust(tf: dict) -> list[str]:
    """Who may write the relay's database, and where copies may go and come from (docs/security.md):
    - the relay has its own Firestore database by default (firestore.create_database true, an id of its own
      unless one is given), and the database resource, RELAY_FIRESTORE_DATABASE and the IAM condition all
      name local.names.firestore_database;
    - every roles/datastore.user grant carries an IAM condition holding it to that database;
    - RELAY_SOURCE_BUCKETS is set from var.source_buckets; RELAY_ALLOWED_BUCKETS from var.allowed_buckets and
      the default destination, and "*" only behind var.allow_any_destination, which defaults to false."""
    problems = []
    ftype = str(tf["variable"]["firestore"].get("type", ""))
    if not re.search(r"create_database\s*=\s*optional\(\s*bool\s*,\s*true\s*\)", ftype):
        problems.append("firestore.create_database must default to true: the relay gets a database of its own")
    default_id = re.search(r'database_id\s*=\s*optional\(\s*string\s*(?:,\s*"([^"]*)")?\s*\)', ftype)
    db_name = str(tf["locals"]["names"].get("firestore_database", ""))
    if not default_id or default_id[1] == "(default)" or "var.firestore.database_id" not in db_name \
            or "var.prefix" not in db_name:
        problems.append("the database id must default to one of the relay's own (PREFIX-db), not (default)")
    named = "${local.names.firestore_database}"
    databases = resources(tf, "google_firestore_database")
    if not databases or any(body.get("name") != named for body in databases.values()):
        problems.append("google_firestore_database must be named local.names.firestore_database")
    env = tf["locals"].get("settings_env", {})
    if env.get("RELAY_FIRESTORE_DATABASE") != named:
        problems.append("RELAY_FIRESTORE_DATABASE must be local.names.firestore_database")
    if tf["locals"].get("firestore_database_resource") != f"projects/${{var.project_id}}/databases/{named}":
        problems.append("locals.firestore_database_resource must be projects/PROJECT/databases/DATABASE")
    grants = [(f"{rtype}.{name}", body) for rtype in ("google_project_iam_member", "google_project_iam_binding")
              for name, body in resources(tf, rtype).items() if body.get("role") == "roles/datastore.user"]
    if not grants:
        problems.append("no roles/datastore.user grant for the functions")
    for where, body in grants:
        conditions = blocks(body, "condition")
        if len(conditions) != 1 or not _DB_CONDITION.fullmatch(str(conditions[0].get("expression", "")).strip()):
            problems.append(f"{where}: roles/datastore.user without the IAM condition "
                            'resource.name == "${local.firestore_database_resource}"')
    if "var.source_buckets" not in str(env.get("RELAY_SOURCE_BUCKETS", "")):
        problems.append("RELAY_SOURCE_BUCKETS must be set from var.source_buckets")
    allowed = resolve_locals(tf, env.get("RELAY_ALLOWED_BUCKETS", ""))
    entries = str(tf["locals"].get("destination_entries", ""))
    if "local.destination_entries" not in allowed or "var.allowed_buckets" not in entries \
            or "var.default_destination" not in entries:
        problems.append("RELAY_ALLOWED_BUCKETS must be set from var.allowed_buckets and var.default_destination")
    if "*" in re.sub(r'var\.allow_any_destination\s*\?\s*"\*"', "", allowed):
        problems.append('RELAY_ALLOWED_BUCKETS may be "*" only when var.allow_any_destination is true')
    if tf["variable"].get("allow_any_destination", {}).get("default") is not False:
        problems.append("var.allow_any_destination must default to false (any bucket is an explicit opt-in)")
    # The reactor reads each finished job from the API: Vertex AI in every project the poller reads.
    viewers = _members_with_role(tf, "google_project_iam_member", "roles/aiplatform.viewer")
    projects = {members(b, tf): str(b.get("for_each")) for b in viewers}
    poller = next((v for k, v in projects.items() if "google_service_account.poller" in k), None)
    reactor = next((v for k, v in projects.items() if "google_service_account.reactor" in k), None)
    if reactor is None or reactor != poller:
        problems.append("the reactor's account needs roles/aiplatform.viewer in the projects the poller reads")
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


def _sleep_metrics(tf: dict, sleep: str, key: str) -> set[str]:
    """The google_logging_metric instance a time_sleep's triggers[key] holds the name of."""
    triggers = resources(tf, "time_sleep").get(sleep, {}).get("triggers")
    if isinstance(triggers, dict):
        return set(re.findall(r'google_logging_metric\.(\w+(?:\["[^"]+"\])?)\.', str(triggers.get(key))))
    match = re.search(r"for \w+, \w+ in google_logging_metric\.(\w+) :", str(triggers))
    if match and f'{match[1]}["{key}"]' in resources(tf, "google_logging_metric"):
        return {f'{match[1]}["{key}"]'}
    return set()


def metric_refs(tf: dict, expr: Any) -> set[str]:
    """google_logging_metric instances an expression names, directly or through a time_sleep."""
    text = str(expr)
    refs = set(re.findall(r'google_logging_metric\.(\w+(?:\["[^"]+"\])?)\.', text))
    for sleep, key in re.findall(r'time_sleep\.(\w+)\.triggers\["([^"]+)"\]', text):
        refs |= _sleep_metrics(tf, sleep, key)
    return refs


def _metric_line(body: dict) -> tuple[str | None, str | None]:
    """(the jsonPayload.message a log-based metric matches, the field it extracts or None)."""
    message = re.search(r'jsonPayload\.message=\\?"([^"\\]+)\\?"', str(body.get("filter")))
    field = re.search(r"EXTRACT\(jsonPayload\.(\w+)\)", str(body.get("value_extractor")))
    return (message[1] if message else None), (field[1] if field else None)


def _value_type(body: dict) -> str:
    """A log-based metric's value type; `(x) == null ? "A" : "B"` (an expanded for_each) evaluated."""
    text = str(one(body, "metric_descriptor").get("value_type"))
    match = re.fullmatch(r'\$\{\((.*)\) == null \? "(\w+)" : "(\w+)"\}', text)
    return (match[2] if match[1] == "null" else match[3]) if match else text


def check_monitoring(tf: dict) -> list[str]:
    problems = []
    metrics = {n: b for n, b in resources(tf, "google_logging_metric").items()
               if _metric_line(b) == ("tick finished", None)}
    policies = resources(tf, "google_monitoring_alert_policy").values()
    absent = [one(c, "condition_absent") for p in policies for c in blocks(p, "conditions")]
    if not any(metric_refs(tf, a.get("filter")) & set(metrics) for a in absent):
        problems.append("no metric-absence alert on the 'tick finished' log metric (stale heartbeat)")
    threshold = [one(c, "condition_threshold") for p in policies for c in blocks(p, "conditions")]
    if not any("num_undelivered_messages" in str(t.get("filter")) and "dead_letter" in str(t.get("filter"))
               for t in threshold):
        problems.append("no alert on the dead-letter subscription's backlog")
    errors = {n for n, b in resources(tf, "google_logging_metric").items()
              if _metric_line(b) == ("status fetch failed", None)}
    if not any(metric_refs(tf, t.get("filter")) & errors and "var.alerts." in str(t.get("threshold_value"))
               and "var.alerts." in str(t.get("duration")) for t in threshold):
        problems.append("no alert on a sustained 'status fetch failed' rate (threshold and duration from var.alerts)")
    disabled = {n for n, b in resources(tf, "google_logging_metric").items()
                if _metric_line(b) == ("webhook disabled", None)}
    if not any(metric_refs(tf, one(c, "condition_threshold").get("filter")) & disabled
               and "var.alerts." in str(p.get("count"))
               for p in resources(tf, "google_monitoring_alert_policy").values() for c in blocks(p, "conditions")):
        problems.append("no alert (switched by var.alerts) on the 'webhook disabled' log metric (webhook health)")
    # Monitoring answers 404 for minutes after a log-based metric is created: whatever names a metric
    # takes its name from a time_sleep created after the metrics.
    sleeps = resources(tf, "time_sleep")
    for rtype in ("google_monitoring_alert_policy", "google_monitoring_dashboard"):
        for name, body in resources(tf, rtype).items():
            text = json.dumps(body)
            if "google_logging_metric." in text:
                problems.append(f"{rtype}.{name}: names google_logging_metric directly; take the name from "
                                "the time_sleep's triggers (Monitoring may not know a new metric for 10 minutes)")
            if "logging.googleapis.com/user/" in text and not re.search(r"time_sleep\.|local\.user_metric", text):
                problems.append(f"{rtype}.{name}: uses a log-based metric without waiting on the time_sleep")
    if not any("google_logging_metric." in str(b.get("triggers")) and re.fullmatch(r"([6-9][0-9]|[1-9][0-9]{2,})s",
                                                                                 str(b.get("create_duration")))
               for b in sleeps.values()):
        problems.append("no time_sleep (>= 60s) triggered by the log-based metrics")
    if sleeps and "time_sleep." not in str(tf["locals"].get("user_metric", "time_sleep.")):
        problems.append("locals.user_metric is not derived from the time_sleep")
    return problems


def check_log_metrics(tf: dict) -> list[str]:
    """Every log line in LOG_METRICS has a log-based metric, filtered on its function's Cloud Run service."""
    problems = []
    metrics = resources(tf, "google_logging_metric")
    service_of = {entry: f"local.names.{key}_function"
                  for entry, key in (("poll_jobs", "poller"), ("on_job_event", "reactor"))}
    for message, field, entry in LOG_METRICS:
        found = [n for n, b in metrics.items() if _metric_line(b) == (message, field)]
        if not found:
            problems.append(f"no log-based metric {'counts' if field is None else 'extracts ' + field + ' of'} "
                            f"the {message!r} lines")
            continue
        body = metrics[found[0]]
        filt = resolve_locals(tf, body.get("filter"))
        if 'resource.type=\\"cloud_run_revision\\"' not in filt and 'resource.type="cloud_run_revision"' not in filt:
            problems.append(f"google_logging_metric.{found[0]}: filter is not on cloud_run_revision")
        if resolve_locals(tf, "${" + service_of[entry] + "}") not in filt:
            problems.append(f"google_logging_metric.{found[0]}: filter is not on the {entry} service")
        kind = _value_type(body)
        if kind != ("INT64" if field is None else "DISTRIBUTION"):
            problems.append(f"google_logging_metric.{found[0]}: value type {kind!r} does not fit field {field!r}")
    return problems


def check_dashboard(tf: dict) -> list[str]:
    """The dashboard charts every log-based metric (local.dashboard_charts names them by key)."""
    dashboards = resources(tf, "google_monitoring_dashboard")
    if not dashboards:
        return ["no google_monitoring_dashboard"]
    problems = []
    charts = tf["locals"].get("dashboard_charts")
    if not isinstance(charts, list) or not all(isinstance(c, dict) for c in charts):
        return ["locals.dashboard_charts must be a list of chart objects"]
    body = json.dumps(next(iter(dashboards.values())))
    if "local.visible_charts" not in body and "local.dashboard_charts" not in body:
        problems.append("the dashboard is not built from locals.dashboard_charts")
    charted = {c.get("metric") for c in charts}
    for key in tf["locals"].get("log_metrics", {}):
        if key not in charted:
            problems.append(f"no dashboard chart for the log-based metric {key}")
    for chart in charts:
        if chart.get("metric") is None and not chart.get("filter"):
            problems.append(f"dashboard chart {chart.get('title')!r} has neither a metric nor a filter")
    return problems


def check_stalls(tf: dict) -> list[str]:
    """RELAY_STALL_AFTER_S from var.poller.stall_after_s (default 6 h), and something that reacts to stalls:
    an ordered subscription on the stalled events, and an alert on the 'job stalled' log metric."""
    problems = []
    if "var.poller.stall_after_s" not in str(tf["locals"].get("settings_env", {}).get("RELAY_STALL_AFTER_S")):
        problems.append("RELAY_STALL_AFTER_S is not set from var.poller.stall_after_s")
    if variable_defaults(tf).get("poller.stall_after_s") != 21600:
        problems.append("var.poller.stall_after_s must default to 21600")
    if not any('"batchrelay.job.v1.stalled"' in str(b.get("filter")) and b.get("enable_message_ordering") is True
               and not blocks(b, "push_config") for b in resources(tf, SUBSCRIPTION).values()):
        problems.append("no ordered example subscription on batchrelay.job.v1.stalled events")
    stalls = {n for n, b in resources(tf, "google_logging_metric").items() if _metric_line(b)[0] == "job stalled"}
    if not any(metric_refs(tf, one(c, "condition_threshold").get("filter")) & stalls
               and "var.alerts." in str(p.get("count"))
               for p in resources(tf, "google_monitoring_alert_policy").values() for c in blocks(p, "conditions")):
        problems.append("no alert policy (behind var.alerts switches) on the 'job stalled' log metric")
    return problems


def check_cadence(tf: dict) -> list[str]:
    """RELAY_MAX_POLL_INTERVAL_S and RELAY_TICK_INTERVAL_S from poller variables; the tick interval
    defaults to 60 (the default schedule runs every minute) and is validated."""
    problems = []
    env = tf["locals"].get("settings_env", {})
    defaults = variable_defaults(tf)
    for name, attr, default in (("RELAY_MAX_POLL_INTERVAL_S", "max_poll_interval_s", 300),
                                ("RELAY_TICK_INTERVAL_S", "tick_interval_s", 60)):
        if f"var.poller.{attr}" not in str(env.get(name)):
            problems.append(f"{name} is not set from var.poller.{attr}")
        if defaults.get(f"poller.{attr}") != default:
            problems.append(f"var.poller.{attr} must default to {default}")
    poller_type = str(tf["variable"].get("poller", {}).get("type"))
    if not re.search(r'schedule\s*=\s*optional\(\s*string\s*,\s*"\* \* \* \* \*"\s*\)', poller_type):
        problems.append('var.poller.schedule must default to "* * * * *" (every 60 s)')
    conditions = " ".join(str(v.get("condition", "")) for v in blocks(tf["variable"].get("poller", {}), "validation"))
    if "var.poller.tick_interval_s" not in conditions:
        problems.append("var.poller.tick_interval_s is not validated")
    elif not re.search(r"var\.poller\.tick_interval_s[^&|]*var\.poller\.schedule|var\.poller\.schedule[^;]*"
                       r"var\.poller\.tick_interval_s", conditions):
        problems.append("no validation holds var.poller.tick_interval_s against var.poller.schedule")
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
    for out in ("events_topic", "example_subscription", "function_urls", "service_accounts", "webhook_url"):
        if out not in tf["output"]:
            problems.append(f"output {out} missing")
    # No lock file is shipped, so every provider is pinned to one minor release (`~> X.Y.0`).
    required = {name: spec for t in tf["terraform"] for rp in blocks(t, "required_providers")
                for name, spec in rp.items()}
    google = str((required.get("google") or {}).get("version", ""))
    if not re.fullmatch(r"~> 8\.\d+\.0", google):
        problems.append(f"google provider is not pinned to one 8.x minor (~> 8.N.0): {google!r}")
    used = {"time": bool(resources(tf, "time_sleep")),
            "google-beta": any(b.get("provider") in ("google-beta", "${google-beta}")
                               for named in tf["resource"].values() for b in named.values())}
    for name, needed in used.items():
        spec = required.get(name) or {}
        if needed and (spec.get("source") != f"hashicorp/{name}"
                       or not re.fullmatch(r"~> \d+\.\d+\.0", str(spec.get("version", "")))):
            problems.append(f"provider {name} is used but not declared as hashicorp/{name} ~> X.Y.0")
    if used["google-beta"] and str(required.get("google-beta", {}).get("version")) != google:
        problems.append("google-beta is not pinned like google")
    # Renamed resources keep their state (no destroy and rebuild of deployed functions).
    moved = {(m.get("from"), m.get("to")) for m in tf["moved"]}
    for old, new in (("poller", 'function["poller"]'), ("reactor", 'function["reactor"]')):
        if (f"${{{FUNCTION}.{old}}}", f"${{{FUNCTION}.{new}}}") not in moved and f"{FUNCTION}.{old}" not in str(moved):
            problems.append(f"no moved block from {FUNCTION}.{old} to {FUNCTION}.{new}")
    if "iam.googleapis.com" not in str(tf["locals"].get("services")):
        problems.append("iam.googleapis.com is not among the enabled services")
    for text in strings(tf["resource"]):
        if re.search(r"\brandom_", text):
            problems.append(f"random names are not allowed: {text[:60]!r}")
    if tf["resource"].get("random_id") or tf["resource"].get("random_string") or tf["resource"].get("random_pet"):
        problems.append("random_* resources are not allowed")
    return problems


# ----------------------------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def tf() -> dict:
    return load_terraform(INFRA)


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
    assert MAIN_PY.is_file(), "functions/main.py is missing"
    assert check_functions(tf, entry_points()) == []


def test_builds_use_their_own_account_and_repository(tf):
    assert check_build(tf) == []


def test_pubsub_service_agent_exists_before_its_grants(tf):
    assert check_pubsub_agent(tf) == []


def test_scheduler_calls_poller_with_oidc_within_its_timeout(tf):
    assert check_scheduler(tf) == []


def test_reactor_delivery_push_subscription(tf):
    assert check_delivery(tf) == []


def test_tick_fanout_push_subscription(tf):
    assert check_tick_fanout(tf) == []


def test_a_fan_out_has_an_instance_per_request(tf):
    assert check_instance_capacity(tf) == []


def test_the_capacity_check_catches_what_it_should(tf):
    shared = _mutated(tf, FUNCTION, lambda b: one(b, "service_config").update(max_instance_request_concurrency=8))
    assert any("max_instance_request_concurrency" in p for p in check_instance_capacity(shared))
    unset = _mutated(tf, FUNCTION, lambda b: one(b, "service_config").pop("max_instance_request_concurrency"))
    assert any("max_instance_request_concurrency" in p for p in check_instance_capacity(unset))
    for loose in ("var.poller.fanout <= var.poller.max_instances", "true"):
        changed = copy.deepcopy(tf)
        for val in blocks(changed["variable"]["poller"], "validation"):
            val["condition"] = str(val["condition"]).replace("2 * var.poller.fanout <= var.poller.max_instances", loose)
        assert any("is accepted" in p for p in check_instance_capacity(changed)), loose
    strict = copy.deepcopy(tf)
    for val in blocks(strict["variable"]["poller"], "validation"):
        val["condition"] = str(val["condition"]).replace("2 * var.poller", "3 * var.poller")
    assert any("is refused" in p for p in check_instance_capacity(strict))


def test_watched_scopes(tf):
    assert check_watch(tf) == []


def test_gemini_webhook(tf):
    assert check_webhook(tf) == []


def test_stalls_and_cadence(tf):
    assert check_stalls(tf) == []
    assert check_cadence(tf) == []


def test_example_subscription_is_ordered(tf):
    assert check_example_subscription(tf) == []


def test_iam_least_privilege(tf):
    assert check_iam(tf) == []


def check_queries(tf: dict, code: list, docs: list) -> list[str]:
    """The indexes of infra/firestore.tf against the queries (devtools.queries): no query of the code or of
    the docs filters or orders on a field whose indexes are switched off; every composite index a query of
    the code needs is declared, and none is declared that no query needs; every exempt field is one the
    code writes; and what no query reads is exempt — the fields stamped with the tick's clock (sequential:
    500 writes/s), the record's internal maps and the transitions' stored documents (blobs)."""
    from batch_relay.record.model import PUBLIC_FIELDS, JobRecord
    from devtools.queries import (
        JOBS,
        TRANSITIONS,
        clock_stamped,
        declared_composites,
        declared_exemptions,
        exempt,
        transition_blobs,
    )

    problems = []
    exemptions = declared_exemptions(tf)
    for query in code + docs:
        for field in sorted(query.fields):
            if exempt(field, exemptions.get(query.collection, set())):
                problems.append(f"{query.where}: queries {query.collection}.{field}, whose indexes are switched off")
    needed = {(q.collection, q.composite()) for q in code if q.composite()}
    declared = declared_composites(tf)
    for collection, fields in sorted(needed - declared):
        problems.append(f"composite index {collection} {fields} is needed by a query of shared/ but not declared")
    for collection, fields in sorted(declared - needed):
        problems.append(f"composite index {collection} {fields} is declared but no query of shared/ needs it")
    code_text = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "shared").rglob("*.py"))
    record_fields = {f.name for f in dataclasses.fields(JobRecord)}
    writers = [REPO / "shared" / "record" / "machine.py", REPO / "shared" / "record" / "model.py"]
    unread = clock_stamped(writers)
    unread[JOBS] = (unread[JOBS] & record_fields) | {
        f.name for f in dataclasses.fields(JobRecord)
        if f.name not in PUBLIC_FIELDS and ("dict" in str(f.type) or "Lease" in str(f.type))}
    unread[TRANSITIONS] |= transition_blobs(writers)
    queried = {(q.collection, f) for q in code + docs for f in q.fields}
    for collection, fields in sorted(unread.items()):
        for field in sorted(fields):
            if not any(c == collection and (f == field or f.startswith(f"{field}.")) for c, f in queried) and \
                    not exempt(field, exemptions.get(collection, set())):
                problems.append(f"{collection}.{field} is read by no query but indexed: exempt it")
    for collection, fields in sorted(exemptions.items()):
        for field in sorted(fields):
            if field not in record_fields and f'"{field}"' not in code_text:
                problems.append(f"exemption {collection}.{field}: the code never writes such a field")
    return problems


def _queries() -> tuple[list, list]:
    from devtools.queries import code_queries, doc_queries

    return code_queries(REPO / "shared"), doc_queries([*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"])


def test_indexes_follow_the_queries_of_the_code_and_the_docs(tf):
    code, docs = _queries()
    # the reader finds the queries it must (else the check below would pass on nothing)
    jobs = {f for q in code if q.collection == "{collection}" for f in q.fields}
    assert {"poll_slot", "shard", "state", "terminal", "has_unpublished", "watch_scope", "copy.status"} <= jobs
    assert {"kind"} <= {f for q in code if q.collection == "{collection}_meta" for f in q.fields}
    assert {"version"} <= {f for q in code if q.collection == "transitions" for f in q.fields}
    assert {"name", "state", "end_time", "labels.team", "copy.status"} <= {
        f for q in docs if q.collection == "{collection}" for f in q.fields}
    assert check_queries(tf, code, docs) == []


def test_the_index_check_catches_what_it_should(tf):
    code, docs = _queries()
    exempt_state = copy.deepcopy(tf)
    exempt_state["resource"]["google_firestore_field"]['unindexed["jobs_state"]'] = {
        "collection": "${var.firestore.collection}", "field": "state", "index_config": [{}]}
    problems = check_queries(exempt_state, code, docs)
    assert any("{collection}.state" in p and "record.md" in p for p in problems)
    assert any("{collection}.state" in p and "shared/record/jobs.py" in p for p in problems)
    exempt_labels = copy.deepcopy(tf)
    exempt_labels["resource"]["google_firestore_field"]['unindexed["jobs_labels"]'] = {
        "collection": "${var.firestore.collection}", "field": "labels", "index_config": [{}]}
    assert any("labels.team" in p for p in check_queries(exempt_labels, code, docs))
    no_index = copy.deepcopy(tf)
    no_index["resource"]["google_firestore_index"] = {}
    assert any("not declared" in p for p in check_queries(no_index, code, docs))
    extra = copy.deepcopy(tf)
    extra["resource"]["google_firestore_index"]["unused"] = {
        "collection": "${var.firestore.collection}", "fields": [{"field_path": "state"}, {"field_path": "end_time"}]}
    assert any("no query of shared/ needs it" in p for p in check_queries(extra, code, docs))
    indexed = copy.deepcopy(tf)
    indexed["resource"]["google_firestore_field"] = {
        k: v for k, v in indexed["resource"]["google_firestore_field"].items() if v.get("field") != "polled_at"}
    assert any("{collection}.polled_at is read by no query" in p for p in check_queries(indexed, code, docs))
    typo = copy.deepcopy(tf)
    typo["resource"]["google_firestore_field"]['unindexed["jobs_poled_at"]'] = {
        "collection": "${var.firestore.collection}", "field": "poled_at", "index_config": [{}]}
    assert any("poled_at" in p for p in check_queries(typo, code, docs))


def test_the_relays_database_and_the_copys_allow_lists(tf):
    assert check_trust(tf) == []


def test_trust_checks_catch_broken_terraform(tf):
    shared_default = copy.deepcopy(tf)
    shared_default["variable"]["firestore"]["type"] = str(tf["variable"]["firestore"]["type"]).replace(
        "create_database = optional(bool, true)", "create_database = optional(bool, false)").replace(
        "database_id = optional(string)", 'database_id = optional(string, "(default)")')
    shared_default["locals"]["settings_env"]["RELAY_FIRESTORE_DATABASE"] = "${var.firestore.database_id}"
    problems = check_trust(shared_default)
    for expected in ("create_database", "(default)", "RELAY_FIRESTORE_DATABASE"):
        assert any(expected in p for p in problems), (expected, problems)
    unconditioned = _mutated(tf, "google_project_iam_member",
                             lambda b: b.pop("condition", None) if b.get("role") == "roles/datastore.user" else None)
    assert any("without the IAM condition" in p for p in check_trust(unconditioned))
    other_db = _mutated(tf, "google_project_iam_member", lambda b: [
        c.update(expression='resource.name == "projects/p/databases/(default)"') for c in blocks(b, "condition")])
    assert any("without the IAM condition" in p for p in check_trust(other_db))
    extra = copy.deepcopy(tf)
    extra["resource"]["google_project_iam_member"]["cli"] = {"role": "roles/datastore.user", "member": "user:a@b.c"}
    assert any("google_project_iam_member.cli" in p for p in check_trust(extra))
    any_bucket = copy.deepcopy(tf)
    any_bucket["locals"]["settings_env"]["RELAY_ALLOWED_BUCKETS"] = "*"
    any_bucket["locals"]["settings_env"].pop("RELAY_SOURCE_BUCKETS")
    any_bucket["variable"]["allow_any_destination"]["default"] = True
    problems = check_trust(any_bucket)
    for expected in ('"*" only when', "RELAY_SOURCE_BUCKETS", "var.allowed_buckets", "default to false"):
        assert any(expected in p for p in problems), (expected, problems)
    blind = copy.deepcopy(tf)
    blind["resource"]["google_project_iam_member"].pop("reactor_vertex_viewer")
    assert any("aiplatform.viewer" in p for p in check_trust(blind))


def test_ttl_policies(tf):
    assert check_ttl(tf) == []


def test_alerts(tf):
    assert check_monitoring(tf) == []


def test_log_metrics_and_dashboard(tf):
    assert check_log_metrics(tf) == []
    assert check_dashboard(tf) == []


def test_the_code_writes_every_metered_log_line():
    """A log-based metric counts lines by their message: each message in LOG_METRICS is a string the code
    writes (a renamed log line would leave its metric, its chart and its alert at zero)."""
    code = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "shared").rglob("*.py"))
    assert [m for m, _, _ in LOG_METRICS if f'"{m}"' not in code] == []


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

    kinds = dict(ENTRY_POINTS)
    wrong_runtime = _mutated(tf, FUNCTION, lambda b: one(b, "build_config").update(runtime="python311"))
    assert any("python312" in p for p in check_functions(wrong_runtime, kinds))
    assert any("entry point" in p for p in check_functions(tf, {"poll_jobs": "http", "on_event": "cloud_event"}))
    assert any("expected cloud_event" in p for p in check_functions(tf, {**kinds, "on_job_event": "http"}))
    no_webhook_entry = {"poll_jobs": "http", "on_job_event": "cloud_event"}
    assert any("on_gemini_webhook" in p for p in check_functions(tf, no_webhook_entry))
    split = copy.deepcopy(tf)
    split["resource"][FUNCTION]["poller"] = split["resource"][FUNCTION].pop('function["poller"]')
    assert any("one for_each" in p for p in check_functions(split, kinds))
    always = _mutated(tf, FUNCTION, lambda b: b["__each__"].update(enabled=True))
    assert any("only when var.webhooks.enabled" in p for p in check_functions(always, kinds))
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
    successes = 'attributes:previous_state AND (attributes.state = "JOB_STATE_SUCCEEDED")'
    assert any("the reactor acts on" in p for p in check_reactor_filter("r", successes))  # partial outputs missed
    from batch_relay.batchapi.states import TERMINAL

    every = " OR ".join(f'attributes.state = "{s}"' for s in sorted(TERMINAL))
    assert any("Pub/Sub takes 256" in p for p in check_reactor_filter("r", f'attributes.ce-type = '
                                                                   f'"batchrelay.job.v1.stateChanged" AND ({every})'))
    assert any("lacks attributes.ce-type" in p for p in check_reactor_filter("r", f"({every})"))

    unordered = _mutated(tf, SUBSCRIPTION, lambda b: b.update(enable_message_ordering=False))
    assert check_example_subscription(unordered)

    def wrap(body):
        if blocks(body, "push_config"):
            one(body, "push_config").pop("no_wrapper", None)
    assert any("no_wrapper" in p for p in check_tick_fanout(_mutated(tf, SUBSCRIPTION, wrap)))
    to_reactor = copy.deepcopy(tf)
    for body in resources(to_reactor, SUBSCRIPTION).values():
        cfg = one(body, "push_config")
        if cfg and "tick_parts" in str(body.get("topic")):
            cfg["push_endpoint"] = '${google_cloudfunctions2_function.function["reactor"].service_config[0].uri}'
    assert any("poll_jobs" in p for p in check_tick_fanout(to_reactor))
    assert any("expected one push subscription to the on_job_event" in p for p in check_delivery(to_reactor))
    short = copy.deepcopy(tf)
    resources(short, SUBSCRIPTION)["tick_parts"]["ack_deadline_seconds"] = 60
    assert any("ack deadline" in p for p in check_tick_fanout(short))
    second_publisher = copy.deepcopy(tf)
    second_publisher["resource"]["google_pubsub_topic_iam_member"]["z"] = {
        "topic": "${google_pubsub_topic.tick_parts.name}", "role": "roles/pubsub.publisher",
        "member": "${google_service_account.reactor.member}"}
    assert any("only the poller" in p for p in check_tick_fanout(second_publisher))
    unlimited = copy.deepcopy(tf)
    for val in blocks(unlimited["variable"]["poller"], "validation"):
        val["condition"] = str(val["condition"]).replace("var.poller.fanout <= 64", "true")
    assert any("1..64" in p for p in check_tick_fanout(unlimited))

    no_watch = copy.deepcopy(tf)
    no_watch["locals"]["settings_env"]["RELAY_WATCH"] = "${var.watch.scopes[0]}"
    no_watch["resource"]["google_project_iam_member"]["poller_vertex_viewer"]["for_each"] = "${toset([var.project_id])}"
    problems = check_watch(no_watch)
    assert any("comma-joined" in p for p in problems) and any("aiplatform.viewer" in p for p in problems)
    loose = copy.deepcopy(tf)
    for val in blocks(loose["variable"]["watch"], "validation"):
        val["condition"] = str(val["condition"]).replace("[a-z][a-z0-9-]{0,62})$", ".*)")
    assert any("accepts" in p for p in check_watch(loose))

    secretless = _mutated(tf, FUNCTION, lambda b: b["__each__"].get("secret_env", {}).pop(
        "RELAY_GEMINI_WEBHOOK_SECRETS", None))
    assert any("RELAY_GEMINI_WEBHOOK_SECRETS" in p for p in check_webhook(secretless))
    leaky = _mutated(tf, FUNCTION, lambda b: b["__each__"].get("secret_env", {}).setdefault(
        "RELAY_GEMINI_WEBHOOK_SECRETS", "${local.webhook_secret}"))
    assert any("only the webhook function" in p for p in check_settings(leaky, names, required, emulators, known, {}))

    editor = copy.deepcopy(tf)
    editor["resource"]["google_project_iam_member"]["x"] = {"role": "roles/editor", "member": "allUsers"}
    problems = check_iam(editor)
    assert any("roles/editor" in p for p in problems) and any("allUsers" in p for p in problems)
    publisher = copy.deepcopy(tf)
    publisher["resource"]["google_project_iam_member"]["y"] = {"role": "roles/pubsub.publisher", "member": "x"}
    assert any("project level" in p for p in check_iam(publisher))
    public_poller = copy.deepcopy(tf)
    public_poller["resource"]["google_cloud_run_v2_service_iam_member"]["p"] = {
        "name": '${google_cloudfunctions2_function.function["poller"].name}', "role": "roles/run.invoker",
        "member": "allUsers", "count": "${var.webhooks.enabled ? 1 : 0}"}
    assert any("allUsers" in p for p in check_iam(public_poller))
    always_public = copy.deepcopy(tf)
    always_public["resource"]["google_cloud_run_v2_service_iam_member"]["webhook_public_invoker"].pop("count")
    problems = check_iam(always_public)
    assert any("allUsers" in p for p in problems) and any("public run.invoker" in p for p in problems)
    open_poller = _mutated(tf, FUNCTION, lambda b: one(b, "service_config").update(ingress_settings="ALLOW_ALL"))
    assert any("only the webhook function may" in p for p in check_iam(open_poller))
    unordered_sa = _mutated(tf, "google_service_account", lambda b: b.pop("depends_on", None))
    assert any("not ordered after the APIs" in p for p in check_iam(unordered_sa))
    no_webhook_store = copy.deepcopy(tf)
    no_webhook_store["locals"]["function_members"] = str(tf["locals"]["function_members"]).replace(
        "google_service_account.webhook", "google_service_account.nobody")
    assert any("roles/datastore.user" in p for p in check_iam(no_webhook_store))

    default_build = _mutated(tf, FUNCTION, lambda b: one(b, "build_config").update(service_account=None))
    assert any("build_config.service_account" in p for p in check_build(default_build))
    no_writer = copy.deepcopy(tf)
    no_writer["resource"]["google_artifact_registry_repository_iam_member"] = {}
    assert any("artifactregistry.writer" in p for p in check_build(no_writer))
    no_agent = copy.deepcopy(tf)
    no_agent["resource"]["google_project_service_identity"] = {}
    assert check_pubsub_agent(no_agent)

    no_health_alert = copy.deepcopy(tf)
    no_health_alert["resource"]["google_monitoring_alert_policy"].pop("disabled_webhooks")
    assert any("webhook disabled" in p for p in check_monitoring(no_health_alert))

    no_stall = copy.deepcopy(tf)
    no_stall["locals"]["settings_env"].pop("RELAY_STALL_AFTER_S")
    no_stall["resource"]["google_monitoring_alert_policy"].pop("stalled_jobs")
    problems = check_stalls(no_stall)
    assert any("RELAY_STALL_AFTER_S" in p for p in problems) and any("job stalled" in p for p in problems)
    fixed_cadence = copy.deepcopy(tf)
    fixed_cadence["locals"]["settings_env"]["RELAY_TICK_INTERVAL_S"] = "60"
    for val in blocks(fixed_cadence["variable"]["poller"], "validation"):
        val["condition"] = str(val["condition"]).replace("var.poller.schedule", "var.poller.time_zone")
    problems = check_cadence(fixed_cadence)
    assert any("RELAY_TICK_INTERVAL_S" in p for p in problems)
    assert any("against var.poller.schedule" in p for p in problems)

    index = next(iter(tf["locals"]["composite_indexes"].values()))
    declared = [(f["field_path"], f["order"]) for f in index["fields"]]
    needed = [{"collection": "{collection}", "fields": declared}]
    assert check_indexes(tf, needed) == []
    assert check_indexes(tf, [{"collection": "{collection}", "fields": declared[::-1]}])
    no_index = copy.deepcopy(tf)
    no_index["resource"]["google_firestore_index"] = {}
    assert check_indexes(no_index, needed)

    no_ttl = _mutated(tf, "google_firestore_field", lambda b: b.pop("ttl_config", None))
    assert check_ttl(no_ttl)
    no_alerts = copy.deepcopy(tf)
    no_alerts["resource"]["google_monitoring_alert_policy"] = {}
    problems = check_monitoring(no_alerts)
    for expected in ("stale heartbeat", "dead-letter", "status fetch failed"):
        assert any(expected in p for p in problems), (expected, problems)
    direct = _mutated(tf, "google_monitoring_alert_policy", lambda b: [
        one(c, "condition_absent").update(filter=str(one(c, "condition_absent").get("filter")).replace(
            'time_sleep.log_metrics.triggers["ticks"]', 'google_logging_metric.metric["ticks"].name'))
        for c in blocks(b, "conditions") if one(c, "condition_absent")])
    assert any("names google_logging_metric directly" in p for p in check_monitoring(direct))
    no_sleep = copy.deepcopy(tf)
    no_sleep["resource"]["time_sleep"] = {}
    assert any("time_sleep" in p for p in check_monitoring(no_sleep))

    no_lag = copy.deepcopy(tf)
    no_lag["resource"]["google_logging_metric"].pop('metric["publish_lag"]')
    assert any("lag_s" in p for p in check_log_metrics(no_lag))
    wrong_service = _mutated(tf, "google_logging_metric", lambda b: b.update(
        filter=str(b.get("filter")).replace("local.log_filter.reactor", "local.log_filter.poller")))
    assert any("on_job_event service" in p for p in check_log_metrics(wrong_service))
    uncharted = copy.deepcopy(tf)
    uncharted["locals"]["dashboard_charts"] = [c for c in tf["locals"]["dashboard_charts"]
                                               if c.get("metric") != "copy_duration"]
    assert any("copy_duration" in p for p in check_dashboard(uncharted))

    loose_pins = copy.deepcopy(tf)
    for block in loose_pins["terraform"]:
        for rp in blocks(block, "required_providers"):
            rp["google"]["version"] = "~> 6.0"
            rp.pop("time")
    problems = check_layout(loose_pins)
    assert any("google provider" in p for p in problems) and any("provider time" in p for p in problems)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))

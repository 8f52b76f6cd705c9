"""Vertex AI batchPredictionJobs (v1): a job rendered as the API returns it (``JOB_STATE_*``, input/output
configs, completionStats), project ids and numbers in names, the bearer-token check, and the routes
``GET /v1/{parent}/batchPredictionJobs`` (filtered, paged; a listing's later pages hold its first page's
jobs), ``POST /v1/{parent}/batchPredictionJobs`` (``create``), ``GET|DELETE …/batchPredictionJobs/{id}`` and
``POST …/batchPredictionJobs/{id}:cancel``. Where its outputs go: ``output_directory``."""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from devtools.simulator import faults, fieldmask, lists, storage
from devtools.simulator.listfilter import compile_filter
from devtools.simulator.results import Batch
from devtools.simulator.wire import (
    SUCCESS,
    VERTEX,
    VERTEX_NAME,
    Reply,
    SpecError,
    err,
    job_not_found,
    json_payload,
    no_method,
    ok,
    stamp,
)

if TYPE_CHECKING:
    from devtools.simulator.app import Simulator
    from devtools.simulator.jobs import Job

DELETE_METADATA_TYPE = "type.googleapis.com/google.cloud.aiplatform.v1.DeleteOperationMetadata"
_PARENT = re.compile(r"^projects/([^/]+)/locations/([^/]+)/batchPredictionJobs$")
_MAX_LISTINGS = 64  # the later pages of that many listings are remembered


# --- names -----------------------------------------------------------------------------------------------


def numbered_name(name: str, project_numbers: dict[str, str]) -> str:
    """The name as Vertex renders it: with the project number when one is configured (as the real API does)."""
    if (m := VERTEX_NAME.match(name)) and m.group(1) in project_numbers:
        number = project_numbers[m.group(1)]
        return f"projects/{number}/locations/{m.group(2)}/batchPredictionJobs/{m.group(3)}"
    return name


def names_by_number(name: str, project_numbers: dict[str, str]) -> list[str]:
    """The names a job named ``name`` with a project number would have with the project id instead."""
    m = VERTEX_NAME.match(name) if project_numbers else None
    if m is None:
        return []
    return [f"projects/{project}/locations/{m.group(2)}/batchPredictionJobs/{m.group(3)}"
            for project, number in project_numbers.items() if m.group(1) == number]


# --- rendering -------------------------------------------------------------------------------------------


def _configs(job: Job) -> tuple[dict, dict, dict]:
    """(inputConfig, outputConfig, outputInfo)."""
    out = job.output or {}
    if out.get("kind") == "bigquery":
        table = out["table"]
        dataset = table.rsplit(".", 1)[0] if table.count(".") >= 2 else table
        cfg = {"predictionsFormat": "bigquery", "bigqueryDestination": {"outputUri": dataset}}
        info = {"bigqueryOutputDataset": dataset, "bigqueryOutputTable": table}
        default_in = {"instancesFormat": "bigquery",
                      "bigquerySource": {"inputUri": dataset + ".requests"}}
    else:
        uri = out["uri"].rstrip("/")
        head, _, last = uri.rpartition("/")
        if last.startswith("prediction-") and head.count("/") >= 2:
            prefix, directory = head, uri
        else:
            prefix, directory = uri, f"{uri}/prediction-model-{stamp(job.create_t, 6)}"
        cfg = {"predictionsFormat": "jsonl", "gcsDestination": {"outputUriPrefix": prefix}}
        info = {"gcsOutputDirectory": directory}
        default_in = {"instancesFormat": "jsonl",
                      "gcsSource": {"uris": [f"gs://sim-input/{job.job_id}/requests.jsonl"]}}
    return job.input_config or default_in, cfg, info


def render(job: Job) -> dict:
    """The job as ``GET /v1/…/batchPredictionJobs/{id}`` returns it."""
    input_cfg, output_cfg, output_info = _configs(job)
    out: dict[str, Any] = {"name": job.rendered_name, "displayName": job.display_name or job.job_id,
                           "model": job.model, "inputConfig": input_cfg, "outputConfig": output_cfg}
    if (job.start_t is not None or job.state in SUCCESS) and (job.output_delay == 0 or job.output_ready):
        out["outputInfo"] = output_info
    out["state"] = job.full_state()
    if job.error is not None:
        out["error"] = {**job.error, "details": []}
    if job.stats is not None or job.total is not None:
        succeeded, failed, incomplete, _ = job.counts()
        out["completionStats"] = {"successfulCount": str(succeeded), "failedCount": str(failed),
                                  "incompleteCount": str(incomplete)}
    out["createTime"] = stamp(job.create_t, 6)
    if job.start_t is not None:
        out["startTime"] = stamp(job.start_t, 6)
    if job.end_t is not None:
        out["endTime"] = stamp(job.end_t, 6)
    out["updateTime"] = stamp(job.update_t, 6)
    out["labels"] = job.labels
    out["modelVersionId"] = "1"
    out["satisfiesPzs"] = False
    out["satisfiesPzi"] = False
    return out


def output_directory(job: Job) -> str | None:
    """``outputInfo.gcsOutputDirectory`` of a job with GCS output, else None."""
    if (job.output or {}).get("kind") != "gcs":
        return None
    return _configs(job)[2]["gcsOutputDirectory"]


def processed_time(t: float) -> str:
    """A prediction row's ``processed_time`` (``+00:00``, as Vertex AI writes it)."""
    return stamp(t, 6).replace("Z", "+00:00")


# --- routes ----------------------------------------------------------------------------------------------


def handle(sim: Simulator, method: str, parts: list[str], query: str, headers: dict[str, str],
           keep_alive: bool, body: bytes = b"") -> tuple[int, Reply]:
    """``/v1/projects/{p}/locations/{l}/batchPredictionJobs[/{id}[:cancel]]``."""
    auth = headers.get("authorization", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        return err(401, "Request is missing required authentication credential. Expected OAuth 2 "
                        "access token, login cookie or other valid authentication credential.", keep_alive)
    path = "/".join(parts)
    parent = "/".join(parts[2:7])
    if len(parts) == 7:
        if method == "POST":
            return create(sim, parent, body, keep_alive)
        if method != "GET":
            return no_method(method, path, keep_alive)
        return _list(sim, parent, query, keep_alive)
    ident = parts[7]
    if ident.endswith(":cancel"):
        name = f"{parent}/{ident[: -len(':cancel')]}"
        if method != "POST":
            return no_method(method, path, keep_alive)
        job = sim.jobs.get(name)
        if job is None:
            return job_not_found(VERTEX, name, keep_alive)
        job.cancel(time.monotonic())
        return ok(b"{}", keep_alive)
    name = f"{parent}/{ident}"
    if method == "GET":
        try:
            mask = fieldmask.from_request(parse_qs(query) if query else {}, headers, fieldmask.VERTEX_JOB)
        except fieldmask.MaskError as exc:
            return err(400, str(exc), keep_alive)
        return sim.status_get(VERTEX, name, keep_alive, mask)
    if method == "DELETE":
        return _delete(sim, parent, name, keep_alive)
    return no_method(method, path, keep_alive)


def _delete(sim: Simulator, parent: str, name: str, keep_alive: bool) -> tuple[int, Reply]:
    if sim.jobs.pop(name, None) is None:
        return job_not_found(VERTEX, name, keep_alive)
    op = {"name": f"{parent}/operations/{abs(hash(name)) % 10**18}",
          "metadata": {"@type": DELETE_METADATA_TYPE,
                       "genericMetadata": {"createTime": stamp(time.monotonic(), 6),
                                           "updateTime": stamp(time.monotonic(), 6)}},
          "done": True, "response": {"@type": "type.googleapis.com/google.protobuf.Empty"}}
    return 200, Reply(0.0, json_payload(200, op, keep_alive))


def _in_parent(sim: Simulator, parent: str) -> list[Job]:
    """The Vertex jobs under ``parent``, its project named by id or by number."""
    prefixes = {parent + "/"}
    m = _PARENT.match(parent)
    if m:  # the parent's project as id or as its number
        for project, number in sim.project_numbers.items():
            if m.group(1) in (project, number):
                prefixes |= {f"projects/{p}/locations/{m.group(2)}/batchPredictionJobs/"
                             for p in (project, number)}
    return [j for j in sim.jobs.values() if j.api == VERTEX and any(j.name.startswith(p) for p in prefixes)]


def _list(sim: Simulator, parent: str, query: str, keep_alive: bool) -> tuple[int, Reply]:
    if sim.random_faults is not None:
        faulted = faults.random_reply(sim.random_faults, sim.rng, VERTEX, None, keep_alive)
        if faulted is not None:
            return faulted
    q = parse_qs(query) if query else {}
    jobs = _in_parent(sim, parent)
    flt = q.get("filter", [""])[0].strip()
    token = q.get("pageToken", [""])[0]
    held = sim.listings.get((parent, flt, token)) if token else None
    if held is not None:  # a later page of a listing: the jobs as its first page found them
        jobs = [j for j in held if j.name in sim.jobs]
    elif flt:
        sim.list_filters = [*sim.list_filters[-49:], flt]
        try:
            match = compile_filter(flt)
        except ValueError as exc:
            return err(400, f"Invalid filter: {exc}", keep_alive)
        now = time.monotonic()
        for job in jobs:
            job.settle(now)
        jobs = [j for j in jobs if match(j)]
    code, reply = lists.page(sim, VERTEX, jobs, q, "batchPredictionJobs", keep_alive, scope=parent)
    if code == 200 and (nxt := lists.next_token(reply.payload)):
        sim.listings[(parent, flt, nxt)] = jobs
        while len(sim.listings) > _MAX_LISTINGS:
            sim.listings.pop(next(iter(sim.listings)))
    return code, reply


# --- batchPredictionJobs.create ---------------------------------------------------------------------------


def _gs(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.startswith("gs://") or len(value) < 6:
        raise SpecError(f"{field} must be a gs:// URI.")
    return value


def _inputs_from_storage(sim: Simulator, uris: list[str]) -> list[tuple[str | None, dict]] | None:
    """The requests of the input files, read from the storage emulator (None without one, or unreadable)."""
    if not sim.storage_url:
        return None
    items: list[tuple[str | None, dict]] = []
    try:
        for uri in uris:
            bucket, name = storage.split(uri)
            for line in storage.read(sim.storage_url, bucket, name).splitlines():
                obj = json.loads(line) if line.strip() else None
                if isinstance(obj, dict) and isinstance(obj.get("request"), dict):
                    items.append((None, obj["request"]))
    except (storage.StorageError, ValueError):
        return None
    return items


def create(sim: Simulator, parent: str, body: bytes, keep_alive: bool) -> tuple[int, Reply]:
    """``POST /v1/{parent}/batchPredictionJobs``: a new job (JSONL from GCS in, JSONL to GCS out, or
    BigQuery); it walks ``create.vertex`` of the config. With a storage emulator configured, its input is read
    from there and its prediction rows answer those requests."""
    try:
        data = json.loads(body) if body else None
        if not isinstance(data, dict):
            raise SpecError("Request must be a BatchPredictionJob object.")
        model = data.get("model")
        if not isinstance(model, str) or not model.strip():
            raise SpecError("model is required.")
        display = data.get("displayName")
        if not isinstance(display, str) or not display.strip():
            raise SpecError("displayName is required.")
        input_cfg = data.get("inputConfig")
        output_cfg = data.get("outputConfig")
        if not isinstance(input_cfg, dict) or not isinstance(output_cfg, dict):
            raise SpecError("inputConfig and outputConfig are required.")
        uris: list[str] = []
        if "gcsSource" in input_cfg:
            raw_uris = (input_cfg.get("gcsSource") or {}).get("uris")
            if not isinstance(raw_uris, list) or not raw_uris:
                raise SpecError("inputConfig.gcsSource.uris must list gs:// URIs.")
            uris = [_gs(u, "inputConfig.gcsSource.uris[]") for u in raw_uris]
        elif "bigquerySource" not in input_cfg:
            raise SpecError("inputConfig needs gcsSource or bigquerySource.")
        if "gcsDestination" in output_cfg:
            prefix = _gs((output_cfg.get("gcsDestination") or {}).get("outputUriPrefix"),
                         "outputConfig.gcsDestination.outputUriPrefix")
            output: dict[str, Any] = {"kind": "gcs", "uri": prefix}
        elif "bigqueryDestination" in output_cfg:
            table = (output_cfg.get("bigqueryDestination") or {}).get("outputUri")
            if not isinstance(table, str) or not table.startswith("bq://"):
                raise SpecError("outputConfig.bigqueryDestination.outputUri must be a bq:// URI.")
            output = {"kind": "bigquery", "table": f"{table}.predictions_{secrets.randbelow(10**6)}"}
        else:
            raise SpecError("outputConfig needs gcsDestination or bigqueryDestination.")
        labels = data.get("labels") or {}
        if not isinstance(labels, dict):
            raise SpecError("labels must be a map of strings.")
    except SpecError as exc:
        return err(exc.code, str(exc), keep_alive)
    except ValueError:
        return err(400, "Invalid JSON payload received.", keep_alive)
    name = f"{parent}/{secrets.randbelow(9 * 10**17) + 10**17}"
    spec = {"name": name, "display_name": display, "model": model, "timeline": sim.create_timeline(VERTEX),
            "input": input_cfg, "output": output, "labels": labels}
    items = _inputs_from_storage(sim, uris) if uris else None
    batch = Batch.from_requests(VERTEX, items, sim.fail_marker, "file") if items is not None else None
    job = sim.add_created(spec, batch)
    return 200, Reply(0.0, json_payload(200, json.loads(job.body()), keep_alive))

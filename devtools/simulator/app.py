"""The simulator's state and request routing: jobs and their files, uploads under way, config
(``/_sim/config``), stats, and which module answers a request (``admin``, ``gemini``, ``files``,
``webhooks``, ``vertex``). Status GETs of both APIs are answered here: counted, faulted as scripted, then the
job settles and is rendered. Jobs created through the APIs are added here (``add_created``), and a Vertex
job's prediction rows are written to the storage emulator when its outputs appear (``write_outputs``)."""

from __future__ import annotations

import collections
import random
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from devtools.simulator import admin, faults, fieldmask, files, gemini, storage, vertex, webhooks
from devtools.simulator.files import FileOutput, InputFile, ResultsFile
from devtools.simulator.jobs import Job, parse_steps
from devtools.simulator.lists import LIST_PAGE_MAX
from devtools.simulator.results import Batch
from devtools.simulator.webhooks import Webhooks
from devtools.simulator.wire import GEMINI, VERTEX, Reply, SpecError, job_not_found, no_method, ok

if TYPE_CHECKING:
    from devtools.simulator.server import HttpProtocol

_CONFIG_KEYS = ("latency_ms", "api_key", "random_faults", "project_numbers", "list_page_max", "webhooks",
                "storage_url", "create")
# What a batch created through the API walks through, one poll apart, unless ``create`` in the config says.
CREATE_TIMELINES = {GEMINI: ["PENDING", "RUNNING", "SUCCEEDED"], VERTEX: ["PENDING", "RUNNING", "SUCCEEDED"]}


class Simulator:
    def __init__(self, latency_ms: float = 0.0, api_key: str | None = None, seed: int | None = None) -> None:
        self.base_config = {"latency_ms": float(latency_ms or 0.0), "api_key": api_key, "random_faults": None,
                            "project_numbers": {}, "list_page_max": dict(LIST_PAGE_MAX), "webhooks": None}
        self.webhooks: Webhooks | None = None
        self.seed = seed
        self.jobs: dict[str, Job] = {}
        self.files: dict[str, FileOutput | ResultsFile | InputFile | files.UploadedFile] = {}
        self.uploads: dict[str, files._Upload] = {}
        self.in_flight = 0
        self.connections: set[HttpProtocol] = set()
        self.reset()

    # --- state ------------------------------------------------------------------------------------------

    def reset(self) -> None:
        self.jobs.clear()
        self.files.clear()
        self.uploads.clear()
        self.list_faults: dict[str, collections.deque] = {GEMINI: collections.deque(), VERTEX: collections.deque()}
        self.listings: dict[tuple[str, str, str], list[Job]] = {}  # (parent, filter, page token) -> jobs
        self.registered: dict[str, tuple[dict, Webhooks]] = {}  # static webhooks: id -> (resource, sender)
        self.apply_config(dict(self.base_config), replace=True)
        self.reset_stats()

    def reset_stats(self) -> None:
        self.requests = 0
        self.status_gets = 0
        self.by_code: collections.Counter = collections.Counter()
        self.max_in_flight = self.in_flight
        self.user_projects: dict[str, None] = {}
        self.per_job_gets: collections.Counter = collections.Counter()
        self.connections_opened = 0
        self.list_pages: collections.Counter = collections.Counter()  # per api
        self.list_filters: list[str] = []  # the Vertex filters received, in order (the last 50)
        self.creates: collections.Counter = collections.Counter()  # batches created through each API

    def apply_config(self, cfg: dict, replace: bool = False) -> None:
        if replace:
            self.latency = 0.0
            self.api_key = None
            self.random_faults = None
            self.project_numbers: dict[str, str] = {}
            self.list_page_max = dict(LIST_PAGE_MAX)
            self.rng = random.Random(self.seed)
            self.storage_url: str | None = None
            self.create_config: dict[str, Any] = {}
        for key in cfg:
            if key not in _CONFIG_KEYS:
                raise SpecError(f"unknown config key {key!r}")
        if "webhooks" in cfg:
            self.webhooks = Webhooks.from_config(cfg["webhooks"], self.seed) if cfg["webhooks"] else None
        if "project_numbers" in cfg:
            self._set_project_numbers(cfg["project_numbers"])
        if "list_page_max" in cfg:
            caps = cfg["list_page_max"] or {}
            if not isinstance(caps, dict) or any(k not in (GEMINI, VERTEX) or isinstance(v, bool)
                                                 or not isinstance(v, int) or v < 1 for k, v in caps.items()):
                raise SpecError('list_page_max must look like {"gemini": 100, "vertex": 1000}')
            self.list_page_max.update(caps)
        if "latency_ms" in cfg:
            value = cfg["latency_ms"] or 0
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise SpecError("latency_ms must be a non-negative number")
            self.latency = float(value) / 1000.0
        if "api_key" in cfg:
            value = cfg["api_key"]
            if value is not None and not isinstance(value, str):
                raise SpecError("api_key must be a string or null")
            self.api_key = value or None
        if "random_faults" in cfg:
            self.random_faults = faults.parse_random_faults(cfg["random_faults"], self.seed)
            if self.random_faults is not None:
                self.rng = random.Random(self.random_faults["seed"])
        if "storage_url" in cfg:
            url = cfg["storage_url"]
            if url is not None and (not isinstance(url, str) or not url.startswith("http://")):
                raise SpecError("storage_url must be the storage emulator's http://host:port, or null")
            self.storage_url = url.rstrip("/") if url else None
        if "create" in cfg:
            self._set_create(cfg["create"])

    def _set_create(self, value: Any) -> None:
        """``{"gemini": {"timeline": [...]}, "vertex": {"timeline": [...]}, "fail_marker": "..."}``: how batches
        created through the APIs go (timelines checked now), and the text that makes a created request fail."""
        cfg = value or {}
        if not isinstance(cfg, dict) or set(cfg) - {GEMINI, VERTEX, "fail_marker"}:
            raise SpecError('create must look like {"gemini": {"timeline": [...]}, "vertex": {...}, '
                            '"fail_marker": "..."}')
        marker = cfg.get("fail_marker")
        if marker is not None and (not isinstance(marker, str) or not marker):
            raise SpecError("create.fail_marker must be a non-empty string or null")
        for api in (GEMINI, VERTEX):
            if api in cfg:
                timeline = (cfg[api] or {}).get("timeline") if isinstance(cfg[api], dict) else None
                parse_steps(api, timeline, f"create.{api}")
        self.create_config = dict(cfg)

    @property
    def fail_marker(self) -> str | None:
        return self.create_config.get("fail_marker")

    def create_timeline(self, api: str) -> list:
        """The timeline of a batch created through ``api``."""
        return list((self.create_config.get(api) or {}).get("timeline") or CREATE_TIMELINES[api])

    def _set_project_numbers(self, value: Any) -> None:
        numbers = value or {}
        if not isinstance(numbers, dict) or not all(isinstance(k, str) and isinstance(v, str) and v.isdigit()
                                                    for k, v in numbers.items()):
            raise SpecError("project_numbers must map project ids to project numbers (digit strings)")
        self.project_numbers = dict(numbers)
        for job in self.jobs.values():
            self._render_name(job)

    def config_view(self) -> dict:
        return {"latency_ms": self.latency * 1000.0, "api_key": self.api_key,
                "random_faults": self.random_faults, "project_numbers": self.project_numbers,
                "list_page_max": self.list_page_max,
                "webhooks": self.webhooks.view() if self.webhooks is not None else None,
                "storage_url": self.storage_url, "create": self.create_config}

    def on_transition(self, job: Job, old: str) -> None:
        webhooks.notify(self, job, old)

    def _render_name(self, job: Job) -> None:
        """Vertex renders names with the project number when one is configured (as the real API does)."""
        name = vertex.numbered_name(job.name, self.project_numbers) if job.api == VERTEX else job.name
        if name != job.rendered_name:
            job.rendered_name = name
            job.cache = None

    def find(self, name: str) -> Job | None:
        """A job by its name, with the project as id or as its configured number."""
        job = self.jobs.get(name)
        if job is None:
            for other in vertex.names_by_number(name, self.project_numbers):
                job = self.jobs.get(other)
        return job

    def stats_view(self) -> dict:
        return {"requests": self.requests, "status_gets": self.status_gets,
                "by_code": {str(k): v for k, v in sorted(self.by_code.items())},
                "max_in_flight": self.max_in_flight, "in_flight": self.in_flight,
                "user_projects": list(self.user_projects), "per_job_gets": dict(self.per_job_gets),
                "connections_opened": self.connections_opened, "connections_open": len(self.connections),
                "list_pages": dict(self.list_pages), "list_filters": list(self.list_filters),
                "creates": dict(self.creates),
                "webhooks": self.webhooks.stats() if self.webhooks is not None else None}

    def add_jobs(self, specs: Any) -> int:
        if not isinstance(specs, list):
            raise SpecError('expected {"jobs": [spec, ...]}')
        now = time.monotonic()
        built = []
        for spec in specs:
            if not isinstance(spec, dict):
                raise SpecError(f"job spec must be an object, not {spec!r}")
            built.append(Job(spec, now))
        for job in built:
            self._install(job, now)
        return len(built)

    def _install(self, job: Job, now: float) -> None:
        old = self.jobs.pop(job.name, None)
        if old is not None and old.output and old.output["kind"] == "file":
            self.files.pop(old.output["file_id"], None)
        if old is not None and old.batch is not None:
            self.files.pop(gemini.input_file_id(old), None)
        self.jobs[job.name] = job
        job.listener = self.on_transition
        self._render_name(job)
        if job.batch is None:
            responses = FileOutput.of(job)
            if responses is not None:
                self.files[responses.file_id] = responses
        else:
            if job.output and job.output["kind"] == "file":
                self.files[job.output["file_id"]] = ResultsFile(job.output["file_id"], job)
            if job.api == GEMINI and job.gemini_input is None and job.batch.input == "file":
                self.files[gemini.input_file_id(job)] = InputFile(gemini.input_file_id(job), job)
        if job.new_rules:
            job.on_outputs = self.write_outputs
            job.check_output(now)

    def add_created(self, spec: dict, batch: Batch | None, gemini_input: dict | None = None) -> Job:
        """A job created through an API's create call (``spec`` as the admin API takes them)."""
        now = time.monotonic()
        job = Job(spec, now, batch=batch, gemini_input=gemini_input)
        self._install(job, now)
        self.creates[job.api] += 1
        return job

    def write_outputs(self, job: Job) -> None:
        """When a Vertex job's outputs appear: its prediction rows, in shards, into the storage emulator
        (nothing without ``storage_url`` in the config, or without a ``results.Batch``)."""
        directory = vertex.output_directory(job) if job.api == VERTEX else None
        if directory is None or job.batch is None or not self.storage_url:
            return
        bucket, prefix = storage.split(directory)
        stamp_t = job.end_t if job.end_t is not None else job.update_t
        try:
            for name, data in job.batch.vertex_shards(job.results_done or 0, vertex.processed_time(stamp_t)):
                storage.write(self.storage_url, bucket, f"{prefix}/{name}", data)
                job.written.append(f"{directory}/{name}")
        except storage.StorageError as exc:
            job.write_error = str(exc)

    def job(self, name: Any) -> Job:
        job = self.jobs.get(name) if isinstance(name, str) else None
        if job is None:
            raise SpecError(f"no job {name!r}", 404)
        return job

    # --- requests ---------------------------------------------------------------------------------------

    def handle_admin(self, method: str, path: str, query: str, body: bytes, keep_alive: bool) -> bytes:
        return admin.handle(self, method, path, query, body, keep_alive)

    def handle_api(self, method: str, path: str, query: str, headers: dict[str, str],
                   keep_alive: bool, body: bytes = b"") -> Reply:
        """Answer one API request (counted in stats; latency is added to ``delay``)."""
        self.requests += 1
        code, reply = self._api(method, path, query, headers, keep_alive, body)
        if code:
            self.by_code[code] += 1
        reply.delay += self.latency
        return reply

    def _api(self, method: str, path: str, query: str, headers: dict[str, str],
             keep_alive: bool, body: bytes = b"") -> tuple[int, Reply]:
        if "%" in path:
            path = unquote(path)
        parts = path.split("/")
        root = parts[1] if len(parts) > 1 else ""
        project = headers.get("x-goog-user-project")
        if project is not None:
            self.user_projects[project] = None
        if root == "v1beta" and len(parts) > 2 and parts[2] == "webhooks":
            denied = gemini.auth(self, headers, query, keep_alive)
            return denied or webhooks.handle(self, method, parts, query, body, keep_alive)
        if root == "v1beta" and len(parts) == 4 and parts[2] == "models" and parts[3].endswith(":batchGenerateContent"):
            if method != "POST":
                return no_method(method, path, keep_alive)
            denied = gemini.auth(self, headers, query, keep_alive)
            return denied or gemini.create(self, parts[3][: -len(":batchGenerateContent")], body, keep_alive)
        if root == "upload" and parts[2:] == ["v1beta", "files"]:
            denied = gemini.auth(self, headers, query, keep_alive) if "upload_id=" not in query else None
            return denied or files.upload(self, method, query, headers, body, keep_alive)
        if root == "v1beta" or (root == "download" and len(parts) == 5 and parts[2] == "v1beta"):
            return gemini.handle(self, method, parts, query, headers, keep_alive)
        if root == "v1" and len(parts) in (7, 8) and parts[2] == "projects" and parts[4] == "locations" \
                and parts[6] == "batchPredictionJobs":
            return vertex.handle(self, method, parts, query, headers, keep_alive, body)
        return no_method(method, path, keep_alive)

    def status_get(self, api: str, name: str, keep_alive: bool,
                   mask: fieldmask.Tree | None = None) -> tuple[int, Reply]:
        """``GET`` of one job: counted, faulted as scripted (or at random), else settled and rendered (only
        the fields of ``mask``, a ``fieldmask`` tree, when the request has one)."""
        self.status_gets += 1
        self.per_job_gets[name] += 1
        job = self.find(name)
        if job is not None and job.faults:
            kind, _, params = faults.take(job.faults)
            return faults.reply(kind, params, api, job, keep_alive)
        if self.random_faults is not None:
            faulted = faults.random_reply(self.random_faults, self.rng, api, job, keep_alive)
            if faulted is not None:
                return faulted
        if job is None:
            return job_not_found(api, name, keep_alive)
        job.settle(time.monotonic())
        body = job.body() if mask is None else job.fields_body(mask)
        job.polls += 1
        return ok(body, keep_alive)

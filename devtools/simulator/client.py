"""Driving a running simulator from a test, a benchmark or the demo: ``SimulatorClient`` speaks the admin API
(``/_sim/...``); ``gemini_spec`` and ``vertex_spec`` write job specs whose timelines walk a list of states."""

from __future__ import annotations

from typing import Any

_UNSET: Any = object()


def _steps(states: Any, after_polls: int | None, after_s: float | None) -> list[dict]:
    timeline: list[dict] = []
    for i, state in enumerate(states):
        step = dict(state) if isinstance(state, dict) else {"state": state}
        if i and "after_polls" not in step and "after_s" not in step:
            if after_s is not None:
                step["after_s"] = after_s
            else:
                step["after_polls"] = after_polls if after_polls is not None else 1
        timeline.append(step)
    return timeline


def gemini_spec(job_id: str, states: Any = ("PENDING", "RUNNING", "SUCCEEDED"), *, after_polls: int = 1,
                after_s: float | None = None, **kw: Any) -> dict:
    """A Gemini job spec whose timeline walks ``states`` one poll apart (or ``after_s`` apart).

    ``states`` items are state names or full step dicts; ``kw`` adds spec keys (display_name, model,
    output, faults, ...). ``job_id`` may be ``abc`` or ``batches/abc``."""
    name = job_id if job_id.startswith("batches/") else f"batches/{job_id}"
    return {"name": name, "timeline": _steps(states, after_polls, after_s), **kw}


def vertex_spec(project: str, location: str, job_id: str, states: Any = ("QUEUED", "RUNNING", "SUCCEEDED"),
                *, after_polls: int = 1, after_s: float | None = None, **kw: Any) -> dict:
    """A Vertex job spec ``projects/{project}/locations/{location}/batchPredictionJobs/{job_id}``."""
    name = f"projects/{project}/locations/{location}/batchPredictionJobs/{job_id}"
    return {"name": name, "timeline": _steps(states, after_polls, after_s), **kw}


class SimulatorClient:
    """Drive a running simulator through its admin API (``/_sim/...``)."""

    gemini_spec = staticmethod(gemini_spec)
    vertex_spec = staticmethod(vertex_spec)

    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def _call(self, method: str, path: str, body: Any = None, params: dict | None = None) -> Any:
        response = self._http.request(method, path, json=body, params=params)
        if response.status_code >= 400:
            raise RuntimeError(f"simulator {method} {path} -> {response.status_code}: {response.text}")
        return response.json()

    def health(self) -> dict:
        return self._call("GET", "/_sim/health")

    def reset(self) -> None:
        self._call("POST", "/_sim/reset", {})

    def configure(self, latency_ms: float | None = None, api_key: str | None = _UNSET,
                  random_faults: dict | None = _UNSET, **more: Any) -> dict:
        """Change only what is given; ``api_key=None``/``random_faults=None`` switch those off; ``more``:
        other config keys (``project_numbers``, ``list_page_max``, ``webhooks``, ``storage_url``, ``create``)."""
        body: dict[str, Any] = dict(more)
        if latency_ms is not None:
            body["latency_ms"] = latency_ms
        if api_key is not _UNSET:
            body["api_key"] = api_key
        if random_faults is not _UNSET:
            body["random_faults"] = random_faults
        return self._call("POST", "/_sim/config", body)

    def add_jobs(self, specs: list[dict]) -> int:
        return self._call("POST", "/_sim/jobs", {"jobs": list(specs)})["created"]

    def add_job(self, spec: dict | None = None, **kw: Any) -> str:
        """Create one job (``add_job(spec)`` or ``add_job(name=..., timeline=...)``); returns its name."""
        spec = {**(spec or {}), **kw}
        self.add_jobs([spec])
        return spec["name"]

    def set_state(self, name: str, state: str, stats: dict | None = None, error: dict | None = None,
                  timeline: list | None = None) -> dict:
        body: dict[str, Any] = {"name": name, "state": state}
        if stats is not None:
            body["stats"] = stats
        if error is not None:
            body["error"] = error
        if timeline is not None:
            body["timeline"] = timeline
        return self._call("POST", "/_sim/jobs/set", body)

    def add_faults(self, name: str, faults: list[dict]) -> dict:
        return self._call("POST", "/_sim/jobs/faults", {"name": name, "faults": faults})

    def list_faults(self, api: str, faults: list[dict]) -> dict:
        """Queue faults for the next list pages of ``api`` (``gemini`` or ``vertex``)."""
        return self._call("POST", "/_sim/lists/faults", {"api": api, "faults": faults})

    def stale_lists(self, name: str, count: int = 1) -> dict:
        """The job's next ``count`` list appearances show it as it was before its last change."""
        return self._call("POST", "/_sim/lists/stale", {"name": name, "count": count})

    def delete(self, name: str) -> None:
        self._call("POST", "/_sim/jobs/delete", {"name": name})

    def get(self, name: str) -> dict:
        return self._call("GET", "/_sim/jobs/get", params={"name": name})

    def outputs(self, name: str) -> dict:
        """What a job with a ``requests`` spec holds: ``{"done", "output_ready", "files": {name: text}}``."""
        return self._call("GET", "/_sim/jobs/outputs", params={"name": name})

    def stats(self) -> dict:
        return self._call("GET", "/_sim/stats")

    def reset_stats(self) -> None:
        self._call("POST", "/_sim/stats/reset", {})

    def set_webhook_state(self, webhook_id: str, state: str) -> dict:
        """Set a registered webhook's state (``enabled``, ``disabled``, ``disabled_due_to_failed_deliveries``)."""
        return self._call("POST", "/_sim/webhooks/state", {"id": webhook_id, "state": state})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SimulatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""List pages of a watched scope (contract A8): the request, and each page taken apart into items.

A page is read strictly: a body that is not JSON, a list that is not a list, a page token that is not a
string make the whole page unusable (``BadResponseError``). Items are read one by one: an item without
a name, or named as a job of another scope, is left out and counted, and the rest of the page is used.
An item is parsed into a ``JobStatus`` only when it is needed; its ``fingerprint`` — a hash of what a
poll compares, and the API's update time — is what a tick compares with its digest.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from typing import Any

from ..errors import BadResponseError, UsageError
from . import states
from .names import Api, JobName
from .scopes import WatchScope
from .states import JobState, State
from .wire import JobStatus, parse_timestamp

PAGE_SIZE = 1000  # the largest page either API is asked for; a page may hold fewer
# Non-terminal states, for the windowed Vertex filter (a plain OR list: no precedence questions).
_OPEN_STATES = (JobState.UNSPECIFIED, JobState.QUEUED, JobState.PENDING, JobState.RUNNING, JobState.CANCELLING,
                JobState.PAUSED, JobState.UPDATING)


def vertex_filter(user_filter: str | None, window: dt.datetime | None) -> str | None:
    """The ``filter`` of a Vertex list: the user's (``RELAY_WATCH_FILTER``), and — when ``window`` is
    known — only jobs that are not finished or were created since ``window``, so a project's history of
    finished jobs is not listed again every tick."""
    if window is None:
        return user_filter
    stamp = window.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = " OR ".join([*(f'state="{s}"' for s in _OPEN_STATES), f'create_time>="{stamp}"'])
    return f"({user_filter}) AND ({recent})" if user_filter else recent


def _digest(*parts: Any) -> int:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)


class ListedJob:
    """One usable item of a list page."""

    __slots__ = ("api", "key", "name", "project", "raw", "fingerprint", "_status")

    def __init__(self, api: Api, key: str, name: str, project: str | None, raw: dict[str, Any],
                 fingerprint: int) -> None:
        self.api = api
        self.key = key  # the job id: unique within its scope
        self.name = name  # as listed (Vertex may list the project by number)
        self.project = project
        self.raw = raw
        self.fingerprint = fingerprint
        self._status: JobStatus | None = None

    def status(self) -> JobStatus:
        """The item parsed as a status (``BadResponseError`` if it cannot be)."""
        if self._status is None:
            self._status = (JobStatus.from_gemini if self.api == Api.GEMINI else JobStatus.from_vertex)(self.raw)
        return self._status

    @property
    def state(self) -> State:
        raw = self.raw.get("metadata", {}).get("state") if self.api == Api.GEMINI else self.raw.get("state")
        return states.normalize(raw if isinstance(raw, str) else None)

    @property
    def terminal(self) -> bool:
        return states.is_terminal(self.state)

    def time(self, field: str) -> dt.datetime | None:
        """``createTime`` / ``updateTime`` of the item, or None (unreadable times are None)."""
        holder = self.raw.get("metadata") if self.api == Api.GEMINI else self.raw
        try:
            return parse_timestamp((holder or {}).get(field), field)
        except BadResponseError:
            return None


def fingerprint(api: Api, item: dict[str, Any]) -> int:
    """A hash of what a poll compares (state, counts, error, output) and the API's update time: two
    observations with the same fingerprint are the same observation."""
    if api == Api.GEMINI:
        raw_meta = item.get("metadata")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        raw_output = meta.get("output")
        output: dict[str, Any] = raw_output if isinstance(raw_output, dict) else {}
        inlined = output.get("inlinedResponses")
        if isinstance(inlined, dict) and isinstance(inlined.get("inlinedResponses"), list):
            output = {**output, "inlinedResponses": len(inlined["inlinedResponses"])}
        return _digest(meta.get("state"), meta.get("batchStats"), item.get("error"), output, meta.get("updateTime"))
    return _digest(item.get("state"), item.get("completionStats"), item.get("error"), item.get("outputInfo"),
                   item.get("updateTime"))


@dataclasses.dataclass
class Page:
    items: list[ListedJob]
    next_token: str | None
    rejected: int  # items left out: no name, or a job of another scope


def parse_page(scope: WatchScope, body: Any) -> Page:
    """Take one list page apart. Raises ``BadResponseError`` when the page as a whole is unusable."""
    if not isinstance(body, dict):
        raise BadResponseError("list page is not a JSON object")
    key = "operations" if scope.api == Api.GEMINI else "batchPredictionJobs"
    raw_items = body.get(key, [])
    if not isinstance(raw_items, list):
        raise BadResponseError(f"list page: {key} is not a list")
    token = body.get("nextPageToken")
    if token is not None and not isinstance(token, str):
        raise BadResponseError("list page: nextPageToken is not a string")
    items, rejected = [], 0
    for raw in raw_items:
        item = _item(scope, raw)
        if item is None:
            rejected += 1
        else:
            items.append(item)
    return Page(items, token or None, rejected)


def _item(scope: WatchScope, raw: Any) -> ListedJob | None:
    if not isinstance(raw, dict):
        return None
    if scope.api == Api.GEMINI:
        meta = raw.get("metadata")
        name = (meta.get("name") if isinstance(meta, dict) else None) or raw.get("name")
    else:
        name = raw.get("name")
    if not isinstance(name, str):
        return None
    try:
        job = JobName.parse(name)
    except UsageError:
        return None
    if not scope.covers(job):  # a job of another scope (a Vertex project number may be the scope's)
        return None
    return ListedJob(scope.api, job.job_id, job.name, job.project, raw, fingerprint(scope.api, raw))

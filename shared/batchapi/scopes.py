"""Watched scopes (contract A8): where a tick lists jobs instead of being told about them.

- ``gemini``: every batch the Gemini API key lists;
- ``vertex:projects/{project}/locations/{location}``: every batch prediction job of that location.

A scope's ``id`` is its text as written (normalized); it keys the scope's bookkeeping in the meta
collection and names it in logs.
"""

from __future__ import annotations

import dataclasses
import re

from ..errors import UsageError
from .names import Api, JobName, ProjectMatch, project_match

_VERTEX_PARENT = re.compile(
    r"^projects/(?P<project>[a-z0-9][a-z0-9-]{0,62}|[0-9]{1,20})/locations/(?P<location>[a-z0-9][a-z0-9-]{0,62})$"
)


@dataclasses.dataclass(frozen=True)
class WatchScope:
    api: Api
    project: str | None = None
    location: str | None = None

    @classmethod
    def parse(cls, text: str) -> WatchScope:
        value = text.strip()
        if value == Api.GEMINI:
            return cls(Api.GEMINI)
        kind, sep, parent = value.partition(":")
        if kind == Api.VERTEX and sep and (m := _VERTEX_PARENT.match(parent)):
            return cls(Api.VERTEX, m["project"], m["location"])
        shown = value if len(value) <= 120 else value[:120] + "…"
        raise UsageError(f"{shown!r} is not a scope: expected gemini or "
                         "vertex:projects/PROJECT/locations/LOCATION")

    @property
    def id(self) -> str:
        return Api.GEMINI.value if self.api == Api.GEMINI else f"{Api.VERTEX}:{self.parent}"

    @property
    def parent(self) -> str:
        """The list call's parent: ``projects/{p}/locations/{l}`` (Vertex); empty for Gemini."""
        return f"projects/{self.project}/locations/{self.location}" if self.api == Api.VERTEX else ""

    @property
    def region_key(self) -> str:
        """The quota bucket its list calls take from (the same as the GETs of its jobs)."""
        return f"{Api.VERTEX}:{self.location}" if self.api == Api.VERTEX else Api.GEMINI.value

    def covers(self, job: JobName) -> bool:
        """Whether a job of this name may belong to this scope (its list would show it). A Vertex name
        whose project is a number may be this scope's project by number (``project_match``): the list tells."""
        if job.api != self.api:
            return False
        return self.api == Api.GEMINI or (job.location == self.location
                                      and project_match(job.project, self.project) is not ProjectMatch.OTHER)

    def job_name(self, job_id: str) -> str:
        """The name a job of this scope is tracked under when it is discovered (the scope's own project
        form, as ``RELAY_WATCH`` wrote it)."""
        if self.api == Api.GEMINI:
            return f"batches/{job_id}"
        return f"{self.parent}/batchPredictionJobs/{job_id}"

    def __str__(self) -> str:
        return self.id


def parse_scopes(text: str) -> tuple[WatchScope, ...]:
    """A comma list of scopes, duplicates dropped, order kept. Raises ``UsageError``."""
    scopes: list[WatchScope] = []
    for part in text.split(","):
        if not part.strip():
            continue
        scope = WatchScope.parse(part)
        if scope not in scopes:
            scopes.append(scope)
    if not scopes:
        raise UsageError(f"{text!r} names no scope")
    return tuple(scopes)

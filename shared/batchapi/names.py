"""Job names (contract A3): which API a name belongs to, and the record's document id."""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import quote

from ..errors import UsageError

_ID = r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}"
_GEMINI = re.compile(rf"^batches/(?P<id>{_ID})$")
_VERTEX = re.compile(
    rf"^projects/(?P<project>[a-z0-9][a-z0-9-]{{0,62}}|[0-9]{{1,20}})"
    rf"/locations/(?P<location>[a-z0-9][a-z0-9-]{{0,62}})"
    rf"/batchPredictionJobs/(?P<id>{_ID})$"
)

GEMINI = "gemini"
VERTEX = "vertex"


@dataclasses.dataclass(frozen=True)
class JobName:
    name: str
    api: str
    job_id: str
    project: str | None = None
    location: str | None = None

    @classmethod
    def parse(cls, name: object) -> JobName:
        if not isinstance(name, str):
            raise UsageError(f"job name must be a string, not {type(name).__name__}")
        text = name.strip()
        if m := _GEMINI.match(text):
            return cls(text, GEMINI, m["id"])
        if m := _VERTEX.match(text):
            return cls(text, VERTEX, m["id"], m["project"], m["location"])
        shown = text if len(text) <= 200 else text[:200] + "…"
        raise UsageError(
            f"{shown!r} is not a job name: expected batches/ID (Gemini API) or "
            "projects/P/locations/L/batchPredictionJobs/ID (Vertex AI)"
        )

    def same_job(self, other: JobName) -> bool:
        """Whether two names are the same job: Vertex AI may name a project by its number where it was
        written by id, so Vertex names match on location and job id (and a project that is equal, or a
        number on either side)."""
        if self.api != other.api:
            return False
        if self.api == GEMINI:
            return self.name == other.name
        return (self.location, self.job_id) == (other.location, other.job_id) and (
            self.project == other.project or (self.project or "").isdigit() or (other.project or "").isdigit())

    @property
    def region_key(self) -> str:
        """The bucket of the per-region quota: Vertex location, or the Gemini API as a whole."""
        return f"vertex:{self.location}" if self.api == VERTEX else GEMINI


def doc_id(name: str) -> str:
    return quote(name, safe="")

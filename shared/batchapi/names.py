"""Job names (contract A3): which API a name belongs to, and the record's document id; and the names of
Gemini Files API files (a batch's responses file)."""

from __future__ import annotations

import dataclasses
import enum
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

# A Files API file: ``files/{id}``. Batch output ids run past the documented 40 characters, so the id is held
# to the job-id alphabet and length: never a '/', '.', '%', ':' or '?' that could reach another path.
_FILE = re.compile(rf"files/{_ID}")


class Api(enum.StrEnum):
    """Which API a job belongs to: the record's and events' ``api`` field, exactly these strings (A4)."""

    GEMINI = "gemini"
    VERTEX = "vertex"


def is_file_name(name: object) -> bool:
    """Whether ``name`` is a Gemini Files API file name, ``files/{id}``."""
    return isinstance(name, str) and _FILE.fullmatch(name) is not None


class ProjectMatch(enum.Enum):
    """How a Vertex project in a name relates to a project known by other texts (``project_match``)."""

    SAME = "same"  # one of the texts the project is known by
    MAYBE = "maybe"  # a project number the project is not known by yet: it may be that project's number
    OTHER = "other"  # another project


def project_match(named: str | None, *known: str | None) -> ProjectMatch:
    """The one rule for Vertex projects in names: Vertex AI may name a project by its number where it was
    written by id. ``named`` is the project of a name the API may have written; ``known`` the texts the
    project is already known by (an id or number as written, and a number the API named it by). A number
    among them is the same project; any other number MAY be it (only the API can tell); anything else is
    another project. Callers choose what they accept: a guess (``MAYBE``) may choose where to look, but
    only ``SAME`` may say that two observations are of one job."""
    if named in known:
        return ProjectMatch.SAME
    if (named or "").isdigit():
        return ProjectMatch.MAYBE
    return ProjectMatch.OTHER


@dataclasses.dataclass(frozen=True)
class JobName:
    name: str
    api: Api
    job_id: str
    project: str | None = None
    location: str | None = None

    @classmethod
    def parse(cls, name: object) -> JobName:
        if not isinstance(name, str):
            raise UsageError(f"job name must be a string, not {type(name).__name__}")
        text = name.strip()
        if m := _GEMINI.match(text):
            return cls(text, Api.GEMINI, m["id"])
        if m := _VERTEX.match(text):
            return cls(text, Api.VERTEX, m["id"], m["project"], m["location"])
        shown = text if len(text) <= 200 else text[:200] + "…"
        raise UsageError(
            f"{shown!r} is not a job name: expected batches/ID (Gemini API) or "
            "projects/P/locations/L/batchPredictionJobs/ID (Vertex AI)"
        )

    def same_job(self, other: JobName) -> bool:
        """Whether two names may be the same job: Vertex names match on location and job id, and a project
        that ``project_match`` does not call another (either name may be the one the API wrote)."""
        if self.api != other.api:
            return False
        if self.api == Api.GEMINI:
            return self.name == other.name
        return (self.location, self.job_id) == (other.location, other.job_id) and (
            project_match(self.project, other.project) is not ProjectMatch.OTHER
            or project_match(other.project, self.project) is not ProjectMatch.OTHER)

    @property
    def region_key(self) -> str:
        """The bucket of the per-region quota: Vertex location, or the Gemini API as a whole."""
        return f"{Api.VERTEX}:{self.location}" if self.api == Api.VERTEX else Api.GEMINI.value


def doc_id(name: str) -> str:
    return quote(name, safe="")

"""What a resubmit sends, and where its batch goes: the job's ``failed.jsonl`` found and counted, the retry's
number, names, destination and — on Vertex AI — its output folder and labels, and the requests themselves
(which ``--dry-run`` prints instead of sending).

- ``failed.jsonl`` is where the record's ``results.failed_uri`` says, else ``{copy.uri}/failed.jsonl``. It is
  read (streamed once, to count its lines) but never held in memory.
- Retry ``n`` of a lineage (the chain of resubmits that starts at its first job, the *root*) goes to the
  root's destination + ``/retry-{n}`` (without one: ``RELAY_DEFAULT_DESTINATION/{api}/{root id}/retry-{n}``,
  or none when that is unset too); a Vertex AI job writes its predictions next to the root's, under the root
  job's ``outputUriPrefix`` + ``/retry-{n}``.
- A batch can be found again from its job and ``n`` alone: a Gemini batch by its display name
  (``retry-{n} of batches/{id}``), a Vertex AI job by two labels (``batch_relay_retry_of``: the job's id,
  ``batch_relay_retry``: ``n``). That is what lets an interrupted resubmit be finished rather than repeated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import TYPE_CHECKING, Any

from ..batchapi.create import labels_filter, vertex_job_body
from ..batchapi.endpoints import batch_create_url, file_upload_url, gemini_url, model_id, vertex_create_url
from ..batchapi.names import Api
from ..batchapi.states import SUCCESS
from ..errors import PermanentError, UsageError
from ..record.model import CopyStatus, JobRecord
from ..record.store import check_track_options
from ..settings import Settings, split_gcs_uri

if TYPE_CHECKING:  # pragma: no cover
    from ..reactor.storage import StorageClient

FAILED_NAME = "failed.jsonl"
VERTEX_MAX_REQUESTS = 200_000  # Vertex AI's limits of one batch prediction job's input
VERTEX_MAX_BYTES = 1_000_000_000
VERTEX_DISPLAY_NAME_MAX = 128  # characters
RETRY_LABEL = "batch_relay_retry"
RETRY_OF_LABEL = "batch_relay_retry_of"
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{1,63}$")


@dataclasses.dataclass(frozen=True)
class FailedInput:
    """The job's ``failed.jsonl``: where it is, how many requests (lines) and bytes it holds."""

    uri: str
    requests: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"uri": self.uri, "requests": self.requests, "bytes": self.bytes}


def failed_uri(record: JobRecord) -> str | None:
    """Where ``record``'s ``failed.jsonl`` is; None when its outputs were read and no request failed.
    ``UsageError`` when it cannot be known yet (or ever): the job has not ended, its outputs are not copied
    (or the copy failed), or they are in BigQuery."""
    results = getattr(record, "results", None)
    if isinstance(results, dict) and "failed_uri" in results:  # the reactor read the outputs
        uri = results.get("failed_uri")
        return _checked(uri) if uri else None
    name, copy = record.name, record.copy
    if not record.terminal:
        raise UsageError(f"{name} is {record.state}: its failed requests are known once it has ended and its outputs "
                         "are copied")
    if copy.status == CopyStatus.NOT_APPLICABLE:
        raise UsageError(f"the outputs of {name} are in BigQuery: batch-relay writes no failed.jsonl for them")
    if copy.status == CopyStatus.FAILED:
        kind = (copy.error or {}).get("kind", "error")
        raise UsageError(f"the copy of {name} failed ({kind}): failed.jsonl is written with the copy; fix the "
                         "cause and run batch-relay recopy first")
    if copy.status != CopyStatus.DONE or not copy.uri:
        if record.state not in SUCCESS and not record.output:
            raise UsageError(f"{name} ended {record.state} without outputs: there is no failed.jsonl to resubmit")
        raise UsageError(f"the outputs of {name} are not copied yet (copy {copy.status.value}): failed.jsonl is "
                         f"written with the copy (batch-relay wait {name} --outputs)")
    return _checked(f"{copy.uri}/{FAILED_NAME}")


def _checked(uri: Any) -> str:
    try:
        split_gcs_uri(uri if isinstance(uri, str) else "")
    except ValueError:
        raise UsageError(f"the record's failed.jsonl, {str(uri)[:200]!r}, is not a gs:// object") from None
    return str(uri)


async def read_failed(storage: StorageClient, uri: str) -> FailedInput | None:
    """``failed.jsonl`` counted as it streams by (None: there is no such object)."""
    bucket, name = split_gcs_uri(uri)
    info = await storage.get_object(bucket, name)
    if info is None:
        return None
    lines = size = 0
    last = b"\n"
    async with storage.download(bucket, name) as chunks:
        async for chunk in chunks:
            if chunk:
                lines += chunk.count(b"\n")
                size += len(chunk)
                last = chunk[-1:]
    if last != b"\n":
        lines += 1
    return FailedInput(uri, lines, size)


def check_limits(api: Api, failed: FailedInput) -> None:
    """Vertex AI takes at most 200,000 requests and 1 GB of input per job (``UsageError`` beyond)."""
    if api == Api.VERTEX and (failed.requests > VERTEX_MAX_REQUESTS or failed.bytes > VERTEX_MAX_BYTES):
        raise UsageError(f"{failed.uri} holds {failed.requests} requests, {failed.bytes} bytes: a Vertex AI job takes "
                         f"at most {VERTEX_MAX_REQUESTS} requests and 1 GB; split it and submit the parts yourself")


def plain_model(model: str | None, name: str) -> str:
    """The model id of a job's ``model`` (``models/m``, ``publishers/google/models/m``, or that under
    ``projects/…/locations/…/``); ``UsageError`` for a job with no model yet or one resubmit cannot name."""
    if not model:
        raise UsageError(f"{name} has no model on its record yet (it has not been polled)")
    text = model.rsplit("/publishers/google/models/", 1)[-1] if "/publishers/google/models/" in model else model
    try:
        return model_id(text)
    except PermanentError:
        raise UsageError(f"{name}'s model {model[:200]!r} is not a Google model resubmit can send to") from None


def retry_destination(root: JobRecord, n: int, settings: Settings) -> str | None:
    """Where retry ``n``'s outputs are copied: the root's destination (or its default one) + ``/retry-{n}``;
    None when the root has none and ``RELAY_DEFAULT_DESTINATION`` is unset (the copy will say so)."""
    base = root.destination
    if base is None and settings.default_destination:
        base = f"{settings.default_destination}/{root.api}/{root.job.job_id}"
    if base is None:
        return None
    destination, _labels = check_track_options(f"{base}/retry-{n}", None)
    return destination


def vertex_output_prefix(root: JobRecord, record: JobRecord, n: int) -> str:
    """The new Vertex AI job's ``outputUriPrefix``: the root job's (the folder above its
    ``gcsOutputDirectory``) + ``/retry-{n}``, beside the root's own predictions."""
    source = root.output.get("gcs_uri") or record.output.get("gcs_uri")
    if not isinstance(source, str) or not source.startswith("gs://"):
        raise UsageError(f"{record.name} has no Cloud Storage output folder to put the new job's next to")
    bucket, path = split_gcs_uri(source)
    parent = path.rpartition("/")[0]
    return f"gs://{bucket}/{parent}/retry-{n}" if parent else f"gs://{bucket}/retry-{n}"


def gemini_display_name(record: JobRecord, n: int) -> str:
    """A Gemini batch's display name: unique to the job and ``n`` (the key a later resubmit looks for)."""
    return f"retry-{n} of {record.name}"


def vertex_display_name(record: JobRecord, n: int) -> str:
    return f"retry-{n} of {record.display_name or record.job.job_id}"[:VERTEX_DISPLAY_NAME_MAX]


def vertex_labels(record: JobRecord, n: int) -> dict[str, str]:
    """The labels a Vertex AI job of retry ``n`` carries, unique to the job and ``n`` within its location:
    the job's id (or, when it is not a label value, 16 hex characters of its name's hash) and ``n``."""
    job_id = record.job.job_id
    tag = job_id if _LABEL_VALUE.match(job_id) else hashlib.blake2b(record.name.encode(), digest_size=8).hexdigest()
    return {RETRY_OF_LABEL: tag, RETRY_LABEL: str(n)}


@dataclasses.dataclass(frozen=True)
class Plan:
    """Retry ``n`` of ``record`` (the lineage's root: ``root``): what is sent and how it is tracked."""

    record: JobRecord
    root: str
    n: int
    failed: FailedInput
    model: str
    display_name: str
    destination: str | None
    labels: dict[str, str]
    output_prefix: str | None = None  # Vertex AI
    api_labels: dict[str, str] | None = None  # Vertex AI

    @property
    def api(self) -> Api:
        return self.record.api

    def vertex_body(self) -> dict[str, Any]:
        return vertex_job_body(display_name=self.display_name, model=self.model, input_uris=[self.failed.uri],
                               output_prefix=self.output_prefix or "", labels=self.api_labels)

    def requests(self, settings: Settings) -> list[dict[str, Any]]:
        """The requests a resubmit sends (headers, and so the API key, left out)."""
        if self.api == Api.GEMINI:
            return [
                {"method": "POST", "url": file_upload_url(settings),
                 "body": f"{FAILED_NAME}: {self.failed.requests} requests, {self.failed.bytes} bytes, resumable "
                         f"(start, then upload, finalize), streamed from {self.failed.uri}"},
                {"method": "POST", "url": batch_create_url(settings, self.model),
                 "body": {"batch": {"displayName": self.display_name, "model": f"models/{self.model}",
                                    "inputConfig": {"fileName": "files/... (the uploaded file)"}}}},
            ]
        job = self.record.job
        return [{"method": "POST", "url": vertex_create_url(settings, job.project or "", job.location or ""),
                 "body": self.vertex_body()}]

    def lookup(self, settings: Settings) -> dict[str, Any]:
        """How a later resubmit finds this batch again, before creating one."""
        if self.api == Api.GEMINI:
            return {"method": "GET", "url": gemini_url(settings, "batches"), "display_name": self.display_name}
        job = self.record.job
        return {"method": "GET", "url": vertex_create_url(settings, job.project or "", job.location or ""),
                "filter": labels_filter(self.api_labels or {})}

    def tracking(self) -> dict[str, Any]:
        """How the new batch is tracked."""
        return {"parent": self.record.name, "destination": self.destination, "labels": dict(self.labels),
                "tracked_by": "track"}


def make_plan(record: JobRecord, root: JobRecord, n: int, failed: FailedInput, settings: Settings) -> Plan:
    """Retry ``n`` of ``record`` whose lineage starts at ``root`` (``UsageError`` for what cannot be sent)."""
    model = plain_model(record.model, record.name)
    destination = retry_destination(root, n, settings)
    if record.api == Api.GEMINI:
        return Plan(record, root.name, n, failed, model, gemini_display_name(record, n), destination,
                    dict(record.labels))
    return Plan(record, root.name, n, failed, model, vertex_display_name(record, n), destination, dict(record.labels),
                output_prefix=vertex_output_prefix(root, record, n), api_labels=vertex_labels(record, n))

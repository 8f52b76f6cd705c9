"""What the reactor copies from: the job as the batch API reports it at copy time, never the record.

Anyone who can write the jobs collection can write a record's ``output``; so the copy asks the API
(``batchapi.client``) for the job named by the record (the name checked again against its pattern), and
takes the state and output location from that reply alone:

- the API must report the job ended (SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED, CANCELLED, EXPIRED), else
  ``state_mismatch``; a job that ended otherwise than by succeeding is copied too when the reply has an
  output location (its partial outputs: ``Source.partial``);
- a Vertex AI output directory must be a ``gs://`` URI (``bad_source``) in ``RELAY_SOURCE_BUCKETS``
  (``source_not_allowed``); a Gemini responses file must be ``files/{id}`` (``bad_source``);
- no output location yet (a job can report SUCCEEDED before its output shows): ``OutputPending``, a
  transient error, so the event is redelivered, for up to ``RELAY_OUTPUT_WAIT_S`` from the job's end time
  (or from the copy's first try when the API gives none); then, for a success, ``no_output``;
- a job that did not succeed and shows no output location has nothing to copy (``OutputKind.NONE``): at
  once when its counts say no request finished, else after the same wait (its partial outputs may lag
  its end as a success's do).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import time
from collections.abc import Callable
from typing import Any

from ..batchapi import states
from ..batchapi.client import BatchApiClient
from ..batchapi.fields import GEMINI_COPY
from ..batchapi.names import JobName, is_file_name
from ..batchapi.wire import JobStatus
from ..errors import PermanentError, TransientError, UsageError
from ..record.model import JobRecord
from ..settings import Settings, normalize_destination, split_gcs_uri
from .allowlist import check_source


class OutputKind(enum.StrEnum):
    GCS = "gcs"  # Vertex AI: a Cloud Storage directory
    BIGQUERY = "bigquery"  # Vertex AI: a BigQuery table (nothing to copy)
    FILE = "file"  # Gemini API: a responses file
    INLINE = "inline"  # Gemini API: responses inside the batch
    NONE = "none"  # a job that did not succeed and shows no output: nothing to copy


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a job's outputs are, as the API said at copy time: ``status`` is that reply read, ``reply`` the
    reply itself (``batchapi.fields.GEMINI_COPY``: a Gemini batch's input is read from it, and where its
    inline responses are, which a second GET streams)."""

    job: JobName
    state: str
    kind: OutputKind
    location: str = ""  # gs:// directory (GCS), files/{id} (FILE), bq:// table (BIGQUERY); "" otherwise
    status: JobStatus | None = None
    reply: Any = None
    reason: str | None = None  # NONE: why there is nothing to copy

    @property
    def partial(self) -> bool:
        """The job ended otherwise than SUCCEEDED or PARTIALLY_SUCCEEDED: its outputs are what it finished."""
        return self.state not in states.SUCCESS


class OutputPending(TransientError):
    """The API reports the job finished but shows no output location yet: the copy is asked again (the
    event redelivered) until ``RELAY_OUTPUT_WAIT_S`` has passed."""


def job_of(record: JobRecord) -> JobName:
    """The record's job name, checked again against the A3 patterns (``bad_name`` when it does not fit)."""
    try:
        return JobName.parse(record.name)
    except UsageError as exc:
        raise PermanentError(f"the record's job name is not valid: {exc}", kind="bad_name") from None


async def read_source(api: BatchApiClient, record: JobRecord, now: dt.datetime, settings: Settings, *,
                      clock: Callable[[], float] = time.monotonic) -> Source:
    """The job's output location from the API's reply now (errors of ``batch_relay.errors``)."""
    job = job_of(record)
    status, reply = await api.get_reply(job, clock() + settings.request_timeout_s * settings.max_attempts,
                                        fields=GEMINI_COPY)
    source = source_of(job, status, record.copy_waiting_since, now, settings)
    return dataclasses.replace(source, status=status, reply=reply)


def output_wait_left(end_time: dt.datetime | None, waiting_since: dt.datetime | None, now: dt.datetime,
                     wait_s: float) -> float:
    """Seconds the copy may still wait for an output location: ``wait_s`` from the job's end time, or from
    the copy's first try without one (``waiting_since``; None: this is the first try)."""
    start = end_time or waiting_since or now
    return wait_s - (now - start).total_seconds()


def finished_requests(status: JobStatus) -> int:
    """Requests the job's counts say have a result (succeeded or failed)."""
    stats = status.completion_stats or {}
    return (stats.get("successful") or 0) + (stats.get("failed") or 0)


def source_of(job: JobName, status: JobStatus, waiting_since: dt.datetime | None, now: dt.datetime,
              settings: Settings) -> Source:
    """Where the reply ``status`` puts the outputs (see the module's rules)."""
    if not states.is_terminal(status.state):
        raise PermanentError(f"the API reports {job.name} as {status.state}, not ended: nothing is copied",
                             kind="state_mismatch")
    output = status.output
    if gcs := output.get("gcs_uri"):
        try:
            uri = normalize_destination(gcs)
            bucket, _ = split_gcs_uri(uri)
        except ValueError as exc:
            raise PermanentError(f"bad gcsOutputDirectory: {exc}", kind="bad_source") from None
        check_source(bucket, settings)
        return Source(job, status.state, OutputKind.GCS, uri)
    if bigquery := output.get("bigquery_uri"):
        return Source(job, status.state, OutputKind.BIGQUERY, str(bigquery))
    if (file_name := output.get("file_name")) is not None:
        if not is_file_name(file_name):
            raise PermanentError(f"unexpected responses file name {str(file_name)[:100]!r}", kind="bad_source")
        return Source(job, status.state, OutputKind.FILE, file_name)
    if "inlined_count" in output:
        return Source(job, status.state, OutputKind.INLINE)
    success = status.state in states.SUCCESS
    ended = status.state.removeprefix("JOB_STATE_")
    if not success and not finished_requests(status):
        return Source(job, status.state, OutputKind.NONE,
                      reason=f"the job ended {ended} with no output location and no finished request")
    left = output_wait_left(status.end_time, waiting_since, now, settings.output_wait_s)
    if left > 0:
        raise OutputPending(f"the API reports no output location for {job.name} yet; asked again for up to "
                            f"{left:.0f} s more (RELAY_OUTPUT_WAIT_S)")
    waited = f"waited RELAY_OUTPUT_WAIT_S={settings.output_wait_s:g} s"
    if not success:
        return Source(job, status.state, OutputKind.NONE,
                      reason=f"the job ended {ended} and the API shows no output location ({waited})")
    raise PermanentError(f"the API reports no output location for {job.name} ({waited})", kind="no_output")

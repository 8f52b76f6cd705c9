"""What the copy reads while it copies (contract A10): the ``results`` summary of a job's outputs, the lines
of its ``failed.jsonl``, and the cost of its tokens. ``reactor.plans`` writes; this module reads.

- ``new_reader``: one copy attempt's ``results.summary.ResultsReader``, sized by the job's own counts. The
  outputs are fed to it as they stream past the copy, each byte once: the Gemini responses file as the
  download is uploaded (a download started again gets a new reader), inline responses as their streamed GET
  is uploaded, Vertex AI prediction files (copied server-side) by ``read_objects`` beside the copy.
- ``read_gemini_input``: a Gemini batch whose failed (or unfinished) requests must be recovered has its
  input read once, after the outputs: its inline requests from the same reply, or its input file through
  the Files API. A file that cannot be read (the Files API keeps files 48 hours) makes those requests
  ``missing``, with the reason; it never fails the copy.
- ``counts_summary``: jobs whose outputs are not read (BigQuery, or nothing to copy) get the job's counts.
- ``Prices``: the price table (``RELAY_PRICES``), read at most once per invocation and only when a summary
  has tokens to price; a table that cannot be read or parsed gives ``cost: null`` and an ERROR log line,
  never a failed copy.
- ``results_map``: the summary as the A10 map the record, the event and the manifest all carry.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..batchapi.inputs import GeminiInputs, batch_input
from ..batchapi.names import is_file_name
from ..batchapi.outputs import SourceUnavailable
from ..batchapi.states import JobState
from ..errors import BadResponseError, NotFoundError, PermanentError, RelayError, TransientError
from ..log import get_logger, log, storable
from ..results import summary as results_summary
from ..results.cost import estimate
from ..results.prices import MAX_TABLE_BYTES, PricesError, PriceTable, load_table
from ..results.summary import ResultsReader, Summary, input_gone
from ..retry import RetryPolicy, retry
from ..settings import Settings
from .source import Source
from .storage import ObjectInfo, StorageClient

_log = get_logger("reactor")
REASON_MAX = 2000  # characters of missing_reason kept (it is stored in the record and in every event)


def declared_requests(source: Source) -> int | None:
    """How many requests the job says it has (succeeded + failed + unfinished), or None without counts."""
    stats = source.status.completion_stats if source.status is not None else None
    if not stats:
        return None
    return sum(stats.get(key) or 0 for key in ("successful", "failed", "incomplete"))


def new_reader(source: Source) -> ResultsReader:
    """A reader for one attempt at this job's outputs. A job that ended before it finished has its
    requests without a result looked for in its input (Gemini API)."""
    return ResultsReader(source.job.api.value, declared_requests=declared_requests(source),
                         track_unfinished=source.state != JobState.SUCCEEDED)


def counts_summary(source: Source, reason: str | None = None) -> Summary:
    """The results of a job whose outputs are not read: its own counts, no usage."""
    stats = source.status.completion_stats if source.status is not None else None
    if reason is None:
        return results_summary.counts_summary(source.job.api.value, stats)
    return results_summary.counts_summary(source.job.api.value, stats, reason=reason)


async def read_objects(storage: StorageClient, objects: Sequence[ObjectInfo], reader: ResultsReader) -> None:
    """Feed whole objects to ``reader``, one after the other, streamed (Vertex AI prediction files). A read
    that breaks, or that does not give the object's size, is transient: the copy is tried again whole."""
    for obj in objects:
        read = 0
        async with storage.download(obj.bucket, obj.name) as chunks:
            async for chunk in chunks:
                read += len(chunk)
                reader.feed_chunk(chunk)
        reader.end_file()
        if read != obj.size:
            raise TransientError(f"read {read} bytes of gs://{obj.bucket}/{obj.name}, which has {obj.size}")


async def read_gemini_input(reader: ResultsReader, source: Source, inputs: GeminiInputs, policy: RetryPolicy) -> None:
    """Join the batch's input with what its outputs said, when the reader needs it (``needs_input``)."""
    if not reader.needs_input:
        return
    try:
        where = batch_input(source.reply)
    except BadResponseError as exc:
        reader.input_unavailable(f"the batch's input is not named in its resource ({exc})")
        return
    if where.requests is not None:
        for item in where.requests:
            reader.feed_inline_request(item)
        return
    file_name = where.file_name or ""
    if not is_file_name(file_name):
        reader.input_unavailable(f"the batch's input file name {file_name[:100]!r} is not a Files API name")
        return
    fed = False

    async def attempt() -> None:
        nonlocal fed
        async with inputs.download(file_name) as download:
            async for chunk in download.chunks():
                fed = True
                reader.feed_input_chunk(chunk)
        reader.end_input()

    try:  # a download that fails before its first byte is started again; one that breaks later fails the copy
        await retry(attempt, policy, retry_if=lambda exc: isinstance(exc, SourceUnavailable) and not fed)
    except PermanentError as exc:
        if fed:
            raise TransientError(f"the input file {file_name} broke off: {exc}") from None
        reason = input_gone(file_name, str(exc)) if isinstance(exc, NotFoundError) else \
            f"the batch's input file {file_name} could not be read ({exc})"
        reader.input_unavailable(reason)


class Prices:
    """The price table of one invocation (``RELAY_PRICES``, else the one shipped in the package), read on
    first use and kept: a reactor invocation builds one (``wiring.reactor``). The shipped table is parsed
    once per instance; a file or ``gs://`` table is read again by each invocation, so a new table is seen
    by the next copy (one small read next to a copy's)."""

    def __init__(self, settings: Settings, storage: StorageClient) -> None:
        self._setting = settings.prices
        self._storage = storage
        self._table: PriceTable | None = None
        self._read = False

    async def _read_object(self, bucket: str, name: str) -> bytes:
        data = bytearray()
        async with self._storage.download(bucket, name) as chunks:
            async for chunk in chunks:
                data += chunk
                if len(data) > MAX_TABLE_BYTES:
                    break  # load_table refuses it; no need to read more
        return bytes(data)

    async def table(self, **fields: Any) -> PriceTable | None:
        """The table, or None when it cannot be used (logged once, at ERROR, with ``fields``)."""
        if not self._read:
            self._read = True
            try:
                self._table = await load_table(self._setting, read_object=self._read_object)
            except (PricesError, RelayError) as exc:  # a bad table must not fail the copy: no cost instead
                kind = exc.kind if isinstance(exc, PricesError) else f"bad_prices ({exc.kind})"
                log(_log, logging.ERROR, "the price table (RELAY_PRICES) cannot be used: cost is null",
                    error={"kind": kind, "message": storable(str(exc))}, prices=self._setting, **fields)
        return self._table

    async def cost(self, summary: Summary, model: str | None, **fields: Any) -> dict[str, Any] | None:
        """The A10 ``cost`` map, or None (no usage read, an unknown model, or no usable table)."""
        if summary.usage is None:
            return None
        table = await self.table(**fields)
        return None if table is None else estimate(summary, table, model)


def results_map(summary: Summary, cost: dict[str, Any] | None, failed_uri: str | None) -> dict[str, Any]:
    """The A10 ``results`` map, fit for the record (a reason cut to ``REASON_MAX``, valid UTF-8)."""
    results = summary.to_dict(cost=cost, failed_uri=failed_uri)
    if isinstance(results.get("missing_reason"), str):
        results["missing_reason"] = storable(results["missing_reason"], REASON_MAX)
    return results

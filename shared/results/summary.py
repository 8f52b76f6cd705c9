"""What a finished job's outputs hold (contract A10), counted while they stream past, each byte once.

``ResultsReader`` takes one job's output lines as they come (``feed_chunk`` for bytes as a download
delivers them, ``end_file`` after each file; or ``feed`` per line; or ``feed_inline`` per inline response
object) and counts requests, successes, failures by error code, unparsed lines and token usage. Failed
requests go to a ``FailedLines`` as they are found (Vertex AI) or after the outputs, through the batch's
input (Gemini API: ``needs_input``, then ``feed_input_chunk``/``end_input`` or ``feed_inline_request``, or
``input_unavailable`` when it cannot be read). ``finish`` returns the frozen ``Summary``; ``Summary.to_dict``
is the ``results`` map of the record, the events and the manifest.

Memory does not grow with the outputs except for what the failed requests need: the digests of failed
keys (Gemini API), the digests of every key with a result when unfinished requests are looked for
(``track_unfinished``), and the lines of ``failed.jsonl`` (spooled to a temporary file past a few MiB). The
error-code map is bounded (``TRACKED_CODES`` codes, then ``other``).
"""

from __future__ import annotations

import collections
import dataclasses
import json
from typing import Any

from .chunks import MAX_LINE, LineSplitter
from .failed import FailedLines, GeminiJoin, key_digest, vertex_line
from .lines import (
    MAX_COUNT,
    Outcome,
    Row,
    Usage,
    gemini_row,
    parse_gemini_line,
    parse_usage,
    parse_vertex_row,
    vertex_row,
)

GEMINI = "gemini"
VERTEX = "vertex"
APIS = (GEMINI, VERTEX)
LONG_PROMPT_TOKENS = 200_000  # prompts above this are billed at a model's higher tier (where it has one)
TOP_ERRORS = 20
TRACKED_CODES = 1000  # distinct codes counted exactly; later new codes count as "other"
OTHER = "other"
INT64_MAX = 2**63 - 1
_decode = json.JSONDecoder().decode  # what json.loads does with a str (no options)


def input_gone(file_name: str, why: str) -> str:
    """The ``missing_reason`` of a Gemini batch whose input file could not be read (``input_unavailable``)."""
    return f"the batch's input file {file_name} could not be read ({why}); the Files API keeps files for 48 hours"


class ErrorCounts:
    """Failures by code, in bounded memory: the first ``TRACKED_CODES`` distinct codes are counted exactly,
    failures of any later new code are counted under ``other``."""

    def __init__(self, tracked: int = TRACKED_CODES) -> None:
        self._counts: collections.Counter[str] = collections.Counter()
        self._tracked = tracked
        self._overflow = 0

    def add(self, code: str) -> None:
        if code in self._counts or len(self._counts) < self._tracked:
            self._counts[code] += 1
        else:
            self._overflow += 1

    def top(self, n: int = TOP_ERRORS) -> dict[str, int]:
        """The ``n`` most frequent codes (ties: the code first seen), everything else under ``"other"``."""
        ranked = sorted(self._counts.items(), key=lambda item: -item[1])  # stable: ties keep first-seen order
        out = {code: number for code, number in ranked[:n] if code != OTHER}
        rest = self._overflow + sum(number for code, number in self._counts.items() if code not in out)
        if rest:
            out[OTHER] = rest
        return out


def _int64(value: int) -> int:
    return min(max(value, 0), INT64_MAX)


def _usage_dict(usage: Usage, rows_without_usage: int) -> dict[str, int]:
    return {"prompt_tokens": _int64(usage.prompt), "candidates_tokens": _int64(usage.candidates),
            "thoughts_tokens": _int64(usage.thoughts), "cached_tokens": _int64(usage.cached),
            "tool_use_prompt_tokens": _int64(usage.tool_use_prompt), "total_tokens": _int64(usage.total),
            "rows_without_usage": _int64(rows_without_usage)}


@dataclasses.dataclass(frozen=True)
class Summary:
    """One job's results, counted. ``usage`` is None where the outputs were not read (BigQuery);
    ``usage_long`` is the part of ``usage`` from requests whose prompt exceeded ``LONG_PROMPT_TOKENS``."""

    api: str
    requests: int
    succeeded: int
    failed: int
    unparsed: int
    unfinished: int  # requests the job counts (or its input holds) that have no result
    missing: int  # failed or unfinished requests failed.jsonl could not hold
    missing_reason: str | None
    errors: dict[str, int]
    usage: Usage | None
    usage_long: Usage | None
    rows_without_usage: int
    failed_lines: int  # lines of failed.jsonl

    def to_dict(self, *, cost: dict[str, Any] | None = None, failed_uri: str | None = None) -> dict[str, Any]:
        """The A10 ``results`` map (ints clamped to int64: what Firestore stores)."""
        return {
            "requests": _int64(self.requests),
            "succeeded": _int64(self.succeeded),
            "failed": _int64(self.failed),
            "missing": _int64(self.missing),
            "unparsed": _int64(self.unparsed),
            "unfinished": _int64(self.unfinished),
            "missing_reason": self.missing_reason,
            "errors": {code: _int64(n) for code, n in self.errors.items()},
            "usage": None if self.usage is None else _usage_dict(self.usage, self.rows_without_usage),
            "cost": cost,
            "failed_uri": failed_uri,
        }


def counts_summary(api: str, completion_stats: dict[str, int | None] | None, *,
                   reason: str = "the outputs are in BigQuery: batch-relay does not read them") -> Summary:
    """The results of a job whose outputs are not read (BigQuery): the job's own counts, no usage."""
    stats = completion_stats or {}
    succeeded = stats.get("successful") or 0
    failed = stats.get("failed") or 0
    unfinished = stats.get("incomplete") or 0
    missing = failed + unfinished
    return Summary(api=api, requests=succeeded + failed + unfinished, succeeded=succeeded, failed=failed,
                   unparsed=0, unfinished=unfinished, missing=missing, missing_reason=reason if missing else None,
                   errors={}, usage=None, usage_long=None, rows_without_usage=0, failed_lines=0)


class ResultsReader:
    """Counts one job's outputs as they stream (see the module's docstring).

    ``declared_requests``: how many requests the job says it has (Gemini ``batchStats.requestCount``, Vertex
    successful + failed + incomplete), when known. ``track_unfinished`` (Gemini API): also look for requests
    without any result (a batch that ended before it finished); it keeps a digest of every key with a
    result. ``failed``: where failed.jsonl's lines go (a new ``FailedLines`` when not given)."""

    def __init__(self, api: str, *, declared_requests: int | None = None, track_unfinished: bool = False,
                 failed: FailedLines | None = None, max_line: int = MAX_LINE) -> None:
        if api not in APIS:
            raise ValueError(f"api must be one of {APIS}, not {api!r}")
        self.api = api
        self.failed_lines = failed if failed is not None else FailedLines()
        self._declared = declared_requests
        self._max_line = max_line
        self._lines = LineSplitter(max_line)
        self._parse = parse_gemini_line if api == GEMINI else parse_vertex_row
        self._row = gemini_row if api == GEMINI else vertex_row
        self.succeeded = self.failed = self.unparsed = 0
        self.rows_without_usage = 0
        self.usage = Usage()
        self.usage_long = Usage()
        self.errors = ErrorCounts()
        self._failed_keys: collections.Counter[bytes] = collections.Counter()
        self._succeeded_keys: collections.Counter[bytes] | None = collections.Counter() if track_unfinished else None
        self._failed_written = 0
        self._unrecoverable: collections.Counter[str] = collections.Counter()  # why failed rows cannot be resent
        self._join: GeminiJoin | None = None
        self._input_reason: str | None = None
        self._finished: Summary | None = None

    # --- the outputs ------------------------------------------------------------------------------------

    def feed(self, line: bytes) -> None:
        """One output line (a responses-file line, or a prediction row)."""
        self.feed_row(self._parse(line))

    def feed_chunk(self, chunk: bytes) -> None:
        """Bytes of an output file as they arrive; ``end_file`` after its last chunk."""
        self.feed_lines(self._lines.feed(chunk))

    def end_file(self) -> None:
        """The end of one output file (its last line may lack a newline)."""
        self.feed_lines(self._lines.end())

    def feed_lines(self, lines: list[bytes]) -> None:
        """Output lines, counted as ``feed`` counts each, faster: a successful line whose token counts are plain
        integers is decoded once and its counts summed here, in locals; any other line goes the general way
        (``gemini_row``/``vertex_row`` on the value already decoded, or ``feed`` when it may not be JSON text
        in UTF-8). A property test holds the two ways to the same ``Summary``."""
        vertex = self.api == VERTEX
        row_of, feed_row, feed = self._row, self.feed_row, self.feed
        general = self._succeeded_keys is not None  # successes' keys are kept: every line the general way
        succeeded = prompt = candidates = thoughts = cached = tool_use = total = 0
        for line in lines:
            # json.loads(bytes) decodes a line that starts with "{" and a non-NUL byte as UTF-8 (it guesses
            # UTF-16/32 from NULs and BOMs only): decoding it here ourselves gives the same value, or error
            if line[:1] != b"{" or line[1:2] == b"\x00":
                feed(line)
                continue
            try:
                obj = _decode(line.decode("utf-8", "surrogatepass"))
            except (ValueError, RecursionError):  # as lines._load: unparsed
                feed(line)
                continue
            if type(obj) is not dict or general:
                feed_row(row_of(obj))
                continue
            response = obj.get("response")
            if type(response) is not dict or (vertex and not response):
                feed_row(row_of(obj))
                continue
            if vertex:
                status = obj.get("status")
                if status is not None and (type(status) is not str or status.strip()):
                    feed_row(row_of(obj))
                    continue
            elif obj.get("error") is not None:
                feed_row(row_of(obj))
                continue
            meta = response.get("usageMetadata")
            if type(meta) is not dict:
                feed_row(row_of(obj))  # (a success without usage)
                continue
            p, c, th = meta.get("promptTokenCount", 0), meta.get("candidatesTokenCount", 0), \
                meta.get("thoughtsTokenCount", 0)
            ca, tu, t = meta.get("cachedContentTokenCount", 0), meta.get("toolUsePromptTokenCount", 0), \
                meta.get("totalTokenCount")
            if t is None:
                t = -1
            if (type(p) is int and type(c) is int and type(th) is int and type(ca) is int and type(tu) is int
                    and type(t) is int and 0 <= (p | c | th | ca | tu) <= MAX_COUNT and t <= MAX_COUNT
                    and p <= LONG_PROMPT_TOKENS):
                succeeded += 1
                prompt += p
                candidates += c
                thoughts += th
                cached += ca if ca < p else p
                tool_use += tu
                total += t if t >= 0 else p + c + tu + th
            else:  # counts as strings, nulls, out of range, or a long prompt: the general way
                feed_row(Row(Outcome.SUCCEEDED, usage=parse_usage(meta)))
        self.succeeded += succeeded
        if succeeded:
            self.usage += Usage(prompt, candidates, thoughts, cached, tool_use, total)

    def feed_inline(self, item: Any) -> None:
        """One inline response of a Gemini batch, as the API gives it (``{"response" | "error", "metadata":
        {"key"}}``) or as a responses-file line (``{"key", …}``)."""
        self.feed_row(gemini_row(item))

    def feed_row(self, row: Row) -> None:
        if row.outcome is Outcome.BLANK:
            return
        if row.outcome is Outcome.UNPARSED:
            self.unparsed += 1
        elif row.outcome is Outcome.SUCCEEDED:
            self.succeeded += 1
            if row.usage is None:
                self.rows_without_usage += 1
            else:
                self.usage += row.usage
                if row.usage.prompt > LONG_PROMPT_TOKENS:
                    self.usage_long += row.usage
            if self._succeeded_keys is not None and row.key is not None:
                self._succeeded_keys[key_digest(row.key)] += 1
        else:
            self.failed += 1
            self.errors.add(row.error_code or "unknown")
            self._failed_row(row)

    def _failed_row(self, row: Row) -> None:
        if self.api == VERTEX:
            if row.request is None:
                self._unrecoverable["failed rows echo no request"] += 1
            elif self.failed_lines.add(vertex_line(row.request)):
                self._failed_written += 1
            else:
                self._unrecoverable["failed requests cannot be written as JSON"] += 1
        elif row.key is None:
            self._unrecoverable["failed lines have no key"] += 1
        else:
            self._failed_keys[key_digest(row.key)] += 1

    # --- the input (Gemini API) -------------------------------------------------------------------------

    @property
    def needs_input(self) -> bool:
        """Whether the batch's input must be read to write failed.jsonl (Gemini API: a failed key, or
        unfinished requests looked for while fewer results than the job's requests were read)."""
        if self.api != GEMINI:
            return False
        rows = self.succeeded + self.failed + self.unparsed
        short = self._declared is None or rows < self._declared
        return bool(self._failed_keys) or (self._succeeded_keys is not None and short)

    def _joiner(self) -> GeminiJoin:
        if self._join is None:
            self._join = GeminiJoin(self._failed_keys, self._succeeded_keys, self.failed_lines,
                                    max_line=self._max_line)
        return self._join

    def feed_input_chunk(self, chunk: bytes) -> None:
        """Bytes of the batch's input file (JSONL of ``{"key", "request"}``); ``end_input`` after the last."""
        self._joiner().feed_input_chunk(chunk)

    def feed_input_line(self, line: bytes) -> None:
        self._joiner().feed_input_line(line)

    def end_input(self) -> None:
        self._joiner().end_input()

    def feed_inline_request(self, item: Any) -> None:
        """One of the batch's inline requests (``{"request", "metadata": {"key"}}``)."""
        self._joiner().feed_inline_request(item)

    def input_unavailable(self, reason: str) -> None:
        """The batch's input cannot be read (e.g. the file is gone): its failed requests are ``missing``."""
        self._input_reason = reason
        self._join = None

    # --- the end ----------------------------------------------------------------------------------------

    def finish(self) -> Summary:
        """The summary (computed once; feeding more after it changes nothing)."""
        if self._finished is not None:
            return self._finished
        self.end_file()
        reasons: list[str] = []
        failed_written = self._failed_written
        unfinished_written = 0
        requests = self.succeeded + self.failed + self.unparsed
        if self._declared is not None:
            requests = max(requests, self._declared)
        join = self._join
        if join is not None:
            join.end_input()
            failed_written += join.failed_written
            unfinished_written = join.unfinished_written
            requests = max(requests, join.inputs)
            if join.failed_not_found:
                reasons.append(f"{join.failed_not_found} failed keys are not in the batch's input")
            if join.unreadable:
                reasons.append(f"{join.unreadable} input lines have no key or request")
            if join.unwritable:
                reasons.append(f"{join.unwritable} input requests cannot be written as JSON")
        for why, number in sorted(self._unrecoverable.items()):
            reasons.append(f"{number} {why}")
        unfinished = max(requests - self.succeeded - self.failed - self.unparsed, 0)
        unrecovered = max(unfinished - unfinished_written, 0)
        tracked = self._succeeded_keys is not None
        if self.api == GEMINI and join is None and (self._failed_keys or (tracked and unrecovered)):
            reasons.insert(0, self._input_reason or "the batch's input was not read")
        if unrecovered and not (self.api == GEMINI and join is None and tracked):
            if self.api == VERTEX:
                reasons.append(f"{unrecovered} requests have no result and cannot be matched to the input "
                               "(Vertex AI rows carry no key)")
            elif not tracked:
                reasons.append(f"{unrecovered} requests have no result and were not looked for in the batch's input")
            else:
                reasons.append(f"{unrecovered} requests without a result are not in the batch's input")
        missing = max(self.failed - failed_written, 0) + unrecovered
        self._finished = Summary(
            api=self.api, requests=requests, succeeded=self.succeeded, failed=self.failed, unparsed=self.unparsed,
            unfinished=unfinished, missing=missing, missing_reason="; ".join(reasons) if missing and reasons else None,
            errors=self.errors.top(), usage=self.usage, usage_long=self.usage_long,
            rows_without_usage=self.rows_without_usage, failed_lines=self.failed_lines.count)
        return self._finished

"""What a status fetch tells us about a job, parsed from either API's wire format (docs/wire.md).

``JobStatus.from_gemini`` / ``from_vertex`` accept unknown fields, int64 counts as strings, omitted zero
counts and nanosecond timestamps; anything of the wrong shape raises ``BadResponseError``.
``to_record`` gives the A4 fields a poll may write. ``inline_line`` makes one of a Gemini batch's inline
responses a line of ``responses.jsonl`` (the copy reads them streamed: ``outputs.GeminiOutputs.inline_items``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any

from ..errors import BadResponseError
from . import states
from .names import Api
from .states import State

_TS = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})$"
)
_STATE = re.compile(r"^JOB_STATE_[A-Z][A-Z_]{0,60}$")
# Free text from the API is stored on the record and copied into every event of the job's outbox: it is
# cut to these many UTF-8 bytes (docs/record.md), so that no reply can push a record towards Firestore's
# 1 MiB a document or an event towards Pub/Sub's 10 MB a message.
ERROR_MESSAGE_MAX_BYTES = 4096
DISPLAY_NAME_MAX_BYTES = 1024
CUT_MARK = "…"


def parse_timestamp(value: Any, field: str) -> dt.datetime | None:
    """RFC 3339 with up to nanoseconds -> aware datetime (microsecond precision)."""
    if value is None or value == "":
        return None
    m = _TS.match(value) if isinstance(value, str) else None
    if not m:
        raise BadResponseError(f"{field} is not an RFC 3339 timestamp: {str(value)[:80]!r}")
    y, mo, d, h, mi, s, frac, tz = m.groups()
    micros = int((frac or "0").ljust(9, "0")[:6])
    try:
        if tz in ("Z", "z"):
            tzinfo = dt.UTC
        else:
            sign = 1 if tz[0] == "+" else -1
            tzinfo = dt.timezone(sign * dt.timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
        stamp = dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), micros, tzinfo=tzinfo)
        return stamp.astimezone(dt.UTC)
    except (ValueError, OverflowError) as exc:
        raise BadResponseError(f"{field} is not a valid time: {value[:80]!r}") from exc


def parse_count(value: Any, field: str) -> int:
    """int64 as a JSON string (or number); omitted means 0."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise BadResponseError(f"{field} is not a count: {value!r}")
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,19}", value):
        value = int(value)
    if isinstance(value, int) and -(2**63) <= value < 2**63:  # Firestore integers are int64
        return value
    raise BadResponseError(f"{field} is not a count: {str(value)[:40]!r}")


def _obj(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadResponseError(f"{field} is not an object")
    return value


def _str(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadResponseError(f"{field} is not a string")
    return value


def cut(text: str, max_bytes: int) -> str:
    """``text`` if it fits in ``max_bytes`` UTF-8 bytes, else its longest prefix that fits with ``CUT_MARK``
    appended (never splitting a character)."""
    data = text.encode("utf-8", "surrogatepass")  # (a reply may hold lone surrogates: kept as they came)
    if len(data) <= max_bytes:
        return text
    room = max_bytes - len(CUT_MARK.encode("utf-8"))
    while room > 0:
        try:
            return data[:room].decode("utf-8", "surrogatepass") + CUT_MARK
        except UnicodeDecodeError:  # the cut fell inside a character
            room -= 1
    return CUT_MARK


def _text(value: Any, field: str, max_bytes: int) -> str | None:
    text = _str(value, field)
    return cut(text, max_bytes) if text is not None else None


def _state(raw: Any) -> State:
    if raw is not None and not isinstance(raw, str):
        raise BadResponseError("state is not a string")
    state = states.normalize(raw)
    if not _STATE.match(state):
        raise BadResponseError(f"state {str(raw)[:60]!r} is not a job state")
    return state


def _error(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    body = _obj(raw, "error")
    code = body.get("code", 0)
    try:
        code = parse_count(code, "error.code")
    except BadResponseError:
        code = 0
    message = body.get("message")
    return {"code": code, "message": cut(message, ERROR_MESSAGE_MAX_BYTES) if isinstance(message, str) else ""}


def _inlined_items(output: dict[str, Any], response: dict[str, Any]) -> list[Any] | None:
    """The ``inlinedResponses`` list of a Gemini batch (in ``metadata.output``, or the operation's
    ``response``), or None when it has none."""
    inlined = _obj(output.get("inlinedResponses"), "output.inlinedResponses") or _obj(
        response.get("inlinedResponses"), "response.inlinedResponses"
    )
    items = inlined.get("inlinedResponses")
    if items is not None and not isinstance(items, list):
        raise BadResponseError("inlinedResponses is not a list")
    return items


def inline_line(index: int, item: dict[str, Any]) -> dict[str, Any]:
    """The ``responses.jsonl`` line of inline response ``index`` (``BadResponseError`` for a bad metadata)."""
    item_meta = item.get("metadata") or {}
    if not isinstance(item_meta, dict):
        raise BadResponseError(f"inlinedResponses[{index}].metadata is not an object")
    line: dict[str, Any] = {"key": item_meta.get("key") or str(index)}
    if "error" in item:
        line["error"] = item["error"]
    else:
        line["response"] = item.get("response")
    return line


@dataclasses.dataclass(frozen=True)
class JobStatus:
    """The parts of a job's status that batch-relay stores."""

    name: str
    api: Api
    state: State
    display_name: str | None = None
    model: str | None = None
    create_time: dt.datetime | None = None
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    update_time: dt.datetime | None = None
    completion_stats: dict[str, int | None] | None = None  # Vertex: incomplete unknown (-1) is None
    error: dict[str, Any] | None = None
    output: dict[str, Any] = dataclasses.field(default_factory=dict)
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    # Not stored: the reactor reads inline responses from the API when it copies them.
    has_inline_responses: bool = False

    @classmethod
    def from_gemini(cls, body: Any) -> JobStatus:
        op = _obj(body, "body")
        meta = _obj(op.get("metadata"), "metadata")
        name = _str(meta.get("name"), "metadata.name") or _str(op.get("name"), "name")
        if not name:
            raise BadResponseError("reply has no batch name")
        stats = _obj(meta.get("batchStats"), "metadata.batchStats")
        counts: dict[str, int | None] | None = None
        if stats:
            counts = {
                "successful": parse_count(stats.get("successfulRequestCount"), "successfulRequestCount"),
                "failed": parse_count(stats.get("failedRequestCount"), "failedRequestCount"),
                "incomplete": parse_count(stats.get("pendingRequestCount"), "pendingRequestCount"),
            }
        out = _obj(meta.get("output"), "metadata.output")
        response = _obj(op.get("response"), "response")
        output: dict[str, Any] = {}
        responses_file = _str(out.get("responsesFile"), "output.responsesFile") or _str(
            response.get("responsesFile"), "response.responsesFile"
        )
        if responses_file:
            output["file_name"] = responses_file
        items = _inlined_items(out, response)
        if items is not None:
            output["inlined_count"] = len(items)
        return cls(
            name=name,
            api=Api.GEMINI,
            state=_state(meta.get("state")),
            display_name=_text(meta.get("displayName"), "displayName", DISPLAY_NAME_MAX_BYTES),
            model=_str(meta.get("model"), "model"),
            create_time=parse_timestamp(meta.get("createTime"), "createTime"),
            start_time=parse_timestamp(meta.get("startTime"), "startTime"),
            end_time=parse_timestamp(meta.get("endTime"), "endTime"),
            update_time=parse_timestamp(meta.get("updateTime"), "updateTime"),
            completion_stats=counts,
            error=_error(op.get("error")),
            output=output,
            has_inline_responses=items is not None,
        )

    @classmethod
    def from_vertex(cls, body: Any) -> JobStatus:
        job = _obj(body, "body")
        name = _str(job.get("name"), "name")
        if not name:
            raise BadResponseError("reply has no job name")
        stats = _obj(job.get("completionStats"), "completionStats")
        counts = None
        if stats:
            incomplete = parse_count(stats.get("incompleteCount"), "incompleteCount")
            counts = {
                "successful": parse_count(stats.get("successfulCount"), "successfulCount"),
                "failed": parse_count(stats.get("failedCount"), "failedCount"),
                "incomplete": None if incomplete == -1 else incomplete,
            }
        info = _obj(job.get("outputInfo"), "outputInfo")
        output: dict[str, Any] = {}
        if gcs := _str(info.get("gcsOutputDirectory"), "outputInfo.gcsOutputDirectory"):
            output["gcs_uri"] = gcs.rstrip("/")
        if bq := _str(info.get("bigqueryOutputTable"), "outputInfo.bigqueryOutputTable"):
            output["bigquery_uri"] = bq
        labels = _obj(job.get("labels"), "labels")
        return cls(
            name=name,
            api=Api.VERTEX,
            state=_state(job.get("state")),
            display_name=_text(job.get("displayName"), "displayName", DISPLAY_NAME_MAX_BYTES),
            model=_str(job.get("model"), "model"),
            create_time=parse_timestamp(job.get("createTime"), "createTime"),
            start_time=parse_timestamp(job.get("startTime"), "startTime"),
            end_time=parse_timestamp(job.get("endTime"), "endTime"),
            update_time=parse_timestamp(job.get("updateTime"), "updateTime"),
            completion_stats=counts,
            error=_error(job.get("error")),
            output=output,
            labels={str(k): str(v) for k, v in labels.items()},
        )

    @property
    def terminal(self) -> bool:
        return states.is_terminal(self.state)

    def compared_fields(self) -> dict[str, Any]:
        """The fields whose change makes a poll write (A4: state, completion_stats, error, output)."""
        return {
            "state": self.state,
            "completion_stats": self.completion_stats,
            "error": self.error,
            "output": self.output or {},
        }

    def to_record(self) -> dict[str, Any]:
        """Fields a poll writes when something compared changed (times and names ride along)."""
        return {
            **self.compared_fields(),
            "terminal": self.terminal,
            "display_name": self.display_name,
            "model": self.model,
            "create_time": self.create_time,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "update_time": self.update_time,
        }

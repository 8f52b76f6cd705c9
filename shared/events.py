"""Events (contract A5): binary-mode CloudEvents over Pub/Sub, built from the record (A4).

An ``Event`` is stored whole in the outbox (a transition document, or the record's ``outbox`` map) and
published from there, so a re-send carries the same ``ce-id``, attributes and data.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

STATE_CHANGED = "batchrelay.job.v1.stateChanged"
OUTPUTS_READY = "batchrelay.job.v1.outputsReady"
OUTPUTS_FAILED = "batchrelay.job.v1.outputsFailed"
LOST = "batchrelay.job.v1.lost"

# A4 fields, in order; everything else on the document is internal bookkeeping.
RECORD_FIELDS = (
    "name", "api", "state", "terminal", "version", "tracking_id", "display_name", "model",
    "create_time", "start_time", "end_time", "update_time", "completion_stats", "error", "output",
    "destination", "labels", "copy", "tracked_at", "polled_at", "last_poll_error",
)
COPY_FIELDS = ("status", "attempt", "uri", "manifest_uri", "objects", "bytes", "error", "announced")


def rfc3339(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def to_json_value(value: Any) -> Any:
    """Firestore values -> JSON: timestamps RFC 3339, maps and lists recursively."""
    if isinstance(value, dt.datetime):
        return rfc3339(value)
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    return value


def public_record(record: dict[str, Any]) -> dict[str, Any]:
    """The A4 record as JSON, internal fields left out."""
    out = {field: to_json_value(record.get(field)) for field in RECORD_FIELDS}
    copy = record.get("copy") or {}
    out["copy"] = {field: to_json_value(copy.get(field)) for field in COPY_FIELDS}
    out["labels"] = out["labels"] or {}
    out["output"] = out["output"] or {}
    return out


@dataclasses.dataclass(frozen=True)
class Event:
    id: str
    type: str
    job: str
    attributes: dict[str, str]
    data: str  # UTF-8 JSON text, exactly as published

    def to_doc(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "job": self.job, "attributes": self.attributes,
                "data": self.data}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Event:
        return cls(doc["id"], doc["type"], doc["job"], dict(doc["attributes"]), doc["data"])


def _event(ce_type: str, ce_id: str, record: dict[str, Any], source: str, time: dt.datetime,
           data: dict[str, Any], extra: dict[str, str] | None = None) -> Event:
    name = record["name"]
    attributes = {
        "ce-specversion": "1.0",
        "ce-id": ce_id,
        "ce-source": source,
        "ce-type": ce_type,
        "ce-subject": name,
        "ce-time": rfc3339(time),
        "content-type": "application/json",
        "job": name,
        "api": record["api"],
        "state": record["state"],
        **(extra or {}),
    }
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=False)
    return Event(ce_id, ce_type, name, attributes, text)


def state_changed_id(tracking_id: str, version: int) -> str:
    return f"{tracking_id}-{version}"


def copy_event_id(tracking_id: str, attempt: int, ok: bool) -> str:
    return f"{tracking_id}-copy{attempt}-{'ready' if ok else 'failed'}"


def lost_id(tracking_id: str) -> str:
    return f"{tracking_id}-lost"


def state_changed(record: dict[str, Any], previous_state: str, source: str, time: dt.datetime) -> Event:
    version = int(record["version"])
    data = {"job": public_record(record), "previous_state": previous_state, "state": record["state"],
            "version": version}
    return _event(STATE_CHANGED, state_changed_id(record["tracking_id"], version), record, source, time,
                  data, {"previous_state": previous_state})


def outputs_ready(record: dict[str, Any], source: str, time: dt.datetime) -> Event:
    copy = record["copy"]
    data = {"job": public_record(record), "destination": copy.get("uri"),
            "manifest_uri": copy.get("manifest_uri"), "objects": int(copy.get("objects") or 0),
            "bytes": int(copy.get("bytes") or 0)}
    return _event(OUTPUTS_READY, copy_event_id(record["tracking_id"], int(copy["attempt"]), True), record,
                  source, time, data)


def outputs_failed(record: dict[str, Any], source: str, time: dt.datetime) -> Event:
    copy = record["copy"]
    error = copy.get("error") or {"kind": "unknown", "message": ""}
    data = {"job": public_record(record), "error": {"kind": error.get("kind"), "message": error.get("message")}}
    return _event(OUTPUTS_FAILED, copy_event_id(record["tracking_id"], int(copy["attempt"]), False), record,
                  source, time, data)


def lost(record: dict[str, Any], source: str, time: dt.datetime) -> Event:
    return _event(LOST, lost_id(record["tracking_id"]), record, source, time, {"job": public_record(record)})

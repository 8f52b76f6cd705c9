"""Events (contract A5): binary-mode CloudEvents over Pub/Sub, built from the record (A4).

An ``Event`` is stored whole in the outbox (a transition document, or the record's ``outbox`` map) and
published from there, so a re-send carries the same ``ce-id``, attributes and data.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from ..batchapi.states import SUCCESS, State
from ..record.model import JobRecord, rfc3339

STATE_CHANGED = "batchrelay.job.v1.stateChanged"
OUTPUTS_READY = "batchrelay.job.v1.outputsReady"
OUTPUTS_FAILED = "batchrelay.job.v1.outputsFailed"
LOST = "batchrelay.job.v1.lost"
STALLED = "batchrelay.job.v1.stalled"
TYPES = (STATE_CHANGED, OUTPUTS_READY, OUTPUTS_FAILED, LOST, STALLED)


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


def _event(ce_type: str, ce_id: str, record: JobRecord, source: str, time: dt.datetime,
           data: dict[str, Any], extra: dict[str, str] | None = None) -> Event:
    attributes = {
        "ce-specversion": "1.0",
        "ce-id": ce_id,
        "ce-source": source,
        "ce-type": ce_type,
        "ce-subject": record.name,
        "ce-time": rfc3339(time),
        "content-type": "application/json",
        "job": record.name,
        "api": str(record.api),  # plain strings, as Pub/Sub carries them: the enums' values
        "state": str(record.state),
        **(extra or {}),
    }
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=False)
    return Event(ce_id, ce_type, record.name, attributes, text)


def state_changed_id(tracking_id: str, version: int) -> str:
    return f"{tracking_id}-{version}"


def copy_event_id(tracking_id: str, attempt: int, ok: bool) -> str:
    return f"{tracking_id}-copy{attempt}-{'ready' if ok else 'failed'}"


def lost_id(tracking_id: str) -> str:
    return f"{tracking_id}-lost"


def stalled_id(tracking_id: str, version: int) -> str:
    return f"{tracking_id}-{version}-stalled"


def state_changed(record: JobRecord, previous_state: State, source: str, time: dt.datetime) -> Event:
    data = {"job": record.public(), "previous_state": previous_state, "state": record.state,
            "version": record.version}
    return _event(STATE_CHANGED, state_changed_id(record.tracking_id, record.version), record, source, time,
                  data, {"previous_state": str(previous_state)})


def outputs_ready(record: JobRecord, source: str, time: dt.datetime, *, partial: bool | None = None) -> Event:
    """The copy finished: where the outputs went and what they hold (the record's ``results``). ``partial``:
    the job ended otherwise than SUCCEEDED or PARTIALLY_SUCCEEDED (None: as the record's state says)."""
    copy = record.copy
    if partial is None:
        partial = record.state not in SUCCESS
    data = {"job": record.public(), "destination": copy.uri, "manifest_uri": copy.manifest_uri,
            "objects": copy.objects, "bytes": copy.bytes, "results": record.results, "partial": partial}
    return _event(OUTPUTS_READY, copy_event_id(record.tracking_id, copy.attempt, True), record, source, time, data)


def outputs_failed(record: JobRecord, source: str, time: dt.datetime) -> Event:
    copy = record.copy
    error = copy.error or {"kind": "unknown", "message": ""}
    data = {"job": record.public(), "error": {"kind": error.get("kind"), "message": error.get("message")}}
    return _event(OUTPUTS_FAILED, copy_event_id(record.tracking_id, copy.attempt, False), record, source, time,
                  data)


def lost(record: JobRecord, source: str, time: dt.datetime) -> Event:
    return _event(LOST, lost_id(record.tracking_id), record, source, time, {"job": record.public()})


def stalled(record: JobRecord, source: str, time: dt.datetime) -> Event:
    """The job's state and counts have not changed since ``changed_at``."""
    since = record.changed_at or time
    data = {"job": record.public(), "state": record.state, "since": rfc3339(since),
            "stalled_for_s": max(int((time - since).total_seconds()), 0)}
    return _event(STALLED, stalled_id(record.tracking_id, record.version), record, source, time, data)

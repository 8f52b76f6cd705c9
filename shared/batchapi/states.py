"""One lifecycle for both APIs (contract A4): Gemini ``BATCH_STATE_X`` becomes ``JOB_STATE_X``.

A job's state is a ``State``: a ``JobState`` member when this version knows it, else an ``OtherState``, the
normalized text of a state an API added since. Unknown states pass through (stored and published as they
came, normalized), so no closed enum can hold every value; the ``NewType`` for the rest keeps a raw,
unnormalized string from becoming a state unnoticed: only ``normalize`` (from the wire or a user) and
``stored`` (read back from a record) make one. ``JobState`` is a ``StrEnum``: its members compare, hash and
serialise (JSON, Firestore, Pub/Sub attributes) as the ``JOB_STATE_*`` strings they are.
"""

from __future__ import annotations

import enum
from typing import NewType, TypeAlias

from ..errors import UsageError


class JobState(enum.StrEnum):
    UNSPECIFIED = "JOB_STATE_UNSPECIFIED"
    QUEUED = "JOB_STATE_QUEUED"
    PENDING = "JOB_STATE_PENDING"
    RUNNING = "JOB_STATE_RUNNING"
    SUCCEEDED = "JOB_STATE_SUCCEEDED"
    FAILED = "JOB_STATE_FAILED"
    CANCELLING = "JOB_STATE_CANCELLING"
    CANCELLED = "JOB_STATE_CANCELLED"
    PAUSED = "JOB_STATE_PAUSED"
    EXPIRED = "JOB_STATE_EXPIRED"
    UPDATING = "JOB_STATE_UPDATING"
    PARTIALLY_SUCCEEDED = "JOB_STATE_PARTIALLY_SUCCEEDED"


OtherState = NewType("OtherState", str)  # a normalized ``JOB_STATE_*`` this version does not know
State: TypeAlias = JobState | OtherState

KNOWN: frozenset[JobState] = frozenset(JobState)
TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED,
                      JobState.PARTIALLY_SUCCEEDED})
SUCCESS = frozenset({JobState.SUCCEEDED, JobState.PARTIALLY_SUCCEEDED})
_BY_TEXT: dict[str, JobState] = {state.value: state for state in JobState}


def _of(text: str) -> State:
    return _BY_TEXT.get(text) or OtherState(text)


def normalize(state: object) -> State:
    """Wire state -> ``JOB_STATE_*``. Unknown states pass through in normalized form (forward compatible)."""
    if not isinstance(state, str) or not state:
        return JobState.UNSPECIFIED
    text = state.strip().upper()
    if text.startswith("BATCH_STATE_"):
        text = "JOB_STATE_" + text[len("BATCH_STATE_"):]
    elif not text.startswith("JOB_STATE_"):
        text = "JOB_STATE_" + text
    return _of(text)


def stored(value: object) -> State:
    """A record's state as read back (it was stored normalized); UNSPECIFIED when there is none."""
    return _of(value) if isinstance(value, str) and value else JobState.UNSPECIFIED


def parse_user_state(value: str) -> JobState:
    """``SUCCEEDED``, ``JOB_STATE_SUCCEEDED`` or ``BATCH_STATE_SUCCEEDED`` -> ``JOB_STATE_SUCCEEDED``."""
    state = normalize(value)
    if not isinstance(state, JobState):
        raise UsageError(f"unknown state {value!r}; one of: {', '.join(sorted(s[10:] for s in KNOWN))}")
    return state


def is_terminal(state: str) -> bool:
    return state in TERMINAL

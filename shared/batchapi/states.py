"""One lifecycle for both APIs (contract A4): Gemini ``BATCH_STATE_X`` becomes ``JOB_STATE_X``."""

from __future__ import annotations

from ..errors import UsageError

UNSPECIFIED = "JOB_STATE_UNSPECIFIED"
SUCCEEDED = "JOB_STATE_SUCCEEDED"
PARTIALLY_SUCCEEDED = "JOB_STATE_PARTIALLY_SUCCEEDED"
FAILED = "JOB_STATE_FAILED"
CANCELLED = "JOB_STATE_CANCELLED"
EXPIRED = "JOB_STATE_EXPIRED"

KNOWN = frozenset(
    "JOB_STATE_" + s
    for s in (
        "UNSPECIFIED QUEUED PENDING RUNNING SUCCEEDED FAILED CANCELLING CANCELLED PAUSED "
        "EXPIRED UPDATING PARTIALLY_SUCCEEDED"
    ).split()
)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, EXPIRED, PARTIALLY_SUCCEEDED})
SUCCESS = frozenset({SUCCEEDED, PARTIALLY_SUCCEEDED})


def normalize(state: object) -> str:
    """Wire state -> ``JOB_STATE_*``. Unknown states pass through in normalized form (forward compatible)."""
    if not isinstance(state, str) or not state:
        return UNSPECIFIED
    text = state.strip().upper()
    if text.startswith("BATCH_STATE_"):
        text = "JOB_STATE_" + text[len("BATCH_STATE_"):]
    elif not text.startswith("JOB_STATE_"):
        text = "JOB_STATE_" + text
    return text


def parse_user_state(value: str) -> str:
    """``SUCCEEDED``, ``JOB_STATE_SUCCEEDED`` or ``BATCH_STATE_SUCCEEDED`` -> ``JOB_STATE_SUCCEEDED``."""
    state = normalize(value)
    if state not in KNOWN:
        raise UsageError(f"unknown state {value!r}; one of: {', '.join(sorted(s[10:] for s in KNOWN))}")
    return state


def is_terminal(state: str) -> bool:
    return state in TERMINAL

"""What a tick reports (contract A1): the counts of one tick, or of one part of a fanned-out tick."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class TickSummary:
    polled: int = 0
    changed: int = 0
    published: int = 0
    errors: int = 0
    duration_s: float = 0.0
    updated: int = 0
    deferred: int = 0
    republished: int = 0
    lost: int = 0
    swept: int = 0
    listed: int = 0  # jobs the watched scopes' lists showed
    list_pages: int = 0
    discovered: int = 0  # jobs found in a watched scope and tracked
    stalled: int = 0  # stalled events committed
    migrated: int = 0  # records written before this version, given their new fields

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["duration_s"] = round(self.duration_s, 3)
        return out

"""Which objects in a destination the relay wrote, and the precondition of every write: the copy never
overwrites an object it did not write.

Every object the reactor writes carries custom metadata ``batch-relay-job`` (the job's name) and
``batch-relay-tracking-id``. Before a write the target is looked at:

- nothing there: written with ``ifGenerationMatch=0`` (only if still nothing is there);
- an object the relay wrote for this job (an earlier attempt, a redelivery, a recopy): replaced with
  ``ifGenerationMatch`` = its generation (only if it is still that object);
- anything else: refused (``foreign_object``), and the object is left as it is.

A precondition that fails (someone wrote in between) is transient: the copy looks again on redelivery.
"""

from __future__ import annotations

import dataclasses

from ..errors import PermanentError
from .storage import ObjectInfo

JOB_KEY = "batch-relay-job"
TRACKING_KEY = "batch-relay-tracking-id"


@dataclasses.dataclass(frozen=True)
class Ownership:
    """The marks of one job's copy, and what they allow."""

    job: str
    tracking_id: str

    @property
    def metadata(self) -> dict[str, str]:
        """The custom metadata every object of this copy is written with."""
        return {JOB_KEY: self.job, TRACKING_KEY: self.tracking_id}

    def owns(self, obj: ObjectInfo) -> bool:
        """Whether the relay wrote ``obj`` for this job."""
        return (obj.metadata or {}).get(JOB_KEY) == self.job

    def precondition(self, present: ObjectInfo | None, where: str) -> int | str:
        """``ifGenerationMatch`` for writing at ``where`` (``gs://bucket/name``) over ``present`` (None:
        nothing is there); ``PermanentError`` ``foreign_object`` when the object there is not the relay's."""
        if present is None:
            return 0
        if self.owns(present) and present.generation:
            return present.generation
        raise PermanentError(f"{where[:300]} already exists and batch-relay did not write it for {self.job}: "
                             "it is left as it is and nothing is copied", kind="foreign_object")

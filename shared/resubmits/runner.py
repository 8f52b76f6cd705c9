"""``Resubmitter``: one resubmit, sent at most once.

1. Read the job's record: not tracked is a usage error; already resubmitted (and not ``--again``, and no
   resubmit under way) returns that batch at once.
2. Find and count ``failed.jsonl`` (``plan``); none, or empty: nothing to resubmit. ``--dry-run`` stops here
   and shows the requests, with the retry number they would take.
3. Claim the resubmit on the job's record (``JobStore.begin_resubmit``, a transaction): a fresh retry number,
   or an interrupted resubmit to finish, or another one under way, or the batch already made.
4. Finishing an interrupted resubmit, or meeting one under way: look for its batch (Gemini: by display name in
   the API key's list; Vertex AI: by its labels, with a list filter). Found: link it, as below. Under way and
   not listed: stop (exit 1), without creating anything.
5. Gemini: upload ``failed.jsonl`` to the Files API (streamed from Cloud Storage), then make sure the claim is
   still ours (``renew_resubmit``). Then the create, sent once.
6. Link and track (``finish_resubmit``, a transaction): the job's ``resubmitted_as``, the new batch's record.

What cannot happen twice: a create whose claim is ours. A create that certainly made nothing (the API refused
it: 400/401/403/404) or an upload that failed gives the claim back at once; a create whose answer was lost
(a timeout, a 5xx, a broken connection), or a crash, or a failed write after it, leaves the claim to run out:
until then a resubmit of the job looks for the batch and, finding none, stops; after, it takes the claim over,
looks again, and only then creates. A batch is listed well within a lease (``LEASE_S``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from collections.abc import Callable
from typing import Any

from ..batchapi.create import GeminiCreate, VertexCreate
from ..batchapi.endpoints import gemini_key
from ..batchapi.names import Api, JobName
from ..batchapi.wire import JobStatus
from ..errors import BadResponseError, PermanentError, TransientError, UsageError
from ..log import get_logger, log
from ..record.machine import ResubmitStep, next_retry
from ..record.model import JobRecord
from ..record.store import JobStore
from ..settings import Settings, split_gcs_uri
from . import plan as plans
from .plan import FailedInput, Plan

LEASE_S = 300.0
_log = get_logger("resubmit")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Resubmitter:
    """Resubmits over the store, Cloud Storage (to read ``failed.jsonl``) and the two create clients."""

    def __init__(self, settings: Settings, store: JobStore, storage: Any, gemini: GeminiCreate, vertex: VertexCreate,
                 *, clock: Callable[[], dt.datetime] | None = None, lease_s: float = LEASE_S) -> None:
        self._settings = settings
        self._store = store
        self._storage = storage
        self._gemini = gemini
        self._vertex = vertex
        self._clock = clock or _now
        self._lease_s = lease_s

    async def resubmit(self, name: str, *, again: bool = False, dry_run: bool = False) -> dict[str, Any]:
        """Resubmit ``name``'s failed requests; returns what happened (``status``: ``created``,
        ``existing``, ``nothing`` or ``dry_run``). ``UsageError``: bad input; ``TransientError``: another
        resubmit of the job is under way (or its batch is not listed yet), or an API could not be reached."""
        job = JobName.parse(name)
        record = await asyncio.to_thread(self._store.load, job.name)
        if record is None:
            raise UsageError(f"{job.name} is not tracked")
        if record.resubmitted_as and not again and record.resubmit_claim is None:
            return await self._existing(record, record.resubmitted_as, dry_run=dry_run)
        uri = plans.failed_uri(record)
        failed = await plans.read_failed(self._storage, uri) if uri else None
        if failed is None or failed.requests == 0:
            return _nothing(record, failed)
        plans.check_limits(record.api, failed)
        root = await asyncio.to_thread(self._store.lineage_root, record)
        preview = plans.make_plan(record, root or record, next_retry(record, root), failed, self._settings)
        if dry_run:  # (it also refused what cannot be sent, before anything is claimed)
            return _dry_run(preview, self._settings)
        if record.api == Api.GEMINI:
            gemini_key(self._settings)  # MissingApiKey before anything is written
        request_id = secrets.token_hex(8)
        start = await asyncio.to_thread(self._store.begin_resubmit, job.name, request_id=request_id, again=again,
                                        now=self._clock(), lease_s=self._lease_s)
        if start.step == ResubmitStep.EXISTING:
            return await self._existing(record, start.existing or "")
        first = record if start.root == record.name else (root or record)
        plan = plans.make_plan(record, first, start.n, failed, self._settings)
        if start.step in (ResubmitStep.RESUME, ResubmitStep.BUSY):
            found = await self._look_for(plan, request_id if start.step == ResubmitStep.RESUME else None)
            if found is not None:
                log(_log, logging.WARNING, "found the batch of an interrupted resubmit", job=job.name,
                    batch=found.name, n=plan.n)
                return await self._finish(plan, found, "existing")
            if start.step == ResubmitStep.BUSY:
                claim = start.claim
                until = claim.until.isoformat(timespec="seconds") if claim else "?"
                raise TransientError(f"a resubmit of {job.name} (retry {plan.n}) is under way, or was interrupted, and "
                                     f"no batch of it is listed yet; run again after {until}: it looks for that batch "
                                     "again before creating one")
        status = await self._create(plan, request_id)
        return await self._finish(plan, status, "created")

    # -- the steps -----------------------------------------------------------------------------------------
    async def _look_for(self, plan: Plan, request_id: str | None) -> JobStatus | None:
        """The batch of retry ``plan.n``, if the API lists one. A list that cannot be read gives our claim
        (``request_id``, when we took one over) back: the next resubmit looks again."""
        try:
            if plan.api == Api.GEMINI:
                return await self._gemini.find_batch(plan.display_name)
            job = plan.record.job
            return await self._vertex.find_job(job.project or "", job.location or "", plan.api_labels or {})
        except BaseException:
            if request_id is not None:
                await self._give_back(plan.record.name, request_id)
            raise

    async def _create(self, plan: Plan, request_id: str) -> JobStatus:
        """The upload (Gemini) and the create, under our claim; see the module's docstring for what a
        failure leaves behind."""
        name = plan.record.name
        try:
            file_name = await self._upload(plan) if plan.api == Api.GEMINI else None
            if file_name is not None and not await asyncio.to_thread(
                    self._store.renew_resubmit, name, request_id, self._clock(), self._lease_s):
                raise TransientError(f"another resubmit of {name} took over while the input was uploaded; run "
                                     "again to see its batch")
        except BaseException:
            await self._give_back(name, request_id)
            raise
        try:
            if plan.api == Api.GEMINI:
                return await self._gemini.create_batch(plan.model, display_name=plan.display_name,
                                                       file_name=file_name)
            job = plan.record.job
            return await self._vertex.create_job(job.project or "", job.location or "", plan.vertex_body())
        except PermanentError as exc:
            if isinstance(exc, BadResponseError):  # a reply we cannot read: the batch may exist
                raise
            await self._give_back(name, request_id)  # refused: nothing was made
            if exc.kind == "bad_request":
                raise UsageError(f"the API refused the new batch: {exc}") from None
            raise

    async def _upload(self, plan: Plan) -> str:
        bucket, obj = split_gcs_uri(plan.failed.uri)
        async with self._storage.download(bucket, obj) as chunks:
            return await self._gemini.upload_file(chunks, size=plan.failed.bytes,
                                                  display_name=f"failed requests of {plan.record.name}")

    async def _give_back(self, name: str, request_id: str) -> None:
        try:
            await asyncio.to_thread(self._store.release_resubmit, name, request_id, self._clock())
        except Exception as exc:  # noqa: BLE001 - the claim then runs out by itself
            log(_log, logging.WARNING, "could not give the resubmit's claim back", job=name,
                error=f"{type(exc).__name__}: {str(exc)[:200]}")

    async def _finish(self, plan: Plan, status: JobStatus, outcome: str) -> dict[str, Any]:
        done = await asyncio.to_thread(
            self._store.finish_resubmit, plan.record.name, status.name, n=plan.n, root=plan.root,
            destination=plan.destination, labels=plan.labels, now=self._clock())
        log(_log, logging.INFO, "resubmitted", job=plan.record.name, batch=status.name, n=plan.n, status=outcome,
            requests=plan.failed.requests, linked=done.linked)
        return {"job": plan.record.name, "status": outcome, "batch": status.name, "n": plan.n,
                "input": plan.failed.to_json(), "destination": done.record.destination, "record": done.record.public()}

    async def _existing(self, record: JobRecord, batch: str, *, dry_run: bool = False) -> dict[str, Any]:
        """The batch already made of ``record``'s failed requests (its record, when it is still tracked)."""
        child = await asyncio.to_thread(self._store.load, batch)
        return {"job": record.name, "status": "existing", "batch": batch, "n": None, "input": None,
                "destination": child.destination if child else None, "record": child.public() if child else None,
                **({"dry_run": True} if dry_run else {})}


def _nothing(record: JobRecord, failed: FailedInput | None) -> dict[str, Any]:
    return {"job": record.name, "status": "nothing", "batch": None, "n": None,
            "input": failed.to_json() if failed else None, "destination": None, "record": None}


def _dry_run(plan: Plan, settings: Settings) -> dict[str, Any]:
    return {"job": plan.record.name, "status": "dry_run", "batch": None, "n": plan.n, "input": plan.failed.to_json(),
            "destination": plan.destination, "record": None, "requests": plan.requests(settings),
            "lookup": plan.lookup(settings), "track": plan.tracking()}

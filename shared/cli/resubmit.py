"""``batch-relay resubmit NAME [--again] [--dry-run] [--json]``: runs a ``Resubmitter`` (``batch_relay.resubmits``)
with the CLI's settings and prints what happened — as lines (every API or record string through ``safe``) or,
with ``--json``, the result as one JSON document."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..settings import Settings
from .views import human_bytes, safe

if TYPE_CHECKING:  # pragma: no cover
    from ..record.client import FirestoreClient
    from ..record.store import JobStore


def resubmit_command(db: FirestoreClient, store: JobStore, settings: Settings, name: str, *, again: bool,
                     dry_run: bool, as_json: bool) -> int:
    from .. import wiring
    from ..batchapi.endpoints import MissingApiKey

    async def run() -> dict[str, Any]:
        async with wiring.resubmitter(settings, db, store=store) as resubmitter:
            return await resubmitter.resubmit(name, again=again, dry_run=dry_run)

    try:
        result = asyncio.run(run())
    except MissingApiKey as exc:  # a setting the person has to give
        raise UsageError(str(exc)) from None
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        for line in lines(result):
            print(safe(line))
    return 0


def _input(result: dict[str, Any]) -> str:
    failed = result.get("input") or {}
    return f"{failed.get('requests')} requests, {human_bytes(int(failed.get('bytes') or 0))} in {failed.get('uri')}"


def lines(result: dict[str, Any]) -> list[str]:
    """What ``resubmit`` prints for a result (unescaped: the caller escapes each line)."""
    job, batch, status = result["job"], result.get("batch"), result["status"]
    if status == "nothing":
        where = f" ({(result.get('input') or {}).get('uri')} is empty)" if result.get("input") else ""
        return [f"nothing to resubmit: {job} has no failed requests{where}"]
    if status == "dry_run":
        out = ["dry run: nothing is sent and nothing is written",
               f"retry {result['n']} of {job}: {_input(result)}"]
        for request in result.get("requests") or []:
            body = request.get("body")
            out.append(f"  {request['method']} {request['url']}")
            out.append(f"    {body if isinstance(body, str) else json.dumps(body)}")
        track = result.get("track") or {}
        out.append(f"then tracked with parent {job}, destination {track.get('destination') or '(the default)'}, "
                   f"labels {json.dumps(track.get('labels') or {})}")
        return out
    destination = result.get("destination") or "(the default)"
    if status == "created":
        return [f"resubmitted {job} as {batch} (retry {result['n']}: {_input(result)})",
                f"tracking {batch}: parent {job}, destination {destination}"]
    if result.get("n") is not None:  # found: made by a resubmit that was interrupted
        return [f"found {batch}, made by an interrupted resubmit of {job} (retry {result['n']}); nothing sent",
                f"tracking {batch}: parent {job}, destination {destination}"]
    return [f"{job} was resubmitted before, as {batch}: nothing sent (--again makes another batch)"]

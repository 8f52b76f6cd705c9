"""``batch-relay`` command line (contract A7). ``views`` formats records; ``live`` holds the commands that
follow the store's listeners (``wait``, ``list --follow``); ``resubmit``, the command of that name.

Exit codes: 0 done; 1 could not run (e.g. Firestore unreachable); 2 bad usage or input, one clear
line on stderr and nothing written. ``--json`` prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shlex
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from ..batchapi import states
from ..batchapi.names import JobName
from ..errors import UsageError
from ..record.model import JobRecord, to_json_value
from ..record.store import JobStore
from ..settings import Settings
from .views import safe

if TYPE_CHECKING:  # pragma: no cover
    from ..batchapi.webhook_admin import WebhookAdmin
    from ..record.client import FirestoreClient


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one clear line, exit 2
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        raise UsageError(f"{self.prog}: {message}")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 366 * 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: the timeout must be positive (seconds)")
    return value


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"label {text!r} must look like KEY=VALUE")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="batch-relay", description="Relay Gemini API / Vertex AI batch job status to Pub/Sub.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("track", help="start tracking a job (does not call the batch API)")
    p.add_argument("name")
    p.add_argument("--destination", help="gs://bucket/prefix the outputs are copied to")
    p.add_argument("--label", action="append", type=_label, default=[], metavar="K=V")
    p = sub.add_parser("untrack", help="remove a job's record and its transitions")
    p.add_argument("name")
    sub.add_parser("poll", help="run one tick in-process and print its summary")
    p = sub.add_parser("list", help="list tracked jobs")
    p.add_argument("--state", help="SUCCEEDED, JOB_STATE_SUCCEEDED or BATCH_STATE_SUCCEEDED")
    p.add_argument("--json", action="store_true")
    p.add_argument("--follow", action="store_true", help="a live view of the unfinished jobs, redrawn as the records "
                   "change (Ctrl-C ends)")
    p.add_argument("--all", action="store_true", help="with --follow: every job, finished ones too (the listener "
                   "reads every record each time it attaches)")
    p = sub.add_parser("wait", help="return once a job is done (a Firestore listener: no batch-API call)")
    p.add_argument("name")
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS", help="give up after this long (exit 4)")
    p.add_argument("--outputs", action="store_true", help="also wait for its outputs' copy")
    p.add_argument("--json", action="store_true", help="print the final record as one JSON document")
    p = sub.add_parser("show", help="show one job's record")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("republish", help="re-send a job's unpublished events")
    p.add_argument("name")
    p = sub.add_parser("recopy", help="re-run a failed or stuck copy as a new attempt")
    p.add_argument("name")
    p = sub.add_parser("resubmit", help="a new batch from a job's failed requests (failed.jsonl), tracked with parent")
    p.add_argument("name")
    p.add_argument("--again", action="store_true", help="make another batch even if one was made before")
    p.add_argument("--dry-run", action="store_true", help="print what would be sent; send and write nothing")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("webhook", help="the project's static Gemini API webhooks for batch events")
    hooks = p.add_subparsers(dest="webhook_command", required=True, parser_class=_Parser)
    p = hooks.add_parser("register", help="register URL (the on_gemini_webhook function) for the batch events")
    p.add_argument("url")
    p.add_argument("--name", help="a name for it (the API's own id is printed)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--secret", metavar="projects/P/secrets/S",
                       help="store the signing secret as a new version of this Secret Manager secret (Application "
                            "Default Credentials); it is not shown")
    where.add_argument("--secret-file", metavar="PATH",
                       help="write the signing secret to this new file (mode 0600; an existing file is refused)")
    p.add_argument("--secret-id", default="batch-relay-webhook-secrets", metavar="SECRET",
                   help="the Secret Manager secret the instructions name (without --secret)")
    p.add_argument("--json", action="store_true")
    p = hooks.add_parser("unregister", help="remove a webhook by its id")
    p.add_argument("id")
    p = hooks.add_parser("list", help="list the project's webhooks")
    p.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None, *, env: dict[str, str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "name", None) is not None:
            args.name = JobName.parse(args.name).name
        if getattr(args, "state", None):
            args.state = states.parse_user_state(args.state)
        if args.command == "track":  # refuse bad options before anything is contacted
            from ..record.store import check_track_options

            check_track_options(args.destination, dict(args.label))
        if args.command == "webhook":
            from ..batchapi import webhook_admin

            if args.webhook_command == "register":
                from ..secret_versions import check_secret

                webhook_admin.check_url(args.url)
                if args.secret:
                    check_secret(args.secret)
            elif args.webhook_command == "unregister":
                args.id = webhook_admin.check_id(args.id)
        settings = Settings.from_env(env)
    except UsageError as exc:
        print(f"error: {safe(exc)}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    try:
        return _run(args, settings)
    except UsageError as exc:
        print(f"error: {safe(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - anything else means the command could not run
        print(f"error: could not run: {type(exc).__name__}: {safe(str(exc)[:300])}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from .. import wiring
    from ..log import configure

    configure(stream="stderr")
    if args.command == "webhook":  # the Gemini API only: no Firestore needed
        return _webhook(args, settings)
    db = wiring.make_firestore(settings)
    store = JobStore(db, settings)
    _probe(store)
    command = args.command
    if command == "track":
        record, created = store.track(args.name, destination=args.destination, labels=dict(args.label))
        print(f"{'tracking' if created else 'already tracked, updated'} {record.name} ({record.api})")
    elif command == "untrack":
        existed = store.untrack(args.name)
        print(f"untracked {args.name}" if existed else f"{args.name} was not tracked")
    elif command == "poll":
        print(json.dumps(wiring.poll_once(settings, db, wiring.make_publisher(settings))))
    elif command == "list" and args.follow:
        from .live import follow_command

        return follow_command(db, settings, state=args.state, finished=args.all)
    elif command == "wait":
        from .live import wait_command

        try:
            return wait_command(db, settings, args.name, timeout=args.timeout, outputs=args.outputs,
                                as_json=args.json)
        except LookupError as exc:
            raise UsageError(str(exc)) from None
    elif command == "list":
        rows = sorted((r.public() for r in store.records(args.state)), key=lambda r: r["name"])
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            _print_table(rows)
    elif command == "show":
        shown = store.load(args.name)
        if shown is None:
            raise UsageError(f"{args.name} is not tracked")
        view = _show(shown)
        print(json.dumps(view, indent=2) if args.json else _format_show(view))
    elif command == "republish":
        return _republish(args.name, settings, store)
    elif command == "resubmit":
        from .resubmit import resubmit_command

        return resubmit_command(db, store, settings, args.name, again=args.again, dry_run=args.dry_run,
                                as_json=args.json)
    elif command == "recopy":
        result = _recopy(args.name, settings, db, store)
        print(json.dumps(result))
        return 0 if result.get("status") in ("done", "not_applicable") else 1
    return 0


def _probe(store: JobStore, deadline_s: float = 10.0) -> None:
    """One bounded read, so an unreachable Firestore ends the command (exit 1) within seconds rather
    than after the client library's long default retries."""
    try:
        store.probe(deadline_s)
    except Exception as exc:  # noqa: BLE001 - any failure here means we cannot run
        raise RuntimeError(f"Firestore is unreachable ({type(exc).__name__}: {str(exc)[:200]})") from None


def _recopy(name: str, settings: Settings, db: FirestoreClient, store: JobStore) -> dict[str, Any]:
    """A new attempt of a failed or stuck copy, run here by a reactor with the CLI's settings."""
    from .. import wiring

    async def run() -> dict[str, Any]:
        async with wiring.reactor(settings, db, wiring.make_publisher(settings), store=store) as reactor:
            return await reactor.recopy(name)

    return asyncio.run(run())


def _republish(name: str, settings: Settings, store: JobStore) -> int:
    from .. import wiring
    from ..events.outbox import Outbox

    if store.load(name) is None:
        raise UsageError(f"{name} is not tracked")
    publisher = wiring.event_publisher(settings, wiring.make_publisher(settings))
    result = asyncio.run(Outbox(store, publisher).flush_name(name, force=True))
    sent, left = result or (0, 0)
    print(json.dumps({"job": name, "published": sent, "unpublished": left}))
    return 0 if left == 0 else 1


# runs one call of the webhook client (built and closed around it)
_Runner = Callable[[Callable[["WebhookAdmin"], Awaitable[Any]]], Coroutine[Any, Any, Any]]


def _webhook(args: argparse.Namespace, settings: Settings) -> int:
    from .. import wiring
    from ..batchapi.endpoints import MissingApiKey
    from ..errors import NotFoundError, PermanentError

    async def run(call: Callable[[WebhookAdmin], Awaitable[Any]]) -> Any:
        async with wiring.webhook_admin(settings) as admin:
            return await call(admin)

    command = args.webhook_command
    try:
        if command == "register":
            return _register(args, settings, run)
        if command == "unregister":
            asyncio.run(run(lambda admin: admin.unregister(args.id)))
            print(f"unregistered webhook {args.id}")
        else:
            hooks = asyncio.run(run(lambda admin: admin.list()))
            if args.json:
                print(json.dumps(hooks, indent=2))
            else:
                from .views import webhook_table

                for line in webhook_table(hooks):
                    print(line)
    except MissingApiKey as exc:  # a setting the person has to give
        raise UsageError(str(exc)) from None
    except NotFoundError:
        raise UsageError(f"no webhook {getattr(args, 'id', '')!r}") from None
    except PermanentError as exc:
        if exc.kind == "bad_request":
            raise UsageError(f"the Gemini API refused it: {exc}") from None
        raise
    return 0


def _register(args: argparse.Namespace, settings: Settings, run: _Runner) -> int:
    """Register the webhook; its signing secret goes to a new Secret Manager version (``--secret``), to a
    new file of mode 0600 (``--secret-file``), or to the terminal once — never into a shell command."""
    from ..batchapi.webhook_admin import BATCH_EVENTS

    fd = _new_secret_file(args.secret_file) if args.secret_file else None  # refused before registering
    try:
        created: dict[str, Any] = dict(asyncio.run(run(lambda admin: admin.register(args.url, name=args.name))))
    except BaseException:
        if fd is not None:
            os.close(fd)
            os.unlink(args.secret_file)
        raise
    secret: str = created.pop("new_signing_secret")
    hook_id = str(created.get("id") or created.get("name"))
    stored = ""
    if fd is not None:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secret)  # no newline: the file is what `gcloud secrets versions add --data-file` stores
        created["signing_secret_file"] = stored = args.secret_file
    elif args.secret:
        try:
            created["signing_secret_version"] = stored = asyncio.run(_add_secret_version(settings, args.secret,
                                                                                       secret))
        except Exception as exc:  # noqa: BLE001 - the secret is lost: the webhook is of no use, take it back
            return _register_failed(hook_id, args.secret, exc, run)
    if args.json:
        print(json.dumps(created if stored else {**created, "new_signing_secret": secret}, indent=2))
        return 0
    print(f"registered webhook {safe(hook_id)} -> {safe(args.url)}")
    print(f"  for {safe(', '.join(created.get('subscribed_events') or BATCH_EVENTS))}")
    if args.secret:
        version = stored.rsplit("/", 1)[-1]
        print(f"\nsigning secret stored as {safe(stored)} (not shown)")
        print(f"next: pin it (Terraform: webhooks.signing_secrets.version = \"{safe(version)}\") and terraform apply; "
              "see docs/webhooks.md, \"Rotate a secret\"")
    elif args.secret_file:
        print(f"\nsigning secret written to {args.secret_file} (mode 0600, not shown)")
        print(f"next: store it as a new version of the secret on_gemini_webhook reads ({args.secret_id}):")
        print(f"  gcloud secrets versions add {args.secret_id} --data-file={shlex.quote(args.secret_file)}")
        print("  then delete the file, pin the new version (webhooks.signing_secrets.version) and terraform apply")
    else:
        print("\nsigning secret, shown this once: store it now")
        print(f"  {secret}")
        print(f"\nput it in a new version of the Secret Manager secret {args.secret_id}, which on_gemini_webhook "
              "reads as RELAY_GEMINI_WEBHOOK_SECRETS (Terraform: webhooks.signing_secrets): paste it into "
              f"`gcloud secrets versions add {args.secret_id} --data-file=-` (then Ctrl-D), never into a "
              "command line; then pin that version and terraform apply.")
        print("  (to keep an older secret valid while deliveries move over, store both: 'NEW,OLD')")
        print("  next time, --secret projects/P/secrets/S stores it for you, --secret-file PATH writes it to a file")
    return 0


def _new_secret_file(path: str) -> int:
    """A new file for the signing secret, readable by its owner only; an existing path (a symlink too) is
    refused, before anything is registered."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path}: the file exists; refusing to overwrite it (give a new path)") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot create the secret file ({exc.strerror})") from None


async def _add_secret_version(settings: Settings, secret: str, value: str) -> str:
    from .. import wiring

    async with wiring.secret_versions(settings) as versions:
        return await versions.add(secret, value.encode("utf-8"))


def _register_failed(hook_id: str, secret: str, exc: Exception, run: _Runner) -> int:
    """The secret could not be stored: unregister the webhook (nobody could verify its deliveries)."""
    print(f"error: could not store the signing secret in {secret}: {safe(exc)}", file=sys.stderr)
    try:
        asyncio.run(run(lambda admin: admin.unregister(hook_id)))
    except Exception as undo:  # noqa: BLE001 - say what is left behind
        print(f"error: and the webhook {safe(hook_id)} could not be unregistered ({safe(undo)}): remove it with "
              f"`batch-relay webhook unregister {safe(hook_id)}`", file=sys.stderr)
    else:
        print(f"the webhook {safe(hook_id)} was unregistered again; nothing is left behind", file=sys.stderr)
    return 1


def _show(record: JobRecord) -> dict[str, Any]:
    view = record.public()
    start, end = record.start_time or record.create_time, record.end_time
    if start and end:
        view["duration_s"] = round((end - start).total_seconds(), 3)
    elif start:
        view["duration_s"] = round((dt.datetime.now(dt.UTC) - start).total_seconds(), 3)
    else:
        view["duration_s"] = None
    return view


def _format_show(view: dict[str, Any]) -> str:
    from .views import results_lines

    lines = []
    for key, value in view.items():
        if key == "results":
            lines.extend(results_lines(value) or [f"{key:17} -"])
        elif isinstance(value, dict):
            inner = ", ".join(f"{k}={json.dumps(to_json_value(v))}" for k, v in value.items()) or "-"
            lines.append(f"{key:17} {inner}")
        else:
            lines.append(f"{key:17} {'-' if value is None else safe(value)}")
    return "\n".join(lines)


def _print_table(rows: list[dict[str, Any]]) -> None:
    from .views import plain_table

    for line in plain_table(rows):
        print(line)
    print(f"{len(rows)} job(s)")

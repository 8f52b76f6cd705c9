"""How a job record looks on a terminal: the cells of ``list``, ``list --follow``, ``wait`` and the
demo's live view, as plain text, and — when the optional ``rich`` library is installed
(``pip install 'batch-relay[cli]'``) — as a table with progress bars. Without ``rich``, every view
falls back to plain lines. Records are public records (``JobRecord.public()``: JSON values).

Every string an API or a record supplies (a display name, an error message, a URI) goes through
``safe`` before it reaches a terminal: control characters (C0, ESC, DEL, C1) and other unprintable
ones (bidirectional overrides, line separators) become visible escapes, so a job's error message
cannot move the cursor, recolour the screen or hide text. ``--json`` output is JSON (already escaped).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..batchapi.states import SUCCESS, JobState

if TYPE_CHECKING:  # pragma: no cover - rich is optional (the cli extra)
    from rich.table import Table

STATE_STYLES: dict[str, str] = {
    JobState.SUCCEEDED: "green", JobState.PARTIALLY_SUCCEEDED: "yellow", JobState.FAILED: "red",
    JobState.CANCELLED: "magenta", JobState.CANCELLING: "magenta", JobState.EXPIRED: "red", JobState.RUNNING: "cyan",
    JobState.PAUSED: "yellow",
}


def safe(text: object) -> str:
    """``text`` fit for a terminal: every unprintable character (``str.isprintable``: C0 and C1 controls,
    ESC, DEL, format characters such as U+202E, line and paragraph separators) as its Python escape
    (``\\x1b``, ``\\n``, ``\\u202e``); printable text, non-ASCII letters included, unchanged."""
    value = text if isinstance(text, str) else str(text)
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in value)


def have_rich() -> bool:
    return importlib.util.find_spec("rich") is not None


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def short_state(record: dict[str, Any]) -> str:
    return (record.get("state") or JobState.UNSPECIFIED).removeprefix("JOB_STATE_")


def counts(record: dict[str, Any]) -> tuple[int, int | None] | None:
    """(processed, total) of the job's requests, total None when unknown; None without counts."""
    stats = record.get("completion_stats")
    if not stats:
        return None
    done = int(stats.get("successful") or 0) + int(stats.get("failed") or 0)
    left = stats.get("incomplete")
    return done, (None if left is None else done + int(left))


def counts_cell(record: dict[str, Any]) -> str:
    stats = record.get("completion_stats")
    if not stats:
        return "-"
    left = stats.get("incomplete")
    return f"{stats.get('successful')}/{stats.get('failed')}/{'?' if left is None else left}"


def copy_cell(record: dict[str, Any]) -> str:
    copy = record.get("copy") or {}
    status = copy.get("status") or "-"
    ended_otherwise = record.get("terminal") and record.get("state") not in SUCCESS
    if ended_otherwise and status == "pending":
        return "- (no outputs)"
    if status == "done":
        partial = " (partial)" if ended_otherwise else ""
        return f"done{partial} {copy.get('objects')} obj {human_bytes(int(copy.get('bytes') or 0))}"
    if status == "not_applicable":
        return "n/a (BigQuery)" if "bigquery_uri" in (record.get("output") or {}) else "n/a (no outputs)"
    if status == "failed":
        return f"FAILED {(copy.get('error') or {}).get('kind')}"
    return status


def note_cell(record: dict[str, Any]) -> str:
    if error := record.get("last_poll_error"):
        return f"poll error ({error.get('kind')}), next tick retries: {error.get('message')}"
    if error := record.get("error"):
        return f"job error {error.get('code')}: {error.get('message')}"
    if record.get("stalled_at") and not record.get("terminal"):
        return f"stalled since {record.get('changed_at')}"
    copy = record.get("copy") or {}
    if copy.get("status") == "done":
        return f"-> {copy.get('uri')}/"
    output = record.get("output") or {}
    if "bigquery_uri" in output:
        return f"output {output['bigquery_uri']}"
    return ""


def line(record: dict[str, Any], label: Callable[[str], str] = str) -> str:
    """One plain line: what ``list --follow`` and ``wait`` print per change when not drawing."""
    note = note_cell(record)
    return safe(f"{label(record.get('name', '?'))}  {short_state(record)}  v{record.get('version', 0)}  "
                f"{counts_cell(record)}  copy {copy_cell(record)}" + (f"  {note}" if note else ""))


COLUMNS = ("JOB", "API", "STATE", "VER", "OK/FAIL/LEFT", "COPY", "NOTE")


def rows(records: Iterable[dict[str, Any]], label: Callable[[str], str] = str) -> list[tuple[str, ...]]:
    return [tuple(safe(cell) for cell in (label(r.get("name", "?")), r.get("api") or "-", short_state(r),
                                          str(r.get("version", 0)), counts_cell(r), copy_cell(r), note_cell(r)))
            for r in records]


def plain_table(records: Iterable[dict[str, Any]], label: Callable[[str], str] = str) -> list[str]:
    table = [COLUMNS, *rows(records, label)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)), row[-1]]).rstrip()
            for row in table]


def rich_table(records: Iterable[dict[str, Any]], *, label: Callable[[str], str] = str, title: str | None = None,
               bar_width: int = 16) -> Table:
    """The job table with the counts as progress bars (``rich`` must be installed)."""
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", expand=False, pad_edge=False, box=None, header_style="bold")
    for name in ("JOB", "API", "STATE", "VER"):
        table.add_column(name, no_wrap=True)
    table.add_column("PROGRESS", no_wrap=True)
    table.add_column("OK/FAIL/LEFT", no_wrap=True)
    table.add_column("COPY", no_wrap=True)
    table.add_column("NOTE", overflow="ellipsis", no_wrap=True)
    for record in records:
        progress = counts(record)
        if progress is None:
            bar: Any = Text("-", style="dim")
        elif progress[1] is None or progress[1] == 0:
            bar = ProgressBar(total=None, width=bar_width, pulse=not record.get("terminal"))
        else:
            bar = ProgressBar(total=progress[1], completed=progress[0], width=bar_width)
        # Text, never str: a plain string cell would be read as rich markup ("[link=…]" in a display name)
        table.add_row(Text(safe(label(record.get("name", "?")))), Text(safe(record.get("api") or "-")),
                      Text(safe(short_state(record)), style=STATE_STYLES.get(record.get("state") or "", "")),
                      Text(str(record.get("version", 0))),
                      bar, Text(safe(counts_cell(record))), Text(safe(copy_cell(record))),
                      Text(safe(note_cell(record)), style="dim"))
    return table


# -- what a job's outputs hold (``batch-relay show``) -----------------------------------------------------------

def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "?"


def results_lines(results: dict[str, Any] | None) -> list[str]:
    """The record's ``results`` (A10) as a few readable lines (no lines when it has none)."""
    if not results:
        return []
    head = (f"{_n(results.get('requests'))} requests: {_n(results.get('succeeded'))} succeeded, "
            f"{_n(results.get('failed'))} failed, {_n(results.get('missing'))} missing")
    extra = [f"{_n(results.get(key))} {key}" for key in ("unfinished", "unparsed") if results.get(key)]
    out = [("results", head + (f" ({', '.join(extra)})" if extra else ""))]
    if errors := results.get("errors"):
        out.append(("  errors", ", ".join(f"{code} x{_n(n)}" for code, n in errors.items())))
    if reason := results.get("missing_reason"):
        out.append(("  missing", str(reason)))
    usage = results.get("usage")
    if isinstance(usage, dict):
        tokens = (f"{_n(usage.get('total_tokens'))} total: {_n(usage.get('prompt_tokens'))} prompt "
                  f"({_n(usage.get('cached_tokens'))} cached), {_n(usage.get('candidates_tokens'))} output, "
                  f"{_n(usage.get('thoughts_tokens'))} thinking")
        if usage.get("rows_without_usage"):
            tokens += f"; {_n(usage['rows_without_usage'])} results without usage"
        out.append(("  tokens", tokens))
    else:
        out.append(("  tokens", "- (not read: the outputs are in BigQuery, or there are none)"))
    cost = results.get("cost")
    if isinstance(cost, dict):
        amount = cost.get("amount")
        shown = f"{amount:.6f}" if isinstance(amount, int | float) else "?"
        out.append(("  cost", f"{shown} {cost.get('currency')} at list batch prices "
                              f"({cost.get('model')}, price table {cost.get('prices')}): an estimate"))
    else:
        out.append(("  cost", "- (no usage, or a model the price table does not know)"))
    out.append(("  failed_uri", str(results.get("failed_uri") or "-")))
    return [safe(f"{key:17} {value}") for key, value in out]


# -- the project's Gemini API webhooks (``batch-relay webhook list``) -------------------------------------------

WEBHOOK_COLUMNS = ("ID", "STATE", "URI", "EVENTS")
WEBHOOK_STATES = {"enabled": "enabled", "disabled": "DISABLED",
                  "disabled_due_to_failed_deliveries": "DISABLED (failed deliveries)"}


def webhook_table(hooks: Iterable[dict[str, Any]]) -> list[str]:
    """The webhooks as plain lines, their state first among the facts (a webhook the Gemini API disabled
    after a day of failed deliveries gets nothing more), and a closing count of the ones not enabled."""
    hooks = list(hooks)
    table = [WEBHOOK_COLUMNS]
    for hook in hooks:
        state = str(hook.get("state") or "-")
        events = ",".join(str(e) for e in hook.get("subscribed_events") or [])
        table.append((safe(hook.get("id") or hook.get("name") or "?"), safe(WEBHOOK_STATES.get(state, state)),
                      safe(hook.get("uri") or "-"), safe(events)))
    widths = [max(len(row[i]) for row in table) for i in range(len(WEBHOOK_COLUMNS) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)), row[-1]]).rstrip()
             for row in table]
    off = sum(1 for hook in hooks if hook.get("state") not in (None, "enabled"))
    lines.append(f"{len(hooks)} webhook(s)" + (f", {off} not enabled: deliveries to it stopped (docs/webhooks.md, "
                                                "\"Webhook health\")" if off else ""))
    return lines

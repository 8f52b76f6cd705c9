"""The live commands: ``wait`` (one record) and ``list --follow`` (every record), both on the store's
listeners. On a terminal with ``rich`` installed they draw (a progress bar; a live table); otherwise
they print one plain line per change."""

from __future__ import annotations

import datetime as dt
import queue
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

from ..batchapi.states import JobState
from ..record.model import JobRecord
from ..record.store import JobStore
from ..settings import Settings
from ..waiting import succeeded, watch_record
from . import views

if TYPE_CHECKING:  # pragma: no cover
    from ..record.client import FirestoreClient


def drawing(out: TextIO) -> bool:
    return views.have_rich() and out.isatty()


# -- wait -------------------------------------------------------------------------------------------------------

class _WaitView:
    """What ``wait`` shows as the record changes: a progress bar of the counts with the state, the
    elapsed time and the rate (drawing), or one plain line per change."""

    def __init__(self, name: str, out: TextIO) -> None:
        self._out = out
        self._started = time.monotonic()
        self._last = ""
        self._first: tuple[float, int] | None = None  # (time, processed) of the first counts seen
        self._progress = self._task = None
        if drawing(out):
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn(f"{name}  [bold]{{task.fields[state]}}[/] v{{task.fields[version]}}"),
                                      BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                                      TimeElapsedColumn(), TextColumn("[dim]{task.fields[note]}"),
                                      console=Console(file=out), transient=False)
            self._task = self._progress.add_task("wait", total=None, state="…", version=0, rate="", note="")
            self._progress.start()

    def change(self, record: JobRecord) -> None:
        public = record.public()
        progress = views.counts(public)
        rate = ""
        if progress is not None:
            now = time.monotonic()
            if self._first is None:
                self._first = (now, progress[0])
            elif now > self._first[0] and progress[0] > self._first[1]:
                rate = f"{(progress[0] - self._first[1]) / (now - self._first[0]):.1f}/s"
        if self._progress is not None and self._task is not None:
            total = progress[1] if progress else None
            from rich.markup import escape  # the columns are markup: an API's text must not be read as it

            self._progress.update(self._task, total=total, completed=progress[0] if progress else 0,
                                  state=escape(views.safe(views.short_state(public))), version=record.version,
                                  rate=rate, note=escape(views.safe(views.note_cell(public))[:60]))
            return
        text = views.line(public)
        if text != self._last:
            self._last = text
            elapsed = time.monotonic() - self._started
            print(f"{elapsed:7.1f}s  {text}" + (f"  {rate}" if rate else ""), file=self._out, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def wait_command(db: FirestoreClient, settings: Settings, name: str, *, timeout: float | None, outputs: bool,
                 as_json: bool, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """0: SUCCEEDED / PARTIALLY_SUCCEEDED (copied, with ``outputs``); 3: ended otherwise; 4: timeout;
    2: not tracked (raised as ``LookupError`` for the caller)."""
    import json

    view = _WaitView(name, err if as_json else out)
    try:
        record = watch_record(db, settings, name, timeout=timeout, outputs=outputs, on_change=view.change)
    except TimeoutError as exc:
        view.close()
        print(f"timeout: {exc}", file=err)
        return 4
    except BaseException:
        view.close()
        raise
    view.close()
    if as_json:
        print(json.dumps(record.public(), indent=2), file=out)
    return 0 if succeeded(record, outputs) else 3


# -- list --follow ----------------------------------------------------------------------------------------------

def follow_command(db: FirestoreClient, settings: Settings, *, state: JobState | None = None, finished: bool = False,
                   out: TextIO = sys.stdout, stop: threading.Event | None = None) -> int:
    """A live view of the unfinished jobs (``finished``: of every job; ``state``: of the jobs in it) until
    Ctrl-C (or ``stop``): a redrawn table, or one line per change. A job that finishes meanwhile is read
    once and shown in its final state."""
    records: dict[str, dict[str, Any]] = {}
    stop = stop or threading.Event()
    store = JobStore(db, settings)
    feed = store.listen_records(state, finished=finished)
    only_unfinished = not state and not finished
    live = None
    try:
        if drawing(out):
            from rich.console import Console
            from rich.live import Live

            console = Console(file=out)
            live = Live(views.rich_table([], title="batch-relay: no jobs yet"), console=console,
                        refresh_per_second=4, transient=False)
            live.start()
        while not stop.is_set():
            try:
                batch = [(kind, typed.public()) for kind, typed in feed.get(timeout=1.0)]
            except queue.Empty:  # (the listener is checked meanwhile)
                continue
            for kind, record in batch:
                if kind == "REMOVED" and only_unfinished:  # finished (one read shows how), or untracked
                    final = store.load(record["name"])
                    if final is not None:
                        kind, record = "FINISHED", final.public()
                if kind == "REMOVED":
                    records.pop(record["name"], None)
                else:
                    records[record["name"]] = record
                if live is None:
                    stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
                    print(f"{stamp}  {'untracked' if kind == 'REMOVED' else kind.lower():8}  {views.line(record)}",
                          file=out, flush=True)
            if live is not None:
                rows = sorted(records.values(), key=lambda r: r["name"])
                done = sum(1 for r in rows if r.get("terminal"))
                live.update(views.rich_table(rows, title=f"batch-relay: {len(rows)} job(s), {done} finished "
                                                         "(Ctrl-C to stop)"))
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
        feed.close()
    return 0

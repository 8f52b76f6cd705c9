"""Waiting without polling (A7 ``wait``, ``from batch_relay import wait``, ``list --follow``) on the real
emulators: ticks move simulated jobs while a Firestore listener waits."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from functions_framework import create_app

from batch_relay import wait
from devtools.simulator import gemini_spec, vertex_spec
from devtools.tcpproxy import TcpProxy
from tests.helpers import deliver

ROOT = Path(__file__).resolve().parent.parent
MAIN = "functions/main.py"


def start_wait(function_env, *args, firestore_host: str | None = None) -> subprocess.Popen:
    env = {**os.environ, **function_env}
    if firestore_host:
        env["FIRESTORE_EMULATOR_HOST"] = firestore_host
    return subprocess.Popen([sys.executable, "-m", "batch_relay.cli", "wait", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def tick_until(relay, proc: subprocess.Popen, limit: int = 20, pause: float = 0.3) -> None:
    for _ in range(limit):
        if proc.poll() is not None:
            return
        relay.tick()
        time.sleep(pause)


def finish(proc: subprocess.Popen, timeout: float = 30) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


class ErrLines:
    """A waiting process's stderr, read line by line as it comes (its view writes a line per change there,
    with ``--json``): the test can tell when the listener's first snapshot arrived, however slowly the
    process started, instead of sleeping for it."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.lines, self._new = proc, [], threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self._new:
                self.lines.append(line)
                self._new.notify_all()

    def wait_for(self, text: str, timeout: float = 60) -> None:
        with self._new:
            assert self._new.wait_for(lambda: any(text in line for line in self.lines), timeout), \
                f"no line with {text!r} from the waiting process: {self.lines}"

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        self.proc.wait(timeout=timeout)  # its stdout is one JSON record: far below a pipe's buffer
        out = self.proc.stdout.read()
        self._thread.join(timeout)
        return self.proc.returncode, out, "".join(self.lines)


def test_wait_returns_0_on_success_as_ticks_move_the_job(relay, simulator, function_env):
    simulator.add_job(gemini_spec("w-ok", ["PENDING", {"state": "RUNNING", "stats": {"successful": 1, "failed": 0,
                                                                                   "incomplete": 3}},
                                           {"state": "RUNNING", "stats": {"successful": 3, "failed": 0,
                                                                          "incomplete": 1}}, "SUCCEEDED"]))
    relay.store.track("batches/w-ok")
    proc = start_wait(function_env, "batches/w-ok", "--json")
    err_lines = ErrLines(proc)
    err_lines.wait_for("batches/w-ok")  # the listener's first snapshot: listening before anything changes
    tick_until(relay, proc)
    code, out, err = err_lines.finish()
    assert code == 0, err
    record = json.loads(out)
    assert record["state"] == "JOB_STATE_SUCCEEDED" and record["version"] == 3 and "shard" not in record
    lines = [line for line in err.splitlines() if "batches/w-ok" in line]  # not a terminal: a line per change
    assert any("PENDING" in line for line in lines) and any("3/0/1" in line for line in lines)
    assert simulator.stats()["per_job_gets"]["batches/w-ok"] == relay.store.load("batches/w-ok").version + 1


def test_wait_returns_3_when_the_job_ends_otherwise(relay, simulator, function_env):
    simulator.add_job(vertex_spec("p1", "us-central1", "w-bad", ["RUNNING", "FAILED"]))
    name = "projects/p1/locations/us-central1/batchPredictionJobs/w-bad"
    relay.store.track(name)
    proc = start_wait(function_env, name)
    time.sleep(1.0)
    tick_until(relay, proc)
    code, out, _ = finish(proc)
    assert code == 3 and "FAILED" in out


def test_wait_outputs_waits_for_the_reactors_copy(relay, simulator, gcs, function_env):
    src, dst = gcs.bucket("wsrc"), gcs.bucket("wdst")
    gcs.put(src, "run/prediction-w/predictions.jsonl", b"ok\n")
    name = "projects/p1/locations/us-central1/batchPredictionJobs/w-out"
    simulator.add_job(vertex_spec("p1", "us-central1", "w-out", ["RUNNING", "SUCCEEDED"],
                                  output={"kind": "gcs", "uri": f"gs://{src}/run/prediction-w"}))
    relay.store.track(name, destination=f"gs://{dst}/w")
    proc = start_wait(function_env, name, "--outputs", "--json")
    time.sleep(1.0)
    relay.tick()
    relay.tick()
    assert relay.store.load(name).state == "JOB_STATE_SUCCEEDED"
    time.sleep(1.5)
    assert proc.poll() is None  # succeeded, but the copy has not run
    reactor = create_app(target="on_job_event", source=MAIN, signature_type="cloudevent").test_client()
    [success] = [m for m in relay.drain() if m["attributes"]["state"] == "JOB_STATE_SUCCEEDED"]
    assert deliver(reactor, success).status_code == 200
    code, out, err = finish(proc)
    assert code == 0, err
    assert json.loads(out)["copy"]["status"] == "done"


def test_wait_timeout_is_4_and_untracked_is_2_with_nothing_written(relay, simulator, function_env):
    simulator.add_job(gemini_spec("w-slow", ["RUNNING"]))
    relay.store.track("batches/w-slow")
    relay.tick()
    started = time.monotonic()
    code, _, err = finish(start_wait(function_env, "batches/w-slow", "--timeout", "1.5"))
    assert code == 4 and "not done after 1.5s" in err and time.monotonic() - started < 20
    code, _, err = finish(start_wait(function_env, "batches/nobody"))
    assert code == 2 and "not tracked" in err and err.count("\n") == 1
    assert relay.store.load("batches/nobody") is None and relay.store.load("batches/w-slow").version == 1
    code, _, err = finish(start_wait(function_env, "batches/w-slow", "--timeout", "-1"))
    assert code == 2 and err.startswith("error:")


def test_a_finished_job_returns_at_once(relay, simulator, function_env):
    simulator.add_job(gemini_spec("w-done", ["SUCCEEDED"]))
    relay.store.track("batches/w-done")
    relay.tick()
    started = time.monotonic()
    assert finish(start_wait(function_env, "batches/w-done"))[0] == 0
    assert time.monotonic() - started < 20


def test_the_listener_survives_a_dropped_connection(relay, simulator, function_env, firestore_emulator):
    simulator.add_job(gemini_spec("w-drop", ["RUNNING", "SUCCEEDED"]))
    relay.store.track("batches/w-drop")
    relay.tick()
    proxy = TcpProxy(firestore_emulator.host).start()
    try:
        proc = start_wait(function_env, "batches/w-drop", firestore_host=proxy.host)
        deadline = time.monotonic() + 20
        while proxy.connections == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        proxy.refuse(True)  # first: no reconnection can slip in between the cut and the refusal
        assert proxy.cut() >= 1  # every connection of the waiting process dropped
        relay.tick()  # the job ends while the waiter cannot reach Firestore
        assert relay.store.load("batches/w-drop").state == "JOB_STATE_SUCCEEDED"
        time.sleep(2.0)
        assert proc.poll() is None
        proxy.refuse(False)
        code, _, err = finish(proc, timeout=60)
        assert code == 0, err
        assert proxy.connections >= 2  # it connected again
    finally:
        proxy.stop()


def test_from_shared_import_wait(relay, simulator, function_env):
    simulator.add_job(gemini_spec("w-py", ["RUNNING", "CANCELLED"]))
    relay.store.track("batches/w-py")
    got = {}

    def waiter():
        got["record"] = wait("batches/w-py", timeout=30, settings=relay.settings, db=relay.db)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(1.0)
    relay.tick()
    relay.tick()
    thread.join(30)
    assert got["record"]["state"] == "JOB_STATE_CANCELLED" and got["record"]["terminal"]
    assert "has_unpublished" not in got["record"]
    with pytest.raises(TimeoutError):
        simulator.add_job(gemini_spec("w-py2", ["RUNNING"]))
        relay.store.track("batches/w-py2")
        wait("batches/w-py2", timeout=1, settings=relay.settings, db=relay.db)
    with pytest.raises(LookupError):
        wait("batches/w-none", timeout=5, settings=relay.settings, db=relay.db)


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
    return buf


def test_list_follow_draws_under_a_pseudo_terminal_and_ends_cleanly(relay, simulator, function_env):
    simulator.add_job(gemini_spec("f-1", ["RUNNING", {"state": "RUNNING", "stats": {"successful": 2, "failed": 0,
                                                                                  "incomplete": 2}}, "SUCCEEDED"]))
    relay.store.track("batches/f-1")
    master, slave = pty.openpty()
    env = {**os.environ, **function_env, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "40"}
    proc = subprocess.Popen([sys.executable, "-m", "batch_relay.cli", "list", "--follow"], cwd=ROOT, env=env,
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True, start_new_session=True)
    os.close(slave)
    try:
        first = _read_until(master, b"batches/f-1", 30)
        assert b"batches/f-1" in first and b"UNSPECIFIED" in first and b"\x1b[" in first  # drawn, not printed
        relay.tick()
        relay.tick()
        relay.tick()
        later = _read_until(master, b"SUCCEEDED", 30)
        assert b"SUCCEEDED" in later
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 0
        rest = _read_until(master, b"Traceback", 2)
        assert b"Traceback" not in first + later + rest
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_list_follow_prints_plain_lines_when_not_a_terminal(relay, simulator, function_env):
    simulator.add_job(gemini_spec("f-2", ["RUNNING", "FAILED"]))
    relay.store.track("batches/f-2")
    proc = subprocess.Popen([sys.executable, "-m", "batch_relay.cli", "list", "--follow"], cwd=ROOT,
                            env={**os.environ, **function_env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    time.sleep(2.0)
    relay.tick()
    relay.tick()
    time.sleep(1.5)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [line for line in out.splitlines() if "batches/f-2" in line]
    assert any("UNSPECIFIED" in line for line in lines) and any("FAILED" in line for line in lines)
    assert "\x1b[" not in out


def test_list_follow_listens_to_unfinished_jobs_unless_asked_for_all(relay, simulator):
    """A listener reads every record its query matches each time it attaches: ``list --follow`` attaches to
    the unfinished jobs (a finished one is read once, when it finishes), ``--all`` to every job."""
    import io

    from batch_relay.cli.live import follow_command

    simulator.add_job(gemini_spec("fo-done", ["SUCCEEDED"]))
    simulator.add_job(gemini_spec("fo-run", ["RUNNING", "FAILED"]))
    relay.store.track("batches/fo-done")
    relay.store.track("batches/fo-run")
    relay.tick()
    assert relay.store.load("batches/fo-done").terminal and not relay.store.load("batches/fo-run").terminal

    def follow(finished: bool, until: str, during=None) -> str:
        out, stop = io.StringIO(), threading.Event()
        thread = threading.Thread(target=follow_command, args=(relay.db, relay.settings),
                                  kwargs={"finished": finished, "out": out, "stop": stop})
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while "batches/fo-run" not in out.getvalue() and time.monotonic() < deadline:
                time.sleep(0.1)
            if during is not None:
                during()
            while until not in out.getvalue() and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            stop.set()
            thread.join(30)
        return out.getvalue()

    shown = follow(True, "batches/fo-done")
    assert "batches/fo-done" in shown and "batches/fo-run" in shown
    simulator.set_state("batches/fo-run", "FAILED")
    shown = follow(False, "FAILED", during=relay.tick)
    assert "batches/fo-done" not in shown  # finished before: never read
    assert any("finished" in line and "FAILED" in line and "batches/fo-run" in line for line in shown.splitlines())

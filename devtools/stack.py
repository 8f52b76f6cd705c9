"""The whole batch-relay pipeline on this machine: a development tool, outside the deploy bundle.

``LocalStack`` starts, each on a free 127.0.0.1 port and each as one process group stopped by its PID:

- the Firestore and Pub/Sub emulators (Cloud SDK) and fake-gcs-server (Cloud Storage);
- the batch-API simulator, standing in for both the Gemini API and Vertex AI (``devtools/simulator/``);
- the three Cloud Functions under functions-framework: ``poll_jobs`` (HTTP), ``on_job_event`` (CloudEvent)
  and ``on_gemini_webhook`` (HTTP), from ``functions/main.py`` exactly as deployed; the simulator sends
  signed webhook deliveries to the last one when its Gemini batches end (a fresh ``whsec_`` secret per
  stack, in ``RELAY_GEMINI_WEBHOOK_SECRETS``). Each ``poll_jobs`` instance serves one request at a time,
  as on Cloud Run (gunicorn with one worker and one thread); with ``pollers=K`` they sit behind
  ``devtools/balancer.py``, which, like Cloud Run's front end, answers 429 when every instance stays busy
  for ``pending_s``;

With ``cpu_share`` (a ``devtools.cpushare.CpuShare``, owned and closed by the caller) each function
instance runs in a cgroup of its own under that share's CFS quota (1/3 vCPU for 512 MiB, as Cloud Run
functions deploy it), from its interpreter's first instruction; the emulators and the simulator do not.

then creates the events topic, the reactor's Pub/Sub **push** subscription (emulator -> ``on_job_event``,
the same filter as ``infra/pubsub.tf``), two ordered pull subscriptions (``…-viewer`` for tools that
watch the stream, ``…-console`` left for you), the tick parts' push subscription (-> ``poll_jobs``, with
the retries and dead-lettering of ``infra/pubsub.tf``: a part refused with 429 is pushed again, and after
``PARTS_MAX_DELIVERY_ATTEMPTS`` lands on ``…-tick-parts-dead-letter``), and runs a scheduler thread that
POSTs to ``poll_jobs`` every ``tick_s`` seconds, as Cloud Scheduler does.

    with LocalStack() as stack:          # everything up; .env holds the settings of the functions/CLI
        ...
    # every process stopped (also on Ctrl-C / SIGTERM)

Command line::

    python -m devtools.stack            # start, check that a tick runs and the reactor answers, stop
    python -m devtools.stack --keep     # start and stay up until Ctrl-C; prints the environment for
                                        # `batch-relay list/show/track` and examples/consumer.py
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import os
import secrets
import shlex
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from devtools import emulators

if TYPE_CHECKING:
    from devtools.cpushare import CpuShare

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "functions" / "main.py"
DEFAULT_PROJECT = "batch-relay-local"
DEFAULT_API_KEY = "local-demo-gemini-key"
REACTOR_FILTER = ('attributes.ce-type = "batchrelay.job.v1.stateChanged" AND (attributes.state = '
                  '"JOB_STATE_SUCCEEDED" OR attributes.state = "JOB_STATE_PARTIALLY_SUCCEEDED")')
EMULATOR_VARS = ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST")
FUNCTIONS = (("poll_jobs", "http"), ("on_job_event", "cloudevent"), ("on_gemini_webhook", "http"))
# The tick parts' push subscription, as infra/pubsub.tf declares it (backoff in seconds).
PARTS_RETRY_BACKOFF_S = (10, 60)
PARTS_MAX_DELIVERY_ATTEMPTS = 5
# One request at a time per poll_jobs instance (functions-framework's gunicorn: one worker, one thread).
ONE_REQUEST_AT_A_TIME = {"WORKERS": "1", "THREADS": "1"}


class Scheduler:
    """POSTs to ``poll_jobs`` every ``interval_s`` seconds, in a background thread.

    Like Cloud Scheduler it does not wait for one tick to finish before firing the next (ticks may
    overlap, which batch-relay is built for); at most ``max_overlap`` are in flight, a firing beyond
    that is skipped and counted. ``LocalStack`` sets it to the ticks its ``poll_jobs`` instances hold
    (instances ÷ fan-out, at most 2), as Terraform holds ``poller.max_instances`` to two ticks' parts."""

    def __init__(self, url: str, interval_s: float, *, timeout_s: float = 300.0, max_overlap: int = 2,
                 on_tick: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.url = url
        self.interval_s = interval_s
        self.on_tick = on_tick
        self.history: list[dict[str, Any]] = []  # one entry per finished tick
        self.skipped = 0
        self._timeout_s = timeout_s
        self._max_overlap = max_overlap
        self._in_flight = 0
        self._futures: set[concurrent.futures.Future] = set()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_overlap, thread_name_prefix="scheduler-tick")
        self._http = httpx.Client(timeout=timeout_s)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                fire = self._in_flight < self._max_overlap
                self._in_flight += fire
            if fire:
                try:
                    self._futures.add(self._pool.submit(self._fire))
                except RuntimeError:  # the pool is shutting down
                    return
                self._futures = {f for f in self._futures if not f.done()}
            else:
                self.skipped += 1
            next_at += self.interval_s
            self._stop.wait(max(next_at - time.monotonic(), 0.0))

    def _fire(self) -> None:
        started = time.monotonic()
        entry: dict[str, Any] = {"at": time.time(), "status": None, "summary": None, "error": None}
        try:
            response = self._http.post(self.url, json={})
            entry["status"] = response.status_code
            try:
                entry["summary"] = response.json()
            except ValueError:
                entry["error"] = response.text[:300]
        except httpx.HTTPError as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            with self._lock:
                self._in_flight -= 1
        entry["wall_s"] = round(time.monotonic() - started, 3)
        if self._stop.is_set() and entry["status"] is None:
            return  # cut off by the shutdown: not a tick
        with self._lock:
            self.history.append(entry)
        if self.on_tick is not None:
            with contextlib.suppress(Exception):
                self.on_tick(entry)

    def totals(self) -> dict[str, Any]:
        """Ticks run, and the A1 summary counts added up."""
        with self._lock:
            history = list(self.history)
        ok = [h for h in history if h["status"] == 200 and isinstance(h["summary"], dict)]
        out: dict[str, Any] = {"ticks": len(history), "ok": len(ok), "failed": len(history) - len(ok),
                               "skipped": self.skipped}
        for key in ("polled", "changed", "published", "errors", "parts", "parts_reported"):
            out[key] = sum(int(h["summary"].get(key) or 0) for h in ok)
        durations = [float(h["summary"].get("duration_s") or 0.0) for h in ok]
        out["max_duration_s"] = round(max(durations), 3) if durations else 0.0
        return out

    def stop(self, wait_s: float = 3.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(wait_s)
        self._pool.shutdown(wait=False, cancel_futures=True)
        # let a tick in flight finish its commits briefly; the functions are stopped next anyway
        concurrent.futures.wait(list(self._futures), timeout=wait_s)
        self._http.close()


class LocalStack:
    """Everything batch-relay runs on, locally. See the module docstring."""

    def __init__(self, *, project: str = DEFAULT_PROJECT, collection: str = "batch_jobs",
                 topic: str = "batch-job-events", tick_s: float | None = 2.0,
                 gemini_api_key: str = DEFAULT_API_KEY, extra_env: dict[str, str] | None = None,
                 webhooks: dict[str, Any] | bool = True, pollers: int = 1, pending_s: float = 10.0,
                 log_dir: str | os.PathLike | None = None, cpu_share: CpuShare | None = None,
                 on_progress: Callable[[str], None] | None = None,
                 on_tick: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.project = project
        self.collection = collection
        self.topic = topic
        self.tick_s = tick_s
        self.gemini_api_key = gemini_api_key
        self.extra_env = dict(extra_env or {})
        # the simulator's webhook deliveries to on_gemini_webhook: False for none, a dict for more settings
        self.webhooks = {} if webhooks is True else webhooks
        self.webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        # several poll_jobs instances behind one URL (a balancer, as Cloud Run's front end), for fan-out:
        # one request each at a time; a request finding them all busy for pending_s gets 429
        self.pollers = pollers
        self.pending_s = pending_s
        self.cpu_share = cpu_share
        self.balancer = None
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="batch-relay-stack-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._progress = on_progress or (lambda _message: None)
        self._on_tick = on_tick
        self.services: dict[str, emulators.Service] = {}
        self.pids: list[int] = []  # every process (group leader) this stack started, in start order
        self.env: dict[str, str] = {}
        self.scheduler: Scheduler | None = None
        self.topic_path = f"projects/{project}/topics/{topic}"
        self.push_subscription = f"projects/{project}/subscriptions/{topic}-reactor"
        self.viewer_subscription = f"projects/{project}/subscriptions/{topic}-viewer"
        self.console_subscription = f"projects/{project}/subscriptions/{topic}-console"
        self.parts_topic = f"{topic}-tick-parts"
        self.parts_topic_path = f"projects/{project}/topics/{self.parts_topic}"
        self.parts_dead_letter_topic_path = f"{self.parts_topic_path}-dead-letter"
        self.parts_dead_letter_subscription = f"projects/{project}/subscriptions/{self.parts_topic}-dead-letter"
        self.started_s: float | None = None
        self._saved_signals: dict[int, Any] = {}
        self._stopped = False

    # -- lifecycle ------------------------------------------------------------------------------------
    def __enter__(self) -> LocalStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalStack:
        t0 = time.monotonic()
        self._install_signal_handlers()
        known = set(emulators._live)  # services started by another thread/stack are not ours
        try:
            self._start_backends()
            self.env = self._build_env()
            self._start_functions()
            self._create_pubsub()
            self._start_webhooks()
            if self.tick_s:
                # no more ticks in flight than the instances hold, one request each at a time: with a
                # tick's parts on every instance, a second tick's coordinator would hold one while its
                # parts wait for an instance (the deadlock Terraform's 2 x fanout instances rule out)
                overlap = max(1, min(2, self.pollers // int(self.env.get("RELAY_TICK_FANOUT") or 1)))
                self.scheduler = Scheduler(f"{self.url('poll_jobs')}/", self.tick_s,
                                           timeout_s=float(self.env.get("RELAY_TICK_DEADLINE_S", 240)) + 30,
                                           max_overlap=overlap, on_tick=self._on_tick).start()
                self._progress(f"scheduler: POST {self.url('poll_jobs')}/ every {self.tick_s:g}s "
                               f"(at most {overlap} tick{'s' if overlap > 1 else ''} in flight)")
        except BaseException:
            # a service interrupted while starting is not in self.services yet: stop it by its PID too
            for service in list(emulators._live):
                if service not in known and service not in self.services.values():
                    self.pids.append(service.pid)
                    service.stop()
            raise
        self.started_s = round(time.monotonic() - t0, 2)
        self._progress(f"stack up in {self.started_s:.1f}s (logs: {self.log_dir})")
        return self

    def stop(self) -> None:
        """Stop the scheduler, then every process this stack started, by PID (SIGTERM, then SIGKILL)."""
        if self._stopped:
            return
        self._stopped = True
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
        try:
            if self.scheduler is not None:
                self.scheduler.stop()
            services = list(self.services.values())
            if self.balancer is not None:
                self.balancer.stop()
            functions = [s for s in services if s.name.split("#")[0] in dict(FUNCTIONS)]
            rest = [s for s in services if s not in functions]
            for group in (functions, rest):
                with concurrent.futures.ThreadPoolExecutor(max(len(group), 1)) as pool:
                    list(pool.map(_stop_quietly, group))
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            self._restore_signal_handlers()

    def _install_signal_handlers(self) -> None:
        """SIGTERM (and SIGHUP) become KeyboardInterrupt, like Ctrl-C, so ``with`` blocks unwind and stop
        every process. Only possible in the main thread; elsewhere the caller owns signals."""
        if threading.current_thread() is not threading.main_thread():
            return

        def interrupt(signum, _frame):
            raise KeyboardInterrupt(f"signal {signum}")

        for sig in (signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError, OSError):
                self._saved_signals[sig] = signal.signal(sig, interrupt)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._saved_signals.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, handler)
        self._saved_signals.clear()

    # -- the processes ----------------------------------------------------------------------------------
    def _adopt(self, service: emulators.Service) -> emulators.Service:
        self.services[service.name] = service
        self.pids.append(service.pid)
        return service

    def _start_backends(self) -> None:
        starters = {
            "firestore": lambda: emulators.start_firestore(log_dir=str(self.log_dir)),
            "pubsub": lambda: emulators.start_pubsub(log_dir=str(self.log_dir)),
            "fake-gcs": lambda: emulators.start_fake_gcs(log_dir=str(self.log_dir)),
            "simulator": lambda: emulators.start_simulator(
                extra_args=["--api-key", self.gemini_api_key], log_dir=str(self.log_dir)),
        }
        labels = {"firestore": "Firestore emulator", "pubsub": "Pub/Sub emulator",
                  "fake-gcs": "fake-gcs-server (Cloud Storage)", "simulator": "batch-API simulator"}
        # started side by side: the two JVMs dominate start-up
        with concurrent.futures.ThreadPoolExecutor(len(starters)) as pool:
            futures = {name: pool.submit(start) for name, start in starters.items()}
            errors = []
            for name, future in futures.items():
                try:
                    service = self._adopt(future.result())
                    self._progress(f"{labels[name]:32} {service.url}  pid {service.pid}")
                except Exception as exc:  # noqa: BLE001 - collect, the others are stopped by the caller
                    errors.append(f"{labels[name]}: {exc}")
            if errors:
                raise RuntimeError("could not start the local stack: " + "; ".join(errors))

    def _build_env(self) -> dict[str, str]:
        sim = self.services["simulator"].url
        env = {
            "GOOGLE_CLOUD_PROJECT": self.project,
            "FIRESTORE_EMULATOR_HOST": self.services["firestore"].host,
            "PUBSUB_EMULATOR_HOST": self.services["pubsub"].host,
            "STORAGE_EMULATOR_HOST": self.services["fake-gcs"].url,
            "RELAY_COLLECTION": self.collection,
            "RELAY_EVENTS_TOPIC": self.topic,
            "RELAY_GEMINI_API_KEY": self.gemini_api_key,
            "RELAY_GEMINI_BASE_URL": sim,
            "RELAY_VERTEX_BASE_URL": sim,
            "RELAY_GEMINI_WEBHOOK_SECRETS": self.webhook_secret,
            # the cadence's clock is the scheduler's; unchanged jobs are polled every tick unless told
            "RELAY_TICK_INTERVAL_S": str(self.tick_s or 60),
            "RELAY_MAX_POLL_INTERVAL_S": "0",
            "RELAY_TICK_PARTS_TOPIC": self.parts_topic,
            # fake-gcs-server's buckets are the stack's own: copies may go to any of them (the explicit
            # opt-in; unset, the reactor would refuse every copy). The demo narrows it to its output bucket.
            "RELAY_ALLOWED_BUCKETS": "*",
            **({"RELAY_TICK_FANOUT": str(self.pollers)} if self.pollers > 1 else {}),
            **self.extra_env,
        }
        return env

    def child_env(self) -> dict[str, str]:
        """The functions' environment: the stack's settings, and every other ``RELAY_*`` / emulator
        variable of the caller's shell blanked (a setting meant for real Google Cloud must not leak in)."""
        blank = {k: "" for k in os.environ if k.startswith("RELAY_") or k in EMULATOR_VARS}
        return {**blank, **self.env, "PYTHONUNBUFFERED": "1"}

    def _start_functions(self) -> None:
        env = self.child_env()
        started = []
        instances = [(f"poll_jobs#{i}" if i else "poll_jobs", "poll_jobs", "http") for i in range(self.pollers)]
        instances += [(target, target, signature) for target, signature in FUNCTIONS if target != "poll_jobs"]
        for name, target, signature in instances:
            port = emulators.free_port()
            argv = [sys.executable, "-m", "functions_framework", "--target", target, "--source", str(MAIN),
                    "--signature-type", signature, "--host", "127.0.0.1", "--port", str(port)]
            own_env = {**env, **ONE_REQUEST_AT_A_TIME} if target == "poll_jobs" else env
            if self.cpu_share is not None:  # one quota per instance, as each Cloud Run instance has its own
                argv = self.cpu_share.group(name).wrap(argv)
            started.append(self._adopt(emulators.Service(name, argv, port, env=own_env, log_dir=str(self.log_dir))))
        for service in started:  # they import side by side; wait for each
            service.wait_ready(60)
            self._progress(f"functions-framework {service.name:12} {service.url}  pid {service.pid}")
        if self.pollers > 1:
            from devtools.balancer import Balancer

            pollers = [s.url for s in started if s.name.startswith("poll_jobs")]
            self.balancer = Balancer(pollers, concurrency=1, pending_s=self.pending_s).start()
            self._progress(f"{self.pollers} poll_jobs instances behind {self.balancer.url} (as Cloud Run's front end: "
                           f"one request each at a time, 429 after {self.pending_s:g}s with all busy)")

    def _create_pubsub(self) -> None:
        with self.environ():
            from google.cloud import pubsub_v1

            publisher = pubsub_v1.PublisherClient()
            subscriber = pubsub_v1.SubscriberClient()
        try:
            publisher.create_topic(name=self.topic_path)
            reactor = self.services["on_job_event"].url
            subscriber.create_subscription(request={
                "name": self.push_subscription, "topic": self.topic_path, "filter": REACTOR_FILTER,
                "ack_deadline_seconds": 60,
                # the path carries the topic, so the CloudEvent's source names it (as in infra/pubsub.tf)
                "push_config": {"push_endpoint": f"{reactor}/{self.topic_path}"}})
            for name in (self.viewer_subscription, self.console_subscription):
                subscriber.create_subscription(request={
                    "name": name, "topic": self.topic_path, "enable_message_ordering": True,
                    "ack_deadline_seconds": 60})
            # fan-out: the coordinator's parts, pushed (the message data as the body) to poll_jobs; a part
            # refused (429 with every instance busy) is pushed again with backoff, then dead-lettered
            publisher.create_topic(name=self.parts_topic_path)
            publisher.create_topic(name=self.parts_dead_letter_topic_path)
            subscriber.create_subscription(request={
                "name": self.parts_dead_letter_subscription, "topic": self.parts_dead_letter_topic_path,
                "ack_deadline_seconds": 60})
            low, high = PARTS_RETRY_BACKOFF_S
            subscriber.create_subscription(request={
                "name": f"projects/{self.project}/subscriptions/{self.parts_topic}-push",
                "topic": self.parts_topic_path, "ack_deadline_seconds": 600,
                "push_config": {"push_endpoint": f"{self.url('poll_jobs')}/", "no_wrapper": {"write_metadata": False}},
                "retry_policy": {"minimum_backoff": {"seconds": low}, "maximum_backoff": {"seconds": high}},
                "dead_letter_policy": {"dead_letter_topic": self.parts_dead_letter_topic_path,
                                       "max_delivery_attempts": PARTS_MAX_DELIVERY_ATTEMPTS}})
        finally:
            subscriber.close()
            publisher.stop()
        self._progress(f"topic {self.topic_path}: push subscription -> on_job_event, "
                       "ordered pull subscriptions ...-viewer and ...-console")

    def _start_webhooks(self) -> None:
        if self.webhooks is False:
            return
        url = f"{self.services['on_gemini_webhook'].url}/"
        config = {"url": url, "secret": self.webhook_secret, **self.webhooks}
        response = httpx.post(f"{self.services['simulator'].url}/_sim/config", json={"webhooks": config}, timeout=30)
        response.raise_for_status()
        self._progress(f"simulator: signed webhooks (v1) when Gemini batches end -> on_gemini_webhook {url}")

    # -- using it ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def environ(self) -> Iterator[dict[str, str]]:
        """Point the Google client libraries of *this* process at the stack while the block runs
        (clients read the emulator variables when they are built); the environment is restored after."""
        saved = dict(os.environ)
        os.environ.update({k: v for k, v in self.child_env().items() if k != "PYTHONUNBUFFERED"})
        try:
            yield self.env
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def settings(self):
        from batch_relay.settings import Settings

        return Settings.from_env(self.env)

    def url(self, name: str) -> str:
        if name == "poll_jobs" and self.balancer is not None:
            return self.balancer.url
        return self.services[name].url

    def shell_exports(self) -> str:
        """``export`` lines that point ``batch-relay`` and examples/consumer.py at this stack."""
        return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in self.env.items())

    def alive(self) -> list[int]:
        """Processes this stack started that still run (by PID, or in their process groups)."""
        return alive_pids(self.pids)


def alive_pids(pids: list[int]) -> list[int]:
    """Which of ``pids`` (process group leaders) or members of their groups still run (zombies aside)."""
    groups = set(pids)
    return sorted(pid for pid, fields in proc_stats()
                  if (pid in groups or int(fields[2]) in groups) and fields[0] != "Z")


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """Every running process's PID and the fields of its ``/proc/PID/stat`` after the command name (state
    first, then ppid, pgrp, …); a process that ends while it is read is passed over."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            yield int(entry.name), (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue


def _stop_quietly(service: emulators.Service) -> None:
    with contextlib.suppress(Exception):
        service.stop()


# -- command line ----------------------------------------------------------------------------------------
def _self_check(stack: LocalStack) -> list[str]:
    problems = []
    response = httpx.post(stack.url("poll_jobs") + "/", json={}, timeout=60)
    if response.status_code != 200:
        problems.append(f"poll_jobs answered {response.status_code}: {response.text[:200]}")
    else:
        print(f"poll_jobs tick: {response.text.strip()}")
    # a messagePublished CloudEvent the reactor must ack (not a success event): proves it is served
    probe = httpx.post(stack.url("on_job_event") + "/" + stack.topic_path, timeout=30, json={
        "message": {"attributes": {"ce-type": "batchrelay.job.v1.stateChanged", "state": "JOB_STATE_RUNNING"},
                    "data": "e30=", "messageId": "1", "publishTime": "2026-01-01T00:00:00Z"},
        "subscription": stack.push_subscription})
    if probe.status_code >= 300:
        problems.append(f"on_job_event answered {probe.status_code}: {probe.text[:200]}")
    else:
        print(f"on_job_event acked a push delivery ({probe.status_code})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.stack", description=(
        "Start batch-relay's local stack (emulators, fake-gcs-server, simulator, both functions, a "
        "scheduler loop). Without --keep: check it works and stop."))
    parser.add_argument("--keep", action="store_true", help="stay up until Ctrl-C and print the environment")
    parser.add_argument("--tick-s", type=float, default=2.0, help="seconds between poll_jobs calls (0: none)")
    parser.add_argument("--project", default=DEFAULT_PROJECT)
    args = parser.parse_args(argv)
    try:
        with LocalStack(project=args.project, tick_s=args.tick_s or None, on_progress=print) as stack:
            if not args.keep:
                problems = _self_check(stack)
                for problem in problems:
                    print(f"FAILED: {problem}", file=sys.stderr)
                print("stack works; stopping it" if not problems else "stopping the stack")
                return 1 if problems else 0
            print("\nThe stack is up. In another terminal:\n")
            print(stack.shell_exports())
            print(f"""
  .venv/bin/batch-relay track batches/my-job --destination gs://my-bucket/out   # the simulator must know it
  .venv/bin/batch-relay list
  .venv/bin/python examples/consumer.py {stack.console_subscription}

Simulator admin API: {stack.url('simulator')}/_sim/  (see devtools/simulator/__init__.py)
Logs of every process: {stack.log_dir}
Press Ctrl-C to stop everything.""", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Crash, fault and concurrency soak of batch-relay on the local stack, with figures.

Three phases, each also run in CI at a small size by ``tests/test_reliability.py`` (same code, fewer jobs):

- **poller crash**: a real ``poll_jobs`` process (functions-framework) runs ticks back to back while the
  batch-API simulator walks the jobs through their lifecycles with 429/500/503 answers, slow replies
  (client timeouts) and dropped connections mixed in; the process is SIGKILLed at random points and
  restarted. After recovery ticks, every committed transition must have reached the subscriber, in version
  order per job, duplicates only with the same ``ce-id``, and every record must match the simulator.
- **overlapping ticks**: several ``poll_jobs`` requests at once, round after round, against one served
  process: no duplicate versions, no lost transitions.
- **reactor crash**: a real ``on_job_event`` process is SIGKILLed mid-copy (Cloud Storage behind a slow
  proxy so copies take a while), restarted, and the events are redelivered until they are acked: outputs
  complete, one manifest per job, records ``done``, one distinct ``outputsReady`` id per job.

Run ``python -m devtools.soak --jobs 300 --kills 20`` (it starts and stops its own emulators and simulator);
it prints the figures as JSON. ``docs/reliability.md`` holds the figures of a recorded run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from devtools import emulators
from devtools.fakegcs import FakeGcs
from devtools.faultproxy import FaultProxy
from devtools.pubsub_drain import drain
from devtools.simulator import SimulatorClient, gemini_spec, vertex_spec

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "functions" / "main.py"
PROJECT = "batch-relay-soak"
STATE_CHANGED = "batchrelay.job.v1.stateChanged"
OUTPUTS_READY = "batchrelay.job.v1.outputsReady"
OUTPUTS_FAILED = "batchrelay.job.v1.outputsFailed"


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the bench: one run's settings, clients, subscription ---------------------------------------------------


@dataclasses.dataclass
class Bench:
    """What a phase needs: settings (their own collection and topic), Google clients on the emulators, a
    subscription with message ordering on the events topic, and the simulator's admin client."""

    settings: Any
    db: Any
    publisher: Any
    subscriber: Any
    subscription: str
    sim: SimulatorClient
    gcs_url: str | None = None
    owned: bool = False

    @property
    def store(self):
        from batch_relay.record.store import JobStore

        return JobStore(self.db, self.settings)

    @classmethod
    def create(cls, settings, sim: SimulatorClient, gcs_url: str | None = None) -> Bench:
        from google.cloud import pubsub_v1

        from batch_relay import wiring

        db = wiring.make_firestore(settings)
        publisher = wiring.make_publisher(settings)
        subscriber = pubsub_v1.SubscriberClient()
        topic = f"projects/{settings.project}/topics/{settings.events_topic}"
        publisher.create_topic(name=topic)
        subscription = f"projects/{settings.project}/subscriptions/soak-{settings.events_topic}"
        subscriber.create_subscription(request={"name": subscription, "topic": topic,
                                                "enable_message_ordering": True, "ack_deadline_seconds": 60})
        return cls(settings, db, publisher, subscriber, subscription, sim, gcs_url, owned=True)

    def close(self) -> None:
        if not self.owned:
            return
        with contextlib.suppress(Exception):
            self.subscriber.delete_subscription(request={"subscription": self.subscription})
        with contextlib.suppress(Exception):
            self.publisher.delete_topic(request={"topic": f"projects/{self.settings.project}/topics/"
                                                          f"{self.settings.events_topic}"})
        self.subscriber.close()
        self.publisher.stop()

    def function_env(self, **overrides: Any) -> dict[str, str]:
        """The environment of a served function with this bench's settings."""
        s = self.settings
        env = {
            "GOOGLE_CLOUD_PROJECT": s.project, "RELAY_COLLECTION": s.collection,
            "RELAY_EVENTS_TOPIC": s.events_topic, "RELAY_GEMINI_API_KEY": s.gemini_api_key or "",
            "RELAY_GEMINI_BASE_URL": s.gemini_base_url, "RELAY_VERTEX_BASE_URL": s.vertex_base_url or "",
            "FIRESTORE_EMULATOR_HOST": s.firestore_emulator_host or "",
            "PUBSUB_EMULATOR_HOST": s.pubsub_emulator_host or "",
            "STORAGE_EMULATOR_HOST": s.storage_emulator_host or "",
            "RELAY_TICK_DEADLINE_S": str(s.tick_deadline_s), "RELAY_REQUEST_TIMEOUT_S": str(s.request_timeout_s),
            "RELAY_TICK_INTERVAL_S": str(s.tick_interval_s), "RELAY_MAX_POLL_INTERVAL_S": str(s.max_poll_interval_s),
            "RELAY_ALLOWED_BUCKETS": ",".join(sorted(s.allowed_buckets or ())),
            "PYTHONPATH": str(ROOT),
        }
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    def tick(self) -> dict:
        """One tick in this process (used to set things up, not under test)."""
        from batch_relay import wiring

        return asyncio.run(wiring.run_tick(self.settings, self.db, self.publisher))

    def pull(self, quiet_s: float = 1.0, limit_s: float = 120.0) -> list[Message]:
        """Every message now on the subscription (acked), in delivery order."""
        return [Message(dict(m.attributes), bytes(m.data), m.ordering_key, m.message_id)
                for m in drain(self.subscriber, self.subscription, quiet_s=quiet_s, limit_s=limit_s, batch=1000)]


@dataclasses.dataclass(frozen=True)
class Message:
    attributes: dict[str, str]
    data: bytes
    ordering_key: str
    message_id: str

    @property
    def id(self) -> str:
        return self.attributes.get("ce-id", "")

    @property
    def type(self) -> str:
        return self.attributes.get("ce-type", "")

    @property
    def job(self) -> str:
        return self.attributes.get("job", "")

    def json(self) -> Any:
        return json.loads(self.data)


# -- served functions ------------------------------------------------------------------------------------


def serve(target: str, env: dict[str, str], *, signature: str = "http") -> emulators.Service:
    """functions-framework serving ``target`` of functions/main.py in its own process group."""
    port = emulators.free_port()
    argv = [sys.executable, "-m", "functions_framework", "--target", target, "--source", str(MAIN),
            "--signature-type", signature, "--host", "127.0.0.1", "--port", str(port)]
    return emulators.Service(target, argv, port, env=env).wait_ready(60)


def sigkill(service: emulators.Service) -> None:
    """SIGKILL the served function's process group, reap it, close its log."""
    service.kill(signal.SIGKILL)
    with contextlib.suppress(Exception):
        service.proc.wait(10)
    service.stop()


def post_tick(url: str, timeout: float = 120.0) -> tuple[str, dict | None]:
    """POST one tick: ("ok", summary) | ("failed", body) | ("cut", None) when the process died."""
    try:
        response = httpx.post(url, timeout=timeout)
    except httpx.HTTPError:
        return "cut", None
    if response.status_code == 200:
        return "ok", response.json()
    return "failed", {"status": response.status_code, "body": response.text[:300]}


def pubsub_push_body(message: Message) -> tuple[dict[str, str], bytes]:
    """A stateChanged message as Pub/Sub push / Eventarc deliver it: a binary-mode messagePublished
    CloudEvent whose data is the push envelope."""
    headers = {"ce-specversion": "1.0", "ce-id": message.message_id or uuid.uuid4().hex,
               "ce-source": "//pubsub.googleapis.com/projects/p/topics/t",
               "ce-type": "google.cloud.pubsub.topic.v1.messagePublished", "Content-Type": "application/json"}
    envelope = {"message": {"attributes": message.attributes, "data": base64.b64encode(message.data).decode(),
                            "messageId": message.message_id, "publishTime": "2026-01-01T00:00:00Z"},
                "subscription": "projects/p/subscriptions/reactor"}
    return headers, json.dumps(envelope).encode()


def deliver(url: str, message: Message, timeout: float = 120.0) -> int:
    """POST the event to a served on_job_event; the HTTP status, or 0 when the connection broke."""
    headers, body = pubsub_push_body(message)
    try:
        return httpx.post(url, headers=headers, content=body, timeout=timeout).status_code
    except httpx.HTTPError:
        return 0


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# -- job timelines ------------------------------------------------------------------------------------------

GEMINI_PATHS = [
    ["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"],
    ["PENDING", "RUNNING", "FAILED"],
    ["PENDING", "CANCELLED"],
    ["PENDING", "EXPIRED"],
    ["PENDING", "RUNNING", "RUNNING", "RUNNING", "SUCCEEDED"],
]
VERTEX_PATHS = [
    ["QUEUED", "PENDING", "RUNNING", "SUCCEEDED"],
    ["QUEUED", "RUNNING", "PAUSED", "QUEUED", "RUNNING", "PARTIALLY_SUCCEEDED"],
    ["RUNNING", "CANCELLING", "CANCELLED"],
    ["PENDING", "RUNNING", "UPDATING", "RUNNING", "FAILED"],
    ["QUEUED", "RUNNING", "RUNNING", "SUCCEEDED"],
]


def full_state(state: str) -> str:
    return "JOB_STATE_" + state.removeprefix("BATCH_STATE_").removeprefix("JOB_STATE_")


def make_jobs(n: int, rng: random.Random, tag: str, *, after_s: float | None = None,
              step_s: tuple[float, float] | None = None, polls: tuple[int, int] = (1, 1)) -> dict[str, dict]:
    """``n`` simulator specs (half Gemini, half Vertex over three regions), keyed by name; RUNNING steps carry
    growing counts. A step comes after ``after_s`` seconds when given; else, with ``step_s``, half the jobs
    move on by the clock (a random ``step_s`` per step) and half after a random ``polls`` successful polls;
    else after one successful poll."""
    specs: dict[str, dict] = {}
    for i in range(n):
        by_clock = step_s is not None and rng.random() < 0.5
        gemini = i % 2 == 0
        path = rng.choice(GEMINI_PATHS if gemini else VERTEX_PATHS)
        total = rng.randint(5, 500)
        done = 0
        steps = []
        for state in path:
            step: dict[str, Any] = {"state": state}
            if state == "RUNNING":
                done = min(total, done + rng.randint(1, max(1, total // 3)))
                step["stats"] = {"successful": done, "failed": 0, "incomplete": total - done}
            elif state in ("SUCCEEDED", "PARTIALLY_SUCCEEDED"):
                failed = rng.randint(1, 3) if state == "PARTIALLY_SUCCEEDED" else 0
                step["stats"] = {"successful": total - failed, "failed": failed, "incomplete": 0}
            if steps and after_s is None and step_s is not None:
                if by_clock:
                    step["after_s"] = round(rng.uniform(*step_s), 2)
                else:
                    step["after_polls"] = rng.randint(*polls)
            steps.append(step)
        kw: dict[str, Any] = {"after_s": after_s} if after_s is not None else {"after_polls": 1}
        if gemini:
            spec = gemini_spec(f"{tag}-{i}", steps, **kw)
        else:
            location = ("us-central1", "europe-west4", "global")[i % 3]
            spec = vertex_spec("soak-proj", location, f"{tag}-{i}", steps,
                               output={"kind": "bigquery", "table": f"bq://soak-proj.ds.t{i}"}, **kw)
        specs[spec["name"]] = spec
    return specs


def is_subsequence(needle: list[str], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(any(x == y for y in it) for x in needle)


# -- verification of the state-change stream -----------------------------------------------------------------


def verify_state_streams(bench: Bench, specs: dict[str, dict], messages: list[Message]) -> dict[str, Any]:
    """Check every job's record, transitions and received stateChanged messages. Returns figures and
    ``problems`` (empty when everything holds)."""
    store = bench.store
    problems: list[str] = []
    by_job: dict[str, list[Message]] = collections.defaultdict(list)
    for m in messages:
        if m.type == STATE_CHANGED:
            by_job[m.job].append(m)
    figures = collections.Counter()
    for name, spec in specs.items():
        record = store.get(name)
        if record is None:
            problems.append(f"{name}: no record")
            continue
        transitions = store.transitions(name)
        figures["transitions"] += len(transitions)
        timeline = [full_state(step["state"]) for step in spec["timeline"]]
        sim = bench.sim.get(name)
        final = full_state(sim["state"])
        problems += _record_problems(name, record, sim, final, figures)
        problems += _transition_problems(name, record, transitions, timeline, final, figures)
        problems += _message_problems(name, record["tracking_id"], transitions, by_job.get(name, []), figures)
    return {
        "jobs": len(specs), "transitions_verified": figures["transitions"], "messages_received": figures["messages"],
        "duplicates_seen": figures["duplicates"], "lost": figures["lost"], "out_of_order": figures["out_of_order"],
        "duplicate_versions": figures["duplicate_versions"], "phantom_events": figures["phantom"],
        "records_mismatched": figures["records_mismatched"], "problems": problems,
    }


def _record_problems(name: str, record: dict, sim: dict, final: str, figures: collections.Counter) -> list[str]:
    """The record against the simulator's final state and counts; nothing left unpublished."""
    problems = []
    if record["state"] != final or not record["terminal"]:
        problems.append(f"{name}: record {record['state']} terminal={record['terminal']}, simulator {final}")
        figures["records_mismatched"] += 1
    stats = sim.get("stats") or {}
    want = {"successful": stats.get("successful", 0), "failed": stats.get("failed", 0),
            "incomplete": stats.get("incomplete", 0)}
    if stats and record["completion_stats"] != want:
        problems.append(f"{name}: completion_stats {record['completion_stats']} != simulator {want}")
        figures["records_mismatched"] += 1
    if record.get("has_unpublished") or record.get("outbox"):
        problems.append(f"{name}: still has unpublished events")
    return problems


def _transition_problems(name: str, record: dict, transitions: list[dict], timeline: list[str], final: str,
                         figures: collections.Counter) -> list[str]:
    """The transitions: versions 1..N, a chain, each a real change, a subsequence of the timeline."""
    problems = []
    version = int(record["version"])
    if [t["version"] for t in transitions] != list(range(1, version + 1)):
        problems.append(f"{name}: transition versions {[t['version'] for t in transitions]} for version {version}")
        figures["duplicate_versions"] += 1
    previous = "JOB_STATE_UNSPECIFIED"
    for t in transitions:
        if t["from_state"] != previous or t["to_state"] == previous:
            problems.append(f"{name}: v{t['version']} {t['from_state']}->{t['to_state']} after {previous}")
            figures["duplicate_versions"] += 1
        if not t["published"]:
            problems.append(f"{name}: v{t['version']} not marked published")
        previous = t["to_state"]
    states = [t["to_state"] for t in transitions]
    if not is_subsequence(states, timeline) or (states and states[-1] != final):
        problems.append(f"{name}: transitions {states} are not a walk of the timeline {timeline}")
    return problems


def _message_problems(name: str, tid: str, transitions: list[dict], received: list[Message],
                      figures: collections.Counter) -> list[str]:
    """The messages: every transition's ce-id, in version order, duplicates identical."""
    problems = []
    expected = {f"{tid}-{v}": t for v, t in enumerate(transitions, start=1)}
    seen: dict[str, Message] = {}
    highest = 0
    for m in received:
        figures["messages"] += 1
        if m.id in seen:
            figures["duplicates"] += 1
            if (m.data, m.attributes) != (seen[m.id].data, seen[m.id].attributes):
                problems.append(f"{name}: duplicate {m.id} differs from the first delivery")
            continue
        transition = expected.get(m.id)
        if transition is None:
            problems.append(f"{name}: unexpected event id {m.id}")
            figures["phantom"] += 1
            continue
        seen[m.id] = m
        v = transition["version"]
        if v != highest + 1:
            problems.append(f"{name}: v{v} delivered first after v{highest}")
            figures["out_of_order"] += 1
        highest = max(highest, v)
        if m.data.decode() != transition["event"]["data"] or m.ordering_key != name:
            problems.append(f"{name}: {m.id} is not the event its transition holds")
        if json.loads(m.data)["version"] != v or m.attributes.get("state") != transition["to_state"]:
            problems.append(f"{name}: {m.id} carries the wrong version or state")
    lost = sorted(set(expected) - set(seen))
    if lost:
        problems.append(f"{name}: never delivered {lost}")
    figures["lost"] += len(lost)
    return problems


def unpublished_now(bench: Bench) -> tuple[int, int]:
    """(records with has_unpublished, committed transitions not yet marked published) right now."""
    records = events = 0
    for snap in bench.store.unpublished():
        records += 1
        events += snap.record.version - snap.record.published_version
    return records, events


def all_settled(bench: Bench, names: Iterable[str]) -> bool:
    store = bench.store
    for name in names:
        record = store.get(name)
        if record is None or not record["terminal"] or record.get("has_unpublished"):
            return False
    return True


# -- phase 1: SIGKILL the poller -------------------------------------------------------------------------------


def poller_crash(bench: Bench, *, jobs: int = 40, kills: int = 5, fault_rate: float = 0.15,
                 slow_faults: int = 10, drop_faults: int = 5, kill_window: tuple[float, float] = (0.3, 2.5),
                 step_s: tuple[float, float] | None = None, polls: tuple[int, int] = (1, 1),
                 targeted: float = 0.4, lease_s: float = 1.0, seed: int = 1,
                 max_recovery_ticks: int = 60) -> dict[str, Any]:
    """Kill a served ``poll_jobs`` ``kills`` times while it ticks; recover; verify.

    Most kills come at a random moment; a ``targeted`` share comes the moment a committed state change is
    seen not yet published (the window the outbox exists for). ``step_s``/``polls`` spread the jobs'
    lifecycles (see ``make_jobs``) so that state changes keep coming across all the kills."""
    rng = random.Random(seed)
    started = time.monotonic()
    tag = f"crash{uuid.uuid4().hex[:6]}"
    specs = make_jobs(jobs, rng, tag, step_s=step_s, polls=polls)
    bench.sim.add_jobs(list(specs.values()))
    for name in specs:
        bench.store.track(name)
    bench.sim.reset_stats()
    bench.sim.configure(random_faults={"rate": fault_rate, "kinds": ["429", "500", "503"], "seed": seed,
                                       "delay_s": 1.5})
    env = bench.function_env(RELAY_PUBLISH_LEASE_S=lease_s, RELAY_REQUEST_TIMEOUT_S=0.5, RELAY_MAX_ATTEMPTS=3,
                             RELAY_TICK_DEADLINE_S=30, RELAY_POLL_CONCURRENCY=16)
    ticks = _TickCounts()
    planted: collections.Counter = collections.Counter()
    stranded_records = stranded_events = kills_stranding = aimed = 0
    names = list(specs)
    for k in range(kills):
        _plant_faults(bench, rng, planted, {"slow": slow_faults, "drop": drop_faults}, kills)
        aimed += _kill_while_ticking(bench, env, rng, ticks, targeted, kill_window)
        records, events = unpublished_now(bench)
        stranded_records += records
        stranded_events += events
        kills_stranding += bool(records)
        log(f"kill {k + 1}/{kills}: {records} records / {events} events left unpublished")
    recovery = _recover(bench, env, names, ticks, lease_s, max_recovery_ticks)
    bench.sim.configure(random_faults=None)
    stats = bench.sim.stats()
    left = sum(bench.sim.get(n)["faults_left"] for n in names)
    faults = {code: int(stats["by_code"].get(code, 0)) for code in ("429", "500", "503")}
    faults["slow_or_drop"] = sum(planted.values()) - left
    result = verify_state_streams(bench, specs, bench.pull())
    for body, count in ticks.failures.items():  # nothing may crash a tick
        result["problems"].append(f"{count} tick(s) answered {body}")
    result.update({
        "phase": "poller_crash", "ticks_started": sum(ticks.outcomes.values()),
        "ticks_completed": ticks.outcomes["ok"], "ticks_cut_by_kill": ticks.outcomes["cut"],
        "ticks_failed": ticks.outcomes["failed"], "kills": kills, "kills_aimed_at_unpublished": aimed,
        "kills_leaving_unpublished": kills_stranding, "unpublished_records_after_kills": stranded_records,
        "unpublished_events_after_kills": stranded_events, "recovery_ticks": recovery,
        "faults_injected": sum(faults.values()), "faults_by_kind": faults,
        "status_requests": stats["status_gets"], "duration_s": round(time.monotonic() - started, 1),
        "failed_tick_replies": dict(ticks.failures),
    })
    return result


@dataclasses.dataclass
class _TickCounts:
    """Ticks by outcome (``ok``, ``cut``, ``failed``), and the bodies of those that answered 500."""

    outcomes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    failures: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def post(self, url: str) -> str:
        outcome, body = post_tick(url)
        self.outcomes[outcome] += 1
        if outcome == "failed":
            self.failures[str(body)[:200]] += 1
        return outcome


def _plant_faults(bench: Bench, rng: random.Random, planted: collections.Counter, counts: dict[str, int],
                  kills: int) -> None:
    """Per-job slow replies (beyond the client's timeout) and dropped connections, at random live jobs:
    ``counts`` spread over the ``kills`` rounds."""
    live = [snap.name for snap in bench.store.due()]
    for kind, count in counts.items():
        per_round = max(1, count // max(kills, 1))
        for name in rng.sample(live, min(per_round, len(live))):
            bench.sim.add_faults(name, [{"kind": kind, "count": 1, "delay_s": 1.5}])
            planted[kind] += 1


def _kill_while_ticking(bench: Bench, env: dict[str, str], rng: random.Random, ticks: _TickCounts,
                        targeted: float, kill_window: tuple[float, float]) -> bool:
    """Serve ``poll_jobs``, tick it back to back, SIGKILL it; returns whether the kill was aimed at the
    moment it had committed a change it had not published."""
    server = serve("poll_jobs", env)
    stop = threading.Event()

    def drive(url: str = server.url, stop: threading.Event = stop) -> None:
        while not stop.is_set():
            if ticks.post(url) == "cut":
                return

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    aimed = rng.random() < targeted
    if aimed:  # the moment this process has committed a change it has not published
        before = {(s.name, s.record.version) for s in bench.store.unpublished()}
        wait_until(lambda before=before: any((s.name, s.record.version) not in before
                                             for s in bench.store.unpublished()), kill_window[1], step=0.0)
    else:
        time.sleep(rng.uniform(*kill_window))
    sigkill(server)
    stop.set()
    driver.join(30)
    return aimed


def _recover(bench: Bench, env: dict[str, str], names: list[str], ticks: _TickCounts, lease_s: float,
             max_recovery_ticks: int) -> int:
    """Past the dead ticks' publish leases, tick until everything is terminal and published; returns the
    number of recovery ticks."""
    server = serve("poll_jobs", env)
    recovery = 0
    try:
        time.sleep(lease_s + 0.2)
        while recovery < max_recovery_ticks and not all_settled(bench, names):
            ticks.post(server.url)
            recovery += 1
    finally:
        server.stop()
    return recovery


# -- phase 2: overlapping ticks ------------------------------------------------------------------------------


def overlapping_ticks(bench: Bench, *, jobs: int = 20, concurrency: int = 3, rounds: int = 6,
                      step_s: float = 0.6, seed: int = 2, fault_rate: float = 0.0) -> dict[str, Any]:
    """``concurrency`` ``poll_jobs`` requests at once, ``rounds`` times, to one served process, while the
    jobs move on by the clock (so concurrent ticks see the same new states and race to commit them)."""
    rng = random.Random(seed)
    started = time.monotonic()
    specs = make_jobs(jobs, rng, f"ovl{uuid.uuid4().hex[:6]}", after_s=step_s)
    env = bench.function_env(RELAY_REQUEST_TIMEOUT_S=2, RELAY_MAX_ATTEMPTS=3, RELAY_TICK_DEADLINE_S=60)
    server = serve("poll_jobs", env)
    for name in specs:
        bench.store.track(name)
    bench.sim.add_jobs(list(specs.values()))  # the clocks of the timelines start now
    if fault_rate:
        bench.sim.configure(random_faults={"rate": fault_rate, "kinds": ["429", "503"], "seed": seed})
    outcomes = collections.Counter()
    changed = 0
    names = list(specs)
    overlapping = 0
    try:
        for _ in range(rounds):
            barrier = threading.Barrier(concurrency)
            spans: list[tuple[float, float]] = []

            def one(url: str = server.url, barrier: threading.Barrier = barrier, spans=spans) -> None:
                nonlocal changed
                barrier.wait()
                t0 = time.monotonic()
                outcome, summary = post_tick(url)
                spans.append((t0, time.monotonic()))
                outcomes[outcome] += 1
                if summary and outcome == "ok":
                    changed += int(summary.get("changed", 0))

            threads = [threading.Thread(target=one) for _ in range(concurrency)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            if len(spans) == concurrency and max(s for s, _ in spans) < min(e for _, e in spans):
                overlapping += 1  # every tick of the round was running at one moment
            time.sleep(step_s * rng.uniform(0.3, 1.2))
        deadline = time.monotonic() + 60
        while not all_settled(bench, names) and time.monotonic() < deadline:
            outcome, _ = post_tick(server.url)
            outcomes[outcome] += 1
            time.sleep(step_s / 2)
    finally:
        server.stop()
        if fault_rate:
            bench.sim.configure(random_faults=None)
    result = verify_state_streams(bench, specs, bench.pull())
    if outcomes["failed"] or outcomes["cut"]:
        result["problems"].append(f"{outcomes['failed'] + outcomes['cut']} overlapping tick(s) did not answer 200")
    result.update({
        "phase": "overlapping_ticks", "concurrency": concurrency, "rounds": rounds,
        "rounds_fully_overlapping": overlapping, "ticks_started": sum(outcomes.values()),
        "ticks_completed": outcomes["ok"], "ticks_failed": outcomes["failed"] + outcomes["cut"],
        "changes_committed": changed, "duration_s": round(time.monotonic() - started, 1),
    })
    return result


# -- phase 3: SIGKILL the reactor mid-copy ---------------------------------------------------------------------


class SlowProxy(FaultProxy):
    """``devtools.faultproxy.FaultProxy`` with a fixed delay before every request it forwards."""

    def __init__(self, target: str, delay_s: float) -> None:
        super().__init__(target)
        self.delay_s = delay_s
        self._server.handle_error = lambda request, client_address: None  # peers killed mid-request: expected

    def _should_fail(self, method: str, path: str) -> bool:
        time.sleep(self.delay_s)
        return super()._should_fail(method, path)


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - GCS's md5Hash, not security


def reactor_crash(bench: Bench, *, vertex_jobs: int = 3, objects: int = 60, gemini_jobs: int = 1,
                  file_lines: int = 12000, line_bytes: int = 1000, kills: int = 3, proxy_delay_s: float = 0.06,
                  copy_lease_s: float = 2.0, seed: int = 3) -> dict[str, Any]:
    """Kill a served ``on_job_event`` mid-copy ``kills`` times, redeliver until acked, verify the outputs."""
    if not bench.gcs_url:
        raise ValueError("the reactor phase needs fake-gcs-server (bench.gcs_url)")
    rng = random.Random(seed)
    started = time.monotonic()
    gcs = FakeGcs(bench.gcs_url)
    proxy = SlowProxy(bench.gcs_url, proxy_delay_s).start()
    tag = f"rx{uuid.uuid4().hex[:6]}"
    src, dst = gcs.bucket("soak-src"), gcs.bucket("soak-dst")
    specs, expected = _copy_sources(gcs, src, tag, rng, vertex_jobs=vertex_jobs, objects=objects,
                                    gemini_jobs=gemini_jobs, file_lines=file_lines, line_bytes=line_bytes)
    run = _CopyRun.succeeded(bench, gcs, dst, specs, copy_lease_s)
    _expect_responses_files(bench, specs, expected)
    env = bench.function_env(STORAGE_EMULATOR_HOST=proxy.url, RELAY_COPY_LEASE_S=copy_lease_s,
                             RELAY_MAX_ATTEMPTS=3)
    try:
        killed = _kill_mid_copy(run, env, kills, rng)
        generations, duplicate_codes = _redeliver_until_acked(run, env)
        checked = _check_copies(run, expected, generations, duplicate_codes)
    finally:
        proxy.stop()
        gcs.close()
    names, deliveries, ready_ids = run.names, run.deliveries, checked["ready_ids"]
    return {
        "phase": "reactor_crash", "jobs": len(names), "kills": kills, "kills_mid_copy": killed["mid_copy"],
        "kills_with_partial_outputs": killed["partial"], "partial_objects_left_by_kills": len(killed["partial_seen"]),
        "takeovers_of_killed_copies": killed["takeovers"],
        "deliveries": sum(deliveries.values()) + len(duplicate_codes),
        "deliveries_by_status": {str(k): v for k, v in sorted(deliveries.items())},
        "busy_answers_500": deliveries[500], "duplicate_deliveries": len(duplicate_codes),
        "objects_copied": checked["objects"], "bytes_copied": checked["bytes"],
        "manifests": sum(1 for n in names if ready_ids.get(n)), "outputs_ready_ids": sum(map(len, ready_ids.values())),
        "outputs_failed_events": checked["failed_events"], "problems": checked["problems"],
        "duration_s": round(time.monotonic() - started, 1),
    }


def _copy_sources(gcs: FakeGcs, src: str, tag: str, rng: random.Random, *, vertex_jobs: int, objects: int,
                  gemini_jobs: int, file_lines: int, line_bytes: int) -> tuple[list[dict], dict[str, dict]]:
    """The jobs' specs, and what each copy must produce: job -> relative name -> (size, md5). The Vertex jobs'
    prediction files are written to ``src`` now; a Gemini job's responses file is known once it succeeds."""
    expected: dict[str, dict[str, tuple[int, str]]] = {}
    specs = []
    for i in range(vertex_jobs):
        run_dir = f"{tag}/run-{i}/prediction-model-2026-01-01T00:00:00.000000Z"
        files = {}
        for j in range(objects):
            data = (f'{{"job": {i}, "row": {j}}}\n' * rng.randint(1, 400)).encode()
            rel = f"predictions_{j:05d}.jsonl" if j % 7 else f"errors/errors_{j:05d}.jsonl"
            gcs.put(src, f"{run_dir}/{rel}", data)
            files[rel] = (len(data), _md5(data))
        spec = vertex_spec("soak-proj", "us-central1", f"{tag}-v{i}", ["RUNNING", "SUCCEEDED"],
                           output={"kind": "gcs", "uri": f"gs://{src}/{run_dir}"})
        expected[spec["name"]] = files
        specs.append(spec)
    for i in range(gemini_jobs):
        spec = gemini_spec(f"{tag}-g{i}", ["RUNNING", "SUCCEEDED"],
                           output={"kind": "file", "file_id": f"batch-{tag}-g{i}-" + "f" * 40,
                                   "lines": file_lines, "line_bytes": line_bytes})
        expected[spec["name"]] = {}  # filled from the simulator's download (_expect_responses_files)
        specs.append(spec)
    return specs, expected


def _expect_responses_files(bench: Bench, specs: list[dict], expected: dict[str, dict]) -> None:
    """A Gemini job's copy must hold its responses file as the simulator serves it."""
    for spec in specs:
        if spec["output"]["kind"] == "file":
            url = f"{bench.settings.gemini_base_url}/download/v1beta/files/{spec['output']['file_id']}:download"
            data = httpx.get(url, params={"alt": "media"}, timeout=120,
                             headers={"x-goog-api-key": bench.settings.gemini_api_key or ""}).content
            expected[spec["name"]] = {"responses.jsonl": (len(data), _md5(data))}


@dataclasses.dataclass
class _CopyRun:
    """What the reactor phase's steps share: the jobs, their triggering events, where their copies go, and
    the deliveries counted by status."""

    bench: Bench
    store: Any
    gcs: FakeGcs
    dst: str
    copy_lease_s: float
    names: list[str]
    prefixes: dict[str, str]  # job -> its destination prefix in ``dst``
    triggers: dict[str, Message]  # job -> its stateChanged event to SUCCEEDED
    deliveries: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    @classmethod
    def succeeded(cls, bench: Bench, gcs: FakeGcs, dst: str, specs: list[dict], copy_lease_s: float) -> _CopyRun:
        """The jobs created in the simulator, tracked, and ticked (in this process) until they succeed."""
        bench.sim.add_jobs(specs)
        prefixes = {}
        for spec in specs:
            prefixes[spec["name"]] = spec["name"].rsplit("/", 1)[-1]
            bench.store.track(spec["name"], destination=f"gs://{dst}/{prefixes[spec['name']]}")
        names = [s["name"] for s in specs]
        for _ in range(6):
            bench.tick()
            if all((bench.store.get(n) or {}).get("terminal") for n in names):
                break
        triggers = {m.job: m for m in bench.pull(quiet_s=0.5) if m.type == STATE_CHANGED
                    and m.attributes.get("state") == "JOB_STATE_SUCCEEDED"}
        missing = set(names) - set(triggers)
        if missing:
            raise RuntimeError(f"jobs did not succeed: {sorted(missing)}")
        return cls(bench, bench.store, gcs, dst, copy_lease_s, names, prefixes, triggers)

    def record(self, name: str) -> dict:
        return self.store.get(name) or {}

    def copy_status(self, name: str) -> str | None:
        return (self.record(name).get("copy") or {}).get("status")

    def claimed_since(self, since: dt.datetime) -> list[str]:
        """Jobs whose copy was claimed (by a delivery) at or after ``since``: ``copying`` with a lease that
        ends ``copy_lease_s`` after the claim."""
        limit = since + dt.timedelta(seconds=self.copy_lease_s)
        out = []
        for n in self.names:
            rec = self.record(n)
            lease = rec.get("copy_lease_until")
            if (rec.get("copy") or {}).get("status") == "copying" and lease is not None and lease >= limit:
                out.append(n)
        return out

    def partial(self, jobs: list[str]) -> set[str]:
        """Objects already written by these copies while their manifest is not (yet) there."""
        out: set[str] = set()
        for n in jobs:
            present = set(self.gcs.objects(self.dst, self.prefixes[n] + "/"))
            if f"{self.prefixes[n]}/_manifest.json" not in present:
                out |= present
        return out

    def manifest_generation(self, name: str) -> str | None:
        key = f"{self.prefixes[name]}/_manifest.json"
        return self.gcs.objects(self.dst, key).get(key, {}).get("generation")


def _kill_mid_copy(run: _CopyRun, env: dict[str, str], kills: int, rng: random.Random) -> dict[str, Any]:
    """``kills`` rounds: serve ``on_job_event``, deliver every unfinished copy's event (again on a 500, as
    Pub/Sub retries), SIGKILL the process once it copies (most often with some objects written)."""
    mid_copy = partial_kills = takeovers = 0
    partial_seen: set[str] = set()
    claimed_before: set[str] = set()
    for k in range(kills):
        todo = [n for n in run.names if run.copy_status(n) not in ("done", "failed")]
        if not todo:
            break
        server = serve("on_job_event", env, signature="cloudevent")
        round_start = dt.datetime.now(dt.UTC)
        stop = threading.Event()
        codes: list[int] = []
        threads = [threading.Thread(target=_deliver_until_claimed, args=(run, n, server.url, codes, stop))
                   for n in todo]
        for t in threads:
            t.start()
        # kill at a random moment once this process copies (most often with some objects written)
        wait_until(lambda since=round_start: bool(run.claimed_since(since)), 30)
        if k == 0 or rng.random() < 0.7:
            wait_until(lambda since=round_start: bool(run.partial(run.claimed_since(since))), 10)
        time.sleep(rng.uniform(0.0, 0.3))
        copying = run.claimed_since(round_start)
        written = run.partial(copying)
        sigkill(server)
        stop.set()
        for t in threads:
            t.join(60)
        for code in codes:
            run.deliveries[code] += 1
        takeovers += len(set(copying) & claimed_before)
        claimed_before |= set(copying)
        mid_copy += bool(copying)
        partial_kills += bool(written)
        partial_seen |= written
        log(f"reactor kill {k + 1}/{kills}: {len(copying)} copies in flight, {len(written)} of their objects "
            "written, no manifest yet")
    takeovers += len({n for n in claimed_before if run.copy_status(n) == "copying"})
    return {"mid_copy": mid_copy, "partial": partial_kills, "partial_seen": partial_seen, "takeovers": takeovers}


def _deliver_until_claimed(run: _CopyRun, name: str, url: str, codes: list[int], stop: threading.Event) -> None:
    """Pub/Sub's retry: a delivery answered 500 (the copy is leased by a delivery that died with the last
    process) comes again a little later, until one claims the copy."""
    while not stop.is_set():
        code = deliver(url, run.triggers[name])
        codes.append(code)
        if code != 500:
            return
        stop.wait(0.5)


def _redeliver_until_acked(run: _CopyRun, env: dict[str, str]) -> tuple[dict[str, str | None], list[int]]:
    """Redelivery, as Pub/Sub does it: every unacked event again until it is acked (2xx); then the duplicates
    Pub/Sub may still send (acked, nothing copied again). Returns (manifest generations, duplicates' codes)."""
    names = run.names
    server = serve("on_job_event", env, signature="cloudevent")
    try:
        acked: set[str] = set()
        deadline = time.monotonic() + 120
        while len(acked) < len(names) and time.monotonic() < deadline:
            results: dict[str, int] = {}

            def again(name: str, url: str = server.url, results: dict[str, int] = results) -> None:
                results[name] = deliver(url, run.triggers[name])

            threads = [threading.Thread(target=again, args=(n,)) for n in names if n not in acked]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            for n, code in results.items():
                run.deliveries[code] += 1
                if 200 <= code < 300:
                    acked.add(n)
            if len(acked) < len(names):
                time.sleep(0.5)
        generations = {n: run.manifest_generation(n) for n in names}
        duplicate_codes = [deliver(server.url, run.triggers[n]) for n in names for _ in range(2)]
    finally:
        server.stop()
    return generations, duplicate_codes


def _check_copies(run: _CopyRun, expected: dict[str, dict], generations: dict[str, str | None],
                  duplicate_codes: list[int]) -> dict[str, Any]:
    """The events on the subscription and every job's destination, held against the sources."""
    messages = run.bench.pull()
    problems: list[str] = []
    copied_objects = copied_bytes = 0
    ready_ids: dict[str, set[str]] = collections.defaultdict(set)
    failed_events = 0
    for m in messages:
        if m.type == OUTPUTS_READY:
            ready_ids[m.job].add(m.id)
        elif m.type == OUTPUTS_FAILED:
            failed_events += 1
            problems.append(f"{m.job}: outputsFailed {m.json()['error']}")
    if any(code != 200 for code in duplicate_codes):
        problems.append(f"duplicate deliveries answered {duplicate_codes}")
    for name in run.names:
        found, checked = _copy_problems(run, name, expected[name], generations[name], ready_ids.get(name))
        problems += found
        if checked:
            copied_objects += len(expected[name])
            copied_bytes += sum(size for size, _ in expected[name].values())
    return {"problems": problems, "objects": copied_objects, "bytes": copied_bytes, "ready_ids": ready_ids,
            "failed_events": failed_events}


def _copy_problems(run: _CopyRun, name: str, want: dict[str, tuple[int, str]], generation: str | None,
                   ready: set[str] | None) -> tuple[list[str], bool]:
    """One job's copy: the destination holds the sources and one manifest listing them, the record says
    done once, one outputsReady id, the manifest never rewritten. Returns (problems, whether the copy was
    checked: not when there is not exactly one manifest)."""
    record = run.store.get(name)
    copy = record["copy"]
    prefix = run.prefixes[name] + "/"
    found = {o[len(prefix):]: meta for o, meta in run.gcs.objects(run.dst, prefix).items()}
    manifests = [o for o in found if o.endswith("_manifest.json")]
    if manifests != ["_manifest.json"]:
        return [f"{name}: manifests {manifests}"], False
    manifest = json.loads(run.gcs.get(run.dst, prefix + "_manifest.json"))
    problems = []
    got = {rel: (int(meta["size"]), meta.get("md5Hash")) for rel, meta in found.items() if rel != "_manifest.json"}
    if got != want:
        problems.append(f"{name}: destination differs from the source ({len(got)} vs {len(want)} objects)")
    listed = {o["name"]: (o["size"], o["crc32c"]) for o in manifest["objects"]}
    reported = {rel: (int(meta["size"]), meta.get("crc32c")) for rel, meta in found.items()
                if rel != "_manifest.json"}
    if listed != reported:
        problems.append(f"{name}: manifest does not list what GCS holds")
    if manifest["total_bytes"] != sum(size for size, _ in want.values()):
        problems.append(f"{name}: manifest total_bytes {manifest['total_bytes']}")
    if (copy["status"], copy["announced"], copy["objects"], copy["attempt"]) != ("done", True, len(want), 1):
        problems.append(f"{name}: copy {copy}")
    if copy["bytes"] != manifest["total_bytes"]:
        problems.append(f"{name}: copy.bytes {copy['bytes']} != {manifest['total_bytes']}")
    if ready != {f"{record['tracking_id']}-copy1-ready"}:
        problems.append(f"{name}: outputsReady ids {sorted(ready or ())}")
    if generation is None or generation != run.manifest_generation(name):
        problems.append(f"{name}: the manifest was rewritten by a duplicate delivery")
    return problems, True


# -- the command -----------------------------------------------------------------------------------------------


def _settings_for(services: dict[str, emulators.Service], tag: str):
    from batch_relay.settings import Settings

    env = {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "FIRESTORE_EMULATOR_HOST": services["firestore"].host,
        "PUBSUB_EMULATOR_HOST": services["pubsub"].host,
        "STORAGE_EMULATOR_HOST": services["gcs"].url,
        "RELAY_COLLECTION": f"soak_{tag}", "RELAY_EVENTS_TOPIC": f"soak-{tag}",
        "RELAY_GEMINI_API_KEY": f"soak-key-{tag}",
        "RELAY_GEMINI_BASE_URL": services["simulator"].url, "RELAY_VERTEX_BASE_URL": services["simulator"].url,
        "RELAY_TICK_DEADLINE_S": "60", "RELAY_REQUEST_TIMEOUT_S": "2",
        "RELAY_MAX_POLL_INTERVAL_S": "0",  # every tick: the soak ticks far faster than once a minute
        "RELAY_ALLOWED_BUCKETS": "*",  # the soak's buckets are fake-gcs-server's: any of them (the explicit opt-in)
    }
    os.environ.update({k: env[k] for k in ("GOOGLE_CLOUD_PROJECT", "FIRESTORE_EMULATOR_HOST",
                                           "PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST")})
    return Settings.from_env(env)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devtools.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300, help="jobs in the poller crash phase")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs of the poller")
    parser.add_argument("--fault-rate", type=float, default=0.15, help="share of status GETs answered 429/500/503")
    parser.add_argument("--slow-faults", type=int, default=60, help="slow replies (client timeouts) planted")
    parser.add_argument("--drop-faults", type=int, default=30, help="dropped connections planted")
    parser.add_argument("--kill-after-max", type=float, default=4.0,
                        help="each kill comes 0.3..this many seconds after the served poller is up")
    parser.add_argument("--overlap-jobs", type=int, default=60)
    parser.add_argument("--overlap-concurrency", type=int, default=4)
    parser.add_argument("--overlap-rounds", type=int, default=12)
    parser.add_argument("--overlap-step-s", type=float, default=1.5)
    parser.add_argument("--step-s", type=float, nargs=2, default=(1.0, 12.0), metavar=("MIN", "MAX"),
                        help="seconds between the states of the jobs that move on by the clock")
    parser.add_argument("--reactor-vertex-jobs", type=int, default=6)
    parser.add_argument("--reactor-objects", type=int, default=120)
    parser.add_argument("--reactor-gemini-jobs", type=int, default=2)
    parser.add_argument("--reactor-kills", type=int, default=6)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--phases", default="poller,overlap,reactor")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    phases = set(args.phases.split(","))
    services: dict[str, emulators.Service] = {}
    report: dict[str, Any] = {"seed": seed, "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                              "cpus": os.cpu_count()}
    ok = True
    try:
        log("starting the emulators and the simulator")
        services["firestore"] = emulators.start_firestore()
        services["pubsub"] = emulators.start_pubsub()
        services["gcs"] = emulators.start_fake_gcs()
        services["simulator"] = emulators.start_simulator()
        sim = SimulatorClient(services["simulator"].url)
        runs = [
            ("poller", lambda b: poller_crash(b, jobs=args.jobs, kills=args.kills, fault_rate=args.fault_rate,
                                              slow_faults=args.slow_faults, drop_faults=args.drop_faults,
                                              kill_window=(0.3, args.kill_after_max),
                                              step_s=tuple(args.step_s), polls=(1, 4), seed=seed,
                                              max_recovery_ticks=200)),
            ("overlap", lambda b: overlapping_ticks(b, jobs=args.overlap_jobs, concurrency=args.overlap_concurrency,
                                                    rounds=args.overlap_rounds, step_s=args.overlap_step_s,
                                                    seed=seed + 1, fault_rate=0.1)),
            ("reactor", lambda b: reactor_crash(b, vertex_jobs=args.reactor_vertex_jobs,
                                                objects=args.reactor_objects, gemini_jobs=args.reactor_gemini_jobs,
                                                kills=args.reactor_kills, file_lines=30000, seed=seed + 2)),
        ]
        for phase, run in runs:
            if phase not in phases:
                continue
            sim.reset()
            bench = Bench.create(_settings_for(services, uuid.uuid4().hex[:8]), sim, services["gcs"].url)
            try:
                log(f"phase {phase}")
                result = run(bench)
            finally:
                bench.close()
            problems = result.pop("problems")
            result["problems"] = len(problems)
            for line in problems[:20]:
                log(f"PROBLEM {line}")
            ok = ok and not problems
            report[phase] = result
            log(json.dumps(result))
        sim.close()
    finally:
        for service in services.values():
            service.stop()
    print(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Run a function under the CPU share Cloud Run functions give its memory: a CFS quota in a cgroup.

Cloud Run functions derive a function's vCPU from its memory unless ``available_cpu`` is set (128Mi: 0.083,
256Mi: 0.167, 512Mi: 0.333, 1Gi: 0.583, 2Gi: 1, 4Gi and 8Gi: 2, 16Gi: 4, 32Gi: 8). A benchmark measured on
whole cores says nothing about an instance holding a third of one; this module gives a process that third:

    with CpuShare.for_memory("512Mi") as share:       # None when cgroups cannot be used here (says why)
        group = share.group("poll_jobs")              # one cgroup, cpu.cfs_quota_us = 33333 per 100000
        argv = group.wrap([sys.executable, "-m", "functions_framework", ...])   # joins it, then execs
        with group.holding_self():                     # or this process itself, for the block
            ...
    # every cgroup removed (its processes must have ended, or they are moved back to the root first)

Each ``group`` is its own quota: two instances under 1/3 vCPU each, as on Cloud Run, not 1/3 shared.
cgroup v1 (``/sys/fs/cgroup/cpu``: ``cpu.cfs_period_us`` and ``cpu.cfs_quota_us``) and v2 (``cpu.max``)
are both handled; writing them needs root (or a delegated cgroup). The emulators and the simulator stand
for Google's services and stay outside every quota.

    python -m devtools.cpushare 512Mi -- python -c "..."   # one command under the share, for a quick look
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

CGROUP_ROOT = Path(os.environ.get("BENCH_CGROUP_ROOT", "/sys/fs/cgroup"))
PERIOD_US = 100_000
# Cloud Run functions: memory -> vCPU when available_cpu is not set (Google's "Configure memory and vCPU
# limits" table).
MEMORY_VCPU = {128: 0.083, 256: 0.167, 512: 0.333, 1024: 0.583, 2048: 1.0, 4096: 2.0, 8192: 2.0, 16384: 4.0,
               32768: 8.0}
ENV = "BENCH_CPU_SHARE"
DEFAULT = "512Mi"


def memory_mib(memory: str) -> int:
    """``512Mi`` / ``1Gi`` (as in Terraform's ``available_memory``) in MiB."""
    match = re.fullmatch(r"\s*(\d+)\s*(Mi|Gi)\s*", memory)
    if not match:
        raise ValueError(f"memory must look like 512Mi or 1Gi, not {memory!r}")
    return int(match.group(1)) * (1024 if match.group(2) == "Gi" else 1)


def vcpu_for(share: str) -> float | None:
    """The vCPU a ``--cpu-share`` value stands for: ``off`` -> None (whole cores), ``512Mi`` -> 0.333 (the
    memory tier's share; a size between tiers gets the next tier up, as Cloud Run rounds up), ``0.5`` or
    ``1`` -> that many vCPU (an explicit ``available_cpu``)."""
    text = share.strip()
    if text.lower() in ("off", "none", ""):
        return None
    if re.fullmatch(r"\d+(\.\d+)?", text):
        vcpu = float(text)
        if not 0.01 <= vcpu <= 64:
            raise ValueError(f"a vCPU share must be between 0.01 and 64, not {text}")
        return vcpu
    mib = memory_mib(text)
    for tier, vcpu in sorted(MEMORY_VCPU.items()):
        if mib <= tier:
            return vcpu
    raise ValueError(f"no Cloud Run functions memory tier holds {text} (at most 32Gi)")


def quota_us(vcpu: float, period_us: int = PERIOD_US) -> int:
    """CFS quota per period for ``vcpu`` (at least 1 ms, the kernel's smallest)."""
    return max(1000, int(round(vcpu * period_us)))


def label(vcpu: float | None) -> str:
    return "whole cores" if vcpu is None else f"{vcpu:.3g} vCPU"


class Group:
    """One cgroup with its own quota."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def add(self, pid: int) -> None:
        """Move ``pid`` (the whole process: every thread) into this cgroup; children it forks later follow."""
        self.procs.write_text(str(pid))

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run so that it joins this cgroup before it starts (through ``sh``'s ``exec``): the
        interpreter's start-up is under the quota too, as an instance's cold start is."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.procs), *argv]

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in self.procs.read_text().split()]
        except OSError:
            return []

    def throttled(self) -> dict[str, int]:
        """``cpu.stat``: periods, throttled periods, throttled time (ns in v1, us in v2)."""
        try:
            lines = (self.path / "cpu.stat").read_text().split("\n")
        except OSError:
            return {}
        return {k: int(v) for k, v in (line.split() for line in lines if line.strip())}

    @contextlib.contextmanager
    def holding_self(self) -> Iterator[Group]:
        """This process under the quota while the block runs, back in the root cgroup after."""
        self.add(os.getpid())
        try:
            yield self
        finally:
            (self.path.parent / "cgroup.procs").write_text(str(os.getpid()))


class CpuShare:
    """Cgroups of one quota, created on demand and removed on ``close()`` (and at interpreter exit)."""

    def __init__(self, vcpu: float, base: Path, version: int) -> None:
        self.vcpu = vcpu
        self.base = base  # the cgroup hierarchy's root we create our groups under
        self.version = version
        self.groups: list[Group] = []
        self._tag = f"batch-relay-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        atexit.register(self.close)

    @staticmethod
    def find() -> tuple[Path, int] | None:
        """Where cpu quotas can be written here: (hierarchy root, 1 or 2), or None."""
        v1 = CGROUP_ROOT / "cpu"
        if (v1 / "cpu.cfs_quota_us").exists() and os.access(v1, os.W_OK):
            return v1, 1
        for v2 in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
            controllers = v2 / "cgroup.controllers"
            if controllers.exists() and "cpu" in controllers.read_text().split() and os.access(v2, os.W_OK):
                return v2, 2
        return None

    @classmethod
    def for_memory(cls, share: str, *, report=print) -> CpuShare | None:
        """A ``CpuShare`` for a ``--cpu-share`` value, or None (``off``, or no usable cgroup: ``report`` says
        so and the bench runs on whole cores only)."""
        vcpu = vcpu_for(share)
        if vcpu is None:
            return None
        found = cls.find()
        if found is None:
            report(f"cpu share {share}: no writable cgroup cpu controller under {CGROUP_ROOT} (needs root or a "
                   f"delegated cgroup); measuring on whole cores only")
            return None
        share_obj = cls(vcpu, *found)
        try:
            if share_obj.version == 2:  # a child cgroup has cpu.max only once its parent delegates the controller
                subtree = found[0] / "cgroup.subtree_control"
                if "cpu" not in subtree.read_text().split():
                    subtree.write_text("+cpu")
            share_obj.group("probe")
        except OSError as exc:
            share_obj.close()
            report(f"cpu share {share}: cannot create a cgroup under {found[0]} ({exc}); measuring on whole "
                   f"cores only")
            return None
        return share_obj

    def group(self, name: str) -> Group:
        path = self.base / f"{self._tag}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{len(self.groups)}"
        path.mkdir()
        group = Group(path, self.version)
        self.groups.append(group)
        if self.version == 1:
            (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (path / "cpu.cfs_quota_us").write_text(str(quota_us(self.vcpu)))
        else:
            (path / "cpu.max").write_text(f"{quota_us(self.vcpu)} {PERIOD_US}")
        return group

    def close(self) -> None:
        """Remove every cgroup made here; a process still in one is moved back to the root first."""
        for group in reversed(self.groups):
            for pid in group.pids():
                with contextlib.suppress(OSError):
                    (self.base / "cgroup.procs").write_text(str(pid))
            try:
                group.path.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                print(f"cpushare: could not remove {group.path}: {exc}", file=sys.stderr)
        self.groups.clear()

    def __enter__(self) -> CpuShare:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def shares_to_measure(value: str | None) -> list[str]:
    """The shares a bench measures side by side: always whole cores (``off``) first, then ``value`` (the
    ``--cpu-share`` argument, else ``BENCH_CPU_SHARE``, else 512Mi) unless it is ``off``."""
    chosen = value if value is not None else os.environ.get(ENV, DEFAULT)
    return ["off"] if vcpu_for(chosen) is None else ["off", chosen]


def add_argument(parser) -> None:
    parser.add_argument("--cpu-share", default=None, metavar="MEMORY|VCPU|off",
                        help=f"also measure under the CPU quota of this memory size (Cloud Run functions' vCPU "
                             f"for it) or this many vCPU; off: whole cores only (default: ${ENV} or {DEFAULT})")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m devtools.cpushare MEMORY|VCPU -- command ...", file=sys.stderr)
        return 2
    share = CpuShare.for_memory(args[0], report=lambda m: print(m, file=sys.stderr))
    if share is None:
        return subprocess.call(args[2:])
    with share:
        return subprocess.call(share.group("command").wrap(args[2:]))


if __name__ == "__main__":
    raise SystemExit(main())

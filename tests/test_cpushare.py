"""devtools/cpushare.py: the vCPU each memory size stands for, and the cgroup a bench puts a function in."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from devtools import cpushare


@pytest.mark.parametrize(("share", "vcpu"), [
    ("off", None), ("128Mi", 0.083), ("256Mi", 0.167), ("512Mi", 0.333), ("1Gi", 0.583), ("1024Mi", 0.583),
    ("2Gi", 1.0), ("4Gi", 2.0), ("32Gi", 8.0), ("300Mi", 0.333), ("0.5", 0.5), ("1", 1.0)])
def test_a_share_is_the_vcpu_cloud_run_functions_give_that_memory(share, vcpu):
    assert cpushare.vcpu_for(share) == vcpu


@pytest.mark.parametrize("share", ["512", "512MB", "64Gi", "0", "-1"])
def test_a_share_that_is_no_memory_size_or_vcpu_is_refused(share):
    with pytest.raises(ValueError):
        cpushare.vcpu_for(share)


def test_the_quota_is_the_share_of_each_period():
    assert cpushare.quota_us(0.333) == 33300
    assert cpushare.quota_us(1.0) == 100_000
    assert cpushare.quota_us(0.001) == 1000  # the kernel's smallest


def test_whole_cores_are_always_measured_first(monkeypatch):
    monkeypatch.delenv(cpushare.ENV, raising=False)
    assert cpushare.shares_to_measure(None) == ["off", "512Mi"]
    assert cpushare.shares_to_measure("off") == ["off"]
    monkeypatch.setenv(cpushare.ENV, "1Gi")
    assert cpushare.shares_to_measure(None) == ["off", "1Gi"]
    assert cpushare.shares_to_measure("2Gi") == ["off", "2Gi"]


def test_a_wrapped_command_runs_in_its_own_cgroup_under_the_quota_and_the_cgroup_goes_after():
    share = cpushare.CpuShare.for_memory("512Mi", report=lambda _message: None)
    if share is None:
        pytest.skip("no writable cgroup cpu controller here")
    with share:
        group = share.group("test")
        if share.version == 1:
            assert (group.path / "cpu.cfs_quota_us").read_text().strip() == "33300"
            assert (group.path / "cpu.cfs_period_us").read_text().strip() == "100000"
        else:
            assert (group.path / "cpu.max").read_text().split() == ["33300", "100000"]
        child = subprocess.run(group.wrap([sys.executable, "-c", "print(open('/proc/self/cgroup').read())"]),
                               capture_output=True, text=True, check=True).stdout
        assert group.path.name in child
        with group.holding_self():
            assert os.getpid() in group.pids()
        assert group.pids() == []
    assert not group.path.exists()

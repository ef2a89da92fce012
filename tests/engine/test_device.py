"""The process-wide allocator tuning done for CPU work (sruc.engine.device.tune_cpu_allocator)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from sruc.engine import device

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

# Like forward passes: six feature maps of 8 and 20 MB alive at once, then
# freed; prints whether the allocator is tuned and the page faults of the last
# 20 rounds. (Untuned, glibc's adaptive thresholds make that anywhere from 0
# to thousands of faults depending on the history of the heap; a VDSR batch
# measured 25,000 per image.)
_PROBE = """
import resource, sys, torch
from sruc.engine import device
print(device.tune_cpu_allocator())
def layers():
    maps = [torch.ones((2 + 3 * (i % 2)) << 20) for i in range(6)]
    del maps
for _ in range(5):
    layers()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    layers()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(env: dict[str, str]) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return out[0], int(out[1])


@glibc
def test_tuned_allocator_reuses_large_buffers_without_page_faults() -> None:
    env = {k: v for k, v in os.environ.items() if k != device.NO_MALLOPT_ENV}
    tuned, faults = _probe(env)
    assert tuned == "True"
    assert faults < 100  # 20 rounds of 72 MB: 350,000 pages if they were fresh


@glibc
def test_opt_out_leaves_the_allocator_alone() -> None:
    tuned, _ = _probe({**os.environ, device.NO_MALLOPT_ENV: "1"})
    assert tuned == "False"


def test_tuning_is_done_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(device.NO_MALLOPT_ENV, raising=False)
    monkeypatch.setattr(device, "_allocator_tuned", None)
    first = device.tune_cpu_allocator()
    assert first == (platform.libc_ver()[0] == "glibc")
    assert device.tune_cpu_allocator() is first


def test_preparing_a_model_tunes_the_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    from sruc.engine import pipeline

    monkeypatch.setattr(device, "_allocator_tuned", None)
    pipeline.prepare_model("bicubic", device="cpu")
    assert device._allocator_tuned is not None

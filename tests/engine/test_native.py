"""The compiled Winograd transforms (engine/native.py): built once, cached verified,
and every way they can be missing falls back to the PyTorch transforms."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from helpers import kernels_without_openmp
from sruc.engine import native, winograd
from sruc.engine.winograd import WinogradStack, transform_weights

needs_cc = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None and shutil.which("clang") is None,
    reason="no C compiler on this machine",
)


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty cache folder and no kernels remembered; the session's are restored after."""
    monkeypatch.setenv("SRUC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(native.ENV_NATIVE, raising=False)
    native.reset()
    yield tmp_path / "cache" / native.CACHE_SUBDIR
    native.reset()


def _libraries(folder: Path) -> list[Path]:
    return sorted(folder.glob("winograd-*.so"))


def _stack_result(kernels: native.Kernels | None) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, 32, 3, 3, generator=g) * 0.1
    b = torch.randn(32, generator=g)
    x = torch.rand(1, 32, 13, 10, generator=g)
    return WinogradStack([(w, b, True), (w, None, False)], kernels)(x)


@needs_cc
def test_built_once_cached_with_its_hash_and_loaded_after(fresh: Path) -> None:
    k = native.kernels()
    assert k is not None and native.status().startswith("compiled")
    (lib,) = _libraries(fresh)
    assert k.path == lib
    sidecar = lib.with_name(lib.name + ".sha256").read_text().strip()
    assert sidecar == hashlib.sha256(lib.read_bytes()).hexdigest()
    stamp = lib.stat().st_mtime_ns
    native.reset()
    assert native.kernels() is not None
    assert lib.stat().st_mtime_ns == stamp  # loaded, not built again
    # F(6x6, 3x3) compiled against F(4x4, 3x3) in PyTorch: fp32 rounding apart
    torch.testing.assert_close(_stack_result(k), _stack_result(None), rtol=1e-4, atol=1e-4)


@needs_cc
def test_a_damaged_cached_library_is_rebuilt_never_loaded(fresh: Path) -> None:
    assert native.kernels() is not None
    (lib,) = _libraries(fresh)
    good = lib.read_bytes()
    # A truncated file (a full disk, a crash), as a new file: this process has the old
    # one mapped, and truncating a mapped library in place would crash it (SIGBUS), which
    # is why the cache is only ever written by rename.
    lib.unlink()
    lib.write_bytes(good[: len(good) // 2])
    native.reset()
    assert native.kernels() is not None
    assert hashlib.sha256(lib.read_bytes()).hexdigest() == hashlib.sha256(good).hexdigest()


@needs_cc
def test_an_unwritable_cache_still_gives_kernels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SRUC_CACHE_DIR", str(blocker))
    native.reset()
    try:
        k = native.kernels()
        assert k is not None and k.path is None  # loaded from the build folder
    finally:
        native.reset()


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"SRUC_NATIVE": "0"}, "off (SRUC_NATIVE=0)"),
        ({"CC": "/nonexistent/cc"}, "no C compiler found"),
        ({"CC": "false"}, "the C compiler failed"),
    ],
)
def test_no_kernels_means_the_pytorch_transforms(
    fresh: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], said: str
) -> None:
    if env.get("CC") == "false" and shutil.which("false") is None:
        pytest.skip("no `false` command")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert native.kernels() is None
    assert said in native.status()
    assert _libraries(fresh) == []
    # the stack runs all the same (the engine does not change)
    want = _stack_result(None)
    assert torch.equal(_stack_result(native.kernels()), want)


@needs_cc
def test_kernels_that_fail_their_check_are_not_used_and_not_kept(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(native, "_self_check", lambda k: False)
    assert native.kernels() is None
    assert "did not match" in native.status()
    assert _libraries(fresh) == []


@needs_cc
@pytest.mark.parametrize(
    "name",
    [
        "sruc_wino6_layer",
        "sruc_conv_head",
        "sruc_conv_tail",
        "sruc_wino6_backward",
        "sruc_conv_head_wgrad",
        "sruc_conv_tail_wgrad",
    ],
)
def test_the_check_catches_a_wrong_kernel(name: str) -> None:
    """Each compiled entry point is in the self-check: one that does nothing fails it."""
    k = native.kernels()
    assert k is not None and native._self_check(k)
    broken = native._load(k.path) if k.path is not None else None
    if broken is None:
        pytest.skip("the kernels are not cached: no second copy to break")
    setattr(broken, name, lambda *args: None)
    assert not native._self_check(native.Kernels(broken, k.path, k.compiler, k.flags))


@needs_cc
def test_a_build_without_openmp_still_uses_every_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Apple's clang has no OpenMP: the layer's groups then run as ranges on Python
    threads, with the same results as the OpenMP build."""
    plain = kernels_without_openmp(tmp_path)
    assert native._self_check(plain)
    parts: list[tuple[int, int]] = []
    real = winograd._run_parts

    def spy(run, groups: int, threads: int) -> None:  # type: ignore[no-untyped-def]
        parts.append((groups, threads))
        real(run, groups, threads)

    monkeypatch.setattr(winograd, "_run_parts", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        got = _stack_result(plain)
    finally:
        torch.set_num_threads(before)
    assert parts and all(t == 3 for _, t in parts)
    assert torch.equal(got, _stack_result(native.kernels()))


def test_an_odd_channel_count_runs_the_pytorch_transforms() -> None:
    from sruc.engine.winograd import Plan

    class Fake:  # never called: 12 channels are not a multiple of LANES
        pass

    plan = Plan(1, 8, 8, 12, kernels=Fake())  # type: ignore[arg-type]
    assert plan.kernels is None and plan.strips
    u = transform_weights(torch.randn(12, 12, 3, 3))
    plan.load(torch.rand(1, 12, 8, 8))
    plan.conv(u, None, True)


def test_isa_flags_honour_the_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    from sruc.engine import precision

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(precision, "_cpu_flag", lambda name: True)  # an AVX-512 CPU
    assert "-mavx512f" in native.isa_flags({})
    capped = native.isa_flags({"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert capped == ["-mavx2", "-mfma"]
    assert native.isa_flags({"ATEN_CPU_CAPABILITY": "avx2"}) == capped
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert native.isa_flags({}) == []


def test_the_generated_transforms_are_current() -> None:
    """winograd.c's F(6x6, 3x3) part is what scripts/gen_winograd6.py writes."""
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "scripts" / "gen_winograd6.py"
    spec = importlib.util.spec_from_file_location("gen_winograd6", script)
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.generated() in native.SOURCE.read_text()

"""sruc.engine.precision: one policy for inference and training, honest about hardware.

The CPU's capabilities are faked (torch's probes patched), so every branch is
checked on any machine: a bf16 CPU, an AVX-512 one without bf16, an AVX2-only
one, and a bf16 CPU capped by ONEDNN_MAX_CPU_ISA or ATEN_CPU_CAPABILITY.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import smooth_rgb
from sruc.cli import main
from sruc.engine import precision
from sruc.engine.precision import PrecisionError, resolve_precision

CPU = torch.device("cpu")
CPUS = {
    "zen4": {"_is_avx512_bf16_supported": True, "_is_avx512_supported": True},
    "skylake": {"_is_avx512_bf16_supported": False, "_is_avx512_supported": True},
    "zen1": {"_is_avx512_bf16_supported": False, "_is_avx512_supported": False},
    "sapphire-rapids": {
        "_is_avx512_bf16_supported": True,
        "_is_avx512_supported": True,
        "_is_amx_tile_supported": True,
    },
}


@pytest.fixture
def fake_cpu(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    def use(name: str, **env: str) -> None:
        flags = {"_is_amx_tile_supported": False, **CPUS[name]}
        for flag, value in flags.items():
            monkeypatch.setattr(torch.cpu, flag, lambda v=value: v, raising=False)
        for key in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)

    return use


def test_auto_picks_bf16_only_where_it_is_native(fake_cpu) -> None:  # type: ignore[no-untyped-def]
    fake_cpu("zen4")
    assert resolve_precision("auto", CPU) == "bf16"
    for name, env in [("skylake", {}), ("zen1", {}), ("zen4", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
                      ("zen4", {"ONEDNN_MAX_CPU_ISA": "avx512_core"}),
                      ("zen4", {"ATEN_CPU_CAPABILITY": "avx2"})]:  # fmt: skip
        fake_cpu(name, **env)
        assert resolve_precision("auto", CPU) == "fp32", (name, env)
    fake_cpu("zen4", ONEDNN_MAX_CPU_ISA="AVX512_CORE_AMX")  # a cap above bf16 keeps it
    assert resolve_precision("auto", CPU) == "bf16"


def test_amx_is_seen_within_the_caps(fake_cpu) -> None:  # type: ignore[no-untyped-def]
    fake_cpu("sapphire-rapids")
    assert precision.cpu_has_amx() and resolve_precision("auto", CPU) == "bf16"
    for name, env in [("zen4", {}), ("sapphire-rapids", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}),
                      ("sapphire-rapids", {"ATEN_CPU_CAPABILITY": "avx2"})]:  # fmt: skip
        fake_cpu(name, **env)
        assert not precision.cpu_has_amx(), (name, env)


def test_forced_bf16_runs_where_onednn_can_emulate_it(fake_cpu) -> None:  # type: ignore[no-untyped-def]
    fake_cpu("skylake")
    assert resolve_precision("bf16", CPU) == "bf16"
    for name, env in [("zen1", {}), ("zen4", {"ONEDNN_MAX_CPU_ISA": "AVX2"})]:
        fake_cpu(name, **env)
        with pytest.raises(PrecisionError, match="cannot run on this CPU") as e:
            resolve_precision("bf16", CPU)
        assert e.value.exit_code == 2 and "--precision fp32" in str(e.value)


def test_fp16_needs_a_gpu_and_unknown_values_are_usage_errors() -> None:
    with pytest.raises(PrecisionError, match="fp16 needs a GPU"):
        resolve_precision("fp16", CPU)
    with pytest.raises(Exception, match="unknown precision 'fp8'"):
        resolve_precision("fp8", CPU)
    assert resolve_precision("fp32", CPU) == "fp32"


@pytest.mark.parametrize("command", ["up", "train"])
def test_the_cli_says_what_the_cpu_lacks_in_one_line(
    fake_cpu, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    fake_cpu("zen4", ONEDNN_MAX_CPU_ISA="AVX2")
    Image.fromarray(smooth_rgb(40, 40)).save(tmp_path / "a.png")
    Image.fromarray(smooth_rgb(40, 40, seed=1)).save(tmp_path / "b.png")
    if command == "up":
        args = ["up", str(tmp_path / "a.png"), "-s", "2", "-o", str(tmp_path / "o.png")]
    else:
        args = ["train", str(tmp_path), "--out", str(tmp_path / "run"), "--patch-size", "16",
                "--model-config", '{"depth": 3, "width": 4}', "--steps", "1"]  # fmt: skip
    code = main([*args, "--precision", "bf16", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "lacks AVX512-BF16" in err, err
    assert "please report" not in err
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "run").exists()
    # auto under the same cap runs, in fp32.
    assert precision.cpu_has_native_bf16() is False

"""``sruc export`` and :func:`sruc.zoo.export.export_model`: ONNX and TorchScript files
that compute what sruc computes, with their contract inside, written atomically.

ONNX exports are the slow part (about a second and a half each after the first),
so one export of a tiny VDSR is shared by the tests that only read it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from helpers import Run, run_cli
from sruc.archs.bicubic import Bicubic
from sruc.archs.srcnn import SRCNN
from sruc.archs.vdsr import VDSR
from sruc.errors import ModelError, OutputError, UsageError
from sruc.zoo import checkpoint, registry
from sruc.zoo import export as ex

CONTRACT_KEYS = {
    "contract",
    "sruc_version",
    "model",
    "arch",
    "arch_config",
    "trained_scales",
    "multiscale",
    "weights_sha256",
    "receptive_radius",
    "input",
    "output",
    "value_range",
    "colour",
    "resize",
    "scale",
    "postprocess",
}


def assert_one_line_error(run: Run, code: int, *needles: str) -> None:
    """Exit ``code``, nothing on stdout, one ``error: `` line naming ``needles``."""
    assert run.code == code, run
    assert run.out == "" and "Traceback" not in run.err, run
    lines = run.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.err
    assert "unexpected" not in lines[0], lines[0]
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])


def names(folder: Path) -> list[str]:
    """Every entry of ``folder``, hidden temporary files included."""
    return sorted(p.name for p in folder.iterdir())


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reference(ckpt: Path, x: torch.Tensor) -> torch.Tensor:
    """What sruc's network computes on ``x``, loaded the way sruc loads it."""
    with torch.no_grad():
        return registry.load_model(ckpt).module(x)


@pytest.fixture(scope="module")
def vdsr_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random VDSR whose residual is visible (He init, no zero last layer)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny-vdsr.pt"
    checkpoint.save(checkpoint.from_model(VDSR(depth=6, width=8), [2, 3, 4]), path)
    return path


@pytest.fixture(scope="module")
def onnx_export(
    vdsr_ckpt: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ex.ExportResult, Path]:
    """The tiny VDSR exported to ONNX once, through the library."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    dst = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return ex.export_model(vdsr_ckpt, "onnx", dst), dst


# --------------------------------------------------------------------------- ONNX


def test_onnx_file_has_the_graph_and_contract(
    onnx_export: tuple[ex.ExportResult, Path], vdsr_ckpt: Path
) -> None:
    import onnx

    result, dst = onnx_export
    assert result.path == dst and dst.stat().st_size == result.size
    assert (result.format, result.arch, result.opset) == ("onnx", "vdsr", ex.ONNX_OPSET)
    assert result.exporter.startswith("torch.onnx dynamo")
    model = onnx.load(dst)
    onnx.checker.check_model(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17

    def dims(value: Any) -> list[str | int]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("y", "y_sr")
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    for value in (inp, out):  # N, H and W symbolic, one channel
        n, c, h, w = dims(value)
        assert c == 1 and all(isinstance(d, str) and d for d in (n, h, w))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta.keys() >= CONTRACT_KEYS
    assert meta["contract"] == ex.CONTRACT_VERSION
    assert json.loads(meta["arch_config"]) == {"channels": 1, "depth": 6, "width": 8, "kernel": 3}
    assert json.loads(meta["trained_scales"]) == [2.0, 3.0, 4.0]
    assert json.loads(meta["receptive_radius"]) == 6
    assert meta["weights_sha256"] == sha256_of(vdsr_ckpt)
    assert meta["value_range"] == "[0, 1]"
    assert "65.481" in meta["colour"] and "rgb2ycbcr" in meta["colour"]
    assert "bicubic" in meta["scale"] and "any scale" in meta["scale"]
    assert "clamp" in meta["postprocess"]
    assert meta == ex._as_strings(result.contract)
    assert "metadata_props" in result.contract_at


def test_onnx_file_matches_pytorch_at_any_size(
    onnx_export: tuple[ex.ExportResult, Path], vdsr_ckpt: Path
) -> None:
    ort = pytest.importorskip("onnxruntime")
    result, dst = onnx_export
    assert result.verified and result.not_verified is None
    assert result.max_diff is not None and 0 <= result.max_diff <= ex.MAX_ABS_DIFF
    assert result.checked_shapes == ex.VERIFY_SHAPES
    session = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(5)
    residual = 0.0
    for shape in [(1, 1, 1, 1), (3, 1, 8, 61), (1, 1, 64, 5)]:
        x = torch.rand(shape, generator=g)
        (y,) = session.run(["y_sr"], {"y": x.numpy()})
        want = reference(vdsr_ckpt, x)
        assert y.shape == shape
        assert float((torch.from_numpy(y) - want).abs().max()) <= 1e-4
        residual = max(residual, float((want - x).abs().max()))
    assert residual > 1e-2  # VDSR's residual is not negligible, so it is compared too


def test_cli_onnx_prints_the_path_and_one_summary_line(
    capsys: pytest.CaptureFixture[str], tiny_srcnn_ckpt: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    out = tmp_path / "out" / "srcnn.onnx"
    out.parent.mkdir()
    run = run_cli(capsys, "export", "--model", tiny_srcnn_ckpt, "--format", "onnx", "-o", out)
    assert run.code == 0, run
    assert run.out == f"{out}\n"
    (line,) = run.err.splitlines()
    assert "ONNX opset" in line and "max diff" in line and "1x1x37x53" in line, line
    assert names(out.parent) == ["srcnn.onnx"]


def test_without_onnxruntime_the_file_is_written_unchecked(
    capsys: pytest.CaptureFixture[str],
    onnx_export: tuple[ex.ExportResult, Path],
    vdsr_ckpt: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import onnx

    # The shared export's graph stands in for a new one (each costs a second and a half).
    graph = onnx.load(onnx_export[1])
    monkeypatch.setattr(ex, "_export_onnx", lambda net: (graph, "torch.onnx dynamo"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime fails
    out = tmp_path / "vdsr.onnx"
    run = run_cli(capsys, "export", "-m", vdsr_ckpt, "-o", out)  # onnx by default
    assert run.code == 0, run
    assert run.out == f"{out}\n"
    lines = run.err.splitlines()
    assert lines[0] == (
        "onnxruntime not installed: the exported file was not run; "
        "pip install 'sruc[onnx]' to check it"
    )
    assert len(lines) == 2 and "not run" in lines[1]
    assert names(tmp_path) == ["vdsr.onnx"]
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta["weights_sha256"] == sha256_of(vdsr_ckpt)


def test_falls_back_to_the_torchscript_based_exporter(
    vdsr_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the dynamo exporter fails (an old PyTorch), the legacy one makes the file."""
    pytest.importorskip("onnxruntime")
    real = torch.onnx.export

    def export(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("dynamo"):
            raise TypeError("export() got an unexpected keyword argument 'dynamo'")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export)
    result = ex.export_model(vdsr_ckpt, "onnx", tmp_path / "legacy.onnx")
    assert "TorchScript-based" in result.exporter and "dynamo" in result.exporter
    assert result.verified and result.max_diff is not None and result.max_diff <= 1e-4


def test_no_exporter_works_is_a_model_error_and_no_file(
    vdsr_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxscript")

    def export(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("unsupported operator\nmore detail")

    monkeypatch.setattr(torch.onnx, "export", export)
    with pytest.raises(ModelError, match=r"cannot export VDSR to ONNX.*unsupported operator"):
        ex.export_model(vdsr_ckpt, "onnx", tmp_path / "none.onnx")
    assert names(tmp_path) == []


@pytest.mark.parametrize("missing", ["onnx", "onnxscript"])
def test_missing_onnx_extra_is_one_line_naming_it(
    capsys: pytest.CaptureFixture[str],
    tiny_vdsr_ckpt: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    missing: str,
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)
    out = tmp_path / "out.onnx"
    run = run_cli(capsys, "export", "-m", tiny_vdsr_ckpt, "-f", "onnx", "-o", out)
    assert_one_line_error(run, 1, "ONNX export needs the onnx extra: pip install 'sruc[onnx]'")
    assert not out.exists()
    with pytest.raises(ModelError, match=r"sruc\[onnx\]"):
        ex.export_model(tiny_vdsr_ckpt, "onnx", out)


# --------------------------------------------------------------------------- TorchScript


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_cli_torchscript_round_trip(
    capsys: pytest.CaptureFixture[str], vdsr_ckpt: Path, tmp_path: Path
) -> None:
    out = tmp_path / "vdsr-ts.pt"
    run = run_cli(capsys, "export", "-m", vdsr_ckpt, "--format", "torchscript", "-o", out, "-q")
    assert (run.code, run.out, run.err) == (0, f"{out}\n", ""), run
    extra = {ex.CONTRACT_FILE: ""}
    module = torch.jit.load(str(out), _extra_files=extra)
    contract = json.loads(extra[ex.CONTRACT_FILE])
    assert contract.keys() >= CONTRACT_KEYS
    assert contract["arch_config"] == {"channels": 1, "depth": 6, "width": 8, "kernel": 3}
    assert contract["weights_sha256"] == sha256_of(vdsr_ckpt)
    g = torch.Generator().manual_seed(3)
    for shape in [(1, 1, 37, 53), (2, 1, 9, 70), (1, 1, 1, 1)]:
        x = torch.rand(shape, generator=g)
        with torch.no_grad():
            y = module(x)
        assert y.shape == shape
        assert float((y - reference(vdsr_ckpt, x)).abs().max()) <= 1e-4


def test_library_api_with_a_module(tmp_path: Path) -> None:
    torch.manual_seed(2)
    net = SRCNN(n1=8, n2=4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = ex.export_model(net, "torchscript", tmp_path / "m.pt")
    assert isinstance(result, ex.ExportResult)
    assert (result.format, result.arch, result.opset, result.verified) == (
        "torchscript",
        "srcnn",
        None,
        True,
    )
    assert result.max_diff == 0.0 and result.exporter == "torch.jit.script"
    assert result.contract["weights_sha256"] == "unknown"  # no file behind a module
    assert ex.CONTRACT_FILE in result.contract_at
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # untouched


def test_per_scale_checkpoint_says_its_scale(
    tiny_srcnn_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = ex.export_model(tiny_srcnn_ckpt, "torchscript", tmp_path / "s.pt", scale=3)
    assert result.contract["trained_scales"] == [3.0] and result.contract["multiscale"] is False
    assert "x3 only" in result.contract["scale"]
    run = run_cli(capsys, "export", "-m", tiny_srcnn_ckpt, "-f", "torchscript", "-s", "2",
                  "-o", tmp_path / "s2.pt")  # fmt: skip
    assert_one_line_error(run, 1, "x3 only", "not x2")
    assert not (tmp_path / "s2.pt").exists()


def test_registry_srcnn_needs_a_scale_and_picks_its_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "srcnn.pt"
    run = run_cli(capsys, "export", "-m", "srcnn", "-f", "torchscript", "-o", out)
    assert_one_line_error(run, 1, "one weights file per scale", "-s")
    assert not out.exists()
    cache = tmp_path / "cache"
    result = ex.export_model(
        "srcnn", "torchscript", out, scale=3, cache_dir=cache, offline=True
    )  # the bundled file
    row = registry.select("srcnn", 3)
    assert result.model == "srcnn-x3"
    assert result.contract["weights_sha256"] == row.sha256
    assert result.contract["arch_config"] == dict(row.config)


def test_a_mismatch_raises_and_leaves_no_file(
    vdsr_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ex._torchscript_runner

    def off_by_a_little(data: bytes) -> Any:
        module = real(data)
        return lambda x: module(x) + 1e-3

    monkeypatch.setattr(ex, "_torchscript_runner", off_by_a_little)
    with pytest.raises(ModelError, match=r"differs from PyTorch by 0\.001 at 1x1x37x53"):
        ex.export_model(vdsr_ckpt, "torchscript", tmp_path / "bad.pt")
    assert names(tmp_path) == []


def test_a_network_that_cannot_be_scripted_is_traced(tmp_path: Path) -> None:
    class Untyped(torch.nn.Module):
        receptive_radius = 1
        config: dict[str, int] = {}  # noqa: RUF012

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x: Any, *rest: Any) -> Any:  # *args: TorchScript refuses it
            return self.conv(x)

    result = ex.export_model(Untyped(), "torchscript", tmp_path / "t.pt")
    assert result.exporter.startswith("torch.jit.trace") and result.verified


# --------------------------------------------------------------------------- refusals


def test_bicubic_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "b.onnx"
    run = run_cli(capsys, "export", "--model", "bicubic", "-o", out)
    assert_one_line_error(run, 2, "bicubic has no network to export")
    with pytest.raises(UsageError, match="no network"):
        ex.export_model(Bicubic(), "torchscript", out)
    assert names(tmp_path) == []


def test_unknown_format_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tiny_vdsr_ckpt: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m.tflite"
    run = run_cli(capsys, "export", "-m", tiny_vdsr_ckpt, "--format", "tflite", "-o", out)
    assert_one_line_error(run, 2, "tflite", "onnx", "torchscript")
    with pytest.raises(UsageError, match="unknown export format"):
        ex.export_model(tiny_vdsr_ckpt, "tflite", out)
    assert not out.exists()


def test_cli_and_library_formats_agree() -> None:
    from sruc.cli.export import FORMATS

    assert FORMATS == ex.FORMATS


def test_existing_output_is_kept_without_overwrite(
    capsys: pytest.CaptureFixture[str], tiny_vdsr_ckpt: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m.pt"
    out.write_bytes(b"precious")
    args = ["export", "-m", tiny_vdsr_ckpt, "-f", "torchscript", "-o", out]
    assert_one_line_error(run_cli(capsys, *args), 1, "already exists", "--overwrite")
    assert out.read_bytes() == b"precious"
    assert run_cli(capsys, *args, "--overwrite", "-q").code == 0
    assert out.read_bytes() != b"precious" and names(tmp_path) == ["m.pt", "tiny-vdsr.pt"]


def test_output_is_never_the_model_file(
    capsys: pytest.CaptureFixture[str], tiny_vdsr_ckpt: Path
) -> None:
    before = tiny_vdsr_ckpt.read_bytes()
    run = run_cli(capsys, "export", "-m", tiny_vdsr_ckpt, "-f", "torchscript",
                  "-o", tiny_vdsr_ckpt, "--overwrite")  # fmt: skip
    assert_one_line_error(run, 2, "is the --model file")
    assert tiny_vdsr_ckpt.read_bytes() == before


def test_unwritable_or_missing_folder(
    capsys: pytest.CaptureFixture[str],
    tiny_vdsr_ckpt: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = tmp_path / "nope" / "m.pt"
    run = run_cli(capsys, "export", "-m", tiny_vdsr_ckpt, "-f", "torchscript", "-o", missing)
    assert_one_line_error(run, 1, "does not exist")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access

    def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        """Root ignores permissions, so the check is told the folder is read-only."""
        if mode & os.W_OK and Path(path).resolve() == locked.resolve():
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    run = run_cli(capsys, "export", "-m", tiny_vdsr_ckpt, "-f", "torchscript",
                  "-o", locked / "m.pt")  # fmt: skip
    assert_one_line_error(run, 1, "locked", "permission denied")
    assert names(locked) == []


def test_a_failed_write_is_an_output_error_and_leaves_nothing(
    tiny_vdsr_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sruc.files import atomic

    out = tmp_path / "out"
    out.mkdir()
    written: list[int] = []
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        if written:  # the first chunk lands, then the disk is full
            raise OSError(28, "No space left on device")
        written.append(real_write(fd, bytes(data[:100])))
        return written[-1]

    monkeypatch.setattr(atomic.os, "write", write)
    with pytest.raises(OutputError, match=r"cannot write .*m\.pt: No space left on device"):
        ex.export_model(tiny_vdsr_ckpt, "torchscript", out / "m.pt")
    assert written == [100]  # part of the file was on disk before it was removed
    assert names(out) == []


def test_a_colour_network_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="takes 3 channels"):
        ex.export_model(VDSR(channels=3, depth=3, width=4), "torchscript", tmp_path / "c.pt")
    assert names(tmp_path) == []

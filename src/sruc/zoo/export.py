"""Exporting a network to ONNX or TorchScript, with the contract of its input inside the file.

:func:`export_model` resolves ``--model`` as :func:`sruc.zoo.registry.load_model`
does (a registry name, a checkpoint file, a URL with its SHA-256; the scale picks
the file of a per-scale group), and writes exactly the network sruc runs: input
``y``, float32 ``(N, 1, H, W)``, the BT.601 Y channel in [0, 1] of the image
already enlarged with MATLAB's bicubic; output ``y_sr``, the network's Y of the
same shape (VDSR's global residual included); N, H and W are dynamic. What a
caller must do around it (colour, resize, scale, clamp) travels in the file, as
the ONNX ``metadata_props`` or a TorchScript extra file (:data:`CONTRACT_FILE`),
so the weights can be used anywhere without sruc.

The file is made in memory, run at two odd sizes against PyTorch (ONNX Runtime
for ONNX, where it is installed; ``torch.jit.load`` for TorchScript), and only
then written atomically (:func:`sruc.files.atomic.write_output`): a mismatch, a
failure or Ctrl-C leaves no file.

ONNX files are made by the ``torch.export``-based exporter (``dynamo=True``),
the one PyTorch develops since 2.9; where it fails (a PyTorch older than 2.5, a
network ``torch.export`` cannot capture) the TorchScript-based exporter is
tried. Both need the ``onnx`` extra (``pip install 'sruc[onnx]'``).

It lives in :mod:`sruc.zoo` beside :mod:`~sruc.zoo.checkpoint`: it writes the
weights in other file formats, and needs the registry and nothing of the engine.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sruc import __version__
from sruc.errors import ModelError, OutputError, UsageError
from sruc.files.atomic import write_output
from sruc.scales import MAX_SCALE
from sruc.zoo import hub, registry
from sruc.zoo.registry import LoadedModel

__all__ = [
    "CONTRACT_FILE",
    "FORMATS",
    "MAX_ABS_DIFF",
    "NO_ONNXRUNTIME",
    "ONNX_EXTRA",
    "ONNX_OPSET",
    "VERIFY_SHAPES",
    "ExportResult",
    "check_destination",
    "contract_of",
    "export_model",
    "onnx_graph",
]

#: The file formats :func:`export_model` writes.
FORMATS = ("onnx", "torchscript")
#: The version of the contract written into every exported file.
CONTRACT_VERSION = "sruc-export/1"
#: The ONNX operator set of exported files (18: the dynamo exporter's own; the
#: TorchScript-based one writes it too).
ONNX_OPSET = 18
#: The name of the graph's input and output.
INPUT_NAME = "y"
OUTPUT_NAME = "y_sr"
#: The extra file of a TorchScript export that holds the contract, as JSON.
CONTRACT_FILE = "sruc_contract.json"
#: Shapes the exported file is run at before it is written: odd sizes, and a
#: batch of two, prove that N, H and W are dynamic.
VERIFY_SHAPES: tuple[tuple[int, int, int, int], ...] = ((1, 1, 37, 53), (2, 1, 29, 18))
#: Largest absolute difference accepted between the exported file and PyTorch, in fp32.
MAX_ABS_DIFF = 1e-4
#: What to install for ONNX export and its check.
ONNX_EXTRA = "pip install 'sruc[onnx]'"
#: Why an ONNX file was written without being run (:attr:`ExportResult.not_verified`).
NO_ONNXRUNTIME = (
    f"onnxruntime not installed: the exported file was not run; {ONNX_EXTRA} to check it"
)
#: Loggers of the exporters, quietened while they run (the library never prints).
_EXPORT_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir")

ModelSpec = str | os.PathLike[str] | nn.Module | LoadedModel


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote.

    Attributes:
        path: the file written.
        format: ``onnx`` or ``torchscript``.
        model: the model's name, as loaded (``vdsr``, ``srcnn-x3``, a path).
        arch: its architecture.
        size: the file's size in bytes.
        exporter: what made the file (``torch.onnx dynamo``, ``torch.jit.script``...).
        opset: the ONNX operator set (None for TorchScript).
        verified: whether the file was run and matched PyTorch.
        max_diff: the largest absolute difference from PyTorch over
            :data:`VERIFY_SHAPES` (None when not verified).
        checked_shapes: the input shapes it was run at.
        not_verified: why it was not run (None when it was).
        contract: what the file says about its input and output (also in the file).
        contract_at: where in the file the contract is.
    """

    path: Path
    format: str
    model: str
    arch: str
    size: int
    exporter: str
    opset: int | None
    verified: bool
    max_diff: float | None
    checked_shapes: tuple[tuple[int, ...], ...]
    not_verified: str | None
    contract: dict[str, Any] = field(default_factory=dict)
    contract_at: str = ""


def export_model(
    model: ModelSpec,
    fmt: str,
    dst: str | os.PathLike[str],
    *,
    scale: float | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    sha256: str | None = None,
    verify: bool = True,
    overwrite: bool = False,
    progress: hub.ProgressFn | None = None,
) -> ExportResult:
    """Write ``model``'s network as an ONNX or TorchScript file at ``dst``.

    Everything that can be checked is checked before anything is downloaded:
    the format, the ``onnx`` extra, the destination, the scale.

    Args:
        model: what ``sruc up --model`` takes (``vdsr``; ``srcnn`` with ``scale``; a
            checkpoint path; an http(s) URL with ``sha256``), an nn.Module or a
            loaded model. ``bicubic`` has no network and is refused.
        fmt: ``onnx`` or ``torchscript``.
        dst: the file to write (replaced only with ``overwrite``).
        scale: the scale it will run at; picks the file of a per-scale group (SRCNN).
        cache_dir: the weights cache (default: ``$SRUC_CACHE_DIR``, else the user cache).
        offline: never use the network (default: ``$SRUC_OFFLINE``).
        sha256: the SHA-256 a URL (required) or a checkpoint file must have.
        verify: run the file at :data:`VERIFY_SHAPES` and compare with PyTorch first.
        overwrite: replace an existing ``dst``.
        progress: download progress, called with (bytes done, total or None).

    Raises:
        UsageError: an unknown format, ``bicubic``, or ``dst`` is the model's file.
        OutputError: ``dst`` exists (without ``overwrite``) or cannot be written.
        ModelError: the model cannot be loaded, has no weights for ``scale``, the
            ``onnx`` extra is missing, the export failed, or the file does not match
            PyTorch within :data:`MAX_ABS_DIFF` (then nothing is written).
        sruc.DownloadError: a download failed, or offline without a copy.
    """
    fmt = _check_format(fmt)
    if not isinstance(model, nn.Module | LoadedModel) and os.fspath(model) in (
        registry.builtin_names()
    ):
        raise _no_network(os.fspath(model))
    if fmt == "onnx":
        _require_onnx()
    path = check_destination(dst, overwrite=overwrite, source=model)
    if isinstance(model, LoadedModel):
        lm = model
    else:
        lm = registry.load_model(
            model,
            scale=scale,
            cache_dir=cache_dir,
            offline=offline,
            sha256=sha256,
            progress=progress,
        )
    if lm.identity:
        raise _no_network(lm.name)
    if scale is not None:
        lm.check_scale(scale)
    net = _cpu_copy(lm)
    contract = contract_of(lm, weights_sha256=_weights_sha256(lm, sha256))
    if fmt == "onnx":
        data, exporter = _onnx_bytes(net, contract)
        opset: int | None = ONNX_OPSET
        where = "the ONNX metadata_props (onnx.load(path).metadata_props)"
        run = _onnx_runner
    else:
        data, exporter = _torchscript_bytes(net, contract)
        opset = None
        where = (
            f"the TorchScript extra file {CONTRACT_FILE} "
            f"(torch.jit.load(path, _extra_files={{'{CONTRACT_FILE}': ''}}))"
        )
        run = _torchscript_runner
    max_diff: float | None = None
    not_verified: str | None = "verification turned off"
    if verify:
        max_diff, not_verified = _verify(fmt, data, net, run)
    _write(path, data, overwrite)
    return ExportResult(
        path=path,
        format=fmt,
        model=lm.name,
        arch=lm.arch,
        size=len(data),
        exporter=exporter,
        opset=opset,
        verified=max_diff is not None,
        max_diff=max_diff,
        checked_shapes=VERIFY_SHAPES if max_diff is not None else (),
        not_verified=not_verified,
        contract=contract,
        contract_at=where,
    )


def onnx_graph(lm: LoadedModel, *, weights_sha256: str | None = None) -> bytes:
    """``lm``'s network as ONNX bytes, exactly as :func:`export_model` writes them, in memory.

    Run against PyTorch at :data:`VERIFY_SHAPES` first where ONNX Runtime is
    installed. What the inference engines (:mod:`sruc.engine.runtimes`) run and cache.

    Raises:
        UsageError: ``lm`` has no network (bicubic).
        ModelError: the ``onnx`` extra is missing, the export failed, or the graph
            differs from PyTorch by more than :data:`MAX_ABS_DIFF`.
    """
    if lm.identity:
        raise _no_network(lm.name)
    _require_onnx()
    net = _cpu_copy(lm)
    data, _ = _onnx_bytes(net, contract_of(lm, weights_sha256=weights_sha256))
    _verify("onnx", data, net, _onnx_runner)
    return data


# --- checks before any work ----------------------------------------------------------------


def _check_format(fmt: str) -> str:
    value = fmt.strip().lower()
    if value not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; use one of: {', '.join(FORMATS)}")
    return value


def _no_network(name: str) -> UsageError:
    return UsageError(
        f"{name} has no network to export: it is the MATLAB bicubic upscale an exported "
        "model expects as its input; export vdsr, srcnn or a checkpoint file"
    )


def _require_onnx() -> None:
    """Raise unless ``onnx`` and ``onnxscript`` (the dynamo exporter's) can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ModelError(f"ONNX export needs the onnx extra: {ONNX_EXTRA}") from None


def check_destination(
    dst: str | os.PathLike[str], *, overwrite: bool = False, source: object = None
) -> Path:
    """Check, before any work, that an exported file may be written at ``dst``; returns it.

    The policy of :func:`sruc.files.images.check_output`, without its image
    extensions: an existing file is replaced only with ``overwrite``, and never
    when it is the ``source`` checkpoint itself.

    Raises:
        UsageError: ``dst`` is the ``source`` file.
        OutputError: the folder is missing or not writable, ``dst`` is a folder,
            or it exists and ``overwrite`` is False.
    """
    path = Path(dst)
    parent = path.parent
    if not parent.exists():
        raise OutputError(f"output folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} is not a folder")
    if path.is_dir():
        raise OutputError(
            f"output {path} is a folder; give a file name, e.g. {path / 'model.onnx'}"
        )
    if isinstance(source, str | os.PathLike) and _same_file(Path(os.fspath(source)), path):
        raise UsageError(f"output {path} is the --model file; sruc never overwrites its input")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write to folder {parent}: permission denied")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.is_file() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


# --- the contract ---------------------------------------------------------------------------


def contract_of(lm: LoadedModel, *, weights_sha256: str | None = None) -> dict[str, Any]:
    """What an exported file of ``lm`` says about its input and output.

    Strings for people, and the facts a program needs (architecture, scales,
    receptive radius); every exported file carries it (see :func:`export_model`).
    """
    arch = lm.arch.upper()
    scales = sorted(float(s) for s in lm.scales)
    trained = "x" + "/".join(f"{s:g}" for s in scales) if scales else "any scale"
    if lm.multiscale or not scales:
        scale = (
            "upscale to the target size with MATLAB-compatible bicubic first (see resize); "
            f"{arch} takes any scale in its range, one model for all (sruc allows up to "
            f"x{MAX_SCALE}; trained for {trained}, others may look worse)"
        )
    else:
        scale = (
            f"upscale by {trained} with MATLAB-compatible bicubic first (see resize); these "
            f"{arch} weights are trained for {trained} only (export the file of another "
            "scale for another scale)"
        )
    radius = lm.radius
    return {
        "contract": CONTRACT_VERSION,
        "sruc_version": __version__,
        "torch_version": torch.__version__,
        "model": lm.name,
        "arch": lm.arch,
        "arch_config": dict(getattr(lm.module, "config", {})),
        "trained_scales": scales,
        "multiscale": lm.multiscale,
        "weights_sha256": weights_sha256 or "unknown",
        "receptive_radius": radius,
        "input": (
            f"{INPUT_NAME}: float32 (N, 1, H, W), any N, H and W: the Y channel (see colour) in "
            "[0, 1] of the image already upscaled to the target size with MATLAB-compatible "
            "bicubic (see scale); for a grayscale image, its gray values in [0, 1]"
        ),
        "output": (
            f"{OUTPUT_NAME}: float32 (N, 1, H, W), the input's shape: the network's Y in [0, 1] "
            "units, not clamped (VDSR's global residual is included: it is the input plus "
            "the predicted residual)"
        ),
        "value_range": "[0, 1]",
        "colour": (
            "BT.601 studio-swing YCbCr exactly as MATLAB rgb2ycbcr, with sruc's 255-scale "
            "offsets: for R, G, B in [0, 1], Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255, "
            "Cb = (128 - 37.797 R - 74.203 G + 112 B) / 255, "
            "Cr = (128 + 112 R - 93.786 G - 18.214 B) / 255; Cb and Cr stay bicubic; back to "
            "RGB with the inverse of that matrix (MATLAB ycbcr2rgb). Not Pillow's or OpenCV's "
            "full-range YCbCr"
        ),
        "resize": (
            "MATLAB imresize bicubic: Keys' cubic with a = -0.5, output size ceil(in * scale), "
            "output pixel x (1-based) sampled at x / scale + 0.5 * (1 - 1 / scale), borders "
            "mirrored, rows and columns one after the other; not PyTorch's or OpenCV's bicubic "
            "(a = -0.75)"
        ),
        "scale": scale,
        "postprocess": (
            f"clamp to [0, 1] after: sruc merges {OUTPUT_NAME} with the bicubic Cb and Cr, "
            "converts to RGB and clamps that to [0, 1] (a grayscale image: clamps "
            f"{OUTPUT_NAME}), then rounds to 8 or 16 bits"
        ),
        "tiling": (
            f"the output at a pixel depends on the input within {radius} pixels: tiles "
            f"overlapping by {radius} pixels, zero-padded at the image border only, stitch "
            "exactly"
        ),
    }


def _weights_sha256(lm: LoadedModel, sha256: str | None) -> str | None:
    """The SHA-256 of the weights file ``lm`` was loaded from, where it is known."""
    row = next((w for w in registry.PRETRAINED if w.name == lm.name and w.arch == lm.arch), None)
    if row is not None:
        return row.sha256  # the file's hash was checked against it before loading
    if hub.is_url(lm.name):
        return hub.check_sha256(sha256) if sha256 is not None else None
    path = Path(lm.name)
    try:
        return hub.file_sha256(path) if path.is_file() else None
    except OSError:
        return None


def _cpu_copy(lm: LoadedModel) -> nn.Module:
    """The network in float32 on the CPU, in eval mode, leaving the caller's module alone.

    Raises:
        ModelError: the network does not map one channel to one (sruc runs it on Y).
    """
    channels = dict(getattr(lm.module, "config", {})).get("channels", 1)
    if channels != 1:
        raise ModelError(
            f"{lm.name} takes {channels} channels; an export takes the Y channel alone, "
            "as sruc runs networks (channels 1)"
        )
    return copy.deepcopy(lm.module).to("cpu", torch.float32).eval()


# --- making the file -----------------------------------------------------------------------


@contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' warnings and log lines silenced (the library never prints)."""
    loggers = [logging.getLogger(name) for name in _EXPORT_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _example() -> torch.Tensor:
    return torch.rand(VERIFY_SHAPES[0], generator=torch.Generator().manual_seed(0))


def _onnx_bytes(net: nn.Module, contract: dict[str, Any]) -> tuple[bytes, str]:
    """The network as a serialized ONNX model with the contract in its metadata_props."""
    import onnx

    proto, exporter = _export_onnx(net)
    onnx.helper.set_model_props(proto, _as_strings(contract))
    proto.doc_string = (
        f"sruc {contract['model']} ({contract['arch']}): {contract['input']} -> "
        f"{contract['output']}; the full contract is in metadata_props"
    )
    try:
        return proto.SerializeToString(), exporter
    except ValueError as e:  # protobuf's 2 GiB limit
        raise ModelError(f"{contract['model']} is too large for one ONNX file ({e})") from None


def _export_onnx(net: nn.Module) -> tuple[Any, str]:
    """The ONNX ModelProto of ``net`` with dynamic N, H, W, and the exporter that made it.

    The ``torch.export``-based exporter first; the TorchScript-based one where it fails.

    Raises:
        ModelError: neither exporter could export the network.
    """
    import onnx

    dims = {0: "N", 2: "H", 3: "W"}
    with _quiet(), torch.no_grad():
        try:
            program = torch.onnx.export(
                net,
                (_example(),),
                None,
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=ONNX_OPSET,
                dynamic_shapes=(dims,),
                external_data=False,
                verbose=False,
            )
            return program.model_proto, f"torch.onnx dynamo (torch {torch.__version__})"
        except Exception as e:
            dynamo_error = _first_line(e)
        buf = io.BytesIO()
        try:
            torch.onnx.export(
                net,
                (_example(),),
                buf,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=ONNX_OPSET,
                dynamic_axes={INPUT_NAME: dims, OUTPUT_NAME: dims},
                do_constant_folding=True,
            )
        except Exception as e:
            raise ModelError(
                f"cannot export {type(net).__name__} to ONNX: the dynamo exporter said "
                f"{dynamo_error!r}, the TorchScript-based one {_first_line(e)!r}"
            ) from None
    return onnx.load_from_string(buf.getvalue()), (
        f"torch.onnx TorchScript-based (torch {torch.__version__}; dynamo failed: {dynamo_error})"
    )


def _torchscript_bytes(net: nn.Module, contract: dict[str, Any]) -> tuple[bytes, str]:
    """The network as a saved TorchScript module, the contract as :data:`CONTRACT_FILE`.

    ``torch.jit.script`` keeps the network's code; a network it cannot compile is
    traced instead (convolutions do not depend on the size, which the check proves).

    Raises:
        ModelError: the network can be neither scripted nor traced.
    """
    with _quiet(), torch.no_grad():
        try:
            module: torch.jit.ScriptModule = torch.jit.script(net)
            exporter = "torch.jit.script"
        except Exception as e:
            script_error = _first_line(e)
            try:
                module = torch.jit.trace(net, (_example(),), check_trace=False)
            except Exception as e2:
                raise ModelError(
                    f"cannot export {type(net).__name__} to TorchScript: scripting said "
                    f"{script_error!r}, tracing {_first_line(e2)!r}"
                ) from None
            exporter = f"torch.jit.trace (script failed: {script_error})"
        buf = io.BytesIO()
        extra = {CONTRACT_FILE: json.dumps(contract, indent=2, sort_keys=True)}
        torch.jit.save(module, buf, _extra_files=extra)
    return buf.getvalue(), exporter


def _as_strings(contract: dict[str, Any]) -> dict[str, str]:
    """ONNX metadata values are strings: structured values as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in contract.items()}


# --- the check -----------------------------------------------------------------------------

#: A callable that runs an exported file's bytes on float32 tensors.
Runner = Callable[[torch.Tensor], torch.Tensor]


def _onnx_runner(data: bytes) -> Runner | None:
    """The ONNX file in ONNX Runtime on the CPU (None: onnxruntime is not installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        (y,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        return torch.from_numpy(y)

    return run


def _torchscript_runner(data: bytes) -> Runner | None:
    """The TorchScript file loaded back with ``torch.jit.load``, its contract checked."""
    extra = {CONTRACT_FILE: ""}
    module = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra)
    if not extra[CONTRACT_FILE]:
        raise RuntimeError(f"{CONTRACT_FILE} is missing from the saved module")
    return module


def _verify(
    fmt: str, data: bytes, net: nn.Module, runner: Callable[[bytes], Runner | None]
) -> tuple[float | None, str | None]:
    """Run the file's bytes at :data:`VERIFY_SHAPES` against ``net``.

    Returns the largest absolute difference, or None and why it was not run.

    Raises:
        ModelError: the file does not run, or differs by more than :data:`MAX_ABS_DIFF`.
    """
    label = "ONNX" if fmt == "onnx" else "TorchScript"
    after = "nothing was written; please report it"
    try:
        with _quiet():
            run = runner(data)
    except Exception as e:
        raise ModelError(
            f"the exported {label} file does not load ({_first_line(e)}); {after}"
        ) from None
    if run is None:
        return None, NO_ONNXRUNTIME
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    for shape in VERIFY_SHAPES:
        x = torch.rand(shape, generator=g)
        at = "x".join(map(str, shape))
        with torch.no_grad():
            want = net(x.clone())
            try:
                with _quiet():
                    got = run(x.clone())
            except Exception as e:
                raise ModelError(
                    f"the exported {label} file does not run at {at} ({_first_line(e)}); {after}"
                ) from None
        if tuple(got.shape) != tuple(want.shape):
            raise ModelError(
                f"the exported {label} file gives {'x'.join(map(str, got.shape))} at {at}, "
                f"PyTorch {'x'.join(map(str, want.shape))}; {after}"
            )
        diff = float((got.float() - want).abs().max())
        if not diff <= MAX_ABS_DIFF:  # NaN fails too
            raise ModelError(
                f"the exported {label} file differs from PyTorch by {diff:.3g} at {at} "
                f"(more than {MAX_ABS_DIFF:g}); {after}"
            )
        worst = max(worst, diff)
    return worst, None


# --- writing -------------------------------------------------------------------------------


def _write(path: Path, data: bytes, overwrite: bool) -> None:
    """Write the verified bytes atomically (a hidden temporary file beside ``path``, renamed).

    Raises:
        OutputError: ``path`` appeared meanwhile (without ``overwrite``), or the write failed.
    """
    write_output(path, data, overwrite=overwrite)


def _first_line(e: BaseException, limit: int = 160) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    line = lines[0] if lines else type(e).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."

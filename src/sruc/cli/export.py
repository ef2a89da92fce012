"""``sruc export``: a thin click layer over :func:`sruc.zoo.export.export_model`.

The path of the written file goes to stdout (it is the result), the summary
and the download bar to stderr. Registered in :mod:`sruc.cli.main`.
"""

from __future__ import annotations

from pathlib import Path

import click

from sruc.cli.options import CONTEXT, SCALE, offline_flag, weights_options
from sruc.cli.progress import Display

#: The formats of :data:`sruc.zoo.export.FORMATS`, named here so that ``sruc --help``
#: does not import torch (a test checks that they agree).
FORMATS = ("onnx", "torchscript")


def _human(size: int) -> str:
    """A size in bytes as people read it (decimal units, as ``sruc models`` shows)."""
    if size < 1000:
        return f"{size} B"
    return f"{size / 1e3:.1f} kB" if size < 1e6 else f"{size / 1e6:.1f} MB"


@click.command(context_settings=CONTEXT)
@click.option(
    "-m", "--model", default="vdsr", show_default=True, metavar="NAME|PATH|URL",
    help="What `sruc up --model` takes: vdsr, srcnn (with -s), a checkpoint file, "
    "or an http(s) URL with --sha256.",
)  # fmt: skip
@click.option(
    "-f", "--format", "fmt", type=click.Choice(FORMATS), default="onnx", show_default=True,
    help="onnx (needs the onnx extra: pip install 'sruc[onnx]') or torchscript.",
)  # fmt: skip
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
    help="The file to write, e.g. vdsr.onnx or vdsr-ts.pt.",
)  # fmt: skip
@click.option(
    "-s", "--scale", type=SCALE, default=None,
    help="The scale it will run at: picks the file of a per-scale model (srcnn).",
)  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
@weights_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def export(
    model: str,
    fmt: str,
    output: Path,
    scale: float | None,
    overwrite: bool,
    sha256: str | None,
    cache_dir: Path | None,
    offline: bool,
    quiet: bool,
) -> None:
    """Write a model's network as an ONNX or TorchScript file, to use it without sruc.

    The file takes `y`, float32 (N, 1, H, W): the BT.601 Y channel in [0, 1] of
    the image already upscaled with MATLAB-compatible bicubic, and returns the
    network's Y of the same shape (clamp it to [0, 1]); N, H and W are free.
    The full contract (colour, resize, scales) is inside the file. Before it
    is written, the file is run at two sizes and compared with PyTorch.

    \b
    Examples:
      sruc export --model vdsr --format onnx -o vdsr.onnx
      sruc export --model srcnn -s 3 --format torchscript -o srcnn-x3.pt
      sruc export --model runs/vdsr/best.pt -o best.onnx
    """
    from sruc.zoo.export import export_model

    with Display(not quiet) as display:
        result = export_model(
            model,
            fmt,
            output,
            scale=scale,
            cache_dir=cache_dir,
            offline=offline_flag(offline),
            sha256=sha256,
            overwrite=overwrite,
            progress=display.download(model),
        )
    click.echo(result.path)
    if result.not_verified is not None:  # onnxruntime is not installed
        click.echo(result.not_verified, err=True)
    if quiet:
        return
    kind = f"ONNX opset {result.opset}" if result.format == "onnx" else "TorchScript"
    if result.max_diff is not None:
        sizes = " and ".join("x".join(map(str, s)) for s in result.checked_shapes)
        check = f"verified at {sizes}: max diff {result.max_diff:.1e} from PyTorch"
    else:
        check = "not run"
    click.echo(
        f"exported {result.model} ({result.arch.upper()}) as {kind}, {_human(result.size)}, "
        f"{check}; contract in {result.contract_at}",
        err=True,
    )

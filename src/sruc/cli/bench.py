"""``sruc bench``: a thin click layer over :func:`sruc.measure.bench.bench`.

The table goes to stderr (it is for people), the ``--json`` document to stdout
(it is for programs), and the progress bar to stderr only on a terminal.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import click

from sruc.cli.options import CONTEXT, engine_option, threads_option, tta_option
from sruc.cli.progress import Display

#: Width of the table when stderr is not a terminal (a log, a CI job): wide
#: enough for a few models side by side without wrapping.
_PIPE_WIDTH = 160


def _console() -> Any:
    from rich.console import Console

    tty = sys.stderr.isatty()
    return Console(stderr=True, highlight=False, width=None if tty else _PIPE_WIDTH)


@click.command(context_settings=CONTEXT)
@click.argument("folders", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-m", "--model", "models", multiple=True, metavar="NAME|PATH",
    help="Registry name or checkpoint file; repeat to compare models. Bicubic is always "
    "measured. [default: bicubic only]",
)  # fmt: skip
@click.option(
    "-s", "--scale", "scales", default="2,3,4", show_default=True,
    help="Comma-separated whole-number scales, 2 to 8.",
)  # fmt: skip
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option(
    "--tile", type=click.IntRange(min=0), default=None,
    help="Tile edge in pixels; 0 disables tiling. Scores do not depend on it. "
    "[default: chosen from free memory]",
)  # fmt: skip
@engine_option
@tta_option
@threads_option
@click.option("--no-ssim", is_flag=True, help="Leave SSIM out of the report.")
@click.option("--per-image", is_flag=True, help="Add a table row for every image.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print every value as one JSON document on stdout."
)
@click.option("-q", "--quiet", is_flag=True, help="No table or progress bar on stderr.")
def bench(
    folders: tuple[Path, ...],
    models: tuple[str, ...],
    scales: str,
    device: str,
    tile: int | None,
    engine: str,
    tta: bool,
    threads: int | None,
    no_ssim: bool,
    per_image: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Score models against bicubic on folders of HR images, as the papers do.

    Each FOLDER is one test set (e.g. Set5): its images are cropped to a
    multiple of the scale, shrunk with MATLAB's bicubic on the Y channel and
    stored at 8 bits, enlarged again, passed through the model, rounded, and
    compared on Y with the scale shaved from every border (PSNR and SSIM).
    See docs/PROTOCOL.md.

    \b
    Examples:
      sruc bench datasets/eval/Set5 datasets/eval/Set14 --scale 2,3,4
      sruc bench Set5 --model runs/vdsr/best.pt --model runs/srcnn-x3/best.pt --json
    """
    from sruc.measure.bench import bench as run_bench
    from sruc.scales import parse_scale_list

    scale_list = parse_scale_list(scales)
    with Display(not quiet) as display:
        report = run_bench(
            list(folders),
            list(models),
            scale_list,
            device=device,
            tile=tile,
            with_ssim=not no_ssim,
            progress=display.bar("bench"),
            tta=tta,
            engine=engine,
        )
    if not quiet:
        _console().print(table(report, per_image=per_image))
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))


def table(report: Any, per_image: bool = False) -> Any:
    """A bench report (:class:`sruc.measure.report.BenchReport`) as a rich table: one row
    per set and scale, and with ``per_image`` a row per image under each."""
    from rich.table import Table

    from sruc.measure.report import format_scales

    labels = _labels([m.name for m in report.models])
    caption = "; ".join(
        f"{'' if label == m.name else f'{label} = '}{m.name} "
        f"({m.arch.upper()}, trained for {format_scales(m.trained_scales)})"
        for label, m in zip(labels, report.models, strict=True)
    )
    out = Table(
        title="Y-PSNR (dB) / SSIM by the papers' protocol",
        title_justify="left",
        caption=caption or None,
        caption_justify="left",
    )
    for name, justify in (("set", "left"), ("scale", "right"), ("images", "right")):
        out.add_column(name, justify=justify)  # type: ignore[arg-type]
    for i, label in enumerate(["bicubic", *labels]):
        out.add_column(f"{label}\nPSNR", justify="right")
        if report.with_ssim:
            out.add_column(f"{label}\nSSIM", justify="right")
        if i > 0:
            out.add_column(f"{label}\ngain", justify="right")
    previous = None
    for r in report.results:
        if previous is not None and r.set != previous:
            out.add_section()
        previous = r.set
        cells = [r.set, f"x{r.scale}", str(len(r.bicubic.images))]
        for i, m in enumerate([r.bicubic, *r.models]):
            gain = r.gain(m) if i else None
            cells += _cells(report.with_ssim, m.mean_psnr, m.mean_ssim, gain, i > 0)
        out.add_row(*cells, style="bold" if per_image else None)
        if per_image:
            _image_rows(out, report.with_ssim, r)
    return out


def _image_rows(out: Any, with_ssim: bool, r: Any) -> None:
    for k, score in enumerate(r.bicubic.images):
        cells = [f"  {score.image}", "", ""]
        for i, m in enumerate([r.bicubic, *r.models]):
            s = m.images[k] if m.images else None
            p, q = (s.psnr, s.ssim) if s else (None, None)
            gain = None if s is None or i == 0 else s.psnr - score.psnr
            cells += _cells(with_ssim, p, q, gain, i > 0)
        out.add_row(*cells, style="dim")


def _cells(
    with_ssim: bool, psnr: float | None, ssim: float | None, gain: float | None, with_gain: bool
) -> list[str]:
    cells = [_fmt(psnr, "{:.3f}")]
    if with_ssim:
        cells.append(_fmt(ssim, "{:.4f}"))
    if with_gain:
        cells.append(_fmt(gain, "{:+.3f}"))
    return cells


def _labels(names: list[str]) -> list[str]:
    """Short column headers: checkpoint paths cut to their last two parts, if unique."""
    short = []
    for name in names:
        parts = [p for p in Path(name).parts if p != Path(name).anchor]
        short.append("/".join(parts[-2:]) if len(parts) > 2 else name)
    return short if len(set(short)) == len(short) else list(names)


def _fmt(value: float | None, spec: str) -> str:
    if value is None:
        return "n/a"
    return "inf" if math.isinf(value) else spec.format(value)

"""``sruc bench``: a thin click layer over :func:`sruc.measure.bench.bench`.

The table goes to stderr (it is for people), the ``--json`` document to stdout
(it is for programs), and the progress bar to stderr only on a terminal.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from sruc.cli.options import progress_bar

# Same as sruc.cli.main's; not imported from there because sruc.cli.main imports this
# module while it is being initialised.
_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
#: Width of the table when stderr is not a terminal (a log, a CI job): wide
#: enough for a few models side by side without wrapping.
_PIPE_WIDTH = 160


def _console() -> Any:
    from rich.console import Console

    tty = sys.stderr.isatty()
    return Console(stderr=True, highlight=False, width=None if tty else _PIPE_WIDTH)


@click.command(context_settings=_CONTEXT)
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
    See shared/PROTOCOL.md.

    \b
    Examples:
      sruc bench datasets/eval/Set5 datasets/eval/Set14 --scale 2,3,4
      sruc bench Set5 --model runs/vdsr/best.pt --model runs/srcnn-x3/best.pt --json
    """
    from sruc.measure.bench import bench as run_bench
    from sruc.scales import parse_scale_list

    scale_list = parse_scale_list(scales)
    with progress_bar(not quiet, "bench", _console()) as progress:
        report = run_bench(
            list(folders),
            list(models),
            scale_list,
            device=device,
            tile=tile,
            with_ssim=not no_ssim,
            progress=progress,
        )
    if not quiet:
        _console().print(report.to_table(per_image=per_image))
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))

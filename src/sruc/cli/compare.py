"""``sruc compare``: a thin click layer over :func:`sruc.measure.compare.compare_models`.

The table of times and scores goes to stdout (or ``--json``), the "wrote" line
and the progress bars to stderr.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from sruc.cli.options import (
    CONTEXT,
    SCALE,
    cache_options,
    load_model_for_cli,
    max_pixels_option,
    pixel_limits,
)
from sruc.cli.progress import Display
from sruc.engine.precision import PRECISIONS


def _default_output(src: Path) -> Path:
    return src.with_name(f"{src.stem}_compare.png")


@click.command(context_settings=CONTEXT)
@click.argument("input", type=click.Path(path_type=Path))
@click.option(
    "-s", "--scale", type=SCALE, default=2.0, show_default="2", help="Upscaling factor, in (1, 8]."
)
@click.option(
    "-m", "--models", default="bicubic,srcnn,vdsr", show_default=True, metavar="A,B,...",
    help="Two or more models, comma-separated: names from `sruc models` or checkpoint files.",
)  # fmt: skip
@click.option(
    "--hr", type=click.Path(path_type=Path), default=None,
    help="High-resolution reference of the output's size: adds Y-PSNR and SSIM to each panel.",
)  # fmt: skip
@click.option(
    "--from-hr", is_flag=True,
    help="INPUT is the high-resolution reference: shrink it by the papers' protocol first, "
    "then score each model's output against it.",
)  # fmt: skip
@click.option(
    "--crop", metavar="X,Y,W,H", default=None,
    help="Region to show, in pixels of INPUT as given (of the HR with --from-hr). "
    "[default: the most detailed region]",
)  # fmt: skip
@click.option(
    "--zoom", type=click.IntRange(1, 16), default=None,
    help="Screen pixels per output pixel (nearest neighbour). [default: panels of 384 px or more]",
)  # fmt: skip
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), default=None,
    help="The comparison PNG. [default: INPUT_compare.png]",
)  # fmt: skip
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option(
    "--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
    help="As for `sruc up`.",
)  # fmt: skip
@click.option(
    "--tile", type=click.IntRange(min=0), default=None,
    help="Tile edge in pixels; 0 disables tiling. [default: chosen from free memory]",
)  # fmt: skip
@max_pixels_option
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
@cache_options
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or 'wrote' line.")
def compare(
    input: Path,
    scale: float,
    models: str,
    hr: Path | None,
    from_hr: bool,
    crop: str | None,
    zoom: int | None,
    output: Path | None,
    device: str,
    precision: str,
    tile: int | None,
    max_pixels: int | None,
    overwrite: bool,
    cache_dir: Path | None,
    offline: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Upscale one image with several models and put the same crop side by side.

    Each panel shows the region enlarged by nearest neighbour, labelled with
    the model, its time for the whole image and, with --hr or --from-hr, the
    Y-PSNR and SSIM of the whole output (shave = the scale), as `sruc psnr`
    measures them. Without --crop the most detailed region is shown.

    \b
    Examples:
      sruc compare photo.jpg -s 3 --models bicubic,srcnn,vdsr -o compare.png
      sruc compare photo_hr.png -s 3 --models bicubic,vdsr --from-hr --crop 200,120,96,96
      sruc compare small.png -s 2 --models srcnn,vdsr --hr big.png
    """
    from sruc.measure.compare import (
        Crop,
        check_reference,
        check_sheet_output,
        compare_models,
        parse_models,
        write_sheet,
    )

    names = parse_models(models)
    check_reference(hr, from_hr)
    region = Crop.parse(crop) if crop is not None else None
    dst = output if output is not None else _default_output(input)
    inputs = (input,) if hr is None else (input, hr)
    check_sheet_output(dst, overwrite=overwrite, inputs=inputs)  # before any download
    with Display(not quiet) as display:
        loaded = [
            load_model_for_cli(name, scale, cache_dir, offline, None, display) for name in names
        ]
        bars: dict[str, Any] = {}

        def progress(label: str, done: int, total: int) -> None:
            if label not in bars:
                bars[label] = display.bar(label, unit="tiles")
            if bars[label] is not None:
                bars[label](done, total)

        sheet = compare_models(
            input,
            scale,
            loaded,
            hr=hr,
            from_hr=from_hr,
            crop=region,
            device=device,
            precision=precision,
            tile=tile,
            max_pixels=pixel_limits(max_pixels)[0],
            progress=progress,
        )
        path = write_sheet(sheet, dst, zoom=zoom, overwrite=overwrite)
    if as_json:
        click.echo(json.dumps({"output": str(path), **sheet.to_json()}, indent=2))
    else:
        click.echo(table(sheet))
    if not quiet:
        c = sheet.crop
        how = "most detailed region" if sheet.auto else "crop"
        click.echo(
            f"wrote {path} ({len(sheet.panels)} models x{scale:g}, {how} "
            f"{c.width}x{c.height} at {c.x},{c.y} of the input)",
            err=True,
        )


def table(sheet: Any) -> str:
    """The panels' numbers as a plain text table (model, seconds, PSNR, SSIM)."""
    scored = sheet.shave is not None
    head = ["model", "seconds"] + (["Y-PSNR (dB)", "SSIM"] if scored else [])
    rows = [head]
    for p in sheet.panels:
        row = [p.label, f"{p.seconds:.3f}"]
        if scored:
            row += [_db(p.psnr), f"{p.ssim:.4f}" if p.ssim is not None else "n/a"]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]
    return "\n".join(lines)


def _db(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "inf" if math.isinf(value) else f"{value:.4f}"

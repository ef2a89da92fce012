"""``sruc batch``: a thin click layer over :func:`sruc.batch.run.run_batch`.

People get stderr: one ``error:`` line per file that failed, as it fails, a
progress bar (only on a terminal), a summary at the end, and a last
``error:`` line if anything failed. Programs get the ``--json`` report on
stdout and the exit code: 0 all good, 1 some file failed or the batch stopped
early, 2 a usage error, 130 Ctrl-C.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from sruc.cli.options import (
    CONTEXT,
    SCALE,
    engine_option,
    load_model_for_cli,
    max_pixels_option,
    pixel_limits,
    threads_option,
    tta_option,
    weights_options,
)
from sruc.cli.progress import Display
from sruc.engine.launch import rank_prefix
from sruc.engine.precision import PRECISIONS
from sruc.errors import SrucError, Stopped

# A literal copy of sruc.batch.plan.OUTPUT_FORMATS, so that `sruc --help` does not
# import torch (a test checks they agree).
FORMAT_CHOICES = ("same", "png", "jpg", "webp", "tif", "gif", "avif")


class BatchFailed(SrucError):
    """Some files failed or the batch stopped early (exit 1).

    (Raised rather than returned: ``sruc.cli.main`` turns a SrucError into its
    exit code, while a command's own exit code would be lost on the way.)
    """


def _summary(report: Any, scale: float) -> str:
    """``done 18, skipped 2, failed 1 - 12.4 MP in 51.2 s (0.24 MP/s), vdsr x3 on cpu (bf16)``."""
    s = report.summary()
    parts = [f"done {s['done']}", f"skipped {s['skipped']}", f"failed {s['failed']}"]
    if s["ignored"]:
        parts.append(f"not images {s['ignored']}")
    if s["pending"]:
        parts.append(f"not processed {s['pending']}")
    rate = s["megapixels"] / s["seconds"] if s["seconds"] > 0 else 0.0
    return (
        f"{', '.join(parts)} - {s['megapixels']:.2f} MP in {s['seconds']:.1f} s "
        f"({rate:.2f} MP/s), {report.model} x{scale:g} on {report.device} ({report.precision}"
        f"{'' if report.engine in ('', 'torch') else ' ' + report.engine})"
    )


@click.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
    help="Output folder (created if missing).",
)  # fmt: skip
@click.option(
    "-s", "--scale", type=SCALE, default=2.0, show_default=True, help="Upscaling factor, in (1, 8]."
)
@click.option(
    "-m", "--model", default="vdsr", show_default=True,
    help="A name from `sruc models` (vdsr, srcnn, bicubic) or a checkpoint file.",
)  # fmt: skip
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option(
    "--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
    help="auto: bf16/fp16 where the device runs it natively and the weights keep their "
    "accuracy (checked at start), else fp32.",
)  # fmt: skip
@click.option(
    "-r", "--recursive", is_flag=True, help="Walk sub-folders; outputs mirror the tree under -o."
)
@click.option("--overwrite", is_flag=True, help="Redo files whose output exists (default: skip).")
@click.option(
    "--suffix", default=None, help="Added to each output name's stem. [default: _x{scale}]"
)
@click.option(
    "--format", "output_format", type=click.Choice(FORMAT_CHOICES), default="same",
    show_default=True, help="Output format; same: the input's where sruc writes it, else png.",
)  # fmt: skip
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=None,
    help="JPEG/WebP/AVIF/HEIC quality. [default: 95]",
)
@click.option(
    "--tile", type=click.IntRange(min=0), default=None,
    help="Tile edge in pixels; 0 disables tiling. [default: chosen per device]",
)  # fmt: skip
@max_pixels_option
@click.option(
    "--shard", metavar="K/N", default=None,
    help="Process share K of N (1-based) of the files, e.g. one per machine. Under torchrun "
    "each process also takes its RANK's share.",
)  # fmt: skip
@engine_option
@tta_option
@weights_options
@threads_option
@click.option(
    "--json", "as_json", is_flag=True, help="Print the report (every file) as JSON on stdout."
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def batch(
    inputs: tuple[str, ...],
    out_dir: Path,
    scale: float,
    model: str,
    device: str,
    precision: str,
    recursive: bool,
    overwrite: bool,
    suffix: str | None,
    output_format: str,
    quality: int | None,
    tile: int | None,
    max_pixels: int | None,
    shard: str | None,
    engine: str,
    tta: bool,
    sha256: str | None,
    cache_dir: Path | None,
    offline: bool,
    threads: int | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Upscale every image in files, folders and glob patterns into one folder.

    Outputs are named {stem}{suffix}.{ext}. Existing outputs are skipped, so
    running the same command again resumes an interrupted batch. Files that
    are not images (.DS_Store, videos, text) are passed over; a broken image
    is reported and the rest go on. Exit code 1 if any file failed.

    \b
    Examples:
      sruc batch photos/ -o upscaled/ -s 3 --model runs/vdsr/best.pt
      sruc batch photos/ "more/*.jpg" -o up/ -s 2 --recursive --format png --json > report.json
      sruc batch photos/ -o up/ --shard 2/4        # the second of four machines
      torchrun --nproc_per_node=4 -m sruc batch photos/ -o up/ --device cuda
    """
    from sruc.batch import BatchInterrupted, parse_shard, run_batch

    share = parse_shard(shard) if shard is not None else None
    prefix = rank_prefix()
    with Display(not quiet) as display:
        loaded = load_model_for_cli(model, scale, cache_dir, offline, sha256, display)
        bar = display.bar("batch", unit="files")

        def progress(p: Any) -> None:  # p: sruc.batch.report.BatchProgress
            if p.item is not None and p.item.status == "failed":
                display.say(f"{prefix}error: {p.item.error}")
            if bar is not None:
                rate = p.megapixels / p.elapsed if p.elapsed > 0 else 0.0
                info = f"{p.finished} images  {rate:.2f} MP/s"
                if p.frames is not None:  # inside an animation: its frames
                    info += f"  frame {p.frames[0]}/{p.frames[1]}"
                bar(p.position, max(p.total, 1), info=info)

        interrupted = False
        try:
            report = run_batch(
                inputs,
                out_dir,
                scale,
                model=loaded,
                device=device,
                precision=precision,
                tile=tile,
                recursive=recursive,
                overwrite=overwrite,
                suffix=suffix,
                output_format=output_format,
                quality=quality,
                max_pixels=pixel_limits(max_pixels)[0],
                max_output_pixels=pixel_limits(max_pixels)[1],
                shard=share,
                progress=progress,
                tta=tta,
                engine=engine,
            )
        except BatchInterrupted as e:
            report, interrupted = e.report, True
    if not quiet:
        click.echo(prefix + _summary(report, scale), err=True)
    if as_json:
        click.echo(json.dumps(report.to_json()))
    if interrupted:
        left = report.count("pending")
        raise Stopped(
            f"{prefix}interrupted, {left} file(s) not processed; run the same command "
            "again to resume"
        )
    if report.stopped:
        raise BatchFailed(f"{prefix}stopped early, {report.stopped}")
    if report.exit_code:
        n = len(report.failed)
        raise BatchFailed(f"{prefix}{n} of {len(report.items)} file(s) failed (see above)")

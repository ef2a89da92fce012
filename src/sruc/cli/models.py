"""``sruc models``: list, pull, verify and locate pretrained weights.

A thin layer over :mod:`sruc.zoo.registry` and :mod:`sruc.zoo.hub`, registered in
:mod:`sruc.cli.main`. Results go to stdout, download progress bars to stderr (and
only on a terminal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sruc.cli.options import CONTEXT, cache_options, offline_flag
from sruc.cli.progress import Display
from sruc.errors import ModelError


def _settings(ctx: click.Context, cache_dir: Path | None, offline: bool) -> tuple[Any, Any]:
    """A subcommand's own options, else the group's; None lets the environment decide."""
    parent = ctx.find_object(dict) or {}
    return (
        cache_dir if cache_dir is not None else parent.get("cache_dir"),
        offline_flag(offline or bool(parent.get("offline"))),
    )


@click.group(invoke_without_command=True, context_settings=CONTEXT)
@cache_options
@click.pass_context
def models(ctx: click.Context, cache_dir: Path | None, offline: bool) -> None:
    """List pretrained weights, or pull, verify and locate them.

    Without a subcommand: a table of the registry's weights files and where
    each one is (cached, bundled with sruc, remote, or missing when offline).

    \b
    Examples:
      sruc models
      sruc models pull vdsr
      sruc models verify
      sruc models path vdsr
    """
    ctx.obj = {"cache_dir": cache_dir, "offline": offline}
    if ctx.invoked_subcommand is not None:
        return
    from sruc.zoo import registry

    folder, off = _settings(ctx, None, False)
    rows = [("NAME", "FILE", "ARCH", "SCALES", "SIZE", "WHERE", "SET5 Y-PSNR (dB)")]
    rows += [(n, "-", n, "any", "-", "built-in", "") for n in registry.builtin_names()]
    for w in sorted(registry.PRETRAINED, key=lambda w: (w.group, min(w.scales), w.name)):
        where = registry.where(w, cache_dir=folder, offline=off)
        scales = "x" + "/".join(f"{s:g}" for s in w.scales)
        set5 = " ".join(f"x{s:g} {v:.2f}" for s, v in sorted(w.psnr.get("Set5", {}).items()))
        rows.append((w.group, w.file, w.arch.upper(), scales, _human(w.size), where, set5))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(n) for c, n in zip(r, widths, strict=True)).rstrip())


@models.command(context_settings=CONTEXT)
@click.argument("name", required=False)
@click.option("--all", "everything", is_flag=True, help="Every file in the registry.")
@click.option("--sha256", metavar="HEX", default=None, help="SHA-256 of a NAME given as a URL.")
@cache_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def pull(
    ctx: click.Context,
    name: str | None,
    everything: bool,
    sha256: str | None,
    cache_dir: Path | None,
    offline: bool,
    quiet: bool,
) -> None:
    """Download weights into the cache (a good cached copy is kept).

    NAME is a registry name ('srcnn' pulls its file for every scale) or an
    http(s) URL with --sha256. Prints where each file is.

    \b
    Examples:
      sruc models pull vdsr
      sruc models pull --all
      sruc models pull https://example.org/best.pt --sha256 HEX
    """
    from sruc.zoo import hub, registry

    if everything == (name is not None):
        raise click.UsageError("give a model NAME or --all (one of them)")
    folder, off = _settings(ctx, cache_dir, offline)
    if name is not None and hub.is_url(name):
        targets = [registry.url_pinned(name, sha256)]
    else:
        if sha256 is not None:
            raise click.UsageError("--sha256 pins a URL; registry names are pinned already")
        rows = list(registry.PRETRAINED) if everything else registry.lookup(name or "")
        if not rows:
            click.echo("Nothing to pull: no pretrained weights are released yet.")
            return
        targets = [registry.pinned(w) for w in rows]
    verbs = {"cache": "already cached", "bundled": "bundled with sruc", "download": "downloaded"}
    with Display(not quiet) as display:
        for target in targets:
            located = hub.resolve(
                target, cache=folder, offline=off, progress=display.download(target.file)
            )
            click.echo(f"{target.file}: {verbs[located.origin]}: {located.path}")


@models.command(context_settings=CONTEXT)
@cache_options
@click.pass_context
def verify(ctx: click.Context, cache_dir: Path | None, offline: bool) -> None:
    """Re-hash every cached and bundled weights file against its pinned SHA-256.

    Prints one line per file; exits 1 if any file is damaged. Nothing is
    changed: `sruc models pull NAME` replaces a damaged cached file.

    \b
    Example:
      sruc models verify
    """
    from sruc.zoo import hub, registry

    folder, _ = _settings(ctx, cache_dir, offline)
    checks = registry.verify(cache_dir=folder)
    if not checks:
        click.echo(f"No weights files to verify: none in {hub.cache_dir(folder)}, none bundled.")
        return
    notes = {
        "partial": "an unfinished download: the next pull resumes it and verifies it",
        "unknown": "not a file sruc knows: not checked",
    }
    for c in checks:
        if c.status == "damaged":
            note = f"expected sha256 {c.expected}, got {c.got}"
        else:
            note = notes.get(c.status, "")
        click.echo(f"{c.status:<8} {c.origin:<8} {c.path}" + (f"  ({note})" if note else ""))
    damaged = [c for c in checks if c.status == "damaged"]
    if damaged:
        names = ", ".join(c.path.name for c in damaged)
        raise ModelError(
            f"{len(damaged)} weights file{'s' * (len(damaged) != 1)} failed verification "
            f"({names}): `sruc models pull NAME` replaces a damaged cached file; "
            "reinstall sruc for a damaged bundled one"
        )


@models.command(context_settings=CONTEXT)
@click.argument("name", required=False)
@cache_options
@click.pass_context
def path(ctx: click.Context, name: str | None, cache_dir: Path | None, offline: bool) -> None:
    """Print the cache folder, or where a model's file is (or would be put).

    To work offline, copy a file to the path printed here (the file name must
    stay as printed); it is checked against its SHA-256 before use.

    \b
    Examples:
      sruc models path
      sruc models path vdsr
    """
    from sruc.zoo import hub, registry

    folder, _ = _settings(ctx, cache_dir, offline)
    if name is None:
        click.echo(hub.cache_dir(folder))
        return
    for w in registry.lookup(name):
        click.echo(registry.file_path(w, cache_dir=folder))


def _human(size: int) -> str:
    """A size in bytes as people read it (decimal units, as downloads show)."""
    value = float(size)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"

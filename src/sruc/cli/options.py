"""Click options shared by several commands, defined once."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from sruc.zoo.registry import LoadedModel


def weights_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options that say where model weights may come from (sha256, cache_dir, offline)."""
    f = click.option(
        "--offline", is_flag=True, help="Never use the network (also SRUC_OFFLINE=1)."
    )(f)
    f = click.option(
        "--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Weights cache folder. [default: SRUC_CACHE_DIR, else the user cache folder]",
    )(f)  # fmt: skip
    return click.option(
        "--sha256", metavar="HEX", default=None,
        help="Expected SHA-256 of the --model file; required for a --model URL.",
    )(f)  # fmt: skip


def load_model_for_cli(
    model: str,
    scale: float,
    cache_dir: Path | None,
    offline: bool,
    sha256: str | None,
    quiet: bool,
) -> LoadedModel:
    """Resolve ``--model`` with the weights options, showing download bars unless quiet."""
    from sruc.cli.models import download_bars
    from sruc.zoo.registry import load_model

    with download_bars(not quiet) as bars:
        return load_model(
            model,
            scale=scale,
            cache_dir=cache_dir,
            offline=True if offline else None,
            sha256=sha256,
            progress=bars(model),
        )


@contextmanager
def progress_bar(
    enabled: bool, description: str, console: Any, unit: str | None = None
) -> Iterator[Callable[..., None] | None]:
    """A transient rich bar on stderr, only when it is a terminal.

    Yields None when disabled, else ``update(done, total, label=None)``, which
    fits both the pipeline's (done, total) and bench's (done, total, label)
    progress callbacks.
    """
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if unit:
        columns.append(TextColumn(unit))
    columns.append(TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int, label: str | None = None) -> None:
            if label is None:
                bar.update(task, completed=done, total=total)
            else:
                bar.update(task, completed=done, total=total, description=label)

        yield update

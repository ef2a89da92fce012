"""Click options shared by several commands, defined once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from sruc.registry import LoadedModel


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
    from sruc.cli_models import download_bars
    from sruc.registry import load_model

    with download_bars(not quiet) as bars:
        return load_model(
            model,
            scale=scale,
            cache_dir=cache_dir,
            offline=True if offline else None,
            sha256=sha256,
            progress=bars(model),
        )

"""The one progress display of the command line.

On a terminal, :class:`Display` shows transient rich bars on stderr (tiles,
images, training steps, downloads) and prints message lines above them; off a
terminal (a pipe, a log file, CI) or with ``-q`` it shows no bars and prints
the lines plainly, so logs stay readable. Every command makes one and hands
its callbacks to the library, which only ever calls ``progress(done, total)``
style functions and never prints.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

#: ``update(done, total, description=None, info=None, unit=None)``: moves one bar.
BarUpdate = Callable[..., None]


class Display:
    """Bars and lines on stderr for one command (a context manager).

    Args:
        enabled: False for ``-q``: no bars; :meth:`say` still prints unless ``quiet``.
        quiet: print nothing at all (not even :meth:`say` lines).
    """

    def __init__(self, enabled: bool = True, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self.live = enabled and not quiet and sys.stderr.isatty()
        self._progress: Any = None
        self._console: Any = None

    def __enter__(self) -> Display:
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._console = Console(stderr=True, highlight=False, soft_wrap=True)
            columns = (
                TextColumn("{task.description}"),
                BarColumn(bar_width=30),
                _amount_column(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
            )
            self._progress = Progress(*columns, console=self._console, transient=True)
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None

    def say(self, line: str) -> None:
        """One line for people: above the bars, or plainly."""
        if self.quiet:
            return
        if self._console is not None:
            self._console.print(line, markup=False, highlight=False)
        else:
            click.echo(line, err=True)

    def bar(
        self, description: str, *, unit: str = "", total: int | None = None, nbytes: bool = False
    ) -> BarUpdate | None:
        """A new bar (None when bars are off); ``nbytes`` shows sizes and speed."""
        if self._progress is None:
            return None
        task = self._progress.add_task(description, total=total, unit=unit, info="", nbytes=nbytes)
        return _Bar(self._progress, task)

    def remove(self, bar: BarUpdate | None) -> None:
        """Take a finished bar off the display."""
        if isinstance(bar, _Bar) and self._progress is not None:
            self._progress.remove_task(bar.task)

    def download(self, label: str) -> Callable[[int, int | None], None] | None:
        """A download bar for one file, shown from its first call (cached files show none)."""
        if self._progress is None:
            return None
        made: list[BarUpdate] = []

        def update(done: int, total: int | None) -> None:
            if not made:
                bar = self.bar(f"downloading {label}", total=total, nbytes=True)
                assert bar is not None
                made.append(bar)
            made[0](done, total)

        return update


class _Bar:
    """One bar: ``bar(done, total=None, description=None, info="", unit=None)``."""

    def __init__(self, progress: Any, task: Any) -> None:
        self.progress, self.task = progress, task

    def __call__(
        self,
        done: int,
        total: int | None = None,
        description: str | None = None,
        info: str = "",
        unit: str | None = None,
    ) -> None:
        fields: dict[str, Any] = {"completed": done, "total": total, "info": info}
        if description is not None:
            fields["description"] = description
        if unit is not None:  # what it counts changed (tiles -> frames for an animation)
            fields["unit"] = unit
        self.progress.update(self.task, **fields)


def _amount_column() -> Any:
    """One column: ``12/40 tiles`` for counts, ``1.2/2.6 MB 3.1 MB/s`` for downloads.

    Made on first use, so that ``sruc --help`` does not import rich.progress."""
    from rich.progress import DownloadColumn, ProgressColumn, TransferSpeedColumn
    from rich.text import Text

    class Amount(ProgressColumn):
        def __init__(self) -> None:
            super().__init__()
            self.size, self.speed = DownloadColumn(), TransferSpeedColumn()

        def render(self, task: Any) -> Any:
            if task.fields.get("nbytes"):
                return Text.assemble(self.size.render(task), " ", self.speed.render(task))
            done = int(task.completed)
            total = "?" if task.total is None else str(int(task.total))
            unit = task.fields.get("unit", "")
            return Text(f"{done}/{total}{' ' + unit if unit else ''}")

    return Amount()


__all__ = ["BarUpdate", "Display"]

"""Planning a batch: inputs -> files -> output names, with its clashes, skips and shards.

:func:`plan_batch` expands files, folders and glob patterns (through
:mod:`sruc.files.discovery`), names each output, and decides before any work
which files clash, which are already done (skip-existing, so a rerun resumes)
and which belong to this process's shard.

Scale-out: each process can take a disjoint, deterministic share of the files
(``shard``; under ``torchrun`` the ``RANK``/``WORLD_SIZE`` variables add to
it), chosen by a stable hash of the output's relative path (:func:`in_shard`).
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sruc.batch.report import FAILED, IGNORED, SKIPPED, BatchItem
from sruc.engine.launch import torchrun
from sruc.errors import UsageError
from sruc.files import discovery, images
from sruc.scales import check_scale

#: Output formats by ``output_format`` name; ``same`` keeps the input's
#: extension where sruc can write it and falls back to PNG.
OUTPUT_FORMATS = ("same", "png", "jpg", "webp", "tif", "gif", "avif")
FALLBACK_EXTENSION = ".png"


def default_suffix(scale: float) -> str:
    """``_x3``, ``_x2.5``: the default output name suffix."""
    return f"_x{scale:g}"


def output_extension(source: Path, output_format: str) -> str:
    """The output's extension (with the dot) for ``source`` and an ``output_format`` name."""
    if output_format not in OUTPUT_FORMATS:
        raise UsageError(
            f"unknown output format {output_format!r}; use {', '.join(OUTPUT_FORMATS)}"
        )
    if output_format != "same":
        return f".{output_format}"
    ext = source.suffix.lower()
    return ext if ext in images.FORMATS else FALLBACK_EXTENSION


def parse_shard(spec: str) -> tuple[int, int]:
    """``"K/N"`` (1-based, as typed) -> ``(K - 1, N)``.

    Raises:
        UsageError: not of the form K/N with 1 <= K <= N.
    """
    try:
        k_text, n_text = spec.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise UsageError(f"--shard {spec!r} must look like K/N, e.g. 1/4") from None
    if n < 1 or not 1 <= k <= n:
        raise UsageError(f"--shard {spec}: K/N needs 1 <= K <= N, e.g. 1/4 to 4/4")
    return k - 1, n


def effective_shard(
    shard: tuple[int, int] | None, env: Mapping[str, str] | None = None
) -> tuple[int, int] | None:
    """The 0-based ``(index, count)`` this process takes, or None for everything.

    ``shard`` splits the files between machines; torchrun's ``RANK`` of
    ``WORLD_SIZE`` splits each share again between its processes, so
    ``--shard 2/3`` under a 4-process torchrun is share ``1 * 4 + rank`` of 12.
    """
    env = os.environ if env is None else env
    tr = torchrun(env)
    if tr is None:
        return shard
    rank, world = tr.rank, tr.world
    k, n = shard if shard is not None else (0, 1)
    return k * world + rank, n * world


def batch_device(device: str | torch.device, env: Mapping[str, str] | None = None) -> str:
    """Under torchrun, ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` (one GPU per process)."""
    env = os.environ if env is None else env
    text = str(device).strip().lower()
    tr = torchrun(env)
    if tr is None or text not in ("auto", "cuda"):
        return str(device)
    if text == "auto" and not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{tr.local_rank}"


def in_shard(key: str, shard: tuple[int, int] | None) -> bool:
    """Whether the file with output key ``key`` belongs to ``shard``.

    A stable hash (SHA-256 of the relative output path), not Python's salted
    ``hash``: every process, machine and rerun agrees, and a file keeps its
    shard when others are added to the folder.
    """
    if shard is None:
        return True
    index, count = shard
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count == index


def _candidate(path: Path, rel: Path) -> _Source | None:
    """A file found by a folder walk or a glob, unless its name says it is no image."""
    if not discovery.is_candidate(path):
        return None
    return _Source(path, rel, discovery.claims_image(path))


@dataclass
class _Source:
    path: Path
    rel: Path  # where the output goes, relative to the output folder (before renaming)
    claimed: bool  # a failure to decode it is reported (else it is skipped silently)


def _prune_for(root: Path, out_dir: Path) -> Path | None:
    """The output folder, when it lies strictly inside input folder ``root``: never read it."""
    r, o = root.resolve(), out_dir.resolve()
    return o if r in o.parents else None


def _walk(
    folder: Path, recursive: bool, prune: Path | None, errors: list[BatchItem]
) -> Iterable[_Source]:
    """Image candidates under ``folder`` in sorted order; ``prune`` is not entered."""

    def onerror(e: OSError) -> None:
        where = Path(e.filename) if e.filename else folder
        errors.append(
            BatchItem(where, where, FAILED, f"{where}: cannot read folder ({e.strerror})")
        )

    exclude = [prune] if prune is not None else []
    for path in discovery.walk(folder, recursive=recursive, exclude=exclude, onerror=onerror):
        src = _candidate(path, path.relative_to(folder))
        if src is not None:
            yield src


def _glob_base(pattern: str) -> Path:
    """The folder a glob pattern starts from: its parts before the first wildcard."""
    parts = Path(pattern).parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))]]
    return Path(*fixed) if fixed else Path(".")


def _expand(
    inputs: Sequence[str | os.PathLike[str]], recursive: bool, out_dir: Path
) -> tuple[list[_Source], list[BatchItem]]:
    """Files, folders and glob patterns -> candidate files, in order; plus input errors.

    A file named on its own is always tried (the user asked for it); files
    found in folders or by patterns are filtered by name first.
    """
    found: list[_Source] = []
    errors: list[BatchItem] = []
    for arg in inputs:
        text = os.fspath(arg)
        path = Path(text)
        if path.is_dir():
            found += _walk(path, recursive, _prune_for(path, out_dir), errors)
        elif path.exists() or path.is_symlink():
            found.append(_Source(path, Path(path.name), True))
        elif glob.has_magic(text):
            # Quoted patterns, or shells that do not expand them (Windows cmd).
            prune = _prune_for(_glob_base(text), out_dir)
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            if prune is not None:
                matches = [m for m in matches if not _same_or_inside(m.resolve(), prune)]
            if not matches:
                errors.append(BatchItem(path, path, FAILED, f"{text}: no file matches"))
            for m in matches:
                if m.is_dir():
                    found += _walk(m, recursive, prune, errors)
                elif (src := _candidate(m, Path(m.name))) is not None:
                    found.append(src)
        else:
            errors.append(BatchItem(path, path, FAILED, f"{text}: no such file or folder"))
    return found, errors


def _same_or_inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def plan_batch(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    scale: float,
    *,
    recursive: bool = False,
    overwrite: bool = False,
    suffix: str | None = None,
    output_format: str = "same",
    shard: tuple[int, int] | None = None,
) -> list[BatchItem]:
    """Every file the batch would touch, in order, with its output and status.

    Planned files are ``pending``; ``skipped`` ones already have an output;
    ``failed`` ones are inputs that do not exist, folders that cannot be read,
    or files whose output would clash with an earlier file's. The same file
    given twice appears once, and files that are outputs of this very batch
    (the output folder is, or is inside, an input folder) not at all. With
    ``shard``, other shards' files are left out; clashes are found over all
    files first, so every shard agrees. Input errors appear in every shard.

    Raises:
        UsageError: a bad scale, an unknown ``output_format``, or a suffix
            with a path separator.
    """
    check_scale(scale)
    suffix = default_suffix(scale) if suffix is None else suffix
    if "/" in suffix or os.sep in suffix:
        raise UsageError(f"--suffix {suffix!r} must not contain a path separator")
    if output_format not in OUTPUT_FORMATS:
        raise UsageError(
            f"unknown output format {output_format!r}; use {', '.join(OUTPUT_FORMATS)}"
        )
    out = Path(out_dir)
    sources, errors = _expand(inputs, recursive, out)
    unique: dict[Path, _Source] = {}
    for s in sources:
        unique.setdefault(s.path.resolve(), s)  # the same file given twice: once
    dst_of = {
        real: s.rel.with_name(s.rel.stem + suffix + output_extension(s.path, output_format))
        for real, s in unique.items()
    }
    produced = {(out / rel).resolve() for rel in dst_of.values()}
    items: list[BatchItem] = []
    # Resolved output -> the file it belongs to: the first file whose extension says
    # it is an image, else the first file (a text file "notes" must not take the name
    # of "notes.png"'s output).
    owner: dict[Path, _Source] = {}
    for real, s in sorted(unique.items(), key=lambda kv: not kv[1].claimed):
        owner.setdefault((out / dst_of[real]).resolve(), s)
    for real, s in unique.items():
        rel = dst_of[real]
        dst = out / rel
        if real in produced and real != dst.resolve():
            continue  # one of this batch's own outputs, found in an input folder
        item = BatchItem(s.path, dst, claimed=s.claimed, key=rel.as_posix())
        first = owner[dst.resolve()]
        if first is not s and first.claimed and not s.claimed:
            item.status, item.error = IGNORED, f"not tried: {first.path} has the output name {dst}"
        elif first is not s:
            item.status, item.error = (
                FAILED,
                (
                    f"{s.path}: its output {dst} is also the output of {first.path}; "
                    "rename one, or use --recursive or --suffix to tell them apart"
                ),
            )
        elif dst.is_dir():
            item.status = FAILED
            item.error = f"{s.path}: its output {dst} is a folder; remove it or change --suffix"
        elif dst.resolve() == real:
            item.status = FAILED
            item.error = f"{s.path}: the output would replace the input; change -o or --suffix"
        elif dst.exists() and not overwrite:
            item.status = SKIPPED
        items.append(item)
    return errors + [i for i in items if in_shard(i.key, shard)]


__all__ = [
    "OUTPUT_FORMATS",
    "batch_device",
    "default_suffix",
    "effective_shard",
    "in_shard",
    "output_extension",
    "parse_shard",
    "plan_batch",
]

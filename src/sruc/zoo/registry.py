"""Model names users can type, and turning a ``--model`` value into a network.

A model is named by a registry name (``bicubic``, and the pretrained weights
once they are released), by a path to a checkpoint file (see
:mod:`sruc.zoo.checkpoint`), or by an http(s) URL pinned with its SHA-256. The
table of pretrained weights is data (:mod:`sruc.zoo.released`): entries exist
only for files that exist.

Adding released weights takes two steps: a row in :data:`sruc.zoo.released.PRETRAINED`,
and (for the offline default) the file itself among the bundled weights. This
module says which file a name means; :mod:`sruc.zoo.hub` alone knows where files
are and fetches them: cache, then bundled, then download.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from sruc import archs
from sruc.errors import ModelError, SrucWarning, UsageError
from sruc.scales import check_scale
from sruc.zoo import checkpoint, hub
from sruc.zoo.released import PRETRAINED, Weights, check_table

# The functions here read the table through this module's name for it, PRETRAINED,
# so swapping registry.PRETRAINED (as the tests do) changes every lookup.

__all__ = [
    "DEFAULT_MODEL",
    "PRETRAINED",
    "FileCheck",
    "LoadedModel",
    "Weights",
    "Where",
    "builtin_names",
    "check_table",
    "fetch",
    "file_path",
    "find",
    "group_scales",
    "known_names",
    "load_model",
    "lookup",
    "pinned",
    "select",
    "url_pinned",
    "verify",
    "where",
]


def builtin_names() -> list[str]:
    """Names that need no weights file: the architectures that are the identity (bicubic)."""
    return [n for n in archs.names() if archs.get(n).identity]


#: The model `sruc up`, `sruc batch` and :func:`sruc.upscale` use when none is given.
DEFAULT_MODEL = "vdsr"


#: Where a registry file is now, as ``sruc models`` shows it (see :func:`where`).
Where = hub.Where
#: The result of re-hashing one weights file (see :func:`verify`).
FileCheck = hub.FileCheck


@dataclass
class LoadedModel:
    """A network ready to run, with what the pipeline needs to know about it.

    Attributes:
        name: what the user typed, for messages.
        module: the network, in eval mode.
        arch: architecture name.
        scales: scales the weights were trained for (empty: any).
        radius: receptive-field radius in pixels (tile overlap).
        meta: checkpoint metadata.
    """

    name: str
    module: nn.Module
    arch: str
    scales: list[float] = field(default_factory=list)
    radius: int = 0
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def multiscale(self) -> bool:
        """One set of weights for every scale (``ArchSpec.multiscale``)."""
        return _multiscale(self.arch)

    @property
    def identity(self) -> bool:
        """The model returns its interpolated input (bicubic): nothing to run."""
        return self.arch in archs.names() and archs.get(self.arch).identity

    def check_scale(self, scale: float) -> None:
        """Raise if these weights cannot upscale by ``scale``; warn if untrained.

        A model that names no scales (an ``nn.Module`` passed in) takes any. ``scale``
        is an upscaling factor already checked by the caller's entry point."""
        if not self.scales:
            return
        if self.multiscale:
            if self.scales and not (min(self.scales) <= scale <= max(self.scales)):
                warnings.warn(
                    f"{self.name} was trained for x{_fmt(self.scales)}; "
                    f"x{scale:g} is outside that range and may look worse",
                    SrucWarning,
                    stacklevel=2,
                )
            return
        if not any(math.isclose(scale, s) for s in self.scales):
            raise ModelError(
                f"{self.name} ({self.arch.upper()}) has weights for x{_fmt(self.scales)} only, "
                f"not x{scale:g}; use one of those scales or a multi-scale model such as VDSR"
            )


def known_names() -> list[str]:
    """Every model name users can type, built-in ones first (groups, not their files)."""
    return [*builtin_names(), *sorted({w.group for w in PRETRAINED})]


def find(name: str) -> list[Weights]:
    """The registry rows a name stands for: a group's files, or the file of that name."""
    rows = [w for w in PRETRAINED if w.group == name]
    return rows or [w for w in PRETRAINED if w.name == name]


def lookup(name: str) -> list[Weights]:
    """Like :func:`find`, but an unknown name is an error that lists the known ones.

    Raises:
        ModelError: no registry file has that name.
    """
    rows = find(name)
    if not rows:
        raise _unknown(name)
    return rows


def group_scales(name: str) -> list[float] | None:
    """The scales a registry name has files for: ``[]`` for a multi-scale group (one
    file for every scale), the sorted scales of a per-scale group, None for a name
    the registry does not hold (a file, a URL)."""
    rows = find(name)
    if not rows:
        return None
    return [] if _multiscale(rows[0].arch) else _all_scales(rows)


def select(name: str, scale: float | None = None) -> Weights:
    """The registry file for ``name`` at ``scale``.

    A multi-scale group (VDSR) has one file for every scale; a per-scale group
    (SRCNN) has one file per scale and the scale picks it, so it is checked
    here, before anything is downloaded.

    Raises:
        ModelError: an unknown name, no file for that scale, or a per-scale
            group without a scale.
    """
    rows = lookup(name)
    if scale is None or _multiscale(rows[0].arch):
        if len(rows) == 1:
            return rows[0]
        raise ModelError(
            f"{name} has one weights file per scale (x{_fmt(_all_scales(rows))}); "
            "give the scale (sruc up -s N, or scale=N) to pick one"
        )
    for w in rows:
        if any(math.isclose(scale, s) for s in w.scales):
            return w
    raise ModelError(
        f"{name} ({rows[0].arch.upper()}) has weights for x{_fmt(_all_scales(rows))} only, "
        f"not x{scale:g}; use one of those scales or a multi-scale model such as VDSR"
    )


def pinned(w: Weights, env: Mapping[str, str] | None = None) -> hub.Pinned:
    """How :mod:`sruc.zoo.hub` finds, fetches and verifies a registry file."""
    return _pin(w, hub.weights_url(w.url, env))


def _stored(w: Weights) -> hub.Pinned:
    """A registry file for the hub's questions about the disk, which never read the URL.

    So ``sruc models``, ``verify`` and ``path`` work with a broken ``$SRUC_WEIGHTS_URL``.
    """
    return _pin(w, w.url)


def _pin(w: Weights, url: str) -> hub.Pinned:
    return hub.Pinned(
        label=w.name,
        file=w.file,
        url=url,
        sha256=w.sha256,
        size=w.size,
        bundled=True,
        hint=f"or run `sruc models pull {w.name}` while online",
    )


def url_pinned(url: str, sha256: str | None) -> hub.Pinned:
    """How :mod:`sruc.zoo.hub` fetches a model given by URL; the hash is required.

    Raises:
        UsageError: no ``sha256``, or a malformed one.
    """
    if sha256 is None:
        raise UsageError(
            f"--model {url} needs --sha256 HEX: downloads are pinned, so a changed or "
            "damaged file is never used (sha256sum prints the hash of a file you trust)"
        )
    return hub.pin_url(url, hub.check_sha256(sha256))


def fetch(
    w: Weights,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    progress: hub.ProgressFn | None = None,
) -> hub.Located:
    """A verified copy of a registry file: cached, bundled, or downloaded now.

    Raises:
        sruc.zoo.hub.DownloadError: offline without a copy, or the download failed.
    """
    return hub.resolve(pinned(w), cache=cache_dir, offline=offline, progress=progress)


def where(
    w: Weights, *, cache_dir: str | os.PathLike[str] | None = None, offline: bool | None = None
) -> Where:
    """Where a registry file is, judged by size (``sruc models verify`` hashes)."""
    return hub.status(_stored(w), cache=cache_dir, offline=offline)


def file_path(w: Weights, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where a registry file is used from: the cache path, unless only the bundled one exists.

    For a file that is nowhere yet, this is where a download (or the user, by
    hand) puts it.
    """
    return hub.locate(_stored(w), cache=cache_dir)


def verify(*, cache_dir: str | os.PathLike[str] | None = None) -> list[FileCheck]:
    """Re-hash every cached and bundled weights file against its pinned SHA-256.

    Registry files are checked against the registry; files fetched by URL
    against the hash prefix in their name. Nothing is changed or deleted.
    """
    return hub.verify([_stored(w) for w in PRETRAINED], cache=cache_dir)


def load_model(
    spec: str | os.PathLike[str] | nn.Module = DEFAULT_MODEL,
    *,
    scale: float | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    sha256: str | None = None,
    progress: hub.ProgressFn | None = None,
) -> LoadedModel:
    """Resolve ``--model``: a registry name, a checkpoint path, a URL, or a module.

    Files are looked for in this order: an explicit path or URL; then, for a
    registry name, the cache, the weights bundled with sruc, and a download.
    Every file is checked against its SHA-256 before it is loaded, and loaded
    with ``torch.load(weights_only=True)``.

    Args:
        spec: ``bicubic``, a registry name (``vdsr``; ``srcnn`` picks the file
            for ``scale``), a checkpoint path, an http(s) URL, or an nn.Module.
        scale: the scale it will run at; picks the file of a per-scale group
            (SRCNN) and is checked before anything is downloaded.
        cache_dir: the weights cache (default: ``$SRUC_CACHE_DIR``, else the
            user cache folder).
        offline: never use the network (default: ``$SRUC_OFFLINE``).
        sha256: the SHA-256 a URL (required) or a checkpoint file must have.
        progress: download progress, called with (bytes done, total or None).

    Raises:
        ModelError: unknown name (the message lists the known ones), a bad
            checkpoint, or no weights for that scale.
        sruc.zoo.hub.DownloadError: a download failed, or offline without a copy.
        sruc.zoo.hub.ChecksumError: a file does not have its pinned SHA-256.
        UsageError: a URL without ``sha256``, or a malformed ``sha256``.
    """
    if scale is not None:
        check_scale(scale)
    if isinstance(spec, nn.Module):
        return _from_module(spec)
    text = os.fspath(spec)
    pin = hub.check_sha256(sha256) if sha256 is not None else None
    if text in builtin_names():
        if pin is not None:
            raise UsageError(f"--sha256 pins a --model URL or checkpoint file; {text} has none")
        return LoadedModel(name=text, module=archs.build(text).eval(), arch=text)
    if hub.is_url(text):
        source = url_pinned(text, pin)
        located = hub.resolve(source, cache=cache_dir, offline=offline, progress=progress)
        return _from_file(located.path, text)
    if _looks_like_path(text, registered=False):
        return _from_file(Path(text), text, pin)
    if find(text):
        if pin is not None:
            raise UsageError(
                f"--sha256 pins a --model URL or checkpoint file; {text} is pinned by the registry"
            )
        w = select(text, scale)
        return _from_registry(w, fetch(w, cache_dir=cache_dir, offline=offline, progress=progress))
    if _looks_like_path(text, registered=True):
        return _from_file(Path(text), text, pin)
    raise _unknown(text)


def _from_module(module: nn.Module) -> LoadedModel:
    return LoadedModel(
        name=type(module).__name__,
        module=module.eval(),
        arch=getattr(archs.spec_of(module), "name", "custom"),
        radius=archs.receptive_radius(module),
    )


def _from_registry(w: Weights, located: hub.Located) -> LoadedModel:
    lm = _from_file(located.path, w.name)
    _check_matches(w, lm, located.path)
    return lm


def _looks_like_path(spec: str, *, registered: bool) -> bool:
    """Whether ``spec`` names a file: explicitly, or (after registry names) by existing."""
    explicit = os.sep in spec or "/" in spec or spec.endswith((".pt", ".pth"))
    return explicit or (registered and Path(spec).exists())


def _from_file(path: Path, name: str, sha256: str | None = None) -> LoadedModel:
    if sha256 is not None and path.is_file():
        hub.verify_file(path, sha256)
    ckpt = checkpoint.load(path)
    module = ckpt.build()
    return LoadedModel(
        name=name,
        module=module,
        arch=ckpt.arch,
        scales=ckpt.scales,
        radius=archs.receptive_radius(module),
        meta=ckpt.meta,
    )


def _check_matches(w: Weights, lm: LoadedModel, path: Path) -> None:
    """The registry row must describe the file it pins (a release mistake otherwise)."""
    config = dict(getattr(lm.module, "config", {}))
    if (
        lm.arch != w.arch
        or config != dict(w.config)
        or sorted(lm.scales) != sorted(float(s) for s in w.scales)
    ):
        raise ModelError(
            f"the registry entry {w.name} ({w.arch} {dict(w.config)} x{_fmt(w.scales)}) does "
            f"not describe {path} ({lm.arch} {config} x{_fmt(lm.scales)}); please report it"
        )


def _unknown(text: str) -> ModelError:
    known = ", ".join(known_names())
    if text in archs.names():
        return ModelError(
            f"no pretrained {text.upper()} weights are available yet; known models: {known}, "
            "or pass a checkpoint file with --model PATH"
        )
    return ModelError(
        f"unknown model {text!r}; known models: {known}, or a checkpoint file path "
        "(or an http(s) URL with --sha256)"
    )


def _multiscale(arch: str) -> bool:
    return arch in archs.names() and archs.get(arch).multiscale


def _all_scales(rows: list[Weights]) -> list[float]:
    return sorted({s for w in rows for s in w.scales})


def _fmt(scales: list[float] | tuple[float, ...]) -> str:
    return "/".join(f"{s:g}" for s in scales) or "any"

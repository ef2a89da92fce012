"""Model names users can type, and turning a ``--model`` value into a network.

A model is named by a registry name (``bicubic``, and the pretrained weights
once they are released), by a path to a checkpoint file (see
:mod:`sruc.zoo.checkpoint`), or by an http(s) URL pinned with its SHA-256. The
table of pretrained weights is data: entries exist only for files that exist.

Adding released weights takes two steps: an entry in :data:`PRETRAINED`, and
(for the offline default) the file itself in ``src/sruc/zoo/weights/``. The files
are found and fetched by :mod:`sruc.zoo.hub`: cache, then bundled, then download.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from sruc import archs
from sruc.errors import ModelError, SrucWarning, UsageError
from sruc.scales import MAX_SCALE, check_scale
from sruc.zoo import checkpoint, hub


def builtin_names() -> list[str]:
    """Names that need no weights file: the architectures that are the identity (bicubic)."""
    return [n for n in archs.names() if archs.get(n).identity]


#: The model `sruc up`, `sruc batch` and :func:`sruc.upscale` use when none is given.
DEFAULT_MODEL = "vdsr"


@dataclass(frozen=True)
class Weights:
    """One released weights file: a row of the registry.

    Attributes:
        name: unique name of this file, e.g. ``srcnn-x3`` (users may type it).
        group: the name users type to get it, e.g. ``srcnn``; a group holds
            either one multi-scale file (VDSR) or one file per scale (SRCNN),
            and the requested scale picks the file.
        arch: architecture name (see :func:`sruc.archs.names`).
        config: the architecture's constructor arguments, as in the checkpoint.
        scales: scales the weights were trained for, as in the checkpoint.
        file: file name, in the cache and in ``src/sruc/zoo/weights/``.
        size: file size in bytes.
        sha256: SHA-256 of the file, lower-case hex.
        url: download URL relative to the base (:func:`sruc.zoo.hub.base_url`).
        psnr: the measured ``sruc bench`` Y-PSNR (dB) per evaluation set and
            scale, e.g. ``{"Set5": {2.0: 37.6}}``; what ``sruc models`` shows.
        trained: what the weights were trained on, and for how long.
    """

    name: str
    group: str
    arch: str
    config: Mapping[str, Any]
    scales: tuple[float, ...]
    file: str
    size: int
    sha256: str
    url: str
    psnr: Mapping[str, Mapping[float, float]] = field(default_factory=dict)
    trained: str = ""


#: The architecture of every SRCNN release file: the published 9-5-5, 64/32 filters.
_SRCNN_955 = {"channels": 1, "n1": 64, "n2": 32, "f1": 9, "f2": 5, "f3": 5}
#: What every release file was trained on.
_TRAINED_ON = "sruc train on T91 + BSD200 (276 images; 15 held out for validation), "


def _srcnn(
    scale: int, *, size: int, sha256: str, set5: float, set14: float, trained: str
) -> Weights:
    """The row of the SRCNN 9-5-5 release file for one scale (``srcnn-x{scale}.pt``)."""
    name = f"srcnn-x{scale}"
    return Weights(
        name=name,
        group="srcnn",
        arch="srcnn",
        config=dict(_SRCNN_955),
        scales=(float(scale),),
        file=f"{name}.pt",
        size=size,
        sha256=sha256,
        url=f"{name}.pt",
        psnr={"Set5": {float(scale): set5}, "Set14": {float(scale): set14}},
        trained=_TRAINED_ON + trained,
    )


#: The pretrained weights, one row per file; a row is added only together with
#: the file it describes (``scripts/release_weights.sh`` prints its size and
#: SHA-256). ``config`` and ``scales`` are exactly the checkpoint's (loading
#: checks it); ``psnr`` is what ``sruc bench`` measured on the file.
PRETRAINED: tuple[Weights, ...] = (
    Weights(
        name="vdsr",
        group="vdsr",
        arch="vdsr",
        config={"channels": 1, "depth": 20, "width": 64, "kernel": 3},
        scales=(2.0, 3.0, 4.0),
        file="vdsr.pt",
        size=2677495,
        sha256="8fa85e1faa99f0044ca95113a52eb18303fcd60c337a2cfc0ea599a87b696c16",
        url="vdsr.pt",
        psnr={
            "Set5": {2.0: 37.272, 3.0: 33.403, 4.0: 31.116},
            "Set14": {2.0: 32.866, 3.0: 29.693, 4.0: 27.909},
        },
        trained=_TRAINED_ON
        + "16,000 Adam steps of 64 41x41 patches, a second cosine cycle from those "
        "weights (peak lr 3e-4, 60,000 steps), then a third from the second's best "
        "(32 64x64 patches per step, peak lr 1e-4, --ema 0.999 from step 10,000) "
        "stopped at step 33,648 of 50,000, all in bf16, then a fourth in fp32 from that "
        "average (peak lr 3e-5, 2,200 steps) and a fifth in fp32 from the fourth's best "
        "(peak lr 3e-5, 4,000 steps): 4.9M 41x41 and 1.2M 64x64 patches up to the "
        "chosen step, 2 CPU cores, 17 h 32 min; the fifth cycle's average at step 2,000",
    ),
    _srcnn(
        2,
        size=233101,
        sha256="52f070dd2b2e8cf823c5d47ecf50b2a6f1a1c22320aa7ee750df31a2f8bdb14b",
        set5=36.734,
        set14=32.441,
        trained="starting from the x3 weights: 20,000 Adam steps of 128 33x33 patches "
        "(2.6M patches), bf16, 2 CPU cores, 26 min; best validation at step 20,000",
    ),
    _srcnn(
        3,
        size=233101,
        sha256="ecabfcfa4f2692e82b11c534f6bd8c2b17031f245dcb8ce873f715568073cc5c",
        set5=32.773,
        set14=29.310,
        trained="40,000 Adam steps of 128 33x33 patches from the bicubic start, a second "
        "cycle of 20,000, then a third of 45,000 and a fourth of 40,000 steps of 60 48x48 "
        "patches (peak lr 2e-4) and a fifth of 35,000 (peak lr 1e-4): 13.8M patches, "
        "bf16, 2 CPU cores, 2 h 53 min; best validation at step 17,000 of the fifth cycle",
    ),
    _srcnn(
        4,
        size=233101,
        sha256="ca180a317a72740421980512c6b3a371210fec5c6638b2618eefa113b88855d2",
        set5=30.456,
        set14=27.467,
        trained="starting from the x3 weights: 20,000 Adam steps of 128 33x33 patches, "
        "a second cycle of 40,000 (peak lr 3e-4), then a third, a fourth and a fifth of "
        "40,000 steps of 60 48x48 patches (peak lr 2e-4; the fifth keeps a moving average "
        "of the weights, --ema 0.999), all in bf16, then from the fifth's average at step "
        "23,000 a sixth of 6,000 steps in fp32 (peak lr 5e-5, --ema 0.999): 15.2M "
        "patches, 2 CPU cores, 3 h 09 min; the average at the end of the sixth cycle",
    ),
)

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
        """Raise if these weights cannot upscale by ``scale``; warn if untrained."""
        check_scale(scale)
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


def check_table(rows: tuple[Weights, ...] | list[Weights]) -> list[str]:
    """Problems in a registry table (empty when it is sound); the tests run this.

    Checks that names and files are unique, that user-facing names do not
    clash, that fields are well formed, and that every group is either one
    multi-scale file or per-scale files whose scales do not overlap.
    """
    problems: list[str] = []

    def dupes(values: list[str]) -> set[str]:
        return {v for v in values if values.count(v) > 1}

    names = [w.name for w in rows]
    problems += [f"duplicate name {n!r}" for n in sorted(dupes(names))]
    problems += [f"duplicate file {f!r}" for f in sorted(dupes([w.file for w in rows]))]
    groups: dict[str, list[Weights]] = {}
    for w in rows:
        groups.setdefault(w.group, []).append(w)
        at = f"{w.name}:"
        if w.group in builtin_names() or w.name in builtin_names():
            problems.append(f"{at} {w.group!r} is a built-in name")
        if w.name != w.group and w.name in {r.group for r in rows}:
            problems.append(f"{at} its name is another group's name")
        if w.arch not in archs.names() or archs.get(w.arch).identity:
            problems.append(f"{at} unknown architecture {w.arch!r}")
        if not w.scales or not all(1 < s <= MAX_SCALE for s in w.scales):
            problems.append(f"{at} scales {w.scales!r} must be in (1, {MAX_SCALE:g}]")
        if len(w.sha256) != 64 or any(c not in "0123456789abcdef" for c in w.sha256):
            problems.append(f"{at} sha256 must be 64 lower-case hex digits")
        if w.size <= 0:
            problems.append(f"{at} size must be positive")
        if not w.file.endswith(".pt") or not hub.is_plain_name(w.file):
            problems.append(f"{at} file {w.file!r} must be a plain NAME.pt")
        if not w.url or hub.is_url(w.url) or w.url.startswith("/"):
            problems.append(f"{at} url {w.url!r} must be relative to the base URL")
    for group, members in groups.items():
        if len({w.arch for w in members}) > 1:
            problems.append(f"group {group}: mixes architectures")
        elif len(members) > 1 and _multiscale(members[0].arch):
            problems.append(f"group {group}: a multi-scale architecture needs one file only")
        elif len(members) > 1:
            scales = [s for w in members for s in w.scales]
            if len(set(scales)) != len(scales):
                problems.append(f"group {group}: two files claim the same scale")
    return problems


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

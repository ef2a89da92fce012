"""The self-describing checkpoint format.

A sruc checkpoint is one ``torch.save`` of a plain dict, loadable with
``torch.load(weights_only=True)`` (no pickled code, safe to open from anyone)::

    {
        "format": "sruc-checkpoint/1",    # identifies the file and its version
        "arch": "vdsr",                   # an architecture in sruc.archs
        "config": {"depth": 20, ...},     # constructor arguments of that class
        "scales": [2.0, 3.0, 4.0],        # scales the weights were trained for
        "state_dict": {...},              # the weights
        "meta": {...},                    # free-form: recipe, steps, data hash, PSNR
    }

Because the architecture and its sizes travel with the weights, loading never
guesses (a 9-1-5 SRCNN loads as 9-1-5).
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sruc import archs
from sruc.errors import ModelError
from sruc.files.atomic import atomic_path

FORMAT = "sruc-checkpoint/1"
_FORMAT_PREFIX = "sruc-checkpoint/"
_KEYS = ("format", "arch", "config", "scales", "state_dict", "meta")


@dataclass
class Checkpoint:
    """A checkpoint's contents.

    Attributes:
        arch: architecture name (see :func:`sruc.archs.names`).
        config: constructor arguments of that architecture.
        scales: upscaling factors the weights were trained for.
        state_dict: the weights.
        meta: training metadata (free-form, JSON-like).
    """

    arch: str
    config: dict[str, Any]
    scales: list[float]
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        """The model with these weights loaded, in eval mode, on the CPU.

        The config is checked against the stored tensors on the meta device first
        (nothing allocated), so a damaged config never allocates gigabytes; weights
        that are not finite are refused.

        Raises:
            ModelError: a config out of range or not fitting the tensors (the
                message names the first tensor that differs), or NaN/inf weights.
        """
        self._check_shapes()
        for name, t in self.state_dict.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ModelError(f"the weights are damaged: {name} holds NaN or infinite values")
        model = archs.build(self.arch, self.config)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise ModelError(f"weights do not fit {self.arch} {self.config}: {first}") from None
        return model.eval()

    def _check_shapes(self) -> None:
        expected = archs.build_meta(self.arch, self.config).state_dict()
        where = f"{self.arch} {json.dumps(self.config)}"
        missing = [k for k in expected if k not in self.state_dict]
        extra = [k for k in self.state_dict if k not in expected]
        if missing or extra:
            what = f"lacks {missing[0]}" if missing else f"has {extra[0]}, which it does not use"
            raise ModelError(
                f"weights do not fit {where}: the file {what} "
                f"({len(missing)} missing, {len(extra)} extra tensors)"
            )
        for key, want in expected.items():
            got = self.state_dict[key]
            if tuple(got.shape) != tuple(want.shape):
                raise ModelError(
                    f"weights do not fit {where}: {key} is "
                    f"{'x'.join(map(str, got.shape))} in the file but "
                    f"{'x'.join(map(str, want.shape))} for this config"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "arch": self.arch,
            "config": dict(self.config),
            "scales": [float(s) for s in self.scales],
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in self.state_dict.items()},
            "meta": dict(self.meta),
        }


def from_model(
    model: nn.Module, scales: list[float], meta: Mapping[str, Any] | None = None
) -> Checkpoint:
    """Describe a model built by :func:`sruc.archs.build` as a checkpoint."""
    spec = archs.spec_of(model)
    if spec is None:
        raise ModelError(f"{type(model).__name__} is not a sruc architecture")
    arch = spec.name
    config = dict(getattr(model, "config", {}))
    # Unwrap DDP/compiled prefixes so the file loads into a bare module.
    sd = {
        k.removeprefix("module.").removeprefix("_orig_mod."): v
        for k, v in model.state_dict().items()
    }
    return Checkpoint(arch, config, [float(s) for s in scales], sd, dict(meta or {}))


def save(ckpt: Checkpoint, path: str | os.PathLike[str]) -> Path:
    """Write a checkpoint atomically: a temporary file beside it, then a rename.

    A crash or a full disk while writing leaves any previous file intact.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt.to_dict(), tmp)
    return path


def load(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and validate a checkpoint file (never unpickles code).

    Raises:
        ModelError: the file is missing, corrupt, or not a sruc checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ModelError(f"checkpoint {path} {what}")
    if not zipfile.is_zipfile(path):
        # Every torch.save since PyTorch 1.6 writes a zip archive.
        raise ModelError(f"{path} is corrupt or not a PyTorch file (not a zip archive)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelError(
            f"{path} is not a sruc checkpoint: it holds pickled Python objects, "
            "which sruc refuses to load (save with sruc.zoo.checkpoint.save)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise ModelError(f"{path} is corrupt or not a PyTorch file ({_first_line(e)})") from None
    return parse(obj, str(path))


def parse(obj: Any, source: str = "checkpoint") -> Checkpoint:
    """Validate a loaded checkpoint dict (see the module docstring)."""
    if not isinstance(obj, dict) or not str(obj.get("format", "")).startswith(_FORMAT_PREFIX):
        hint = ""
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            hint = " (it looks like a bare state_dict: wrap it with sruc.zoo.checkpoint.from_model)"
        raise ModelError(f"{source} is not a sruc checkpoint{hint}")
    if obj["format"] != FORMAT:
        raise ModelError(
            f"{source} has format {obj['format']!r}, this sruc reads {FORMAT!r}: upgrade sruc"
        )
    missing = [k for k in _KEYS if k not in obj]
    if missing:
        raise ModelError(f"{source} is a damaged sruc checkpoint: missing {', '.join(missing)}")
    scales = obj["scales"]
    if (
        not isinstance(scales, list | tuple)
        or not scales
        or not all(isinstance(s, int | float) and s > 1 for s in scales)
    ):
        raise ModelError(f"{source} has invalid scales {scales!r}")
    sd = obj["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{source} is a damaged sruc checkpoint: bad state_dict")
    if obj["arch"] not in archs.names():
        known = ", ".join(archs.names())
        raise ModelError(
            f"{source} uses architecture {obj['arch']!r}, unknown here (known: {known})"
        )
    return Checkpoint(
        arch=obj["arch"],
        config=dict(obj["config"] or {}),
        scales=[float(s) for s in scales],
        state_dict=sd,
        meta=dict(obj["meta"] or {}),
    )


def _first_line(e: BaseException, limit: int = 120) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."

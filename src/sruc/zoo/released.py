"""The released weights files, as data: one row per file that exists.

A row is added only together with the file it describes
(``scripts/release_weights.sh`` prints its size and SHA-256) and its entry in
``release/manifest.json``, which ``tests/test_release_weights.py`` checks
against this table. How each file was made (its runs, cycles, learning rates
and hours) is told in ``release/PROVENANCE.md``; a row says only what it is.
:func:`check_table` lists what would make a table unsound.
:mod:`sruc.zoo.registry` turns names into these rows; :mod:`sruc.zoo.hub`
finds their files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sruc import archs
from sruc.scales import MAX_SCALE
from sruc.zoo import hub


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
        file: file name, in the cache and among the bundled weights.
        size: file size in bytes.
        sha256: SHA-256 of the file, lower-case hex.
        url: download URL relative to the base (:func:`sruc.zoo.hub.base_url`).
        psnr: the measured ``sruc bench`` Y-PSNR (dB) per evaluation set and
            scale, e.g. ``{"Set5": {2.0: 37.6}}``; what ``sruc models`` shows.
        trained: one line on what the weights were trained on, how much and
            how; the history is in ``release/PROVENANCE.md`` and
            ``release/manifest.json``.
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
#: What every release file was trained on, and with what.
_TRAINED_ON = "sruc train, adam recipe, on T91 + BSD200 (276 images; 15 held out): "


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


#: The pretrained weights, one row per file. ``config`` and ``scales`` are
#: exactly the checkpoint's (loading checks it); ``psnr`` is what ``sruc bench``
#: measured on the file.
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
        trained=_TRAINED_ON + "5 cycles, 4.9M 41x41 and 1.2M 64x64 patches; "
        "the 5th cycle's step 2,000 (fp32, --ema 0.999)",
    ),
    _srcnn(
        2,
        size=233101,
        sha256="52f070dd2b2e8cf823c5d47ecf50b2a6f1a1c22320aa7ee750df31a2f8bdb14b",
        set5=36.734,
        set14=32.441,
        trained="from the x3 weights, 1 cycle, 2.6M 33x33 patches; step 20,000 (bf16)",
    ),
    _srcnn(
        3,
        size=233101,
        sha256="ecabfcfa4f2692e82b11c534f6bd8c2b17031f245dcb8ce873f715568073cc5c",
        set5=32.773,
        set14=29.310,
        trained="5 cycles, 13.8M 33x33 and 48x48 patches; the 5th cycle's step 17,000 (bf16)",
    ),
    _srcnn(
        4,
        size=233101,
        sha256="ca180a317a72740421980512c6b3a371210fec5c6638b2618eefa113b88855d2",
        set5=30.456,
        set14=27.467,
        trained="from the x3 weights, 6 cycles, 15.2M 33x33 and 48x48 patches; "
        "the 6th cycle's step 6,000 (fp32, --ema 0.999)",
    ),
)


def check_table(rows: tuple[Weights, ...] | list[Weights]) -> list[str]:
    """Problems in a registry table (empty when it is sound); the tests run this.

    Checks that names and files are unique, that user-facing names do not
    clash, that fields are well formed, and that every group is either one
    multi-scale file or per-scale files whose scales do not overlap.
    """
    problems: list[str] = []
    builtin = [n for n in archs.names() if archs.get(n).identity]
    multiscale = [n for n in archs.names() if archs.get(n).multiscale]

    def dupes(values: list[str]) -> set[str]:
        return {v for v in values if values.count(v) > 1}

    names = [w.name for w in rows]
    problems += [f"duplicate name {n!r}" for n in sorted(dupes(names))]
    problems += [f"duplicate file {f!r}" for f in sorted(dupes([w.file for w in rows]))]
    groups: dict[str, list[Weights]] = {}
    for w in rows:
        groups.setdefault(w.group, []).append(w)
        at = f"{w.name}:"
        if w.group in builtin or w.name in builtin:
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
        elif len(members) > 1 and members[0].arch in multiscale:
            problems.append(f"group {group}: a multi-scale architecture needs one file only")
        elif len(members) > 1:
            scales = [s for w in members for s in w.scales]
            if len(set(scales)) != len(scales):
                problems.append(f"group {group}: two files claim the same scale")
    return problems

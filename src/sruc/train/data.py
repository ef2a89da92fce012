"""Training data for ``sruc train``: find the images, fingerprint them, cut patches.

Every training pair is made by the evaluation protocol (:mod:`sruc.core.protocol`),
so the network learns exactly the degradation it is measured on::

    file -> 8-bit HR (C, H, W)
         -> [augmentation: MATLAB imresize by f in (1, 0.7, 0.5), back to 8-bit levels]
         -> luma -> modcrop(s) -> degrade(s) -> interpolate      for each scale s
         => (interpolated-LR Y, HR Y), one pair per (image, f, s)

The pairs are computed once, before training, and kept in memory as float16
planes on [0, 1]: the *patch cache*. float16 rounds a value near 1.0 to within
2**-12, i.e. at most 0.06 of an 8-bit level, far below what the networks
resolve (about 3 levels RMS at 37 dB). For the standard 291 images at scales 2,
3 and 4 the cache holds about 250 M values (0.5 GB) and takes well under a
minute to build on two CPU cores.

A batch is then a few dozen tensor slices. With ``sampling="random"``
:meth:`PatchCache.batch` draws the pair (weighted by how many patch positions
it has), the position and one of the eight flips/rotations from a generator
seeded by ``(seed, step)`` alone. With ``sampling="grid"`` (the VDSR paper's
data, as its public port cuts it) an epoch is every non-overlapping patch
(stride = patch size) of every pair in each of the eight flips/rotations, in an
order shuffled by ``(seed, epoch)``, and step ``k`` takes the next
``batch_size`` of them. Either way the sampler has no state besides the step: a
resumed run draws the same batches as an uninterrupted one, and under data
parallelism every rank draws the same global batch and keeps its own disjoint
slice of it.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sruc.core.protocol import PEAK, degrade, interpolate, luma, modcrop, quantize
from sruc.core.resize import imresize
from sruc.errors import InputError
from sruc.files import discovery
from sruc.files.images import read_image

#: How many skipped files are named one by one before the rest are counted.
MAX_NAMED_SKIPS = 10

#: Called as ``progress(done, total)`` while the cache is built.
BuildProgress = Callable[[int, int], None]
#: Called with one human-readable line for each file that is skipped.
Warn = Callable[[str], None]


# --------------------------------------------------------------------------- finding images


@dataclass
class ImageSet:
    """Decoded images of a folder and its fingerprint.

    Attributes:
        root: the folder that was searched.
        names: paths relative to ``root`` (POSIX), sorted.
        images: the HR images, uint8 ``(C, H, W)`` with C = 1 (gray) or 3 (RGB).
        digests: SHA-256 of each file's bytes.
        skipped: ``(name, reason)`` of every file that was not used.
    """

    root: Path
    names: list[str] = field(default_factory=list)
    images: list[torch.Tensor] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def manifest_hash(self) -> str:
        """SHA-256 of the sorted ``name<TAB>content-sha256`` lines: names the data exactly."""
        lines = "".join(
            f"{n}\t{d}\n" for n, d in sorted(zip(self.names, self.digests, strict=True))
        )
        return hashlib.sha256(lines.encode()).hexdigest()

    def subset(self, keep: Sequence[int]) -> ImageSet:
        """The images at the indices ``keep`` (``skipped`` is not carried over)."""
        idx = sorted(keep)
        return ImageSet(
            self.root,
            [self.names[i] for i in idx],
            [self.images[i] for i in idx],
            [self.digests[i] for i in idx],
        )


def list_files(root: Path, exclude: Sequence[Path] = ()) -> list[Path]:
    """Every file under ``root``, recursively, sorted; hidden files and folders left out
    (:func:`sruc.files.discovery.walk`).

    Raises:
        InputError: ``root`` is missing, not a folder, or holds no file.
    """
    if not root.exists():
        raise InputError(f"{root}: no such folder")
    if not root.is_dir():
        raise InputError(f"{root} is a file; give a folder of training images")
    # Hidden folders and the excluded ones (the run folder, the validation folder) pruned.
    files = list(discovery.walk(root, exclude=exclude))
    if not files:
        raise InputError(f"{root} holds no files; put training images in it")
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def load_images(
    root: str | os.PathLike[str],
    min_size: int = 1,
    exclude: Sequence[Path] = (),
    warn: Warn | None = None,
    too_small_hint: str = "use a smaller --patch-size or larger images",
) -> ImageSet:
    """Decode every image under ``root``; skip (and report) what cannot be used.

    Args:
        root: the folder to search (recursively).
        min_size: images with a side shorter than this are skipped as too small.
        exclude: folders under ``root`` not to search (e.g. the run folder).
        warn: called with one line per skipped file (the first
            :data:`MAX_NAMED_SKIPS`, then one line with the count of the rest).
        too_small_hint: what to do when every image is too small, for the error.

    Raises:
        InputError: no file, or no usable image, under ``root``.
    """
    root = Path(root)
    files = list_files(root, exclude)
    found = ImageSet(root)
    too_small = 0
    for path in files:
        name = path.relative_to(root).as_posix()
        if not discovery.is_candidate(path):  # named as a video, a document...: not opened
            found.skipped.append((name, f"is not an image (a {path.suffix.lower()} file)"))
            continue
        try:
            pic = read_image(path)
            data = path.read_bytes()
        except InputError as e:
            found.skipped.append((name, _reason(str(e), str(path))))
            continue
        except OSError as e:
            found.skipped.append((name, f"cannot read ({e.strerror})"))
            continue
        if min(pic.height, pic.width) < min_size:
            too_small += 1
            found.skipped.append(
                (name, f"{pic.width}x{pic.height} is smaller than {min_size}x{min_size}")
            )
            continue
        # Every HR is treated as an 8-bit image, as the protocol's ground truth is.
        found.images.append(torch.round(pic.color * PEAK).to(torch.uint8))
        found.names.append(name)
        found.digests.append(hashlib.sha256(data).hexdigest())
    if warn is not None:
        for name, reason in found.skipped[:MAX_NAMED_SKIPS]:
            warn(f"skipped {root / name}: {reason}")
        if len(found.skipped) > MAX_NAMED_SKIPS:
            warn(f"skipped {len(found.skipped) - MAX_NAMED_SKIPS} more files under {root}")
    if not found.images:
        if too_small and too_small == len(found.skipped):
            raise InputError(
                f"every image under {root} is smaller than {min_size}x{min_size} pixels "
                f"({too_small} images); {too_small_hint}"
            )
        raise InputError(
            f"no usable image under {root}: {len(files)} files, none readable as an image "
            f"(first: {found.skipped[0][0]}: {found.skipped[0][1]})"
        )
    return found


def _reason(message: str, path: str) -> str:
    """An InputError message without the path it starts with."""
    return message.removeprefix(path).lstrip(": ").strip() or message


def split_validation(images: ImageSet, fraction: float) -> tuple[ImageSet, ImageSet]:
    """Carve ``ceil(fraction * n)`` images (at least one) off as a validation set.

    The choice depends on the images' contents only (the smallest SHA-256
    digests), not on names or the seed, so it is stable across runs.

    Returns:
        ``(train, val)``.

    Raises:
        InputError: fewer than two images.
    """
    n = len(images)
    k = max(1, math.ceil(fraction * n))
    if n - k < 1:
        raise InputError(
            f"{n} usable image(s) under {images.root}: too few to carve a validation split "
            "from; add images or pass --val DIR"
        )
    order = sorted(range(n), key=lambda i: images.digests[i])
    return images.subset(order[k:]), images.subset(order[:k])


def drop_overlap(train_set: ImageSet, val_set: ImageSet, warn: Callable[[str], None]) -> ImageSet:
    """Leave validation images out of the training set (by content)."""
    held = set(val_set.digests)
    keep = [i for i, d in enumerate(train_set.digests) if d not in held]
    if len(keep) < len(train_set):
        warn(f"left {len(train_set) - len(keep)} validation image(s) out of the training images")
    if not keep:
        raise InputError(f"every training image under {train_set.root} is also a validation image")
    return train_set.subset(keep)


# --------------------------------------------------------------------------- the patch cache


@dataclass
class Pair:
    """One training pair: the network input and target for one (image, f, scale).

    Attributes:
        lr: interpolated-LR Y, float16 ``(H_s, W_s)`` on [0, 1] (modcropped to ``scale``).
        hr: HR Y, float16 ``(H, W)`` on [0, 1], shared by the scales of one (image, f);
            its top-left ``(H_s, W_s)`` corner is the target of ``lr``.
        scale: the upscaling factor.
    """

    lr: torch.Tensor
    hr: torch.Tensor
    scale: int


def make_pairs(
    image: torch.Tensor,
    scales: Sequence[int],
    downscales: Sequence[float],
    patch_size: int,
) -> list[Pair]:
    """The training pairs of one uint8 ``(C, H, W)`` image (too-small ones left out)."""
    rgb = image.to(torch.float64)
    pairs = []
    for f in downscales:
        # Downscale augmentation makes a new, smaller 8-bit HR image.
        hr = rgb if f == 1 else quantize(imresize(rgb, f))
        hr_y = luma(hr)  # (1, H, W) float64 on 0..255
        hr16 = (hr_y[0] / PEAK).to(torch.float16)
        for s in scales:
            y = modcrop(hr_y, s)  # (1, H_s, W_s)
            h, w = int(y.shape[-2]), int(y.shape[-1])
            if min(h, w) < patch_size:
                continue
            up = interpolate(degrade(y, s), (h, w))  # (1, H_s, W_s) float64
            pairs.append(Pair((up[0] / PEAK).to(torch.float16), hr16, int(s)))
    return pairs


class PatchCache:
    """Every training pair in memory, and a stateless sampler of patch batches.

    Args:
        images: uint8 ``(C, H, W)`` HR images.
        scales: integer upscaling factors to make pairs for.
        downscales: HR downscale factors for augmentation (1 keeps the image).
        patch_size: patch edge in pixels.
        seed: seeds the sampler together with the step.
        progress: called as ``progress(done, total)`` after each image.
        sampling: ``"random"`` positions or ``"grid"`` epochs (see the module docstring).
    """

    def __init__(
        self,
        images: Sequence[torch.Tensor],
        scales: Sequence[int],
        downscales: Sequence[float],
        patch_size: int,
        seed: int = 0,
        progress: BuildProgress | None = None,
        sampling: str = "random",
    ) -> None:
        if sampling not in ("random", "grid"):
            raise ValueError(f"unknown sampling {sampling!r}")
        self.patch_size = patch_size
        self.seed = seed
        self.sampling = sampling
        self.pairs: list[Pair] = []
        with _one_thread():
            for i, image in enumerate(images):
                self.pairs += make_pairs(image, scales, downscales, patch_size)
                if progress is not None:
                    progress(i + 1, len(images))
        if not self.pairs:
            raise InputError(f"no image is large enough for {patch_size}x{patch_size} patches")
        p = patch_size
        # A pair is drawn in proportion to its number of patch positions, so every
        # HR pixel is about equally likely to be seen.
        self.weights = torch.tensor(
            [(q.lr.shape[0] - p + 1) * (q.lr.shape[1] - p + 1) for q in self.pairs],
            dtype=torch.float64,
        )
        # The grid: pair k holds rows_k x cols_k non-overlapping patches, numbered
        # from start[k]; an epoch is a permutation of 8 x that many items.
        self._grid_cols = [q.lr.shape[1] // p for q in self.pairs]
        counts = torch.tensor([(q.lr.shape[0] // p) * (q.lr.shape[1] // p) for q in self.pairs])
        self._grid_end = torch.cumsum(counts, 0)
        self._epoch: tuple[int, torch.Tensor] | None = None  # the latest permutation

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def patches_per_epoch(self) -> int:
        """Non-overlapping patches in the cache, the VDSR paper's notion of an epoch."""
        p = self.patch_size
        return sum((q.lr.shape[0] // p) * (q.lr.shape[1] // p) for q in self.pairs)

    @property
    def available(self) -> int:
        """Distinct patches the sampler can give (a batch must not be larger)."""
        if self.sampling == "grid":
            return 8 * self.patches_per_epoch
        return int(self.weights.sum().item())

    @property
    def nbytes(self) -> int:
        """Memory held by the cache (shared HR planes counted once)."""
        seen = {id(q.hr): q.hr.nbytes for q in self.pairs}
        return sum(seen.values()) + sum(q.lr.nbytes for q in self.pairs)

    def batch(
        self, step: int, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice of the global batch of ``step``.

        Args:
            step: the optimisation step (with the seed, the only sampler state).
            batch_size: the global batch size, a multiple of ``world_size``.
            rank: this process's rank.
            world_size: number of processes.

        Returns:
            ``(input, target)``, each float32 ``(batch_size // world_size, 1, P, P)`` in [0, 1].
        """
        mine = slice(rank * (batch_size // world_size), (rank + 1) * (batch_size // world_size))
        if self.sampling == "grid":
            picks = self._grid_picks(step, batch_size)[mine]
        else:
            picks = self._random_picks(step, batch_size)[mine]
        p = self.patch_size
        n = batch_size // world_size
        x = torch.empty(n, 1, p, p)  # (B, 1, P, P) float32
        y = torch.empty(n, 1, p, p)
        # Patch by patch: small copies stay single-threaded, which is faster than one
        # big float16 -> float32 conversion when the CPU is shared.
        for i, (k, top, left, t) in enumerate(picks):
            pair = self.pairs[k]
            x[i, 0].copy_(_dihedral(pair.lr[top : top + p, left : left + p], t))
            y[i, 0].copy_(_dihedral(pair.hr[top : top + p, left : left + p], t))
        return x, y

    def _random_picks(self, step: int, batch_size: int) -> list[tuple[int, int, int, int]]:
        """``(pair, top, left, flip/rotation)`` of each patch of the global batch."""
        g = torch.Generator().manual_seed(_mix(self.seed, step))
        which = torch.multinomial(self.weights, batch_size, replacement=True, generator=g)
        where = torch.rand(batch_size, 2, generator=g, dtype=torch.float64)
        how = torch.randint(0, 8, (batch_size,), generator=g)  # 4 rotations x 2 flips
        p = self.patch_size
        picks = []
        for k, (u, v), t in zip(which.tolist(), where.tolist(), how.tolist(), strict=True):
            h, w = self.pairs[k].lr.shape
            picks.append((k, int(u * (h - p + 1)), int(v * (w - p + 1)), t))
        return picks

    def _grid_picks(self, step: int, batch_size: int) -> list[tuple[int, int, int, int]]:
        """The global batch of ``step`` in the grid's shuffled epochs."""
        size = 8 * self.patches_per_epoch
        p = self.patch_size
        picks = []
        first = step * batch_size
        for item in range(first, first + batch_size):
            epoch, index = divmod(item, size)
            j = int(self._permutation(epoch, size)[index])
            position, t = divmod(j, 8)
            k = int(torch.searchsorted(self._grid_end, position, right=True))
            local = position - (int(self._grid_end[k - 1]) if k else 0)
            row, col = divmod(local, self._grid_cols[k])
            picks.append((k, row * p, col * p, t))
        return picks

    def _permutation(self, epoch: int, size: int) -> torch.Tensor:
        if self._epoch is None or self._epoch[0] != epoch:
            g = torch.Generator().manual_seed(_mix(self.seed, -1 - epoch))
            self._epoch = (epoch, torch.randperm(size, generator=g))
        return self._epoch[1]


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block, then restore the thread count.

    The cache is built from many small resizes, which gain little from threads
    and lose a lot when the CPU is shared: T91 took 2.8 s on one thread and 73 s
    on two on a 2-core machine busy with other jobs.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _dihedral(patch: torch.Tensor, t: int) -> torch.Tensor:
    """One of the 8 flips/rotations of a square ``(P, P)`` patch (0 is the identity)."""
    if t >= 4:
        patch = patch.flip(-1)
    return torch.rot90(patch, t % 4, (-2, -1)) if t % 4 else patch


def _mix(seed: int, step: int) -> int:
    """A 63-bit generator seed from ``(seed, step)``, well spread for neighbouring steps."""
    digest = hashlib.blake2b(f"sruc:{seed}:{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1

"""Oversized metadata: an image whose text or ICC chunk is too large is still read.

Pillow refuses to inflate a PNG ``zTXt``/``iTXt``/``iCCP`` chunk beyond
``PngImagePlugin.MAX_TEXT_CHUNK`` (a guard against decompression bombs) by
raising ``ValueError``, which loses the whole image for the sake of a comment
or a profile. While sruc reads a file (:func:`dropping_oversized_chunks`),
such a chunk is skipped instead, its bytes still checked by Pillow's CRC, and
the caller is told which chunks were dropped so it can warn. Outside that
block Pillow behaves exactly as it does without sruc.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from PIL import ImageFile, PngImagePlugin

_CHUNKS = {"chunk_iCCP": "ICC profile", "chunk_zTXt": "compressed text", "chunk_iTXt": "text"}
_state = threading.local()
_installed = False
_lock = threading.Lock()


def _guarded(handler: Callable[..., bytes], what: str) -> Callable[..., bytes]:
    def chunk(self: Any, pos: int, length: int) -> bytes:
        try:
            return handler(self, pos, length)
        except ValueError as e:
            dropped = getattr(_state, "dropped", None)
            if dropped is None or "too large" not in str(e):
                raise
            self.fp.seek(pos)  # the chunk's data, for Pillow's CRC check
            dropped.append(f"{what} ({length:,} bytes compressed)")
            return ImageFile._safe_read(self.fp, length)

    return chunk


def _install() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        for name, what in _CHUNKS.items():
            handler = getattr(PngImagePlugin.PngStream, name, None)
            if handler is not None:
                setattr(PngImagePlugin.PngStream, name, _guarded(handler, what))
        _installed = True


@contextmanager
def dropping_oversized_chunks() -> Iterator[list[str]]:
    """Inside the block, oversized PNG metadata chunks read on this thread are skipped;
    yields the list of what was dropped (filled as the file is read)."""
    _install()
    previous = getattr(_state, "dropped", None)
    _state.dropped = dropped = []
    try:
        yield dropped
    finally:
        _state.dropped = previous


__all__ = ["dropping_oversized_chunks"]

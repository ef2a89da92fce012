"""Released weights as data, the checkpoint format, the cache and verified downloads.

- :mod:`~sruc.zoo.released`: the table of released weights files, as data.
- :mod:`~sruc.zoo.registry`: which file (or checkpoint, or URL) a ``--model`` means, loaded.
- :mod:`~sruc.zoo.hub`: where a pinned file is (cache, bundled, download); the one
  place the rest asks about files on disk.
- :mod:`~sruc.zoo.cache`: the cache folder, its file names, locks and hashing.
- :mod:`~sruc.zoo.download`: HTTP downloads, resumed, retried and verified.
- :mod:`~sruc.zoo.checkpoint`: the self-describing checkpoint format.
"""

"""Released weights as data, the checkpoint format, the cache and verified downloads."""

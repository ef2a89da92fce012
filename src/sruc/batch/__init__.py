"""``sruc batch``: plan a folder of images and run it."""

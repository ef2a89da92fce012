"""``sruc train``: recipes, configuration, data, the loop."""
